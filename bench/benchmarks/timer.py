"""The timing recipe driven by pytest-benchmark's fixture (used by conftest.py's recipe_timer).

Warm-up by time and repetitions to fill the budget as in bench/timing.py; pytest-benchmark runs
the timed rounds with `DeviceClock` as its timer (device time on a GPU, a GPU sleep queued
ahead of each call as the recipe's backlog) and the cache flush as each round's `setup`
(outside the timed call; it returns None, as pedantic requires).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext

from bench.cpu_recipe import cpu_timing, timing_settings
from bench.device import DeviceInfo
from bench.timing import (
    PRESETS,
    Timing,
    backlog_s,
    device_interval,
    enqueue_s,
    l2_flusher,
    measure,
    repetitions,
    sleep,
    synchronizer,
    warm_up,
)


class DeviceClock:
    """A clock that advances by device time only: pytest-benchmark reads it before and after
    each round, and the difference is the CUDA-event time of the calls wrapped by `wrap`, so
    its numbers mean device time (reading the clock synchronises, then folds the finished
    events into the total). `backlog_s`: a GPU sleep queued before each wrapped call, as the
    recipe's backlog: the device is idle when a round starts (the clock has just synchronised),
    so without it a launch-heavy call would measure the host enqueueing it. On CPU it is
    perf_counter."""

    def __init__(self, device: DeviceInfo, backlog_s: float = 0.0):
        self.device = device
        self.backlog_s = backlog_s
        self.total_s = 0.0
        self._pending: list = []

    def wrap(self, fn: Callable[[], object]) -> Callable[[], object]:
        if self.device.kind != "cuda":
            return fn

        def timed():
            sleep(self.device, self.backlog_s)  # outside the interval
            with device_interval(self.device) as t:
                out = fn()
            self._pending.append(t)
            return out

        return timed

    def __call__(self) -> float:
        if self.device.kind != "cuda":
            return time.perf_counter()
        synchronizer(self.device)()
        self.total_s += sum(t.seconds() for t in self._pending)
        self._pending.clear()
        return self.total_s


def pedantic_timer(benchmark):
    """A `bench.runner.Timer` that times through `benchmark.pedantic`."""

    def timer(fn, device, cfg, region=None) -> Timing:
        if benchmark.disabled:  # --benchmark-disable: a smoke run, still checked and timed
            benchmark.pedantic(fn)
            return measure(fn, device, PRESETS["smoke"], region)
        flush = l2_flusher(device, cfg)
        with cpu_timing(device):
            reps = repetitions(warm_up(fn, device, cfg), cfg)
            # one round's backlog: the host enqueues a single call after each synchronisation
            clock = DeviceClock(device, backlog_s(enqueue_s(fn, device, flush), 1))
            benchmark._timer = clock  # read by pytest-benchmark before and after each round
            with region or nullcontext():
                benchmark.pedantic(clock.wrap(fn), setup=flush, rounds=reps)
        return Timing(list(benchmark.stats.stats.data), timing_settings(device))

    return timer
