"""What differs between NCCL on GPUs and gloo on CPU, kept in one place and small.

The sweep (worker.py) is the same code on both; this module chooses the device a rank's
buffers live on, starts the process group (NCCL bound to that device at once, through
`device_id`), maps nccl-tests' reduction names to torch.distributed's, and issues one
collective. The CUDA-only decisions are pure functions of their inputs (`cuda_index`,
`init_kwargs`), so the CPU tests exercise them with the GPU counts a GPU node would report.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from bench.collectives.config import DTYPES, CollConfig, World
from bench.collectives.formulas import Shape, shape

# torch.distributed renamed the tensor forms in 2.13; older releases (the GPU image has 2.11)
# only have the *_into_tensor / *_tensor names. Same arguments: (output, input).
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor

REDUCE_OPS = {"sum": "SUM", "prod": "PRODUCT", "min": "MIN", "max": "MAX", "avg": "AVG"}


def torch_dtype(name: str) -> torch.dtype:
    return getattr(torch, DTYPES[name][0])


def reduce_op(redop: str | None):
    """torch.distributed's ReduceOp for a nccl-tests name (all_gather: None -> SUM, unused)."""
    return getattr(dist.ReduceOp, REDUCE_OPS[redop or "sum"])


def cuda_index(backend: str, local_rank: int, visible: int) -> int | None:
    """The GPU a rank uses: cuda:LOCAL_RANK, modulo the visible count where a site binds one
    GPU per task (each task then sees one GPU, index 0); None for gloo (host buffers)."""
    if backend != "nccl":
        return None
    if visible < 1:
        raise RuntimeError("backend nccl needs CUDA GPUs; use --backend gloo on CPU")
    return local_rank % visible


def not_a_bandwidth(backend: str, nranks: int) -> str | None:
    """Why a row of this world is stored as skipped rather than as a throughput, else None.

    NCCL with one rank has no peer: an in-place all-reduce returns without touching the data
    (no kernel runs), so the samples are microseconds of call overhead (or 0.0) and S/t comes
    out at ~1e5 GB/s and more, above any device's memory bandwidth. The table still prints the
    nccl-tests numbers (nccl-tests prints them too); the record keeps the check, not the speed.
    gloo's one-rank rows (CPU, where the flow is rehearsed) are kept as they are.
    """
    if backend == "nccl" and nranks == 1:
        return "one rank: NCCL moves no data, so the time is call overhead, not a bandwidth"
    return None


def init_kwargs(cfg: CollConfig, world: World, index: int | None,
                env: dict[str, str] | None = None) -> dict:
    """Arguments of dist.init_process_group for this rank.

    A lone rank without MASTER_ADDR needs no rendezvous (a HashStore); otherwise env://.
    NCCL gets `device_id`: the communicator is created at once on this rank's GPU (and every
    later NCCL call and barrier knows its device) instead of lazily on whatever device is
    current at the first collective.
    """
    env = os.environ if env is None else env
    kw: dict = {"backend": cfg.backend,
                "timeout": timedelta(seconds=cfg.pg_timeout_s or cfg.timeout_s)}
    if world.world_size == 1 and "MASTER_ADDR" not in env:
        kw.update(store=dist.HashStore(), rank=0, world_size=1)
    if index is not None:
        kw["device_id"] = torch.device("cuda", index)
    return kw


def init_process_group(cfg: CollConfig, world: World, index: int | None) -> None:
    if world.source == "slurm":  # env:// reads these; srun gives ranks, the script the address
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(f"under srun, set {' and '.join(missing)} (the first node and a "
                             "free port; see bench/slurm/allreduce.sbatch)")
        os.environ.update(RANK=str(world.rank), WORLD_SIZE=str(world.world_size),
                          LOCAL_RANK=str(world.local_rank))
    if index is not None:
        torch.cuda.set_device(index)  # before NCCL starts: its streams and buffers go here
    dist.init_process_group(**init_kwargs(cfg, world, index))


def call(sh: Shape, send: torch.Tensor, recv: torch.Tensor, placement: str,
         redop: str | None) -> None:
    """One collective. torch.distributed has no out-of-place all-reduce: out-of-place is a
    copy into the output and an in-place all-reduce there (said in the table's notes)."""
    if sh.op == "all_reduce":
        if placement == "out":
            recv.copy_(send)
        dist.all_reduce(recv, op=reduce_op(redop))
    elif sh.op == "all_gather":
        _all_gather(recv, send)
    else:
        _reduce_scatter(recv, send, op=reduce_op(redop))


def synchronize(kind: str) -> None:
    """Wait for the device (NCCL calls return once queued; gloo ones when done)."""
    if kind == "cuda":
        torch.cuda.synchronize()


def buffer_bytes(cfg: CollConfig, nranks: int) -> int:
    """What one rank allocates for its largest test: worker.run_test's send and recv buffers,
    each the largest shape's span of elements (a lower bound: torch's own overhead is left
    out, so a refusal on it is never wrong)."""
    top = max(cfg.sizes(), default=0)
    return max((2 * shape(op, top, nranks, torch_dtype(d).itemsize).span
                * torch_dtype(d).itemsize for op, d, _ in cfg.tests()), default=0)


def memory_bytes(backend: str) -> int:
    """The memory the ranks' buffers come out of: one GPU's (NCCL, one GPU per rank), else the
    host's physical memory (gloo: every local rank's buffers share it). The GPU's total is read
    from its properties, which open no CUDA context: this runs in the launcher and in every
    srun rank before it picks its GPU, and a context each on GPU 0 would cost its memory (and
    fail in exclusive-process mode). The smallest visible GPU: a rank may land on any of them."""
    if backend == "nccl":
        return min(torch.cuda.get_device_properties(i).total_memory
                   for i in range(torch.cuda.device_count()))
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
