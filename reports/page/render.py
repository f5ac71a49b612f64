"""The report: one self-contained HTML page and its Markdown twin, from the results table.

`build_report(frame, out_dir)` writes `report.html` (figures embedded as base64 PNG; no external
URL at all) and `report.md` (the same sections, figures as PNG files beside it). For capacity
planners: a short summary of headline figures first, then the sections: roofline of every
measured kernel result on the H100 and H200 roofs, our kernels against the vendor baselines by
shape, all-reduce bus bandwidth by size, throughput against GPU count for the cluster presets,
the H200 gain, power and goodput, and the model's validation against published runs.

Every number points somewhere: a measured one to the run it came from (run id, device, git sha,
time: the "R" labels), a datasheet or published one to its source or labelled assumption (the "S"
labels), a modelled one to the model inputs it rests on (the "I" labels: per GPU type and cluster
preset, each input with its own R or S). Measured sections with nothing to show say so plainly; the
model sections always render, from the labelled assumptions when nothing was measured.

The model sections call the scaling model's public functions (reports.model.scaling,
reports.model.validation, reports.model.measurements) with the same measurements, so measured
inputs replace the assumptions wherever they exist; a "model inputs" section lists what each
estimate rests on."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from reports.model.measurements import as_dict
from results.peaks import PEAKS

REFERENCE = "shipped reference results"  # the origin pick_measurements names the reference
NO_MEASUREMENTS = ("no measurements: run `colossus-bench run` on a GPU node or ship reference "
                   "results")
ROOF_GPUS = ("H100-SXM", "H200-SXM")  # the roofs every report draws
KERNEL_WORKLOADS = ("gemm", "attention")  # rows that count only when checked correct
ALLREDUCE_WORKLOADS = ("allreduce", "all_reduce")  # the record's name, and an older spelling
OURS = "triton"
BASELINES = {"gemm": ("torch",), "attention": ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient",
                                               "sdpa-math")}
MAX_BAR_SHAPES = 40  # shapes drawn per baseline figure (the table lists them all)
HTML_NAME, MD_NAME = "report.html", "report.md"
TEMPLATES = Path(__file__).resolve().parent / "templates"


# ----------------------------------------------------------------------------------------------
# The report as data: both templates render the same sections
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Ref:
    """A pointer from a number to where it came from: a run ("R3"), a source ("S2") or a set
    of model inputs ("I1")."""

    label: str

    @property
    def anchor(self) -> str:
        return self.label.lower()


@dataclass
class Cell:
    """A piece of text (a table cell, a note, a headline figure) and the refs it rests on."""

    text: str
    refs: tuple[Ref, ...] = ()

    def __post_init__(self):
        self.refs = tuple(dict.fromkeys(self.refs))  # each ref once, first use first


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    id: str = ""  # an anchor refs can point to (the I labels' tables)


@dataclass
class Figure:
    """A matplotlib figure rendered to PNG: embedded in HTML, a file beside the Markdown."""

    name: str  # file stem, also the HTML element id
    title: str
    png: bytes
    caption: Cell

    @property
    def filename(self) -> str:
        return f"{self.name}.png"

    @property
    def b64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    facts: list[tuple[str, Cell]] = field(default_factory=list)  # headline label -> value
    notes: list[Cell] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    empty: str | None = None  # said plainly when the section has nothing measured
    headline: list[tuple[str, Cell]] = field(default_factory=list)  # lifted into the summary


@dataclass
class Run:
    """One run a measured number came from."""

    label: str
    run_id: str
    origin: str  # "local table" or "shipped reference results"
    device: str
    model: str
    git: str
    created_at: str
    host: str

    @property
    def anchor(self) -> str:
        return self.label.lower()


@dataclass
class SourceNote:
    label: str
    text: str
    kind: str  # "assumption" or "published"

    @property
    def anchor(self) -> str:
        return self.label.lower()


class Provenance:
    """Hands out the R and S labels and keeps what they stand for."""

    def __init__(self, origin: str):
        self.origin = origin
        self.runs: dict[str, Run] = {}
        self.sources: dict[str, SourceNote] = {}

    def run(self, row: dict) -> Ref:
        """The ref of the run that produced `row` (registered on first use)."""
        run_id = str(row.get("run_id") or "unknown")
        if run_id not in self.runs:
            dev = row.get("device") or {}
            sw = row.get("software") or {}
            sha = sw.get("git_sha")
            git = (str(sha)[:10] + ("+dirty" if sw.get("git_dirty") else "")) if sha else \
                "unknown"
            self.runs[run_id] = Run(f"R{len(self.runs) + 1}", run_id, self.origin,
                                    str(dev.get("name") or "?"), str(dev.get("model") or "?"),
                                    git, _time(row.get("created_at")), str(row.get("host") or "?"))
        else:  # a run's time is its earliest row
            r = self.runs[run_id]
            t = _time(row.get("created_at"))
            if t < r.created_at:
                r.created_at = t
        return Ref(self.runs[run_id].label)

    def runs_of(self, rows: Iterable[dict]) -> tuple[Ref, ...]:
        return tuple(dict.fromkeys(self.run(r) for r in rows))

    def source(self, text: str, kind: str | None = None) -> Ref:
        """The ref of a source or assumption text (the same text gets the same label)."""
        text = text.strip() or "assumption: source not stated"
        if text not in self.sources:
            kind = kind or source_kind(text)
            self.sources[text] = SourceNote(f"S{len(self.sources) + 1}", text, kind)
        return Ref(self.sources[text].label)


def _time(value: Any) -> str:
    """ISO 8601 -> 'YYYY-MM-DD HH:MM UTC' (sorts as text); no offset is taken as UTC, as the
    record's created_at is written."""
    if not value:
        return "unknown"
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------------------------
# Rows: which measurements count
# ----------------------------------------------------------------------------------------------

def is_all_reduce(r: dict) -> bool:
    """An all-reduce row with a bus bandwidth: the collectives family also holds all_gather and
    reduce_scatter rows, whose busbw uses another factor and must not stand for all-reduce."""
    return (r["workload"] in ALLREDUCE_WORKLOADS and bool(num(r.get("busbw_gbps")))
            and r["params"].get("op", "all_reduce") == "all_reduce")


def is_true(v: Any) -> bool:
    """True for True and numpy's True (frames from other readers may hold numpy bools)."""
    return v is True or (hasattr(v, "item") and v.item() is True)


def count(v: Any) -> str:
    """An integer field (world_size) as text; pandas may have made it a float or NaN."""
    f = num(v)
    return "?" if f is None else str(int(f))


def num(v: Any) -> float | None:
    """A finite float, else None (pandas gives NaN for missing numbers)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def usable_rows(frame) -> list[dict]:
    """Plain dict rows of the results that count: status ok, and for kernels checked correct."""
    if frame is None or len(frame) == 0:
        return []
    missing = {"workload", "backend", "dtype", "params", "device", "status"} - set(frame.columns)
    if missing:
        raise ValueError(f"results frame lacks columns {sorted(missing)}; expected the result "
                         f"record's columns (results/schema.py)")
    out = []
    for rec in frame.to_dict("records"):
        if rec.get("status") != "ok":
            continue
        if rec.get("workload") in KERNEL_WORKLOADS and not is_true(rec.get("correct")):
            continue
        rec = dict(rec)
        for k in ("params", "device", "software", "telemetry"):
            rec[k] = as_dict(rec.get(k))
        out.append(rec)
    return out


def pick_measurements(local, reference) -> tuple[Any, str]:
    """The local table when it has usable rows, else the shipped reference, else nothing."""
    if usable_rows(local):
        return local, "local table"
    if usable_rows(reference):
        return reference, REFERENCE
    return None, "none"


def gpu_model(row: dict) -> str:
    return str(row["device"].get("model") or row["device"].get("name") or "unknown")


def shape_label(workload: str, p: dict) -> str:
    """A short readable shape: gemm 'MxNxK layout (shape tag)', attention 'b2 h16/16 s8192 d128
    causal fwd', membw 'copy 1 GiB'."""
    if workload == "gemm":
        s = f"{p.get('m')}x{p.get('n')}x{p.get('k')}"
        s += f" {p['layout']}" if p.get("layout") else ""
        return s + (f" ({p['shape']})" if p.get("shape") not in (None, "", "square") else "")
    if workload == "attention":
        return (f"b{p.get('b')} h{p.get('h')}/{p.get('kv_h')} s{p.get('s')} d{p.get('d')}"
                f"{' causal' if p.get('causal') else ''} {p.get('direction', 'fwd')}")
    if workload == "membw" and num(p.get("bytes")):
        return f"{p.get('op', '?')} {fmt_bytes(num(p['bytes']))}"
    return " ".join(f"{k}={v}" for k, v in p.items())


def fmt_bytes(n: float) -> str:
    """Binary units, as the suites choose their sizes (1 GiB, 64 MiB)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n:.0f} B"


def fmt(x: float | None, spec: str = "auto") -> str:
    """A number for a table: 'auto' gives one decimal, or 3 significant digits under 10 (CPU
    runs measure fractions of a TFLOP/s)."""
    if x is None:
        return "-"
    if spec == "auto":
        spec = ".1f" if abs(x) >= 10 or x == 0 else ".3g"
    return format(x, spec)


def fmt_days(days: float | None) -> str:
    """Days, or hours under a day (GPT-3 on 200k GPUs takes hours)."""
    if days is None:
        return "-"
    return f"{days * 24:.1f} h" if days < 1 else f"{days:.1f} d"


# ----------------------------------------------------------------------------------------------
# Formulas
# ----------------------------------------------------------------------------------------------

def flops_and_bytes(row: dict) -> tuple[float, float] | None:
    """(FLOPs, bytes moved) of the row's case, from its workload's own formulas
    (bench.workloads.WORKLOADS[name].flops / bytes_moved, on the Case rebuilt from the row's
    workload, dtype and params); None when the workload is unknown or has no such formulas."""
    from bench.workloads import WORKLOADS, Case

    wl = WORKLOADS.get(row["workload"])
    if wl is None:
        return None
    try:
        case = Case(row["workload"], row["dtype"], dict(row["params"]), (row["backend"],))
        f, b = wl.flops(case), wl.bytes_moved(case)
    except (KeyError, TypeError, ValueError):
        return None
    if not f or not b:
        return None
    return float(f), float(b)


def arithmetic_intensity(flops: float, nbytes: float) -> float:
    """FLOP per byte of HBM traffic: where a kernel sits on the roofline's x axis."""
    return flops / nbytes


def attainable_tflops(intensity: float, peak_tflops: float, hbm_tbps: float) -> float:
    """The roofline (Williams et al. 2009): min(compute peak, intensity x bandwidth); FLOP/B x
    TB/s = TFLOP/s."""
    return min(peak_tflops, intensity * hbm_tbps)


def ridge_point(peak_tflops: float, hbm_tbps: float) -> float:
    """Intensity (FLOP/B) at which a kernel stops being memory-bound."""
    return peak_tflops / hbm_tbps


def achieved_tflops(row: dict, flops: float | None) -> float | None:
    """The row's TFLOP/s, else its FLOPs over its median time."""
    tf = num(row.get("tflops"))
    if tf is None and flops and num(row.get("median_s")):
        tf = flops / num(row["median_s"]) / 1e12
    return tf


def tflops_per_watt(tflops: float, watts: float) -> float:
    """Energy efficiency in TFLOP/s per W (= TFLOP per J)."""
    return tflops / watts


# ----------------------------------------------------------------------------------------------
# Figures (matplotlib, Agg: no display needed)
# ----------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_png(fig) -> bytes:
    """PNG bytes of a figure, without metadata (no version strings or URLs in the page)."""
    plt = _plt()
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
    plt = _plt()
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
             unit: str) -> bytes:
    """Horizontal grouped bars: one group per shape, one bar per backend."""
    plt = _plt()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(8, 1.0 + 0.32 * n * max(1, len(series)) ** 0.5))
    height = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        ys = [j + i * height for j in range(n)]
        ax.barh(ys, [v or 0.0 for v in values], height=height, label=name,
                color=BACKEND_COLOURS.get(name.split(" ")[0]))
    ax.set_yticks([j + 0.4 - height / 2 for j in range(n)])
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(unit)
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7)
    return to_png(fig)


def lines_png(title: str, series: dict[str, tuple[list[float], list[float]]], xlabel: str,
              ylabel: str, *, logx: bool = True, logy: bool = False,
              hlines: dict[str, float] | None = None, xbytes: bool = False) -> bytes:
    """Line plot of named (x, y) series, with optional labelled horizontal reference lines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o", ms=3, label=name)
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
    return to_png(fig)


# ----------------------------------------------------------------------------------------------
# Measured sections
# ----------------------------------------------------------------------------------------------

def roofline_section(rows: list[dict], prov: Provenance) -> Section:
    sec = Section("roofline", "Roofline: every measured kernel on the H100 and H200 roofs",
                  intro="Arithmetic intensity is the case's FLOPs over its compulsory HBM bytes "
                        "(the workload's own formulas); roofs are datasheet peaks, the dashed "
                        "line the best measured HBM bandwidth.")
    points = []
    for r in rows:
        if r["workload"] in ALLREDUCE_WORKLOADS or r["workload"] == "membw":
            continue
        fb = flops_and_bytes(r)
        tf = achieved_tflops(r, fb[0] if fb else None)
        if fb is None or tf is None or tf <= 0:
            continue
        points.append({"row": r, "gpu": gpu_model(r), "workload": r["workload"],
                       "backend": r["backend"], "dtype": r["dtype"],
                       "ai": arithmetic_intensity(*fb), "tflops": tf})
    membw = [r for r in rows if r["workload"] == "membw" and num(r.get("gbps"))]
    best_bw: dict[str, dict] = {}
    for r in membw:
        g = gpu_model(r)
        if g not in best_bw or num(r["gbps"]) > num(best_bw[g]["gbps"]):
            best_bw[g] = r
    gpus = list(ROOF_GPUS) + sorted({p["gpu"] for p in points if p["gpu"] in PEAKS}
                                    - set(ROOF_GPUS))
    bandwidths = {g: num(r["gbps"]) / 1000 for g, r in best_bw.items()}
    roof_refs = tuple(prov.source(PEAKS[g].source, "published") for g in gpus)
    measured_refs = prov.runs_of([p["row"] for p in points] + list(best_bw.values()))
    sec.figures.append(Figure("roofline", "Roofline", roofline_png(points, bandwidths, gpus),
                              Cell("Roofs: datasheet dense peaks and HBM bandwidth; points: "
                                   "measured results.", roof_refs + measured_refs)))
    for g in gpus:
        pk = PEAKS[g]
        sec.notes.append(Cell(f"{g}: bf16 roof {pk.bf16_tflops:.0f} TFLOP/s, HBM "
                              f"{pk.hbm_tbps} TB/s, ridge point "
                              f"{ridge_point(pk.bf16_tflops, pk.hbm_tbps):.0f} FLOP/byte",
                              (prov.source(pk.source, "published"),)))
    if not points and not membw:
        sec.empty = NO_MEASUREMENTS
        return sec
    if points:
        table = Table(["device", "workload", "backend", "dtype", "shape", "FLOP/byte",
                       "TFLOP/s", "% of roof"], [],
                      "Every kernel result; % of roof = achieved over the attainable TFLOP/s "
                      "at its intensity on the datasheet roof.")
        for p in sorted(points, key=lambda p: (p["gpu"], p["workload"], p["dtype"],
                                               shape_label(p["workload"], p["row"]["params"]),
                                               p["backend"])):
            pk = PEAKS.get(p["gpu"])
            roof = attainable_tflops(p["ai"], pk.tflops(p["dtype"]), pk.hbm_tbps) \
                if pk and pk.tflops(p["dtype"]) else None
            ref = (prov.run(p["row"]),)
            table.rows.append([Cell(p["gpu"]), Cell(p["workload"]), Cell(p["backend"]),
                               Cell(p["dtype"]), Cell(shape_label(p["workload"],
                                                                  p["row"]["params"])),
                               Cell(fmt(p["ai"])), Cell(fmt(p["tflops"]), ref),
                               Cell(fmt(100 * p["tflops"] / roof if roof else None), ref)])
        sec.tables.append(table)
    if membw:
        table = Table(["device", "op", "size", "backend", "GB/s (read + write)",
                       "% of datasheet HBM"], [],
                      "HBM bandwidth, STREAM convention: bytes read plus written.")
        for r in sorted(membw, key=lambda r: (gpu_model(r), r["params"].get("op", ""),
                                              num(r["params"].get("bytes")) or 0, r["backend"])):
            pk = PEAKS.get(gpu_model(r))
            gbps, ref = num(r["gbps"]), (prov.run(r),)
            pct = 100 * gbps / (pk.hbm_tbps * 1000) if pk and pk.hbm_tbps else None
            table.rows.append([Cell(gpu_model(r)), Cell(str(r["params"].get("op", "?"))),
                               Cell(fmt_bytes(num(r["params"].get("bytes")) or 0)),
                               Cell(r["backend"]), Cell(fmt(gbps), ref),
                               Cell(fmt(pct), ref)])
        sec.tables.append(table)
    return sec


def compare_backends(rows: list[dict], workload: str) -> list[dict]:
    """Per (device, dtype, shape): our TFLOP/s, the best baseline's, and their ratio."""
    groups: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["workload"] != workload or num(r.get("tflops")) is None:
            continue
        key = (gpu_model(r), r["dtype"], shape_label(workload, r["params"]))
        best = groups.setdefault(key, {})
        if r["backend"] not in best or num(r["tflops"]) > num(best[r["backend"]]["tflops"]):
            best[r["backend"]] = r
    out = []
    for (gpu, dtype, shape), by in sorted(groups.items()):
        base = [by[b] for b in BASELINES[workload] if b in by]
        top = max(base, key=lambda r: num(r["tflops"])) if base else None
        ours = by.get(OURS)
        if ours is None and top is None:
            continue
        ratio = num(ours["tflops"]) / num(top["tflops"]) if ours and top else None
        out.append({"gpu": gpu, "dtype": dtype, "shape": shape, "ours": ours, "base": top,
                    "ratio": ratio})
    return out


def baselines_section(rows: list[dict], prov: Provenance) -> Section:
    sec = Section("baselines", "Our kernels against the vendor baselines",
                  intro=f"TFLOP/s by shape: our Triton kernels against torch (cuBLAS) for GEMM "
                        f"and the fastest torch SDPA backend ({', '.join(BASELINES['attention'])}"
                        f") for attention; ratio > 1 means ours is faster.")
    any_rows = False
    for workload, base_name in (("gemm", "torch"), ("attention", "best sdpa")):
        comp = compare_backends(rows, workload)
        if not comp:
            continue
        any_rows = True
        table = Table(["device", "dtype", "shape", f"{OURS} TFLOP/s", f"{base_name} TFLOP/s",
                       "baseline", "ratio"], [], f"{workload}: {OURS} against {base_name}")
        for c in comp:
            o, b = c["ours"], c["base"]
            refs = prov.runs_of([x for x in (o, b) if x])
            table.rows.append([
                Cell(c["gpu"]), Cell(c["dtype"]), Cell(c["shape"]),
                Cell(fmt(num(o["tflops"])) if o else "not measured", (prov.run(o),) if o else ()),
                Cell(fmt(num(b["tflops"])) if b else "not measured", (prov.run(b),) if b else ()),
                Cell(b["backend"] if b else "-"), Cell(fmt(c["ratio"], ".2f"), refs)])
        sec.tables.append(table)
        shown = comp[:MAX_BAR_SHAPES]
        labels = [f"{c['gpu']} {c['dtype']} {c['shape']}" for c in shown]
        series = {OURS: [num(c["ours"]["tflops"]) if c["ours"] else None for c in shown],
                  base_name: [num(c["base"]["tflops"]) if c["base"] else None for c in shown]}
        more = f" (first {len(shown)} of {len(comp)} shapes; the table lists all)" \
            if len(comp) > len(shown) else ""
        refs = prov.runs_of([x for c in shown for x in (c["ours"], c["base"]) if x])
        sec.figures.append(Figure(f"baseline-{workload}", f"{workload}: {OURS} vs {base_name}",
                                  bars_png(f"{workload}: {OURS} vs {base_name}", labels, series,
                                           "TFLOP/s"),
                                  Cell(f"{workload} TFLOP/s by shape{more}.", refs)))
    if not any_rows:
        sec.empty = NO_MEASUREMENTS
    return sec


def allreduce_section(rows: list[dict], prov: Provenance) -> Section:
    from reports.model.measurements import NVLINK_FALLBACK  # published 8-GPU figures, with sources

    sec = Section("allreduce", "All-reduce bus bandwidth by size",
                  intro="busbw = algbw x 2(n-1)/n (nccl-tests doc/PERFORMANCE.md): comparable "
                        "across GPU counts; dashed lines are published 8-GPU figures.")
    ar = [r for r in rows if is_all_reduce(r) and num(r["params"].get("bytes"))]
    if not ar:
        sec.empty = NO_MEASUREMENTS
        return sec
    series: dict[str, dict[float, dict]] = {}
    for r in ar:
        name = (f"{gpu_model(r)} x{count(r.get('world_size'))} {r['backend']} "
                f"{r['params'].get('placement', 'out')}-place")
        size = num(r["params"]["bytes"])
        cur = series.setdefault(name, {})
        if size not in cur or num(r["busbw_gbps"]) > num(cur[size]["busbw_gbps"]):
            cur[size] = r
    xy = {name: (sorted(pts), [num(pts[s]["busbw_gbps"]) for s in sorted(pts)])
          for name, pts in sorted(series.items())}
    hlines, hrefs = {}, []
    for g in sorted({gpu_model(r) for r in ar}):
        if g in NVLINK_FALLBACK:
            f = NVLINK_FALLBACK[g]
            hlines[f"{g} published 8-GPU ring ({f.value:.0f} GB/s)"] = f.value
            hrefs.append(prov.source(f.source))
    sec.figures.append(Figure("allreduce", "All-reduce busbw",
                              lines_png("all-reduce bus bandwidth", xy, "message size",
                                        "busbw (GB/s)", hlines=hlines, xbytes=True),
                              Cell("Measured all-reduce busbw by message size.",
                                   prov.runs_of(ar) + tuple(hrefs))))
    table = Table(["series", "size", "busbw GB/s", "algbw GB/s"], [])
    for name, pts in sorted(series.items()):
        for size in sorted(pts):
            r = pts[size]
            ref = (prov.run(r),)
            table.rows.append([Cell(name), Cell(fmt_bytes(size)),
                               Cell(fmt(num(r["busbw_gbps"])), ref),
                               Cell(fmt(num(r.get("algbw_gbps"))), ref)])
    sec.tables.append(table)
    return sec


def power_rows(rows: list[dict]) -> list[dict]:
    """Kernel rows with NVML power: the measured side of the power section."""
    return [r for r in rows if r["workload"] in (*KERNEL_WORKLOADS, "membw")
            and num(r["telemetry"].get("power_w_mean"))]


def measured_power_table(rows: list[dict], prov: Provenance) -> Table | None:
    pr = power_rows(rows)
    if not pr:
        return None
    table = Table(["device", "workload", "backend", "dtype", "shape", "power W (mean)",
                   "TFLOP/s", "TFLOP/s per kW", "SM clock MHz (min)", "throttle"], [],
                  "Measured GPU power (NVML) while each kernel ran.")
    for r in sorted(pr, key=lambda r: (gpu_model(r), r["workload"], r["dtype"],
                                       shape_label(r["workload"], r["params"]), r["backend"])):
        t, ref = r["telemetry"], (prov.run(r),)
        w, tf = num(t["power_w_mean"]), num(r.get("tflops"))
        thr = t.get("throttle_reasons") or []
        table.rows.append([Cell(gpu_model(r)), Cell(r["workload"]), Cell(r["backend"]),
                           Cell(r["dtype"]), Cell(shape_label(r["workload"], r["params"])),
                           Cell(fmt(w, ".0f"), ref), Cell(fmt(tf), ref),
                           Cell(fmt(1000 * tflops_per_watt(tf, w) if tf and w else None), ref),
                           Cell(fmt(num(t.get("sm_clock_mhz_min")), ".0f"), ref),
                           Cell(", ".join(map(str, thr)) if thr else "none")])
    return table


def failed_note(frame, usable: int) -> Cell | None:
    """How many rows of the measurements did not count, and why."""
    if frame is None or len(frame) == 0:
        return None
    skipped = len(frame) - usable
    if not skipped:
        return None
    return Cell(f"{skipped} of {len(frame)} rows are not shown: failed, skipped, or kernels "
                f"not checked correct.")


# ----------------------------------------------------------------------------------------------
# Model sections: the scaling model, fed the same measurements
# ----------------------------------------------------------------------------------------------

RACK_GPUS = 64  # pools scale in whole racks: 8 servers x 8 GPUs (ANCHORS.md, Colossus)
# the base the H200-gain comparison builds its one-GPU-type clusters on (reports.model.scaling)
H200_GAIN_BASE = "colossus-100k"


@dataclass(frozen=True)
class ReportConfig:
    """What the model sections compute: plain data, with named presets in CONFIGS."""

    model: str = "llama3-405b"  # the model the cluster-scale figures are quoted for
    clusters: tuple[str, ...] = ("colossus-100k", "colossus-200k", "colossus-200k-h200")
    sweep_gpus: tuple[int, ...] = (1024, 4096, 16384, 65536)  # plus each preset's own size
    # the every-model table at each preset's full size (empty: left out)
    models: tuple[str, ...] = ("gpt3-175b", "llama3-70b", "llama3-405b", "dense-1t")
    h200_gain_gpus: int = 16384  # the size of Llama 3's H100 run (Dubey et al. 2024)
    goodput_gpus: tuple[int, ...] = (1024, 4096, 16384, 65536, 100_000, 200_000)


CONFIGS: dict[str, ReportConfig] = {
    "full": ReportConfig(),
    # fewer searches (tests, previews): the same sections at fewer points
    "quick": ReportConfig(sweep_gpus=(4096,), models=()),
}
# representative shapes for the model-inputs table: the 8192^3 anchor GEMM; attention at the
# Llama 3 pre-training context (seq 8192, head dim 128, causal; Dubey et al. 2024)
INPUT_GEMM = (8192, 8192, 8192)
INPUT_ATTENTION = (8192, 128, True)


def source_kind(text: str, kind: str | None = None) -> str:
    """measured | reference | calibrated | assumption | published, from a Figure kind or text."""
    if kind in ("measured", "reference", "calibrated", "assumption"):
        return kind
    low = text.lower()
    for k in ("measured", "reference", "calibrated"):
        if low.startswith(k):
            return k
    return "assumption" if "assumption" in low else "published"


@dataclass
class InputRow:
    """One figure a modelled number rests on: what, its value, its kind and refs."""

    name: str
    value: str
    kind: str
    source: str
    refs: tuple[Ref, ...]


class ModelContext:
    """What the model sections share: the measurements, the provenance, and the input sets.

    A modelled number points to input sets (I labels): one per GPU type (GEMM, attention, HBM,
    NVLink, power as the model sees them) and one per cluster preset (pools, fabric, power
    overheads); the Model inputs section lists each set's rows with their R and S refs.
    """

    def __init__(self, frame, rows: list[dict], prov: Provenance, config: ReportConfig):
        from reports.model.measurements import Measurements

        self.config = config
        # the frame as chosen by the caller, never mixed with another; the shipped reference is
        # read by Measurements itself, so its figures are labelled reference results
        if prov.origin == REFERENCE:
            self.meas = Measurements(None, use_reference=True)
        else:
            self.meas = Measurements(frame if rows else None, use_reference=False)
        self.rows = rows
        self.prov = prov
        self.sets: dict[str, tuple[Ref, str, list[InputRow]]] = {}  # key -> (ref, title, rows)

    def _input_set(self, key: str, title: str, build) -> Ref:
        if key not in self.sets:
            ref = Ref(f"I{len(self.sets) + 1}")
            self.sets[key] = (ref, title, [])
            self.sets[key][2].extend(build())
        return self.sets[key][0]

    def _row(self, name: str, value: str, fig, gpu_name: str,
             workloads: tuple[str, ...]) -> InputRow:
        kind = source_kind(fig.source, fig.kind)
        refs = (self.prov.source(fig.source, kind),)
        if kind in ("measured", "reference"):
            refs += self.prov.runs_of(r for r in self.rows if gpu_model(r) == gpu_name
                                      and r["workload"] in workloads)
        return InputRow(name, value, kind, fig.source, refs)

    def gpu_set(self, gpu_name: str) -> Ref:
        """The I ref of a GPU type's inputs."""
        from reports.model.hardware import gpu

        def build() -> list[InputRow]:
            g, m = gpu(gpu_name), self.meas
            s, d, causal = INPUT_ATTENTION
            _, gemm = m.gemm_seconds(g, *INPUT_GEMM)
            fwd = m.attention_tflops(g, s, d, causal, "fwd")
            bwd = m.attention_tflops(g, s, d, causal, "bwd")
            hbm, nvl, pw = m.hbm_tbps(g), m.nvlink_busbw_gbps(g), m.gemm_power_w(g)
            att = f"s={s} d={d}{' causal' if causal else ''}"
            return [
                self._row("GEMM bf16 8192^3", f"{gemm.value:.0f} TFLOP/s", gemm, gpu_name,
                          ("gemm",)),
                self._row(f"attention fwd {att}", f"{fwd.value:.0f} TFLOP/s", fwd, gpu_name,
                          ("attention",)),
                self._row(f"attention bwd {att}", f"{bwd.value:.0f} TFLOP/s", bwd, gpu_name,
                          ("attention",)),
                self._row("HBM bandwidth", f"{hbm.value:.2f} TB/s", hbm, gpu_name, ("membw",)),
                self._row("NVLink all-reduce busbw", f"{nvl.value:.0f} GB/s", nvl, gpu_name,
                          ALLREDUCE_WORKLOADS),
                self._row("GPU power under load", f"{pw.value:.0f} W", pw, gpu_name,
                          ("gemm",)),
            ]

        return self._input_set(f"gpu:{gpu_name}", f"GPU {gpu_name}", build)

    def cluster_set(self, name: str) -> Ref:
        """The I ref of a cluster preset's inputs (pools, node shape, fabric, power)."""
        from reports.model.hardware import cluster

        def build() -> list[InputRow]:
            c = cluster(name)
            f, pw, src = c.fabric, c.power, c.sources

            def row(what: str, value: str, text: str) -> InputRow:
                kind = source_kind(text)
                return InputRow(what, value, kind, text, (self.prov.source(text, kind),))

            pools = ", ".join(f"{p.gpus:,} {p.gpu}" for p in c.pools)
            rows = [row("GPU pools", pools, src.get("pools", "assumption: not stated")),
                    row("GPUs per node", str(c.gpus_per_node),
                        src.get("gpus_per_node", "assumption: not stated"))]
            rows += [row(f"fabric {f.name}: {k}", v, f.sources.get(k, "assumption: not stated"))
                     for k, v in (("gbps_per_gpu", f"{f.gbps_per_gpu:.0f} Gb/s per GPU"),
                                  ("efficiency", f"{f.efficiency:.0%} = {f.busbw_gbps:.1f} GB/s"),
                                  ("alpha_s", f"{f.alpha_s * 1e6:.1f} us per step"))]
            rows.append(row("NVLink step latency", f"{c.nvlink_alpha_s * 1e6:.1f} us",
                            src.get("nvlink_alpha_s", "assumption: not stated")))
            rows.append(row("power beyond the GPUs",
                            f"{pw.node_overhead_w / 1000:.1f} kW per node, network "
                            f"{pw.network_fraction:.0%}, PUE {pw.pue}",
                            src.get("power", "assumption: not stated")))
            if c.reported_power_mw:
                rows.append(row("reported site power", f"{c.reported_power_mw:.0f} MW",
                                src.get("reported_power_mw", "")))
            return rows

        return self._input_set(f"cluster:{name}", f"cluster {name}", build)

    def constants(self) -> list:
        """(name, Figure) of the model-wide constants the Measurements object carries (the
        calibrated framework efficiency, the SM share of overlapped collectives, ...)."""
        from reports.model.measurements import Figure as MFigure

        return [(k, v) for k, v in vars(self.meas).items() if isinstance(v, MFigure)]

    def constants_set(self) -> Ref | None:
        """The I ref of the model-wide constants, or None when there are none."""
        if not self.constants():
            return None

        def build() -> list[InputRow]:
            out = []
            for name, fig in self.constants():
                kind = source_kind(fig.source, fig.kind)
                out.append(InputRow(name.replace("_", " "), f"{fig.value:.3g}", kind, fig.source,
                                    (self.prov.source(fig.source, kind),)))
            return out

        return self._input_set("constants", "model-wide constants (every GPU type)", build)

    def basis(self, gpu_names: Iterable[str], cluster: str | None = None) -> tuple[Ref, ...]:
        """The I refs an estimate on these GPU types (and this cluster preset) rests on."""
        refs = [self.gpu_set(g) for g in dict.fromkeys(gpu_names)]
        refs += [self.cluster_set(cluster)] if cluster else []
        const = self.constants_set()
        return tuple(refs + ([const] if const else []))


def inputs_section(ctx: ModelContext) -> Section:
    """The input sets every modelled number points to (built last: it lists all sets used)."""
    sec = Section("inputs", "Model inputs: what the estimates rest on",
                  intro="The scaling model prices every GEMM, attention kernel and collective "
                        "with these figures: measured where the measurements have them, else "
                        "the labelled published figure or assumption. Modelled numbers point "
                        "here (I labels); each row points to its run (R) or source (S).")
    for g in ROOF_GPUS:
        ctx.gpu_set(g)
    kinds = []
    for _, (ref, title, rows) in sorted(ctx.sets.items(), key=lambda kv: int(kv[1][0].label[1:])):
        table = Table(["input", "value", "kind", "source"], [], f"{ref.label}: {title}",
                      id=ref.anchor)
        for r in rows:
            table.rows.append([Cell(r.name), Cell(r.value, r.refs), Cell(r.kind),
                               Cell(r.source)])
            kinds.append(r.kind)
        sec.tables.append(table)
    measured = sum(k in ("measured", "reference") for k in kinds)
    sec.notes.append(Cell(f"{measured} of {len(kinds)} inputs are measured; the rest are "
                          f"published figures, calibrated constants or assumptions."))
    return sec


def scaled_cluster(name: str, gpus: int):
    """A cluster preset at another size: each GPU pool keeps its share, in whole racks."""
    from reports.model.hardware import Pool, cluster

    c = cluster(name)
    if gpus == c.gpus:
        return c
    pools = tuple(Pool(p.gpu, max(RACK_GPUS, round(p.gpus / c.gpus * gpus / RACK_GPUS)
                                  * RACK_GPUS)) for p in c.pools)
    return c.with_pools(pools, name=f"{name}@{gpus}")


def sweep_estimate(ctx: ModelContext, cluster_name: str, gpus: int, model: str):
    """The best-configuration estimate of `model` on a preset scaled to `gpus` GPUs (batch:
    reports.model.scaling.TOKENS_PER_GPU_PER_STEP per GPU), or None when nothing fits."""
    from reports.model.scaling import TOKENS_PER_GPU_PER_STEP, Scenario, ScenarioError, estimate
    from reports.model.step import Training, model_from

    c = scaled_cluster(cluster_name, gpus)
    m = model_from(model)
    scn = Scenario(f"{model}@{c.name}", m, c, None, Training(),
                   max(m.seq_len, TOKENS_PER_GPU_PER_STEP * c.gpus))
    try:
        return estimate(scn, ctx.meas)
    except ScenarioError:
        return None


def parallel_text(p: dict) -> str:
    """'tp8 pp10 cp2 dp625 mb1 v1 rc:none'."""
    return (f"tp{p['tp']} pp{p['pp']} cp{p['cp']} dp{p['dp']} mb{p['micro_batch']} "
            f"v{p['virtual_stages']} rc:{p['recompute']}")


def throughput_section(ctx: ModelContext) -> Section:
    from reports.model.hardware import cluster
    from reports.model.scaling import TOKEN_BUDGETS, cluster_throughput

    cfg = ctx.config
    sec = Section("throughput", "Throughput against GPU count (cluster presets)",
                  intro=f"{cfg.model} on each Colossus preset scaled from "
                        f"{min(cfg.sweep_gpus):,} GPUs to its full size (GPU types in the "
                        f"preset's proportions, whole 64-GPU racks); the model searches the "
                        f"fastest parallel configuration that fits, with 1,024 tokens per GPU "
                        f"per step (Llama 3's ratio).")
    budget, budget_src = TOKEN_BUDGETS.get(cfg.model, (None, ""))
    bref = (ctx.prov.source(budget_src),) if budget_src else ()
    series: dict[str, tuple[list[float], list[float]]] = {}
    mfu_series: dict[str, tuple[list[float], list[float]]] = {}
    table = Table(["cluster", "GPUs", "parallel (best found)", "tokens/s", "TFLOP/s per GPU",
                   "MFU", "time to train"], [],
                  f"Time to train: {budget / 1e12:.1f}T tokens." if budget else "")
    all_refs: list[Ref] = []
    for name in cfg.clusters:
        c = cluster(name)
        refs = ctx.basis(c.gpu_types, name)
        all_refs += refs
        xs, ys, ms = [], [], []
        for n in sorted({*cfg.sweep_gpus, c.gpus}):
            est = sweep_estimate(ctx, name, n, cfg.model)
            if est is None:
                table.rows.append([Cell(name), Cell(f"{n:,}"), Cell("does not fit"), Cell("-"),
                                   Cell("-"), Cell("-"), Cell("-")])
                continue
            days = est.days_to_train(budget) if budget else None
            xs.append(est.gpus)
            ys.append(est.tokens_per_s)
            ms.append(100 * est.mfu)
            table.rows.append([Cell(name), Cell(f"{est.gpus:,}"),
                               Cell(parallel_text(est.parallel.to_dict())),
                               Cell(f"{est.tokens_per_s / 1e6:.2f} M", refs),
                               Cell(f"{est.tflops_per_gpu:.0f}", refs),
                               Cell(f"{100 * est.mfu:.1f}%", refs),
                               Cell(fmt_days(days), refs + bref)])
            if name == cfg.clusters[0] and n == c.gpus:
                sec.headline.append((f"{cfg.model} on {name} (modelled)", Cell(
                    f"{est.tokens_per_s / 1e6:.1f} M tokens/s, MFU {100 * est.mfu:.0f}%"
                    + (f", {fmt_days(days)} for {budget / 1e12:.1f}T tokens" if days else ""),
                    refs + bref)))
        series[name] = (xs, ys)
        mfu_series[name] = (xs, ms)
    sec.figures.append(Figure("throughput", "Tokens/s against GPU count",
                              lines_png(f"{cfg.model}: tokens/s against GPU count", series,
                                        "GPUs", "tokens/s", logy=True),
                              Cell("Modelled, from the input sets", tuple(all_refs))))
    sec.figures.append(Figure("mfu", "MFU against GPU count",
                              lines_png(f"{cfg.model}: MFU against GPU count", mfu_series,
                                        "GPUs", "MFU (% of dense bf16 peak)"),
                              Cell("Model FLOPs utilisation (recomputation not counted)",
                                   tuple(all_refs))))
    sec.tables.append(table)
    if not cfg.models:
        return sec
    models = Table(["cluster", "model", "GPUs", "parallel", "tokens/s", "MFU",
                    "time to train", "token budget"], [],
                   "Each workload preset at each cluster preset's full size.")
    for row in cluster_throughput(cfg.models, cfg.clusters, ctx.meas):
        refs = ctx.basis(cluster(row["cluster"]).gpu_types, row["cluster"])
        tref = (ctx.prov.source(row["token_budget_source"]),) if row["token_budget_source"] \
            else ()
        models.rows.append([Cell(row["cluster"]), Cell(row["model"]), Cell(f"{row['gpus']:,}"),
                            Cell(parallel_text(row["parallel"])),
                            Cell(f"{row['tokens_per_s'] / 1e6:.2f} M", refs),
                            Cell(f"{100 * row['mfu']:.1f}%", refs),
                            Cell(fmt_days(row["days_to_train"]), refs + tref),
                            Cell(f"{row['token_budget'] / 1e12:.2f}T tokens" if
                                 row["token_budget"] else "-", tref)])
    sec.tables.append(models)
    return sec


def measured_h200_ratios(rows: list[dict], prov: Provenance) -> Table | None:
    """Per case and backend measured on both GPUs: H200 over H100 (TFLOP/s, or GB/s)."""
    by: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        metric = "tflops" if num(r.get("tflops")) else "gbps" if num(r.get("gbps")) else None
        if metric is None or r["workload"] in ALLREDUCE_WORKLOADS:
            continue
        key = (r["workload"], r["backend"], r["dtype"], shape_label(r["workload"], r["params"]),
               metric)
        best = by.setdefault(key, {})
        g = gpu_model(r)
        if g not in best or num(r[metric]) > num(best[g][metric]):
            best[g] = r
    table = Table(["workload", "backend", "dtype", "shape", "H100-SXM", "H200-SXM",
                   "H200 / H100"], [], "Measured on both GPUs (TFLOP/s, or GB/s for membw).")
    for (wl, be, dt, shape, metric), g in sorted(by.items()):
        if "H100-SXM" not in g or "H200-SXM" not in g:
            continue
        a, b = num(g["H100-SXM"][metric]), num(g["H200-SXM"][metric])
        ra, rb = (prov.run(g["H100-SXM"]),), (prov.run(g["H200-SXM"]),)
        table.rows.append([Cell(wl), Cell(be), Cell(dt), Cell(shape), Cell(fmt(a), ra),
                           Cell(fmt(b), rb), Cell(f"{b / a:.2f}x", ra + rb)])
    return table if table.rows else None


def h200_section(ctx: ModelContext) -> Section:
    from reports.model.hardware import cluster
    from reports.model.scaling import colossus_200k_gain, h200_gain

    cfg = ctx.config
    sec = Section("h200", "The H200 gain",
                  intro="H200 has H100's SMs and clocks with 141 GB of HBM3e at 4.8 TB/s "
                        "(against 80 GB at 3.35 TB/s): it speeds up what is memory-bound and "
                        "lets a model fit with less parallelism.")
    h100_pk, h200_pk = PEAKS["H100-SXM"], PEAKS["H200-SXM"]
    sec.notes.append(Cell(f"Datasheet: HBM {h200_pk.hbm_tbps / h100_pk.hbm_tbps:.2f}x, memory "
                          f"{h200_pk.memory_gb / h100_pk.memory_gb:.2f}x, dense bf16 "
                          f"{h200_pk.bf16_tflops / h100_pk.bf16_tflops:.2f}x.",
                          (ctx.prov.source(h100_pk.source, "published"),
                           ctx.prov.source(h200_pk.source, "published"))))
    measured = measured_h200_ratios(ctx.rows, ctx.prov)
    if measured:
        sec.tables.append(measured)
    else:
        sec.notes.append(Cell(f"Measured H200 against H100 per case: {NO_MEASUREMENTS} (needs "
                              f"the same cases measured on both GPUs)."))
    g = h200_gain(cfg.model, cfg.h200_gain_gpus, ctx.meas)
    refs = ctx.basis(ROOF_GPUS, H200_GAIN_BASE)
    table = Table(["configuration", "parallel", "tokens/s", "MFU", "gain over H100"], [],
                  f"{cfg.model} on {cfg.h200_gain_gpus:,} GPUs of one type (modelled).")
    labels, values = [], []
    for key, label in (("h100", "H100, its best configuration"),
                       ("h200_same_config", "H200, H100's configuration unchanged"),
                       ("h200_own_config", "H200, its own best configuration")):
        d = g[key]
        gain = d.get("gain", 1.0)
        table.rows.append([Cell(label), Cell(parallel_text(d["parallel"])),
                           Cell(f"{d['tokens_per_s'] / 1e6:.2f} M", refs),
                           Cell(f"{100 * d['mfu']:.1f}%", refs), Cell(f"{gain:.3f}x", refs)])
        labels.append(label)
        values.append(d["tokens_per_s"] / 1e6)
    sec.tables.append(table)
    sec.headline.append((f"H200 gain, {cfg.model} on {cfg.h200_gain_gpus:,} GPUs (modelled)",
                         Cell(f"{g['h200_own_config']['gain']:.3f}x tokens/s per GPU with its "
                              f"own best configuration", refs)))
    sec.figures.append(Figure("h200-gain", "H200 gain",
                              bars_png(f"{cfg.model}, {cfg.h200_gain_gpus:,} GPUs", labels,
                                       {"model": values}, "M tokens/s"),
                              Cell("Modelled tokens/s for the three configurations", refs)))
    mixed = Table(["cluster", "GPUs", "parallel (mixed job)", "with H200 tokens/s",
                   "all-H100 same config", "all-H100 own best", "gain (same config)",
                   "gain (vs best)"], [],
                  "The 200k plans against the same GPU count all H100 (best of plain and "
                  "throughput-proportional batches for the mixed job).")
    presets = tuple(c for c in cfg.clusters if len(cluster(c).pools) > 1)
    for row in colossus_200k_gain(cfg.model, ctx.meas, clusters=presets) if presets else []:
        r2 = ctx.basis(cluster(row["cluster"]).gpu_types, row["cluster"])
        mixed.rows.append([Cell(row["cluster"]), Cell(f"{row['gpus']:,}"),
                           Cell(parallel_text(row["parallel"])),
                           Cell(f"{row['mixed_tokens_per_s'] / 1e6:.2f} M", r2),
                           Cell(f"{row['all_h100_same_config_tokens_per_s'] / 1e6:.2f} M", r2),
                           Cell(f"{row['all_h100_best_tokens_per_s'] / 1e6:.2f} M", r2),
                           Cell(f"{row['gain_same_config']:.3f}x", r2),
                           Cell(f"{row['gain_vs_best']:.3f}x", r2)])
    if mixed.rows:
        sec.tables.append(mixed)
    return sec


def power_section(ctx: ModelContext) -> Section:
    from reports.model.hardware import cluster
    from reports.model.scaling import goodput, power

    cfg = ctx.config
    sec = Section("power", "Power and goodput",
                  intro="Site power under training load (GPU power, node overheads, network, "
                        "PUE) and the share of wall time that trains once interruptions and "
                        "checkpoints are paid for (Young/Daly).")
    table = Table(["cluster", "GPUs", "GPU MW", "node overhead MW", "IT MW", "site MW",
                   "reported MW", "kWh per M tokens"], [],
                  f"Modelled power; energy per token for {cfg.model}.")
    for name in cfg.clusters:
        p = power(name, cfg.model, ctx.meas)
        refs = ctx.basis(cluster(name).gpu_types, name)
        rep = (ctx.prov.source(p["reported_source"]),) if p.get("reported_source") else ()
        table.rows.append([Cell(name), Cell(f"{p['gpus']:,}"), Cell(f"{p['gpu_mw']:.1f}", refs),
                           Cell(f"{p['node_overhead_mw']:.1f}", refs),
                           Cell(f"{p['it_mw']:.1f}", refs), Cell(f"{p['site_mw']:.1f}", refs),
                           Cell(fmt(p["reported_mw"], ".0f"), rep),
                           Cell(f"{p['kwh_per_million_tokens']:.2f}", refs)])
        if name == cfg.clusters[0]:
            vs = f" (reported about {p['reported_mw']:.0f} MW)" if p["reported_mw"] else ""
            sec.headline.append((f"{name} site power (modelled)",
                                 Cell(f"{p['site_mw']:.0f} MW{vs}", refs + rep)))
    sec.tables.append(table)
    gtable = Table(["GPUs in one job", "mean time between interruptions",
                    "checkpoint interval", "useful fraction"], [],
                   "Goodput (reports/scaling.py): checkpoint every tau = sqrt(2 delta M) "
                   "(Young/Daly); the useful fraction is what is left after checkpoint writes, "
                   "work lost to interruptions and restarts.")
    xs, ys, grefs = [], [], ()
    for row in goodput(cfg.goodput_gpus):
        rate = ctx.prov.source(f"{row['failures_per_gpu_hour']:.2e} interruptions per GPU-hour: "
                               f"{row['sources']['failures_per_gpu_hour']}")
        ckpt = ctx.prov.source(f"assumption: checkpoint write {row['checkpoint_s']:.0f} s, "
                               f"restart after an interruption {row['restart_s']:.0f} s "
                               f"(reports/scaling.py CHECKPOINT_S, RESTART_S)", "assumption")
        grefs = (rate, ckpt)
        gtable.rows.append([Cell(f"{row['gpus']:,}"),
                            Cell(f"{row['mtbf_s'] / 3600:.2f} h", (rate,)),
                            Cell(f"{row['checkpoint_interval_s'] / 60:.1f} min", grefs),
                            Cell(f"{100 * row['useful_fraction']:.1f}%", grefs)])
        xs.append(row["gpus"])
        ys.append(100 * row["useful_fraction"])
        if row["gpus"] == max(cfg.goodput_gpus):
            sec.headline.append((f"goodput at {row['gpus']:,} GPUs (modelled)", Cell(
                f"{100 * row['useful_fraction']:.0f}% of wall time trains; an interruption "
                f"every {row['mtbf_s'] / 60:.0f} min", grefs)))
    sec.tables.append(gtable)
    sec.figures.append(Figure("goodput", "Goodput against GPU count",
                              lines_png("useful fraction of wall time", {"goodput": (xs, ys)},
                                        "GPUs in one job", "% of wall time training"),
                              Cell("Young/Daly checkpointing at the Llama 3 failure rate",
                                   grefs)))
    return sec


def validation_section(ctx: ModelContext) -> Section:
    from reports.model.hardware import cluster
    from reports.model.validation import CASES, validate

    sec = Section("validation", "Validation: predicted against published runs",
                  intro="The model run with each published configuration, TFLOP/s per GPU "
                        "counted as the paper counts. These are A100 runs: our measurements "
                        "(Hopper) do not enter; the model-wide constants (calibrated ones "
                        "labelled so) are the same for every GPU type.")
    rows = validate()
    cases = {c.name: c for c in CASES}
    table = Table(["run", "GPUs", "published TFLOP/s", "predicted TFLOP/s", "error"], [])
    for r in rows:
        src = (ctx.prov.source(r.source, "published"),)
        case = cases.get(r.name)
        basis = ctx.basis(cluster(case.cluster).gpu_types, case.cluster) if case else ()
        table.rows.append([Cell(r.name), Cell(f"{r.gpus:,}"), Cell(f"{r.published:.0f}", src),
                           Cell(f"{r.predicted:.0f}", basis),
                           Cell(f"{r.error_pct:+.1f}%", src + basis)])
    sec.tables.append(table)
    errs = [abs(r.error_pct) for r in rows]
    mean, worst = sum(errs) / len(errs), max(errs)
    refs = tuple(dict.fromkeys(r for row in table.rows for r in row[4].refs))
    sec.notes.append(Cell(f"{len(rows)} runs: mean |error| {mean:.1f}%, max {worst:.1f}%.",
                          refs))
    sec.headline.append(("model error on published runs",
                         Cell(f"mean |error| {mean:.1f}%, max {worst:.1f}% over {len(rows)} "
                              f"runs", refs)))
    sec.figures.append(Figure("validation", "Predicted against published",
                              scatter_png([r.published for r in rows],
                                          [r.predicted for r in rows],
                                          "published TFLOP/s per GPU",
                                          "predicted TFLOP/s per GPU"),
                              Cell("Each point a published run; the line is perfect "
                                   "agreement", refs)))
    return sec


def scatter_png(x: list[float], y: list[float], xlabel: str, ylabel: str) -> bytes:
    """Predicted against published, with the y = x line."""
    plt = _plt()
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


def model_sections(frame, rows: list[dict], prov: Provenance,
                   config: ReportConfig | None = None) -> list[Section]:
    """The modelled sections, in report order; the inputs section comes first but is built last,
    once every input set the others point to is known."""
    ctx = ModelContext(frame, rows, prov, config or CONFIGS["full"])
    others = [throughput_section(ctx), h200_section(ctx), power_section(ctx),
              validation_section(ctx)]
    return [inputs_section(ctx), *others]


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

def md_cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = md_cell
    return env


@dataclass
class Report:
    """Everything both templates render."""

    title: str
    generated: str
    origin: str
    summary: Section
    sections: list[Section]
    runs: list[Run]
    sources: list[SourceNote]

    @property
    def all_sections(self) -> list[Section]:
        return [self.summary, *self.sections]


def render(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write report.html, report.md and the PNGs beside the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _environment()
    html = env.get_template("report.html").render(r=report, no_measurements=NO_MEASUREMENTS)
    md = env.get_template("report.md").render(r=report, no_measurements=NO_MEASUREMENTS)
    for sec in report.all_sections:
        for fig in sec.figures:
            (out_dir / fig.filename).write_bytes(fig.png)
    html_path, md_path = out_dir / HTML_NAME, out_dir / MD_NAME
    html_path.write_text(html, encoding="utf-8")
    md_path.write_text(md, encoding="utf-8")
    return html_path, md_path


def assemble_report(frame, *, origin: str | None = None, generated: str | None = None,
                    config: ReportConfig | str = "full") -> Report:
    """The report as data (sections, runs, sources) from a results frame, or None.

    `origin` says where the frame came from ("local table", "shipped reference results");
    `config` is a ReportConfig or a CONFIGS name.
    """
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown report config {config!r}; known: {', '.join(CONFIGS)}")
        config = CONFIGS[config]
    if not isinstance(config, ReportConfig):
        raise TypeError(f"config must be a ReportConfig or a name, not {type(config).__name__}")
    if frame is not None and not (hasattr(frame, "to_dict") and hasattr(frame, "columns")):
        raise TypeError(f"frame must be a pandas DataFrame or None, not {type(frame).__name__}")
    rows = usable_rows(frame)
    origin = origin or ("results frame" if rows else "none")
    prov = Provenance(origin)
    measured = [roofline_section(rows, prov), baselines_section(rows, prov),
                allreduce_section(rows, prov)]
    modelled = model_sections(frame, rows, prov, config)
    power = next(s for s in modelled if s.id == "power")
    table = measured_power_table(rows, prov)
    if table:
        power.tables.insert(0, table)
    else:
        power.notes.insert(0, Cell(f"Measured power: {NO_MEASUREMENTS}."))
    sections = measured + modelled
    summary = summary_section(rows, prov, sections, frame)
    now = generated or datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return Report("colossus-bench report", now, origin, summary, sections,
                  sorted(prov.runs.values(), key=lambda r: int(r.label[1:])),
                  sorted(prov.sources.values(), key=lambda s: int(s.label[1:])))


def build_report(frame, out_dir: str | Path, *, origin: str | None = None,
                 generated: str | None = None,
                 config: ReportConfig | str = "full") -> tuple[Path, Path]:
    """Build the report from a results frame (or None: no measurements) into out_dir:
    report.html (self-contained) and report.md with its PNGs. Returns (html_path, md_path)."""
    report = assemble_report(frame, origin=origin, generated=generated, config=config)
    return render(report, Path(out_dir))


def summary_section(rows: list[dict], prov: Provenance, sections: list[Section],
                    frame) -> Section:
    """Headline figures first: the best measured kernels, then the model's headline numbers."""
    sec = Section("summary", "Summary")
    if rows:
        runs = {r.get("run_id") for r in rows}
        sec.intro = (f"Measurements: {len(rows)} results from {len(runs)} run(s) in the "
                     f"{prov.origin}. Every number links to its run (R), source (S) or model "
                     f"inputs (I).")
        for g in sorted({gpu_model(r) for r in rows}):
            mine = [r for r in rows if gpu_model(r) == g]
            for wl, what in (("gemm", "best GEMM"), ("attention", "best attention")):
                cand = [r for r in mine if r["workload"] == wl and num(r.get("tflops"))]
                if cand:
                    b = max(cand, key=lambda r: num(r["tflops"]))
                    pk = PEAKS.get(g)
                    peak = pk.tflops(b["dtype"]) if pk else None
                    pct = f", {100 * num(b['tflops']) / peak:.0f}% of datasheet" if peak else ""
                    sec.facts.append((f"{g} {what}", Cell(
                        f"{fmt(num(b['tflops']))} TFLOP/s ({b['backend']}, {b['dtype']}, "
                        f"{shape_label(wl, b['params'])}{pct})", (prov.run(b),))))
            bw = [r for r in mine if r["workload"] == "membw" and num(r.get("gbps"))]
            if bw:
                b = max(bw, key=lambda r: num(r["gbps"]))
                sec.facts.append((f"{g} HBM bandwidth", Cell(
                    f"{num(b['gbps']) / 1000:.2f} TB/s ({b['params'].get('op')}, "
                    f"{b['backend']})", (prov.run(b),))))
            ar = [r for r in mine if is_all_reduce(r)]
            if ar:
                b = max(ar, key=lambda r: num(r["busbw_gbps"]))
                sec.facts.append((f"{g} all-reduce busbw", Cell(
                    f"{num(b['busbw_gbps']):.0f} GB/s (x{count(b.get('world_size'))}, "
                    f"{fmt_bytes(num(b['params'].get('bytes')) or 0)})", (prov.run(b),))))
    else:
        sec.intro = (f"Measured sections: {NO_MEASUREMENTS}. The model sections below render "
                     f"from labelled assumptions and published figures (S and I labels).")
    note = failed_note(frame, len(rows))
    if note:
        sec.notes.append(note)
    for s in sections:
        sec.facts.extend(s.headline)
    return sec
