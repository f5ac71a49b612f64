"""The timing recipe driven by pytest-benchmark's fixture (used by conftest.py's recipe_timer).

Warm-up by time and repetitions to fill the budget as in bench/timing.py; pytest-benchmark runs
the timed rounds with `DeviceClock` as its timer (device time on a GPU, a GPU sleep queued
ahead of each call as the recipe's backlog) and the cache flush as each round's `setup`
(outside the timed call; it returns None, as pedantic requires).
"""

from __future__ import annotations

from contextlib import nullcontext

from bench.timing import (
    PRESETS,
    DeviceClock,
    Timing,
    backlog_s,
    cpu_timing,
    enqueue_s,
    l2_flusher,
    measure,
    repetitions,
    timing_settings,
    warm_up,
)


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
