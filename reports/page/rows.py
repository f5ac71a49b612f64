"""Rows: which measurements a report counts, and the formulas it reads off them.

The table is the interface: a row carries its FLOPs, bytes and shape label (written by the
runner), so nothing here imports torch or the workloads; older rows without them fall back to
their throughput times their median time.
"""

from __future__ import annotations

import math
from typing import Any

from reports.model.frame_rows import as_dict
from reports.page.provenance import REFERENCE
from results.rows import (  # noqa: F401  (re-exported)
    KERNEL_WORKLOADS,
    MEMORY_BOUND_WORKLOADS,
    shown_by_bandwidth,
    usable_records,
)

NO_MEASUREMENTS = ("no measurements: run `colossus-bench run` on a GPU node or ship reference "
                   "results")


ROOF_GPUS = ("H100-SXM", "H200-SXM")  # the roofs every report draws




ALLREDUCE_WORKLOADS = ("allreduce", "all_reduce")  # the record's name, and an older spelling


OURS = "triton"


BASELINES = {"gemm": ("torch",), "attention": ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient",
                                               "sdpa-math")}


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
    """Plain dict rows of the results that count, by the one rule (results/rows.py: the door's
    checks, status ok, kernels checked correct): a stored row no check admits (a made-up date,
    a throughput above the datasheet) never reaches a headline."""
    if frame is None or len(frame) == 0:
        return []
    missing = {"workload", "backend", "dtype", "params", "device", "status"} - set(frame.columns)
    if missing:
        raise ValueError(f"results frame lacks columns {sorted(missing)}; expected the result "
                         f"record's columns (results/schema.py)")
    rows, _ = usable_records(frame.to_dict("records"))
    for rec in rows:
        for k in ("params", "device", "software", "telemetry"):
            rec[k] = as_dict(rec.get(k))
    return rows


def is_gpu_row(row: dict) -> bool:
    """A row measured on a GPU. CPU rows (the Triton interpreter, torch on the CPU) prove the flow
    end to end; they are flow checks, never GPU figures, so no headline, figure or model input
    uses them."""
    return row["device"].get("kind") == "cuda"


def gpu_frame(frame):
    """The frame's rows measured on a GPU (what the scaling model may read), or None."""
    if frame is None or len(frame) == 0 or "device" not in frame.columns:
        return None
    keep = [as_dict(d).get("kind") == "cuda" for d in frame["device"]]
    return frame[keep] if any(keep) else None


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


def parallel_text(p: dict) -> str:
    """'tp8 pp10 cp2 dp625 mb1 v1 rc:none'."""
    return (f"tp{p['tp']} pp{p['pp']} cp{p['cp']} dp{p['dp']} mb{p['micro_batch']} "
            f"v{p['virtual_stages']} rc:{p['recompute']}")


def tokens_range(r: dict | None) -> str:
    """A modelled tokens/s range (search.estimate_range) as '5.84-6.35 M', or '-'."""
    if not r:
        return "-"
    lo, hi = r["tokens_per_s"]
    return f"{lo / 1e6:.2f}-{hi / 1e6:.2f} M"


def flops_and_bytes(row: dict) -> tuple[float, float] | None:
    """(FLOPs, bytes moved) of the row's case, as the runner stored them (`flops`, `bytes`);
    a row from before those fields gets them back from its throughputs times its median time
    (tflops and gbps are those counts over that time). None without both: no roofline point."""
    f, b = num(row.get("flops")), num(row.get("bytes"))
    t = num(row.get("median_s"))
    if f is None and t and num(row.get("tflops")):
        f = num(row["tflops"]) * 1e12 * t
    if b is None and t and num(row.get("gbps")):
        b = num(row["gbps"]) * 1e9 * t
    if not f or not b or f <= 0 or b <= 0:
        return None
    return f, b


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


def gbps_per_watt(gbps: float, watts: float) -> float:
    """Energy efficiency of a memory-bound kernel in GB/s per W (= GB moved per J)."""
    return gbps / watts


def is_memory_bound(row: dict) -> bool:
    """Whether a row is shown by its GB/s rather than its TFLOP/s, as the run table shows it
    (bench/cli.py): a memory-bound workload (MEMORY_BOUND_WORKLOADS), or a row with no TFLOP/s."""
    return shown_by_bandwidth(row["workload"], num(row.get("tflops")))
