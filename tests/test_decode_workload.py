"""bench/workloads/decode.py: decode attention (few query tokens against a KV cache), its
formulas, cases, the bottom-right causal mask SDPA gets, and checked CPU runs."""

import pytest
import torch

from bench.device import DeviceInfo, detect
from bench.runner import RunContext, run_case
from bench.timing import PRESETS
from bench.workloads import WORKLOADS
from bench.workloads.decode import PARAM_KEYS, decode_bytes, decode_flops, visible_pairs
from bench.workloads.sdpa import causal_args, lower_right_mask, sdpa_attention

H200 = DeviceInfo(name="NVIDIA H200", kind="cuda", model="H200-SXM", cc="9.0", sm_count=132,
                  memory_bytes=141 * 10**9)
CPU = DeviceInfo(name="cpu", kind="cpu")
WL = WORKLOADS["decode_attention"]


def test_formulas():
    # one token sees every key; 3 tokens against 10 keys bottom-right see 8, 9, 10
    assert visible_pairs(1, 4096, True) == 4096 == visible_pairs(1, 4096, False)
    assert visible_pairs(3, 10, True) == 27 and visible_pairs(3, 10, False) == 30
    assert decode_flops(2, 64, 1, 8192, 128, True) == 4.0 * 2 * 64 * 128 * 8192
    # the KV cache dominates: K and V at 8 kv heads, plus q and o at 64
    assert decode_bytes(2, 64, 8, 1, 8192, 128, 2) == (2 * 2 * 8 * 8192 * 128
                                                       + 2 * 2 * 64 * 128) * 2


@pytest.mark.parametrize("device", [H200, CPU], ids=["h200", "cpu"])
@pytest.mark.parametrize("suite", ["quick", "standard", "full", "campaign"])
def test_cases_well_formed(suite, device):
    cases = WL.cases(suite, device)
    if device.kind == "cuda" and suite == "quick":
        assert cases == []
        return
    assert cases and len({c.key for c in cases}) == len(cases)
    for c in cases:
        p = c.params
        assert tuple(p) == PARAM_KEYS and c.workload == "decode_attention"
        assert 1 <= p["s_q"] <= 16 and p["s_q"] <= p["s"] and p["h"] % p["kv_h"] == 0
        assert WL.flops(c) > 0 and WL.bytes_moved(c) > 0 and WL.shape(c)
        if device.kind == "cuda":
            assert 1024 <= p["s"] <= 32768 and 1 <= p["b"] <= 256 and p["kv_h"] < p["h"]


def test_gpu_standard_spans_batch_cache_and_draft_lengths():
    cases = WL.cases("standard", H200)
    assert {c.params["b"] for c in cases} == {1, 16, 64, 256}
    assert {c.params["s"] for c in cases} >= {1024, 8192, 32768}
    assert {c.params["s_q"] for c in cases} == {1, 4, 16}
    assert len(WL.cases("campaign", H200)) == 1


def test_sdpa_gets_the_bottom_right_mask():
    """torch's is_causal is top-left; ours is bottom-right. causal_args bridges them."""
    assert causal_args(True, 8, 8, "cpu") == (True, None)
    assert causal_args(True, 1, 50, "cpu") == (False, None)  # one token sees every key
    is_causal, mask = causal_args(True, 3, 10, "cpu")
    assert not is_causal and mask.shape == (3, 10) and mask.sum().item() == 27
    assert torch.equal(mask, lower_right_mask(3, 10, "cpu"))
    from bench.workloads.attention import reference_attention

    q, k, v = torch.randn(1, 4, 3, 64), torch.randn(1, 2, 10, 64), torch.randn(1, 2, 10, 64)
    o = sdpa_attention("sdpa-math", q, k, v, causal=is_causal, scale=0.125, mask=mask)
    ref = reference_attention(q, k, v, causal=True, sm_scale=0.125)[0]
    assert torch.allclose(o, ref, atol=1e-5)


@pytest.mark.slow
def test_cpu_cases_pass_their_check_on_every_backend():
    device = detect()
    if device.kind == "cuda":
        pytest.skip("the CPU cases")
    ctx = RunContext("decode", device, PRESETS["smoke"], telemetry=False)
    for case in WL.cases("standard", device):
        backends = WL.backends(case, device)
        assert backends == ["triton", "sdpa-math"]
        for backend in backends:
            r = run_case(case, backend, ctx)
            assert r.status == "ok", r.error
            assert r.correct and r.tflops > 0 and r.gbps > 0
            assert r.bytes == WL.bytes_moved(case) and r.shape == WL.shape(case)


@pytest.mark.gpu
def test_gpu_decode_campaign_case_on_every_backend():
    """On a GPU: the campaign's decode shape checks out on ours and on each SDPA path that can
    run it (the others are skipped with a reason, never failed)."""
    device = detect()
    ctx = RunContext("decode-gpu", device, PRESETS["smoke"], telemetry=False)
    (case,) = WL.cases("campaign", device)
    for backend in case.backends:
        r = run_case(case, backend, ctx)
        assert r.status in ("ok", "skipped"), (backend, r.error)
        if r.status == "ok":
            assert r.correct and r.gbps > 0
    assert run_case(case, "triton", ctx).status == "ok"
