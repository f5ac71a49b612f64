"""kernels/attention.py: forward and backward against torch's math attention.

On CPU the kernels run in the Triton interpreter (small shapes: it is slow, the backward most).
The reference is torch SDPA's math path in fp32 with autograd, with the causal mask built here
(bottom-right aligned), so it shares no code with the kernel or with reference_attention.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from bench.workloads.attention import reference_attention
from kernels import interpreted
from kernels.attention import (
    CONFIGS,
    CPU_CONFIGS,
    _f32_dot,
    attention,
    attention_impl,
    config_fits,
)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
# normwise max error allowed against the fp32 reference, per input dtype (measured here: fp32
# ~1e-6, fp16 ~4e-4, bf16 ~1e-2 since P and dS are rounded to the input dtype as on a GPU)
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 2e-2}
H100_SMEM = 232448  # bytes of shared memory per block, opt-in (227 KiB, CUDA C Guide, sm90)


def bottom_right_mask(sq, sk):
    return torch.ones(sq, sk, dtype=torch.bool, device=DEV).tril(diagonal=sk - sq)


def torch_math(q, k, v, causal, scale=None, do=None):
    """fp32 SDPA math path (autograd) on fp32 copies: (o, dq, dk, dv)."""
    q, k, v = (t.detach().float().requires_grad_() for t in (q, k, v))
    mask = bottom_right_mask(q.shape[2], k.shape[2]) if causal else None
    with sdpa_kernel(SDPBackend.MATH):
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale,
                                           enable_gqa=q.shape[1] != k.shape[1])
    if do is None:
        return o.detach(), None, None, None
    return (o.detach(), *torch.autograd.grad(o, (q, k, v), do.float()))


def rel_err(x, ref):
    return ((x.float() - ref).abs().max() / ref.abs().max()).item()


def inputs(b, h, kv_h, sq, sk, d, dtype, grad=True, seed=0):
    g = torch.Generator(device=DEV).manual_seed(seed)
    mk = lambda *shape: torch.randn(*shape, generator=g, device=DEV, dtype=dtype)
    q, k, v = mk(b, h, sq, d), mk(b, kv_h, sk, d), mk(b, kv_h, sk, d)
    do = mk(b, h, sq, d)
    return (*(t.requires_grad_(grad) for t in (q, k, v)), do)


CASES = [
    # b, h, kv_h, seq_q, seq_k, d, causal, dtype, use_desc
    pytest.param(1, 2, 2, 47, 47, 64, False, torch.float32, False, id="fp32-odd"),
    pytest.param(1, 2, 2, 47, 47, 64, True, torch.float32, False, id="fp32-odd-causal"),
    pytest.param(1, 4, 2, 33, 47, 64, True, torch.float32, False, id="fp32-gqa-causal-sq<sk"),
    pytest.param(1, 4, 2, 47, 33, 64, True, torch.float32, False, id="fp32-gqa-causal-sq>sk"),
    pytest.param(2, 2, 1, 64, 64, 64, True, torch.float16, False, id="fp16-gqa-causal-b2"),
    pytest.param(1, 2, 2, 33, 33, 128, False, torch.bfloat16, False, id="bf16-hd128"),
    pytest.param(1, 2, 2, 47, 47, 64, True, torch.float32, True, id="desc-fp32-causal"),
    pytest.param(1, 4, 2, 33, 47, 64, False, torch.bfloat16, True, id="desc-bf16-gqa"),
]


@pytest.mark.parametrize("b,h,kv_h,sq,sk,d,causal,dtype,use_desc", CASES)
def test_forward_backward_match_torch_math(b, h, kv_h, sq, sk, d, causal, dtype, use_desc):
    q, k, v, do = inputs(b, h, kv_h, sq, sk, d, dtype)
    o = attention_impl(q, k, v, causal=causal, use_desc=use_desc)
    assert o.dtype == dtype and o.shape == q.shape
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    ref = torch_math(q, k, v, causal, do=do)
    for name, got, want in zip(("o", "dq", "dk", "dv"), (o, dq, dk, dv), ref, strict=True):
        assert got.shape == want.shape, name
        assert rel_err(got, want) <= TOL[dtype], (name, rel_err(got, want))


def test_head_dim_256_forward():
    q, k, v, _ = inputs(1, 1, 1, 20, 20, 256, torch.float16, grad=False)
    o = attention(q, k, v, causal=True)
    assert rel_err(o, torch_math(q, k, v, True)[0]) <= TOL[torch.float16]


def test_rows_that_see_no_key_are_zero():
    # causal, seq_q > seq_k, bottom-right: the first seq_q - seq_k query rows see nothing
    q, k, v, do = inputs(1, 2, 2, 40, 24, 64, torch.float32)
    o = attention(q, k, v, causal=True)
    dq, = torch.autograd.grad(o, (q,), do)
    assert torch.isfinite(o).all() and torch.isfinite(dq).all()
    assert o[:, :, :16].abs().max() == 0 and dq[:, :, :16].abs().max() == 0
    assert o[:, :, 16:].abs().max() > 0


@pytest.mark.parametrize("use_desc", [False, True])
def test_custom_scale_and_strided_inputs(use_desc):
    # (batch, seq, heads, d) storage viewed as (batch, heads, seq, d): strided, not contiguous
    g = torch.Generator(device=DEV).manual_seed(1)
    q, k, v, do = (torch.randn(1, 40, 2, 64, generator=g, device=DEV).transpose(1, 2)
                   for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    assert not q.is_contiguous()
    o = attention_impl(q, k, v, causal=True, sm_scale=0.3, use_desc=use_desc)
    ours = (o, *torch.autograd.grad(o, (q, k, v), do))
    for x, y in zip(ours, torch_math(q, k, v, True, scale=0.3, do=do), strict=True):
        assert rel_err(x, y) <= TOL[torch.float32]


def test_no_grad_forward():
    q, k, v, _ = inputs(1, 2, 2, 17, 17, 64, torch.float16, grad=False)
    with torch.no_grad():
        o = attention(q, k, v)
    assert o.grad_fn is None and o.shape == q.shape


def test_reference_attention_matches_torch_math():
    """reference_attention (the workload's check) in small chunks, GQA, causal, seq_q != seq_k."""
    q, k, v, do = inputs(2, 4, 2, 9, 13, 64, torch.float32, grad=False)
    got = reference_attention(q, k, v, causal=True, do=do, budget_bytes=1)  # one row a chunk
    want = torch_math(q, k, v, True, do=do)
    for name, x, y in zip(("o", "dq", "dk", "dv"), got, want, strict=True):
        assert rel_err(x, y) <= 1e-5, name
    o, dq, dk, dv = reference_attention(q, k, v)
    assert dq is None and dk is None and dv is None
    assert rel_err(o, torch_math(q, k, v, False)[0]) <= 1e-5


def test_interpreter_upcasts_bf16_only():
    if interpreted():
        assert _f32_dot(torch.bfloat16)  # the interpreter's bf16 tl.dot is wrong
    assert not _f32_dot(torch.float16)
    assert _f32_dot(torch.float32)  # fp32 in IEEE fp32, not TF32


@pytest.mark.parametrize("d", [64, 128, 256])
@pytest.mark.parametrize("kind", ["fwd", "dkdv", "dq"])
@pytest.mark.parametrize("arch", ["sm90", "portable"])
def test_every_head_dim_has_a_gpu_config(arch, kind, d):
    from kernels.attention import gpu_configs

    smem = H100_SMEM if arch == "sm90" else 99 * 1024  # sm86/sm89 opt-in limit
    if arch == "sm90":  # 16-bit on sm90: the inspected tables, not the estimate
        assert gpu_configs(kind, arch, d, 2, smem, tune=False)
        assert all(c.why.startswith("ptxas sm90") for c in gpu_configs(kind, arch, d, 2, smem))
    else:
        assert any(config_fits(kind, c, d, 2, smem) for c in CONFIGS[arch][kind])


def test_config_fits_rejects_oversized_tiles():
    from kernels.attention import BlockConfig

    assert not config_fits("fwd", BlockConfig(128, 128, 8, 3), 256, 2, H100_SMEM)
    assert config_fits("fwd", BlockConfig(128, 64, 8, 2), 128, 2, H100_SMEM)
    assert not config_fits("fwd", BlockConfig(128, 64, 4, 2), 256, 2, H100_SMEM)  # registers
    assert set(CPU_CONFIGS) == {"fwd", "dkdv", "dq"}
    with pytest.raises(ValueError, match="kernel kind"):
        config_fits("nope", BlockConfig(16, 16), 64, 2, H100_SMEM)


@pytest.mark.parametrize("arch,smem", [("sm90", H100_SMEM), ("portable", 99 * 1024),
                                       ("portable", 163 * 1024)])
@pytest.mark.parametrize("kind", ["fwd", "dkdv", "dq"])
def test_fp32_head_dim_256_gets_the_fallback_config(arch, smem, kind):
    from kernels.attention import FALLBACK_CONFIGS, gpu_configs

    # No tuned config fits 4-byte tiles of 256 columns (the old fallback, 64x64 2 stages, was
    # estimated at ~320 KB > 227 KB on sm90); the small fallback does.
    assert not any(config_fits(kind, c, 256, 4, smem) for c in CONFIGS[arch][kind])
    assert gpu_configs(kind, arch, 256, 4, smem) == [FALLBACK_CONFIGS[arch][kind]]
    assert FALLBACK_CONFIGS[arch][kind] not in gpu_configs(kind, arch, 128, 2, smem)


def test_gpu_configs_refuse_what_cannot_fit():
    from kernels.attention import gpu_configs

    with pytest.raises(ValueError, match="no fwd tile fits head_dim 256"):
        gpu_configs("fwd", "sm90", 256, 4, 48 * 1024)


def _tune_keys(monkeypatch, b, h, kv_h):
    """The autotune key values each kernel launch of a tiny forward + backward would use."""
    import kernels.attention as A

    keys = {}

    def record(kind, grid_rows, grid_y, args, *, head_dim, elem_bytes, device, use_desc, **meta):
        if kind not in A.TUNE_KEYS:  # the delta preprocess: one fixed config, not tuned
            return
        values = dict(zip(A._KERNELS[kind].arg_names, args, strict=False),
                      HEAD_DIM=head_dim, USE_DESC=use_desc, **meta)
        keys[kind] = tuple(values[n] for n in A.TUNE_KEYS[kind])

    monkeypatch.setattr(A, "_launch", record)
    q, k, v = _t(b, h, 8, 16), _t(b, kv_h, 8, 16), _t(b, kv_h, 8, 16)
    o, lse = A._forward(q, k, v, True, 0.25, None)
    o.zero_(), lse.zero_()  # no kernel ran: give the delta kernel defined values
    A._backward(torch.zeros_like(o), q, k, v, o, lse, True, 0.25, None)
    return keys


def test_tune_keys_tell_batch_heads_and_group_apart(monkeypatch):
    import kernels.attention as A

    for kind, names in A.TUNE_KEYS.items():
        assert set(names) <= set(A._KERNELS[kind].arg_names), kind
    shapes = [(2, 4, 4), (1, 8, 8), (1, 8, 2), (2, 8, 2), (1, 8, 4)]
    seen = [_tune_keys(monkeypatch, *s) for s in shapes]
    for kind in ("fwd", "dkdv", "dq"):
        assert len({keys[kind] for keys in seen}) == len(shapes), kind


def _t(*shape, dtype=torch.float16, device=DEV):
    return torch.randn(*shape, device=device).to(dtype)


BAD = [
    pytest.param(lambda: ([1, 2], _t(1, 2, 8, 64), _t(1, 2, 8, 64)), {}, TypeError,
                 "must be a torch.Tensor", id="not-tensor"),
    pytest.param(lambda: (_t(2, 8, 64), _t(2, 8, 64), _t(2, 8, 64)), {}, ValueError, "4-D",
                 id="3d"),
    pytest.param(lambda: (_t(1, 2, 8, 64), _t(1, 2, 8, 64, dtype=torch.bfloat16),
                          _t(1, 2, 8, 64)), {}, TypeError, "dtypes differ", id="dtype-mismatch"),
    pytest.param(lambda: (_t(1, 2, 8, 64, dtype=torch.float64),) * 3, {}, TypeError,
                 "supported: bfloat16", id="float64"),
    pytest.param(lambda: (_t(1, 2, 8, 32),) * 3, {}, ValueError, "head_dim 32 is not supported",
                 id="head-dim-32"),
    pytest.param(lambda: (_t(1, 2, 8, 64), _t(1, 2, 8, 128), _t(1, 2, 8, 128)), {}, ValueError,
                 "head_dim differs", id="head-dim-mismatch"),
    pytest.param(lambda: (_t(1, 6, 8, 64), _t(1, 4, 8, 64), _t(1, 4, 8, 64)), {}, ValueError,
                 "must divide q heads", id="heads-not-dividing"),
    pytest.param(lambda: (_t(1, 2, 8, 64), _t(1, 2, 8, 64), _t(1, 2, 9, 64)), {}, ValueError,
                 "k and v shapes differ", id="kv-mismatch"),
    pytest.param(lambda: (_t(1, 2, 8, 64), _t(2, 2, 8, 64), _t(2, 2, 8, 64)), {}, ValueError,
                 "batch sizes differ", id="batch-mismatch"),
    pytest.param(lambda: (_t(1, 2, 8, 64), _t(1, 2, 8, 64, device="meta"),
                          _t(1, 2, 8, 64, device="meta")), {}, ValueError, "different devices",
                 id="device-mismatch"),
    pytest.param(lambda: (_t(1, 2, 0, 64),) * 3, {}, ValueError, "empty dimension", id="empty"),
    pytest.param(lambda: (_t(1, 2, 8, 64),) * 3, {"sm_scale": -1.0}, ValueError, "sm_scale",
                 id="negative-scale"),
    pytest.param(lambda: (_t(1, 2, 8, 64),) * 3, {"sm_scale": "0.1"}, TypeError, "sm_scale",
                 id="string-scale"),
    pytest.param(lambda: (_t(1, 2, 8, 64),) * 3, {"causal": 1}, TypeError, "causal",
                 id="causal-not-bool"),
]


@pytest.mark.parametrize("make,kwargs,exc,msg", BAD)
def test_bad_inputs_give_clear_errors(make, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        attention(*make(), **kwargs)


def test_descriptor_path_needs_alignment():
    base = _t(1, 2, 8, 64 + 1)  # rows of 65 halves: 130-byte strides are not 16-byte multiples
    q = base[..., :64]
    with pytest.raises(ValueError, match="16-byte"):
        attention_impl(q, q, q, use_desc=True)
    assert attention_impl(q, q, q, use_desc=False).shape == q.shape  # pointers cope


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_desc", [None, False])
def test_gpu_bf16_matches_sdpa_within_twice_its_error(causal, use_desc):
    """Real-size tiles on the GPU (descriptor path on Hopper when use_desc is None)."""
    q, k, v, do = inputs(2, 8, 2, 1000, 1000, 128, torch.bfloat16)
    o = attention_impl(q, k, v, causal=causal, use_desc=use_desc)
    ours = (o, *torch.autograd.grad(o, (q, k, v), do))
    ref = reference_attention(q.detach(), k.detach(), v.detach(), causal=causal, do=do)
    o_t = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
    theirs = (o_t, *torch.autograd.grad(o_t, (q, k, v), do))
    for name, x, y, r in zip(("o", "dq", "dk", "dv"), ours, theirs, ref, strict=True):
        assert rel_err(x, r) <= max(2 * rel_err(y, r), 2 * 2.0**-7), name


_COMPILE_SM90 = r"""
import os
os.environ["TRITON_INTERPRET"] = "0"  # real JIT functions, even without a GPU
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import kernels.attention as A

consts = dict(HEAD_DIM=128, BLOCK_M=128, BLOCK_N=64, CAUSAL=True, USE_DESC=True, F32_DOT=False)
for kind, (bm, bn) in (("fwd", (128, 64)), ("dkdv", (64, 128)), ("dq", (128, 64))):
    fn = A._KERNELS[kind]
    c = {**consts, "BLOCK_M": bm, "BLOCK_N": bn}
    sig = {}
    for n in fn.arg_names:
        if n in c:
            sig[n] = "constexpr"
        elif n in ("LSE", "DELTA"):
            sig[n] = "*fp32"
        elif n in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV"):
            sig[n] = "*bf16"
        else:
            sig[n] = "fp32" if n == "sm_scale" else "i32"
    k = triton.compile(ASTSource(fn, sig, c), target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=8, num_stages=2))
    assert 0 < k.metadata.shared <= 232448, (kind, k.metadata.shared)
    print(kind, "ok", k.metadata.shared)
"""


@pytest.mark.slow
def test_kernels_compile_for_hopper_without_a_gpu():
    """The TMA (sm90) path through Triton's real compiler and ptxas: no GPU needed to compile."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("triton.backends.nvidia") is None:
        pytest.skip("this Triton has no NVIDIA backend")
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    r = subprocess.run([sys.executable, "-c", _COMPILE_SM90], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count(" ok ") == 3
