"""`colossus-bench export`: one versioned Arrow schema for CSV and Parquet (two exports read as
one dataset), strict JSON Lines, OpenMetrics gauges a Prometheus parser reads, rows written
counted on stderr, and readers that survive any row already in the table."""

import json
import math
from datetime import datetime

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from cli import app
from results.export import EXPORT_SCHEMA, EXPORT_SCHEMA_VERSION
from results.openmetrics import escape_label
from results.schema import Result
from results.store import Store
from results.tables import record_row as _row

runner = CliRunner()
H100 = {"name": "NVIDIA H100 80GB HBM3", "model": "H100-SXM", "kind": "cuda", "uuid": "GPU-1"}
TEL = {"source": "nvml", "power_w_mean": 650.5, "energy_j": 12.5, "sm_clock_mhz_mean": 1980.0,
       "throttle_reasons": ["gpu_idle"], "unsupported": {"gpm": "not supported"}}


def gemm(i=0, **kw):
    base = dict(run_id="g1", workload="gemm", backend="triton", dtype="bf16",
                params={"m": 4096 * (i + 1), "n": 4096, "k": 4096, "layout": "nt",
                        "extra_knob": [1, 2]},
                host="node01", device=dict(H100), median_s=2e-4, samples_s=[2e-4, 2.1e-4],
                n=2, tflops=687.2, correct=True, telemetry=dict(TEL),
                created_at="2026-01-01T02:00:00+02:00")
    return Result(**{**base, **kw})


def membw(i=0, **kw):
    base = dict(run_id="m1", workload="membw", backend="torch", dtype="fp32",
                params={"op": "copy", "bytes": 2**30 * (i + 1)}, host="cpu-box",
                device={"name": "cpu", "kind": "cpu"}, median_s=1e-2, gbps=20.0, correct=True,
                max_rel_error=math.inf, telemetry={"source": "none"},
                created_at="2026-01-02T00:00:00Z")
    return Result(**{**base, **kw})


def db_with(tmp_path, name, records, raw=()):
    url = f"sqlite:///{tmp_path / name}"
    with Store(url) as store:
        store.insert(records)
        if raw:
            store.insert_rows([_row(r) for r in raw])  # below the door: rows of older versions
    return url


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_schema_is_explicit_and_versioned():
    meta = EXPORT_SCHEMA.metadata
    assert meta[b"colossus_bench.export_schema"] == str(EXPORT_SCHEMA_VERSION).encode()
    assert EXPORT_SCHEMA.field("created_at").type == pa.timestamp("us", tz="UTC")
    assert EXPORT_SCHEMA.field("n").type == pa.int32()
    assert EXPORT_SCHEMA.field("params_m").type == pa.int64()
    assert EXPORT_SCHEMA.field("samples_s").type == pa.list_(pa.float64())
    assert EXPORT_SCHEMA.field("telemetry_power_w_mean").type == pa.float64()
    assert EXPORT_SCHEMA.field("params_other").type == pa.string()


def test_two_exports_of_different_workloads_read_as_one_dataset(tmp_path):
    a = db_with(tmp_path, "a.db", [gemm(0), gemm(1)])
    b = db_with(tmp_path, "b.db", [membw(0)])
    out = tmp_path / "parts"
    out.mkdir()
    for url, name in ((a, "a.parquet"), (b, "b.parquet")):
        res = cli("export", "--format", "parquet", "--out", out / name, "--db", url)
        assert res.exit_code == 0, res.output
    table = ds.dataset(out, format="parquet").to_table()
    assert table.num_rows == 3 and table.schema.remove_metadata() == \
        EXPORT_SCHEMA.remove_metadata()
    rows = {r["workload"] + str(r["params_m"] or r["params_bytes"]): r for r in table.to_pylist()}
    g = rows["gemm4096"]
    assert g["params_m"] == 4096 and g["params_layout"] == "nt" and g["params_bytes"] is None
    assert json.loads(g["params_other"]) == {"extra_knob": [1, 2]}
    assert g["created_at"].isoformat() == "2026-01-01T00:00:00+00:00"  # UTC
    assert g["samples_s"] == [2e-4, 2.1e-4] and g["n"] == 2
    assert g["telemetry_power_w_mean"] == 650.5 and g["telemetry_throttle_reasons"] == ["gpu_idle"]
    assert json.loads(g["telemetry_other"]) == {"unsupported": {"gpm": "not supported"}}
    m = rows[f"membw{2**30}"]
    assert m["params_m"] is None and m["params_op"] == "copy" and m["max_rel_error"] is None
    assert m["tflops"] is None and m["gbps"] == 20.0
    assert pq.read_schema(out / "a.parquet").metadata[b"colossus_bench.export_schema"] == b"1"


def test_csv_has_the_same_columns_and_reads_as_a_dataset(tmp_path):
    a = db_with(tmp_path, "a.db", [gemm(0)])
    b = db_with(tmp_path, "b.db", [membw(0)])
    out = tmp_path / "csv"
    out.mkdir()
    for url, name in ((a, "a.csv"), (b, "b.csv")):
        assert cli("export", "--out", out / name, "--db", url).exit_code == 0
    header = (out / "a.csv").read_text().splitlines()[0]
    assert [c.strip('"') for c in header.split(",")] == EXPORT_SCHEMA.names
    types = {f.name: (pa.string() if pa.types.is_list(f.type) else f.type)
             for f in EXPORT_SCHEMA}
    opts = pa_csv.ConvertOptions(column_types=types)
    table = ds.dataset(out, format=ds.CsvFileFormat(convert_options=opts)).to_table()
    assert table.num_rows == 2
    assert sorted(json.loads(x) for x in table["samples_s"].to_pylist()) == [[], [2e-4, 2.1e-4]]


def test_jsonl_is_strict_json_and_round_trips(tmp_path):
    url = db_with(tmp_path, "a.db", [membw(0, telemetry={"source": "none", "x": math.nan})])
    out = tmp_path / "r.jsonl"
    res = cli("export", "-f", "jsonl", "-o", out, "--db", url)
    assert res.exit_code == 0
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    row = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert row["max_rel_error"] is None and row["telemetry"]["x"] is None
    other = f"sqlite:///{tmp_path / 'b.db'}"
    assert cli("ingest", out, "--db", other).exit_code == 0


def test_rows_written_are_reported_on_stderr(tmp_path):
    url = db_with(tmp_path, "a.db", [gemm(0), gemm(1)])
    res = runner.invoke(app, ["export", "-f", "jsonl", "--db", url])
    assert res.exit_code == 0
    assert len(res.stdout.splitlines()) == 2
    assert "2 rows written to stdout" in res.stderr and "rows written" not in res.stdout


def test_openmetrics_gauges_parse_with_prometheus_client(tmp_path):
    # a host may not hold a line break (the door refuses control characters); a nested value,
    # the uuid, may: the label escaping is checked on both
    odd = gemm(0, host='node"01\\xb', run_id="g2", created_at="2026-01-03T00:00:00Z",
               device={**H100, "uuid": "GPU-\n9"})
    url = db_with(tmp_path, "a.db", [gemm(0), gemm(1), odd, membw(0),
                                     gemm(2, run_id="bad", status="failed", correct=False,
                                          error="wrong")])
    out = tmp_path / "colossus.prom"
    res = cli("export", "--format", "openmetrics", "--out", out, "--db", url)
    assert res.exit_code == 0, res.output
    families = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    assert {"colossus_bench_throughput_tflops", "colossus_bench_median_seconds",
            "colossus_bench_power_watts", "colossus_bench_energy_joules",
            "colossus_bench_sm_clock_hertz", "colossus_bench_throughput_gbps"} <= set(families)
    assert all(f.type == "gauge" for f in families.values())
    tflops = families["colossus_bench_throughput_tflops"].samples
    assert len(tflops) == 3  # two cases on node01, one on the odd host; the failed row is out
    hosts = {s.labels["host"] for s in tflops}
    assert hosts == {"node01", 'node"01\\xb'}  # escaped in the text, back after parsing
    assert {s.labels["uuid"] for s in tflops} == {"GPU-1", "GPU-\n9"}
    s = tflops[0]
    assert set(s.labels) == {"workload", "backend", "dtype", "case", "model", "uuid", "host"}
    assert s.labels["uuid"] == "GPU-1" and s.labels["case"].startswith("extra_knob=")
    [clock] = [x for x in families["colossus_bench_sm_clock_hertz"].samples
               if x.labels["host"] == "node01" and "m=4096 " in x.labels["case"]]
    assert clock.value == pytest.approx(1.98e9)
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_readers_survive_rows_stored_before_the_door(tmp_path):
    """Rows the door refuses today but an older version stored: export skips them, counted in
    one line; a value that is not even JSON cannot crash the query."""
    bad = [gemm(5, run_id="neg", median_s=-1.0), gemm(6, run_id="date", created_at="not-a-date"),
           gemm(7, run_id="uuid", device={**H100, "uuid": ["x"]})]
    url = db_with(tmp_path, "a.db", [gemm(0)], raw=bad)
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # another tool's row: params is not JSON at all
        conn.execute(sa.text("UPDATE results SET params = '{not json' WHERE run_id = 'neg'"))
    engine.dispose()
    frame = Store(url).frame()  # what the report and the model read: no crash either
    assert len(frame) == 4 and frame.set_index("run_id").loc["neg", "params"] == "{not json"
    from results.rows import usable

    assert len(usable(frame)[0]) == 1 and usable(frame)[1] == 3
    for fmt in ("jsonl", "csv", "openmetrics"):
        res = runner.invoke(app, ["export", "-f", fmt, "--db", url])
        assert res.exit_code == 0, res.output
        assert "1 " in res.stderr and "3 rows skipped" in res.stderr
        assert "Traceback" not in res.output


@pytest.mark.postgres
def test_export_and_readers_on_postgresql(pg_url, tmp_path):
    """JSONB comes back parsed by psycopg: the same exports and the same skipped count."""
    with Store(pg_url) as store:
        store.insert([gemm(0), membw(0)])
        store.insert_rows([_row(gemm(5, run_id="neg", median_s=-1.0))])
    out = tmp_path / "pg.parquet"
    res = runner.invoke(app, ["export", "-f", "parquet", "-o", str(out), "--db", pg_url])
    assert res.exit_code == 0 and "2 rows written" in res.stderr and "1 row skipped" in res.stderr
    table = pq.read_table(out)
    assert table.schema.remove_metadata() == EXPORT_SCHEMA.remove_metadata()
    assert sorted(table["workload"].to_pylist()) == ["gemm", "membw"]
    res = runner.invoke(app, ["export", "-f", "jsonl", "--db", pg_url])
    assert [json.loads(line)["workload"] for line in res.stdout.splitlines()] == ["gemm", "membw"]


def allreduce(size, cycle, median_s, **kw):
    base = dict(run_id="a1", workload="allreduce", backend="gloo", dtype="fp32",
                params={"op": "all_reduce", "bytes": size, "nranks": 2, "cycle": cycle},
                host="node01", device={"name": "cpu", "kind": "cpu"}, world_size=2,
                median_s=median_s, busbw_gbps=1.0 / median_s, correct=True,
                created_at=f"2026-01-02T00:00:{cycle:02d}Z")
    return Result(**{**base, **kw})


def test_openmetrics_one_series_per_case_whatever_the_cycles(tmp_path):
    """`allreduce -N` rows carry params["cycle"]: a repetition, not a case, so one label set
    per size (no cycle label), showing the latest cycle; the stderr line counts what the file
    holds: its samples and label sets."""
    rows = [allreduce(size, c, 1e-3 * (c + 1)) for size in (1024, 2048) for c in range(5)]
    url = db_with(tmp_path, "a.db", rows)
    out = tmp_path / "c.prom"
    res = cli("export", "-f", "openmetrics", "-o", out, "--db", url)
    assert res.exit_code == 0, res.output
    families = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    samples = [s for f in families.values() for s in f.samples]
    label_sets = {tuple(sorted(s.labels.items())) for s in samples}
    assert len(label_sets) == 2 and all("cycle" not in s.labels["case"] for s in samples)
    median = families["colossus_bench_median_seconds"].samples
    assert sorted(s.value for s in median) == [pytest.approx(5e-3)] * 2  # the last cycle
    assert f"export: {len(samples)} samples of 2 label sets written to" in res.stderr


def test_csv_created_at_is_iso_8601_utc(tmp_path):
    url = db_with(tmp_path, "a.db", [gemm(0, created_at="2026-01-01T02:00:00.746+02:00")])
    res = runner.invoke(app, ["export", "-f", "csv", "--db", url])
    assert res.exit_code == 0, res.output
    header, line = res.stdout.splitlines()[:2]
    at = line.split(",")[header.split(",").index('"created_at"')].strip('"')
    assert at == "2026-01-01T00:00:00.746000+00:00"
    jsonl = runner.invoke(app, ["export", "-f", "jsonl", "--db", url]).stdout
    assert datetime.fromisoformat(json.loads(jsonl)["created_at"]) == datetime.fromisoformat(at)
    assert "1 row written" in res.stderr
