"""Collectives on real torch.distributed gloo processes launched through torchrun, with real
failures planted by COLOSSUS_BENCH_FAULT: a rank with wrong data, a rank killed with SIGKILL,
a rank that hangs; and a database that cannot be written during the run (locked by another
connection, or refusing inserts), whose rows must be stored at the end or kept in a file.
Sizes are small and iterations few: the machine running tests is shared."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bench.collectives.config import CollConfig
from bench.collectives.faults import FAULT_ENV
from bench.collectives.formulas import busbw_factor
from bench.collectives.launch import launch, processes_mentioning
from results.store import Store

K = 1024
ALL = ("all_reduce", "all_gather", "reduce_scatter")
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _cfg(db_url, **kw):
    base = dict(ops=ALL, backend="gloo", min_bytes=K, max_bytes=16 * K, step_factor=4, iters=3,
                warmup_iters=1, check_iters=1, timeout_s=60.0, db_url=db_url, run_id="t",
                telemetry=False)
    base.update(kw)
    return CollConfig(**base)


def _assert_correct(row, n):
    """A good row: checked, #wrong 0, busbw = algbw x the op's factor, algbw = S / time."""
    assert row["status"] == "ok" and row["correct"] is True, row["error"]
    assert row["world_size"] == n and row["rank"] == 0 and row["params"]["nranks"] == n
    assert row["algbw_gbps"] == pytest.approx(row["params"]["bytes"] / row["mean_s"] / 1e9)
    factor = busbw_factor(row["params"]["op"], n)
    assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"] * factor)
    assert row["tolerance"] == 0.0 and row["max_rel_error"] == 0.0


def _no_orphans(outcome):
    deadline = time.monotonic() + 5
    while processes_mentioning(outcome.run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(outcome.run_dir) == []


def test_two_ranks_correct_then_a_planted_wrong_rank(db_url, capsys):
    """2 ranks, every op: correct sums up to 4 KiB; from 16 KiB rank 1 corrupts its output and
    the check catches it (#wrong > 0, correct=false, no throughput), for every op."""
    outcome = launch(_cfg(db_url), 2, env={FAULT_ENV: "wrong:1:after=4K"})
    table = capsys.readouterr().out
    assert outcome.ok, outcome.error
    rows = outcome.rows
    assert len(rows) == 3 * 3 * 2  # ops x sizes x placements
    for row in rows:
        if row["params"]["bytes"] <= 4 * K:
            _assert_correct(row, 2)
        else:
            assert row["correct"] is False and row["status"] == "failed"
            assert row["algbw_gbps"] is None and row["busbw_gbps"] is None
            assert row["median_s"] is None and row["samples_s"] == []
            assert "#wrong" in row["error"] and "rank 1:" in row["error"]
            assert "rank 0:" not in row["error"]  # only rank 1's output was corrupted
            assert row["max_rel_error"] > row["tolerance"]
    with Store(db_url) as store:
        assert store.count() == 18
    assert table.count("# Out of bounds values : 2 FAILED") == 3
    assert table.count("# Avg bus bandwidth") == 3
    assert "float     sum      -1" in table and "float    none      -1" in table


def test_cli_four_ranks_stores_rows(tmp_path):
    """The command of the issue, on CPU, in a subprocess; rows land in the table."""
    db = tmp_path / "cli.db"
    cmd = [sys.executable, "-m", "cli", "allreduce", "--backend", "gloo",
           "--nproc-per-node", "4", "-b", "1K", "-e", "16M", "-f", "4", "-n", "2", "-w", "1",
           "--db", str(db)]
    env = {k: v for k, v in os.environ.items() if k != FAULT_ENV}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [t for t in r.stdout.splitlines() if t and not t.startswith("#")]
    assert len([t for t in lines if " float " in t]) == 8  # 1K, 4K, ... 16M
    assert "# Avg bus bandwidth" in r.stdout and "16 rows stored" in r.stdout
    with Store(f"sqlite:///{db}") as store:
        rows = [x.to_dict() for x in store.records()]
    assert len(rows) == 16
    assert sorted({x["params"]["bytes"] for x in rows}) == [K * 4**i for i in range(8)]
    for row in rows:
        _assert_correct(row, 4)
        assert row["workload"] == "allreduce" and row["backend"] == "gloo"
        assert row["params"]["op"] == "all_reduce" and row["dtype"] == "fp32"


def test_killed_rank_ends_the_run_naming_it_and_keeps_finished_rows(db_url):
    """4 ranks, every op correct; then rank 3 dies (SIGKILL) in the reduce_scatter sweep."""
    t0 = time.monotonic()
    outcome = launch(_cfg(db_url), 4, env={FAULT_ENV: "die:3:after=4K:op=reduce_scatter"},
                     out=open(os.devnull, "w"))
    assert time.monotonic() - t0 < 90
    assert not outcome.ok and not outcome.timed_out
    assert outcome.error.startswith("rank 3 died after step"), outcome.error
    assert "reduce_scatter 4096 B in-place: check" in outcome.error
    rows = outcome.rows
    assert len(rows) == 6 + 6 + 4  # all_reduce, all_gather whole; reduce_scatter 1K and 4K
    for row in rows:
        _assert_correct(row, 4)
    assert {r["params"]["op"] for r in rows} == set(ALL)
    with Store(db_url) as store:
        assert store.count() == 16  # stored as they finished: the kill lost none
    _no_orphans(outcome)


def test_hung_rank_ends_at_the_timeout(db_url):
    """Rank 1 stops before the second size; the run ends at --timeout, naming rank 1."""
    timeout = 3.0
    t0 = time.monotonic()
    outcome = launch(_cfg(db_url, ops=("all_reduce",), max_bytes=4 * K, timeout_s=timeout), 2,
                     env={FAULT_ENV: "hang:1:after=1K"}, out=open(os.devnull, "w"))
    elapsed = time.monotonic() - t0
    assert not outcome.ok
    assert "rank 1 stopped after step" in outcome.error, outcome.error
    assert "all_reduce 1024 B in-place: check" in outcome.error
    assert "rank 0 waited in step" in outcome.error
    assert outcome.timed_out or "Timed out" in outcome.error
    hang_started = outcome.statuses[1]["step_t"]  # rank 1 hangs right after this step began
    ended = outcome.statuses[0]["t"]  # rank 0's last word: its own timeout or a SIGTERM
    assert timeout - 0.5 < ended - hang_started < timeout + 10  # at the timeout, not later
    assert elapsed < 90
    assert [r["params"]["bytes"] for r in outcome.rows] == [K, K]  # 1K out and in, kept
    _no_orphans(outcome)


# ---- a database that cannot be written while the ranks run --------------------------------
KEPT = re.compile(r"all (\d+) are kept in (\S+): load them later with "
                  r"`colossus-bench ingest (\S+) --db ([^`\s]+)`")


def _refusing_db(path: Path) -> str:
    """A results table whose inserts fail (a trigger: chmod does not stop root)."""
    url = f"sqlite:///{path}"
    Store(url).close()
    con = sqlite3.connect(path)
    con.execute("CREATE TRIGGER refuse BEFORE INSERT ON results "
                "BEGIN SELECT RAISE(ABORT, 'refused for the test'); END")
    con.commit()
    con.close()
    return url


def _allow(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER refuse")
    con.commit()
    con.close()


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in (FAULT_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                        "MASTER_PORT", "COLOSSUS_BENCH_DB")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # where a kept spool goes
    env.update(extra)
    return env


def _cli(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "cli", *args], capture_output=True,
                          text=True, timeout=240, cwd=cwd, env=env)


def _ingest_kept(stderr, tmp_path, db, expected_rows):
    """The one line names the kept file and the command that loads it; run that command."""
    found = KEPT.findall(stderr)
    assert len(found) == 1, stderr[-3000:]
    total, kept, again, url = found[0]
    assert int(total) == expected_rows and kept == again
    assert Path(kept).parent == tmp_path / "xdg" / "colossus-bench"  # bench/spool.py's place
    assert Path(kept).name.startswith("unstored-")  # and name, the runner's too
    assert len(Path(kept).read_text().splitlines()) == expected_rows
    _allow(db)
    r = _cli(["ingest", kept, "--db", url], _env(tmp_path), ROOT)
    assert r.returncode == 0, r.stderr
    assert f"{expected_rows} rows, {expected_rows} new" in r.stdout
    with Store(f"sqlite:///{db}") as store:
        assert store.count() == expected_rows


def test_rows_spooled_while_the_db_is_locked_are_stored_when_the_ranks_end(tmp_path,
                                                                            monkeypatch):
    """Another connection holds the database's exclusive lock for the whole run: rank 0 can
    neither open nor write it, warns and spools; the lock goes when the ranks are done, and
    the launcher's final pass stores every row, so the count it reports is true."""
    db = tmp_path / "locked.db"
    Store(f"sqlite:///{db}").close()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the run folder lands here
    lock = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    released = threading.Event()

    def release_when_rank_0_is_done():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            states = [json.loads(p.read_text()).get("state")
                      for p in tmp_path.glob("colossus-allreduce-*/rank-0.json")]
            if "done" in states:
                break
            time.sleep(0.05)
        lock.rollback()
        released.set()

    watcher = threading.Thread(target=release_when_rank_0_is_done, daemon=True)
    watcher.start()
    err = io.StringIO()
    try:
        outcome = launch(_cfg(f"sqlite:///{db}", ops=("all_reduce",), max_bytes=4 * K), 2,
                         out=open(os.devnull, "w"), err=err)
    finally:
        watcher.join(timeout=130)
        lock.close()
    assert released.is_set()
    assert outcome.ok, outcome.error
    warning = err.getvalue()
    assert "warning: storing results failed" in warning and "database is locked" in warning
    assert len(outcome.rows) == 4 and outcome.stored == 4 and outcome.saved.kept is None
    with Store(f"sqlite:///{db}") as store:
        assert store.count() == 4
    assert not Path(outcome.run_dir).exists()


def test_cli_keeps_rows_it_cannot_store_and_says_how_to_load_them(tmp_path):
    """The database refuses every insert, during the run and after: the CLI stores 0 rows,
    says so, exits 1, and keeps all rows in a file that `colossus-bench ingest` loads."""
    db = tmp_path / "refusing.db"
    _refusing_db(db)
    r = _cli(["allreduce", "--backend", "gloo", "--nproc-per-node", "2", "-b", "1K", "-e", "4K",
              "-f", "4", "-n", "2", "-w", "1", "--no-telemetry", "--db", str(db)],
             _env(tmp_path), tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "refused for the test" in r.stderr
    assert "0 rows stored in" in r.stderr and "rows stored" not in r.stdout
    _ingest_kept(r.stderr, tmp_path, db, 4)


def test_in_process_rank_keeps_rows_it_cannot_store(tmp_path):
    """`colossus-bench allreduce` as rank 0 of a one-rank world (as torchrun/srun start it)
    does the launcher's final pass itself: the same kept file and line."""
    db = tmp_path / "refusing.db"
    _refusing_db(db)
    r = _cli(["allreduce", "--backend", "gloo", "-b", "1K", "-e", "4K", "-f", "4", "-n", "2",
              "-w", "1", "--no-telemetry", "--db", str(db)],
             _env(tmp_path, RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"), tmp_path)
    assert r.returncode == 1, r.stderr[-3000:]
    assert "refused for the test" in r.stderr
    assert "0 rows stored in" in r.stdout
    _ingest_kept(r.stderr, tmp_path, db, 4)


@pytest.mark.skipif(Path("/proc/sys/vm/overcommit_memory").read_text().strip() not in ("0", "2"),
                    reason="needs the kernel to refuse an allocation larger than its memory")
def test_a_failed_allocation_is_named_in_one_line_without_tracebacks(db_url):
    """Buffers of 1 TiB per rank: each rank fails allocating them (the launcher is called
    directly, past the CLI's refusal); the summary names that step, and neither the ranks'
    tracebacks nor torchrun's report reach the terminal."""
    err, out = io.StringIO(), io.StringIO()
    outcome = launch(_cfg(db_url, ops=("all_reduce",), min_bytes=2**40, max_bytes=2**40), 2,
                     out=out, err=err)
    assert not outcome.ok
    assert "allocate buffers (2 x 1024G)" in outcome.error, outcome.error
    assert "init: process group" not in outcome.error
    assert "Traceback" not in err.getvalue() and "ChildFailedError" not in err.getvalue()
    assert err.getvalue().strip() == "", err.getvalue()
    logs = sorted(Path(outcome.run_dir).glob("rank-*.log"))  # named in the summary, kept
    assert len(logs) == 2 and all(str(p) in outcome.error for p in logs)
    assert "Traceback" in logs[0].read_text() and "allocate" in logs[0].read_text()
    shutil.rmtree(outcome.run_dir)
