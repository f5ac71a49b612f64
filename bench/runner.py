"""Runs cases: check against the reference, then time with telemetry, then store at once.

Order matters. The check runs on fresh random inputs before any timing, and a case that fails it
is stored with correct=false and no throughput: a wrong kernel has no speed. Each result is
inserted as soon as it exists (one small transaction), so Ctrl-C or a crash keeps every finished
result. An out-of-memory case, or one a backend cannot run, is stored as skipped with the reason;
any other exception is stored as failed; the run goes on either way.

On CPU (a preset with rounds > 1) every case is checked in turn as above, and the checked ones
are then timed together, round-robin (bench/timing.py `measure_rounds`): a row exists, and is
stored, once its case has its last sample, in the last round; a failed check at once.
"""

from __future__ import annotations

import gc
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import spool
from bench.budget import Estimator
from bench.device import DeviceInfo, peaks
from bench.record import Facts, build_record
from bench.telemetry import Sampler
from bench.timing import (
    Timing,
    TimingConfig,
    default_config,
    measure,
    measure_rounds,
    synchronizer,
)
from bench.workloads import WORKLOADS, Case, Check, Unsupported, Workload
from results.schema import Result

BUDGET = "budget"  # the error of a case a time-boxed run left out (status skipped)


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


@dataclass(frozen=True)
class RunContext:
    """What is fixed for a whole run."""

    run_id: str
    device: DeviceInfo
    timing: TimingConfig
    telemetry: bool = True


def tflops(flops: float | None, seconds: float) -> float | None:
    return flops / seconds / 1e12 if flops else None


def gbps(nbytes: float | None, seconds: float) -> float | None:
    return nbytes / seconds / 1e9 if nbytes else None


def peak_fraction(device: DeviceInfo, dtype: str, tflops_: float | None,
                  gbps_: float | None, link_peak_gbps: float | None = None,
                  bound: str = "compute") -> float | None:
    """Share of the datasheet peak of what bounds the workload (`Workload.bound`): TFLOP/s
    against the dtype's tensor peak for compute-bound ones; GB/s for memory-bound ones (and
    any row without TFLOP/s), against the workload's own link peak when it has one (PCIe,
    say), else HBM. Decode attention reports TFLOP/s too, but is memory-bound: its share is
    the bandwidth's."""
    memory = bound == "memory" or tflops_ is None
    if memory and gbps_ is not None and link_peak_gbps:
        return gbps_ / link_peak_gbps
    p = peaks(device)
    if p is None:
        return None
    if not memory:
        peak = p.tflops(dtype)
        return tflops_ / peak if peak else None
    if gbps_ is not None and p.hbm_tbps:
        return gbps_ / (p.hbm_tbps * 1e3)
    return None


def _is_oom(e: BaseException) -> bool:
    import torch

    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def _free(device: DeviceInfo) -> None:
    gc.collect()
    if device.kind == "cuda":
        import torch

        torch.cuda.empty_cache()


Timer = Callable[..., Timing]  # (fn, device, cfg, region=sampler) -> Timing


def describe(wl: Workload, case: Case) -> dict:
    """The case's own figures stored in every row (ok, failed or skipped), so that reports read
    rows only: FLOPs and bytes of one call, and a short shape label."""
    try:
        return {"flops": wl.flops(case), "bytes": wl.bytes_moved(case), "shape": wl.shape(case)}
    except (KeyError, ValueError, TypeError):  # a malformed hand-made case: its error says why
        return {}


def facts(case: Case, backend: str, ctx: RunContext) -> Facts:
    """The case's facts for the record builder (bench/record.py)."""
    return Facts(ctx.run_id, case.workload, backend, case.dtype, dict(case.params), ctx.device,
                 described=describe(WORKLOADS[case.workload], case))


def skipped(case: Case, backend: str, ctx: RunContext, reason: str) -> Result:
    """The row of a case that was not run (a time-boxed run's rest: reason "budget")."""
    return build_record(facts(case, backend, ctx), status="skipped", error=reason)


@dataclass
class Checked:
    """A case that passed its check, ready to time (with what its row needs)."""

    case: Case
    backend: str
    base: Facts
    inputs: object
    fn: Callable[[], object]
    first_s: float  # prepare + first call
    call_s: float  # the first call alone: on CPU (no JIT) near a steady call's time
    check: Check
    sampler: Sampler


def problem(base: Facts, e: Exception) -> Result:
    """The row of a case that raised: unsupported or out of memory is skipped, else failed."""
    if isinstance(e, Unsupported):
        return build_record(base, status="skipped", error=f"unsupported: {e}")
    if _is_oom(e):
        return build_record(base, status="skipped", error=f"out of memory: {str(e)[:200]}")
    last = traceback.extract_tb(e.__traceback__)[-1]
    return build_record(base, status="failed",
                        error=f"{type(e).__name__}: {e} ({last.filename}:{last.lineno})"[:2000])


def check_case(case: Case, backend: str, ctx: RunContext) -> Result | Checked:
    """Set up, prepare, call once and check one (case, backend) on fresh inputs: the row of a
    case that failed its check, was skipped or crashed, else the case ready to time. Never
    raises except KeyboardInterrupt."""
    wl = WORKLOADS[case.workload]
    base = facts(case, backend, ctx)
    inputs = None
    try:
        inputs = wl.setup(case, ctx.device)
        sync = synchronizer(ctx.device)
        t0 = time.perf_counter()  # prepare + first call: JIT compiles and autotuning happen here
        fn = wl.prepare(case, backend, inputs)
        t1 = time.perf_counter()
        out = fn()
        sync()
        t2 = time.perf_counter()
        first_s, call_s = t2 - t0, t2 - t1
        check: Check = wl.check(case, backend, inputs, out)
        del out
        if check.correct:
            return Checked(case, backend, base, inputs, fn, first_s, call_s, check,
                           Sampler(ctx.device, enabled=ctx.telemetry))
        result = build_record(base, compile_s=first_s, correct=False,
                              max_rel_error=check.max_rel_error, tolerance=check.tolerance,
                              status="failed",
                              error=f"reference check failed: max_rel_error "
                                    f"{check.max_rel_error:.3g} > tolerance "
                                    f"{check.tolerance:.3g}")
    except Exception as e:
        result = problem(base, e)
    del inputs
    _free(ctx.device)
    return result


def timed(c: Checked, timing: Timing, ctx: RunContext) -> Result:
    """The ok row of a checked case from its timing."""
    wl = WORKLOADS[c.case.workload]
    t = timing.median_s
    tf, gb = tflops(c.base.described.get("flops"), t), gbps(c.base.described.get("bytes"), t)
    # compile_s: the first call's time beyond one steady call (compiles, autotuning, lazy
    # initialisation); a figure per row, not a timing sample
    return build_record(c.base, timing=timing, compile_s=max(0.0, c.first_s - t),
                        tflops=tf, gbps=gb,
                        peak_fraction=peak_fraction(ctx.device, c.case.dtype, tf, gb,
                                                    wl.peak_gbps(c.case, ctx.device), wl.bound),
                        correct=True, max_rel_error=c.check.max_rel_error,
                        tolerance=c.check.tolerance, telemetry=c.sampler.summary(),
                        status="ok")


def run_case(case: Case, backend: str, ctx: RunContext, timer: Timer = measure) -> Result:
    """Check, time and describe one (case, backend). Never raises except KeyboardInterrupt.

    `timer` is the timing recipe's entry point; pytest-benchmark passes one that runs the same
    recipe through its own fixture (bench/benchmarks/conftest.py).
    """
    got = check_case(case, backend, ctx)
    if isinstance(got, Result):
        return got
    try:
        return timed(got, timer(got.fn, ctx.device, ctx.timing, region=got.sampler), ctx)
    except Exception as e:
        return problem(got.base, e)
    finally:
        del got
        _free(ctx.device)


def time_together(checked: list[Checked], ctx: RunContext,
                  keep: Callable[[Result], None]) -> None:
    """Time checked CPU cases round-robin (bench/timing.py `measure_rounds`): each case's
    samples span the whole timing, not one moment of a drifting machine. Each row is kept as
    soon as its case has its last sample."""

    def finished(i: int, timing: Timing | Exception) -> None:
        c = checked[i]
        with c.sampler:  # on CPU nothing to sample: the block gives its "no GPU" summary
            pass
        keep(problem(c.base, timing) if isinstance(timing, Exception) else timed(c, timing, ctx))

    measure_rounds([c.fn for c in checked], ctx.device, ctx.timing, done=finished)
    checked.clear()
    _free(ctx.device)


def run(pairs: list[tuple[Case, str]], store, *, device: DeviceInfo,
        run_id: str | None = None, timing: TimingConfig | None = None, telemetry: bool = True,
        budget_s: float | None = None, tune: bool = False, started: float | None = None,
        on_start: Callable[[Case, str], None] | None = None,
        on_estimate: Callable[[float], None] | None = None,
        on_result: Callable[[Result], None] | None = None,
        on_unstored: Callable[[Result, Path, Exception], None] | None = None) -> list[Result]:
    """Run (case, backend) pairs in order, storing each result as soon as it exists.

    `budget_s`: a time box. Before each case its estimate (bench/budget.py) is added to the time
    spent so far; once the next case would not fit, it and every later one are stored as
    skipped with error "budget" (so the table says what was not measured). `started`: the
    time.monotonic() the budget counts from (default now; the CLI passes its verb's start, so
    importing torch and starting CUDA are inside the box). `on_estimate` is told the estimated
    seconds left before each case.

    A result the table refuses (database locked or gone, disk full) is appended to
    `bench.spool.unstored_path(run_id)` instead, `on_unstored` is told, and the run goes on:
    nothing measured is lost to a database hiccup.
    """
    ctx = RunContext(run_id or new_run_id(), device, timing or default_config(device), telemetry)
    plan = Estimator(device, ctx.timing, tune).plan(pairs)  # for the time left
    estimator = Estimator(device, ctx.timing, tune)  # for the budget, charged as cases run
    together = device.kind != "cuda" and ctx.timing.rounds > 1  # CPU: timed round-robin
    pending: list[Checked] = []
    started = time.monotonic() if started is None else started
    out_of_budget = False
    done: list[Result] = []

    def keep(result: Result) -> None:
        if store is not None:
            try:
                store.insert([result])
            except Exception as e:  # SQLAlchemyError, StoreError, OSError: keep it elsewhere
                path = spool.unstored_path(ctx.run_id)
                spool.append(path, result)
                if on_unstored:
                    on_unstored(result, path, e)
        done.append(result)
        if on_result:
            on_result(result)

    for i, (case, backend) in enumerate(pairs):
        # the checked cases' timing is still to come, priced from their first call's time
        spent = time.monotonic() - started + sum(
            estimator.checked_timing_s(c.backend, c.call_s) for c in pending)
        if budget_s is not None and not out_of_budget:
            out_of_budget = spent + estimator.estimate(case, backend, commit=False) > budget_s
        if out_of_budget:
            keep(skipped(case, backend, ctx, BUDGET))
            continue
        estimator.estimate(case, backend)  # its compiles are now paid for
        if on_estimate:
            left = sum(plan[i:])
            on_estimate(left if budget_s is None else min(left, budget_s - spent))
        if on_start:
            on_start(case, backend)
        if not together:
            keep(run_case(case, backend, ctx))
            continue
        got = check_case(case, backend, ctx)
        if isinstance(got, Checked):
            pending.append(got)
        else:
            keep(got)
    if pending:
        time_together(pending, ctx, keep)
    return done
