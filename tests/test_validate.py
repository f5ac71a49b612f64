"""The door (results/validate.py): every record's values are checked before any table stores
them, by Store.insert and ingest alike; the usable-rows rule (results/rows.py) reuses it."""

import json
import math

import pytest
import sqlalchemy as sa

from results.rows import usable, usable_records
from results.schema import Result
from results.store import Store, results_table
from results.validate import (
    INT32,
    INT_COLUMNS,
    FieldError,
    check,
    flags,
    parse_time,
    problems,
)

H100 = {"name": "NVIDIA H100 80GB HBM3", "model": "H100-SXM", "kind": "cuda", "uuid": "GPU-1"}


def good(**kw) -> dict:
    base = dict(run_id="r1", workload="gemm", backend="triton", dtype="bf16",
                params={"m": 4096, "n": 4096, "k": 4096, "layout": "nt"}, host="node01",
                device=dict(H100), median_s=2e-4, p20_s=2e-4, p80_s=2.1e-4,
                samples_s=[2e-4, 2.1e-4], n=2, tflops=687.2, correct=True,
                created_at="2026-01-01T00:00:00.000+00:00")
    return Result(**{**base, **kw}).to_dict()  # the id follows the run and case


def test_a_good_record_has_no_problems():
    assert problems(good()) == [] and problems(Result(**good())) == []
    check(good())


# The defects seen: each value was stored, and the report or fleet then misread it.
BAD_VALUES = [
    ({"median_s": -1.0}, "median_s", "finite number of seconds > 0"),
    ({"median_s": math.inf}, "median_s", "finite"),
    ({"median_s": True}, "median_s", "bool where"),
    ({"tflops": 1e9}, "tflops", "above 1.05x the device's datasheet peak 989.4"),
    ({"tflops": 1100.0}, "tflops", "datasheet peak"),
    ({"tflops": -3.0}, "tflops", ">= 0"),
    ({"n": -7}, "n", ">= 1"),
    ({"n": 2**40}, "n", "outside the column's integer range"),
    ({"n": 2**70}, "n", "outside the column's integer range"),
    ({"n": 2.5}, "n", "float where int belongs"),
    ({"world_size": -4}, "world_size", ">= 1"),
    ({"world_size": 2, "rank": 2}, "rank", "below world_size 2"),
    ({"rank": -1}, "rank", ">= 0"),
    ({"created_at": "not-a-date"}, "created_at", "ISO 8601 time with a zone"),
    ({"created_at": "2026-01-01T00:00:00"}, "created_at", "with a zone"),
    ({"created_at": "2999-01-01T00:00:00+00:00"}, "created_at", "in the future"),
    ({"correct": 1}, "correct", "int where bool belongs"),
    ({"error": "bad\x00byte"}, "error", "NUL"),
    ({"host": "node\x0001"}, "host", "NUL"),
    ({"params": {"m": "a\x00"}}, "params.m", "NUL"),
    ({"device": {**H100, "uuid": ["GPU-1"]}}, "device.uuid", "list where str belongs"),
    ({"telemetry": {"source": "nvml", "power_w_mean": "650"}}, "telemetry.power_w_mean",
     "str where"),
    ({"telemetry": {"source": "nvml", "throttle_reasons": [1]}}, "telemetry.throttle_reasons",
     "not a list of names"),
    ({"samples_s": [1e-3, -1e-3]}, "samples_s[1]", "> 0"),
    ({"samples_s": [1e-3, "x"]}, "samples_s[1]", "> 0"),
    ({"params": {"M": 1}}, "params", "lower case"),
    ({"params": {"bytes": 2**70}}, "params.bytes", "64-bit"),
    ({"stdev_s": -1.0}, "stdev_s", ">= 0"),
    ({"status": "great"}, "status", "not one of"),
]


@pytest.mark.parametrize(("change", "field", "reason"), BAD_VALUES)
def test_bad_values_are_refused_naming_field_and_value(change, field, reason):
    row = good(**change)
    found = problems(row)
    assert found and any(reason in p for p in found), found
    with pytest.raises(FieldError) as e:
        check(row, where="f.jsonl: line 3")
    text = str(e.value)
    assert text.startswith("f.jsonl: line 3: ")
    assert any(p in text for p in found)
    assert any(f"field {field!r} = " in p and reason in p for p in found), found


def test_peaks_are_those_of_the_device_and_unknown_devices_are_flagged():
    # an H200 gets the H200's HBM peak (4.8 TB/s); an unknown GPU only the absurd ceiling
    membw = dict(workload="membw", backend="torch", dtype="fp32", tflops=None,
                 params={"op": "copy", "bytes": 2**30})
    h200 = {"name": "NVIDIA H200", "model": "H200-SXM", "kind": "cuda"}
    assert problems(good(**membw, gbps=4300.0, device=h200)) == []
    assert problems(good(**membw, gbps=5100.0, device=h200))
    assert problems(good(**membw, gbps=4300.0)) != []  # above the H100's 3.35 TB/s x 1.05
    odd = {"name": "Some Future GPU", "kind": "cuda"}
    assert problems(good(**membw, gbps=9000.0, device=odd)) == []
    assert flags(good(**membw, gbps=9000.0, device=odd)) != []
    assert problems(good(**membw, gbps=1e6, device=odd)) != []
    # the name finds the peak when the model key is missing
    assert problems(good(tflops=1100.0, device={"name": "NVIDIA H100 80GB HBM3"}))


def test_times_parse_with_zones():
    assert parse_time("2026-01-01T00:00:00Z").utcoffset().total_seconds() == 0
    assert parse_time("2026-01-01T02:00:00+02:00") == parse_time("2026-01-01T00:00:00Z")
    assert parse_time("2026-01-01") is None and parse_time(5) is None


def test_the_integer_ranges_are_the_tables_columns():
    """INT_COLUMNS must cover every integer column the table declares, at its width."""
    for col in results_table.columns:
        if isinstance(col.type, sa.Integer):
            assert col.name in INT_COLUMNS, col.name
            expected = INT32 if not isinstance(col.type, sa.BigInteger) else (-(2**63),
                                                                              2**63 - 1)
            assert INT_COLUMNS[col.name] == expected, col.name


def test_store_insert_refuses_a_bad_record_and_the_whole_batch(db_url):
    with Store(db_url) as store:
        ok = Result(**good())
        bad = Result(**good(run_id="r2", median_s=-1.0))
        with pytest.raises(FieldError, match="'median_s' = -1.0"):
            store.insert([ok, bad])
        assert store.count() == 0
        with pytest.raises(FieldError, match="NUL"):
            store.insert([Result(**good(run_id="r3", error="x\x00"))])
        assert store.insert([ok]) == 1


def test_the_usable_rule_is_one_rule_for_frames_and_rows(db_url):
    """Status ok; correct not False; kernels checked correct; and the door's checks: rows stored
    before the door (raw inserts) are skipped and counted, never used."""
    rows = [good(run_id=f"r{i}") for i in range(3)]
    rows += [good(run_id="neg", median_s=-1.0), good(run_id="fast", tflops=1e9),
             good(run_id="date", created_at="not-a-date"), good(run_id="unchk", correct=None),
             good(run_id="list", device={**H100, "uuid": ["x"]})]
    rows += [good(run_id="failed", status="failed", correct=None)]  # not counted: not ok
    kept, skipped = usable_records(rows)
    assert [r["run_id"] for r in kept] == ["r0", "r1", "r2"] and skipped == 5
    with Store(db_url) as store:
        from results.tables import record_row as _row

        store.insert_rows([_row(Result(**r)) for r in rows])  # below the door, on purpose
        frame, skipped = usable(store.frame())
    assert sorted(frame.run_id) == ["r0", "r1", "r2"] and skipped == 5
    # CSV-style text in the nested columns and NaN for nulls are read the same way
    flat = [{**r, "params": json.dumps(r["params"]), "device": json.dumps(r["device"]),
             "p20_s": float("nan")} for r in rows[:3]]
    assert len(usable_records(flat)[0]) == 3


def test_a_failed_case_keeps_its_record_whatever_its_figure():
    """The peak bounds a result; a wrong kernel may "run" faster than the device can, and its
    failed record (with the error) must still be stored."""
    wrong = good(tflops=9999.0, correct=False, status="failed", error="output mismatch")
    assert problems(wrong) == []
    assert problems(good(tflops=9999.0)) != []
    assert problems(good(tflops=-1.0, status="failed", correct=False))  # still a number >= 0


def test_timestamps_from_a_timestamp_column_are_read_as_times():
    """A timestamptz column (or a Parquet timestamp) gives datetimes: read as ISO 8601 text."""
    from datetime import datetime, timezone

    aware = {**good(), "created_at": datetime(2026, 1, 1, tzinfo=timezone.utc)}
    naive = {**good(run_id="r2"), "created_at": datetime(2026, 1, 1)}  # without zone: UTC
    kept, skipped = usable_records([aware, naive])
    assert skipped == 0 and [r["created_at"] for r in kept] == ["2026-01-01T00:00:00+00:00"] * 2


# A row that contradicts itself (found by hand-editing a real record: each loaded, and the
# report's headline and the model's GEMM rate then came from the edit)
FLOPS = 2 * 4096**3
DISAGREE = [
    ({"median_s": None, "samples_s": [], "n": None}, "tflops", "needs the median_s"),
    ({"median_s": 1.1e-4}, "median_s", "outside its own samples"),
    ({"p80_s": 3e-4}, "p80_s", "outside its own samples"),
    ({"flops": FLOPS, "tflops": 1000 * FLOPS / 2e-4 / 1e12 / 1000 * 1.5}, "tflops",
     "is not flops / median_s"),
    ({"bytes": 3 * 4096**2 * 2, "gbps": 1.0}, "gbps", "is not bytes / median_s"),
]


@pytest.mark.parametrize("change,field,why", DISAGREE)
def test_an_ok_row_must_agree_with_itself(change, field, why):
    (line,) = problems(good(**change))
    assert f"field '{field}'" in line and why in line


def test_agreeing_figures_pass_and_failed_rows_are_not_asked():
    assert problems(good(flops=FLOPS, tflops=FLOPS / 2e-4 / 1e12 * 1.005)) == []  # rounding
    assert problems(good(status="failed", correct=None, median_s=1.1e-4, error="boom")) == []
