"""bench/budget.py and bench/campaign.py: per-case estimates, compiles charged once, the
campaign's wall-time estimate (a plan, from labelled assumptions; nothing here is timed)."""

import pytest

from bench.budget import AUTOTUNE_BENCH_S, COMPILE_S, Estimator, plan_call, total_estimate
from bench.campaign import H200, SUITE_STAGES, estimate, summary
from bench.device import DeviceInfo
from bench.suites import SUITES, suite_cases
from bench.timing import PRESETS
from kernels.gemm_configs import hopper_tiles
from kernels.plan import count_compiles


def test_compiles_are_charged_once_per_specialisation():
    est = Estimator(H200, PRESETS["gpu"])
    gemms = [c for c in suite_cases("campaign", H200) if c.workload == "gemm"]
    bf16 = [c for c in gemms if c.dtype == "bf16" and c.params["m"] >= 128]
    first = est.estimate(bf16[0], "triton")
    again = est.estimate(bf16[1], "triton")
    # one kernel, each of its tiles compiled once; a new (M, N, K) re-tunes but compiles nothing
    tiles = len(hopper_tiles("16bit", bf16[0].params["m"]))
    assert tiles >= 2 and first - again == pytest.approx(tiles * COMPILE_S)
    # torch compiles nothing (and tunes nothing: `again` is the re-tune only)
    assert est.estimate(bf16[0], "torch") == pytest.approx(again - tiles * AUTOTUNE_BENCH_S)
    peek = Estimator(H200, PRESETS["gpu"])
    assert peek.estimate(bf16[0], "triton", commit=False) == peek.estimate(bf16[0], "triton")


def test_tuning_costs_more_and_cpu_is_tiny():
    pairs = [(c, b) for c in suite_cases("campaign", H200) for b in c.backends]
    plain = total_estimate(pairs, H200, PRESETS["gpu"])
    tuned = total_estimate(pairs, H200, PRESETS["gpu"], tune=True)
    # (3x: the fixed tables also autotune their 2-4 GEMM tiles and 3-4 forward configs)
    assert tuned["compile_s"] > 3 * plain["compile_s"] > 0
    cpu = Estimator(DeviceInfo(name="cpu", kind="cpu"), PRESETS["cpu"])
    assert cpu.estimate(pairs[0][0], "torch") < 1.0


def test_campaign_suite_is_in_priority_order_and_fits_its_window():
    assert SUITES["campaign"][:3] == ("membw", "hostdevice", "gemm")
    assert {f for fams in SUITE_STAGES.values() for f in fams} == set(SUITES["campaign"])
    cases = suite_cases("campaign", H200)
    keys = [c.key for c in cases]
    assert keys[0].startswith("membw/") and keys[-1].startswith("decode_attention/")
    assert all(c.params["bytes"] >= 2**30 for c in cases if c.workload in ("membw", "hostdevice"))
    assert {c.params["memory"] for c in cases if c.workload == "hostdevice"} == {"pinned"}
    decode_m = {c.params["m"] for c in cases if c.workload == "gemm" and
                c.params["shape"].endswith(".decode")}
    assert decode_m == {1, 16, 128}
    assert any(c.dtype == "fp8_e4m3" for c in cases)
    attn = [c.params for c in cases if c.workload == "attention"]
    assert {(p["s"], p["causal"], p["direction"]) for p in attn if p["h"] == p["kv_h"]} == {
        (s, causal, d) for s in (8192, 16384) for causal in (False, True) for d in ("fwd", "bwd")}
    assert any(p["h"] != p["kv_h"] for p in attn)
    plan = estimate()
    assert plan["total_s"] <= 480  # the window, by the labelled assumptions in bench/budget.py
    assert set(plan["suite_stages"]) == set(SUITE_STAGES)


def test_summary_reads_stages_and_rows(tmp_path):
    (tmp_path / "stages.tsv").write_text("facts\t0\t3\ngemm\t124\t150\nallreduce\tcap\t0\n")
    (tmp_path / "results.jsonl").write_text(
        '{"workload": "gemm", "status": "ok"}\n'
        '{"workload": "gemm", "status": "skipped", "error": "budget"}\n{"workload": "ge')
    (tmp_path / "telemetry_overhead.json").write_text('{"overhead_pct": 0.4}')
    text = summary(tmp_path)
    assert "telemetry overhead: +0.40%" in text
    assert "timed out" in text and "not run (cap)" in text and "rows: 2" in text
    assert "(budget)" in text


def test_without_tune_the_budget_charges_what_the_kernels_compile_and_tune():
    """One rule: the estimate's compiles and autotune benchmarks are kernels.plan's count of
    the same calls (pruned config lists, autotune per new shape), not one per variant."""
    cases = [c for c in suite_cases("campaign", H200) if plan_call(c) is not None]
    assert {c.workload for c in cases} == {"gemm", "attention", "decode_attention"}
    est = Estimator(H200, PRESETS["gpu"])
    charged = sum(est.compile_s(c, "triton") for c in cases)
    compiles, benchmarks = count_compiles([plan_call(c) for c in cases])
    assert charged == pytest.approx(compiles * COMPILE_S + benchmarks * AUTOTUNE_BENCH_S)
    assert benchmarks > compiles > len({(c.workload, c.dtype) for c in cases})
    decode = next(c for c in cases if c.workload == "decode_attention")
    assert plan_call(decode)["s"] == 1 and plan_call(decode)["s_k"] == decode.params["s"]
