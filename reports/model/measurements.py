"""From result rows to the efficiencies the scaling model needs, each with where it came from.

Lookup order for every figure: the frame passed in (rows measured by the user), then the
reference results shipped with the package (`reference_frame` in reports/model/frame_rows.py,
which imports results.reference lazily so this module works before that exists), then the
fallbacks of reports/model/fallbacks.py, each with its source string or labelled as an
assumption. Rows count only when `status == "ok"` and, for kernels, `correct` is true; per
shape the best row (any backend) wins.

Compute figures (GEMM, attention) are one per silicon, not per GPU name: a type without rows of
its own takes those of a type with the same architecture and SMs (same_silicon: an H200 priced
from H100 rows), and the origin is decided over both (Measurements._kernel_tables). GEMM rows
calibrate the shape model of fallbacks.py rather than replace it (Measurements._calibrated).
Memory, NVLink and power figures stay per type.

Figures are returned as `Figure(value, source, kind)`; `kind` is "measured", "reference",
"assumption" or "calibrated" (a constant per architecture, fitted in reports/model/validation.py).
"""

from __future__ import annotations

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
    TILES,
    Figure,
    anchor_rate,
    framework_efficiency_for,
    gemm_ceiling,
    gemm_time_fallback,
    power_fallback,
)
from reports.model.frame_rows import intra_node, positive, reference_frame, tagged_rows
from reports.model.hardware import GPU, GPUS

__all__ = ["ATTENTION_FALLBACK", "COMM_SM_SHARE", "FRAMEWORK_EFFICIENCY", "GEMM_ANCHOR",
           "HBM_FALLBACK", "NVLINK_FALLBACK", "Figure", "Measurements", "anchor_rate",
           "as_measurements", "gemm_time_fallback"]

def same_silicon(gpu: GPU) -> tuple[GPU, ...]:
    """The other GPU types whose kernel (GEMM, attention) rows stand for this one's where it has
    none: the same architecture and SM count, in hardware.GPUS order. H100 SXM and H200 SXM are
    one die with 132 SMs at the same clocks (NVIDIA H200 datasheet), differing in HBM only,
    which the GEMM shape model's roofline prices per type; that clocks match wherever arch and
    SM count do is an assumption (true of the types in hardware.GPUS)."""
    return tuple(g for g in GPUS.values() if g.name != gpu.name and g.arch == gpu.arch
                 and g.sm_count == gpu.sm_count)


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
        self._rows = tagged_rows(frame, "measured")
        if use_reference:
            self._rows += tagged_rows(reference_frame(), "reference")
        self._memo: dict[tuple, Any] = {}  # figures, shape-model rates and row tables by key
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

    # -- compute figures (GEMM, attention): rows of the same silicon stand for each other

    def _kernel_tables(self, gpu: GPU, table_of) -> tuple[str, list[tuple[GPU, Any]]] | None:
        """The rows that price a compute figure of `gpu`, and of which origin.

        The rule, decided per architecture: measured rows of this GPU or of a GPU with the same
        silicon (same_silicon: H100 SXM and H200 SXM) come before reference rows of either, and
        those before the fallbacks. A sibling's measured row thus beats a reference row of the
        GPU's own: measured rows are the caller's campaign on its software stack, and pricing
        one Hopper type from them and the other from shipped rows would turn a difference of
        software into a difference of chips. Within the origin chosen, a GPU's own rows win;
        without them it takes the first same-silicon type's that has some (hardware.GPUS order).

        `table_of(gpu_name, origin)` gives one type's points (empty when none). Returns the
        origin and [(type, points)] with the type whose rows price `gpu` first and the other
        types with points after it (their spread is stated), or None (the fallbacks).
        """
        for origin in ("measured", "reference"):
            tables = [(g, t) for g in (gpu, *same_silicon(gpu)) if (t := table_of(g.name, origin))]
            if tables:
                return origin, tables
        return None

    @staticmethod
    def _borrowed(src: GPU, gpu: GPU, origin: str) -> str:
        return "" if src.name == gpu.name else \
            f" (from {src.name}'s {origin} rows: same SMs and clocks)"

    @staticmethod
    def _spread(value: float, others: list[tuple[GPU, float]], where: str) -> str:
        """The other same-silicon types' own values at this point, and how far they are."""
        if not others:
            return ""
        each = ", ".join(f"{g.name}'s rows give {v:.0f} ({v / value - 1:+.1%})" for g, v in others)
        return f"; {each} {where} (same SMs and clocks: the spread between types' rows)"

    # -- GEMM

    def _gemm_table(self, gpu: str, origin: str) -> list[tuple]:
        """Best TFLOP/s per (m, n, k) for bf16 GEMMs of one origin: [(m, n, k, tflops, backend)]."""
        def compute() -> list[tuple]:
            best: dict[tuple[int, int, int], tuple[float, str]] = {}
            for r in self._select("gemm", gpu, origin):
                p = r["params"]
                tf = positive(r.get("tflops"))
                if r.get("dtype") != "bf16" or tf is None:
                    continue
                try:
                    shape = (int(p["m"]), int(p["n"]), int(p["k"]))
                except (KeyError, TypeError, ValueError):
                    continue
                if tf > best.get(shape, (0.0, ""))[0]:
                    best[shape] = (tf, str(r.get("backend")))
            return [(*s, tf, b) for s, (tf, b) in best.items()]
        return self._memoised(("gemm table", gpu, origin), compute)

    def gemm_seconds(self, gpu: GPU, m: int, n: int, k: int) -> tuple[float, Figure]:
        """Seconds for one bf16 GEMM of shape (m, n, k) on `gpu`, and the figure it came from."""
        if min(m, n, k) <= 0:
            raise ValueError(f"GEMM dimensions must be positive, got {(m, n, k)}")
        fig = self._memoised(("gemm", gpu.name, m, n, k), lambda: self._gemm_figure(gpu, m, n, k))
        return 2.0 * m * n * k / (fig.value * 1e12), fig

    def _shape_model_tflops(self, gpu: GPU, m: int, n: int, k: int) -> float:
        """TFLOP/s of the fallback shape model (fallbacks.gemm_time_fallback) at (m, n, k)."""
        def compute() -> float:
            seconds = gemm_time_fallback(m, n, k, gpu, gemm_ceiling(gpu).value,
                                         self.hbm_tbps(gpu).value)
            return 2.0 * m * n * k / seconds / 1e12
        return self._memoised(("shape model", gpu.name, m, n, k), compute)

    def _gemm_figure(self, gpu: GPU, m: int, n: int, k: int) -> Figure:
        """Achieved TFLOP/s at (m, n, k): the shape model calibrated on the rows that price this
        GPU (_kernel_tables, _calibrated), else the shape model on its own."""
        chosen = self._kernel_tables(gpu, self._gemm_table)
        if chosen is None:
            anchor = gemm_ceiling(gpu)
            return Figure(self._shape_model_tflops(gpu, m, n, k),
                          f"fallback GEMM model (wave quantisation and tile padding over "
                          f"{gpu.sm_count} SMs, the best of {len(TILES)} output tiles; HBM "
                          f"roofline; {GEMM_LAUNCH_S * 1e6:.0f} us launch) anchored on "
                          f"{anchor.source}", anchor.kind)
        origin, ((src, table), *others) = chosen
        tf, how = self._calibrated(table, src, gpu, m, n, k)
        spread = self._spread(tf, [(g, self._calibrated(t, g, g, m, n, k)[0])
                                   for g, t in others], f"at {m}x{n}x{k}")
        return Figure(tf, f"{self._label(origin)}: gemm bf16 {gpu.name}"
                          f"{self._borrowed(src, gpu, origin)}{how}{spread}", origin)

    def _calibrated(self, table: list[tuple], src: GPU, gpu: GPU, m: int, n: int,
                    k: int) -> tuple[float, str]:
        """TFLOP/s at (m, n, k) on `gpu` from rows of `src`, and how it was found.

        The rows calibrate the shape model instead of replacing it: value = shape model of
        `gpu` at (m, n, k) x ratio, where ratio is row / shape model of `src` at the measured
        shapes, weighted by inverse squared distance in log2(m, n, k) over the 4 nearest. At a
        measured shape of the GPU's own that is its row exactly. So one 8192^3 row sets the
        level of every shape, while a 300-row GEMM keeps the wave quantisation the shape model
        gives it, and a sibling's rows carry over with this GPU's HBM in the roofline.
        """
        target = (math.log2(m), math.log2(n), math.log2(k))
        ranked = sorted(
            (math.dist(target, (math.log2(a), math.log2(b), math.log2(c))),
             tf / self._shape_model_tflops(src, a, b, c), tf, (a, b, c), be)
            for a, b, c, tf, be in table)
        model = self._shape_model_tflops(gpu, m, n, k)
        d0, _, tf0, shape0, be0 = ranked[0]
        nearest = f"{shape0[0]}x{shape0[1]}x{shape0[2]} ({be0})"
        if d0 < 1e-9:  # the same shape: its row, scaled only between types' HBM rooflines
            return tf0 * (model / self._shape_model_tflops(src, m, n, k)), f" {nearest}"
        near = ranked[:4]
        weights = [1.0 / d**2 for d, *_ in near]
        ratio = sum(w * r for w, (_, r, *_) in zip(weights, near, strict=True)) / sum(weights)
        return model * ratio, (f", interpolated: shape model {model:.0f} x row/model {ratio:.3f} "
                               f"from the {len(near)} nearest of {len(table)} shapes (nearest "
                               f"{nearest})")

    # -- attention

    def attention_tflops(self, gpu: GPU, s: int, d: int, causal: bool, direction: str) -> Figure:
        """Achieved attention TFLOP/s (FLOP convention of reports/model/compute.py) for a
        sequence length s, head dim d and direction ("fwd" or "bwd"): nearest measured s
        (interpolated in log s) of the rows that price this GPU (_kernel_tables), else the
        fallback."""
        return self._memoised(("attention", gpu.name, s, d, causal, direction),
                              lambda: self._attention_tflops(gpu, s, d, causal, direction))

    def _attention_points(self, gpu: str, origin: str, d: int, causal: bool,
                          direction: str) -> dict[int, tuple[float, str]]:
        """Best TFLOP/s per s of one GPU type and origin: {s: (tflops, backend)}."""
        pts: dict[int, tuple[float, str]] = {}
        for r in self._select("attention", gpu, origin):
            p = r["params"]
            tf = positive(r.get("tflops"))
            if (tf is None or r.get("dtype") not in ("bf16", "fp16")
                    or p.get("direction") != direction or bool(p.get("causal")) != causal
                    or positive(p.get("d")) != d or positive(p.get("s")) is None):
                continue
            si = int(p["s"])
            if tf > pts.get(si, (0.0, ""))[0]:
                pts[si] = (tf, str(r.get("backend")))
        return pts

    def _attention_tflops(self, gpu: GPU, s: int, d: int, causal: bool, direction: str) -> Figure:
        if direction not in ("fwd", "bwd"):
            raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
        chosen = self._kernel_tables(
            gpu, lambda name, origin: self._attention_points(name, origin, d, causal, direction))
        if chosen is not None:
            origin, ((src, pts), *others) = chosen
            fig = self._interp_1d(pts, s, f"{self._label(origin)}: attention {direction} "
                                  f"{'causal ' if causal else ''}d={d} {gpu.name}"
                                  f"{self._borrowed(src, gpu, origin)}", origin)
            spread = self._spread(fig.value, [(g, self._interp_1d(p, s, "", origin).value)
                                              for g, p in others], f"at s={s}")
            return Figure(fig.value, fig.source + spread, origin)
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
            rows = [r for r in self._select("membw", gpu.name, origin) if positive(r.get("gbps"))]
            if rows:
                size = max(positive(r["params"].get("bytes")) or 0 for r in rows)
                big = [r for r in rows if (positive(r["params"].get("bytes")) or 0) == size]
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
                    if positive(r.get("busbw_gbps")) and intra_node(r, gpu.node_gpus)
                    and r["params"].get("op") == "all_reduce"
                    and r.get("backend") in ("nccl", None)]
            if rows:
                world = max(int(r["world_size"]) for r in rows)  # the node's size when measured
                rows = [r for r in rows if int(r["world_size"]) == world]
                size = max(positive(r["params"].get("bytes")) or 0 for r in rows)
                best = max((r for r in rows if (positive(r["params"].get("bytes")) or 0) == size),
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
                    if positive(r["telemetry"].get("power_w_mean")) and positive(r.get("tflops"))]
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
