"""bench/workloads/attention.py: cases, formulas, backends and checks (CPU through the
interpreter; a fake H100 DeviceInfo for the GPU suites)."""

import pytest
import torch

from bench.device import DeviceInfo, detect
from bench.workloads import WORKLOADS, Case, Unsupported
from bench.workloads.attention import (
    BACKENDS,
    FLOOR,
    PARAM_KEYS,
    _math_fits,
    attention_bytes,
    attention_flops,
    roofline_s,
)

H100 = DeviceInfo(name="NVIDIA H100 80GB HBM3", kind="cuda", model="H100-SXM", cc="9.0",
                  sm_count=132, memory_bytes=80 * 2**30)
CPU = DeviceInfo(name="cpu", kind="cpu")
WL = WORKLOADS["attention"]


def keyset(cases):
    return {c.key for c in cases}


@pytest.mark.parametrize("device", [H100, CPU], ids=["h100", "cpu"])
@pytest.mark.parametrize("suite", ["quick", "standard", "full"])
def test_cases_well_formed(suite, device):
    cases = WL.cases(suite, device)
    assert cases and len(keyset(cases)) == len(cases)  # non-empty, no duplicates
    for c in cases:
        p = c.params
        assert c.workload == "attention" and c.backends == BACKENDS
        assert tuple(p) == PARAM_KEYS
        assert c.dtype in ("bf16", "fp16")
        assert p["h"] % p["kv_h"] == 0 and p["d"] in (64, 128, 256)
        assert isinstance(p["causal"], bool) and p["direction"] in ("fwd", "bwd", "fwd_bwd")
        assert WL.flops(c) > 0 and WL.bytes_moved(c) > 0
        if device.kind == "cpu":
            assert p["s"] <= 64 and p["b"] * p["h"] <= 4  # small: the interpreter is slow


def test_gpu_suites_cover_the_fa3_grid_and_llama():
    quick = WL.cases("quick", H100)
    assert [(c.dtype, c.params["d"], c.params["s"], c.params["direction"]) for c in quick] == [
        ("bf16", 128, 8192, "fwd")] * 2
    assert {c.params["causal"] for c in quick} == {False, True}

    standard = WL.cases("standard", H100)
    grid = {(c.params["d"], c.params["s"], c.params["causal"], c.params["direction"])
            for c in standard if c.dtype == "bf16" and c.params["h"] == c.params["kv_h"]}
    for d in (64, 128, 256):
        for s in (1024, 2048, 4096, 8192, 16384):
            for causal in (False, True):
                for direction in ("fwd", "bwd"):
                    assert (d, s, causal, direction) in grid
    for c in standard:
        p = c.params
        if p["h"] == p["kv_h"]:  # the FA grid: hidden 2048, 16k tokens
            assert p["h"] * p["d"] == 2048 and p["b"] * p["s"] == 16384
    gqa = {(c.params["h"], c.params["kv_h"], c.params["s"], c.params["d"]) for c in standard
           if c.params["h"] != c.params["kv_h"]}
    assert gqa == {(64, 8, 8192, 128), (128, 8, 8192, 128)}  # Llama 3 70B and 405B
    assert {c.params["d"] for c in standard if c.dtype == "fp16"} == {128}

    full = WL.cases("full", H100)
    assert keyset(standard) <= keyset(full)
    assert any(c.params["direction"] == "fwd_bwd" for c in full)
    assert len(full) > len(standard)
    assert WL.cases("mamf", H100) == [] and WL.cases("nope", CPU) == []


def test_cpu_suites_have_fwd_bwd_and_gqa():
    cases = WL.cases("standard", CPU)
    assert {c.params["direction"] for c in cases} == {"fwd", "bwd"}
    assert any(c.params["h"] != c.params["kv_h"] for c in cases)
    assert any(c.params["s"] % 16 for c in cases)  # a length that is not a tile multiple
    assert any(c.params["direction"] == "fwd_bwd" for c in WL.cases("full", CPU))


def test_flops_hand_checked():
    # b=2, h=16, s=8192, d=128: 4 * 2 * 16 * 8192^2 * 128 = 1,099,511,627,776
    fwd = 1_099_511_627_776.0
    assert attention_flops(2, 16, 8192, 128, False, "fwd") == fwd
    assert attention_flops(2, 16, 8192, 128, True, "fwd") == fwd / 2
    assert attention_flops(2, 16, 8192, 128, False, "bwd") == 2.5 * fwd
    assert attention_flops(2, 16, 8192, 128, True, "fwd_bwd") == 3.5 * fwd / 2
    case = Case("attention", "bf16", {"b": 2, "h": 16, "kv_h": 16, "s": 8192, "d": 128,
                                      "causal": True, "direction": "bwd"}, BACKENDS)
    assert WL.flops(case) == 2.5 * fwd / 2


def test_bytes_hand_checked():
    # Llama 3 70B: b=1, h=64, kv_h=8, s=8192, d=128, bf16
    q_like = 64 * 8192 * 128 * 2  # 134,217,728 bytes each for q, o, dO, dq
    kv_like = 8 * 8192 * 128 * 2  # 16,777,216 bytes each for k, v, dk, dv
    assert attention_bytes(1, 64, 8, 8192, 128, 2, "fwd") == 2 * q_like + 2 * kv_like
    assert attention_bytes(1, 64, 8, 8192, 128, 2, "bwd") == 4 * q_like + 4 * kv_like
    assert attention_bytes(1, 64, 8, 8192, 128, 2, "fwd_bwd") == 6 * q_like + 6 * kv_like
    assert roofline_s(989.4e12, 3.35e12, 989.4, 3.35) == (1.0, 1.0)


def test_backends_on_cpu_and_fake_h100():
    case = WL.cases("quick", CPU)[0]
    assert WL.backends(case, CPU) == ["triton", "sdpa-math"]
    if not torch.cuda.is_available():
        assert WL.backends(WL.cases("quick", H100)[0], H100) == []  # nothing runs without a GPU


def test_math_backend_dropped_when_scores_do_not_fit():
    small = {"b": 2, "h": 16, "s": 8192, "direction": "fwd"}  # 2*16*8192^2*4*3 = 25.8 GB
    big = {"b": 1, "h": 16, "s": 16384, "direction": "bwd"}  # 103 GB
    assert _math_fits(small, H100) and not _math_fits(big, H100)
    assert _math_fits(big, CPU)


def _run(case, backend):
    dev = detect()
    inputs = WL.setup(case, dev)
    fn = WL.prepare(case, backend, inputs)
    out = fn()
    return inputs, fn, out, WL.check(case, backend, inputs, out)


CPU_PAIRS = [(c, b) for c in WORKLOADS["attention"].cases("full", CPU)
             for b in ("triton", "sdpa-math")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU flow")
@pytest.mark.parametrize("case,backend", CPU_PAIRS, ids=[f"{c.key}:{b}" for c, b in CPU_PAIRS])
def test_cpu_cases_pass_their_check(case, backend):
    _, _, out, check = _run(case, backend)
    assert check.correct, check
    assert check.tolerance >= FLOOR[case.dtype]
    p = case.params
    if p["direction"] == "fwd":
        assert out.shape == (p["b"], p["h"], p["s"], p["d"])
    else:
        assert len(out) == 4  # o, dq, dk, dv


def test_bwd_callable_runs_only_the_backward_and_keeps_no_grads():
    case = next(c for c in WL.cases("standard", CPU) if c.params["direction"] == "bwd")
    inputs, fn, first, check = _run(case, "sdpa-math")
    assert check.correct
    second = fn()
    assert second[0] is first[0]  # the same forward output: the forward is not re-run
    for a, b in zip(first[1:], second[1:], strict=True):
        assert torch.equal(a, b)
    assert inputs.q.grad is None and inputs.k.grad is None and inputs.v.grad is None


def test_check_rejects_a_wrong_output():
    case = WL.cases("quick", CPU)[0]
    inputs, _, out, check = _run(case, "sdpa-math")
    assert check.correct
    bad = WL.check(case, "sdpa-math", inputs, out * 1.1)
    assert not bad.correct and bad.max_rel_error > bad.tolerance


def test_bad_params_and_backends_give_clear_errors():
    good = dict(WL.cases("quick", CPU)[0].params)
    with pytest.raises(ValueError, match="missing params"):
        WL.flops(Case("attention", "bf16", {"b": 1}, BACKENDS))
    with pytest.raises(ValueError, match="direction"):
        WL.flops(Case("attention", "bf16", {**good, "direction": "sideways"}, BACKENDS))
    with pytest.raises(ValueError, match="must divide"):
        WL.flops(Case("attention", "bf16", {**good, "h": 3, "kv_h": 2}, BACKENDS))
    with pytest.raises(ValueError, match="positive int"):
        WL.flops(Case("attention", "bf16", {**good, "s": 0}, BACKENDS))
    with pytest.raises(ValueError, match="dtype"):
        WL.setup(Case("attention", "int8", good, BACKENDS), CPU)
    case = Case("attention", "bf16", good, BACKENDS)
    inputs = WL.setup(case, CPU)
    with pytest.raises(ValueError, match="unknown attention backend"):
        WL.prepare(case, "cublas", inputs)


def test_unrunnable_sdpa_backend_is_unsupported(monkeypatch):
    import bench.workloads.attention as wa

    monkeypatch.setattr(wa, "sdpa_gqa_mode", lambda *a, **k: None)
    case = WL.cases("quick", CPU)[0]
    with pytest.raises(Unsupported):
        WL.prepare(case, "sdpa-cudnn", WL.setup(case, CPU))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_small_cases_pass_for_every_backend():
    dev = detect()
    for causal in (False, True):
        for direction in ("fwd", "bwd"):
            case = Case("attention", "bf16", {"b": 1, "h": 8, "kv_h": 2, "s": 1000, "d": 128,
                                              "causal": causal, "direction": direction}, BACKENDS)
            backends = WL.backends(case, dev)
            assert "triton" in backends and "sdpa-math" in backends
            for backend in backends:
                inputs = WL.setup(case, dev)
                out = WL.prepare(case, backend, inputs)()
                assert WL.check(case, backend, inputs, out).correct, (case.key, backend)


def test_reference_and_baseline_are_computed_once_per_case_and_dropped_after_it():
    """setup runs per (case, backend) with identically seeded inputs: the fp32 reference and
    the baseline's error are computed for the first backend and reused by the others; the next
    case's setup drops them (one case's reference held at a time); inputs with other values
    never get them."""
    from bench.workloads.attention import MEMO, _baseline_errors, _reference

    case, other = WL.cases("quick", CPU)[:2]
    p = case.params
    first = WL.setup(case, CPU)
    ref = _reference(p, first)
    base = _baseline_errors(case, first)
    again = WL.setup(case, CPU)  # the next backend's fresh inputs
    assert again.q is not first.q and _reference(p, again) is ref
    assert _baseline_errors(case, again) is base
    assert WL.check(case, "sdpa-math", again, WL.prepare(case, "sdpa-math", again)()).correct
    assert len(MEMO.values) == 2  # one reference, one baseline
    WL.setup(other, CPU)  # the case changes: the previous case's values go
    assert MEMO.values == {}
    changed = WL.setup(case, CPU)
    with torch.no_grad():
        changed.q.mul_(-1.0)
    assert not torch.equal(_reference(p, changed)[0], ref[0])


def test_decode_reuses_its_reference_and_baseline_within_a_case():
    from bench.workloads.attention import MEMO

    dwl = WORKLOADS["decode_attention"]
    case = dwl.cases("quick", CPU)[0]
    seen = None
    for backend in ("sdpa-math", "triton"):  # vendor first, as the suite orders them
        x = dwl.setup(case, CPU)
        assert dwl.check(case, backend, x, dwl.prepare(case, backend, x)()).correct, backend
        assert len(MEMO.values) == 2 and MEMO.case[0] == case.key
        seen = seen or dict(MEMO.values)
        assert all(MEMO.values[k] is v for k, v in seen.items())  # the same objects: reused
