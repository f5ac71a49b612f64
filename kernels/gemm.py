"""GEMM: C = (A * scale_a) @ (B * scale_b) in Triton, fp32 accumulation.

Two kernels, one entry point (`matmul`):

- "tma": a persistent kernel for Hopper (sm90). One program per SM walks the output tiles in
  grouped order (GROUP_M row-tiles share B tiles in L2) and loads A and B through device-side
  tensor descriptors (TMA); C is stored through a descriptor too when its row stride allows.
  Modelled on Triton's tutorial 09-persistent-matmul (triton-lang/triton, python/tutorials).
- "portable": a plain tiled kernel with pointer loads and masks (tutorial 03-matrix-
  multiplication). It runs on every other GPU and is the fallback on Hopper when an operand
  cannot be described for TMA (base or row stride not 16-byte aligned, odd views).

Without a GPU both kernels run through the Triton interpreter with one small config each (the
autotuner cannot benchmark there). The interpreter's bf16 `tl.dot` is wrong
(triton-lang/triton#11584), so under the interpreter bf16 operands are upcast to fp32 before the
dot, and fp32 -> bf16 stores are rounded by hand (the interpreter truncates); the INTERPRET
constexpr switches both, so compiled kernels never do either.

fp8 (e4m3, e5m2) takes scales, applied once to the fp32 accumulator: per tensor, or per row of A
and per column of B. Decision: scales are required for fp8 (pass 1.0 for none: a forgotten scale
silently gives results off by the quantisation factor) and refused for other dtypes.

Configurations are plain data in kernels/gemm_configs.py (the sm90 tables chosen by
`python -m kernels.inspect`); the JIT functions are in kernels/gemm_kernel.py. On sm90 every
operand goes through TMA: one whose row stride or base is not 16-byte aligned (K = 4095 bf16, odd
views) is first copied into padded, aligned storage, inside the call (the copy counts in our
time); the portable kernel runs there only when asked (`path="portable"`).
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton

# Importing this module runs kernels/__init__.py first, which sets TRITON_INTERPRET on machines
# without CUDA before the kernels below are decorated.
from kernels import host, interpreted
from kernels.gemm_configs import (
    HOPPER_TILES,
    INTERPRETER_TILE,
    PORTABLE_TILES,
    Tile,
    family,
    hopper_tiles,
    smem_bytes,
    tile_of,
)
from kernels.gemm_kernel import matmul_portable_kernel, matmul_tma_kernel

__all__ = ["matmul", "select_path", "tma_layout", "k_major", "tf32_allowed", "smem_bytes", "Tile"]

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, *FP8_DTYPES)
OUTPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
PATHS = ("auto", "tma", "portable")

# Environment switch for Hopper warp specialisation (tl.range(..., warp_specialize=True)). Off by
# default: it has crashed the compiler on stable Triton releases.
WARP_SPECIALIZE_ENV = "COLOSSUS_GEMM_WARP_SPECIALIZE"
# Environment switch for fp8 fast accumulation (never promote the wgmma accumulator to full fp32;
# Triton's sm90 default and tutorial 09's setting). Off by default: see gemm_kernel._dot.
FP8_FAST_ACCUM_ENV = "COLOSSUS_GEMM_FP8_FAST_ACCUM"

# Programs of the persistent kernel under the interpreter. Assumption: 3 is small and not a
# divisor of typical tile counts, so tests see programs that each walk several tiles.
INTERPRETER_PROGRAMS = 3

# The autotune key. Triton appends every tensor argument's dtype to it.
KEY = ["M", "N", "K", "A_KMAJOR", "B_KMAJOR", "C_TMA", "ROW_SCALE_A", "COL_SCALE_B",
       "DOT_PRECISION", "FP8_PRECISE"]
TMA_KEY = KEY + ["WARP_SPECIALIZE"]


def _skinny(fam: str):
    """The autotuner's early prune for one family's tuner: for M <= 64 keep the BLOCK_M = 64
    tiles, else the others (gemm_configs.hopper_tiles). Triton passes the positional arguments
    as `named_args` and the keyword ones (the constexpr flags) separately, so this needs M only.
    """

    def prune(configs, named_args, **kwargs):
        keep = set(hopper_tiles(fam, named_args["M"]))
        return [c for c in configs if tile_of(c) in keep]

    return prune


def _tuned(kernel, configs, key, prune=None):
    prune_by = {"early_config_prune": prune} if prune else None
    return triton.autotune(configs=configs, key=key, prune_configs_by=prune_by)(kernel)


if interpreted():  # one config: the autotuner cannot benchmark without a GPU
    _TMA = {f: _tuned(matmul_tma_kernel, [INTERPRETER_TILE.config(True)], TMA_KEY)
            for f in HOPPER_TILES}
    _PORTABLE = _tuned(matmul_portable_kernel, [INTERPRETER_TILE.config(False)], KEY)
else:
    _TMA = {f: _tuned(matmul_tma_kernel, [t.config(True) for t in tiles], TMA_KEY, _skinny(f))
            for f, tiles in HOPPER_TILES.items()}
    _PORTABLE = _tuned(matmul_portable_kernel, [t.config(False) for t in PORTABLE_TILES], KEY)


def _check_operands(a, b) -> None:
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"matmul: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"matmul: {name} must be 2-D, got shape {tuple(t.shape)}")
        if t.dtype not in INPUT_DTYPES:
            raise TypeError(f"matmul: unsupported dtype {t.dtype} for {name}; supported: "
                            + ", ".join(str(d) for d in INPUT_DTYPES))
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: a and b must have the same dtype, got {a.dtype} and {b.dtype}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: inner dimensions differ: a is {tuple(a.shape)}, "
                         f"b is {tuple(b.shape)} (need a (M, K) and b (K, N))")
    if a.device != b.device:
        raise ValueError(f"matmul: a and b are on different devices ({a.device}, {b.device})")
    if a.device.type != "cuda" and not interpreted():
        raise ValueError(f"matmul: tensors on {a.device} need the Triton interpreter "
                         "(TRITON_INTERPRET=1 before importing kernels) or a CUDA device")


def _scale_tensor(name: str, s, length: int, dim: int, device) -> tuple[torch.Tensor, bool]:
    """A scale as a contiguous fp32 tensor, and whether it is per row (a) / per column (b).

    Accepted: a number, a one-element tensor (per tensor), or `length` values shaped (length,),
    or (length, 1) for scale_a / (1, length) for scale_b (torch._scaled_mm's row-wise shapes).
    """
    if isinstance(s, bool) or not isinstance(s, (int, float, torch.Tensor)):
        raise TypeError(f"matmul: {name} must be a number or a tensor, got {type(s).__name__}")
    if not isinstance(s, torch.Tensor):
        return torch.full((1,), float(s), dtype=torch.float32, device=device), False
    if not s.dtype.is_floating_point:
        raise TypeError(f"matmul: {name} must be floating point, got {s.dtype}")
    if s.device != device:
        raise ValueError(f"matmul: {name} is on {s.device}, the operands on {device}")
    vector_shapes = [(length,), (length, 1) if dim == 0 else (1, length)]
    if s.numel() == 1:
        per_vector = False
    elif tuple(s.shape) in vector_shapes:
        per_vector = True
    else:
        raise ValueError(f"matmul: {name} has shape {tuple(s.shape)}; expected one element or "
                         f"{' or '.join(str(v) for v in vector_shapes)}")
    return s.reshape(-1).to(torch.float32).contiguous(), per_vector


def _out_dtype(in_dtype: torch.dtype, out_dtype) -> torch.dtype:
    if out_dtype is None:
        return torch.bfloat16 if in_dtype in FP8_DTYPES else in_dtype
    if not isinstance(out_dtype, torch.dtype):
        raise TypeError(f"matmul: out_dtype must be a torch.dtype, got {type(out_dtype).__name__}")
    if out_dtype not in OUTPUT_DTYPES:
        raise ValueError(f"matmul: unsupported out_dtype {out_dtype}; supported: "
                         + ", ".join(str(d) for d in OUTPUT_DTYPES))
    return out_dtype



def _row_stride_ok(stride: int, t: torch.Tensor) -> bool:
    return (stride * t.element_size()) % host.TMA_ALIGN_BYTES == 0


def tma_layout(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, bool] | None:
    """(A K-major, B K-major) when both operands can be read through TMA descriptors as they are
    stored, else None (matmul then pads them, see `tma_operands`).

    An operand qualifies when one of its strides is 1, the other (its row stride as stored) and
    its base address are 16-byte aligned. K-major is preferred when both would do (size-1 dims).
    """
    if a.data_ptr() % host.TMA_ALIGN_BYTES or b.data_ptr() % host.TMA_ALIGN_BYTES:
        return None
    if a.stride(1) == 1 and _row_stride_ok(a.stride(0), a):
        a_k = True
    elif a.stride(0) == 1 and _row_stride_ok(a.stride(1), a):
        a_k = False
    else:
        return None
    if b.stride(0) == 1 and _row_stride_ok(b.stride(1), b):
        b_k = True
    elif b.stride(1) == 1 and _row_stride_ok(b.stride(0), b):
        b_k = False
    else:
        return None
    if a.dtype in FP8_DTYPES and not (a_k and b_k):
        return None  # sm90 fp8 wgmma reads both operands K-major (PTX ISA, wgmma.mma_async)
    return a_k, b_k


def _pad_operand(t: torch.Tensor, k_dim: int) -> torch.Tensor:
    """t (2-D) in TMA-describable storage: t itself if TMA can read it as stored, else a padded
    copy (host.pad_rows) that keeps t's contiguous dimension, or makes K (dimension k_dim)
    contiguous when neither or both strides are 1."""
    rows_ok = t.stride(1) == 1 and _row_stride_ok(t.stride(0), t)
    cols_ok = t.stride(0) == 1 and _row_stride_ok(t.stride(1), t)
    if t.data_ptr() % host.TMA_ALIGN_BYTES == 0 and (rows_ok or cols_ok):
        return t
    unit = [d for d in (0, 1) if t.stride(d) == 1]
    inner = unit[0] if len(unit) == 1 else k_dim  # the dimension to keep contiguous
    return host.pad_rows(t) if inner == 1 else host.pad_rows(t.t()).t()


def tma_operands(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """a and b as the TMA kernel reads them: fp8 K-major (`k_major`), then each operand that TMA
    cannot describe copied into padded, 16-byte aligned storage (same shape and values)."""
    if a.dtype in FP8_DTYPES:
        a, b = k_major(a, b)
    return _pad_operand(a, 1), _pad_operand(b, 0)


def _has_tma(device: torch.device) -> bool:
    if not host.has_tensor_descriptors():
        return False
    return interpreted() or host.is_sm90(device)  # our TMA configs are tuned for sm90 only


def select_path(a: torch.Tensor, b: torch.Tensor) -> str:
    """The kernel `matmul(a, b)` runs: "tma" (Hopper, or the interpreter: every operand, padded
    if needed) or "portable" (other GPUs)."""
    return "tma" if _has_tma(a.device) else "portable"


def k_major(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A as (M, K) row-major and B with K contiguous (stored (N, K)); copies only if needed.

    fp8 needs this on Hopper (wgmma takes 8-bit operands K-major only); the copy is part of the
    call, so benchmark fp8 with B already K-major (layout "nt").
    """
    if a.stride(1) != 1:
        a = a.contiguous()
    if b.stride(0) != 1:
        b = b.t().contiguous().t()
    return a, b


def _warp_specialize(device: torch.device) -> bool:
    return (not interpreted() and os.environ.get(WARP_SPECIALIZE_ENV) == "1"
            and _has_tma(device))


def tf32_allowed(settings=None) -> bool:
    """Whether torch lets fp32 matmuls use TF32. torch >= 2.9 has `fp32_precision` ("tf32",
    "ieee" or "none"; it also reflects the legacy flag and inherits torch.backends'), and then
    reading the legacy `allow_tf32` raises RuntimeError if anything set the new API; older torch
    has only `allow_tf32`. `settings` defaults to torch.backends.cuda.matmul (tests pass fakes)."""
    m = torch.backends.cuda.matmul if settings is None else settings
    precision = getattr(m, "fp32_precision", None)
    if precision is not None:
        return precision == "tf32"
    return bool(m.allow_tf32)


def matmul(a: torch.Tensor, b: torch.Tensor, *, scale_a=None, scale_b=None, out_dtype=None,
           path: str = "auto") -> torch.Tensor:
    """C = (A * scale_a) @ (B * scale_b) for A (M, K), B (K, N); C is (M, N), row-major.

    dtypes: fp16, bf16, fp32 (out: the input dtype), fp8 e4m3/e5m2 (out: bf16), all with fp32
    accumulation; `out_dtype` may pick fp16, bf16 or fp32 instead. Any shapes and strides.
    fp8 requires `scale_a` and `scale_b`: numbers or one-element tensors (per tensor), or
    per-row (M,)/(M, 1) for a and per-column (N,)/(1, N) for b. Other dtypes refuse scales.
    `path` forces a kernel ("tma" or "portable"); "auto" picks TMA where it can (Hopper).
    fp32 on a GPU uses TF32 exactly when torch's cuBLAS matmul would (see tf32_allowed).
    """
    _check_operands(a, b)
    if path not in PATHS:
        raise ValueError(f"matmul: path must be one of {PATHS}, got {path!r}")
    fp8 = a.dtype in FP8_DTYPES
    if fp8 and (scale_a is None or scale_b is None):
        raise ValueError("matmul: fp8 inputs need scale_a and scale_b (pass 1.0 for unscaled)")
    if not fp8 and (scale_a is not None or scale_b is not None):
        raise ValueError(f"matmul: scales apply to fp8 inputs only, got {a.dtype}")
    c_dtype = _out_dtype(a.dtype, out_dtype)
    M, K = a.shape
    N = b.shape[1]
    row_a = col_b = False
    if fp8:
        scale_a, row_a = _scale_tensor("scale_a", scale_a, M, 0, a.device)
        scale_b, col_b = _scale_tensor("scale_b", scale_b, N, 1, a.device)
    if M == 0 or N == 0 or K == 0:
        return torch.zeros((M, N), dtype=c_dtype, device=a.device)  # an empty sum is 0

    chosen = select_path(a, b) if path == "auto" else path
    if chosen == "tma" and not _has_tma(a.device):
        raise ValueError("matmul: path='tma' needs a TMA-capable device (sm90 or the "
                         "interpreter); use path='auto'")
    c = torch.empty((M, N), dtype=c_dtype, device=a.device)
    tf32 = a.dtype == torch.float32 and not interpreted() and tf32_allowed()
    # "ieee" is ignored by 16/8-bit dots; the interpreter's fp32 dot is exact
    fp8_precise = fp8 and os.environ.get(FP8_FAST_ACCUM_ENV) != "1"
    flags = dict(HAS_SCALE=fp8, ROW_SCALE_A=row_a, COL_SCALE_B=col_b,
                 INTERPRET=interpreted(), DOT_PRECISION="tf32" if tf32 else "ieee",
                 FP8_PRECISE=fp8_precise)
    if chosen == "tma":
        a, b = tma_operands(a, b)
        a_k, b_k = tma_layout(a, b)
        if interpreted():
            num_sms = INTERPRETER_PROGRAMS
        else:
            host.ensure_allocator()
            num_sms = host.sm_count(a.device)
        c_tma = host.aligned(c)
        grid = lambda meta: (min(num_sms, triton.cdiv(M, meta["BLOCK_M"])
                                 * triton.cdiv(N, meta["BLOCK_N"])),)
        kernel = _TMA[family(a.element_size(), fp8_precise, tf32)]
        with _on(a.device):
            kernel[grid](
                a, b, c, scale_a, scale_b, M, N, K,
                a.stride(0) if a_k else a.stride(1), b.stride(1) if b_k else b.stride(0),
                c.stride(0), A_KMAJOR=a_k, B_KMAJOR=b_k, C_TMA=c_tma, NUM_SMS=num_sms,
                WARP_SPECIALIZE=_warp_specialize(a.device), **flags)
    else:
        if fp8:
            a, b = k_major(a, b)
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
        with _on(a.device):
            _PORTABLE[grid](
                a, b, c, scale_a, scale_b, M, N, K,
                a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0),
                A_KMAJOR=a.stride(1) == 1, B_KMAJOR=b.stride(0) == 1, C_TMA=False, **flags)
    return c


def _on(device: torch.device):
    """Launch on the operands' device (Triton launches on torch's current device and stream)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
