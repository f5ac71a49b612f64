"""Fault injection for tests: real processes, real failures, no mocks.

COLOSSUS_BENCH_FAULT holds comma-separated faults, each `KIND:RANK[:after=SIZE][:op=OP]`:
  wrong:1           rank 1 corrupts its output in every check iteration (#wrong > 0)
  die:2:after=4K    rank 2 kills itself (SIGKILL, no clean-up) on reaching the first size
                    above 4 KiB, so the sizes up to 4 KiB finish everywhere first
  hang:1:after=1K   rank 1 stops (sleeps forever) on reaching the first size above 1 KiB
  die:3:after=4K:op=reduce_scatter   as above, only in the reduce_scatter sweep
Without `after` a fault fires from the first size on; without `op`, in every collective.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from bench.collectives.formulas import OPS
from bench.collectives.sizes import parse_size

FAULT_ENV = "COLOSSUS_BENCH_FAULT"
KINDS = ("wrong", "die", "hang")


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int
    after: int = -1  # fires at sizes strictly above this many bytes
    op: str | None = None  # only in this collective's sweep

    def fires(self, rank: int, size_bytes: int, op: str | None = None) -> bool:
        return (rank == self.rank and size_bytes > self.after
                and (self.op is None or op == self.op))


def parse_faults(spec: str | None) -> list[Fault]:
    """'wrong:1,die:2:after=4K' -> [Fault('wrong', 1), Fault('die', 2, 4096)]."""
    faults = []
    for item in (s.strip() for s in (spec or "").split(",")):
        if not item:
            continue
        kind, _, rest = item.partition(":")
        rank_text, *options = rest.split(":")
        if kind not in KINDS or not rank_text:
            raise ValueError(f"{FAULT_ENV}: bad fault {item!r}; expected "
                             f"KIND:RANK[:after=SIZE][:op=OP] with KIND one of {', '.join(KINDS)}")
        try:
            rank = int(rank_text)
        except ValueError:
            raise ValueError(f"{FAULT_ENV}: bad rank {rank_text!r} in {item!r}") from None
        after, op = -1, None
        for opt in options:
            key, _, value = opt.partition("=")
            if key == "after" and value:
                after = parse_size(value)
            elif key == "op" and value in OPS:
                op = value
            else:
                raise ValueError(f"{FAULT_ENV}: bad option {opt!r} in {item!r}; expected "
                                 f"after=SIZE or op=OP with OP one of {', '.join(OPS)}")
        faults.append(Fault(kind, rank, after, op))
    return faults


def from_env() -> list[Fault]:
    return parse_faults(os.environ.get(FAULT_ENV))


def corrupts(faults: list[Fault], rank: int, size_bytes: int, op: str) -> bool:
    """Does this rank corrupt its check output of `op` at this size?"""
    return any(f.kind == "wrong" and f.fires(rank, size_bytes, op) for f in faults)


def maybe_stop(faults: list[Fault], rank: int, size_bytes: int, op: str) -> None:
    """Die or hang here if a fault says so (called before the rank's first call at a size)."""
    for f in faults:
        if not f.fires(rank, size_bytes, op):
            continue
        if f.kind == "die":
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no exception, no status, no flush
        if f.kind == "hang":
            while True:  # a stuck rank: alive, silent, never reaching the collective
                time.sleep(3600)
