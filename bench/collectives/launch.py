"""Local ranks through torchrun, with a watchdog and a teardown that leaves nothing behind.

`launch(cfg, nproc)` starts `python -m torch.distributed.run --standalone` (a rendezvous on a
free local port) in a session of its own, forwards its output, and watches the ranks' status
files (bench/collectives/status.py). The run ends when torchrun exits; or when a running rank
has not advanced for --timeout seconds, in which case everything is stopped and the error
names that rank ("rank N made no progress for T s"; the ranks' own collective timeouts are set
a little longer, so the launcher, which sees every rank, speaks first); or on SIGINT, SIGTERM
or SIGHUP to the launcher. torchrun starts each worker in a session of its own, so killing
torchrun's process group is not enough: the teardown signals torchrun, every descendant it
finds under /proc and every pid the ranks reported (SIGTERM, then SIGCONT so that a stopped
rank takes it), then SIGKILLs what is left; torchrun also gets SIGTERM from the kernel if the
launcher itself dies (PR_SET_PDEATHSIG). Rows are stored by rank 0 as each size completes, so
a stopped run keeps its finished sizes; rank 0 also spools them in the run folder, and after
the ranks end the launcher stores the spooled rows rank 0 did not, in batches, or keeps them
all as unstored-<run>.jsonl when the database cannot be written or a second signal ends that
pass (bench/spool.py). The run folder is removed in every case.
The database URL (which may hold a password) reaches the ranks in their environment, never in
a file.
"""

from __future__ import annotations

import collections
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from bench import spool as spoollib
from bench.collectives.config import DB_URL_ENV, CollConfig
from bench.collectives.status import (
    DONE,
    HEARTBEAT_STALE_S,
    RUNNING,
    diagnose,
    read_statuses,
    stall_message,
)
from bench.collectives.stop_signals import Stopped, StopSignals
from results.words import are, counted, was

POLL_S = 0.1
# Assumptions, not measurements: the ranks' own collective timeouts are this much longer than
# --timeout (the launcher stops a stalled run first, naming the rank); a start (importing torch
# in every rank, the rendezvous) gets this much beyond --timeout; a SIGTERM'd process this long
# before SIGKILL (ranks answer SIGTERM within milliseconds: their sigwait thread).
RANK_TIMEOUT_MARGIN_S = 30.0
STARTUP_GRACE_S = 120.0
TERM_GRACE_S = 3.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h

ROOT = Path(__file__).resolve().parents[2]  # the folder holding the bench package


@dataclass
class Outcome:
    """How a launched run ended. `error` is one line naming the rank(s) at fault, or None."""

    returncode: int | None
    rows: list[dict[str, Any]]
    error: str | None
    timed_out: bool
    interrupted: bool
    run_dir: str
    statuses: dict[int, dict[str, Any]] = field(default_factory=dict)
    saved: spoollib.Saved = field(default_factory=lambda: spoollib.Saved(0, 0))

    @property
    def stored(self) -> int:
        """Rows known to be in the database (len(rows) unless storing failed)."""
        return self.saved.stored

    @property
    def ok(self) -> bool:
        return self.error is None


def torchrun_command(nproc: int, config_path: str | os.PathLike) -> list[str]:
    """The torchrun command line for `nproc` local ranks running `python -m bench.collectives`."""
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise ValueError(f"--nproc-per-node must be a positive integer, got {nproc!r}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "bench.collectives", "--config",
            str(config_path)]


# ---- processes under /proc -------------------------------------------------------------------
def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    return None if fields[0] == "Z" else int(fields[1])  # a zombie is dead already


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children, grandchildren, ...)."""
    kids: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            ppid = _ppid(int(entry))
            if ppid is not None:
                kids[ppid].append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    return _ppid(pid) is not None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_mentioning(token: str) -> list[int]:
    """Live processes whose command line contains `token` (a run folder: our ranks)."""
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc")
            if e.isdigit() and int(e) != me and token in cmdline(int(e)) and alive(int(e))]


def _signal(pid: int, sig: int, group: bool = False) -> None:
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def teardown(proc: subprocess.Popen, run_dir: str, grace_s: float = TERM_GRACE_S) -> None:
    """Stop every rank and torchrun. The ranks get SIGTERM and SIGCONT (they record
    'terminated'; a stopped one takes the signal once continued) and `grace_s` to go; then
    torchrun, which has nothing to save and would spend seconds stopping workers that are
    gone already, and whatever is left get SIGKILL."""
    pids = (descendants(proc.pid) | set(processes_mentioning(run_dir))) - {proc.pid}
    for pid in pids:
        _signal(pid, signal.SIGTERM)
        _signal(pid, signal.SIGCONT)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(map(alive, pids)):
        time.sleep(0.02)
    if proc.poll() is None:
        _signal(proc.pid, signal.SIGKILL, group=True)
    pids |= descendants(proc.pid) | set(processes_mentioning(run_dir))
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL, group=True)  # each worker leads its own session
            _signal(pid, signal.SIGKILL)
    proc.wait()


# torchrun's own log lines ("E1202 00:08:13.674000 31904 torch/distributed/elastic/...]"): from
# the first on, its stderr is its failure report (its traceback, a ChildFailedError box), which
# says nothing the status files do not; kept in the tail, not shown
_TORCHRUN_LOG = re.compile(r"^[EWI]\d{4} [\d:.]+ +\d+ .*torch/distributed/elastic/")


def _pump(stream, sink: TextIO | None, fallback: str, tail: collections.deque) -> None:
    muted = False
    for text in iter(stream.readline, ""):
        tail.append(text)
        muted = muted or bool(_TORCHRUN_LOG.match(text))
        if muted:
            continue
        target = sink or getattr(sys, fallback)  # resolved late: pytest swaps sys.stdout
        try:
            target.write(text)
            target.flush()
        except (OSError, ValueError):
            pass
    stream.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies, however it dies. (Linux ties
    this to the thread that forked: call launch() from a thread that outlives the run.)"""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class _Watchdog:
    """Per-rank progress: when each rank's (step, state) last changed, as seen from here."""

    def __init__(self, nproc: int, cfg: CollConfig, startup_grace_s: float):
        self.nproc, self.cfg, self.grace = nproc, cfg, startup_grace_s
        self.t0 = time.monotonic()
        self.seen: dict[int, tuple] = {}
        self.changed: dict[int, float] = {}

    def stalled(self, statuses: dict[int, dict]) -> list[int]:
        """Running ranks without progress for --timeout (plus the start-up grace until every
        rank has started); [] while all is well."""
        now = time.monotonic()
        for r, s in statuses.items():
            key = (s.get("step"), s.get("state"))
            if self.seen.get(r) != key:
                self.seen[r], self.changed[r] = key, now
        started = len(statuses) == self.nproc and all(
            s.get("step", 0) >= 2 for s in statuses.values())
        limit = self.cfg.timeout_s + (0 if started else self.grace)
        if not started and now - self.t0 > limit:  # a rank that never wrote a status
            return [r for r in range(self.nproc) if r not in statuses] or list(statuses)
        return [r for r, s in statuses.items()
                if s.get("state") == RUNNING and now - self.changed[r] > limit]


def launch(cfg: CollConfig, nproc: int, *, out: TextIO | None = None, err: TextIO | None = None,
           env: dict[str, str] | None = None, startup_grace_s: float = STARTUP_GRACE_S,
           keep_run_dir: bool = False,
           store_retry_s: float = spoollib.STORE_RETRY_S) -> Outcome:
    """Run `cfg` on `nproc` local ranks through torchrun; never leaves a process behind.

    Ranks' stdout goes to `out` (default sys.stdout), their stderr to `err` (sys.stderr).
    `env` adds variables for the ranks (e.g. COLOSSUS_BENCH_FAULT). After the ranks end, the
    spooled rows are stored in cfg.db_url (retrying for `store_retry_s` while the failure may
    pass); rows that cannot be are kept in a file named by one line on `err` and in
    `Outcome.saved`.
    """
    run_dir = tempfile.mkdtemp(prefix="colossus-allreduce-")
    cfg = replace(cfg, status_dir=run_dir, pg_timeout_s=cfg.timeout_s + RANK_TIMEOUT_MARGIN_S)
    config_path = Path(run_dir) / "config.json"
    config_path.write_text(cfg.to_json())  # without the database URL
    child_env = dict(os.environ, **(env or {}))
    child_env.pop(DB_URL_ENV, None)
    if cfg.db_url:
        child_env[DB_URL_ENV] = cfg.db_url
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), child_env.get("PYTHONPATH")) if p)
    child_env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default too, without its banner
    err_tail: collections.deque = collections.deque(maxlen=50)
    pumps: list[threading.Thread] = []
    timed_out = interrupted = False
    stall = None
    watchdog = _Watchdog(nproc, cfg, startup_grace_s)
    stops = StopSignals()
    stops.catch()  # from here a signal is a Stopped the teardown answers
    stops.hold()  # one arriving while torchrun starts waits for `proc`
    try:
        proc = subprocess.Popen(torchrun_command(nproc, config_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1, env=child_env,
                                start_new_session=True, preexec_fn=_die_with_parent)
    except BaseException:  # torchrun did not start: nothing to tear down, nothing ran
        stops.restore()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    try:
        stops.release()  # a held signal is answered here, by the teardown
        pumps = [threading.Thread(target=_pump, args=(proc.stdout, out, "stdout",
                                                      collections.deque(maxlen=1)), daemon=True),
                 threading.Thread(target=_pump, args=(proc.stderr, err, "stderr", err_tail),
                                  daemon=True)]
        for t in pumps:
            t.start()
        while proc.poll() is None:
            statuses = read_statuses(run_dir)
            stalled = watchdog.stalled(statuses)
            if stalled:
                statuses = _settle(proc, run_dir, stalled, statuses)
                timed_out = True
                stall = (stall_message(statuses, stalled, cfg.timeout_s) if
                         all(r in statuses for r in stalled) else None)
                break
            time.sleep(POLL_S)
    except (KeyboardInterrupt, Stopped):
        interrupted = True
    finally:
        stops.ignore()  # a second signal must not cut the teardown short
        teardown(proc, run_dir)
        for t in pumps:
            t.join(timeout=5)
    try:
        return _conclude(cfg, nproc, proc, run_dir, err, err_tail, timed_out, interrupted,
                         stall, keep_run_dir, 0.0 if interrupted else store_retry_s, stops)
    finally:
        stops.restore()


def _settle(proc: subprocess.Popen, run_dir: str, stalled: list[int],
            statuses: dict[int, dict]) -> dict[int, dict]:
    """Before blaming: give a stopped or frozen rank's heartbeat time to go stale (a rank
    stopped just before the watchdog fired still looks alive), at most HEARTBEAT_STALE_S more.
    Returns the statuses to blame from."""
    deadline = time.monotonic() + HEARTBEAT_STALE_S + 2 * POLL_S
    while time.monotonic() < deadline and proc.poll() is None:
        now = time.time()
        if any(now - statuses[r].get("beat", now) > HEARTBEAT_STALE_S
               for r in stalled if r in statuses):
            break
        time.sleep(POLL_S)
        statuses = read_statuses(run_dir) or statuses
    return statuses


def _conclude(cfg, nproc, proc, run_dir, err, err_tail, timed_out, interrupted, stall,
              keep_run_dir, store_retry_s, stops: StopSignals) -> Outcome:
    """After the teardown: store the spool, name what went wrong, remove the run folder."""
    statuses = read_statuses(run_dir)
    spool = Path(run_dir) / "rows.jsonl"
    rows = spoollib.read_rows(spool)
    with stops.storing():  # a second signal ends the pass; its rows are then kept in a file
        saved = spoollib.save(spool, cfg.db_url, cfg.run_id, retry_s=store_retry_s)
    if saved.kept:
        print(saved.message(), file=err or sys.stderr, flush=True)
    left = saved.rows - saved.stored
    stored = f"{counted(saved.stored, 'finished row')} {was(saved.stored)} stored" + (
        f" ({left} more {are(left)} kept in {saved.kept})" if saved.kept else "")
    error = None
    if interrupted:
        error = f"interrupted; {stored}"
    elif stall:
        error = f"{stall}; {stored}"
    elif timed_out or proc.returncode != 0 or any(
            s.get("state") != DONE for s in statuses.values()) or len(statuses) < nproc:
        error = diagnose(statuses, nproc, timed_out=timed_out, timeout_s=cfg.timeout_s)
        if not statuses:
            last = next((t.strip() for t in reversed(err_tail) if t.strip()), "")
            error += f" (torchrun exit code {proc.returncode}: {last[:300]})"
        error += f"; {stored}"
    logs = sorted(Path(run_dir).glob("rank-*.log")) if error else []  # rank.py's tracebacks
    if logs:
        error += f"; the tracebacks are in {', '.join(map(str, logs))}"
    kept_inside = saved.kept is not None and Path(saved.kept).is_relative_to(run_dir)
    if not keep_run_dir and not kept_inside:
        if not logs:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:  # the logs alone stay
            for p in Path(run_dir).iterdir():
                if p in logs:
                    continue
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
    return Outcome(proc.returncode, rows, error, timed_out, interrupted, run_dir, statuses,
                   saved)
