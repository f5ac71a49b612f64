"""bench.workloads.gemm: suites, formulas, model shapes, setup/prepare/check on the CPU."""

import os
import subprocess
import sys

import pytest
import torch

from bench.device import DeviceInfo
from bench.workloads import gemm as g
from bench.workloads.base import WORKLOADS, Case, Unsupported

H100 = DeviceInfo(name="NVIDIA H100 80GB HBM3", kind="cuda", model="H100-SXM", cc="9.0",
                  sm_count=132, memory_bytes=80 * 2**30)
A100 = DeviceInfo(name="NVIDIA A100-SXM4-80GB", kind="cuda", model="A100-SXM-80GB", cc="8.0",
                  sm_count=108, memory_bytes=80 * 2**30)
CPU = DeviceInfo(name="cpu", kind="cpu", sm_count=2, memory_bytes=16 * 2**30)
W = WORKLOADS["gemm"]


def _sig(c: Case):
    p = c.params
    return (c.dtype, p["m"], p["n"], p["k"], p["layout"])


def test_registered():
    assert isinstance(W, g.GemmWorkload) and W.name == "gemm"


@pytest.mark.parametrize("device", [H100, CPU], ids=["h100", "cpu"])
@pytest.mark.parametrize("suite", g.SUITES)
def test_cases_well_formed(suite, device):
    cases = W.cases(suite, device)
    assert cases
    assert len({c.key for c in cases}) == len(cases)
    for c in cases:
        assert c.workload == "gemm" and c.dtype in g.DTYPES
        assert set(c.params) == {"m", "n", "k", "layout", "shape"}
        assert all(isinstance(c.params[d], int) and c.params[d] >= 1 for d in "mnk")
        assert c.params["layout"] in g.LAYOUTS and c.params["shape"]
        assert set(W.backends(c, device)) <= set(g.BACKENDS)
        assert "triton" in W.backends(c, device)
        if device is CPU:
            assert max(c.params[d] for d in "mnk") <= 256


def test_quick_suite_h100():
    sigs = {_sig(c) for c in W.cases("quick", H100)}
    assert sigs == {("bf16", 4096, 4096, 4096, "nt"), ("bf16", 8192, 8192, 8192, "nt"),
                    ("fp8_e4m3", 8192, 8192, 4096, "nt")}


def test_standard_suite_h100():
    cases = W.cases("standard", H100)
    sigs = {_sig(c) for c in cases}
    for dt in ("bf16", "fp16"):
        for s in (1024, 2048, 4096, 8192, 16384):
            assert (dt, s, s, s, "nt") in sigs
    for model in g.MODEL_SHAPES:
        for t in (4096, 8192, 16384):
            for _, m, n, k in g.projection_shapes(model, t):
                assert ("bf16", m, n, k, "nt") in sigs
        for _, m, n, k in g.projection_shapes(model, 8192):
            assert ("fp8_e4m3", m, n, k, "nt") in sigs
        for t in (1, 8, 32, 128):
            for _, m, n, k in g.projection_shapes(model, t):
                assert ("bf16", m, n, k, "nt") in sigs
    assert {c.key for c in W.cases("quick", H100)} <= {c.key for c in cases}
    assert {c.key for c in cases} < {c.key for c in W.cases("full", H100)}


def test_mamf_suite_is_the_grid():
    cases = W.cases("mamf", H100)
    assert len(cases) == len(g.MAMF_GRID) ** 3
    assert {(c.params["m"], c.params["n"], c.params["k"]) for c in cases} == {
        (m, n, k) for m in g.MAMF_GRID for n in g.MAMF_GRID for k in g.MAMF_GRID}


def test_cpu_cases_cover_odd_shapes_layouts_and_dtypes():
    cases = W.cases("standard", CPU)
    assert {c.dtype for c in cases} == set(g.DTYPES)
    assert {c.params["layout"] for c in cases} == set(g.LAYOUTS)
    dims = [c.params[d] for c in cases for d in "mnk"]
    assert 1 in dims and any(x % 2 for x in dims)


def test_unknown_suite():
    with pytest.raises(ValueError, match="unknown suite"):
        W.cases("huge", H100)


def test_backends_drop_torch_fp8_where_scaled_mm_cannot_run():
    fp8 = g._case("fp8_e4m3", 8192, 8192, 4096)
    assert W.backends(fp8, H100) == ["triton", "torch"]
    assert W.backends(fp8, CPU) == ["triton"]
    assert W.backends(fp8, A100) == ["triton"]  # sm80: no fp8 tensor cores
    assert W.backends(g._case("fp8_e4m3", 8192, 8192, 4096, "nn"), H100) == ["triton"]
    assert W.backends(g._case("fp8_e4m3", 1, 8192, 8192), H100) == ["triton"]
    assert W.backends(g._case("bf16", 64, 64, 64), CPU) == ["triton", "torch"]


def test_backends_drop_torch_for_e5m2_times_e5m2():
    # cuBLASLt has no e5m2 x e5m2 kernel: torch._scaled_mm raises ValueError on torch 2.11.
    assert W.backends(g._case("fp8_e5m2", 8192, 8192, 4096), H100) == ["triton"]


def test_triton_fp8_check_survives_scaled_mm_value_error(monkeypatch):
    case = g._case("fp8_e5m2", 32, 48, 16)
    x = W.setup(case, CPU)
    out = W.prepare(case, "triton", x)()
    a_cuda = type("FakeCuda", (), {"type": "cuda"})()

    class _A:  # only .device is read before _scaled_mm is called
        device = a_cuda

    def refuse(*args, **kwargs):
        raise ValueError("Multiplication of two Float8_e5m2 matrices is not supported")

    monkeypatch.setattr(torch, "_scaled_mm", refuse, raising=False)
    fake = g.GemmInputs(_A(), x.b, x.scale_a, x.scale_b, x.out_dtype)
    assert g.GemmWorkload._torch_baseline(fake) is None
    res = W.check(case, "triton", x, out)
    assert res.correct and res.tolerance == g.FIXED_TOLERANCE[x.out_dtype]


def test_flops_and_bytes():
    c = g._case("bf16", 8192, 8192, 8192)
    assert W.flops(c) == 2 * 8192**3 == 1_099_511_627_776
    assert W.bytes_moved(c) == 3 * 8192 * 8192 * 2
    f8 = g._case("fp8_e4m3", 8192, 8192, 4096)
    assert W.flops(f8) == 2 * 8192 * 8192 * 4096
    assert W.bytes_moved(f8) == 2 * 8192 * 4096 * 1 + 8192 * 8192 * 2  # fp8 in, bf16 out
    assert W.flops(g._case("fp32", 3, 5, 7)) == 210


def test_llama3_70b_projection_shapes_by_hand():
    # hidden 8192, 64 heads + 2 x 8 KV heads of 128, FFN 28672 (gate and up fused).
    assert g.projection_shapes("llama3-70b", 8192) == [
        ("llama3-70b.qkv", 8192, 10240, 8192),
        ("llama3-70b.attn_out", 8192, 8192, 8192),
        ("llama3-70b.mlp_up", 8192, 57344, 8192),
        ("llama3-70b.mlp_down", 8192, 8192, 28672),
    ]
    gpt3 = {label: (n, k) for label, _, n, k in g.projection_shapes("gpt3-175b", 1)}
    assert gpt3["gpt3-175b.qkv"] == (3 * 12288, 12288)
    assert gpt3["gpt3-175b.mlp_up"] == (4 * 12288, 12288)
    assert all("source" in spec for spec in g.MODEL_SHAPES.values())


@pytest.mark.parametrize("model,tokens", [("llama4", 8), ("llama3-70b", 0),
                                          ("llama3-70b", 2.5), ("llama3-70b", True)])
def test_projection_shapes_bad_input(model, tokens):
    with pytest.raises(ValueError):
        g.projection_shapes(model, tokens)


def test_tolerance_floor():
    assert g.tolerance_floor(torch.bfloat16, 4096) == 2**-8 + 64 * 2**-24


def test_setup_layouts_dtypes_and_randomness():
    x = W.setup(g._case("fp16", 40, 24, 56, "tn"), CPU)
    assert x.a.shape == (40, 56) and x.a.stride(0) == 1  # stored (K, M)
    assert x.b.shape == (56, 24) and x.b.stride(1) == 1  # stored (K, N)
    assert x.a.dtype == torch.float16 and x.a.float().std() > 0.1  # random, never zeros
    y = W.setup(g._case("fp8_e5m2", 32, 48, 16), CPU)
    assert y.a.dtype == torch.float8_e5m2 and y.b.stride(0) == 1  # "nt": B stored (N, K)
    assert y.scale_a.dtype == torch.float32 and y.scale_a.numel() == 1
    assert y.out_dtype == torch.bfloat16
    again = W.setup(g._case("fp16", 40, 24, 56, "tn"), CPU)
    assert again.a is not x.a and torch.equal(again.a, x.a)  # fresh tensors, seeded values


def test_setup_refuses_cases_larger_than_device_memory():
    tiny = DeviceInfo(name="small", kind="cuda", cc="9.0", memory_bytes=2**20)
    with pytest.raises(Unsupported, match="GiB"):
        W.setup(g._case("bf16", 8192, 8192, 8192), tiny)


def test_cpu_cases_pass_their_check():
    for case in W.cases("standard", CPU):
        inputs = W.setup(case, CPU)
        for backend in W.backends(case, CPU):
            out = W.prepare(case, backend, inputs)()
            res = W.check(case, backend, inputs, out)
            assert res.correct, (case.key, backend, res)
            assert 0 <= res.max_rel_error <= res.tolerance


def test_check_catches_wrong_output():
    case = g._case("bf16", 48, 40, 32)
    x = W.setup(case, CPU)
    out = W.prepare(case, "triton", x)()
    bad = out.clone()
    bad[3, 5] += 1.0
    assert not W.check(case, "triton", x, bad).correct
    assert not W.check(case, "torch", x, torch.zeros_like(out)).correct
    nan = out.clone()
    nan[0, 0] = float("nan")
    assert not W.check(case, "triton", x, nan).correct


def test_blocked_reference_matches_whole(monkeypatch):
    case = g._case("fp16", 37, 20, 24)
    x = W.setup(case, CPU)
    out = W.prepare(case, "triton", x)()
    whole = g._errors(x, [out])
    monkeypatch.setattr(g, "REF_BLOCK_ELEMS", 20 * 5)  # 5 rows per block
    assert g._errors(x, [out]) == pytest.approx(whole)


def test_prepare_unknown_backend():
    case = g._case("bf16", 16, 16, 16)
    with pytest.raises(ValueError, match="unknown gemm backend"):
        W.prepare(case, "cutlass", W.setup(case, CPU))


def test_runner_flow_in_a_fresh_process():
    # The runner imports triton (provenance) before any kernel; the interpreter must already be
    # chosen by then, or triton's own @jit helpers break every interpreted kernel.
    script = (
        "from bench import runner; from bench.device import detect\n"
        "from bench.suites import select, suite_cases; from bench.timing import PRESETS\n"
        "d = detect()\n"
        "ctx = runner.RunContext(run_id='t', device=d, timing=PRESETS['smoke'], telemetry=False)\n"
        "for c, b in select(suite_cases('quick', d), d, 'gemm/bf16'):\n"
        "    r = runner.run_case(c, b, ctx)\n"
        "    assert r.status == 'ok' and r.correct, (b, r.status, r.error)\n"
        "print('ok')\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]
