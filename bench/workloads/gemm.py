"""GEMM workload: our Triton matmul (kernels.gemm) against torch (cuBLAS / cuBLASLt).

Cases are (m, n, k, layout, shape label) at a dtype. `layout` has one letter per operand, A then
B: "n" = stored as used (A (M, K), B (K, N) row-major), "t" = stored transposed (A as (K, M),
B as (N, K), each row-major). "nt" is nn.Linear's layout (weights stored (out, in)) and what fp8
tensor cores want (B K-major); suites use it unless they measure layouts.

Model projection shapes (`MODEL_SHAPES`, `projection_shapes`) live in bench/workloads/shapes.py.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import torch

# Without a GPU, TRITON_INTERPRET must be set before triton is first imported anywhere (triton's
# own @jit helpers such as tl.cdiv are decorated then); kernels/__init__ sets it.
import kernels  # noqa: F401
from bench.device import DeviceInfo
from bench.workloads.base import Case, Check, Unsupported, Workload, max_rel_error, register
from bench.workloads.shapes import (  # noqa: F401  (re-exported: the model shapes' old home)
    MODEL_SHAPES,
    PROJECTIONS,
    projection_shapes,
    projection_widths,
)

DTYPES: dict[str, torch.dtype] = {
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "fp32": torch.float32,
    "fp8_e4m3": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
FP8 = ("fp8_e4m3", "fp8_e5m2")
LAYOUTS = ("nn", "nt", "tn", "tt")
BACKENDS = ("triton", "torch")
SUITES = ("quick", "standard", "full", "mamf", "campaign")

# Suite grids (sizes are choices of this harness, not measurements).
SQUARE_SIZES = (1024, 2048, 4096, 8192, 16384)
TOKENS = (4096, 8192, 16384)  # tokens per micro-batch (M) for the projection shapes
DECODE_M = (1, 8, 32, 128)  # batch rows of a decode step: skinny, bandwidth-bound GEMMs
CAMPAIGN_DECODE_M = (1, 16, 128)
MAMF_GRID = (1024, 2048, 4096, 8192, 16384)  # coarse version of mamf-finder's M, N, K sweep

# Tolerances. Unit roundoff u of each output dtype (2**-p, p = significand bits incl. the hidden
# bit: fp32 24, fp16 11, bf16 8; IEEE 754 / the bfloat16 format).
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
# Fixed bounds (normwise, as base.max_rel_error) for the torch backend, and for ours where no
# same-precision torch result exists (fp8 without torch._scaled_mm): 4 u of the output dtype
# (rounding the output costs up to 1 u; the rest covers accumulation order). fp32: assumption,
# 1e-4, since fp32 accumulation error over K up to 16384 stays far below it.
FIXED_TOLERANCE = {torch.float32: 1e-4, torch.float16: 4 * 2.0**-11, torch.bfloat16: 4 * 2.0**-8}
# Rows of the fp64 reference computed at once: 2**27 fp64 values = 1 GiB per block.
REF_BLOCK_ELEMS = 2**27


def gemm_flops(m: int, n: int, k: int) -> float:
    """2 M N K: one multiply and one add per (i, j, l) (the convention of cuBLAS's and Triton's
    matmul benchmarks, e.g. Triton tutorial 03's `perf = 2 * M * N * K * 1e-12 / (ms * 1e-3)`)."""
    return 2.0 * m * n * k


def gemm_bytes(m: int, n: int, k: int, in_bytes: int, out_bytes: int) -> float:
    """A and B read once, C written once: the compulsory traffic, for the roofline."""
    return float((m * k + k * n) * in_bytes + m * n * out_bytes)


def out_dtype_of(dtype: str) -> torch.dtype:
    """Output dtype of a case: the input dtype, bf16 for fp8 inputs."""
    return torch.bfloat16 if dtype in FP8 else DTYPES[dtype]


def tolerance_floor(out_dtype: torch.dtype, k: int) -> float:
    """Differences below this are rounding noise: one rounding of C to its dtype (u) plus an
    fp32 accumulation random walk over K terms (sqrt(K) u_fp32)."""
    return UNIT_ROUNDOFF[out_dtype] + math.sqrt(k) * UNIT_ROUNDOFF[torch.float32]


def _case(dtype: str, m: int, n: int, k: int, layout: str = "nt", shape: str = "square") -> Case:
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
    params = {"m": m, "n": n, "k": k, "layout": layout, "shape": shape}
    return Case("gemm", dtype, params, BACKENDS)


def _projection_cases(dtype: str, models, tokens, layout: str = "nt", tag: str = "") -> list[Case]:
    return [_case(dtype, m, n, k, layout, label + tag)
            for model in models for t in tokens
            for label, m, n, k in projection_shapes(model, t)]


def _quick() -> list[Case]:
    return [
        _case("bf16", 4096, 4096, 4096),
        _case("bf16", 8192, 8192, 8192),
        # Triton tutorial 09's fp8 benchmark shape (python/tutorials/09-persistent-matmul.py).
        _case("fp8_e4m3", 8192, 8192, 4096, shape="tutorial09"),
    ]


def _campaign() -> list[Case]:
    """One GPU window's GEMMs, in priority order: squares, fp8, Llama 3 405B at 8k tokens, and
    decode M = 1, 16, 128 at one projection (405B's qkv)."""
    (label, _, n, k) = projection_shapes("llama3-405b", 1)[0]
    return [
        *[_case(dt, s, s, s) for dt in ("bf16", "fp16") for s in (8192, 4096)],
        _case("fp8_e4m3", 8192, 8192, 4096, shape="tutorial09"),
        *_projection_cases("bf16", ("llama3-405b",), (8192,)),
        *[_case("bf16", m, n, k, shape=f"{label}.decode") for m in CAMPAIGN_DECODE_M],
    ]


def _standard() -> list[Case]:
    models = tuple(MODEL_SHAPES)
    return [
        *_quick(),
        *[_case(dt, s, s, s) for dt in ("bf16", "fp16") for s in SQUARE_SIZES],
        _case("bf16", 8192, 8192, 8192, "nn"),
        *_projection_cases("bf16", models, TOKENS),
        *_projection_cases("fp8_e4m3", models, (8192,)),
        *_projection_cases("bf16", models, DECODE_M, tag=".decode"),
    ]


def _full() -> list[Case]:
    models = tuple(MODEL_SHAPES)
    return [
        *_standard(),
        *[_case("fp8_e4m3", s, s, s) for s in SQUARE_SIZES],
        *[_case("fp8_e5m2", s, s, s) for s in (4096, 8192)],
        *[_case("bf16", s, s, s, lay) for s in (4096, 8192) for lay in ("nn", "tn", "tt")],
        # Not powers of two; 4095 cannot use TMA (row stride not 16-byte aligned): the fallback.
        *[_case("bf16", s, s, s, shape="odd") for s in (4095, 6144, 12288)],
        *_projection_cases("fp16", models, TOKENS),
        *_projection_cases("fp8_e4m3", models, (4096, 16384)),
        *_projection_cases("bf16", models, (8192,), layout="nn"),
        *_projection_cases("fp8_e4m3", models, DECODE_M, tag=".decode"),
    ]


def _mamf() -> list[Case]:
    # Max achievable matmul FLOPS (stas00/ml-engineering, compute/accelerator/benchmarks/
    # mamf-finder.py): sweep shapes, report the best; a coarse grid of its M, N, K ranges.
    return [_case("bf16", m, n, k, shape="mamf")
            for m in MAMF_GRID for n in MAMF_GRID for k in MAMF_GRID]


# CPU: a handful of small shapes (odd sizes, M/N/K = 1, every layout and dtype) that prove the
# flow through the Triton interpreter in seconds; they measure nothing.
_CPU_QUICK = (
    ("bf16", 64, 64, 64, "nt", "cpu.square"),
    ("fp16", 67, 45, 83, "nn", "cpu.odd"),
    ("fp8_e4m3", 64, 80, 96, "nt", "cpu.fp8"),
)
_CPU_MORE = (
    ("bf16", 1, 96, 64, "nt", "cpu.decode"),
    ("fp32", 129, 33, 17, "tn", "cpu.odd"),
    ("fp16", 96, 64, 48, "tt", "cpu.tt"),
    ("fp8_e5m2", 48, 64, 32, "nt", "cpu.fp8"),
    ("bf16", 40, 1, 1, "nn", "cpu.tiny"),
)


def _cpu_cases(suite: str) -> list[Case]:
    if suite == "mamf":
        return [_case("bf16", m, n, k, "nt", "cpu.mamf") for m in (32, 96) for n in (32, 96)
                for k in (32, 96)]
    rows = {"quick": _CPU_QUICK, "campaign": _CPU_QUICK + _CPU_MORE[:1]}.get(
        suite, _CPU_QUICK + _CPU_MORE)
    return [_case(dt, m, n, k, lay, shape) for dt, m, n, k, lay, shape in rows]


_GPU_SUITES = {"quick": _quick, "standard": _standard, "full": _full, "mamf": _mamf,
               "campaign": _campaign}


def _dedupe(cases: list[Case]) -> list[Case]:
    """Drop repeats (suites build on each other), keeping the first of each key."""
    unique: dict[str, Case] = {}
    for c in cases:
        unique.setdefault(c.key, c)
    return list(unique.values())


@dataclass
class GemmInputs:
    """Operands as the case lays them out, the fp8 scales (0-d fp32 tensors), the output dtype."""

    a: torch.Tensor  # (M, K) view
    b: torch.Tensor  # (K, N) view
    scale_a: torch.Tensor | None
    scale_b: torch.Tensor | None
    out_dtype: torch.dtype


def _scaled_mm_ok(case: Case, device: DeviceInfo) -> bool:
    """torch._scaled_mm runs this case: CUDA sm89+, A row-major and B column-major (layout
    "nt"), every dimension a multiple of 16 (cuBLASLt fp8 requirements), and not e5m2 x e5m2:
    cuBLASLt has no such kernel and torch raises ValueError ("Multiplication of two
    Float8_e5m2 matrices is not supported"; seen on torch 2.11)."""
    p = case.params
    return (case.dtype != "fp8_e5m2"
            and device.kind == "cuda" and hasattr(torch, "_scaled_mm") and device.cc is not None
            and tuple(int(x) for x in device.cc.split(".")) >= (8, 9) and p["layout"] == "nt"
            and all(p[d] % 16 == 0 for d in ("m", "n", "k")))


def _stored(rows: int, cols: int, transposed: bool, gen, device, scale: float) -> torch.Tensor:
    """A (rows, cols) fp32 random operand, stored transposed when asked (then viewed back)."""
    shape = (cols, rows) if transposed else (rows, cols)
    t = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * scale
    return t.t() if transposed else t


def _quantize(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor fp8 quantisation: scale so max |x| maps to the format's largest finite value."""
    amax = x.abs().max().clamp(min=1e-12).float()
    scale = amax / torch.finfo(dtype).max
    return (x / scale).to(dtype), scale


def _dequantized(t: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    t64 = t.to(torch.float32).to(torch.float64)
    return t64 * scale.to(torch.float64) if scale is not None else t64


@register
class GemmWorkload(Workload):
    """C = A @ B; backends "triton" (kernels.gemm.matmul) and "torch" (torch.matmul, or
    torch._scaled_mm for fp8)."""

    name = "gemm"

    def cases(self, suite: str, device: DeviceInfo) -> list[Case]:
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
        if device.kind == "cpu":
            return _cpu_cases(suite)
        return _dedupe(_GPU_SUITES[suite]())

    def backends(self, case: Case, device: DeviceInfo) -> list[str]:
        if case.dtype in FP8 and not _scaled_mm_ok(case, device):
            return [b for b in case.backends if b != "torch"]
        return list(case.backends)

    def setup(self, case: Case, device: DeviceInfo) -> GemmInputs:
        p = case.params
        m, n, k = p["m"], p["n"], p["k"]
        need = self._memory_needed(case)
        if device.memory_bytes and need > device.memory_bytes:
            raise Unsupported(f"needs about {need / 2**30:.1f} GiB, the device has "
                              f"{device.memory_bytes / 2**30:.1f} GiB")
        dev = device.torch_device
        # A fresh generator seeded from the case: new tensors every call, reproducible values.
        gen = torch.Generator(device=dev)
        gen.manual_seed(zlib.crc32(case.key.encode()))
        # randn scaled by K**-1/4 each: C entries ~ N(0, 1), well inside fp16's range.
        s = k ** -0.25
        a = _stored(m, k, p["layout"][0] == "t", gen, dev, s)
        b = _stored(k, n, p["layout"][1] == "t", gen, dev, s)
        dtype = DTYPES[case.dtype]
        if case.dtype in FP8:
            (a, sa), (b, sb) = _quantize(a, dtype), _quantize(b, dtype)
            return GemmInputs(a, b, sa, sb, out_dtype_of(case.dtype))
        return GemmInputs(a.to(dtype), b.to(dtype), None, None, dtype)

    def prepare(self, case: Case, backend: str, inputs: GemmInputs):
        x = inputs
        if backend == "triton":
            from kernels.gemm import matmul

            if x.scale_a is not None:
                return lambda: matmul(x.a, x.b, scale_a=x.scale_a, scale_b=x.scale_b)
            return lambda: matmul(x.a, x.b)
        if backend == "torch":
            if x.scale_a is not None:
                if not hasattr(torch, "_scaled_mm") or x.a.device.type != "cuda":
                    raise Unsupported("torch._scaled_mm needs CUDA (sm89+)")
                return lambda: torch._scaled_mm(x.a, x.b, scale_a=x.scale_a, scale_b=x.scale_b,
                                                out_dtype=x.out_dtype)
            return lambda: torch.matmul(x.a, x.b)
        raise ValueError(f"unknown gemm backend {backend!r}; known: {', '.join(BACKENDS)}")

    def check(self, case: Case, backend: str, inputs: GemmInputs, out) -> Check:
        """Normwise error against an fp64 product of the (dequantised) inputs.

        torch: a fixed bound per output dtype (FIXED_TOLERANCE). triton: at most twice the error
        of torch in the same precision (torch.matmul; torch._scaled_mm for fp8), never below
        `tolerance_floor`; fp8 without _scaled_mm falls back to the fixed bound.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown gemm backend {backend!r}; known: {', '.join(BACKENDS)}")
        outs = [out]
        if backend == "triton":
            baseline = self._torch_baseline(inputs)
            if baseline is not None:
                outs.append(baseline)
        errs = _errors(inputs, outs)
        if len(errs) == 2:
            tol = max(2 * errs[1], tolerance_floor(inputs.out_dtype, case.params["k"]))
        else:
            tol = FIXED_TOLERANCE[inputs.out_dtype]
        return Check(correct=errs[0] <= tol, max_rel_error=errs[0], tolerance=tol)

    def flops(self, case: Case) -> float:
        p = case.params
        return gemm_flops(p["m"], p["n"], p["k"])

    def bytes_moved(self, case: Case) -> float:
        p = case.params
        in_b, out_b = DTYPES[case.dtype].itemsize, out_dtype_of(case.dtype).itemsize
        return gemm_bytes(p["m"], p["n"], p["k"], in_b, out_b)

    def shape(self, case: Case) -> str:
        p = case.params
        label = "" if p["shape"] == "square" else f" {p['shape']}"
        return f"{p['m']}x{p['n']}x{p['k']} {p['layout']}{label}"

    @staticmethod
    def _memory_needed(case: Case) -> float:
        """Device bytes of one setup + check: fp32 staging of A and B, the operands, two outputs
        (ours and torch's), fp64 copies of A and B and one fp64 reference block."""
        p = case.params
        m, n, k = p["m"], p["n"], p["k"]
        in_b, out_b = DTYPES[case.dtype].itemsize, out_dtype_of(case.dtype).itemsize
        ab = m * k + k * n
        return ab * (4 + in_b + 8) + 2 * m * n * out_b + 8 * min(m * n, 2 * REF_BLOCK_ELEMS)

    @staticmethod
    def _torch_baseline(x: GemmInputs) -> torch.Tensor | None:
        """torch's result in the same precision, or None where torch has no such kernel."""
        if x.scale_a is None:
            return torch.matmul(x.a, x.b)
        if x.a.device.type != "cuda" or not hasattr(torch, "_scaled_mm"):
            return None
        try:
            return torch._scaled_mm(x.a, x.b, scale_a=x.scale_a, scale_b=x.scale_b,
                                    out_dtype=x.out_dtype)
        except (RuntimeError, ValueError):  # cuBLASLt refuses this layout, size or dtype pair
            return None  # check() then uses the fixed tolerance


def _errors(x: GemmInputs, outs: list[torch.Tensor]) -> list[float]:
    """base.max_rel_error of each output against the fp64 product, in row blocks so the fp64
    reference never needs more than REF_BLOCK_ELEMS values at once."""
    a64 = _dequantized(x.a, x.scale_a)
    b64 = _dequantized(x.b, x.scale_b)
    m, n = a64.shape[0], b64.shape[1]
    rows = max(1, REF_BLOCK_ELEMS // max(n, 1))
    if rows >= m:
        ref = a64 @ b64
        return [max_rel_error(o, ref) for o in outs]
    scale, err = 0.0, [0.0] * len(outs)
    for r in range(0, m, rows):
        ref = a64[r:r + rows] @ b64
        scale = max(scale, ref.abs().max().item())
        for i, o in enumerate(outs):
            blk = o[r:r + rows].to(torch.float64)
            e = (blk - ref).abs().max().item() if torch.isfinite(blk).all() else math.inf
            err[i] = max(err[i], e)
    return [e / scale if scale > 0 else e for e in err]
