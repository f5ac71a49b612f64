"""The comparison view: ours (triton) against the vendor baseline, case by case."""

import pytest

from results.compare import compare, geomean, summary
from results.schema import Result


def row(backend, median_s, *, correct=True, status="ok", err=1e-3, workload="attention",
        params=None):
    return Result(run_id="r", workload=workload, backend=backend, dtype="bf16",
                  params=params or {"s": 64}, host="h", device={"name": "GPU"},
                  median_s=median_s, correct=correct, status=status, max_rel_error=err,
                  tflops=1.0 / median_s if median_s else None)


def test_fastest_correct_vendor_backend_is_the_baseline():
    rows = compare([row("triton", 1.0), row("sdpa-math", 4.0), row("sdpa-flash", 2.0),
                    row("sdpa-cudnn", 0.5, correct=False)])
    (c,) = rows
    assert c.baseline.backend == "sdpa-flash" and c.speedup == pytest.approx(2.0)
    assert c.case == "attention/bf16/s=64" and c.ours.max_rel_error == 1e-3


def test_a_failed_or_wrong_side_is_never_a_speedup():
    wrong = compare([row("triton", 1.0, correct=False, status="failed"), row("torch", 2.0)])
    assert wrong[0].speedup is None and wrong[0].to_dict()["ours"]["status"] == "failed"
    unchecked = compare([row("triton", 1.0, correct=None), row("torch", 2.0)])
    assert unchecked[0].speedup is None
    no_vendor = compare([row("triton", 1.0), row("torch", None, status="skipped",
                                                   correct=None)])
    assert no_vendor[0].baseline.status == "skipped" and no_vendor[0].speedup is None
    assert "0 of 1 cases compared" in summary(no_vendor)


def test_cases_without_ours_are_left_out_and_geomean():
    rows = compare([row("torch", 1.0, workload="hostdevice"),
                    row("triton", 1.0, params={"s": 1}), row("torch", 4.0, params={"s": 1}),
                    row("triton", 4.0, params={"s": 2}), row("torch", 1.0, params={"s": 2})])
    assert [c.speedup for c in rows] == [4.0, 0.25]
    assert geomean([4.0, 0.25]) == pytest.approx(1.0) and geomean([]) is None
