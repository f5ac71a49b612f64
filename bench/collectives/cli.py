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
import tempfile
import uuid
from dataclasses import replace
from pathlib import Path

import typer

from bench import spool as spoollib
from bench.collectives.config import CollConfig, parse_dtypes, parse_redops, world_from_env
from bench.collectives.formulas import OPS
from bench.collectives.sizes import format_size, parse_size
from results.console import choice, console, err_console, fail, open_store, print_json, value
from results.words import are, counted

COLLECTIVE_HELP = ("all_reduce | all_gather | reduce_scatter | all, or nccl-tests' binary names "
                   "(all_reduce_perf, ...); repeat or comma-separate")
PERF_SUFFIX = "_perf"  # nccl-tests builds one binary per collective: all_reduce_perf, ...
Backend = choice("Backend", ("nccl", "gloo"))
# --collective, -o and -d are free text in nccl-tests' spellings (comma lists, `all`, binary
# names, either type naming), parsed by config.py with one-line errors; their help lists names.


def _ops(values: list[str] | None) -> tuple[str, ...]:
    """--collective: names, nccl-tests binary names or paths (./build/all_reduce_perf), all."""
    ops: list[str] = []
    for v in values or ["all_reduce"]:
        for name in (s.strip() for s in v.split(",")):
            name = name.rsplit("/", 1)[-1].removesuffix(PERF_SUFFIX)
            if name == "all":
                ops += [o for o in OPS if o not in ops]
            elif name not in OPS:
                raise ValueError(f"unknown collective {name!r}; choose from "
                                 f"{', '.join(OPS)} or all (nccl-tests' other binaries, "
                                 "e.g. alltoall_perf, are not supported)")
            elif name not in ops:
                ops.append(name)
    return tuple(ops)


def _unsupported(ngpus: int, nthreads: int, agg_iters: int, cudagraph: int) -> str | None:
    """nccl-tests options we take but support at their defaults only: why, or None."""
    if ngpus != 1:
        return (f"-g {ngpus}: one GPU per rank (process) only; launch more ranks with "
                "--nproc-per-node")
    if nthreads != 1:
        return f"-t {nthreads}: one thread per rank only; launch more ranks with --nproc-per-node"
    if agg_iters != 1:
        return f"-m {agg_iters}: aggregated iterations (ncclGroupStart/End) are not supported"
    if cudagraph != 0:
        return f"-G {cudagraph}: CUDA graph capture is not supported (use -G 0)"
    return None


def allreduce(
    nproc_per_node: int | None = typer.Option(
        None, "--nproc-per-node", help="local ranks to launch (default: every visible GPU with "
                                       "nccl, 2 with gloo)"),
    backend: Backend | None = typer.Option(
        None, "--backend", show_default="nccl where CUDA is available, else gloo",
        help="process-group backend"),
    collective: list[str] | None = typer.Option(None, "--collective", help=COLLECTIVE_HELP,
                                                show_default="all_reduce"),
    minbytes: str = typer.Option("1K", "-b", "--minbytes", help="smallest size: bytes or "
                                                                "1K/16M/1G"),
    maxbytes: str | None = typer.Option(None, "-e", "--maxbytes",
                                        help="largest size (default 1G with nccl, 16M with gloo)"),
    stepfactor: int = typer.Option(2, "-f", "--stepfactor", help="size multiplier (1: use -i)"),
    stepbytes: str = typer.Option("1M", "-i", "--stepbytes", help="size increment when -f is 1"),
    iters: int = typer.Option(20, "-n", "--iters", help="timed iterations per size"),
    warmup: int = typer.Option(5, "-w", "--warmup_iters",
                               help="warm-up iterations"),
    check: int = typer.Option(1, "-c", "--check", help="check iterations (0: no check)"),
    redop: str = typer.Option("sum", "-o", "--op", help="reduction: sum | prod | min | max | avg "
                                                        "| all (comma-separate several)"),
    dtype: str = typer.Option("float", "-d", "--datatype", "--dtype",
                              help="float | half | bfloat16 | double | int8 | uint8 | int32 | "
                                   "int64 | f8e4m3 | f8e5m2 | all (or fp32, bf16, ...); uint32 "
                                   "and uint64 are refused: torch cannot fill or add them"),
    average: int = typer.Option(1, "-a", "--average",
                                help="time across ranks: 0 rank 0, 1 mean, 2 min, 3 max"),
    blocking: int = typer.Option(0, "-z", "--blocking",
                                 help="1: wait for each collective, then a barrier"),
    run_cycles: int = typer.Option(1, "-N", "--run_cycles",
                                   help="sweeps to run (0: until interrupted)"),
    ngpus: int = typer.Option(1, "-g", "--ngpus", help="GPUs per rank (1 only)"),
    nthreads: int = typer.Option(1, "-t", "--nthreads", help="threads per rank (1 only)"),
    agg_iters: int = typer.Option(1, "-m", "--agg_iters", help="aggregated calls (1 only)"),
    cudagraph: int = typer.Option(0, "-G", "--cudagraph", help="CUDA graph launches (0 only)"),
    db: str | None = typer.Option(None, "--db", help="Database URL or SQLite path (default: "
                                                     "$COLOSSUS_BENCH_DB, else a per-user file)"),
    timeout: float = typer.Option(300.0, "--timeout", "-T",
                                  help="seconds without progress before the run is stopped"),
    iter_stats: int = typer.Option(0, "-I", "--per_iter_timing",
                                   help="1: also print per-iteration median, p99 and CV"),
    no_telemetry: bool = typer.Option(False, "--no-telemetry", help="do not sample NVML"),
    as_json: bool = typer.Option(False, "--json", help="print the rows as JSON on stdout "
                                                       "(the table goes to stderr)"),
) -> None:
    """Collective bandwidth with nccl-tests semantics (algbw, busbw, #wrong), stored per size."""
    try:
        ops = _ops(collective)
        redops, dtypes = parse_redops(redop), parse_dtypes(dtype)
        sizes = (parse_size(minbytes), parse_size(maxbytes) if maxbytes else None,
                 parse_size(stepbytes))
    except ValueError as e:
        raise fail(str(e)) from None
    why = _unsupported(ngpus, nthreads, agg_iters, cudagraph)
    if why or blocking not in (0, 1) or iter_stats not in (0, 1):
        raise fail(why or "-z and -I take 0 or 1")

    import torch  # lazy: `colossus-bench --help` must not import torch

    from bench.collectives.launch import launch  # torchrun's side: only when launching

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
    try:  # the arguments first: a bad one is reported whatever the database's state
        cfg = CollConfig(ops=ops, backend=backend, dtypes=dtypes, redops=redops,
                         min_bytes=sizes[0],
                         max_bytes=sizes[1] or parse_size("1G" if backend == "nccl" else "16M"),
                         step_factor=stepfactor, step_bytes=sizes[2], iters=iters,
                         warmup_iters=warmup, check_iters=check, timeout_s=timeout,
                         average=average, blocking=bool(blocking), run_cycles=run_cycles,
                         run_id=uuid.uuid4().hex[:16],  # the format of bench.runner.new_run_id
                         iter_stats=bool(iter_stats), json=as_json, telemetry=not no_telemetry)
    except (ValueError, TypeError) as e:
        raise fail(str(e)) from None
    nproc = nproc_per_node if nproc_per_node is not None else (
        torch.cuda.device_count() if backend == "nccl" else 2)
    if world is None:  # every launch argument refused before the database is touched
        if nproc < 1:
            raise fail(f"--nproc-per-node must be >= 1, got {nproc}")
        if backend == "nccl" and nproc > torch.cuda.device_count():
            gpus = counted(torch.cuda.device_count(), "visible GPU")
            raise fail(f"--nproc-per-node {nproc} > {gpus}: NCCL needs one GPU per rank")
        _refuse_if_too_big(cfg, nproc, nproc)
    else:  # in an srun/torchrun world: how many ranks share this host is not known here
        _refuse_if_too_big(cfg, world.world_size, 1)
    store = open_store(db) if world is None or world.rank == 0 else None
    where = store.display_url if store else ""
    if store:
        cfg = replace(cfg, db_url=store.url)
        store.close()

    if world is not None:  # torchrun/srun started us: run as this rank
        code, rows, kept = _run_in_process(cfg, world, as_json, where)
        bad = [r for r in rows if r.correct is False]
        if bad:
            fail(f"data check failed (#wrong > 0) for {len(bad)} of "
                 f"{counted(len(rows), 'row')}; failed ones are stored with correct=false in "
                 f"{where}", code=1)
        sys.stdout.flush()
        sys.stderr.flush()
        # no process-group destructors after a failure
        os._exit(code or (1 if bad or kept else 0))

    outcome = launch(cfg, nproc)  # prints the line naming the kept file if storing failed
    saved = outcome.saved
    if as_json:
        print_json(outcome.rows)
    if outcome.interrupted:
        err_console.print(f"interrupted: {counted(saved.stored, 'finished row')} "
                          f"{are(saved.stored)} stored in {where}",
                          highlight=False)
        raise typer.Exit(130)
    if outcome.error:
        raise fail(outcome.error, code=1)
    bad = [r for r in outcome.rows if r.get("correct") is False]
    if bad:
        raise fail(f"data check failed (#wrong > 0) for {len(bad)} of "
                   f"{counted(len(outcome.rows), 'row')}; {counted(saved.stored, 'row')} "
                   f"{are(saved.stored)} stored (failed ones with correct=false) in {where}",
                   code=1)
    summary = f"run {cfg.run_id}: {counted(saved.stored, 'row')} stored in {where}"
    if saved.kept:
        left = saved.rows - saved.stored
        raise fail(f"{summary}; {left} {are(left)} not (kept in {saved.kept})",
                   code=1)
    if not as_json:
        console.print(summary, highlight=False)


def _refuse_if_too_big(cfg, nranks: int, local_ranks: int) -> None:
    """Exit 2 before any rank starts when the largest size's buffers cannot fit: one GPU's
    memory per NCCL rank, or the host's for all local gloo ranks together."""
    from bench.collectives.backend import buffer_bytes, memory_bytes  # imports torch

    need = buffer_bytes(cfg, nranks) * (1 if cfg.backend == "nccl" else local_ranks)
    have = memory_bytes(cfg.backend)
    if need > have:
        where = "one GPU's" if cfg.backend == "nccl" else "this host's"
        ranks = "a rank" if cfg.backend == "nccl" else counted(local_ranks, "local rank")
        raise fail(f"-e {format_size(cfg.max_bytes)}: the largest size needs "
                   f"{need / 2**30:.1f} GiB of buffers for {ranks}, more than {where} "
                   f"{have / 2**30:.1f} GiB of memory; lower -e (--maxbytes)")


def _run_in_process(cfg, world, as_json: bool, where: str):
    """Run as `world.rank`; rank 0 spools its rows and stores them again at the end, like
    the launcher. Returns (exit code, rank 0's rows, the kept spool or None)."""
    from bench.collectives.rank import run_rank  # imports torch

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
        print(f"run {cfg.run_id}: {counted(saved.stored, 'row')} stored in {where}", flush=True)
    return code, rows, saved.kept

