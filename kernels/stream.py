"""STREAM-style memory kernels: copy and triad, the HBM bandwidth probes of the membw workload.

One program moves one BLOCK of elements with vector loads and stores; nothing is reused, so the
kernel's speed is the memory system's. int64 offsets: buffers of several GiB overflow int32.
"""

import torch
import triton
import triton.language as tl

import kernels  # noqa: F401  (chooses the interpreter on CPU before kernels are decorated)

BLOCK = 4096


@triton.jit
def _copy_kernel(src, dst, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    tl.store(dst + offs, tl.load(src + offs, mask=mask), mask=mask)


@triton.jit
def _triad_kernel(a, b, c, scalar, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(b + offs, mask=mask) + scalar * tl.load(c + offs, mask=mask)
    tl.store(a + offs, x, mask=mask)


def _check(*ts: torch.Tensor) -> int:
    n = ts[0].numel()
    for t in ts:
        if not t.is_contiguous():
            raise ValueError("stream kernels need contiguous tensors")
        if t.numel() != n or t.dtype != ts[0].dtype or t.device != ts[0].device:
            raise ValueError("stream kernels need tensors of equal size, dtype and device")
    return n


def copy(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """dst[:] = src. Returns dst."""
    n = _check(src, dst)
    _copy_kernel[(triton.cdiv(n, BLOCK),)](src, dst, n, BLOCK=BLOCK, num_warps=8)
    return dst


def triad(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, scalar: float) -> torch.Tensor:
    """a[:] = b + scalar * c (STREAM triad). Returns a."""
    n = _check(a, b, c)
    _triad_kernel[(triton.cdiv(n, BLOCK),)](a, b, c, scalar, n, BLOCK=BLOCK, num_warps=8)
    return a
