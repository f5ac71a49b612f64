"""The modelled sections: cluster throughput against GPU count, the H200 gain, power and goodput,
and the model's validation against published runs.
"""

from __future__ import annotations

from reports.model.hardware import Pool, cluster
from reports.model.scaling import (
    TOKEN_BUDGETS,
    Scenario,
    ScenarioError,
    cluster_throughput,
    colossus_200k_gain,
    estimate,
    goodput,
    h200_gain,
    power,
)
from reports.model.scenario import BATCH_PRESETS, DEFAULT_BATCH
from reports.model.step import Training, model_from
from reports.model.validation import CASES, validate
from reports.page.charts import bars_png, lines_png, scatter_png
from reports.page.context import (
    CONFIGS,
    H200_GAIN_BASE,
    RACK_GPUS,
    ModelContext,
    ReportConfig,
    inputs_section,
)
from reports.page.measured import measured_h200_ratios
from reports.page.provenance import Cell, Figure, Provenance, Ref, Section, Table
from reports.page.rows import NO_MEASUREMENTS, ROOF_GPUS, fmt, fmt_days
from reports.page.serving import serving_page_section
from results.peaks import PEAKS


def scaled_cluster(name: str, gpus: int):
    """A cluster preset at another size: each GPU pool keeps its share, in whole racks."""
    c = cluster(name)
    if gpus == c.gpus:
        return c
    pools = tuple(Pool(p.gpu, max(RACK_GPUS, round(p.gpus / c.gpus * gpus / RACK_GPUS)
                                  * RACK_GPUS)) for p in c.pools)
    return c.with_pools(pools, name=f"{name}@{gpus}")


def sweep_estimate(ctx: ModelContext, cluster_name: str, gpus: int, model: str):
    """The best-configuration estimate of `model` on a preset scaled to `gpus` GPUs at the
    labelled default global batch (Llama 3's 16M tokens, BATCH_PRESETS), or None when nothing
    fits."""
    c = scaled_cluster(cluster_name, gpus)
    m = model_from(model)
    scn = Scenario(f"{model}@{c.name}", m, c, None, Training(),
                   max(m.seq_len, BATCH_PRESETS[DEFAULT_BATCH][0]))
    try:
        return estimate(scn, ctx.meas)
    except ScenarioError:
        return None


def parallel_text(p: dict) -> str:
    """'tp8 pp10 cp2 dp625 mb1 v1 rc:none'."""
    return (f"tp{p['tp']} pp{p['pp']} cp{p['cp']} dp{p['dp']} mb{p['micro_batch']} "
            f"v{p['virtual_stages']} rc:{p['recompute']}")


def throughput_section(ctx: ModelContext) -> Section:
    cfg = ctx.config
    sec = Section("throughput", "Throughput against GPU count (cluster presets)",
                  intro=f"{cfg.model} on each Colossus preset scaled from "
                        f"{min(cfg.sweep_gpus):,} GPUs to its full size (GPU types in the "
                        f"preset's proportions, whole 64-GPU racks); the model searches the "
                        f"fastest parallel configuration that fits, at a global batch of "
                        f"{BATCH_PRESETS[DEFAULT_BATCH][0] / 1e6:.1f}M tokens per step "
                        f"({BATCH_PRESETS[DEFAULT_BATCH][1]}; a labelled input: a larger "
                        f"batch keeps more GPUs busy, see docs/MODEL.md).")
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


def h200_section(ctx: ModelContext) -> Section:
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
    sec = Section("validation", "Validation: predicted against published runs",
                  intro="The model run with each published configuration, compared in the "
                        "paper's own measure (TFLOP/s per GPU as the paper counts it, or seconds "
                        "per step). A100 and H100 runs; one calibrated constant per "
                        "architecture, fitted on that architecture's calibration runs (A100: "
                        "Megatron-LM 2021 and OPT; H100: NeMo's published recipes), the rest "
                        "are held out; our measurements do not enter. The serving section has "
                        "the serving runs.")
    rows = validate()
    cases = {c.name: c for c in CASES}
    table = Table(["run", "GPU", "GPUs", "published", "predicted", "range", "unit", "error"], [])
    for r in rows:
        src = (ctx.prov.source(r.source, "published"),)
        case = cases.get(r.name)
        basis = ctx.basis(cluster(case.cluster).gpu_types, case.cluster) if case else ()
        unit = getattr(r, "unit", "TFLOP/s/GPU")
        spec = ".0f" if r.published >= 100 else ".3g"
        table.rows.append([Cell(r.name), Cell(getattr(r, "gpu", "")), Cell(f"{r.gpus:,}"),
                           Cell(format(r.published, spec), src),
                           Cell(format(r.predicted, spec), basis),
                           Cell(f"{r.range[0]:{spec}}-{r.range[1]:{spec}}"
                                + ("" if r.within_range else " (outside)")), Cell(unit),
                           Cell(f"{r.error_pct:+.1f}%", src + basis)])
    sec.tables.append(table)
    errs = [abs(r.error_pct) for r in rows]
    mean, worst = sum(errs) / len(errs), max(errs)
    h100 = sum(getattr(r, "gpu", "") == "H100-SXM" for r in rows)
    refs = tuple(dict.fromkeys(r for row in table.rows for r in row[7].refs))
    inside = sum(r.within_range for r in rows)
    sec.notes.append(Cell(f"{len(rows)} runs ({h100} on H100): mean |error| {mean:.1f}%, max "
                          f"{worst:.1f}% (error on throughput: positive means the model is "
                          f"faster than published). The range spans what each run leaves "
                          f"unstated (micro-batch, recompute, interleaving) and the framework "
                          f"efficiency's spread; the published figure lies inside it in "
                          f"{inside} of {len(rows)} runs.", refs))
    sec.headline.append(("training model error on published runs",
                         Cell(f"mean |error| {mean:.1f}%, max {worst:.1f}% over {len(rows)} "
                              f"runs ({h100} on H100)", refs)))
    tf = [r for r in rows if getattr(r, "unit", "TFLOP/s/GPU") == "TFLOP/s/GPU"]
    sec.figures.append(Figure("validation", "Predicted against published",
                              scatter_png([r.published for r in tf], [r.predicted for r in tf],
                                          "published TFLOP/s per GPU",
                                          "predicted TFLOP/s per GPU"),
                              Cell("Each point a published run reported in TFLOP/s per GPU; the "
                                   "line is perfect agreement", refs)))
    return sec


def model_sections(frame, rows: list[dict], prov: Provenance,
                   config: ReportConfig | None = None, progress=None) -> list[Section]:
    """The modelled sections, in report order; the inputs section comes first but is built last,
    once every input set the others point to is known. `progress(text)` hears of each one."""
    ctx = ModelContext(frame, rows, prov, config or CONFIGS["full"])
    say = progress or (lambda text: None)
    others = []
    for what, build in (("throughput against GPU count", throughput_section),
                        ("the H200 gain", h200_section), ("serving", serving_page_section),
                        ("power and goodput", power_section),
                        ("validation", validation_section)):
        say(f"model: {what}")
        others.append(build(ctx))
    return [inputs_section(ctx), *others]
