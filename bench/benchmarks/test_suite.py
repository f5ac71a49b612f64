"""One pytest-benchmark test per (case, backend) of the suite, from the same case registry."""

from __future__ import annotations

import os

import pytest

from bench.benchmarks.conftest import DEVICE, RUN_ID
from bench.runner import run_case
from bench.suites import select, suite_cases

SUITE = os.environ.get("COLOSSUS_BENCH_SUITE", "quick")
PAIRS = {f"{c.key}:{b}": (c, b)
         for c, b in select(suite_cases(SUITE, DEVICE), DEVICE,
                            os.environ.get("COLOSSUS_BENCH_FILTER"))}


@pytest.mark.parametrize("pair", [pytest.param(key, id=key, marks=pytest.mark.benchmark(
    group=case.workload)) for key, (case, _) in PAIRS.items()])
def test_case(benchmark, run_context, recipe_timer, pair):
    case, backend = PAIRS[pair]
    result = run_case(case, backend, run_context, timer=recipe_timer)
    benchmark.extra_info.update({
        "run_id": RUN_ID, "tflops": result.tflops, "gbps": result.gbps,
        "peak_fraction": result.peak_fraction, "correct": result.correct,
        "telemetry": result.telemetry, "record": result.to_dict(),
    })
    if result.status == "skipped":
        pytest.skip(result.error)
    assert result.status == "ok", result.error
