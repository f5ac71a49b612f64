"""One pytest-benchmark test per (case, backend) of the suite, from the same case registry."""

from __future__ import annotations

import os

import pytest

from bench.benchmarks.conftest import DEVICE
from bench.runner import run_case
from bench.suites import select, suite_cases

SUITE = os.environ.get("COLOSSUS_BENCH_SUITE", "quick")
PAIRS = select(suite_cases(SUITE, DEVICE), DEVICE, os.environ.get("COLOSSUS_BENCH_FILTER"))


@pytest.mark.parametrize(("case", "backend"), PAIRS,
                         ids=[f"{c.key}:{b}" for c, b in PAIRS])
def test_case(benchmark, run_context, recipe_timer, case, backend):
    result = run_case(case, backend, run_context, timer=recipe_timer)
    benchmark.extra_info.update({
        "tflops": result.tflops, "gbps": result.gbps, "peak_fraction": result.peak_fraction,
        "correct": result.correct, "telemetry": result.telemetry, "record": result.to_dict(),
    })
    if result.status == "skipped":
        pytest.skip(result.error)
    assert result.status == "ok", result.error
