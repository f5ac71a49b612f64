"""One rank of `colossus-bench allreduce`: nccl-tests' TimeTest and BenchTime, in torch.

Per collective, type and reduction (src/common.cu): buffers sized for the largest message, `-w`
warm-up calls at the largest and then the smallest size; then for each size, out-of-place and
then in-place: one untimed call and a barrier, `-n` timed calls back to back (each iteration's
buffers shifted through the allocation, as nccl-tests does, so small sizes do not sit in
cache; with `-z 1` each call is waited for and followed by a barrier), then `-c` check
iterations that re-initialise verifiable data, run one call and count wrong elements, summed
over ranks; a failing iteration stops the check. `-N` repeats the sweep.

Time, as nccl-tests reports it: each rank's span of the timed calls divided by their number,
combined over ranks by `-a` (default 1: the mean). We keep each iteration's time
(bench.timing.EventTimer around each call: CUDA events on GPUs, where one call's stop and the
next one's start sit back to back on the stream, so the samples add up to nccl-tests' span;
perf_counter on CPU, where the loop's own microseconds between calls fall outside the
samples); report.aggregate_samples picks those whose mean is the nccl-tests time, and their
median, p99 and spread are the per-iteration statistics (-I). algbw and busbw
are computed from the nccl-tests time, so they compare with published nccl-tests numbers.

Rank 0 builds one aggregate row per (size, collective, type, reduction, placement) with
world_size = n (bench.record), stores it at once (a run killed later keeps it) and prints the
nccl-tests table. The NCCL and gloo paths are this same code; backend.py holds what differs.
"""

from __future__ import annotations

import itertools
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

from bench import provenance
from bench import spool as spoollib
from bench.collectives import backend as be
from bench.collectives import faults as faultlib
from bench.collectives import report
from bench.collectives.config import AVERAGE, CollConfig, World
from bench.collectives.formulas import REDOP, Shape, algbw_or_none, busbw_gbps, shape
from bench.collectives.sizes import format_size
from bench.collectives.status import StatusWriter
from bench.collectives.verify import count_wrong, fill_input, tolerance, unwritten
from bench.device import detect, detect_cpu
from bench.record import Facts, build_record
from bench.telemetry import Sampler
from bench.timing import EventTimer, Timing
from results.schema import Result
from results.validate import FieldError
from results.words import counted

WORKLOAD = "allreduce"  # the collectives family is named after its verb; params["op"] says which
PLACEMENTS = {"out": "out-of-place", "in": "in-place"}


class RankRun:
    """The benchmark on one rank. Rank 0 also aggregates, prints and stores."""

    def __init__(self, cfg: CollConfig, world: World, status: StatusWriter):
        self.cfg, self.world, self.status = cfg, world, status
        self.rank, self.n = world.rank, world.world_size
        self.faults = faultlib.from_env()
        visible = torch.cuda.device_count() if cfg.backend == "nccl" else 0
        self.index = be.cuda_index(cfg.backend, world.local_rank, visible)
        self.device = detect(self.index) if self.index is not None else detect_cpu()
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
        be.init_process_group(self.cfg, self.world, self.index)
        if dist.get_world_size() != self.n or dist.get_rank() != self.rank:
            raise RuntimeError("the process group disagrees with the environment's rank/size")
        # Control traffic (times, counts) on a CPU group, like nccl-tests' MPI side channel.
        self.ctrl = dist.new_group(backend="gloo", timeout=timedelta(
            seconds=self.cfg.pg_timeout_s or self.cfg.timeout_s))
        if self.rank == 0 and self.cfg.db_url:
            from results.store import Store, StoreError  # sqlalchemy: only rank 0 stores

            try:
                self.status.step("open the database")
                self.store = Store(self.cfg.db_url)
            except StoreError as e:
                if not self.spool:
                    raise
                self._store_failed(e)
        self.status.step("meet the other ranks")
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
                    f"backend {c.backend}, {counted(self.n, 'rank')}")
        self._print(f"# nThread 1 nGpus 1 minBytes {c.min_bytes} maxBytes {c.max_bytes} step: "
                    f"{step} warmup iters: {c.warmup_iters} iters: {c.iters} agg iters: 1 "
                    f"validation: {c.check_iters} graph: 0")
        self._print(f"# time across ranks (-a {c.average}): {AVERAGE[c.average]}; timeout: "
                    f"{c.timeout_s:g} s")
        if c.blocking:
            self._print("# Blocking Enabled: wait for completion and barrier after each "
                        "collective ")
        for why in dict.fromkeys(c.refusals()):
            self._print(f"# not run: {why}")
        self._print("#")
        self._print("# Using devices")
        for r, d in enumerate(everyone or []):
            self._print(f"#  Rank {r:2d} Group  0 Pid {d['pid']:6d} on {d['host']:>10} device "
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

    def call_at(self, sh: Shape, placement: str, it: int, redop: str | None) -> None:
        send, recv, _ = self.views(sh, placement, self.shift(sh, it))
        be.call(sh, send, recv, placement, redop)
        if self.cfg.blocking:  # nccl-tests -z 1: complete the call, then a barrier
            self.sync()
            dist.barrier(group=self.ctrl)

    def sync(self) -> None:
        be.synchronize(self.device.kind)

    # ---- the sweep ----------------------------------------------------------------------
    def shapes(self, op: str, dtype: str) -> list[Shape]:
        elem = torch.tensor([], dtype=be.torch_dtype(dtype)).element_size()
        shapes, seen, skipped = [], set(), []
        for size in self.cfg.sizes():
            sh = shape(op, size, self.n, elem)
            if sh.count == 0:
                skipped.append(size)
            elif sh.nbytes not in seen:
                seen.add(sh.nbytes)
                shapes.append(sh)
        if skipped:
            self._print(f"# skipped sizes below one {dtype} element per rank: "
                        + ", ".join(format_size(s) for s in skipped))
        return shapes

    def run_all(self) -> None:
        """Every (collective, type, reduction), -N times (0: until stopped)."""
        cycles = itertools.count() if self.cfg.run_cycles == 0 else range(self.cfg.run_cycles)
        for cycle in cycles:
            for op, dtype, redop in self.cfg.tests():
                self.run_test(op, dtype, redop, cycle)

    def run_test(self, op: str, dtype: str, redop: str | None, cycle: int = 0) -> None:
        shapes = self.shapes(op, dtype)
        if not shapes:
            self._print(f"# {op}: no size holds one element per rank; nothing to run")
            return
        self.dtype_name, self.dtype, self.redop = dtype, be.torch_dtype(dtype), redop
        self.cycle = cycle
        span = max(sh.span for sh in shapes)
        label = f"{op} {dtype}" + (f" {redop}" if redop else "")
        self.status.step(f"{label}: allocate buffers (2 x "
                         f"{format_size(span * self.dtype.itemsize)})")
        # Timed data is random and never re-initialised: values do not change a collective's
        # speed (only the check needs known values). nccl-tests also sizes both buffers so.
        self.send = torch.randn(span, device=self.tdev).to(self.dtype)
        self.recv = torch.randn(span, device=self.tdev).to(self.dtype)
        self.status.step(f"{label}: warm-up")
        for sh in (shapes[-1], shapes[0]):  # nccl-tests: max size, then min size
            for it in range(self.cfg.warmup_iters):
                self.call_at(sh, "out", it, redop)
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
            self._print(report.line(sh.nbytes, sh.count, dtype, redop or REDOP[op], out, inp,
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
        self.call_at(sh, placement, 0, self.redop)  # nccl-tests "Sync": one call, then barrier
        self.sync()
        dist.barrier(group=self.ctrl)
        timers = [EventTimer(self.device) for _ in range(self.cfg.iters)]
        with Sampler(self.device, enabled=self.cfg.telemetry) as sampler:
            for it, timer in enumerate(timers):  # back to back: each call between its marks
                timer.start()
                self.call_at(sh, placement, it, self.redop)
                timer.stop()
            self.sync()
        samples = [t.seconds() for t in timers]
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
            (recv if base is None else base).fill_(unwritten(self.dtype))
            fill_input(sh, send, self.rank, seed, self.redop)
            be.call(sh, send, recv, placement, self.redop)
            self.sync()
            if faultlib.corrupts(self.faults, self.rank, sh.nbytes, sh.op):
                recv.add_(1)
            verdict = count_wrong(sh, recv, self.rank, seed, self.dtype, self.redop)
            wrong, err = verdict.wrong, verdict.max_rel_error
            total = torch.tensor([wrong], dtype=torch.int64)
            dist.all_reduce(total, group=self.ctrl)  # nccl-tests: Allreduce(sum) of #wrong
            if total.item():
                break
        return wrong, err

    # ---- rank 0: the aggregate row ------------------------------------------------------
    def params(self, sh: Shape, placement: str) -> dict:
        """The row's case. Options at nccl-tests' defaults are left out, so rows of runs that
        did not set them compare with older rows of the same case."""
        p = {"op": sh.op, "bytes": sh.nbytes, "placement": placement, "count": sh.count,
             "nranks": self.n}
        if self.redop not in (None, "sum"):
            p["redop"] = self.redop
        if self.cfg.average != 1:
            p["average"] = self.cfg.average
        if self.cfg.blocking:
            p["blocking"] = 1
        if self.cfg.run_cycles != 1:
            p["cycle"] = self.cycle
        return p

    def aggregate(self, sh: Shape, placement: str,
                  gathered: list[dict]) -> tuple[Result, report.Cell]:
        checked = self.cfg.check_iters > 0
        wrong = sum(g["wrong"] for g in gathered) if checked else None
        err = max(g["err"] for g in gathered) if checked else None
        tol = tolerance(sh, self.dtype, self.redop) if checked else None
        samples = report.aggregate_samples([g["samples"] for g in gathered], self.cfg.average)
        facts = Facts(self.cfg.run_id, WORKLOAD, self.cfg.backend, self.dtype_name,
                      self.params(sh, placement), self.device, world_size=self.n, rank=0)
        timing = Timing(samples)
        t = timing.mean_s  # the nccl-tests time (see the module docstring)
        stats = report.IterStats.of(samples)
        telemetry = self.telemetry(gathered)
        if wrong:
            per = ", ".join(f"rank {r}: {g['wrong']}" for r, g in enumerate(gathered)
                            if g["wrong"])
            error = (f"data check failed: #wrong {wrong} ({per}); max_rel_error {err:.3g} > "
                     f"tolerance {tol:.3g}")
            row = build_record(facts, correct=False, status="failed", error=error,
                               max_rel_error=err, tolerance=tol, telemetry=telemetry)
            return row, report.Cell(t, None, None, wrong, stats)  # a wrong result: no speed
        alg = algbw_or_none(sh.nbytes, t)
        bus = busbw_gbps(alg, sh.op, self.n)
        cell = report.Cell(t, alg, bus, wrong, stats)  # printed as nccl-tests prints it
        skip = be.not_a_bandwidth(self.cfg.backend, self.n)
        if skip or alg is None:
            return build_record(facts, correct=True if checked else None, status="skipped",
                                error=skip or "no time measured (0 s): no bandwidth",
                                max_rel_error=err, tolerance=tol, telemetry=telemetry), cell
        row = build_record(facts, timing=timing, algbw_gbps=alg, busbw_gbps=bus,
                           correct=True if checked else None, max_rel_error=err,
                           tolerance=tol, telemetry=telemetry, status="ok")
        return row, cell

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
            spoollib.append(self.spool, row, sync=False)
        if self.store is not None:
            try:
                self.store.insert([row])
            except FieldError as e:  # this row only (the door refused it): the next is stored
                self._store_failed(e, stop=False)
                return
            except Exception as e:  # the run goes on; the rows are still printed/spooled
                self._store_failed(e)
                return
            if self.spool:
                spoollib.mark_stored(self.spool, [row.id])

    def _store_failed(self, e: BaseException, stop: bool = True) -> None:
        """Warn once. With a spool and `stop`, stop trying: whoever started the ranks stores
        the spool when they end (bench/spool.py), and a dead server would stall every size."""
        if not self._store_warned:
            reason = (str(getattr(e, "orig", None) or e).strip().splitlines() or [""])[0]
            later = ("; the row is refused, the run goes on" if not stop
                     else "; rows are spooled and stored when the run ends" if self.spool
                     else "; the run goes on")
            print(f"warning: storing results failed: {reason}{later}", file=sys.stderr,
                  flush=True)
            self._store_warned = True
        if stop and self.spool and self.store is not None:
            self.store.close()
            self.store = None

    def finish(self) -> None:
        self.status.step("finish")
        dist.barrier(group=self.ctrl)
        if self.store is not None:
            self.store.close()
        dist.destroy_process_group()
