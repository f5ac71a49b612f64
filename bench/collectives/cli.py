"""`colossus-bench allreduce`: collectives with nccl-tests semantics (registered by cli.py).

Outside a distributed world it launches --nproc-per-node local ranks through torchrun; inside
one (RANK/WORLD_SIZE from torchrun, or an srun job step) it runs as that rank, which is how
multi-node runs work (bench/slurm/allreduce.sbatch, or torchrun --nnodes ... --no-python
colossus-bench allreduce ...). Heavy imports stay inside the command: `colossus-bench --help`
must not import torch.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import typer

from bench.collectives.formulas import OPS
from results.console import choice, console, err_console, fail, open_store, print_json, value

OPS_HELP = "the collective (all: every one); repeat for several"
Collective = choice("Collective", (*OPS, "all"))
# bench.collectives.worker.DTYPES is the truth (it imports torch; tests/test_cli.py checks these)
Dtype = choice("Dtype", ("fp32", "bf16", "fp16"))
Backend = choice("Backend", ("nccl", "gloo"))


def _ops(values: list[str] | None) -> tuple[str, ...]:
    ops: list[str] = []
    for v in (value(v) for v in values or ["all_reduce"]):
        for name in (s.strip() for s in v.split(",")):
            if name == "all":
                ops += [o for o in OPS if o not in ops]
            elif name not in OPS:
                raise ValueError(f"unknown collective {name!r}; choose from "
                                 f"{', '.join(OPS)} or all")
            elif name not in ops:
                ops.append(name)
    return tuple(ops)


def allreduce(
    nproc_per_node: int | None = typer.Option(
        None, "--nproc-per-node", help="local ranks to launch (default: every visible GPU with "
                                       "nccl, 2 with gloo)"),
    backend: Backend | None = typer.Option(
        None, "--backend", show_default="nccl where CUDA is available, else gloo",
        help="process-group backend"),
    minbytes: str = typer.Option("1K", "-b", "--minbytes", help="smallest size: bytes or "
                                                                "1K/16M/1G"),
    maxbytes: str | None = typer.Option(None, "-e", "--maxbytes",
                                        help="largest size (default 1G with nccl, 16M with gloo)"),
    stepfactor: int = typer.Option(2, "-f", "--stepfactor", help="size multiplier (1: use -i)"),
    stepbytes: str = typer.Option("1M", "-i", "--stepbytes", help="size increment when -f is 1"),
    iters: int = typer.Option(20, "-n", "--iters", help="timed iterations per size"),
    warmup: int = typer.Option(5, "-w", "--warmup-iters", help="warm-up iterations"),
    check: int = typer.Option(1, "-c", "--check", help="check iterations (0: no check)"),
    op: list[Collective] | None = typer.Option(None, "--op", "-o", help=OPS_HELP,
                                               show_default="all_reduce"),
    dtype: Dtype = typer.Option("fp32", "--dtype", "-d", help="element type"),
    db: str | None = typer.Option(None, "--db", help="Database URL or SQLite path (default: "
                                                     "$COLOSSUS_BENCH_DB, else a per-user file)"),
    timeout: float = typer.Option(300.0, "--timeout", "-T",
                                  help="seconds without progress before the run is stopped"),
    iter_stats: bool = typer.Option(False, "-I", "--iter-stats",
                                    help="also print per-iteration median, p99 and CV"),
    no_telemetry: bool = typer.Option(False, "--no-telemetry", help="do not sample NVML"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON on stdout "
                                                       "(the table goes to stderr)"),
) -> None:
    """Collective bandwidth with nccl-tests semantics (algbw, busbw, #wrong), stored per size."""
    from bench.collectives.sizes import parse_size

    try:
        ops = _ops(op)
        sizes = (parse_size(minbytes), parse_size(maxbytes) if maxbytes else None,
                 parse_size(stepbytes))
    except ValueError as e:
        raise fail(str(e)) from None

    import torch

    from bench.collectives.launch import launch
    from bench.collectives.worker import CollConfig, world_from_env

    try:
        world = world_from_env()
    except ValueError as e:
        raise fail(str(e)) from None
    cuda = torch.cuda.is_available()
    backend = value(backend) or ("nccl" if cuda else "gloo")
    if backend not in ("nccl", "gloo"):
        raise fail(f"unknown backend {backend!r}; choose nccl or gloo")
    if backend == "nccl" and not cuda:
        raise fail("backend nccl needs CUDA GPUs and this machine has none; use --backend gloo")
    if world is not None and nproc_per_node is not None:
        raise fail(f"already rank {world.rank} of a {world.world_size}-rank world (from "
                   f"{world.source}); --nproc-per-node is only for launching local ranks")
    store = open_store(db) if world is None or world.rank == 0 else None
    try:
        cfg = CollConfig(ops=ops, backend=backend, dtype=value(dtype), min_bytes=sizes[0],
                         max_bytes=sizes[1] or parse_size("1G" if backend == "nccl" else "16M"),
                         step_factor=stepfactor, step_bytes=sizes[2], iters=iters,
                         warmup_iters=warmup, check_iters=check, timeout_s=timeout,
                         db_url=store.url if store else None,
                         run_id=uuid.uuid4().hex[:16],  # the format of bench.runner.new_run_id
                         iter_stats=iter_stats, json=as_json, telemetry=not no_telemetry)
    except (ValueError, TypeError) as e:
        raise fail(str(e)) from None
    where = store.display_url if store else ""
    if store:
        store.close()

    if world is not None:  # torchrun/srun started us: run as this rank
        code, rows, kept = _run_in_process(cfg, world, as_json, where)
        sys.stdout.flush()
        sys.stderr.flush()
        bad = any(r.correct is False for r in rows)
        # no process-group destructors after a failure
        os._exit(code or (1 if bad or kept else 0))

    nproc = nproc_per_node if nproc_per_node is not None else (
        torch.cuda.device_count() if backend == "nccl" else 2)
    if nproc < 1:
        raise fail(f"--nproc-per-node must be >= 1, got {nproc}")
    if backend == "nccl" and nproc > torch.cuda.device_count():
        raise fail(f"--nproc-per-node {nproc} > {torch.cuda.device_count()} visible GPUs: "
                   "NCCL needs one GPU per rank")
    outcome = launch(cfg, nproc)  # prints the line naming the kept file if storing failed
    saved = outcome.saved
    if as_json:
        print_json(outcome.rows)
    if outcome.interrupted:
        err_console.print(f"interrupted: {saved.stored} finished rows are stored in {where}",
                          highlight=False)
        raise typer.Exit(130)
    if outcome.error:
        raise fail(outcome.error, code=1)
    bad = [r for r in outcome.rows if r.get("correct") is False]
    if bad:
        raise fail(f"data check failed (#wrong > 0) for {len(bad)} of {len(outcome.rows)} rows; "
                   f"{saved.stored} rows are stored (failed ones with correct=false) in {where}",
                   code=1)
    summary = f"run {cfg.run_id}: {saved.stored} rows stored in {where}"
    if saved.kept:
        raise fail(f"{summary}; {saved.rows - saved.stored} are not (kept in {saved.kept})",
                   code=1)
    if not as_json:
        console.print(summary, highlight=False)


def _run_in_process(cfg, world, as_json: bool, where: str):
    """Run as `world.rank`; rank 0 spools its rows and stores them again at the end, like
    the launcher. Returns (exit code, rank 0's rows, the kept spool or None)."""
    import tempfile
    from dataclasses import replace

    from bench.collectives import spool as spoollib
    from bench.collectives.worker import run_rank

    if world.rank != 0:
        code, rows = run_rank(cfg, world)
        return code, rows, None
    fd, spool = tempfile.mkstemp(prefix=f"colossus-allreduce-{cfg.run_id}-", suffix=".jsonl")
    os.close(fd)
    code, rows = run_rank(replace(cfg, spool=spool), world)  # never raises
    saved = spoollib.save(spool, cfg.db_url, cfg.run_id)
    for path in (Path(spool), spoollib.stored_ids_path(spool)):
        if str(path) != saved.kept:
            path.unlink(missing_ok=True)
    if saved.kept:
        print(saved.message(), file=sys.stderr, flush=True)
    if as_json:
        print_json([r.to_dict() for r in rows])
    else:
        print(f"run {cfg.run_id}: {saved.stored} rows stored in {where}", flush=True)
    return code, rows, saved.kept

