"""Fixtures of the pytest-benchmark suite.

The suite runs the same cases, the same reference check and the same timing recipe as
`colossus-bench run`; only the repetitions are driven by pytest-benchmark's fixture, with a
clock that counts CUDA-event time (bench.timing.DeviceClock) and the L2 flush as its per-round
`setup`. So pytest-benchmark's statistics are device time, and each benchmark's `extra_info`
carries the full result record (`extra_info["record"]`) that `colossus-bench ingest` loads.

Environment: COLOSSUS_BENCH_SUITE (default quick), COLOSSUS_BENCH_FILTER (as --filter),
COLOSSUS_BENCH_TIMING (a bench.timing.PRESETS name; default by device).
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import pytest

from bench.device import detect
from bench.runner import RunContext, new_run_id
from bench.timing import (
    PRESETS,
    DeviceClock,
    Timing,
    default_config,
    l2_flusher,
    measure,
    repetitions,
    warm_up,
)

DEVICE = detect()
RUN_ID = os.environ.get("COLOSSUS_BENCH_RUN_ID") or new_run_id()


def pytest_benchmark_update_machine_info(config, machine_info):
    """Device facts beside pytest-benchmark's host facts."""
    from bench.device import peaks

    machine_info["colossus_device"] = DEVICE.record()
    p = peaks(DEVICE)
    machine_info["colossus_peaks"] = p.__dict__ if p else None
    machine_info["colossus_run_id"] = RUN_ID


@pytest.fixture(scope="session")
def run_context() -> RunContext:
    name = os.environ.get("COLOSSUS_BENCH_TIMING")
    timing = PRESETS[name] if name else default_config(DEVICE)
    return RunContext(RUN_ID, DEVICE, timing)


@pytest.fixture
def recipe_timer(benchmark):
    """The timing recipe (warm-up by time, repetitions to fill the budget, L2 flushed between
    samples), with pytest-benchmark running the timed rounds."""

    def timer(fn, device, cfg, region=None) -> Timing:
        if benchmark.disabled:  # --benchmark-disable: a smoke run, still checked and timed
            benchmark.pedantic(fn)
            return measure(fn, device, PRESETS["smoke"], region)
        clock = DeviceClock(device)
        benchmark._timer = clock  # read by pytest-benchmark before and after each round
        reps = repetitions(warm_up(fn, device, cfg), cfg)
        with region or nullcontext():
            benchmark.pedantic(clock.wrap(fn), setup=l2_flusher(device, cfg), rounds=reps)
        return Timing(list(benchmark.stats.stats.data))

    return timer
