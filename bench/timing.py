"""The one timing recipe, for every workload.

On a GPU: warm up by time (clocks ramp, autotuners and caches settle), estimate one call's time,
choose the repetition count that fills a time budget, then time each repetition alone between
two CUDA events with the L2 cache flushed before it (a large buffer write outside the events), so
every sample is a cold-L2 call and no sample hides another's tail. A GPU sleep queued first
keeps the device busy while the host enqueues every sample, so no sample measures launch gaps.
On CPU: the same over perf_counter, under `cpu_timing` (bench/cpu_recipe.py: CPU_TIMING,
recorded in the row), the samples of a run's cases taken round-robin (`measure_rounds`) with a
fixed `yardstick` timed among them (its median recorded in each row: the guest's speed). Raw
samples are kept: the median is what we report, the spread is evidence.

One primitive marks device intervals for every timer (this recipe, pytest-benchmark's clock in
bench/benchmarks, the collective worker): `EventTimer` (a CUDA event pair on the current
stream; perf_counter marks on CPU) and its context manager `device_interval`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

from bench.cpu_recipe import cpu_timing, timing_settings, yardstick
from bench.device import DeviceInfo


@dataclass(frozen=True)
class TimingConfig:
    """How long to warm up and time. Presets below; `budget_s` is the timed total to aim for."""

    warmup_s: float = 0.2
    budget_s: float = 1.0
    min_reps: int = 10
    max_reps: int = 1000
    flush_l2: bool = True
    # CPU only: each case's samples in `rounds` slices taken round-robin over all the cases of
    # a run (`measure_rounds`), so that a case's samples span the run, not one moment of it.
    rounds: int = 1


PRESETS: dict[str, TimingConfig] = {
    "gpu": TimingConfig(),
    # The CPU path proves the flow (the Triton interpreter is slow): time little, in six
    # round-robin slices: a small VM's speed drifts up to ~2x over seconds, so a case timed in
    # one stretch got that moment's speed (docs/USAGE.md "CPU rows"). No 20-sample cap.
    "cpu": TimingConfig(warmup_s=0.0, budget_s=0.2, min_reps=6, max_reps=10000, flush_l2=False,
                        rounds=6),
    # Smoke runs (CI with --benchmark-disable, tests): one warm-up call, three samples.
    "smoke": TimingConfig(warmup_s=0.0, budget_s=0.0, min_reps=3, max_reps=3, flush_l2=False),
}


def default_config(device: DeviceInfo) -> TimingConfig:
    return PRESETS["gpu"] if device.kind == "cuda" else PRESETS["cpu"]


class EventTimer:
    """One device interval: `start()` and `stop()` record marks on the current stream (CUDA
    events with timing enabled), `seconds()` reads the interval once the device has passed the
    stop mark (it waits for that event). On CPU the marks are perf_counter readings. Marks are
    queued, not waited for: record many intervals, synchronise once, then read them all (the
    recipe below does so for every sample)."""

    __slots__ = ("_cuda", "_start", "_stop")

    def __init__(self, device: DeviceInfo):
        self._cuda = device.kind == "cuda"
        if self._cuda:
            import torch

            self._start = torch.cuda.Event(enable_timing=True)
            self._stop = torch.cuda.Event(enable_timing=True)
        else:
            self._start = self._stop = None

    def start(self) -> None:
        if self._cuda:
            self._start.record()
        else:
            self._start = time.perf_counter()

    def stop(self) -> None:
        if self._cuda:
            self._stop.record()
        else:
            self._stop = time.perf_counter()

    def seconds(self) -> float:
        if self._cuda:
            self._stop.synchronize()
            return self._start.elapsed_time(self._stop) / 1e3  # elapsed_time is in ms
        return self._stop - self._start


@contextmanager
def device_interval(device: DeviceInfo) -> Iterator[EventTimer]:
    """`with device_interval(device) as t: work()` then `t.seconds()`: the device time of the
    work queued inside the block (on CPU, the host time of the block)."""
    timer = EventTimer(device)
    timer.start()
    yield timer
    timer.stop()


def percentile(sorted_xs: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list, q in [0, 1]."""
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Timing:
    """Raw per-call samples in seconds and their statistics; `settings`: what the recipe held
    fixed while sampling (CPU_TIMING on CPU, empty on a GPU), and `yardstick_s` (CPU only: the
    median `yardstick` next to the samples), for the record's software."""

    samples_s: list[float] = field(repr=False)
    settings: dict[str, int | bool] = field(default_factory=dict)
    yardstick_s: float | None = None

    def __post_init__(self) -> None:
        if not self.samples_s:
            raise ValueError("a timing needs at least one sample")

    @property
    def n(self) -> int:
        return len(self.samples_s)

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def p20_s(self) -> float:
        return percentile(sorted(self.samples_s), 0.2)

    @property
    def p80_s(self) -> float:
        return percentile(sorted(self.samples_s), 0.8)

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.samples_s)

    @property
    def stdev_s(self) -> float:
        return statistics.stdev(self.samples_s) if self.n > 1 else 0.0

    def software(self) -> dict[str, int | bool | float]:
        """The record's software["timing"]."""
        y = self.yardstick_s
        return {**self.settings, **({} if y is None else {"yardstick_s": y})}

    def stats(self) -> dict[str, float | int | list[float]]:
        """The timing fields of the result record."""
        return {"median_s": self.median_s, "p20_s": self.p20_s, "p80_s": self.p80_s,
                "mean_s": self.mean_s, "stdev_s": self.stdev_s, "n": self.n,
                "samples_s": list(self.samples_s)}


def repetitions(estimate_s: float, cfg: TimingConfig) -> int:
    """Enough repetitions to fill the budget, within [min_reps, max_reps]."""
    if estimate_s <= 0:
        return cfg.max_reps
    return max(cfg.min_reps, min(cfg.max_reps, int(cfg.budget_s / estimate_s)))


_flush_buffers: dict[str, object] = {}

# Larger than any Hopper L2 (50 MB H100, 60 MB H200): writing it evicts everything we timed.
L2_FLUSH_BYTES = 256 * 1024 * 1024


def _flush_buffer(device: DeviceInfo):
    import torch

    buf = _flush_buffers.get(device.torch_device)
    if buf is None:
        buf = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=device.torch_device)
        _flush_buffers[device.torch_device] = buf
    return buf


def measure(fn: Callable[[], object], device: DeviceInfo, cfg: TimingConfig | None = None,
            region: AbstractContextManager | None = None) -> Timing:
    """Time `fn` (which launches the work once) by the recipe above. `region` (the telemetry
    sampler) is entered around the timed samples only, after the warm-up."""
    cfg = cfg or default_config(device)
    if device.kind == "cuda":
        return _measure_cuda(fn, device, cfg, region or nullcontext())
    (timing,) = measure_rounds([fn], device, cfg, region or nullcontext())
    if isinstance(timing, Exception):
        raise timing
    return timing


def warm_up(fn: Callable[[], object], device: DeviceInfo, cfg: TimingConfig) -> float:
    """Run `fn` until `cfg.warmup_s` has passed (at least once after a first untimed call:
    compilation, autotuning and allocation stay out of it); return the per-call estimate."""
    sync = synchronizer(device)
    fn()
    sync()
    calls = 0
    t0 = time.perf_counter()
    while True:
        fn()
        calls += 1
        sync()
        if time.perf_counter() - t0 >= cfg.warmup_s:
            return (time.perf_counter() - t0) / calls


def synchronizer(device: DeviceInfo) -> Callable[[], None]:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.kind != "cuda":
        return lambda: None
    import torch

    return lambda: torch.cuda.synchronize(device.index)


def l2_flusher(device: DeviceInfo, cfg: TimingConfig) -> Callable[[], None] | None:
    """A callable that evicts the cache (a write of L2_FLUSH_BYTES), or None where not wanted
    (`cfg.flush_l2` false: the CPU and smoke presets)."""
    if not cfg.flush_l2:
        return None
    return flusher(_flush_buffer(device))


def flusher(buf) -> Callable[[], None]:
    """The flush of `buf` as a callable returning None. It must return None: pytest-benchmark's
    pedantic(setup=...) reads a true return value as (args, kwargs), and the tensor that
    `fill_` returns is not one (its truth is an error for any large tensor)."""

    def flush() -> None:
        buf.fill_(1)

    return flush


def measure_rounds(fns: list[Callable[[], object]], device: DeviceInfo, cfg: TimingConfig,
                   region: AbstractContextManager | None = None,
                   done: Callable[[int, Timing | Exception], None] | None = None,
                   ) -> list[Timing | Exception]:
    """The CPU recipe for one or several prepared cases, under `cpu_timing`: warm each up, give
    it its repetitions (at least `cfg.rounds`), take them in `cfg.rounds` slices round-robin
    over the cases (one case: back to back), the `yardstick` timed between every two shares
    (each case's `yardstick_s`: the median of those either side of its shares, the guest's
    speed while it was sampled). A case that raises gets its exception in its place; the
    others go on. `done(i, result)` is told of each case as soon as it has its last sample (or
    failed). `region` is entered around the samples."""
    flush = l2_flusher(device, cfg)
    rounds = max(1, cfg.rounds)
    out: list = [None] * len(fns)
    reps = [0] * len(fns)
    samples: list[list[float]] = [[] for _ in fns]
    yard: list[list[float]] = [[] for _ in fns]

    def finish(i: int, result: Timing | Exception) -> None:
        out[i] = result
        if done is not None:
            done(i, result)

    with cpu_timing(device):
        for i, fn in enumerate(fns):
            try:
                reps[i] = max(rounds, repetitions(warm_up(fn, device, cfg), cfg))
            except Exception as e:  # the case's own failure, stored by the caller
                finish(i, e)
        yardstick()  # untimed first call, as every case's
        with region or nullcontext():
            for r in range(rounds):
                before = yardstick()
                for i in [i for i, o in enumerate(out) if o is None]:
                    try:
                        for _ in range(slice_of(reps[i], r, rounds)):
                            if flush is not None:
                                flush()
                            with device_interval(device) as t:
                                fns[i]()
                            samples[i].append(t.seconds())
                    except Exception as e:
                        finish(i, e)
                        before = yardstick()
                        continue
                    after = yardstick()
                    yard[i] += (before, after)
                    before = after
                    if r == rounds - 1:
                        finish(i, Timing(samples[i], timing_settings(device),
                                         statistics.median(yard[i])))
    return out


def slice_of(reps: int, r: int, rounds: int) -> int:
    """Round r's share of `reps` samples split over `rounds` (the shares add up to reps)."""
    return reps * (r + 1) // rounds - reps * r // rounds


# Upper bound of the SM clock, to turn seconds into torch.cuda._sleep cycles (H100/H200 boost
# 1.98 GHz): over-estimating the clock only makes the backlog longer, never too short.
SLEEP_CYCLES_PER_S = 2.0e9
MAX_BACKLOG_S = 1.0


def backlog_s(host_s_per_rep: float, reps: int) -> float:
    """How long the GPU must be kept busy before the samples so that the host can enqueue all
    of them first: every sample then starts with work already queued, and no sample includes
    the GPU idling while the host launches (launch-heavy calls such as autograd backward or
    decode-sized GEMMs otherwise measure the host). 20% margin, capped."""
    return min(MAX_BACKLOG_S, 1.2 * host_s_per_rep * reps)


def enqueue_s(fn: Callable[[], object], device: DeviceInfo,
              flush: Callable[[], None] | None) -> float:
    """The host's time to enqueue one sample (flush and call, no synchronisation inside),
    then waits for the device: what the backlog must cover per sample."""
    t0 = time.perf_counter()
    if flush is not None:
        flush()
    fn()
    host_s = time.perf_counter() - t0
    synchronizer(device)()
    return host_s


def sleep(device: DeviceInfo, seconds: float) -> None:
    """Queue `seconds` of GPU busy-waiting on the current stream (torch.cuda._sleep), so the
    work the host enqueues next starts only once it is all queued. No-op on CPU or for 0."""
    cycles = int(seconds * SLEEP_CYCLES_PER_S)
    if device.kind == "cuda" and cycles > 0:
        import torch

        torch.cuda._sleep(cycles)


def _measure_cuda(fn: Callable[[], object], device: DeviceInfo, cfg: TimingConfig,
                  region: AbstractContextManager) -> Timing:
    import torch

    with torch.cuda.device(device.index):
        flush = l2_flusher(device, cfg)
        reps = repetitions(warm_up(fn, device, cfg), cfg)
        timers = [EventTimer(device) for _ in range(reps)]
        host_s = enqueue_s(fn, device, flush)
        with region:
            sleep(device, backlog_s(host_s, reps))
            for timer in timers:
                if flush is not None:
                    flush()  # outside the events: a cold L2 for every sample
                timer.start()
                fn()
                timer.stop()
            torch.cuda.synchronize()
        return Timing([t.seconds() for t in timers])
