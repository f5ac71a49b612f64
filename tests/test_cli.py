"""The command line: the main job, its clear errors, export, ingest, and Ctrl-C / kill mid-run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cli import app
from results.schema import SCHEMA_VERSION
from results.store import Store, meta_table

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def filled_db(tmp_path_factory):
    """One real CPU run of the membw torch cases."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'r.db'}"
    res = cli("run", "--suite", "quick", "--filter", "membw/*:torch", "--db", url,
              "--timing", "smoke")
    assert res.exit_code == 0, res.output
    return url


def test_run_stores_checked_membw_rows(filled_db):
    df = Store(filled_db).frame()
    assert len(df) == 2 and set(df.status) == {"ok"} and df.correct.all()
    assert (df.gbps > 0).all()
    assert all(t["source"] == "none" for t in df.telemetry)


@pytest.mark.parametrize(("args", "message"), [
    (("run", "--suite", "nope"), "unknown suite 'nope'"),
    (("run", "--filter", "no-such-case"), "matches no case"),
    (("run", "--timing", "fast"), "unknown timing preset"),
    (("export", "--format", "xls"), "unknown format"),
])
def test_user_mistakes_give_one_line_and_exit_2(args, message, db_url):
    res = cli(*args, "--db", db_url)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_unwritable_database_path(tmp_path):
    (tmp_path / "file").write_text("")
    res = cli("run", "--filter", "membw", "--db", tmp_path / "file" / "x.db")
    assert res.exit_code == 2 and "cannot create the database folder" in res.output


def test_newer_schema_database(db_url):
    Store(db_url).close()
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(meta_table.update().values(value=str(SCHEMA_VERSION + 5)))
    engine.dispose()
    for args in (("run", "--filter", "membw"), ("export",)):
        res = cli(*args, "--db", db_url)
        assert res.exit_code == 2 and "upgrade colossus-bench" in res.output


def test_export_formats_and_jsonl_round_trip(filled_db, tmp_path):
    res = cli("export", "--format", "csv", "--db", filled_db)
    assert res.exit_code == 0 and "device_name" in res.output.splitlines()[0]
    out = tmp_path / "r.parquet"
    assert cli("export", "--format", "parquet", "--out", out, "--db", filled_db).exit_code == 0
    import pandas as pd

    assert len(pd.read_parquet(out)) == 2
    jl = tmp_path / "r.jsonl"
    assert cli("export", "--format", "jsonl", "--out", jl, "--db", filled_db).exit_code == 0
    other = f"sqlite:///{tmp_path / 'other.db'}"
    res = cli("ingest", jl, "--db", other)
    assert res.exit_code == 0 and "2 new" in res.output
    res = cli("ingest", jl, "--db", other)  # again: nothing doubled
    assert "0 new, 2 already there" in res.output
    assert Store(other).ids() == Store(filled_db).ids()


def _pytest_benchmark_json(tmp_path, *extra):
    out = tmp_path / "bench.json"
    env = {**os.environ, "COLOSSUS_BENCH_TIMING": "smoke", "COLOSSUS_BENCH_FILTER": "membw"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/benchmarks", "-q", "-p", "no:cacheprovider",
         f"--benchmark-json={out}", *extra], cwd=os.path.dirname(os.path.dirname(__file__)),
        env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.slow
def test_benchmark_suite_smoke_with_benchmark_disable():
    """CI's smoke run of the pytest-benchmark suite: every quick case checked, nothing timed by
    pytest-benchmark (--benchmark-disable)."""
    env = {**os.environ, "COLOSSUS_BENCH_SUITE": "quick"}
    env.pop("COLOSSUS_BENCH_FILTER", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/benchmarks", "-q", "-p", "no:cacheprovider",
         "--benchmark-disable"], cwd=os.path.dirname(os.path.dirname(__file__)), env=env,
        capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


@pytest.mark.slow
def test_pytest_benchmark_json_ingest(tmp_path):
    path = _pytest_benchmark_json(tmp_path)
    doc = json.loads(path.read_text())
    assert doc["machine_info"]["colossus_device"]["kind"] in ("cpu", "cuda")
    b = doc["benchmarks"][0]
    rec = b["extra_info"]["record"]
    # pytest-benchmark's own statistics are the recipe's samples (device time on a GPU)
    assert b["stats"]["median"] == pytest.approx(rec["median_s"])
    assert b["extra_info"]["gbps"] > 0 and rec["correct"] is True
    url = f"sqlite:///{tmp_path / 'i.db'}"
    res = cli("ingest", path, "--db", url)
    assert res.exit_code == 0, res.output
    assert Store(url).count() == len(doc["benchmarks"]) == 4


@pytest.mark.parametrize(("content", "message"), [
    ('{"benchmarks": [{"name": "x", "stats": {', "not valid JSON"),
    ('{"machine_info": {}, "benchmarks": [{"name": "test_foo", "stats": {"median": 1}}]}',
     "no colossus-bench record in extra_info"),
    ('{"run_id": "r", "workload": "membw"}\n', "line 1: missing field"),
    ("", "empty file"),
])
def test_malformed_files_are_refused_whole(tmp_path, db_url, content, message):
    good = Store(db_url)
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    res = cli("ingest", bad, "--db", db_url)
    assert res.exit_code == 2
    assert message in res.output and str(bad.name) in res.output
    assert good.count() == 0


def test_a_bad_row_after_good_ones_writes_nothing(filled_db, tmp_path, db_url):
    jl = tmp_path / "r.jsonl"
    cli("export", "--format", "jsonl", "--out", jl, "--db", filled_db)
    lines = jl.read_text().splitlines()
    jl.write_text("\n".join([*lines, '{"run_id": "x"}']) + "\n")
    res = cli("ingest", jl, "--db", db_url)
    assert res.exit_code == 2 and "line 3" in res.output
    assert Store(db_url).count() == 0


def _start_run(db):
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "run", "--filter", "membw", "--db", db],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_rows(db, proc, n=1, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if Store(db, create=False).count() >= n:
                return True
        except Exception:
            pass
        time.sleep(0.05)
    return False


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupt_or_crash_mid_run_keeps_finished_rows(tmp_path, sig):
    db = str(tmp_path / "r.db")
    proc = _start_run(db)
    try:
        assert _wait_for_rows(db, proc), "no row appeared"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    kept = Store(db).count()
    assert 1 <= kept < 4  # finished rows stayed; the run did not finish
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert "finished results are stored" in err


def test_export_into_a_closed_pipe_is_quiet(filled_db):
    env = {**os.environ, "COLOSSUS_BENCH_DB": filled_db}
    proc = subprocess.run(f"{sys.executable} -m cli export --format jsonl | head -c 10",
                          shell=True, env=env, capture_output=True, text=True, timeout=120)
    assert proc.stdout.startswith('{"id": "') and len(proc.stdout) == 10
    assert "Broken pipe" not in proc.stderr and "error" not in proc.stderr


@pytest.mark.parametrize("url", ["mysql://x@h/db", "postgresql://x@h:notaport/db"])
def test_unusable_database_urls_give_one_line(url):
    res = cli("export", "--db", url)
    assert res.exit_code == 2 and "cannot use database URL" in res.output
    assert "Traceback" not in res.output


def test_benchmark_file_whose_extra_info_is_not_an_object(tmp_path, db_url):
    bad = tmp_path / "other.json"
    bad.write_text('{"benchmarks": [{"name": "t", "stats": {}, "extra_info": ["x"]}]}')
    res = cli("ingest", bad, "--db", db_url)
    assert res.exit_code == 2 and "no colossus-bench record" in res.output
