"""The launcher's lifecycle with real processes and real signals: SIGTERM and SIGHUP to
`colossus-bench allreduce` end torchrun and every rank within 5 s and remove the run folder;
a SIGSTOPped rank ends the run within --timeout + 5 s, named; the database password reaches
the ranks in their environment, never in a file or on a command line."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from bench.collectives.config import CollConfig
from bench.collectives.faults import FAULT_ENV
from bench.collectives.launch import cmdline, descendants, launch, processes_mentioning
from results.store import Store

ROOT = Path(__file__).resolve().parents[1]
K = 1024

pytestmark = pytest.mark.slow


def _statuses(folder: Path) -> dict[int, dict]:
    out = {}
    for p in folder.glob("colossus-allreduce-*/rank-*.json"):
        try:
            d = json.loads(p.read_text())
            out[d["rank"]] = d
        except (OSError, ValueError):
            continue
    return out


def _wait_running(folder: Path, nproc: int, min_step: int = 6, limit_s: float = 120) -> dict:
    """Wait until every rank is past its start-up (in the sweep), return their statuses."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        st = _statuses(folder)
        if len(st) == nproc and all(s["step"] >= min_step for s in st.values()):
            return st
        time.sleep(0.05)
    raise AssertionError(f"ranks did not start: {st}")


def _gone(pids, limit_s: float) -> bool:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in pids):
            return True
        time.sleep(0.02)
    return False


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signal_to_the_launcher_ends_the_whole_tree(tmp_path, sig):
    env = {k: v for k, v in os.environ.items()
           if k not in (FAULT_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env.update(TMPDIR=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "xdg"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "allreduce", "--backend", "gloo", "--nproc-per-node", "2",
         "-b", "1K", "-e", "64K", "-f", "2", "-n", "400", "-w", "1", "--no-telemetry",
         "--db", str(tmp_path / "r.db")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        statuses = _wait_running(tmp_path, 2)
        tree = descendants(proc.pid) | {s["pid"] for s in statuses.values()}
        assert len(tree) >= 3  # torchrun and two ranks at least
        t0 = time.monotonic()
        proc.send_signal(sig)
        assert _gone(tree | {proc.pid}, 5.0), [cmdline(p) for p in tree if _state(p) != "Z"]
        proc.wait(timeout=5)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    assert elapsed < 5.0
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert list(tmp_path.glob("colossus-allreduce-*")) == []  # the run folder is removed
    assert processes_mentioning(str(tmp_path)) == []


def test_a_second_ctrl_c_cannot_cut_the_teardown_short(tmp_path):
    """Ctrl-C twice, 20 ms apart (an impatient user): the second lands in the teardown, which
    ignores it; every process still ends, the finished rows are stored and the folder goes."""
    env = {k: v for k, v in os.environ.items()
           if k not in (FAULT_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env.update(TMPDIR=str(tmp_path), XDG_DATA_HOME=str(tmp_path / "xdg"))
    db = tmp_path / "r.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "allreduce", "--backend", "gloo", "--nproc-per-node", "2",
         "-b", "1K", "-e", "64K", "-f", "2", "-n", "400", "-w", "1", "--no-telemetry",
         "--db", str(db)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        statuses = _wait_running(tmp_path, 2)
        tree = descendants(proc.pid) | {s["pid"] for s in statuses.values()}
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        assert _gone(tree | {proc.pid}, 10.0), [cmdline(p) for p in tree if _state(p) != "Z"]
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate()
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err, err[-2000:]
    said = re.search(r"(\d+) finished rows? (?:is|are|was|were) stored", err)
    assert said, err[-2000:]
    with Store(str(db)) as store:  # what the line says is there
        assert store.count() == int(said.group(1))
    assert list(tmp_path.glob("colossus-allreduce-*")) == []
    assert processes_mentioning(str(tmp_path)) == []


def test_a_signal_while_torchrun_starts_is_held_for_the_teardown(tmp_path, monkeypatch):
    """A SIGTERM that arrives while torchrun is being forked waits until the launcher has the
    process, then ends the run as any stop does: interrupted, nothing left, handlers back."""
    from bench.collectives import launch as launchlib
    from bench.collectives.stop_signals import TEARDOWN_SIGNALS

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real = subprocess.Popen

    def popen(*args, **kwargs):  # the signal lands just before the fork
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(launchlib.subprocess, "Popen", popen)
    before = {s: signal.getsignal(s) for s in TEARDOWN_SIGNALS}
    cfg = CollConfig(ops=("all_reduce",), backend="gloo", min_bytes=K, max_bytes=4 * K,
                     step_factor=4, iters=2, warmup_iters=1, run_id="held", telemetry=False)
    outcome = launch(cfg, 2, out=open(os.devnull, "w"))
    assert outcome.interrupted and outcome.error.startswith("interrupted"), outcome.error
    assert {s: signal.getsignal(s) for s in TEARDOWN_SIGNALS} == before
    assert list(tmp_path.glob("colossus-allreduce-*")) == []
    assert processes_mentioning(str(tmp_path)) == []


def test_torchrun_that_cannot_start_leaves_no_folder_and_the_handlers_as_they_were(
        tmp_path, monkeypatch):
    from bench.collectives import launch as launchlib
    from bench.collectives.stop_signals import TEARDOWN_SIGNALS

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def popen(*args, **kwargs):
        raise OSError("no such interpreter")

    monkeypatch.setattr(launchlib.subprocess, "Popen", popen)
    before = {s: signal.getsignal(s) for s in TEARDOWN_SIGNALS}
    cfg = CollConfig(ops=("all_reduce",), backend="gloo", run_id="nostart", telemetry=False)
    with pytest.raises(OSError, match="no such interpreter"):
        launch(cfg, 2, out=open(os.devnull, "w"))
    assert {s: signal.getsignal(s) for s in TEARDOWN_SIGNALS} == before
    assert list(tmp_path.glob("colossus-allreduce-*")) == []


def test_a_stop_signal_inherited_as_ignored_stays_ignored():
    """As Python itself does for a background job's SIGINT."""
    from bench.collectives.stop_signals import StopSignals

    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stops = StopSignals()
        stops.catch()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # caught
        with stops.storing():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        stops.restore()
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_a_stopped_rank_ends_the_run_at_the_timeout_naming_it(db_url, monkeypatch, tmp_path):
    """SIGSTOP freezes rank 1 (no exit, no status, no heartbeat): the run ends within
    --timeout + 5 s with one line naming it, and the stopped process is gone too."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    timeout = 3.0
    cfg = CollConfig(ops=("all_reduce",), backend="gloo", min_bytes=K, max_bytes=64 * K,
                     step_factor=2, iters=400, warmup_iters=1, timeout_s=timeout,
                     db_url=db_url, run_id="stop", telemetry=False)
    stopped: dict = {}

    def stop_rank_1():
        st = _wait_running(tmp_path, 2)
        stopped["pid"], stopped["t"] = st[1]["pid"], time.monotonic()
        os.kill(st[1]["pid"], signal.SIGSTOP)

    helper = threading.Thread(target=stop_rank_1, daemon=True)
    helper.start()
    outcome = launch(cfg, 2, out=open(os.devnull, "w"))
    ended = time.monotonic()
    helper.join(timeout=5)
    assert "t" in stopped, outcome.error
    assert ended - stopped["t"] < timeout + 5, ended - stopped["t"]
    assert outcome.timed_out and not outcome.ok
    assert outcome.error.startswith("rank 1 made no progress for 3 s (--timeout)"), outcome.error
    assert "rank 1 is stopped or frozen: no heartbeat" in outcome.error
    assert "died" not in outcome.error and len(outcome.error.splitlines()) == 1
    assert _gone([stopped["pid"]], 5.0)
    assert not Path(outcome.run_dir).exists()


@pytest.mark.postgres
def test_the_password_never_lands_in_a_file(pg_url, monkeypatch, tmp_path):
    import sqlalchemy as sa


    password = sa.engine.make_url(pg_url).password
    assert password and password in pg_url
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen: dict[str, str] = {}
    done = threading.Event()

    def look():  # while the ranks run: every file of the run folder, every command line
        while not done.is_set():
            for p in tmp_path.rglob("*"):
                if p.is_file():
                    try:
                        seen[str(p)] = p.read_text(errors="replace")
                    except OSError:
                        pass
            for pid in processes_mentioning(str(tmp_path)):
                seen[f"cmdline {pid}"] = cmdline(pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=look, daemon=True)
    watcher.start()
    cfg = CollConfig(ops=("all_reduce",), backend="gloo", min_bytes=K, max_bytes=4 * K,
                     step_factor=4, iters=2, warmup_iters=1, db_url=pg_url, run_id="pw",
                     telemetry=False)
    try:
        outcome = launch(cfg, 2, out=open(os.devnull, "w"), keep_run_dir=True)
    finally:
        done.set()
        watcher.join(timeout=5)
    assert outcome.ok, outcome.error
    for p in Path(outcome.run_dir).rglob("*"):
        seen[str(p)] = p.read_text(errors="replace")
    assert any(k.endswith("config.json") for k in seen)
    assert any(k.startswith("cmdline") for k in seen)
    leaks = [k for k, text in seen.items() if password in text]
    assert leaks == []
    with Store(pg_url) as store:  # the ranks had the URL: rank 0 stored every row
        assert store.count() == 4


def test_a_second_signal_ends_the_final_pass_and_keeps_the_rows(tmp_path, db_url, monkeypatch):
    """After the ranks are stopped the launcher stores the spool; a second SIGTERM (a real one,
    to this process) while it does ends that pass: the batches committed stay, none is
    half-written, and every row is kept in unstored-<run>.jsonl."""
    from bench import spool
    from bench.collectives.stop_signals import TEARDOWN_SIGNALS, StopSignals
    from results.schema import Result

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    path = tmp_path / "rows.jsonl"
    rows = [Result(run_id="t", workload="allreduce", backend="gloo", dtype="fp32",
                   params={"op": "all_reduce", "bytes": 4 * (i + 1)}, host="h",
                   device={"kind": "cpu"}) for i in range(3 * spool.BATCH_ROWS)]
    for r in rows:
        spool.append(path, r, sync=False)
    calls = []
    real = Store.insert

    def insert(self, records, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # as the second batch starts
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, records, **kwargs)

    monkeypatch.setattr(Store, "insert", insert)
    before = {s: signal.getsignal(s) for s in TEARDOWN_SIGNALS}
    try:
        with StopSignals().storing():
            saved = spool.save(path, db_url, "t", retry_s=0)
        assert all(signal.getsignal(s) == signal.SIG_IGN  # the teardown's again
                   for s in TEARDOWN_SIGNALS)
    finally:
        for s, h in before.items():
            signal.signal(s, h)
    assert saved.error == "interrupted while storing" and len(calls) == 2
    assert (saved.rows, saved.stored) == (len(rows), spool.BATCH_ROWS)
    with Store(db_url) as store:
        assert store.ids() == {r.id for r in rows[:spool.BATCH_ROWS]}  # whole batches only
    assert len(spool.read_rows(saved.kept)) == len(rows)
