"""Fixtures of the pytest-benchmark suite.

The suite runs the same cases, the same reference check and the same timing recipe as
`colossus-bench run`; only the repetitions are driven by pytest-benchmark's fixture, with a
clock that counts CUDA-event time (`DeviceClock`) and the L2 flush as its per-round `setup`
(both in bench/benchmarks/timer.py). So pytest-benchmark's statistics are device time, and each
benchmark's `extra_info` carries the full result record (`extra_info["record"]`) that
`colossus-bench ingest` loads, and the run id (`extra_info["run_id"]`).

One group per workload (`--benchmark-group-by=group`, the default); each benchmark's params are
plain strings (`pair`: the case key and backend), so the JSON and `pytest-benchmark compare`
read them as they are. `machine_info` is the same for every run on one machine (pytest-benchmark's
host facts without the CPU's momentary clock, plus the device and its datasheet peaks).

The suite sets pytest-benchmark's timer (device time) and its rounds (the recipe's budget), so
`--benchmark-timer` and `--benchmark-min-rounds` are refused; choose the timing with
COLOSSUS_BENCH_TIMING instead.

Environment: COLOSSUS_BENCH_SUITE (default quick), COLOSSUS_BENCH_FILTER (as --filter),
COLOSSUS_BENCH_TIMING (a bench.timing.PRESETS name; default by device).
"""

from __future__ import annotations

import os

import pytest

from bench.benchmarks.timer import pedantic_timer
from bench.device import detect
from bench.runner import RunContext, new_run_id
from bench.timing import PRESETS, default_config

DEVICE = detect()
RUN_ID = os.environ.get("COLOSSUS_BENCH_RUN_ID") or new_run_id()
# pytest-benchmark options whose job the suite does itself, and their defaults
OWNED_OPTIONS = {"benchmark_timer": ("--benchmark-timer", None),
                 "benchmark_min_rounds": ("--benchmark-min-rounds", 5)}
# cpuinfo facts that change from one reading to the next (the current clock)
VOLATILE_CPU_KEYS = ("hz_actual", "hz_actual_friendly")


def pytest_configure(config):
    for dest, (flag, default) in OWNED_OPTIONS.items():
        value = config.getoption(dest, None)
        if dest == "benchmark_timer":
            given = value is not None and "perf_counter" not in str(value)
        else:
            given = value not in (None, default)
        if given:
            raise pytest.UsageError(f"{flag} is set by this suite (device-time clock, rounds from "
                                    "the timing budget); use COLOSSUS_BENCH_TIMING instead")


def pytest_benchmark_update_machine_info(config, machine_info):
    """Device facts beside pytest-benchmark's host facts; nothing that differs between runs."""
    from bench.device import peaks

    for key in VOLATILE_CPU_KEYS:
        (machine_info.get("cpu") or {}).pop(key, None)
    machine_info["colossus_device"] = DEVICE.record()
    p = peaks(DEVICE)
    machine_info["colossus_peaks"] = p.__dict__ if p else None


@pytest.fixture(scope="session")
def run_context() -> RunContext:
    name = os.environ.get("COLOSSUS_BENCH_TIMING")
    timing = PRESETS[name] if name else default_config(DEVICE)
    return RunContext(RUN_ID, DEVICE, timing)


@pytest.fixture
def recipe_timer(benchmark):
    """The timing recipe (warm-up by time, repetitions to fill the budget, L2 flushed between
    samples), with pytest-benchmark running the timed rounds."""
    return pedantic_timer(benchmark)
