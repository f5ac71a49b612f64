"""Sanity of the shipped reference results (results/reference/*.jsonl), and of the checker."""

import pytest

from results.ingest import load_jsonl
from results.reference import (
    HBM_RATIO_BOUNDS,
    best_copy_gbps,
    reference_files,
    sanity_problems,
)
from results.schema import Result

FILES = {f.stem: f for f in reference_files()}


@pytest.mark.parametrize("name", sorted(FILES) or [pytest.param(None, marks=pytest.mark.skip(
    reason="no reference results shipped yet (no GPU run so far)"))])
def test_shipped_file_is_sane(name):
    records = load_jsonl(FILES[name])
    assert records, f"{name} is empty"
    assert sanity_problems(records) == []


@pytest.mark.skipif(not {"h100-sxm", "h200"} <= set(FILES),
                    reason="needs both h100-sxm.jsonl and h200.jsonl")
def test_h200_over_h100_hbm_ratio():
    h100 = best_copy_gbps(load_jsonl(FILES["h100-sxm"]))
    h200 = best_copy_gbps(load_jsonl(FILES["h200"]))
    lo, hi = HBM_RATIO_BOUNDS
    assert lo <= h200 / h100 <= hi


H100 = {"name": "NVIDIA H100 80GB HBM3", "kind": "cuda", "model": "H100-SXM",
        "uuid": "GPU-1", "driver": "570.1", "cuda": "12.8"}
SOFTWARE = {"torch": "2.11", "triton": "3.6.0", "git_sha": "abc"}
NVML = {"source": "nvml", "power_w_mean": 650.0}


def rec(**kw):
    base = dict(run_id="r", workload="gemm", backend="triton", dtype="bf16",
                params={"m": 8192, "n": 8192, "k": 8192}, host="h", device=H100,
                software=SOFTWARE, telemetry=NVML, tflops=700.0, correct=True, status="ok")
    return Result(**{**base, **kw})


def test_checker_accepts_good_rows():
    good = [rec(), rec(backend="torch"), rec(status="skipped", correct=None, tflops=None),
            rec(workload="membw", dtype="fp32", params={"op": "copy", "bytes": 1},
                tflops=None, gbps=3000.0)]
    assert sanity_problems(good) == []
    assert best_copy_gbps(good) == 3000.0


@pytest.mark.parametrize(("bad", "text"), [
    (rec(status="failed", correct=False, tflops=None), "status failed"),
    (rec(tflops=1200.0), "above the 989.4 peak"),
    (rec(workload="membw", dtype="fp32", params={"op": "copy", "bytes": 1}, tflops=None,
         gbps=4000.0), "above the HBM peak"),
    (rec(telemetry={"source": "none"}), "no NVML telemetry"),
    (rec(device={**H100, "uuid": None}), "provenance lacks ['uuid']"),
    (rec(software={**SOFTWARE, "git_sha": None}), "provenance lacks ['git_sha']"),
    (rec(device={**H100, "model": None, "name": "NVIDIA Mystery"}), "unknown device model"),
])
def test_checker_names_each_problem(bad, text):
    [problem] = sanity_problems([rec(), bad])
    assert text in problem
