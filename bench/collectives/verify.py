"""Verifiable data for the check iterations, and the #wrong count.

Like nccl-tests' verifiable data (verifiable/verifiable.cu), every element of every rank's input
is a pure function of (element index, source rank, seed), so each rank computes the expected
result of a collective locally, without communication (its cost: n generated inputs per check
of a reduction, one per rank for all-gather). Values are small integers (-2, -1, 1, 2):
sums over n ranks stay exact in the data type while 2n fits its integer range (fp32 up to
n = 2^23, fp16 n <= 1024, bf16 n <= 128), whatever order the reduction adds in; beyond that a
rounding tolerance applies (see `tolerance`). Each reduction (-o) and type (-d) maps those
values (`values`): products use signs only (+-1: exact at any n), unsigned types shift them
positive; integer results are compared exactly, wrapping as the hardware does (two's
complement, modulo 2^bits). Work is chunked, so a check at 8 GiB needs a few tens of MiB of
scratch memory, not a second copy of the buffers. Comparisons run in float64 (int64 for
integer types), exact for these values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bench.collectives.formulas import Shape

VALUE_MAX = 2  # largest |value| of the pattern
CHUNK = 1 << 22  # elements compared per step of the check (float32 temporaries: 16 MiB)
# Elements per independently seeded block of the pattern: small on CPU (small messages stay
# cheap), large on GPUs (fewer generator launches for GiB messages).
BLOCK = {"cpu": 1 << 16, "cuda": 1 << 20}

# Mantissa bits (with the implicit one) of the data types: integers up to 2**bits are exact.
MANTISSA_BITS = {torch.float32: 24, torch.float16: 11, torch.bfloat16: 8, torch.float64: 53,
                 torch.float8_e4m3fn: 4, torch.float8_e5m2: 3}
UNSIGNED = (torch.uint8,)


def _block_seed(seed: int, src_rank: int, block: int) -> int:
    """A distinct 63-bit generator seed per (seed, source rank, block)."""
    return ((seed * 1_000_003 + src_rank) * 2_147_483_647 + block) % (1 << 63)


def pattern(start: int, count: int, src_rank: int, seed: int, device) -> torch.Tensor:
    """Values in {-2, -1, 1, 2} (int8) for elements start..start+count of `src_rank`'s input.

    The input is cut into blocks, each drawn by its own seeded generator, so any range is
    reproducible on any rank without generating what precedes it; each 62-bit draw gives 31
    two-bit values (three times faster than one draw per element on CPU). No zeros: an output left
    untouched can never pass, and neighbouring ranks differ.
    """
    device = torch.device(device)
    block = BLOCK.get(device.type, BLOCK["cpu"])
    if count <= 0:
        return torch.empty(0, dtype=torch.int8, device=device)
    first, last = start // block, (start + count - 1) // block
    shifts = torch.arange(0, 62, 2, device=device)  # 31 two-bit fields per 62-bit draw
    parts = []
    for b in range(first, last + 1):
        g = torch.Generator(device=device).manual_seed(_block_seed(seed, src_rank, b))
        draws = torch.randint(0, 1 << 62, (-(-block // 31),), generator=g, device=device)
        parts.append(((draws.unsqueeze(1) >> shifts) & 3).reshape(-1)[:block].to(torch.int8))
    v = torch.cat(parts) if len(parts) > 1 else parts[0]
    v = v[start - first * block:start - first * block + count]
    return v - 2 + (v >= 2).to(torch.int8)  # 0..3 -> -2, -1, 1, 2


def is_integer(dtype: torch.dtype) -> bool:
    return not dtype.is_floating_point


def values(v: torch.Tensor, dtype: torch.dtype, redop: str | None) -> torch.Tensor:
    """The pattern (int8 in {-2, -1, 1, 2}) as the values a rank sends, as int64.

    Products take the sign only (+-1, or 1 and 3 for unsigned types: odd, so a product modulo
    2^bits never collapses to 0); unsigned types otherwise take v + 3 (1, 2, 4, 5).
    """
    v = v.to(torch.int64)
    if redop == "prod":
        v = torch.sign(v)
        return 1 + 2 * (v > 0).to(torch.int64) if dtype in UNSIGNED else v
    return v + 3 if dtype in UNSIGNED else v


def fill_pattern(dst: torch.Tensor, start: int, src_rank: int, seed: int,
                 redop: str | None = None) -> None:
    """Write `values(pattern)` for elements start.. into the 1-D tensor `dst`, by chunks."""
    n = dst.numel()
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        v = values(pattern(start + lo, hi - lo, src_rank, seed, dst.device), dst.dtype, redop)
        dst[lo:hi].copy_(v if is_integer(dst.dtype) else v.to(torch.float32))


def fill_input(shape: Shape, send: torch.Tensor, rank: int, seed: int,
               redop: str | None = None) -> None:
    """This rank's check input: its whole send buffer (element i of rank r is pattern(i, r))."""
    fill_pattern(send[:shape.send_count], 0, rank, seed, redop)


def unwritten(dtype: torch.dtype) -> float | int:
    """What the output is filled with before a check call: NaN for floating types (never a
    result); for integer types the largest value, which the sums of small values reach only
    when n is large (an unwritten element then passes where the expected value is that)."""
    return torch.iinfo(dtype).max if is_integer(dtype) else math.nan


def unit_roundoff(dtype: torch.dtype) -> float:
    return 2.0 ** -MANTISSA_BITS[dtype]


def reference_scale(shape: Shape, redop: str | None = "sum") -> float:
    """The largest |expected value|: n*VALUE_MAX for a sum over ranks, VALUE_MAX otherwise."""
    summed = shape.op != "all_gather" and redop in ("sum", None)
    return float(VALUE_MAX * (shape.nranks if summed else 1))


def tolerance(shape: Shape, dtype: torch.dtype, redop: str | None = "sum") -> float:
    """Allowed |error| relative to `reference_scale`: 0 where every result is exact.

    Exact: integer types (compared modulo 2^bits), copies, min, max and products of +-1; sums
    while every partial sum is an integer the type holds. Otherwise the recursive-summation
    bound |err| <= (n-1) u sum|x_i| (Higham, Accuracy and Stability of Numerical Algorithms,
    4.2), with sum|x_i| <= scale: relative (n-1)*u. An average is that sum divided by n:
    one more rounding, + u (an assumption about how the division is done: NCCL's ncclAvg).
    """
    if is_integer(dtype) or shape.op == "all_gather" or redop in ("min", "max", "prod"):
        return 0.0
    sum_scale = VALUE_MAX * shape.nranks
    summed = 0.0 if sum_scale <= 2 ** MANTISSA_BITS[dtype] else (
        (shape.nranks - 1) * unit_roundoff(dtype))
    return summed + unit_roundoff(dtype) if redop == "avg" else summed


@dataclass(frozen=True)
class Verdict:
    """One rank's check: wrong elements out of `checked`, and the largest relative error."""

    wrong: int
    checked: int
    max_rel_error: float


def _reduce(acc: torch.Tensor | None, v: torch.Tensor, redop: str) -> torch.Tensor:
    if acc is None:
        return v.clone()
    if redop in ("sum", "avg"):
        return acc + v
    if redop == "prod":
        return acc * v
    return torch.minimum(acc, v) if redop == "min" else torch.maximum(acc, v)


def _expected_chunk(shape: Shape, rank: int, seed: int, lo: int, hi: int, dtype: torch.dtype,
                    redop: str | None, device) -> torch.Tensor:
    """Expected output elements lo..hi of `rank`: int64 for integer types (wrapped to the
    type), float64 otherwise (exact for these values before the final division of avg)."""
    n = shape.nranks
    if shape.op == "all_gather":
        c = shape.count
        out = torch.empty(hi - lo, dtype=torch.int64, device=device)
        pos = lo
        while pos < hi:  # output block q is rank q's input
            q, off = divmod(pos, c)
            end = min(hi, (q + 1) * c)
            out[pos - lo:end - lo] = values(pattern(off, end - pos, q, seed, device), dtype,
                                            None)
            pos = end
        acc = out
    else:
        # all_reduce: element i combines element i of every rank; reduce_scatter: rank r's
        # element i combines element r*count + i of every rank.
        base = lo if shape.op == "all_reduce" else rank * shape.count + lo
        acc = None
        for q in range(n):
            acc = _reduce(acc, values(pattern(base, hi - lo, q, seed, device), dtype, redop),
                          redop or "sum")
    if is_integer(dtype):
        return acc.to(dtype).to(torch.int64)  # int64 arithmetic wraps; the cast truncates
    acc = acc.to(torch.float64)
    return acc / n if redop == "avg" else acc


def count_wrong(shape: Shape, out: torch.Tensor, rank: int, seed: int, dtype: torch.dtype,
                redop: str | None = "sum") -> Verdict:
    """Compare this rank's output of one check iteration with the expected values.

    An element is wrong when |out - expected| > tolerance * scale, or not finite (NaN marks
    output that was never written).
    """
    redop = None if shape.op == "all_gather" else redop
    scale = reference_scale(shape, redop)
    tol = tolerance(shape, dtype, redop) * scale
    exact = is_integer(dtype)
    n = shape.recv_count
    wrong = 0
    max_err = 0.0
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        got = out[lo:hi].to(torch.int64 if exact else torch.float64)
        expected = _expected_chunk(shape, rank, seed, lo, hi, dtype, redop, out.device)
        # float64 differences: int64 ones would overflow near the type's limits
        err = (got.to(torch.float64) - expected.to(torch.float64)).abs()
        bad = (got != expected) if exact else ~(err <= tol)  # NaN compares false: wrong
        wrong += int(bad.sum().item())
        if not bool(torch.isfinite(err).all()):
            max_err = float("inf")
        elif err.numel():
            max_err = max(max_err, float(err.max().item()))
    return Verdict(wrong, n, max_err / scale)
