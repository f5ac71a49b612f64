"""Flash attention forward and backward in Triton (FlashAttention-2 algorithm).

`attention(q, k, v, *, causal=False, sm_scale=None)` takes (batch, heads, seq, head_dim) tensors in
bf16, fp16 or fp32, head_dim 64, 128 or 256, any sequence lengths (q and kv may differ), and
grouped-query attention (k and v with kv_heads dividing q's heads). It is differentiable.

Design (FlashAttention-2, Dao 2023, arXiv:2307.08691; layout after Triton tutorial 06):
- forward: one program per (q block, batch*head); online softmax in base 2 over kv blocks; saves
  the log-sum-exp (base 2) per query row for the backward.
- backward: a preprocess kernel for delta = rowsum(dO * O); a dK/dV kernel with one program per
  (kv block, batch*kv_head) that loops over the q heads sharing that kv head and over q blocks,
  recomputing P from the saved log-sum-exp (so GQA's dK/dV sums happen in registers: no atomics,
  deterministic); a dQ kernel with one program per (q block, batch*head) looping over kv blocks.
- causal masking is aligned bottom-right, as in FlashAttention >= 2.1: query i sees key j iff
  j <= i + (seq_k - seq_q). With equal lengths this is the usual lower triangle. When seq_q >
  seq_k the first seq_q - seq_k query rows see no key: their output and gradients are zero.
- tiles move by tensor descriptors (TMA) on Hopper and by masked pointer loads elsewhere; both
  are one kernel with a constexpr switch, and both run in the interpreter (the tests use both).
- kernels: attention_fwd.py, attention_bwd.py (Triton JIT); configurations: attention_configs.py
  (the sm90 tables chosen by `python -m kernels.inspect`); this module: validation, launching,
  autograd.
- bf16 under the Triton interpreter: operands are upcast to fp32 before tl.dot (the interpreter's
  bf16 dot is wrong, triton-lang/triton#11584); on a GPU the dots take bf16 directly.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton

# the package __init__ (run before this module) sets TRITON_INTERPRET when there is no GPU
from kernels import host, interpreted
from kernels.attention_bwd import attn_bwd_delta, attn_bwd_dkdv, attn_bwd_dq
from kernels.attention_configs import (
    CONFIGS,
    CPU_CONFIGS,
    DELTA_BLOCK_M,
    DELTA_WARPS,
    FALLBACK_CONFIGS,
    BlockConfig,
    config_fits,
    gpu_configs,
)
from kernels.attention_fwd import attn_fwd

__all__ = ["attention", "attention_impl", "default_scale", "validate", "CONFIGS", "CPU_CONFIGS",
           "FALLBACK_CONFIGS", "BlockConfig", "config_fits", "gpu_configs"]

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
HEAD_DIMS = (64, 128, 256)


# ----------------------------------------------------------------------------------------------
# Launching
# ----------------------------------------------------------------------------------------------


def arch_of(device: torch.device) -> str:
    return "sm90" if host.is_sm90(device) else "portable"


_TUNERS: dict[tuple, object] = {}
_KERNELS = {"fwd": attn_fwd, "dkdv": attn_bwd_dkdv, "dq": attn_bwd_dq, "delta": attn_bwd_delta}
_TUNE_KEY = ["SEQ_Q", "SEQ_K", "HEAD_DIM", "CAUSAL", "USE_DESC", "F32_DOT"]
# The best tile also depends on how many programs run (batch x heads) and on GQA sharing, so
# shapes differing only in batch, heads or group must not share a tuned config. fwd and dq take
# BATCH for this key alone; dkdv runs batch x KV_H programs and its Q_ROWS (b*h*seq_q) fixes batch.
# Triton appends every tensor argument's dtype to the key.
TUNE_KEYS = {
    "fwd": _TUNE_KEY + ["BATCH", "H", "GROUP"],
    "dkdv": _TUNE_KEY + ["H", "KV_H", "GROUP", "Q_ROWS"],
    "dq": _TUNE_KEY + ["BATCH", "H", "GROUP"],
}


def launch_configs(kind: str, arch: str, smem: int, head_dim: int,
                   elem_bytes: int) -> list[BlockConfig]:
    """The configs a GPU launch of `kind` chooses among (one: launched directly, no tuning)."""
    return gpu_configs(kind, arch, head_dim, elem_bytes, smem, tune=host.tune_requested())


def _on(device: torch.device):
    """Launch on the tensors' device (Triton launches on torch's current device and stream)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _tuner(kind: str, configs: list[BlockConfig], tune_id: tuple):
    """GPU only: an autotuned launcher for one kernel over these configs."""
    if tune_id not in _TUNERS:
        cfgs = [triton.Config({"BLOCK_M": c.block_m, "BLOCK_N": c.block_n},
                              num_warps=c.num_warps, num_stages=c.num_stages) for c in configs]
        _TUNERS[tune_id] = triton.autotune(configs=cfgs, key=TUNE_KEYS[kind])(_KERNELS[kind])
    return _TUNERS[tune_id]


def _launch(kind: str, grid_rows: int, grid_y: int, args: tuple, *, head_dim: int,
            elem_bytes: int, device: torch.device, use_desc: bool, **meta) -> None:
    """Launch one kernel: one fixed config in the interpreter, the table's configs on a GPU
    (autotuned when there are several, launched directly when one).

    grid_rows is the sequence length the program axis 0 tiles (q for fwd/dq, kv for dkdv).
    """
    if kind == "delta":  # memory-bound preprocess: one fixed config everywhere
        with _on(device):
            attn_bwd_delta[(triton.cdiv(grid_rows, DELTA_BLOCK_M), grid_y)](
                *args, HEAD_DIM=head_dim, BLOCK_M=DELTA_BLOCK_M, num_warps=DELTA_WARPS)
        return
    tile = "BLOCK_N" if kind == "dkdv" else "BLOCK_M"
    if interpreted():
        cfg = CPU_CONFIGS[kind]
        grid = (triton.cdiv(grid_rows, cfg.block_m if tile == "BLOCK_M" else cfg.block_n), grid_y)
        _KERNELS[kind][grid](*args, HEAD_DIM=head_dim, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n,
                             USE_DESC=use_desc, **meta)
        return
    # GPU path (compiled for sm90 on CPU machines by kernels.inspect, not run there)
    if use_desc:
        host.ensure_allocator()
    arch, smem = arch_of(device), host.smem_limit(device)
    configs = launch_configs(kind, arch, smem, head_dim, elem_bytes)
    with _on(device):
        if len(configs) == 1:
            c = configs[0]
            grid = (triton.cdiv(grid_rows, c.block_n if tile == "BLOCK_N" else c.block_m), grid_y)
            _KERNELS[kind][grid](*args, HEAD_DIM=head_dim, USE_DESC=use_desc, BLOCK_M=c.block_m,
                                 BLOCK_N=c.block_n, num_warps=c.num_warps,
                                 num_stages=c.num_stages, **meta)
            return
        grid = lambda META: (triton.cdiv(grid_rows, META[tile]), grid_y)
        tuner = _tuner(kind, configs, (kind, arch, smem, head_dim, elem_bytes, tuple(configs)))
        tuner[grid](*args, HEAD_DIM=head_dim, USE_DESC=use_desc, **meta)


# ----------------------------------------------------------------------------------------------
# Host side: validation, path choice, autograd
# ----------------------------------------------------------------------------------------------


def default_scale(head_dim: int) -> float:
    """Softmax scale 1/sqrt(d) (Vaswani et al. 2017, "Attention is all you need", 3.2.1)."""
    return 1.0 / math.sqrt(head_dim)


def validate(q, k, v, causal, sm_scale, for_kernel: bool = True) -> float:
    """Check the inputs; return the softmax scale. for_kernel: also check Triton can run here."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, heads, seq, head_dim), "
                             f"got shape {tuple(t.shape)}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{name} has dtype {t.dtype}; supported: bfloat16, float16, float32")
        if 0 in t.shape:
            raise ValueError(f"{name} has an empty dimension: shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v are on different devices: {q.device}, {k.device}, {v.device}")
    if for_kernel and q.device.type == "cpu" and not interpreted():
        raise ValueError("tensors are on the CPU but Triton kernels run on the GPU "
                         "(TRITON_INTERPRET is not set): move q, k, v to CUDA")
    if for_kernel and q.device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {q.device}; use CUDA (or CPU via the interpreter)")
    b, h, _, d = q.shape
    if k.shape != v.shape:
        raise ValueError(f"k and v shapes differ: {tuple(k.shape)} vs {tuple(v.shape)}")
    if k.shape[0] != b:
        raise ValueError(f"batch sizes differ: q has {b}, k/v have {k.shape[0]}")
    if k.shape[3] != d:
        raise ValueError(f"head_dim differs: q has {d}, k/v have {k.shape[3]}")
    if d not in HEAD_DIMS:
        raise ValueError(f"head_dim {d} is not supported; supported: {HEAD_DIMS}")
    if h % k.shape[1]:
        raise ValueError(f"kv heads ({k.shape[1]}) must divide q heads ({h}) for grouped-query "
                         "attention")
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {type(causal).__name__}")
    if sm_scale is None:
        return default_scale(d)
    if isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)):
        raise TypeError(f"sm_scale must be a number or None, got {type(sm_scale).__name__}")
    if not (math.isfinite(sm_scale) and sm_scale > 0):
        raise ValueError(f"sm_scale must be finite and > 0, got {sm_scale}")
    return float(sm_scale)


def _rowmajor(t: torch.Tensor) -> torch.Tensor:
    """Head rows must be contiguous (stride 1 along head_dim) for both load paths."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _dense_rows(t: torch.Tensor) -> torch.Tensor:
    """t if its (batch, head, seq) rows follow each other at one stride, else a contiguous copy."""
    b, h, s, _ = t.shape
    rs = t.stride(2)
    dense = t.stride(-1) == 1 and t.stride(1) == s * rs and t.stride(0) == h * s * rs
    return t if dense else t.contiguous()


def _choose_desc(use_desc: bool | None, *ts: torch.Tensor) -> bool:
    """Tensor descriptors on Hopper (sm90) when alignment allows; pointers elsewhere.

    Auto (None) picks pointers in the interpreter: the portable path is the default on CPU; the
    tests force the descriptor path too.
    """
    aligned = all(host.aligned(t) for t in ts)
    if use_desc is None:
        return (ts[0].is_cuda and not interpreted() and host.has_tensor_descriptors()
                and arch_of(ts[0].device) == "sm90" and aligned)
    if use_desc and not aligned:
        raise ValueError("tensor descriptors need 16-byte aligned data and strides")
    return bool(use_desc)


def _f32_dot(dtype: torch.dtype) -> bool:
    return dtype == torch.float32 or (dtype == torch.bfloat16 and interpreted())


def _forward(q, k, v, causal: bool, sm_scale: float, use_desc: bool | None, launch=None):
    """o, lse. `launch` (default: _launch) takes each kernel launch; kernels.plan passes its own
    to list the launches of a call without running them."""
    launch = launch or _launch
    b, h, sq, d = q.shape
    kv_h, sk = k.shape[1], k.shape[2]
    o = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = torch.empty((b, h, sq), device=q.device, dtype=torch.float32)
    desc = _choose_desc(use_desc, q, k, v, o)
    args = (q, k, v, o, lse, sm_scale, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
            *o.stride()[:3], b, h, h // kv_h, sq, sk)
    launch("fwd", sq, b * h, args, head_dim=d, elem_bytes=q.element_size(), device=q.device,
            use_desc=desc, CAUSAL=causal, F32_DOT=_f32_dot(q.dtype))
    return o, lse


def _backward(do, q, k, v, o, lse, causal: bool, sm_scale: float, use_desc: bool | None,
              launch=None):
    launch = launch or _launch
    b, h, sq, d = q.shape
    kv_h, sk = k.shape[1], k.shape[2]
    do = _rowmajor(do)
    delta = torch.empty_like(lse)
    launch("delta", sq, b * h, (o, do, delta, *o.stride()[:3], *do.stride()[:3], h, sq),
           head_dim=d, elem_bytes=q.element_size(), device=q.device, use_desc=False)
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty_like(k, memory_format=torch.contiguous_format)
    dv = torch.empty_like(v, memory_format=torch.contiguous_format)
    desc = _choose_desc(use_desc, q, k, v, do, dq, dk, dv)
    if desc:  # the dK/dV kernel reads q and dO as one (b*h*seq_q, d) matrix each
        q, do = _dense_rows(q), _dense_rows(do)
    common = dict(head_dim=d, elem_bytes=q.element_size(), device=q.device, use_desc=desc,
                  CAUSAL=causal, F32_DOT=_f32_dot(q.dtype))
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    launch("dkdv", sk, b * kv_h,
            (q, k, v, do, lse, delta, dk, dv, sm_scale, *strides, *dk.stride()[:3],
             *dv.stride()[:3], h, kv_h, h // kv_h, sq, sk, b * h * sq), **common)
    launch("dq", sq, b * h,
            (q, k, v, do, lse, delta, dq, sm_scale, *strides, *dq.stride()[:3],
             b, h, h // kv_h, sq, sk), **common)
    return dq, dk, dv


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, sm_scale, use_desc):
        o, lse = _forward(q, k, v, causal, sm_scale, use_desc)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.sm_scale, ctx.use_desc = causal, sm_scale, use_desc
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, o, lse = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, ctx.causal, ctx.sm_scale, ctx.use_desc)
        return dq, dk, dv, None, None, None


def attention_impl(q, k, v, *, causal: bool = False, sm_scale: float | None = None,
                   use_desc: bool | None = None) -> torch.Tensor:
    """`attention` with the tile-movement path exposed: use_desc True (tensor descriptors),
    False (pointers) or None (auto: descriptors on Hopper, pointers elsewhere)."""
    scale = validate(q, k, v, causal, sm_scale)
    q, k, v = _rowmajor(q), _rowmajor(k), _rowmajor(v)
    return _FlashAttention.apply(q, k, v, causal, scale, use_desc)


def attention(q, k, v, *, causal: bool = False, sm_scale: float | None = None) -> torch.Tensor:
    """softmax(q k^T * sm_scale [+ causal mask]) v over (batch, heads, seq, head_dim) tensors.

    k and v may have fewer heads than q (grouped-query attention; they must divide q's heads)
    and a different sequence length. Causal masking is bottom-right aligned (query i sees keys
    j <= i + seq_k - seq_q). sm_scale defaults to 1/sqrt(head_dim). Differentiable.
    """
    return attention_impl(q, k, v, causal=causal, sm_scale=sm_scale)
