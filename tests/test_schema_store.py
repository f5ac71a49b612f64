"""The result record and the local SQLite table."""

import json
import math

import pytest
import sqlalchemy as sa

from results.schema import SCHEMA_VERSION, RecordError, Result, result_id
from results.store import SchemaTooNew, Store, StoreError, meta_table, resolve_url


def make(i=0, **kw):
    base = dict(run_id="run1", workload="membw", backend="torch", dtype="fp32",
                params={"op": "copy", "bytes": 1024 * (i + 1)}, host="h",
                device={"name": "cpu", "kind": "cpu"}, median_s=1e-3, samples_s=[1e-3, 2e-3],
                gbps=2.0, correct=True, max_rel_error=0.0, tolerance=0.0)
    base.update(kw)
    return Result(**base)


def test_ids_are_deterministic_and_depend_on_the_case():
    a, b = make(), make()
    assert a.id == b.id  # same run and case: same id, whatever the time or numbers
    assert a.id != make(1).id
    assert a.id != make(backend="triton").id
    assert a.id != make(rank=1).id
    assert a.id != make(run_id="run2").id
    # key order of params does not matter
    assert result_id("r", "w", "b", "d", {"x": 1, "y": 2}, 0) == \
        result_id("r", "w", "b", "d", {"y": 2, "x": 1}, 0)


def test_record_round_trips_through_dict_json_and_store(db_url):
    rec = make(telemetry={"source": "nvml", "power_w_mean": 650.5, "throttle_reasons": ["x"]})
    again = Result.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec
    with Store(db_url) as store:
        assert store.insert([rec]) == 1
        [back] = store.records()
        assert back == rec
        df = store.frame()
        assert df.loc[0, "params"] == {"op": "copy", "bytes": 1024}
        assert df.loc[0, "telemetry"]["power_w_mean"] == 650.5


def test_insert_is_idempotent(db_url):
    recs = [make(i) for i in range(5)]
    with Store(db_url) as store:
        assert store.insert(recs[:3]) == 3
        assert store.insert(recs) == 2  # only the two new ones
        assert store.insert(recs) == 0
        assert store.count() == 5


def test_non_finite_numbers_are_stored_as_null(db_url):
    rec = make(max_rel_error=math.inf, correct=False, status="failed",
               telemetry={"source": "nvml", "power_w_mean": math.nan})
    with Store(db_url) as store:
        store.insert([rec])
        [back] = store.records()
    assert back.max_rel_error is None and back.telemetry["power_w_mean"] is None


@pytest.mark.parametrize(("row", "message"), [
    ({"workload": "membw"}, "missing field"),
    ({**make().to_dict(), "params": "op=copy"}, "'params' has type str"),
    ({**make().to_dict(), "status": "great"}, "status 'great'"),
    ({**make().to_dict(), "bogus": 1}, "unknown field"),
    ({**make().to_dict(), "schema_version": SCHEMA_VERSION + 1}, "newer"),
    ({**make().to_dict(), "id": "0" * 32}, "does not match"),
    ({**make().to_dict(), "status": "ok", "correct": False}, "status 'ok' with correct=false"),
    ({**make().to_dict(), "n": 2 ** 40}, "'n' is 1099511627776, outside the table's integer"),
    ({**make().to_dict(), "created_at": "yesterday"}, "not an ISO 8601 time"),
    ({**make().to_dict(), "samples_s": [1.0, "2"]}, "not a number"),
    ({**make().to_dict(), "dtype": "x" * 33}, "longer than the table's 32"),
])
def test_invalid_rows_are_rejected_with_the_reason(row, message):
    with pytest.raises(RecordError, match=message):
        Result.from_dict(row, where="f.jsonl: line 3")


def test_newer_schema_is_refused(db_url):
    Store(db_url).close()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(meta_table.update().values(value=str(SCHEMA_VERSION + 1)))
    engine.dispose()
    with pytest.raises(SchemaTooNew, match="newer than this colossus-bench"):
        Store(db_url)


def test_unwritable_path_gives_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the database folder"):
        Store(str(blocker / "sub" / "results.db"))


def test_url_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("COLOSSUS_BENCH_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert resolve_url() == f"sqlite:///{tmp_path}/colossus-bench/results.db"
    monkeypatch.setenv("COLOSSUS_BENCH_DB", str(tmp_path / "x.db"))
    assert resolve_url() == f"sqlite:///{tmp_path}/x.db"
    assert resolve_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"


@pytest.mark.parametrize(("url", "secrets"), [
    ("postgresql://u:pw@h/db", ["pw"]),
    ("postgresql://u@h/db?password=s3cret", ["s3cret"]),
    ("postgresql://u@h/db?sslmode=require&sslpassword=k3y", ["k3y"]),
])
def test_redact_hides_every_secret(url, secrets):
    from results.store import redact, url_secrets

    assert url_secrets(url) == secrets
    shown = redact(url)
    assert all(s not in shown for s in secrets) and "***" in shown


def test_unreachable_upload_never_prints_a_query_password(db_url):
    from typer.testing import CliRunner

    from cli import app

    Store(db_url).close()
    res = CliRunner().invoke(app, ["upload", "--db", db_url, "--tries", "1", "--to",
                                   "postgresql://bench@127.0.0.1:1/db?password=s3cretQ"])
    assert res.exit_code == 2
    assert "s3cretQ" not in res.output and "***" in res.output


def test_non_finite_params_round_trip_through_the_table_with_the_same_id(db_url, tmp_path):
    """The table stores NaN as null, so the id must hash null too: an exported row must
    ingest back under its own id."""
    from results.ingest import load_jsonl

    rec = make(params={"op": "copy", "bytes": 1, "scale": math.nan})
    assert rec.id == make(params={"op": "copy", "bytes": 1, "scale": None}).id
    with Store(db_url) as store:
        store.insert([rec])
        path = tmp_path / "r.jsonl"
        path.write_text("\n".join(json.dumps(r.to_dict()) for r in store.records()) + "\n")
    [back] = load_jsonl(path)
    assert back.id == rec.id


def test_the_checks_come_from_the_one_declaration():
    """Required fields are those without a default; widths, integer ranges and storage are
    the declared column metadata; field names stay as the contract has them."""
    from results.schema import FIELDS, INT_RANGES, MAX_LENGTHS, REQUIRED

    assert REQUIRED == ("run_id", "workload", "backend", "dtype", "params", "host", "device")
    assert MAX_LENGTHS == {"id": 64, "run_id": 64, "workload": 64, "backend": 64, "dtype": 32,
                           "host": 255, "status": 16, "created_at": 40, "shape": 128}
    assert set(INT_RANGES) == {"world_size", "rank", "n", "schema_version"}
    storage = {f.name: f.storage for f in FIELDS}
    assert storage["device"] == storage["software"] == "own_table"
    assert storage["samples_s"] == "floats" and storage["created_at"] == "timestamp"
    assert {"id", "run_id", "created_at", "schema_version", "workload", "backend", "dtype",
            "params", "host", "device", "world_size", "rank", "software", "median_s", "p20_s",
            "p80_s", "mean_s", "stdev_s", "n", "samples_s", "tflops", "gbps", "algbw_gbps",
            "busbw_gbps", "correct", "max_rel_error", "tolerance", "telemetry", "status",
            "error"} <= {f.name for f in FIELDS}
