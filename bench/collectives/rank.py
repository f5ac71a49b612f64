"""One rank's life: run the sweep, record how it ended, turn errors into an exit code.

`python -m bench.collectives --config FILE` (the launcher's command, under torchrun) and the
CLI running inside an srun/torchrun world both come here. The status file (status.py) gets
the final word: done, error with its message, or terminated (SIGTERM from torchrun or the
launcher, taken by a thread of its own so that a rank blocked inside a collective still
answers within milliseconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

import torch.distributed as dist

from bench.collectives import signals
from bench.collectives.config import DB_URL_ENV, CollConfig, World, world_from_env
from bench.collectives.status import DONE, ERROR, StatusWriter
from bench.collectives.worker import RankRun
from results.schema import Result


def run(cfg: CollConfig, world: World, status: StatusWriter | None = None) -> list[Result]:
    """Run every collective of `cfg` as this rank; rank 0 returns the rows, others []."""
    status = status or StatusWriter(cfg.status_dir, world.rank)
    rr = RankRun(cfg, world, status)
    rr.start()
    rr.run_all()
    rr.finish()
    return rr.rows


def run_rank(cfg: CollConfig, world: World) -> tuple[int, list[Result]]:
    """run() with the status kept and errors turned into an exit code (0 ok, 1 failed)."""
    signals.install()
    status = StatusWriter(cfg.status_dir, world.rank)
    signals.attach(status)
    status.start_heartbeat()
    try:
        rows = run(cfg, world, status)
    except BaseException as e:  # Ctrl-C included: the status must say why it ended
        msg = f"{type(e).__name__}: {e}".strip()
        status.finish(ERROR, msg)
        _report(cfg, world.rank, msg, not isinstance(e, (KeyboardInterrupt, dist.DistError)))
        return 1, []
    status.finish(DONE)
    return 0, rows


def _report(cfg: CollConfig, rank: int, msg: str, with_traceback: bool) -> None:
    """The error and its traceback. Under the launcher (a status folder) the status file has
    the message, from which the launcher prints its one summary line, and the traceback goes
    into rank-<r>.log beside it (kept and named in that line); elsewhere (srun: the rank's
    stderr is its log) both on stderr."""
    text = f"rank {rank}: {msg}\n" + (traceback.format_exc() if with_traceback else "")
    if cfg.status_dir:
        if not with_traceback:
            return
        try:
            with open(os.path.join(cfg.status_dir, f"rank-{rank}.log"), "a") as f:
                f.write(text)
            return
        except OSError:
            pass
    print(text, end="", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="one rank of colossus-bench allreduce")
    p.add_argument("--config", required=True, help="JSON file written by the launcher")
    args = p.parse_args(argv)
    with open(args.config) as f:
        cfg = CollConfig.from_json(f.read(), db_url=os.environ.get(DB_URL_ENV))
    world = world_from_env()
    if world is None:
        sys.exit("python -m bench.collectives runs under torchrun or srun (no RANK/WORLD_SIZE)")
    code, _ = run_rank(cfg, world)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # never hang in process-group destructors after a failure
