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
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# Importing this module runs kernels/__init__.py first, which sets TRITON_INTERPRET on machines
# without CUDA before the kernels below are decorated.
from kernels import interpreted

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)
INPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, *FP8_DTYPES)
OUTPUT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
PATHS = ("auto", "tma", "portable")

# Environment switch for Hopper warp specialisation (tl.range(..., warp_specialize=True)). Off by
# default: it has crashed the compiler on stable Triton releases (see ENVIRONMENT.md).
WARP_SPECIALIZE_ENV = "COLOSSUS_GEMM_WARP_SPECIALIZE"
# Environment switch for fp8 fast accumulation (never promote the wgmma accumulator to full fp32;
# Triton's sm90 default and tutorial 09's setting). Off by default: see `_dot`.
FP8_FAST_ACCUM_ENV = "COLOSSUS_GEMM_FP8_FAST_ACCUM"

# Max dynamic shared memory per thread block on sm90: 227 KB (CUDA C++ Programming Guide,
# "Technical Specifications per Compute Capability", compute capability 9.0).
HOPPER_SMEM_BYTES = 227 * 1024

# TMA needs 16-byte aligned base addresses and row strides (CUDA driver API,
# cuTensorMapEncodeTiled: globalAddress and globalStrides multiples of 16).
TMA_ALIGN_BYTES = 16

# Programs of the persistent kernel under the interpreter. Assumption: 3 is small and not a
# divisor of typical tile counts, so tests see programs that each walk several tiles.
INTERPRETER_PROGRAMS = 3


@dataclass(frozen=True)
class Tile:
    """One kernel configuration: tile sizes, L2 grouping, pipeline depth, warps."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int
    stages: int
    warps: int
    subtile: bool = False  # TMA kernel only: store C in two halves (less smem, deeper pipeline)

    def config(self, tma: bool) -> triton.Config:
        kw = {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k,
              "GROUP_M": self.group_m}
        if tma:
            kw["EPILOGUE_SUBTILE"] = self.subtile
        return triton.Config(kw, num_warps=self.warps, num_stages=self.stages)


# sm90 space, after tutorial 09's persistent configs (BLOCK_M 128, BLOCK_N 128/256, BLOCK_K
# 64/128, 3-4 stages, 4/8 warps): a 128x256 tile with 8 warps (two warpgroups) is the usual
# best for bf16 at large sizes; BLOCK_K 128 gives fp8 the same 128 bytes of K per row that
# BLOCK_K 64 gives bf16; BLOCK_M 64 serves skinny (decode) M. Configs whose pipeline does not fit
# in shared memory are pruned per dtype before tuning.
HOPPER_TILES: tuple[Tile, ...] = (
    Tile(128, 256, 64, 8, 3, 8),
    Tile(128, 256, 64, 8, 4, 8, subtile=True),
    Tile(128, 128, 64, 8, 4, 8),
    Tile(128, 128, 64, 8, 4, 4),
    Tile(128, 128, 128, 8, 3, 8),
    Tile(128, 256, 128, 8, 3, 8, subtile=True),
    Tile(128, 256, 128, 8, 4, 8, subtile=True),
    Tile(64, 128, 64, 8, 4, 4),
    Tile(64, 256, 64, 8, 4, 4),
)

# Other GPUs (Ampere/Ada style), after tutorial 03's CUDA configs; configs that run out of shared
# memory on a given GPU are skipped by the autotuner.
PORTABLE_TILES: tuple[Tile, ...] = (
    Tile(128, 256, 64, 8, 3, 8),
    Tile(64, 256, 32, 8, 4, 4),
    Tile(128, 128, 32, 8, 4, 4),
    Tile(128, 64, 32, 8, 4, 4),
    Tile(64, 128, 32, 8, 4, 4),
    Tile(64, 32, 32, 8, 5, 2),
    Tile(32, 64, 32, 8, 5, 2),
    Tile(128, 128, 128, 8, 3, 8),  # fp8
)

# The interpreter: one small config (autotuning needs a GPU); GROUP_M 2 and the subtiled epilogue
# so the tests walk the grouping and the split store.
INTERPRETER_TILE = Tile(32, 32, 32, 2, 1, 4, subtile=True)

_KEY = ["M", "N", "K", "A_KMAJOR", "B_KMAJOR", "C_TMA", "ROW_SCALE_A", "COL_SCALE_B",
        "DOT_PRECISION", "FP8_PRECISE"]


def _configs(tiles: tuple[Tile, ...], tma: bool) -> list[triton.Config]:
    if interpreted():
        return [INTERPRETER_TILE.config(tma)]
    return [t.config(tma) for t in tiles]


def smem_bytes(tile: Tile, in_bytes: int, out_bytes: int) -> int:
    """Shared memory of the TMA kernel: `stages` buffers of an A and a B tile, plus the C tile
    (or half of it when subtiled) staged for the TMA store."""
    ab = tile.stages * (tile.block_m + tile.block_n) * tile.block_k * in_bytes
    c_cols = tile.block_n // 2 if tile.subtile else tile.block_n
    return ab + tile.block_m * c_cols * out_bytes


def _tile_of(cfg: triton.Config) -> Tile:
    kw = cfg.kwargs
    return Tile(kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"], kw["GROUP_M"], cfg.num_stages,
                cfg.num_warps, kw.get("EPILOGUE_SUBTILE", False))


def _prune_hopper(configs, named_args, **kwargs):
    """Drop configs that cannot fit in sm90 shared memory; for skinny M keep the short tiles."""
    in_b = named_args["a_ptr"].element_size()
    out_b = named_args["c_ptr"].element_size()
    fit = [c for c in configs if smem_bytes(_tile_of(c), in_b, out_b) <= HOPPER_SMEM_BYTES]
    fit = fit or list(configs)
    if named_args["M"] <= 64:
        smallest = min(c.kwargs["BLOCK_M"] for c in fit)
        fit = [c for c in fit if c.kwargs["BLOCK_M"] == smallest]
    return fit


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M: tl.constexpr):
    # Grouped ordering (tutorial 03): walk GROUP_M row-tiles down a column of tiles before moving
    # right, so consecutive tiles reuse the same B tiles while they are still in L2.
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = tile_id // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (tile_id % group_size_m)
    pid_n = (tile_id % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def _apply_scales(acc, scale_a_ptr, scale_b_ptr, off_m, off_n, M, N,
                  ROW_SCALE_A: tl.constexpr, COL_SCALE_B: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # C = diag(sa) (A B) diag(sb): the scales commute with the K sum, so apply them once, here.
    if ROW_SCALE_A:
        rows = off_m + tl.arange(0, BLOCK_M)
        acc = acc * tl.load(scale_a_ptr + rows, mask=rows < M, other=0.0)[:, None]
    else:
        acc = acc * tl.load(scale_a_ptr)
    if COL_SCALE_B:
        cols = off_n + tl.arange(0, BLOCK_N)
        acc = acc * tl.load(scale_b_ptr + cols, mask=cols < N, other=0.0)[None, :]
    else:
        acc = acc * tl.load(scale_b_ptr)
    return acc


@triton.jit
def _downcast(acc, out_ty: tl.constexpr, INTERPRET: tl.constexpr):
    # The interpreter truncates fp32 -> bf16 (GPUs round to nearest even), which doubles the
    # output error; there, round by hand: add half an ulp (ties to even) and drop 16 bits.
    if INTERPRET:
        if out_ty == tl.bfloat16:
            bits = acc.to(tl.uint32, bitcast=True)
            bits = bits + 0x7FFF + ((bits >> 16) & 1)
            return (bits >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return acc.to(out_ty)


@triton.jit
def _store_tile(c_out, acc, off_m, off_n, M, N, stride_cm, C_TMA: tl.constexpr,
                INTERPRET: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # c_out is the C descriptor when C_TMA, else the C pointer (rows of stride_cm, unit columns).
    if C_TMA:
        c_out.store([off_m, off_n], _downcast(acc, c_out.dtype, INTERPRET))
    else:
        rows = (off_m + tl.arange(0, BLOCK_M)).to(tl.int64)
        cols = off_n + tl.arange(0, BLOCK_N)
        ptrs = c_out + rows[:, None] * stride_cm + cols[None, :]
        mask = (rows[:, None] < M) & (cols[None, :] < N)
        tl.store(ptrs, _downcast(acc, c_out.dtype.element_ty, INTERPRET), mask=mask)


@triton.jit
def _dot(a, b, acc, DOT_PRECISION: tl.constexpr, FP8_PRECISE: tl.constexpr,
         INTERPRET: tl.constexpr):
    # The interpreter's bf16 dot multiplies raw bit patterns (triton-lang/triton#11584): there,
    # and only there, upcast bf16 operands to fp32 (exact: every bf16 is an fp32).
    if INTERPRET:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    if FP8_PRECISE:
        # sm90 fp8 wgmma accumulates with reduced precision (DeepGEMM README: ~14 bits); Triton
        # then adds into the fp32 accumulator once per BLOCK_K instead of never (its sm90
        # default, max_num_imprecise_acc = 2**30), as cuBLAS does without fast accumulation.
        return tl.dot(a, b, acc, input_precision=DOT_PRECISION,
                      max_num_imprecise_acc=a.shape[1])
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.autotune(configs=_configs(HOPPER_TILES, tma=True), key=_KEY + ["WARP_SPECIALIZE"],
                 prune_configs_by={"early_config_prune": _prune_hopper})
@triton.jit
def _matmul_tma_kernel(a_ptr, b_ptr, c_ptr, scale_a_ptr, scale_b_ptr, M, N, K,
                       stride_a, stride_b, stride_c,
                       A_KMAJOR: tl.constexpr, B_KMAJOR: tl.constexpr, C_TMA: tl.constexpr,
                       HAS_SCALE: tl.constexpr, ROW_SCALE_A: tl.constexpr,
                       COL_SCALE_B: tl.constexpr, INTERPRET: tl.constexpr,
                       DOT_PRECISION: tl.constexpr, FP8_PRECISE: tl.constexpr,
                       NUM_SMS: tl.constexpr,
                       WARP_SPECIALIZE: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       GROUP_M: tl.constexpr, EPILOGUE_SUBTILE: tl.constexpr):
    # A is (M, K): K-major means rows of K contiguous; otherwise A is stored as its transpose
    # (K, M) and each tile is transposed after the load. B (K, N) likewise, K-major = stored (N, K).
    # stride_a/b/c: the one non-unit stride of each operand as stored.
    if A_KMAJOR:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[M, K], strides=[stride_a, 1],
                                           block_shape=[BLOCK_M, BLOCK_K])
    else:
        a_desc = tl.make_tensor_descriptor(a_ptr, shape=[K, M], strides=[stride_a, 1],
                                           block_shape=[BLOCK_K, BLOCK_M])
    if B_KMAJOR:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[N, K], strides=[stride_b, 1],
                                           block_shape=[BLOCK_N, BLOCK_K])
    else:
        b_desc = tl.make_tensor_descriptor(b_ptr, shape=[K, N], strides=[stride_b, 1],
                                           block_shape=[BLOCK_K, BLOCK_N])
    C_BLOCK_N: tl.constexpr = BLOCK_N // 2 if EPILOGUE_SUBTILE else BLOCK_N
    if C_TMA:
        c_out = tl.make_tensor_descriptor(c_ptr, shape=[M, N], strides=[stride_c, 1],
                                          block_shape=[BLOCK_M, C_BLOCK_N])
    else:
        c_out = c_ptr

    start_pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    k_tiles = tl.cdiv(K, BLOCK_K)
    num_tiles = num_pid_m * num_pid_n
    # A separate epilogue tile counter, as in tutorial 09: it keeps the prologue and the
    # epilogue of the flattened loop independent for the software pipeliner.
    tile_id_c = start_pid - NUM_SMS

    # Warp specialisation is only enabled on Hopper (TMA) and Hopper warpspec does not work with
    # a flattened loop (Triton tutorial 09: `flatten = False if (warp_specialize and
    # is_hopper()) else True`), so flatten exactly when not warp-specialising.
    for tile_id in tl.range(start_pid, num_tiles, NUM_SMS, flatten=not WARP_SPECIALIZE,
                            warp_specialize=WARP_SPECIALIZE):
        pid_m, pid_n = _tile_coords(tile_id, num_pid_m, num_pid_n, GROUP_M)
        off_m = pid_m * BLOCK_M
        off_n = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for ki in range(k_tiles):
            off_k = ki * BLOCK_K
            # Out-of-bounds parts of a tile (M, N, K not multiples of the block) load as zeros.
            if A_KMAJOR:
                a = a_desc.load([off_m, off_k])
            else:
                a = a_desc.load([off_k, off_m]).T
            if B_KMAJOR:
                b = b_desc.load([off_n, off_k]).T
            else:
                b = b_desc.load([off_k, off_n])
            acc = _dot(a, b, acc, DOT_PRECISION, FP8_PRECISE, INTERPRET)

        tile_id_c += NUM_SMS
        pid_m, pid_n = _tile_coords(tile_id_c, num_pid_m, num_pid_n, GROUP_M)
        off_cm = pid_m * BLOCK_M
        off_cn = pid_n * BLOCK_N
        if HAS_SCALE:
            acc = _apply_scales(acc, scale_a_ptr, scale_b_ptr, off_cm, off_cn, M, N,
                                ROW_SCALE_A, COL_SCALE_B, BLOCK_M, BLOCK_N)
        if EPILOGUE_SUBTILE:
            # Two BLOCK_M x BLOCK_N/2 stores: half the smem for the C staging buffer.
            acc3 = tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1))
            acc0, acc1 = tl.split(acc3)
            _store_tile(c_out, acc0, off_cm, off_cn, M, N, stride_c, C_TMA, INTERPRET,
                        BLOCK_M, C_BLOCK_N)
            _store_tile(c_out, acc1, off_cm, off_cn + C_BLOCK_N, M, N, stride_c, C_TMA,
                        INTERPRET, BLOCK_M, C_BLOCK_N)
        else:
            _store_tile(c_out, acc, off_cm, off_cn, M, N, stride_c, C_TMA, INTERPRET, BLOCK_M,
                        BLOCK_N)


@triton.autotune(configs=_configs(PORTABLE_TILES, tma=False), key=_KEY)
@triton.jit
def _matmul_portable_kernel(a_ptr, b_ptr, c_ptr, scale_a_ptr, scale_b_ptr, M, N, K,
                            stride_am, stride_ak, stride_bk, stride_bn, stride_cm,
                            A_KMAJOR: tl.constexpr, B_KMAJOR: tl.constexpr, C_TMA: tl.constexpr,
                            HAS_SCALE: tl.constexpr, ROW_SCALE_A: tl.constexpr,
                            COL_SCALE_B: tl.constexpr, INTERPRET: tl.constexpr,
                            DOT_PRECISION: tl.constexpr, FP8_PRECISE: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                            GROUP_M: tl.constexpr):
    # Any strides. A_KMAJOR/B_KMAJOR/C_TMA are unused here; they only keep the autotune key
    # (shared with the TMA kernel) meaningful.
    pid = tl.program_id(axis=0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pid_m, pid_n = _tile_coords(pid, num_pid_m, num_pid_n, GROUP_M)
    off_m = pid_m * BLOCK_M
    off_n = pid_n * BLOCK_N
    # Rows/columns past the edge read row/column 0 (always valid) and are masked at the store,
    # so the loads need only a K mask. int64: large operands overflow 32-bit offsets.
    rows = off_m + tl.arange(0, BLOCK_M)
    cols = off_n + tl.arange(0, BLOCK_N)
    rows = tl.where(rows < M, rows, 0).to(tl.int64)
    cols = tl.where(cols < N, cols, 0).to(tl.int64)
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rows[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + cols[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for ki in range(tl.cdiv(K, BLOCK_K)):
        k_left = K - ki * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = _dot(a, b, acc, DOT_PRECISION, FP8_PRECISE, INTERPRET)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if HAS_SCALE:
        acc = _apply_scales(acc, scale_a_ptr, scale_b_ptr, off_m, off_n, M, N,
                            ROW_SCALE_A, COL_SCALE_B, BLOCK_M, BLOCK_N)
    _store_tile(c_ptr, acc, off_m, off_n, M, N, stride_cm, False, INTERPRET, BLOCK_M, BLOCK_N)


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


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


def _aligned(stride: int, t: torch.Tensor) -> bool:
    return (stride * t.element_size()) % TMA_ALIGN_BYTES == 0


def tma_layout(a: torch.Tensor, b: torch.Tensor) -> tuple[bool, bool] | None:
    """(A K-major, B K-major) when both operands can be read through TMA descriptors, else None.

    An operand qualifies when one of its strides is 1, the other (its row stride as stored) and
    its base address are 16-byte aligned. K-major is preferred when both would do (size-1 dims).
    """
    if a.data_ptr() % TMA_ALIGN_BYTES or b.data_ptr() % TMA_ALIGN_BYTES:
        return None
    if a.stride(1) == 1 and _aligned(a.stride(0), a):
        a_k = True
    elif a.stride(0) == 1 and _aligned(a.stride(1), a):
        a_k = False
    else:
        return None
    if b.stride(0) == 1 and _aligned(b.stride(1), b):
        b_k = True
    elif b.stride(1) == 1 and _aligned(b.stride(0), b):
        b_k = False
    else:
        return None
    if a.dtype in FP8_DTYPES and not (a_k and b_k):
        return None  # sm90 fp8 wgmma reads both operands K-major (PTX ISA, wgmma.mma_async)
    return a_k, b_k


@functools.cache
def _cuda_facts_at(index: int) -> tuple[int, int]:
    p = torch.cuda.get_device_properties(index)
    return p.major, p.multi_processor_count


def _cuda_facts(device: torch.device) -> tuple[int, int]:
    """(major compute capability, SM count) of a CUDA device."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _cuda_facts_at(index)


def _has_tma(device: torch.device) -> bool:
    if not hasattr(tl, "make_tensor_descriptor"):
        return False
    if interpreted():
        return True
    major, _ = _cuda_facts(device)
    return major == 9  # our TMA configs are tuned for sm90 only


def select_path(a: torch.Tensor, b: torch.Tensor) -> str:
    """The kernel `matmul(a, b)` runs: "tma" (Hopper, or the interpreter) or "portable".

    Called on the operands as the kernel sees them: fp8 operands are first made K-major (see
    `matmul`), so for fp8 call it on `k_major(a, b)`.
    """
    return "tma" if _has_tma(a.device) and tma_layout(a, b) is not None else "portable"


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


_tls = threading.local()


def _tma_workspace(size: int, alignment: int, stream) -> torch.Tensor:
    return torch.empty(size, device="cuda", dtype=torch.int8)


def _ensure_allocator() -> None:
    # Device-side descriptors need global scratch from triton.set_allocator. Triton keeps the
    # allocator in a ContextVar, so set it once per thread.
    if not getattr(_tls, "allocator_set", False):
        triton.set_allocator(_tma_workspace)
        _tls.allocator_set = True


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
    if fp8:
        a, b = k_major(a, b)

    chosen = select_path(a, b) if path == "auto" else path
    layout = tma_layout(a, b)
    if chosen == "tma" and (layout is None or not _has_tma(a.device)):
        raise ValueError("matmul: path='tma' needs a TMA-capable device (sm90 or the "
                         "interpreter) and 16-byte aligned operands; use path='auto'")

    c = torch.empty((M, N), dtype=c_dtype, device=a.device)
    if a.dtype == torch.float32 and not interpreted():
        precision = "tf32" if tf32_allowed() else "ieee"
    else:
        precision = "ieee"  # ignored by 16/8-bit dots; the interpreter's fp32 dot is exact
    flags = dict(HAS_SCALE=fp8, ROW_SCALE_A=row_a, COL_SCALE_B=col_b,
                 INTERPRET=interpreted(), DOT_PRECISION=precision,
                 FP8_PRECISE=fp8 and os.environ.get(FP8_FAST_ACCUM_ENV) != "1")
    if chosen == "tma":
        a_k, b_k = layout
        if interpreted():
            num_sms = INTERPRETER_PROGRAMS
        else:
            _ensure_allocator()
            num_sms = _cuda_facts(a.device)[1]
        c_tma = c.data_ptr() % TMA_ALIGN_BYTES == 0 and _aligned(c.stride(0), c)
        grid = lambda meta: (min(num_sms, triton.cdiv(M, meta["BLOCK_M"])
                                 * triton.cdiv(N, meta["BLOCK_N"])),)
        _matmul_tma_kernel[grid](
            a, b, c, scale_a, scale_b, M, N, K,
            a.stride(0) if a_k else a.stride(1), b.stride(1) if b_k else b.stride(0),
            c.stride(0), A_KMAJOR=a_k, B_KMAJOR=b_k, C_TMA=c_tma, NUM_SMS=num_sms,
            WARP_SPECIALIZE=_warp_specialize(a.device), **flags)
    else:
        grid = lambda meta: (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)
        _matmul_portable_kernel[grid](
            a, b, c, scale_a, scale_b, M, N, K,
            a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0),
            A_KMAJOR=a.stride(1) == 1, B_KMAJOR=b.stride(0) == 1, C_TMA=False, **flags)
    return c
