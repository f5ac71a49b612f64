"""Per-rank status files, and the diagnosis of a run that failed or hung.

Each rank keeps `rank-<r>.json` in the run's status folder: its pid and host, a step counter
that advances before every phase (warm-up, timing, check of each size and placement) with a
description of that phase and the time it began (`step_t`; `t` is the last write), and a
final state: done, error (with the message), or terminated
(the launcher or torchrun stopped it), and a heartbeat (`beat`, rewritten every HEARTBEAT_S by
a thread of its own). A rank that vanishes with state still `running` was killed or crashed;
a rank whose step is behind the others never reached the collective they wait in; a rank whose
heartbeat stopped while its process lives is stopped (SIGSTOP) or frozen. Writes are atomic
(write, then rename), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from results.errors import first_line

RUNNING, DONE, ERROR, TERMINATED = "running", "done", "error", "terminated"
# Assumptions, not measurements: a beat every half second; a process that misses about four
# in a row (its Python threads have not run for 2 s) is called stopped or frozen.
HEARTBEAT_S = 0.5
HEARTBEAT_STALE_S = 2.0

# "[/path/to/gloo/transport/tcp/pair.cc:537] " and the like: noise in a one-line error
_SOURCE_LOCATION = re.compile(r"\[[^\]]*\.(?:cc|cpp|cu|h|hpp):\d+\] ?")


class StatusWriter:
    """One rank's status file; a no-op without a folder (e.g. under srun)."""

    def __init__(self, directory: str | os.PathLike | None, rank: int):
        self.path = Path(directory) / f"rank-{rank}.json" if directory else None
        self.data: dict[str, Any] = {"rank": rank, "pid": os.getpid(),
                                     "host": socket.gethostname(), "step": 0,
                                     "what": "starting", "state": RUNNING, "error": None,
                                     "t": time.time(), "step_t": time.time(),
                                     "beat": time.time()}
        self._lock = threading.Lock()  # the SIGTERM thread may write while the main one does
        self._write()

    def start_heartbeat(self, interval_s: float = HEARTBEAT_S) -> None:
        """Rewrite `beat` every `interval_s` until the rank's final state is written."""
        if self.path is None:
            return

        def beat():
            while self.data["state"] == RUNNING:
                time.sleep(interval_s)
                with self._lock:
                    if self.data["state"] != RUNNING:
                        return
                    self.data["beat"] = time.time()
                    self._write()

        threading.Thread(target=beat, name="heartbeat", daemon=True).start()

    def step(self, what: str) -> None:
        with self._lock:
            now = time.time()
            self.data.update(step=self.data["step"] + 1, what=what, t=now, step_t=now)
            self._write()

    def finish(self, state: str, error: str | None = None) -> None:
        with self._lock:
            if self.data["state"] != RUNNING:  # the first final word stands
                return
            self.data.update(state=state, error=error, t=time.time())
            self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        if not self.path.parent.is_dir():  # the launcher has removed the run folder
            return
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


def read_statuses(directory: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """rank -> status dict of every rank that has written one."""
    out: dict[int, dict[str, Any]] = {}
    for p in Path(directory).glob("rank-*.json"):
        try:
            d = json.loads(p.read_text())
            out[int(d["rank"])] = d
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable: treated as missing
    return out


def progress_key(statuses: dict[int, dict[str, Any]]) -> tuple:
    """Changes whenever any rank advances or ends: the watchdog's notion of progress."""
    return tuple(sorted((r, s.get("step"), s.get("state")) for r, s in statuses.items()))


def ranks_text(ranks: list[int]) -> str:
    ranks = sorted(ranks)
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def short_error(text: str | None, limit: int = 200) -> str:
    """The first line of an error, without gloo's source locations, cut to `limit`."""
    line = first_line(text)
    line = _SOURCE_LOCATION.sub("", line)
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _where(s: dict[str, Any]) -> str:
    return f"step {s['step']} ({s['what']})"


def diagnose(statuses: dict[int, dict[str, Any]], world_size: int, *, timed_out: bool = False,
             timeout_s: float | None = None) -> str:
    """One line naming the rank(s) at fault, from the statuses after the run has ended.

    Order of blame: ranks that never started; ranks that died (no final state: killed or
    crashed); ranks that fell behind (a lower step than the others: they never reached the
    collective the others waited in); then the earliest error.
    """
    parts: list[str] = []
    if timed_out:
        parts.append(f"no progress for {timeout_s:g} s (--timeout)" if timeout_s
                     else "no progress before the timeout")
    missing = [r for r in range(world_size) if r not in statuses]
    if not statuses:
        parts.append("no rank reported a status: the start failed (see the output above)")
    elif missing:
        parts.append(f"{ranks_text(missing)} never started (no status; see the output above)")
    unfinished = {r: s for r, s in statuses.items() if s.get("state") != DONE}
    died = [r for r, s in unfinished.items() if s.get("state") == RUNNING]
    for r in died:
        s = statuses[r]
        parts.append(f"rank {r} died after {_where(s)}: it ended without an exit status "
                     f"(killed or crashed; pid {s.get('pid')} on {s.get('host')})")
    steps = {r: s.get("step", 0) for r, s in unfinished.items()}
    if steps and min(steps.values()) < max(steps.values()):
        low = min(steps.values())
        behind = [r for r, k in steps.items() if k == low and r not in died]
        ahead = [r for r, k in steps.items() if k == max(steps.values())]
        if behind:
            parts.append(f"{ranks_text(behind)} stopped after {_where(statuses[behind[0]])} "
                         f"while {ranks_text(ahead)} waited in {_where(statuses[ahead[0]])}")
    elif timed_out and unfinished and not died:
        first = unfinished[min(unfinished)]
        parts.append(f"{ranks_text(list(unfinished))} stuck in {_where(first)}")
    errors = sorted((s.get("t", 0), r) for r, s in unfinished.items()
                    if s.get("state") == ERROR)
    if errors:
        first = statuses[errors[0][1]]
        parts.append(f"{ranks_text([r for _, r in errors])} failed in {_where(first)}: "
                     f"{short_error(first.get('error'))}")
    if not parts:
        return "the run failed (see the output above)"
    return "; ".join(parts)


def stall_message(statuses: dict[int, dict[str, Any]], stalled: list[int], timeout_s: float,
                  now: float | None = None) -> str:
    """One line for a run stopped because `stalled` ranks made no progress for `timeout_s`.

    Blamed first: ranks whose heartbeat stopped (the process is stopped or frozen); else the
    stalled ranks furthest behind (they never reached the collective the others wait in).
    Read from the statuses as they were when the watchdog fired, before the teardown.
    """
    now = time.time() if now is None else now
    live = {r: s for r, s in statuses.items() if r in stalled}
    frozen = [r for r, s in live.items() if now - s.get("beat", now) > HEARTBEAT_STALE_S]
    low = min((s.get("step", 0) for s in live.values()), default=0)
    culprits = frozen or [r for r, s in live.items() if s.get("step", 0) == low]
    parts = [f"{ranks_text(culprits)} made no progress for {timeout_s:g} s (--timeout)"]
    for r in frozen:
        s = statuses[r]
        parts.append(f"rank {r} is stopped or frozen: no heartbeat for "
                     f"{now - s['beat']:.0f} s (pid {s.get('pid')} on {s.get('host')})")
    ahead = [r for r, s in statuses.items() if r not in culprits and s.get("state") == RUNNING]
    first = statuses[culprits[0]]
    text = f"{ranks_text(culprits)} stopped after {_where(first)}"
    if ahead:
        top = max(ahead, key=lambda r: statuses[r].get("step", 0))
        text += f" while {ranks_text(ahead)} waited in {_where(statuses[top])}"
    parts.append(text)
    return "; ".join(parts)
