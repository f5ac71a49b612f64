"""Element counts per collective and the bandwidth formulas of nccl-tests.

Sources: NVIDIA/nccl-tests doc/PERFORMANCE.md (algbw, busbw and their reasoning) and the
`*GetCollByteCount` / `*GetBw` functions of src/all_reduce.cu, all_gather.cu, reduce_scatter.cu.
GB/s are decimal (1e9 bytes), as nccl-tests divides by 1.0E9.
"""

from __future__ import annotations

from dataclasses import dataclass

OPS = ("all_reduce", "all_gather", "reduce_scatter")

# The redop column of the nccl-tests table: all-gather reduces nothing.
REDOP = {"all_reduce": "sum", "all_gather": "none", "reduce_scatter": "sum"}



def check_op(op: str) -> str:
    if op not in OPS:
        raise ValueError(f"unknown collective {op!r}; choose one of {', '.join(OPS)}")
    return op


@dataclass(frozen=True)
class Shape:
    """One collective call at one size, as nccl-tests sets it up (setupArgs).

    `count` is what nccl-tests prints in its count column and passes to NCCL: all elements for
    all-reduce, the per-rank elements for all-gather and reduce-scatter. Offsets place the
    in-place buffers: send = recv + send_inplace_offset*rank, recv = recv + recv_inplace_offset*rank
    (elements).
    """

    op: str
    nranks: int
    elem_bytes: int
    count: int
    send_count: int
    recv_count: int
    send_inplace_offset: int
    recv_inplace_offset: int

    @property
    def nbytes(self) -> int:
        """S of the bandwidth formulas, also the size column: the larger of send and receive."""
        return max(self.send_count, self.recv_count) * self.elem_bytes

    @property
    def span(self) -> int:
        """Elements one call touches in a buffer (the larger side)."""
        return max(self.send_count, self.recv_count)


def shape(op: str, size_bytes: int, nranks: int, elem_bytes: int) -> Shape:
    """The counts of one call of `op` for a requested size (nccl-tests *GetCollByteCount).

    all_reduce: count = size/eltsize on every rank, in place at offset 0.
    all_gather: each rank sends count/nranks and receives (count/nranks)*nranks; in place, a
    rank's send buffer is its slice of the receive buffer.
    reduce_scatter: each rank sends (count/nranks)*nranks and receives count/nranks; in place,
    a rank's receive buffer is its slice of the send buffer.
    """
    check_op(op)
    if nranks < 1:
        raise ValueError(f"nranks must be >= 1, got {nranks}")
    if elem_bytes < 1:
        raise ValueError(f"element size must be >= 1 byte, got {elem_bytes}")
    count = size_bytes // elem_bytes
    if op == "all_reduce":
        return Shape(op, nranks, elem_bytes, count, count, count, 0, 0)
    per_rank = count // nranks
    if op == "all_gather":
        return Shape(op, nranks, elem_bytes, per_rank, per_rank, per_rank * nranks, per_rank, 0)
    return Shape(op, nranks, elem_bytes, per_rank, per_rank * nranks, per_rank, 0, per_rank)


def algbw_gbps(nbytes: int, seconds: float) -> float:
    """Algorithm bandwidth, S/t in GB/s (PERFORMANCE.md: 'algbw = S/t')."""
    if seconds <= 0:
        raise ValueError(f"time must be positive, got {seconds}")
    return nbytes / seconds / 1e9


def algbw_or_none(nbytes: int, seconds: float) -> float | None:
    """`algbw_gbps` where the time is positive, else None (undefined: a call that did no work,
    as NCCL's with one rank, can finish between two timer ticks and read 0.0 s)."""
    return algbw_gbps(nbytes, seconds) if seconds > 0 else None


def busbw_factor(op: str, nranks: int) -> float:
    """algbw -> busbw, so that busbw is comparable to the hardware's link bandwidth at any n.

    all_reduce: each element needs n-1 additions and n assignments, 2(n-1) transfers spread over
    n links: t = (S/B) * 2(n-1)/n, so B = algbw * 2(n-1)/n, whatever the algorithm (nccl-tests
    src/all_reduce.cu, AllReduceGetBw: with NVLS's in-switch reduction busbw can exceed the
    link, as published 8x H100 NVLS readings of ~480 GB/s do).
    all_gather, reduce_scatter: only the assignment (resp. addition) half: (n-1)/n, with S the
    total array (count * typesize * n).
    n = 1 gives 0: no bus is used, so bus bandwidth is undefined there.
    """
    check_op(op)
    if nranks < 1:
        raise ValueError(f"nranks must be >= 1, got {nranks}")
    if op == "all_reduce":
        return 2 * (nranks - 1) / nranks
    return (nranks - 1) / nranks


def busbw_gbps(algbw: float | None, op: str, nranks: int) -> float | None:
    """Bus bandwidth in GB/s, or None where it is undefined (one rank: factor 0; no algbw)."""
    factor = busbw_factor(op, nranks)
    return algbw * factor if factor > 0 and algbw is not None else None
