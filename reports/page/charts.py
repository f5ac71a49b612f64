"""Figures (matplotlib, Agg: no display needed): roofline, bars, lines and scatter as PNG bytes.
"""

from __future__ import annotations

import io

from reports.page.rows import attainable_tflops, fmt_bytes
from results.peaks import PEAKS

MAX_BAR_SHAPES = 40  # shapes drawn per baseline figure (the table lists them all)


def pyplot():
    """matplotlib.pyplot on the Agg backend (lazy: only the report draws)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig) -> bytes:
    """PNG bytes of a figure, without metadata (no version strings or URLs in the page)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


BACKEND_COLOURS = {"triton": "tab:red", "torch": "tab:blue", "sdpa-flash": "tab:green",
                   "sdpa-cudnn": "tab:purple", "sdpa-efficient": "tab:olive",
                   "sdpa-math": "tab:gray", "nccl": "tab:blue", "gloo": "tab:orange"}


WORKLOAD_MARKERS = {"gemm": "o", "attention": "^"}


def roofline_png(points: list[dict], bandwidths: dict[str, float], gpus: list[str]) -> bytes:
    """One panel per GPU model: datasheet roofs (per dtype), the measured HBM ceiling (dashed)
    where membw rows exist, and every kernel point (intensity, TFLOP/s)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(gpus), figsize=(5.5 * len(gpus), 4.2), squeeze=False)
    xs = [10 ** (e / 10) for e in range(-10, 51)]  # 0.1 .. 1e5 FLOP/B
    for ax, gpu in zip(axes[0], gpus):
        pk = PEAKS[gpu]
        mine = [p for p in points if p["gpu"] == gpu]
        dtypes = sorted({"bf16"} | {p["dtype"] for p in mine if pk.tflops(p["dtype"])})
        for dt in dtypes:
            peak = pk.tflops(dt)
            ax.plot(xs, [attainable_tflops(x, peak, pk.hbm_tbps) for x in xs], lw=1.5,
                    label=f"{dt} roof {peak:.0f} TF/s, {pk.hbm_tbps} TB/s")
        if gpu in bandwidths:
            ax.plot(xs, [x * bandwidths[gpu] for x in xs], "k--", lw=1,
                    label=f"measured HBM {bandwidths[gpu]:.2f} TB/s")
        for p in mine:
            ax.scatter(p["ai"], p["tflops"], s=22, marker=WORKLOAD_MARKERS.get(p["workload"], "s"),
                       color=BACKEND_COLOURS.get(p["backend"], "tab:brown"), zorder=3)
        for (wl, be) in sorted({(p["workload"], p["backend"]) for p in mine}):
            ax.scatter([], [], marker=WORKLOAD_MARKERS.get(wl, "s"),
                       color=BACKEND_COLOURS.get(be, "tab:brown"), label=f"{wl} {be}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(min([1.0] + [0.5 * p["tflops"] for p in mine]), 3000)
        ax.set_xlabel("arithmetic intensity (FLOP/byte)")
        ax.set_ylabel("TFLOP/s")
        ax.set_title(f"{gpu}" + ("" if mine else " (no kernel measured)"))
        ax.minorticks_off()  # minor log ticks cost seconds of drawing and add nothing here
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return to_png(fig)


def bars_png(title: str, labels: list[str], series: dict[str, list[float | None]],
             unit: str, errors: dict[str, tuple[list[float], list[float]]] | None = None) -> bytes:
    """bars_figure as PNG bytes."""
    return to_png(bars_figure(title, labels, series, unit, errors))


def bars_figure(title: str, labels: list[str], series: dict[str, list[float | None]],
                unit: str, errors: dict[str, tuple[list[float], list[float]]] | None = None):
    """Horizontal grouped bars: one group per shape, one bar per backend; `errors` (per series:
    the distances below and above each value) draws whiskers, e.g. a modelled range. The legend
    sits right of the axes, never over a bar."""
    plt = pyplot()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.32 * n * max(1, len(series)) ** 0.5))
    height = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ys = [j + i * height for j in range(n)]
        err = (errors or {}).get(name)
        ax.barh(ys, [v or 0.0 for v in values], height=height, label=name,
                color=BACKEND_COLOURS.get(name.split(" ")[0]),
                xerr=[list(err[0]), list(err[1])] if err else None, capsize=3 if err else 0)
    ax.set_yticks([j + 0.4 - height / 2 for j in range(n)])
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: no bar hidden
    return fig


def lines_figure(title: str, series: dict[str, tuple[list[float], list[float]]], xlabel: str,
                 ylabel: str, *, logx: bool = True, logy: bool = False,
                 hlines: dict[str, float] | None = None, xbytes: bool = False,
                 bands: dict[str, tuple[list[float], list[float]]] | None = None):
    """Line plot of named (x, y) series, with optional labelled horizontal reference lines and,
    per series, a shaded band (low, high at the same x: the range of a modelled figure)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, (x, y) in series.items():
        (line,) = ax.plot(x, y, marker="o", ms=3, label=name)
        if bands and name in bands:
            lo, hi = bands[name]
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    for name, y in (hlines or {}).items():
        ax.axhline(y, ls="--", lw=1, color="gray")
        ax.annotate(name, (0.01, y), xycoords=("axes fraction", "data"), fontsize=7,
                    va="bottom", color="dimgray")
    if logx:
        ax.set_xscale("log", base=2 if xbytes else 10)
    if logy:
        ax.set_yscale("log")
    if xbytes:
        ticks = sorted({x for xs, _ in series.values() for x in xs})
        step = max(1, len(ticks) // 8)
        ax.set_xticks(ticks[::step])
        ax.set_xticklabels([fmt_bytes(t) for t in ticks[::step]], fontsize=7, rotation=30)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.minorticks_off()
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    return fig


def lines_png(title: str, series: dict[str, tuple[list[float], list[float]]], xlabel: str,
              ylabel: str, **kw) -> bytes:
    """lines_figure as PNG bytes."""
    return to_png(lines_figure(title, series, xlabel, ylabel, **kw))


def scatter_png(x: list[float], y: list[float], xlabel: str, ylabel: str) -> bytes:
    """Predicted against published, with the y = x line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    lo, hi = 0.9 * min(x + y), 1.1 * max(x + y)
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.scatter(x, y, s=20, color="tab:blue", zorder=3)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return to_png(fig)
