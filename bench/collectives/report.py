"""The nccl-tests table (same columns and number formats), and per-iteration statistics.

Formats follow nccl-tests' Reporter (src/common.cu): size and count `%12li`, type `%8s`, redop
and root `%6s`/`%6i`, then per placement time `%7s` in microseconds (0, 1 or 2 decimals by
magnitude), algbw and busbw `%6.2f` GB/s, #wrong `%5g` (or `N/A` without a check, -c 0);
the footer's "# Avg bus bandwidth" (`%g`) is the mean busbw over the printed cells. Every cell
where nccl-tests prints a number holds a number: with one rank busbw is 0.00 (its factor is
0; the record stores null, as it is undefined), and a cell whose check failed shows its time
with 0.00 bandwidth (a wrong result has no speed; nccl-tests would print the speed). Parsers
written for nccl-tests output read ours.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from bench.collectives.config import DTYPES
from bench.timing import percentile

# nccl-tests' names of our dtypes (test_typenames)
TYPE_NAMES = {ours: nccl for ours, (_, nccl) in DTYPES.items()}
ROOT = -1  # nccl-tests prints root -1 for collectives without a root


def aggregate_samples(per_rank: list[list[float]], average: int = 1) -> list[float]:
    """The per-iteration times whose mean is nccl-tests' time under `-a average`.

    nccl-tests takes each rank's mean iteration time and combines them across ranks
    (Allreduce(..., average) in BenchTime): 0 rank 0's, 1 their mean (the default), 2 the
    minimum, 3 the maximum. Here: 1 averages each iteration over ranks (the mean of those is
    the mean of the rank means); 0, 2 and 3 take the samples of rank 0, of the fastest and of
    the slowest rank. Either way the mean of what is returned is exactly the nccl-tests time.
    """
    if not per_rank or any(len(s) != len(per_rank[0]) for s in per_rank) or not per_rank[0]:
        raise ValueError("every rank must report the same, non-zero number of samples")
    if average == 1:
        return [statistics.fmean(xs) for xs in zip(*per_rank)]
    if average == 0:
        return list(per_rank[0])
    pick = min if average == 2 else max
    if average not in (2, 3):
        raise ValueError(f"average must be 0, 1, 2 or 3, got {average}")
    return list(pick(per_rank, key=statistics.fmean))


@dataclass(frozen=True)
class IterStats:
    """Spread of the per-iteration times: median, 99th percentile, coefficient of variation."""

    median_s: float
    p99_s: float
    cv: float  # stdev / mean

    @classmethod
    def of(cls, samples: list[float]) -> IterStats:
        xs = sorted(samples)
        mean = statistics.fmean(xs)
        stdev = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return cls(statistics.median(xs), percentile(xs, 0.99), stdev / mean if mean else 0.0)


@dataclass(frozen=True)
class Cell:
    """One placement of one table line. Bandwidths are None when the check found wrong data
    (printed 0.00), busbw also with one rank (its factor is 0)."""

    time_s: float | None
    algbw: float | None
    busbw: float | None
    wrong: int | None  # None: not checked (-c 0)
    stats: IterStats | None = None


def time_text(seconds: float) -> str:
    """nccl-tests' time column: microseconds with 0, 1 or 2 decimals by magnitude."""
    us = seconds * 1e6
    if us >= 10000.0:
        return f"{us:7.0f}"
    if us >= 100.0:
        return f"{us:7.1f}"
    return f"{us:7.2f}"


def _num(x: float | None, width: int = 6) -> str:
    return f"{(x or 0.0):{width}.2f}"


def header(iter_stats: bool = False) -> list[str]:
    names = ("size", "count", "type", "redop", "root")
    cols = ("time", "algbw", "busbw", "#wrong")
    units = ("(us)", "(GB/s)", "(GB/s)", "")
    extra = ((f"  {'median':>7}  {'p99':>7}  {'cv':>5}", f"  {'(us)':>7}  {'(us)':>7}  {'(%)':>5}")
             if iter_stats else ("", ""))
    return [
        f"# {'':>10}  {'':>12}  {'':>8}  {'':>6}  {'':>6}           out-of-place"
        f"                       in-place          ",
        f"# {names[0]:>10}  {names[1]:>12}  {names[2]:>8}  {names[3]:>6}  {names[4]:>6}"
        + 2 * f"  {cols[0]:>7}  {cols[1]:>6}  {cols[2]:>6} {cols[3]:>6}" + 2 * extra[0],
        f"# {'(B)':>10}  {'(elements)':>12}  {'':>8}  {'':>6}  {'':>6}"
        + 2 * f"  {units[0]:>7}  {units[1]:>6}  {units[2]:>6}  {units[3]:>5}" + 2 * extra[1],
    ]


def cell_text(c: Cell) -> str:
    """nccl-tests: "  %7s  %6.2f  %6.2f  %5g", #wrong "%5s" N/A when not checked."""
    wrong = f"{'N/A':>5}" if c.wrong is None else f"{float(c.wrong):5g}"
    return f"  {time_text(c.time_s or 0.0)}  {_num(c.algbw)}  {_num(c.busbw)}  {wrong}"


def stats_text(c: Cell) -> str:
    s = c.stats or IterStats(0.0, 0.0, 0.0)
    return f"  {s.median_s * 1e6:7.1f}  {s.p99_s * 1e6:7.1f}  {s.cv * 100:5.1f}"


def line(nbytes: int, count: int, dtype: str, redop: str, out: Cell, inp: Cell,
         iter_stats: bool = False) -> str:
    text = (f"{nbytes:12d}  {count:12d}  {TYPE_NAMES.get(dtype, dtype):>8}  {redop:>6}  "
            f"{ROOT:6d}" + cell_text(out) + cell_text(inp))
    if iter_stats:
        text += stats_text(out) + stats_text(inp)
    return text


def footer(cells: list[Cell], world_size: int) -> list[str]:
    """nccl-tests' closing lines: cells with wrong data, then the average bus bandwidth."""
    bad = sum(1 for c in cells if c.wrong)
    good = [c for c in cells if not c.wrong]
    busbws = [c.busbw or 0.0 for c in good if c.busbw is None or math.isfinite(c.busbw)]
    avg = statistics.fmean(busbws) if busbws else 0.0
    lines = [f"# Out of bounds values : {bad} {'FAILED' if bad else 'OK'}",
             f"# Avg bus bandwidth    : {avg:g} "]
    if world_size == 1:
        lines.append("# note: bus bandwidth is undefined with one rank (the busbw factor is 0):"
                     " printed 0, stored as null")
    lines.append("#")
    return lines
