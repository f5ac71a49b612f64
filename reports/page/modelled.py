"""The modelled sections: cluster throughput against GPU count (ranges drawn, time to train
with goodput applied) and the model's validation against published runs with what it does not
model; the H200 and power sections are in reports.page.cluster_section.
"""

from __future__ import annotations

from reports.model.cluster import useful_fraction_at
from reports.model.hardware import Pool, cluster
from reports.model.scaling import (
    TOKEN_BUDGETS,
    Scenario,
    ScenarioError,
    cluster_throughput,
    estimate,
    goodput,
)
from reports.model.scenario import BATCH_PRESETS, DEFAULT_BATCH
from reports.model.search import EFFICIENCY_SPREAD
from reports.model.step import Training, model_from
from reports.model.validation import CASES, validate
from reports.page.charts import lines_png, scatter_png
from reports.page.cluster_section import h200_section, power_section
from reports.page.context import (
    CONFIGS,
    RACK_GPUS,
    ModelContext,
    ReportConfig,
    inputs_section,
)
from reports.page.model_limits import NOT_MODELLED, NOT_MODELLED_TITLE
from reports.page.provenance import Cell, Figure, Provenance, Ref, Section, Table
from reports.page.rows import fmt_days, parallel_text, tokens_range
from reports.page.serving import serving_page_section

# what estimate_range spans (reports/model/search.py)
RANGE_OVER = (f"interleaving degree, TP overlap off/on, framework efficiency "
              f"+-{EFFICIENCY_SPREAD:.0%}")


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


def _days_cell(ctx: ModelContext, days: float | None, gpus: int, refs: tuple) -> Cell:
    """A time to train with goodput applied, pointing to the goodput inputs at that size."""
    if days is None:
        return Cell("-")
    return Cell(fmt_days(days), refs + ctx.goodput_refs(goodput((gpus,))[0]))


def throughput_section(ctx: ModelContext) -> Section:
    cfg = ctx.config
    sec = Section("throughput", "Throughput against GPU count (cluster presets)",
                  intro=f"{cfg.model} on each Colossus preset scaled from "
                        f"{min(cfg.sweep_gpus):,} GPUs to its full size (GPU types in the "
                        f"preset's proportions, whole 64-GPU racks); the model searches the "
                        f"fastest parallel configuration that fits, at a global batch of "
                        f"{BATCH_PRESETS[DEFAULT_BATCH][0] / 1e6:.1f}M tokens per step "
                        f"({BATCH_PRESETS[DEFAULT_BATCH][1]}; a labelled input: a larger "
                        f"batch keeps more GPUs busy, see docs/MODEL.md). One job over the "
                        f"whole cluster; the H200 section weighs separate jobs. Every time to "
                        f"train has goodput applied: days of steps divided by the useful "
                        f"fraction of wall time at that GPU count (Power and goodput).")
    budget, budget_src = TOKEN_BUDGETS.get(cfg.model, (None, ""))
    bref = (ctx.prov.source(budget_src),) if budget_src else ()
    series: dict[str, tuple[list[float], list[float]]] = {}
    mfu_series: dict[str, tuple[list[float], list[float]]] = {}
    bands: dict[str, tuple[list[float], list[float]]] = {}
    mfu_bands: dict[str, tuple[list[float], list[float]]] = {}
    table = Table(["cluster", "GPUs", "parallel (best found)", "tokens/s", "tokens/s range",
                   "TFLOP/s per GPU", "MFU", "MFU range", "time to train (goodput applied)"],
                  [], (f"Time to train: {budget / 1e12:.1f}T tokens, goodput applied. "
                       if budget else "") + f"Ranges: over {RANGE_OVER}.")
    all_refs: list[Ref] = []
    for name in cfg.clusters:
        c = cluster(name)
        refs = ctx.basis(c.gpu_types, name)
        all_refs += refs
        xs, ys, ms, band, mband = [], [], [], ([], []), ([], [])
        for n in sorted({*cfg.sweep_gpus, c.gpus}):
            est = sweep_estimate(ctx, name, n, cfg.model)
            if est is None:
                table.rows.append([Cell(name), Cell(f"{n:,}"), Cell("does not fit")]
                                  + [Cell("-")] * 6)
                continue
            useful = useful_fraction_at(est.gpus)
            days = est.days_to_train(budget, useful) if budget else None
            lo, hi = est.range["tokens_per_s"]
            mlo, mhi = est.range["mfu"]
            xs.append(est.gpus)
            ys.append(est.tokens_per_s)
            ms.append(100 * est.mfu)
            band[0].append(lo)
            band[1].append(hi)
            mband[0].append(100 * mlo)
            mband[1].append(100 * mhi)
            table.rows.append([Cell(name), Cell(f"{est.gpus:,}"),
                               Cell(parallel_text(est.parallel.to_dict())),
                               Cell(f"{est.tokens_per_s / 1e6:.2f} M", refs),
                               Cell(tokens_range(est.range), refs),
                               Cell(f"{est.tflops_per_gpu:.0f}", refs),
                               Cell(f"{100 * est.mfu:.1f}%", refs),
                               Cell(f"{100 * mlo:.1f}-{100 * mhi:.1f}%", refs),
                               _days_cell(ctx, days, est.gpus, refs + bref)])
            if name == cfg.clusters[0] and n == c.gpus:
                sec.headline.append((f"{cfg.model} on {name} (modelled)", Cell(
                    f"{est.tokens_per_s / 1e6:.1f} M tokens/s (range {tokens_range(est.range)}),"
                    f" MFU {100 * est.mfu:.0f}%"
                    + (f", {fmt_days(days)} to train {budget / 1e12:.1f}T tokens with goodput "
                       f"applied ({100 * useful:.0f}% of wall time trains)" if days else ""),
                    _days_cell(ctx, days, est.gpus, refs + bref).refs)))
        series[name], mfu_series[name] = (xs, ys), (xs, ms)
        bands[name], mfu_bands[name] = band, mband
    shade = f"; shaded: the range over {RANGE_OVER}"
    sec.figures.append(Figure("throughput", "Tokens/s against GPU count",
                              lines_png(f"{cfg.model}: tokens/s against GPU count", series,
                                        "GPUs", "tokens/s", logy=True, bands=bands),
                              Cell(f"Modelled, from the input sets{shade}", tuple(all_refs))))
    sec.figures.append(Figure("mfu", "MFU against GPU count",
                              lines_png(f"{cfg.model}: MFU against GPU count", mfu_series,
                                        "GPUs", "MFU (% of dense bf16 peak)", bands=mfu_bands),
                              Cell(f"Model FLOPs utilisation (recomputation not counted){shade}",
                                   tuple(all_refs))))
    sec.tables.append(table)
    if cfg.models:
        sec.tables.append(models_table(ctx))
    return sec


def models_table(ctx: ModelContext) -> Table:
    """Each workload preset at each cluster preset's full size, one job."""
    cfg = ctx.config
    models = Table(["cluster", "model", "GPUs", "parallel", "tokens/s", "tokens/s range", "MFU",
                    "time to train (goodput applied)", "token budget"], [],
                   "Each workload preset at each cluster preset's full size, one job; time to "
                   "train with goodput applied.")
    for row in cluster_throughput(cfg.models, cfg.clusters, ctx.meas):
        refs = ctx.basis(cluster(row["cluster"]).gpu_types, row["cluster"])
        tref = (ctx.prov.source(row["token_budget_source"]),) if row["token_budget_source"] \
            else ()
        models.rows.append([Cell(row["cluster"]), Cell(row["model"]), Cell(f"{row['gpus']:,}"),
                            Cell(parallel_text(row["parallel"])),
                            Cell(f"{row['tokens_per_s'] / 1e6:.2f} M", refs),
                            Cell(tokens_range(row["range"]), refs),
                            Cell(f"{100 * row['mfu']:.1f}%", refs),
                            _days_cell(ctx, row["days_to_train"], row["gpus"], refs + tref),
                            Cell(f"{row['token_budget'] / 1e12:.2f}T tokens" if
                                 row["token_budget"] else "-", tref)])
    return models


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
    sec.lists.append((NOT_MODELLED_TITLE, NOT_MODELLED))
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
