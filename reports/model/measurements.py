"""From result rows to the efficiencies the scaling model needs, each with where it came from.

Lookup order for every figure: the frame passed in (rows measured by the user), then the reference
results shipped with the package (`results.reference.load_reference()`, imported lazily so this
module works before that exists), then the fallbacks of reports/model/fallbacks.py, each with
its source string or labelled as an assumption. Rows count only when `status == "ok"` and, for
kernels, `correct` is true; per shape the best row (any backend) wins.

Figures are returned as `Figure(value, source, kind)`; `kind` is "measured", "reference",
"assumption" or "calibrated" (a constant per architecture, fitted in reports/model/validation.py).
"""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Any

from reports.model.fallbacks import (
    ATTENTION_FALLBACK,
    COMM_SM_SHARE,
    FRAMEWORK_EFFICIENCY,
    GEMM_ANCHOR,
    GEMM_LAUNCH_S,
    HBM_FALLBACK,
    NVLINK_FALLBACK,
    Figure,
    anchor_rate,
    framework_efficiency_for,
    gemm_ceiling,
    gemm_time_fallback,
    power_fallback,
)
from reports.model.hardware import GPU
from results.rows import usable_records

__all__ = ["ATTENTION_FALLBACK", "COMM_SM_SHARE", "FRAMEWORK_EFFICIENCY", "GEMM_ANCHOR",
           "HBM_FALLBACK", "NVLINK_FALLBACK", "Figure", "Measurements", "anchor_rate",
           "as_measurements", "gemm_time_fallback"]

log = logging.getLogger(__name__)

@functools.lru_cache(maxsize=1)
def reference_frame():
    """The shipped reference results, or None when results.reference is not there (yet).
    Read once per process: the shipped files do not change while it runs."""
    try:
        from results.reference import load_reference
    except ImportError:
        return None
    try:
        return load_reference()
    except Exception as e:  # a broken shipped file must not break estimates
        log.warning("could not load reference results: %s", e)
        return None


def as_dict(v: Any) -> dict:
    """A record's dict column as a dict, whether it comes from a frame (dict) or from CSV/JSON
    text; anything else is an empty dict."""
    if isinstance(v, dict):
        return v
    if isinstance(v, str) and v.startswith("{"):
        try:
            return json.loads(v)
        except ValueError:
            return {}
    return {}


def _rows(frame, origin: str) -> list[dict]:
    """Plain dict rows of the usable results in a frame, by the one rule (results/rows.py:
    the door's checks, status ok, kernels checked correct), each tagged with its origin."""
    if frame is None or len(frame) == 0:
        return []
    rows, _ = usable_records(frame.to_dict("records"))
    out = []
    for rec in rows:
        for k in ("params", "device", "telemetry"):
            rec[k] = as_dict(rec.get(k))
        rec["_origin"] = origin
        out.append(rec)
    return out


def _intra_node(row: dict, node_gpus: int) -> bool:
    """A collective row over 2..node_gpus ranks (one node's NVLink; a larger world crossed the
    network). world_size must be a whole number."""
    w = _num(row.get("world_size"))
    return w is not None and w == int(w) and 2 <= w <= node_gpus


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


class Measurements:
    """The figures the model needs for each GPU type, from measured rows or fallbacks.

    `frame`: a pandas DataFrame of result records (or None). `use_reference`: also read the shipped
    reference results (lazy import) when the frame has nothing for a figure.
    """

    def __init__(self, frame=None, *, use_reference: bool = True,
                 framework_efficiency: float | dict[str, float] | None = None):
        # per architecture (fallbacks.FRAMEWORK_EFFICIENCY); a number replaces all of them, a
        # dict those it names (calibrate() fits one while the others stay)
        given = framework_efficiency
        if isinstance(given, (int, float)):
            given = {a: given for a in FRAMEWORK_EFFICIENCY}
        self.efficiencies = dict(FRAMEWORK_EFFICIENCY) | {
            a: Figure(v, "given by the caller", "assumption") for a, v in (given or {}).items()}
        self.comm_sm_share = COMM_SM_SHARE
        self._rows = _rows(frame, "measured")
        if use_reference:
            self._rows += _rows(reference_frame(), "reference")
        self._gemm_cache: dict[tuple, Figure] = {}
        self._gemm_tables: dict[tuple[str, str], list[tuple]] = {}
        self._memo: dict[tuple, Figure] = {}
        self.cache: dict = {}  # for callers' derived results (the model's per-layer times)

    def _memoised(self, key: tuple, compute):
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    # -- helpers

    def _select(self, workload: str | tuple[str, ...], gpu: str, origin: str) -> list[dict]:
        names = (workload,) if isinstance(workload, str) else workload
        return [r for r in self._rows if r.get("workload") in names and r["_origin"] == origin
                and r["device"].get("model") == gpu]

    def rows(self, workload: str, gpu: str) -> list[dict]:
        """Usable rows of one workload on one GPU model: the measured ones, else the reference
        ones (each row dict carries `_origin`); for models that read rows of their own."""
        return self._select(workload, gpu, "measured") or self._select(workload, gpu, "reference")

    @staticmethod
    def _label(origin: str) -> str:
        return "measured (rows passed in)" if origin == "measured" else "reference results"

    # -- GEMM

    def _gemm_table(self, gpu: str, origin: str) -> list[tuple]:
        """Best TFLOP/s per (m, n, k) for bf16 GEMMs of one origin: [(m, n, k, tflops, backend)]."""
        key = (gpu, origin)
        if key not in self._gemm_tables:
            best: dict[tuple[int, int, int], tuple[float, str]] = {}
            for r in self._select("gemm", gpu, origin):
                p = r["params"]
                tf = _num(r.get("tflops"))
                if r.get("dtype") != "bf16" or tf is None:
                    continue
                try:
                    shape = (int(p["m"]), int(p["n"]), int(p["k"]))
                except (KeyError, TypeError, ValueError):
                    continue
                if tf > best.get(shape, (0.0, ""))[0]:
                    best[shape] = (tf, str(r.get("backend")))
            self._gemm_tables[key] = [(*s, tf, b) for s, (tf, b) in best.items()]
        return self._gemm_tables[key]

    def gemm_seconds(self, gpu: GPU, m: int, n: int, k: int) -> tuple[float, Figure]:
        """Seconds for one bf16 GEMM of shape (m, n, k) on `gpu`, and the figure it came from."""
        if min(m, n, k) <= 0:
            raise ValueError(f"GEMM dimensions must be positive, got {(m, n, k)}")
        key = (gpu.name, m, n, k)
        if key not in self._gemm_cache:
            self._gemm_cache[key] = self._gemm_figure(gpu, m, n, k)
        fig = self._gemm_cache[key]
        return 2.0 * m * n * k / (fig.value * 1e12), fig

    def _gemm_figure(self, gpu: GPU, m: int, n: int, k: int) -> Figure:
        """Achieved TFLOP/s at (m, n, k): nearest measured shapes (interpolated) or the fallback."""
        for origin in ("measured", "reference"):
            table = self._gemm_table(gpu.name, origin)
            if table:
                return self._interpolate(table, gpu, m, n, k, origin)
        anchor = gemm_ceiling(gpu)
        hbm = self.hbm_tbps(gpu).value
        seconds = gemm_time_fallback(m, n, k, gpu, anchor.value, hbm)
        return Figure(2.0 * m * n * k / seconds / 1e12,
                      f"fallback GEMM model (wave quantisation over {gpu.sm_count} SMs, tile and "
                      f"k efficiency, roofline, {GEMM_LAUNCH_S * 1e6:.0f} us launch) anchored on "
                      f"{anchor.source}", anchor.kind)

    @staticmethod
    def _interpolate(table: list[tuple], gpu: GPU, m: int, n: int, k: int,
                     origin: str) -> Figure:
        """Inverse-distance weighting of efficiency over the 4 nearest shapes in log2(m, n, k)."""
        target = (math.log2(m), math.log2(n), math.log2(k))
        ranked = sorted(
            (math.dist(target, (math.log2(a), math.log2(b), math.log2(c))), tf, (a, b, c), be)
            for a, b, c, tf, be in table)
        d0, tf0, shape0, be0 = ranked[0]
        where = f"{Measurements._label(origin)}: gemm bf16 {gpu.name}"
        if d0 < 1e-9:
            return Figure(tf0, f"{where} {shape0[0]}x{shape0[1]}x{shape0[2]} ({be0})", origin)
        near = ranked[:4]
        weights = [1.0 / d**2 for d, *_ in near]
        tf = sum(w * t for w, (_, t, _, _) in zip(weights, near, strict=True)) / sum(weights)
        return Figure(tf, f"{where}, interpolated from {len(near)} nearest of {len(table)} shapes "
                          f"(nearest {shape0[0]}x{shape0[1]}x{shape0[2]}, {be0})", origin)

    # -- attention

    def attention_tflops(self, gpu: GPU, s: int, d: int, causal: bool, direction: str) -> Figure:
        """Achieved attention TFLOP/s (FLOP convention of reports/model/compute.py) for a
        sequence length s, head dim d and direction ("fwd" or "bwd"): nearest measured s
        (interpolated in log s), else the fallback."""
        return self._memoised(("attention", gpu.name, s, d, causal, direction),
                              lambda: self._attention_tflops(gpu, s, d, causal, direction))

    def _attention_tflops(self, gpu: GPU, s: int, d: int, causal: bool, direction: str) -> Figure:
        if direction not in ("fwd", "bwd"):
            raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
        for origin in ("measured", "reference"):
            pts: dict[int, tuple[float, str]] = {}
            for r in self._select("attention", gpu.name, origin):
                p = r["params"]
                tf = _num(r.get("tflops"))
                if (tf is None or r.get("dtype") not in ("bf16", "fp16")
                        or p.get("direction") != direction or bool(p.get("causal")) != causal
                        or _num(p.get("d")) != d or _num(p.get("s")) is None):
                    continue
                si = int(p["s"])
                if tf > pts.get(si, (0.0, ""))[0]:
                    pts[si] = (tf, str(r.get("backend")))
            if pts:
                return self._interp_1d(pts, s, f"{self._label(origin)}: attention {direction} "
                                       f"{'causal ' if causal else ''}d={d} {gpu.name}", origin)
        key = (gpu.name, direction)
        if key in ATTENTION_FALLBACK:
            return ATTENTION_FALLBACK[key]
        return Figure(0.5 * gpu.bf16_tflops, "assumption: attention at 50% of dense bf16 peak",
                      "assumption")

    @staticmethod
    def _interp_1d(pts: dict[int, tuple[float, str]], x: int, where: str, origin: str) -> Figure:
        xs = sorted(pts)
        if x in pts:
            return Figure(pts[x][0], f"{where} s={x} ({pts[x][1]})", origin)
        if x <= xs[0] or x >= xs[-1]:
            xn = xs[0] if x <= xs[0] else xs[-1]
            return Figure(pts[xn][0], f"{where}, nearest measured s={xn} ({pts[xn][1]})", origin)
        hi = next(i for i, v in enumerate(xs) if v > x)
        a, b = xs[hi - 1], xs[hi]
        w = (math.log(x) - math.log(a)) / (math.log(b) - math.log(a))
        tf = (1 - w) * pts[a][0] + w * pts[b][0]
        return Figure(tf, f"{where}, interpolated in log s between s={a} and s={b}", origin)

    def efficiency(self, gpu: GPU) -> Figure:
        """The framework efficiency of this GPU's architecture (fallbacks.FRAMEWORK_EFFICIENCY)."""
        return framework_efficiency_for(gpu.arch, self.efficiencies)

    # -- memory bandwidth, NVLink, power

    def hbm_tbps(self, gpu: GPU) -> Figure:
        """Achievable HBM bandwidth (TB/s, bytes read plus written) from the best membw row at
        the largest size measured, else the fallback."""
        return self._memoised(("hbm", gpu.name), lambda: self._hbm_tbps(gpu))

    def _hbm_tbps(self, gpu: GPU) -> Figure:
        for origin in ("measured", "reference"):
            rows = [r for r in self._select("membw", gpu.name, origin) if _num(r.get("gbps"))]
            if rows:
                size = max(_num(r["params"].get("bytes")) or 0 for r in rows)
                big = [r for r in rows if (_num(r["params"].get("bytes")) or 0) == size]
                best = max(big, key=lambda r: float(r["gbps"]))
                op = best["params"].get("op", "?")
                return Figure(float(best["gbps"]) / 1000.0,
                              f"{self._label(origin)}: membw {op} {gpu.name}, "
                              f"{float(best['gbps']):.0f} GB/s at {size:.3g} bytes", origin)
        if gpu.name in HBM_FALLBACK:
            return HBM_FALLBACK[gpu.name]
        return Figure(0.9 * gpu.hbm_tbps, "assumption: 90% of datasheet HBM", "assumption")

    def nvlink_busbw_gbps(self, gpu: GPU) -> Figure:
        """All-reduce bus bandwidth inside one node (GB/s): the largest measured NCCL all-reduce
        over a full NVLink domain (world_size == the GPU's node_gpus, what a tp=8 group sees),
        else over the largest smaller world that fits in a node (said in the source), else the
        fallback. Rows over more GPUs than a node holds crossed the network and are ignored."""
        return self._memoised(("nvlink", gpu.name), lambda: self._nvlink_busbw_gbps(gpu))

    def _nvlink_busbw_gbps(self, gpu: GPU) -> Figure:
        for origin in ("measured", "reference"):
            rows = [r for r in self._select(("all_reduce", "allreduce"), gpu.name, origin)
                    if _num(r.get("busbw_gbps")) and _intra_node(r, gpu.node_gpus)
                    and r["params"].get("op") == "all_reduce"
                    and r.get("backend") in ("nccl", None)]
            if rows:
                world = max(int(r["world_size"]) for r in rows)  # the node's size when measured
                rows = [r for r in rows if int(r["world_size"]) == world]
                size = max(_num(r["params"].get("bytes")) or 0 for r in rows)
                best = max((r for r in rows if (_num(r["params"].get("bytes")) or 0) == size),
                           key=lambda r: float(r["busbw_gbps"]))
                note = "" if world == gpu.node_gpus else \
                    f"; from a smaller world than the {gpu.node_gpus}-GPU node (none measured)"
                return Figure(float(best["busbw_gbps"]),
                              f"{self._label(origin)}: nccl all_reduce {gpu.name} x{world}, "
                              f"{size:.3g} bytes{note}", origin)
        if gpu.name in NVLINK_FALLBACK:
            return NVLINK_FALLBACK[gpu.name]
        return Figure(0.8 * gpu.nvlink_gbps, "assumption: 80% of NVLink per-direction bandwidth",
                      "assumption")

    def gemm_power_w(self, gpu: GPU) -> Figure:
        """GPU power under GEMM load: median NVML power_w_mean of the gemm rows within 80% of the
        best TFLOP/s measured (rows that load the GPU), else TDP (assumption)."""
        return self._memoised(("power", gpu.name), lambda: self._gemm_power_w(gpu))

    def _gemm_power_w(self, gpu: GPU) -> Figure:
        for origin in ("measured", "reference"):
            rows = [r for r in self._select("gemm", gpu.name, origin)
                    if _num(r["telemetry"].get("power_w_mean")) and _num(r.get("tflops"))]
            if rows:
                top = max(float(r["tflops"]) for r in rows)
                watts = sorted(float(r["telemetry"]["power_w_mean"]) for r in rows
                               if float(r["tflops"]) >= 0.8 * top)
                med = watts[len(watts) // 2]
                return Figure(med, f"{self._label(origin)}: NVML power under GEMM load, "
                                   f"median of {len(watts)} rows, {gpu.name}", origin)
        return power_fallback(gpu)


def as_measurements(m) -> Measurements:
    """Accept None (reference + fallbacks), a DataFrame, or a Measurements object."""
    if isinstance(m, Measurements):
        return m
    if m is None:
        return Measurements(None)
    if hasattr(m, "to_dict") and hasattr(m, "columns"):
        return Measurements(m)
    raise TypeError(f"measurements must be None, a pandas DataFrame or Measurements, "
                    f"not {type(m).__name__}")
