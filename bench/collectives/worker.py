"""One rank of `colossus-bench allreduce`: nccl-tests' TimeTest and BenchTime, in torch.

Per collective (src/common.cu): buffers sized for the largest message, `-w` warm-up calls at the
largest and then the smallest size; then for each size, out-of-place and then in-place: one
untimed call and a barrier, `-n` timed calls back to back (each iteration's buffers shifted
through the allocation, as nccl-tests does, so small sizes do not sit in cache), then `-c` check
iterations that re-initialise verifiable data, run one call and count wrong elements, summed
over ranks; a failing iteration stops the check.

Time, as nccl-tests reports it: each rank's span of the timed calls divided by their number,
averaged over ranks (nccl-tests `-a 1`, its default). We also keep each iteration's time (CUDA
events between the calls on GPUs, perf_counter on CPU; the same span, cut at each call), averaged
over ranks per iteration: their mean is the nccl-tests time, their median, p99 and spread are
the per-iteration statistics. algbw and busbw are computed from the nccl-tests time, so they
compare with published nccl-tests numbers.

Rank 0 builds one aggregate row per (size, collective, placement) with world_size = n, stores
it at once (a run killed later keeps it), and prints the nccl-tests table. The NCCL and gloo
paths are this same code; only the backend string and where the buffers live differ.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from bench import provenance
from bench.collectives import faults as faultlib
from bench.collectives import report
from bench.collectives import spool as spoollib
from bench.collectives.formulas import REDOP, Shape, algbw_gbps, busbw_gbps, check_op, shape
from bench.collectives.sizes import format_size, size_sweep
from bench.collectives.status import DONE, ERROR, TERMINATED, StatusWriter
from bench.collectives.verify import count_wrong, fill_input, tolerance
from bench.device import DeviceInfo, detect
from bench.telemetry import Sampler
from bench.timing import Timing
from results.schema import Result

MiB = 1024**2
WORKLOAD = "allreduce"  # the collectives family is named after its verb; params["op"] says which
BACKENDS = ("nccl", "gloo")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PLACEMENTS = {"out": "out-of-place", "in": "in-place"}

# nccl-tests defaults (src/common.cu): -n 20, -w 5, -c 1. The timeout is our assumption: long
# enough for one phase (up to -n calls) of a 1 GiB collective on a slow fabric.
DEFAULT_ITERS, DEFAULT_WARMUP, DEFAULT_CHECK = 20, 5, 1
DEFAULT_TIMEOUT_S = 300.0

# torch.distributed renamed the tensor forms in 2.13; older releases (the GPU image has 2.11)
# only have the *_into_tensor / *_tensor names. Same arguments: (output, input).
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


@dataclass(frozen=True)
class CollConfig:
    """Everything a rank needs; the launcher writes it as JSON for its ranks."""

    ops: tuple[str, ...] = ("all_reduce",)
    backend: str = "gloo"
    dtype: str = "fp32"
    min_bytes: int = 1024
    max_bytes: int = 16 * MiB
    step_factor: int = 2
    step_bytes: int = MiB
    iters: int = DEFAULT_ITERS
    warmup_iters: int = DEFAULT_WARMUP
    check_iters: int = DEFAULT_CHECK
    timeout_s: float = DEFAULT_TIMEOUT_S
    db_url: str | None = None
    run_id: str = ""
    status_dir: str | None = None
    spool: str | None = None  # rank 0's JSON Lines of rows; default <status_dir>/rows.jsonl
    iter_stats: bool = False
    json: bool = False
    telemetry: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.ops, str) or not self.ops:
            raise ValueError("ops must be a non-empty sequence of collective names")
        object.__setattr__(self, "ops", tuple(check_op(op) for op in self.ops))
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of "
                             f"{', '.join(BACKENDS)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; choose one of {', '.join(DTYPES)}")
        for name in ("iters", "warmup_iters", "check_iters"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool):
                raise TypeError(f"{name} must be an int, got {type(v).__name__}")
        if self.iters < 1:
            raise ValueError(f"iters (-n) must be >= 1, got {self.iters}")
        if self.warmup_iters < 0 or self.check_iters < 0:
            raise ValueError("warm-up (-w) and check (-c) iterations must be >= 0")
        if not (isinstance(self.timeout_s, (int, float)) and self.timeout_s > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got "
                             f"{self.timeout_s!r}")
        self.sizes()  # validates -b, -e, -f, -i

    def sizes(self) -> list[int]:
        return size_sweep(self.min_bytes, self.max_bytes, self.step_factor, self.step_bytes)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CollConfig:
        d = json.loads(text)
        d["ops"] = tuple(d["ops"])
        return cls(**d)


@dataclass(frozen=True)
class World:
    """This process's place in the distributed job, from the launcher's environment."""

    rank: int
    world_size: int
    local_rank: int
    source: str  # "torchrun" (RANK/WORLD_SIZE, also set by users) or "slurm" (srun)


def world_from_env(env: dict[str, str] | None = None) -> World | None:
    """The world this process already belongs to, or None (then the CLI launches one).

    torchrun and friends set RANK and WORLD_SIZE; srun sets SLURM_PROCID and, only inside a
    job step (not in the batch script itself), SLURM_STEP_NUM_TASKS. A one-task srun step is
    not a world: `srun -N1 colossus-bench allreduce --nproc-per-node 8` launches locally.
    """
    env = os.environ if env is None else env
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            return World(int(env["RANK"]), int(env["WORLD_SIZE"]),
                         int(env.get("LOCAL_RANK", "0")), "torchrun")
        if "SLURM_PROCID" in env and int(env.get("SLURM_STEP_NUM_TASKS", "1")) > 1:
            return World(int(env["SLURM_PROCID"]), int(env["SLURM_STEP_NUM_TASKS"]),
                         int(env.get("SLURM_LOCALID", "0")), "slurm")
    except ValueError as e:
        raise ValueError(f"bad rank variables in the environment: {e}") from None
    return None


def _init_process_group(cfg: CollConfig, world: World) -> None:
    if world.source == "slurm":  # env:// reads these; srun gives ranks, the script the address
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing:
            raise ValueError(f"under srun, set {' and '.join(missing)} (the first node and a "
                             "free port; see bench/slurm/allreduce.sbatch)")
        os.environ.update(RANK=str(world.rank), WORLD_SIZE=str(world.world_size),
                          LOCAL_RANK=str(world.local_rank))
    if world.world_size == 1 and "MASTER_ADDR" not in os.environ:  # a lone rank needs no peers
        store = dist.HashStore()
        dist.init_process_group(cfg.backend, store=store, rank=0, world_size=1,
                                timeout=timedelta(seconds=cfg.timeout_s))
        return
    dist.init_process_group(cfg.backend, timeout=timedelta(seconds=cfg.timeout_s))


def _cpu_device() -> DeviceInfo:
    """The CPU as a DeviceInfo even where a GPU exists (gloo buffers live on the host)."""
    from bench.device import detect_cpu

    return detect_cpu()


class _CpuMarks:
    """Host timestamps between calls: gloo calls on CPU tensors return when they are done."""

    def __init__(self, n: int):
        self.t = [0.0] * n

    def record(self, i: int) -> None:
        self.t[i] = time.perf_counter()

    def durations(self) -> list[float]:
        return [b - a for a, b in zip(self.t, self.t[1:])]


class _CudaMarks:
    """CUDA events between calls on the current stream (which waits for each NCCL call)."""

    def __init__(self, n: int):
        self.ev = [torch.cuda.Event(enable_timing=True) for _ in range(n)]

    def record(self, i: int) -> None:
        self.ev[i].record()

    def durations(self) -> list[float]:
        torch.cuda.synchronize()
        return [a.elapsed_time(b) / 1e3 for a, b in zip(self.ev, self.ev[1:])]


class RankRun:
    """The benchmark on one rank. Rank 0 also aggregates, prints and stores."""

    def __init__(self, cfg: CollConfig, world: World, status: StatusWriter):
        self.cfg, self.world, self.status = cfg, world, status
        self.rank, self.n = world.rank, world.world_size
        self.faults = faultlib.from_env()
        self.dtype = DTYPES[cfg.dtype]
        self.elem_bytes = torch.tensor([], dtype=self.dtype).element_size()
        if cfg.backend == "nccl":
            if not torch.cuda.is_available():
                raise RuntimeError("backend nccl needs CUDA GPUs; use --backend gloo on CPU")
            # cuda:LOCAL_RANK; modulo the visible count where a site binds one GPU per task
            index = world.local_rank % torch.cuda.device_count()
            torch.cuda.set_device(index)
            self.device = detect(index)
        else:
            self.device = _cpu_device()
        self.tdev = self.device.torch_device
        self.out = sys.stderr if cfg.json else sys.stdout
        self.store = None
        self.spool = None
        if self.rank == 0 and (cfg.spool or cfg.status_dir):
            self.spool = cfg.spool or os.path.join(cfg.status_dir, "rows.jsonl")
        self.rows: list[Result] = []
        self.cells: list[report.Cell] = []
        self.rep = 0
        self._store_warned = False

    # ---- set-up -------------------------------------------------------------------------
    def start(self) -> None:
        self.status.step("init: process group")
        _init_process_group(self.cfg, self.world)
        if dist.get_world_size() != self.n or dist.get_rank() != self.rank:
            raise RuntimeError("the process group disagrees with the environment's rank/size")
        # Control traffic (times, counts) on a CPU group, like nccl-tests' MPI side channel.
        self.ctrl = dist.new_group(backend="gloo", timeout=timedelta(seconds=self.cfg.timeout_s))
        if self.rank == 0 and self.cfg.db_url:
            from results.store import Store, StoreError

            try:
                self.store = Store(self.cfg.db_url)
            except StoreError as e:
                if not self.spool:
                    raise
                self._store_failed(e)
        self._preamble()

    def _print(self, text: str = "") -> None:
        if self.rank == 0:
            print(text, file=self.out, flush=True)

    def _preamble(self) -> None:
        me = {"pid": os.getpid(), "host": provenance.host(), "device": self.tdev,
              "name": self.device.name}
        everyone = [None] * self.n if self.rank == 0 else None
        dist.gather_object(me, everyone, dst=0, group=self.ctrl)
        c = self.cfg
        step = f"{c.step_factor}(factor)" if c.step_factor > 1 else f"{c.step_bytes}(bytes)"
        self._print(f"# colossus-bench allreduce (nccl-tests semantics) run {c.run_id}: "
                    f"backend {c.backend}, {self.n} ranks, dtype {c.dtype}")
        self._print(f"# minBytes {c.min_bytes} maxBytes {c.max_bytes} step: {step} "
                    f"warmup iters: {c.warmup_iters} iters: {c.iters} "
                    f"validation: {c.check_iters} timeout: {c.timeout_s:g} s")
        self._print("#")
        self._print("# Using devices")
        for r, d in enumerate(everyone or []):
            self._print(f"#  Rank {r:2d} Pid {d['pid']:6d} on {d['host']:>10} device "
                        f"{d['device']} [{d['name']}]")
        self._print("#")

    # ---- one collective call ------------------------------------------------------------
    def views(self, sh: Shape, placement: str, shift: int):
        """(send, recv, in-place region) for one call; buffers shifted as nccl-tests does."""
        if placement == "out":
            return (self.send.narrow(0, shift, sh.send_count),
                    self.recv.narrow(0, shift, sh.recv_count), None)
        base = self.recv.narrow(0, shift, sh.span)
        return (base.narrow(0, sh.send_inplace_offset * self.rank, sh.send_count),
                base.narrow(0, sh.recv_inplace_offset * self.rank, sh.recv_count), base)

    def shift(self, sh: Shape, it: int) -> int:
        """nccl-tests startColl: iteration `it` uses offset span * (it % (max / span))."""
        steps = max(1, self.send.numel() // sh.span)
        return sh.span * (it % steps)

    def call(self, sh: Shape, send: torch.Tensor, recv: torch.Tensor, placement: str) -> None:
        if sh.op == "all_reduce":
            # torch.distributed has no out-of-place all-reduce: out-of-place is a copy into
            # the output and an in-place all-reduce there (said in the table's notes).
            if placement == "out":
                recv.copy_(send)
            dist.all_reduce(recv, op=dist.ReduceOp.SUM)
        elif sh.op == "all_gather":
            _all_gather(recv, send)
        else:
            _reduce_scatter(recv, send, op=dist.ReduceOp.SUM)

    def call_at(self, sh: Shape, placement: str, it: int) -> None:
        send, recv, _ = self.views(sh, placement, self.shift(sh, it))
        self.call(sh, send, recv, placement)

    def sync(self) -> None:
        if self.device.kind == "cuda":
            torch.cuda.synchronize()

    def marks(self, n: int):
        return _CudaMarks(n) if self.device.kind == "cuda" else _CpuMarks(n)

    # ---- the sweep ----------------------------------------------------------------------
    def shapes(self, op: str) -> list[Shape]:
        shapes, seen, skipped = [], set(), []
        for size in self.cfg.sizes():
            sh = shape(op, size, self.n, self.elem_bytes)
            if sh.count == 0:
                skipped.append(size)
            elif sh.nbytes not in seen:
                seen.add(sh.nbytes)
                shapes.append(sh)
        if skipped:
            self._print(f"# skipped sizes below one {self.cfg.dtype} element per rank: "
                        + ", ".join(format_size(s) for s in skipped))
        return shapes

    def run_op(self, op: str) -> None:
        shapes = self.shapes(op)
        if not shapes:
            self._print(f"# {op}: no size holds one element per rank; nothing to run")
            return
        span = max(sh.span for sh in shapes)
        # Timed data is random and never re-initialised: values do not change a collective's
        # speed (only the check needs known values). nccl-tests also sizes both buffers so.
        self.send = torch.randn(span, device=self.tdev).to(self.dtype)
        self.recv = torch.randn(span, device=self.tdev).to(self.dtype)
        self.status.step(f"{op}: warm-up")
        for sh in (shapes[-1], shapes[0]):  # nccl-tests: max size, then min size
            for it in range(self.cfg.warmup_iters):
                self.call_at(sh, "out", it)
        self.sync()
        self._print(f"# Collective: {op}")
        if op == "all_reduce":
            self._print("# note: out-of-place all_reduce = copy into the output + in-place "
                        "all_reduce (torch.distributed has no out-of-place all-reduce)")
        for text in report.header(self.cfg.iter_stats):
            self._print(text)
        cells: list[report.Cell] = []
        for sh in shapes:
            faultlib.maybe_stop(self.faults, self.rank, sh.nbytes, sh.op)
            out = self.bench_one(sh, "out")
            inp = self.bench_one(sh, "in")
            cells += [out, inp]
            self._print(report.line(sh.nbytes, sh.count, self.cfg.dtype, REDOP[op], out, inp,
                                    self.cfg.iter_stats))
        for text in report.footer(cells, self.n):
            self._print(text)
        self._print(f"# Collective test concluded: {op}")
        self._print("#")
        self.cells += cells
        del self.send, self.recv

    def bench_one(self, sh: Shape, placement: str) -> report.Cell:
        what = f"{sh.op} {sh.nbytes} B {PLACEMENTS[placement]}"
        self.status.step(f"{what}: timing")
        self.call_at(sh, placement, 0)  # nccl-tests "Sync": one call, completed, then barrier
        self.sync()
        dist.barrier(group=self.ctrl)
        marks = self.marks(self.cfg.iters + 1)
        with Sampler(self.device, enabled=self.cfg.telemetry) as sampler:
            for it in range(self.cfg.iters):
                marks.record(it)
                self.call_at(sh, placement, it)
            marks.record(self.cfg.iters)
            self.sync()
        samples = marks.durations()
        self.status.step(f"{what}: check")
        wrong, err = self.check(sh, placement)
        mine = {"samples": samples, "wrong": wrong, "err": err, "telemetry": sampler.summary()}
        gathered = [None] * self.n if self.rank == 0 else None
        dist.gather_object(mine, gathered, dst=0, group=self.ctrl)
        if self.rank != 0:
            return report.Cell(None, None, None, None)
        row, cell = self.aggregate(sh, placement, gathered)
        self.keep(row)
        return cell

    def check(self, sh: Shape, placement: str) -> tuple[int, float]:
        """nccl-tests' -c loop: fresh verifiable data, one call, count wrong elements.

        Returns this rank's wrong count and max relative error of the last iteration run;
        stops after the first iteration with wrong elements on any rank.
        """
        wrong, err = 0, 0.0
        for _ in range(self.cfg.check_iters):
            self.rep += 1
            seed = self.rep
            send, recv, base = self.views(sh, placement, 0)
            (recv if base is None else base).fill_(math.nan)  # unwritten output is wrong
            fill_input(sh, send, self.rank, seed)
            self.call(sh, send, recv, placement)
            self.sync()
            if faultlib.corrupts(self.faults, self.rank, sh.nbytes, sh.op):
                recv.add_(1)
            verdict = count_wrong(sh, recv, self.rank, seed, self.dtype)
            wrong, err = verdict.wrong, verdict.max_rel_error
            total = torch.tensor([wrong], dtype=torch.int64)
            dist.all_reduce(total, group=self.ctrl)  # nccl-tests: Allreduce(sum) of #wrong
            if total.item():
                break
        return wrong, err

    # ---- rank 0: the aggregate row ------------------------------------------------------
    def aggregate(self, sh: Shape, placement: str,
                  gathered: list[dict]) -> tuple[Result, report.Cell]:
        checked = self.cfg.check_iters > 0
        wrong = sum(g["wrong"] for g in gathered) if checked else None
        err = max(g["err"] for g in gathered) if checked else None
        tol = tolerance(sh, self.dtype) if checked else None
        samples = report.aggregate_samples([g["samples"] for g in gathered])
        params = {"op": sh.op, "bytes": sh.nbytes, "placement": placement, "count": sh.count,
                  "nranks": self.n}
        base = dict(run_id=self.cfg.run_id, workload=WORKLOAD, backend=self.cfg.backend,
                    dtype=self.cfg.dtype, params=params, host=provenance.host(),
                    device=self.device.record(), world_size=self.n, rank=0,
                    software=provenance.software(), telemetry=self.telemetry(gathered),
                    max_rel_error=err, tolerance=tol)
        if wrong:
            per = ", ".join(f"rank {r}: {g['wrong']}" for r, g in enumerate(gathered)
                            if g["wrong"])
            error = (f"data check failed: #wrong {wrong} ({per}); max_rel_error {err:.3g} > "
                     f"tolerance {tol:.3g}")
            return (Result(**base, correct=False, status="failed", error=error),
                    report.Cell(None, None, None, wrong))
        timing = Timing(samples)
        t = timing.mean_s  # the nccl-tests time (see the module docstring)
        alg = algbw_gbps(sh.nbytes, t)
        bus = busbw_gbps(alg, sh.op, self.n, os.environ.get("NCCL_ALGO"))
        row = Result(**base, **timing.stats(), algbw_gbps=alg, busbw_gbps=bus,
                     correct=True if checked else None, status="ok")
        stats = report.IterStats.of(samples)
        return row, report.Cell(t, alg, bus, wrong, stats)

    def telemetry(self, gathered: list[dict]) -> dict:
        """Rank 0's NVML summary, with every rank's under per_rank where a GPU was sampled."""
        tele = dict(gathered[0]["telemetry"])
        if any(g["telemetry"].get("source") == "nvml" for g in gathered):
            tele["per_rank"] = [g["telemetry"] for g in gathered]
        return tele

    def keep(self, row: Result) -> None:
        """Spool the row, then store it at once (one transaction)."""
        self.rows.append(row)
        if self.spool:
            spoollib.append_row(self.spool, row.to_dict())
        if self.store is not None:
            try:
                self.store.insert([row])
            except Exception as e:  # the run goes on; the rows are still printed/spooled
                self._store_failed(e)
                return
            if self.spool:
                spoollib.mark_stored(self.spool, [row.id])

    def _store_failed(self, e: BaseException) -> None:
        """Warn once. With a spool, stop trying: whoever started the ranks stores the spool
        when they end (bench/collectives/spool.py), and a dead server would stall every size."""
        if not self._store_warned:
            reason = (str(getattr(e, "orig", None) or e).strip().splitlines() or [""])[0]
            later = ("; rows are spooled and stored when the run ends" if self.spool
                     else "; the run goes on")
            print(f"warning: storing results failed: {reason}{later}", file=sys.stderr,
                  flush=True)
            self._store_warned = True
        if self.spool and self.store is not None:
            self.store.close()
            self.store = None

    def finish(self) -> None:
        self.status.step("finish")
        dist.barrier(group=self.ctrl)
        if self.store is not None:
            self.store.close()
        dist.destroy_process_group()


def run(cfg: CollConfig, world: World, status: StatusWriter | None = None) -> list[Result]:
    """Run every collective of `cfg` as this rank; rank 0 returns the rows, others []."""
    status = status or StatusWriter(cfg.status_dir, world.rank)
    rr = RankRun(cfg, world, status)
    rr.start()
    for op in cfg.ops:
        rr.run_op(op)
    rr.finish()
    return rr.rows


def exit_on_sigterm(status: StatusWriter) -> None:
    """Record `terminated` and exit when torchrun or the launcher sends SIGTERM.

    A Python signal handler would wait for the main thread, which may sit for minutes inside a
    collective; so SIGTERM is blocked here (threads started later inherit that) and a thread
    takes it with sigwait. Call it before torch starts its threads.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(*_):
        status.finish(TERMINATED, "stopped by SIGTERM (from torchrun or the launcher)")
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)  # for threads started before the mask
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def wait():
        signal.sigwait({signal.SIGTERM})
        stop()

    threading.Thread(target=wait, name="sigterm", daemon=True).start()


def run_rank(cfg: CollConfig, world: World) -> tuple[int, list[Result]]:
    """run() with the status kept and errors turned into an exit code (0 ok, 1 failed)."""
    status = StatusWriter(cfg.status_dir, world.rank)
    exit_on_sigterm(status)
    try:
        rows = run(cfg, world, status)
    except BaseException as e:  # Ctrl-C included: the status must say why it ended
        msg = f"{type(e).__name__}: {e}".strip()
        status.finish(ERROR, msg)
        print(f"rank {world.rank}: {msg}", file=sys.stderr, flush=True)
        if not isinstance(e, (KeyboardInterrupt, dist.DistError)):
            traceback.print_exc(file=sys.stderr)
        return 1, []
    status.finish(DONE)
    return 0, rows


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="one rank of colossus-bench allreduce")
    p.add_argument("--config", required=True, help="JSON file written by the launcher")
    args = p.parse_args(argv)
    with open(args.config) as f:
        cfg = CollConfig.from_json(f.read())
    world = world_from_env()
    if world is None:
        sys.exit("python -m bench.collectives runs under torchrun or srun (no RANK/WORLD_SIZE)")
    code, _ = run_rank(cfg, world)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # never hang in process-group destructors after a failure
