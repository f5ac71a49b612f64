"""Cluster comparisons like for like (the split rule for every compared cluster), the power
table at the best option, and the H200's reasons taken from the model's own inputs."""

import pandas as pd
import pytest

from reports.model import scaling
from reports.model.hardware import CLUSTERS
from reports.model.measurements import Measurements


@pytest.fixture(scope="module")
def meas():
    return Measurements(None, use_reference=False)


def test_job_splits_follow_the_stated_rule():
    from reports.model.cluster import PRESET_POOL_SIZES, SPLIT_RULE, job_splits

    assert PRESET_POOL_SIZES == (50_000, 100_000, 150_000)
    assert job_splits(100_000) == [(100_000,), (50_000, 50_000)]
    assert job_splits(150_000) == [(150_000,), (100_000, 50_000)]
    assert job_splits(50_000) == [(50_000,)]
    for n in (50_000, 100_000, 150_000, 200_000):
        for split in job_splits(n):
            assert sum(split) == n and len(split) <= 2
            assert any(j in PRESET_POOL_SIZES for j in split) or split == (n,)
    assert SPLIT_RULE.startswith("assumption:") and "at most two" in SPLIT_RULE


def test_every_compared_cluster_gets_the_same_options(meas):
    """The 200k preset, the same count all H100 and the 100k-H100 cluster are each the best of
    one job or separate jobs by the same split rule: never split against unsplit."""
    from reports.model.cluster import job_splits, single_pool_options

    (r,) = scaling.colossus_200k_gain("llama3-70b", meas, clusters=("colossus-200k",))
    opts = r["options"]
    assert set(opts) == {"colossus-200k", "colossus-200k-all-h100", "colossus-100k"}
    pools = {"colossus-200k": {"H100-SXM": 150_000, "H200-SXM": 50_000},
             "colossus-200k-all-h100": {"H100-SXM": 200_000},
             "colossus-100k": {"H100-SXM": 100_000}}
    for name, per_pool in opts.items():
        assert {g: c[0][0] for g, c in per_pool.items()} == pools[name]
        for considered in per_pool.values():
            assert [tuple(s) for s in considered] == job_splits(considered[0][0])
    # each compared figure is its cluster's best option
    assert r["colossus_100k_tokens_per_s"] == max(r["colossus_100k_one_job_tokens_per_s"],
                                                  r["colossus_100k_separate_jobs_tokens_per_s"])
    assert r["all_h100_best_tokens_per_s"] == max(r["all_h100_one_job_tokens_per_s"],
                                                  r["all_h100_separate_jobs_tokens_per_s"])
    base = single_pool_options("llama3-70b", CLUSTERS["colossus-100k"], None, meas)
    assert base["best_tokens_per_s"] == r["colossus_100k_tokens_per_s"]
    assert r["gain_vs_100k_h100"] == pytest.approx(r["mixed_tokens_per_s"]
                                                   / r["colossus_100k_tokens_per_s"])
    assert sum(r["colossus_100k_jobs"]) == 100_000
    # like for like: the mixed plan's best ONE job over the all-H100 cluster as one job at that
    # layout, never a sum of separate jobs over one job
    m = scaling.mixed_job("llama3-70b", "colossus-200k", meas)
    one = max(m["plain_dp"]["tokens_per_s"], m["proportional"]["tokens_per_s"])
    assert r["mixed_one_job_tokens_per_s"] == one
    assert m[r["mixed_one_job_option"]]["tokens_per_s"] == one
    assert one <= r["mixed_tokens_per_s"]
    assert r["gain_one_job_same_layout"] == pytest.approx(
        one / r["all_h100_one_job_same_layout_tokens_per_s"])
    assert "gain_same_config" not in r


def test_power_prices_energy_at_the_best_option(meas):
    from reports.model.cluster import best_tokens_per_s

    p = scaling.power("colossus-100k", "llama3-70b", meas)
    best = best_tokens_per_s("llama3-70b", CLUSTERS["colossus-100k"], None, meas)
    assert p["tokens_per_s"] == best["tokens_per_s"] >= p["one_job_tokens_per_s"]
    assert p["tokens_per_s_option"] == best["option"]
    assert p["kwh_per_million_tokens"] <= p["kwh_per_million_tokens_one_job"]
    assert p["sources"]["tokens_per_s"].startswith("assumption:")


def test_h200_reasons_take_the_bandwidths_from_the_model(meas):
    from reports.model.hardware import gpu

    g = scaling.h200_gain("llama3-405b", gpus=16384, measurements=meas)
    bw, text = g["hbm_tbps"], " | ".join(g["reasons"])
    for name in ("H100-SXM", "H200-SXM"):
        assert bw[name]["model"] == meas.hbm_tbps(gpu(name)).value
        assert bw[name]["datasheet"] == gpu(name).hbm_tbps
    assert "memory_bound" in text  # Llama 3 405B on 16k GPUs: memory-bound work is faster
    assert (f"HBM {bw['H100-SXM']['model']:.2f} -> {bw['H200-SXM']['model']:.2f} TB/s as the "
            f"model prices it") in text
    assert "datasheet 3.35 -> 4.8 TB/s" in text and "4.8 vs 3.35" not in text
    assert "0.000 s -> 0.000 s" not in text  # a part that is ~0 on both says nothing
    # measured rows change the figures the reasons name
    rows = [{"workload": "membw", "backend": "torch", "dtype": "fp32", "status": "ok",
             "correct": True, "params": {"op": "copy", "bytes": 2**30},
             "device": {"model": m}, "gbps": v, "median_s": 1e-3, "run_id": "t", "host": "node-1"}
            for m, v in (("H100-SXM", 2900.0), ("H200-SXM", 4100.0))]
    g2 = scaling.h200_gain("llama3-405b", gpus=16384,
                           measurements=Measurements(pd.DataFrame(rows), use_reference=False))
    assert "HBM 2.90 -> 4.10 TB/s as the model prices it, measured" in " ".join(g2["reasons"])


def test_an_h200_layout_the_h100_cannot_hold_is_named_with_its_bytes(meas):
    """GPT-3 175B on 4,096 GPUs: the H200 trades tensor for context parallelism at the same
    model-parallel count, a layout that needs more than an H100 holds; the reason says so."""
    g = scaling.h200_gain("gpt3-175b", gpus=4096, measurements=meas)
    a, b = g["h100"]["parallel"], g["h200_own_config"]["parallel"]
    assert (a["tp"], a["cp"]) != (b["tp"], b["cp"])
    (line,) = [r for r in g["reasons"] if r.startswith("another split of the model")]
    assert "more than an H100 holds" in line and "GiB per GPU" in line

