"""The measured sections: roofline, our kernels against the vendor baselines, all-reduce bus
bandwidth, measured power and the summary of headline figures.
"""

from __future__ import annotations

from reports.model.measurements import NVLINK_FALLBACK
from reports.page.charts import MAX_BAR_SHAPES, bars_png, lines_png, roofline_png
from reports.page.provenance import Cell, Figure, Provenance, Section, Table
from reports.page.rows import (
    ALLREDUCE_WORKLOADS,
    BASELINES,
    KERNEL_WORKLOADS,
    NO_MEASUREMENTS,
    OURS,
    ROOF_GPUS,
    achieved_tflops,
    arithmetic_intensity,
    attainable_tflops,
    count,
    flops_and_bytes,
    fmt,
    fmt_bytes,
    gbps_per_watt,
    gpu_model,
    is_all_reduce,
    is_memory_bound,
    is_true,
    num,
    ridge_point,
    shape_label,
    tflops_per_watt,
)
from results.peaks import PEAKS


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
    """Power per kernel, with the throughput that bounds it (is_memory_bound): TFLOP/s and
    TFLOP/s per kW for compute-bound rows, GB/s and GB/s per kW for memory-bound ones."""
    pr = power_rows(rows)
    if not pr:
        return None
    table = Table(["device", "workload", "backend", "dtype", "shape", "power W (mean)",
                   "TFLOP/s", "GB/s", "TFLOP/s per kW", "GB/s per kW", "SM clock MHz (min)",
                   "throttle"], [],
                  "Measured GPU power (NVML) while each kernel ran; each row by the throughput "
                  "that bounds it: TFLOP/s, or GB/s for memory-bound kernels.")
    for r in sorted(pr, key=lambda r: (gpu_model(r), r["workload"], r["dtype"],
                                       shape_label(r["workload"], r["params"]), r["backend"])):
        t, ref = r["telemetry"], (prov.run(r),)
        w = num(t["power_w_mean"])
        tf, gb = (None, num(r.get("gbps"))) if is_memory_bound(r) else (num(r.get("tflops")),
                                                                         None)
        thr = t.get("throttle_reasons") or []
        table.rows.append([Cell(gpu_model(r)), Cell(r["workload"]), Cell(r["backend"]),
                           Cell(r["dtype"]), Cell(shape_label(r["workload"], r["params"])),
                           Cell(fmt(w, ".0f"), ref), Cell(fmt(tf), ref), Cell(fmt(gb), ref),
                           Cell(fmt(1000 * tflops_per_watt(tf, w) if tf and w else None), ref),
                           Cell(fmt(1000 * gbps_per_watt(gb, w) if gb and w else None), ref),
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


def flow_check_section(rows: list[dict], prov: Provenance) -> Section:
    """CPU rows: the flow checked end to end (check, time, store, report), not a measurement."""
    devices = sorted({gpu_model(r) for r in rows})
    sec = Section("flow-checks", "Flow checks on the CPU (not GPU measurements)",
                  intro=f"{len(rows)} results come from CPU runs ({', '.join(devices)}): our "
                        "Triton kernels through the Triton interpreter and torch on the CPU at "
                        "small sizes. They show that every case was checked against its "
                        "reference, timed and stored; their speed says nothing about a GPU, so "
                        "no headline, figure or model input above uses them.")
    table = Table(["device", "workload", "backend", "dtype", "shape", "checked", "median"], [],
                  "CPU results (flow checks)")
    for r in sorted(rows, key=lambda r: (r["workload"], r["dtype"], r["backend"])):
        t = num(r.get("median_s"))
        checked = "correct" if is_true(r.get("correct")) else "not checked"
        table.rows.append([Cell(gpu_model(r)), Cell(r["workload"]), Cell(r["backend"]),
                           Cell(r["dtype"]), Cell(r.get("shape") or shape_label(r["workload"],
                                                                                 r["params"])),
                           Cell(checked), Cell(f"{t * 1e3:.3g} ms" if t else "-",
                                               (prov.run(r),))])
    sec.tables.append(table)
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


def summary_section(rows: list[dict], prov: Provenance, sections: list[Section],
                    frame, flow_checks: int = 0) -> Section:
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
        gpu = " on a GPU" if flow_checks else ""
        sec.intro = (f"Measured sections: {NO_MEASUREMENTS}{gpu}. The model sections below render "
                     f"from labelled assumptions and published figures (S and I labels).")
    if flow_checks:
        sec.notes.append(Cell(f"{flow_checks} results are CPU flow checks, not GPU measurements: "
                              f"they are listed under Flow checks and count in no headline."))
    note = failed_note(frame, len(rows) + flow_checks)
    if note:
        sec.notes.append(note)
    for s in sections:
        sec.facts.extend(s.headline)
    return sec
