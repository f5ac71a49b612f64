"""kernels.gemm through the Triton interpreter (CPU), plus one GPU test of the Hopper path.

Shapes are small and odd on purpose: M/N/K = 1, sizes that are not multiples of the 32-wide
interpreter tile, both storage orders of each operand, both kernels (TMA and portable).
"""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from kernels import gemm, interpreted
from kernels.gemm import matmul, select_path

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2
# Normwise error bounds (max |C - ref| / max |ref|) for these small K: a little above one
# rounding of the output (bf16 u = 2**-8, fp16 2**-11) and fp32 accumulation noise.
TOL = {torch.float32: 1e-5, torch.float16: 2**-10, torch.bfloat16: 2**-7}

SHAPES = [(1, 1, 1), (1, 64, 48), (33, 17, 65), (64, 64, 64), (70, 96, 1), (40, 1, 96)]


def _operand(rows, cols, col_major, dtype, seed):
    """A (rows, cols) fp32 random matrix in `dtype`, stored column-major when asked."""
    g = torch.Generator().manual_seed(seed)
    if col_major:
        return torch.randn(cols, rows, generator=g).to(dtype).t()
    return torch.randn(rows, cols, generator=g).to(dtype)


def _ref(a, b, sa=1.0, sb=1.0):
    sa = sa.double().reshape(-1, 1) if isinstance(sa, torch.Tensor) else sa
    sb = sb.double().reshape(1, -1) if isinstance(sb, torch.Tensor) else sb
    return (a.float().double() * sa) @ (b.float().double() * sb)


def _err(c, ref):
    return ((c.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-30)).item()


def test_interpreter_uses_one_config():
    assert interpreted()
    assert all(len(k.configs) == 1 for k in gemm._TMA.values())
    assert len(gemm._PORTABLE.configs) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m,n,k", SHAPES)
@pytest.mark.parametrize("a_col,b_col", [(False, False), (True, True)])
def test_matmul_matches_fp64(dtype, m, n, k, a_col, b_col):
    a = _operand(m, k, a_col, dtype, 1)
    b = _operand(k, n, b_col, dtype, 2)
    c = matmul(a, b)
    assert c.shape == (m, n) and c.dtype == dtype and c.is_contiguous()
    assert _err(c, _ref(a, b)) <= TOL[dtype]


@pytest.mark.parametrize("path", ["tma", "portable"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("a_col,b_col", [(False, False), (False, True), (True, False),
                                         (True, True)])
def test_both_kernels_all_layouts(path, dtype, a_col, b_col):
    # 96 x 80 x 72: every row stride is 16-byte aligned, so both kernels can run every layout.
    a = _operand(96, 72, a_col, dtype, 3)
    b = _operand(72, 80, b_col, dtype, 4)
    assert select_path(a, b) == "tma"
    assert _err(matmul(a, b, path=path), _ref(a, b)) <= TOL[dtype]


@pytest.mark.parametrize("a_col,b_col", [(False, False), (True, True), (False, True)])
def test_unaligned_operands_are_padded_onto_the_tma_path(a_col, b_col):
    a = _operand(33, 65, a_col, torch.float16, 5)  # a stride of 130 or 66 bytes: not 16-aligned
    b = _operand(65, 17, b_col, torch.float16, 6)
    assert gemm.tma_layout(a, b) is None  # TMA cannot read them as stored
    assert select_path(a, b) == "tma"  # ... so matmul pads them
    pa, pb = gemm.tma_operands(a, b)
    assert gemm.tma_layout(pa, pb) is not None
    assert torch.equal(pa, a) and torch.equal(pb, b)  # same values, aligned storage
    assert (pa.stride(1) == 1) == (a.stride(1) == 1)  # the storage order is kept
    assert _err(matmul(a, b), _ref(a, b)) <= TOL[torch.float16]
    assert _err(matmul(a, b, path="portable"), _ref(a, b)) <= TOL[torch.float16]


def test_fp8_unaligned_k_is_padded():
    a = _operand(20, 37, False, torch.float32, 7).to(E4M3)  # K = 37 bytes a row
    b = _operand(37, 24, True, torch.float32, 8).to(E4M3)
    pa, pb = gemm.tma_operands(a, b)
    assert gemm.tma_layout(pa, pb) == (True, True)
    assert _err(matmul(a, b, scale_a=1.0, scale_b=1.0), _ref(a, b)) <= 2**-7


def test_strided_views():
    big = torch.randn(80, 136).to(torch.float16)  # row stride 272 bytes
    a = big[:, 1:65]  # base address 2 bytes off: padded copy
    b = torch.randn(128, 48).to(torch.float16)[::2]  # every other row: aligned stride, TMA
    assert gemm.tma_layout(a, b) is None
    assert gemm.tma_layout(big[:, :64], b) is not None
    assert select_path(a, b) == select_path(big[:, :64], b) == "tma"
    for x in (a, big[:, :64]):
        assert _err(matmul(x, b), _ref(x, b)) <= TOL[torch.float16]


def test_bf16_rounds_to_nearest_under_interpreter():
    # Every element within half an ulp of bf16 (plus accumulation noise): truncation would
    # give up to a full ulp.
    a = _operand(64, 64, False, torch.bfloat16, 7)
    b = _operand(64, 64, True, torch.bfloat16, 8)
    for path in ("tma", "portable"):
        c = matmul(a, b, path=path).double()
        ref = _ref(a, b)
        assert ((c - ref).abs() <= 2**-8 * ref.abs() + 1e-5).all()


def _quantized(rows, cols, dtype, col_major, seed):
    x = _operand(rows, cols, col_major, torch.float32, seed)
    scale = x.abs().max() / torch.finfo(dtype).max
    return (x / scale).to(dtype), scale


@pytest.mark.parametrize("fp8", [E4M3, E5M2])
@pytest.mark.parametrize("m,n,k", [(64, 64, 64), (33, 17, 65), (1, 48, 32), (50, 1, 16)])
@pytest.mark.parametrize("b_col", [True, False])
def test_fp8_per_tensor_scales(fp8, m, n, k, b_col):
    a, sa = _quantized(m, k, fp8, False, 9)
    b, sb = _quantized(k, n, fp8, b_col, 10)
    c = matmul(a, b, scale_a=sa, scale_b=sb)
    assert c.dtype == torch.bfloat16 and c.shape == (m, n)
    assert _err(c, _ref(a, b, sa, sb)) <= TOL[torch.bfloat16]


@pytest.mark.parametrize("path", ["tma", "portable"])
@pytest.mark.parametrize("a_shape,b_shape", [((96,), (80,)), ((96, 1), (1, 80)), ((1,), (80,))])
def test_fp8_per_row_and_column_scales(path, a_shape, b_shape):
    a, _ = _quantized(96, 64, E4M3, False, 11)
    b, _ = _quantized(64, 80, E4M3, True, 12)
    g = torch.Generator().manual_seed(13)
    sa = torch.rand(a_shape, generator=g) + 0.5
    sb = torch.rand(b_shape, generator=g) + 0.5
    c = matmul(a, b, scale_a=sa, scale_b=sb, path=path)
    assert _err(c, _ref(a, b, sa, sb)) <= TOL[torch.bfloat16]


def test_fp8_python_number_scales():
    a, _ = _quantized(32, 48, E4M3, False, 14)
    b, _ = _quantized(48, 16, E4M3, True, 15)
    c = matmul(a, b, scale_a=0.5, scale_b=2)
    assert _err(c, _ref(a, b)) <= TOL[torch.bfloat16]


@pytest.mark.parametrize("in_dtype,out_dtype,tol", [
    (torch.float16, torch.float32, 1e-6),  # fp16 products are exact in fp32
    (torch.bfloat16, torch.float16, 2**-10),
    (torch.float32, torch.bfloat16, 2**-7),
    (E4M3, torch.float32, 1e-6),
    (E4M3, torch.float16, 2**-10),
])
def test_out_dtype(in_dtype, out_dtype, tol):
    if in_dtype in gemm.FP8_DTYPES:
        a, sa = _quantized(48, 64, in_dtype, False, 16)
        b, sb = _quantized(64, 40, in_dtype, True, 17)
        c, ref = matmul(a, b, scale_a=sa, scale_b=sb, out_dtype=out_dtype), _ref(a, b, sa, sb)
    else:
        a = _operand(48, 64, False, in_dtype, 16)
        b = _operand(64, 40, True, in_dtype, 17)
        c, ref = matmul(a, b, out_dtype=out_dtype), _ref(a, b)
    assert c.dtype == out_dtype
    assert _err(c, ref) <= tol


def test_empty_dimensions():
    assert matmul(torch.randn(0, 4), torch.randn(4, 3)).shape == (0, 3)
    c = matmul(torch.randn(5, 0).half(), torch.randn(0, 3).half())
    assert c.shape == (5, 3) and c.dtype == torch.float16 and not c.any()


def test_smem_estimate_and_hopper_tables():
    from kernels import gemm_configs as G
    from kernels.host import HOPPER_SMEM_BYTES

    t = gemm.Tile(128, 256, 64, 8, 3, 8)
    assert gemm.smem_bytes(t, 2, 2) == 3 * (128 + 256) * 64 * 2 + 128 * 256 * 2  # 212992
    in_bytes = {"16bit": 2, "fp8": 1, "fp8_fast": 1, "tf32": 4, "fp32": 4}
    for fam, tiles in G.HOPPER_TILES.items():
        assert tiles and all(x.why for x in tiles), fam  # each entry says what chose it
        for x in tiles:  # every table entry fits the sm90 opt-in with a bf16 (or fp32) C
            assert G.smem_bytes(x, in_bytes[fam], 4 if fam in ("tf32", "fp32") else 2) \
                <= HOPPER_SMEM_BYTES, (fam, x)
        assert {x.block_m for x in G.hopper_tiles(fam, 1)} == {64}  # decode: short tiles only
        assert all(x.block_m > 64 for x in G.hopper_tiles(fam, 8192))
    big = gemm.Tile(128, 256, 128, 8, 4, 8, subtile=True)
    assert big in G.HOPPER_TILES["fp8_fast"] and big not in G.HOPPER_TILES["16bit"]
    # fp8 with precise accumulation keeps two fp32 accumulators: no 256-wide tiles (they spill)
    assert all(x.block_n <= 128 for x in G.HOPPER_TILES["fp8"])


@pytest.mark.parametrize("m,rows", [(1, {64}), (64, {64}), (65, {128}), (8192, {128})])
def test_hopper_prune_through_triton_autotuner(m, rows):
    # The GPU tuner's early prune, called the way Triton's Autotuner calls it (positional
    # arguments as named_args, the keyword flags apart): it must not need the keyword ones.
    from kernels import gemm_configs as G
    from kernels.gemm_kernel import matmul_tma_kernel

    configs = [x.config(True) for x in G.HOPPER_TILES["16bit"]]
    tuner = gemm._tuned(matmul_tma_kernel, configs, gemm.TMA_KEY, gemm._skinny("16bit"))
    a = torch.empty(m, 64, dtype=torch.bfloat16)
    args = (a, a, a, None, None, m, 64, 64, 64, 64, 64)
    flags = dict(A_KMAJOR=True, B_KMAJOR=False, C_TMA=True, HAS_SCALE=False, ROW_SCALE_A=False,
                 COL_SCALE_B=False, INTERPRET=True, DOT_PRECISION="ieee", FP8_PRECISE=False,
                 NUM_SMS=3, WARP_SPECIALIZE=False)
    tuner.nargs = dict(zip(tuner.arg_names, args, strict=False))
    kept = tuner.prune_configs(flags)
    assert {G.tile_of(c).block_m for c in kept} == rows


def test_tf32_allowed_prefers_the_new_precision_api():
    from types import SimpleNamespace as NS

    assert gemm.tf32_allowed(NS(fp32_precision="tf32", allow_tf32=False))
    assert not gemm.tf32_allowed(NS(fp32_precision="ieee", allow_tf32=True))
    assert not gemm.tf32_allowed(NS(fp32_precision="none", allow_tf32=True))
    assert gemm.tf32_allowed(NS(allow_tf32=True))  # torch < 2.9: legacy flag only
    assert not gemm.tf32_allowed(NS(allow_tf32=False))
    m = torch.backends.cuda.matmul
    if getattr(m, "fp32_precision", None) is None:
        pytest.skip("this torch has no fp32_precision API")
    before = m.fp32_precision
    try:
        m.fp32_precision = "tf32"  # after this, reading m.allow_tf32 raises RuntimeError
        assert gemm.tf32_allowed()
        m.fp32_precision = "ieee"
        assert not gemm.tf32_allowed()
    finally:
        m.fp32_precision = before


A = torch.randn(8, 4)
B = torch.randn(4, 3)


@pytest.mark.parametrize("args,kwargs,exc,msg", [
    ((A.numpy(), B), {}, TypeError, "torch.Tensor"),
    ((torch.randn(8), B), {}, ValueError, "2-D"),
    ((A, torch.randn(2, 4, 3)), {}, ValueError, "2-D"),
    ((A, torch.randn(5, 3)), {}, ValueError, "inner dimensions"),
    ((A.double(), B.double()), {}, TypeError, "unsupported dtype"),
    ((A.to(torch.int8), B.to(torch.int8)), {}, TypeError, "unsupported dtype"),
    ((A.half(), B.bfloat16()), {}, TypeError, "same dtype"),
    ((A.to(E4M3), B.to(E5M2)), {"scale_a": 1.0, "scale_b": 1.0}, TypeError, "same dtype"),
    ((A, B.to("meta")), {}, ValueError, "different devices"),
    ((A, B), {"scale_a": 1.0}, ValueError, "fp8 inputs only"),
    ((A.to(E4M3), B.to(E4M3)), {}, ValueError, "need scale_a and scale_b"),
    ((A.to(E4M3), B.to(E4M3)), {"scale_a": 1.0}, ValueError, "need scale_a and scale_b"),
    ((A.to(E4M3), B.to(E4M3)), {"scale_a": torch.ones(3), "scale_b": 1.0}, ValueError,
     "scale_a has shape"),
    ((A.to(E4M3), B.to(E4M3)), {"scale_a": 1.0, "scale_b": torch.ones(3, 1)}, ValueError,
     "scale_b has shape"),
    ((A.to(E4M3), B.to(E4M3)), {"scale_a": torch.ones(1, dtype=torch.int32), "scale_b": 1.0},
     TypeError, "floating point"),
    ((A.to(E4M3), B.to(E4M3)), {"scale_a": "1", "scale_b": 1.0}, TypeError, "number or"),
    ((A, B), {"out_dtype": torch.int32}, ValueError, "out_dtype"),
    ((A, B), {"out_dtype": E4M3}, ValueError, "out_dtype"),
    ((A, B), {"out_dtype": "bf16"}, TypeError, "out_dtype"),
    ((A, B), {"path": "cublas"}, ValueError, "path"),
])
def test_bad_input_errors(args, kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        matmul(*args, **kwargs)


# Compiles the kernels for sm90 (and the portable one for sm80) with triton.compile, which needs
# no GPU: catches what the interpreter forgives (types, layouts, constexpr use) and checks that
# the Hopper kernel really issues wgmma and TMA loads. Its own process: kernels must be
# decorated with TRITON_INTERPRET=0.
_COMPILE_SCRIPT = textwrap.dedent("""
    import re
    from triton import compile as tcompile
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from kernels import gemm_configs as G
    from kernels import gemm_kernel as gk

    def build(kernel, tile, tma, in_ty, out_ty, cap, **flags):
        cfg = tile.config(tma)
        values = dict(flags, **cfg.kwargs)
        sig, consts, attrs = {}, {}, {}
        for i, name in enumerate(kernel.arg_names):
            if name in ("a_ptr", "b_ptr", "c_ptr"):
                sig[name] = out_ty if name == "c_ptr" else in_ty
                attrs[(i,)] = [["tt.divisibility", 16]]
            elif name in ("scale_a_ptr", "scale_b_ptr"):
                sig[name] = "*fp32" if flags["HAS_SCALE"] else "constexpr"
                if not flags["HAS_SCALE"]:
                    consts[name] = None
            elif name in values:
                sig[name], consts[name] = "constexpr", values[name]
            else:
                sig[name] = "i32"
        src = ASTSource(kernel, sig, consts, attrs)
        opts = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
        return tcompile(src, target=GPUTarget("cuda", cap, 32), options=opts).asm["ptx"]

    common = dict(ROW_SCALE_A=False, COL_SCALE_B=False, INTERPRET=False, DOT_PRECISION="ieee")
    tma = dict(common, A_KMAJOR=True, B_KMAJOR=True, C_TMA=True, NUM_SMS=132,
               WARP_SPECIALIZE=False)
    ptx = build(gk.matmul_tma_kernel, G.HOPPER_TILES["16bit"][0], True, "*bf16", "*bf16", 90,
                HAS_SCALE=False, FP8_PRECISE=False, **tma)
    assert "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16" in ptx
    assert "cp.async.bulk.tensor" in ptx
    ptx = build(gk.matmul_tma_kernel, G.HOPPER_TILES["fp8"][0], True, "*fp8e4nv", "*bf16", 90,
                HAS_SCALE=True, FP8_PRECISE=True, **tma)
    assert re.search(r"wgmma[.a-z_]*m64n[0-9]+k32.f32.e4m3.e4m3", ptx)
    ptx = build(gk.matmul_portable_kernel, G.PORTABLE_TILES[2], False, "*bf16", "*bf16",
                80, HAS_SCALE=False, FP8_PRECISE=False, A_KMAJOR=True, B_KMAJOR=False,
                C_TMA=False, **common)
    assert "mma.sync" in ptx
    print("compiled")
""")


@pytest.mark.slow
def test_kernels_compile_for_sm90_without_a_gpu():
    env = dict(os.environ, TRITON_INTERPRET="0")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT], env=env, cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and "compiled" in run.stdout, run.stderr[-3000:]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("m,n,k", [(4096, 4096, 4096), (1000, 3000, 2056)])
def test_gpu_matches_torch(m, n, k):
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(m, k, device="cuda", generator=g).bfloat16()
    b = torch.randn(n, k, device="cuda", generator=g).bfloat16().t()  # layout "nt"
    hopper = torch.cuda.get_device_capability()[0] == 9
    assert select_path(a, b) == ("tma" if hopper else "portable")
    ref = a.double() @ b.double()
    ours, theirs = _err(matmul(a, b), ref), _err(torch.matmul(a, b), ref)
    assert ours <= max(2 * theirs, 2**-8)
    # fp8 with per-tensor scales against the dequantised product.
    qa, sa = (a.float() / 8).to(E4M3), torch.tensor(8.0, device="cuda")
    qb, sb = (b.float() / 4).to(E4M3), torch.tensor(4.0, device="cuda")
    c = matmul(qa, qb, scale_a=sa, scale_b=sb)
    assert _err(c, _ref(qa, qb, sa, sb)) <= 4 * 2**-8
