"""The modelled cluster sections: the H200 gain (one GPU type, then the mixed 200k plans against
the same count of H100s and the 100k-H100 cluster, all under one split rule), and power and
goodput.
"""

from __future__ import annotations

from reports.model.cluster import SPLIT_RULE
from reports.model.h200 import hbm_figures
from reports.model.hardware import cluster
from reports.model.scaling import colossus_200k_gain, goodput, h200_gain, power
from reports.page.charts import bars_png, lines_png
from reports.page.context import H200_GAIN_BASE, ModelContext
from reports.page.measured import measured_h200_ratios
from reports.page.provenance import Cell, Figure, Section, Table
from reports.page.rows import NO_MEASUREMENTS, ROOF_GPUS, fmt, parallel_text, tokens_range
from results.peaks import PEAKS

OPTION_TEXT = {"plain_dp": "one job, equal micro-batches",
               "proportional": "one job, proportional micro-batches",
               "separate_jobs": "separate jobs", "one_job": "one job"}


def h200_section(ctx: ModelContext) -> Section:
    cfg = ctx.config
    h100_pk, h200_pk = PEAKS["H100-SXM"], PEAKS["H200-SXM"]
    bw = hbm_figures(ctx.meas)
    sec = Section("h200", "The H200 gain",
                  intro=f"H200 has H100's SMs and clocks with {h200_pk.memory_gb:.0f} GB of HBM3e "
                        f"at {h200_pk.hbm_tbps:g} TB/s (against {h100_pk.memory_gb:.0f} GB at "
                        f"{h100_pk.hbm_tbps:g} TB/s; datasheet figures). The model prices "
                        f"memory-bound work at {bw['H200-SXM']['model']:.2f} against "
                        f"{bw['H100-SXM']['model']:.2f} TB/s (the HBM bandwidth inputs, I "
                        f"labels). It speeds up what is memory-bound and lets a model fit with "
                        f"less parallelism.")
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
    table = Table(["configuration", "parallel", "tokens/s", "tokens/s range", "MFU",
                   "gain over H100"], [],
                  f"{cfg.model} on {cfg.h200_gain_gpus:,} GPUs of one type (modelled; the range "
                  f"spans the settings a run leaves unstated).")
    labels, values, errs = [], [], ([], [])
    for key, label in (("h100", "H100, its best configuration"),
                       ("h200_same_config", "H200, H100's configuration unchanged"),
                       ("h200_own_config", "H200, its own best configuration")):
        d = g[key]
        gain = d.get("gain", 1.0)
        lo, hi = d["range"]["tokens_per_s"]
        table.rows.append([Cell(label), Cell(parallel_text(d["parallel"])),
                           Cell(f"{d['tokens_per_s'] / 1e6:.2f} M", refs),
                           Cell(tokens_range(d["range"]), refs),
                           Cell(f"{100 * d['mfu']:.1f}%", refs), Cell(f"{gain:.3f}x", refs)])
        labels.append(label)
        values.append(d["tokens_per_s"] / 1e6)
        errs[0].append((d["tokens_per_s"] - lo) / 1e6)
        errs[1].append((hi - d["tokens_per_s"]) / 1e6)
    sec.tables.append(table)
    for why in g["reasons"]:
        sec.notes.append(Cell(f"What the H200's memory bought: {why}.", refs))
    sec.headline.append((f"H200 gain, {cfg.model} on {cfg.h200_gain_gpus:,} GPUs (modelled)",
                         Cell(f"{g['h200_own_config']['gain']:.3f}x tokens/s per GPU with its "
                              f"own best configuration", refs)))
    sec.figures.append(Figure("h200-gain", "H200 gain",
                              bars_png(f"{cfg.model}, {cfg.h200_gain_gpus:,} GPUs", labels,
                                       {"model": values}, "M tokens/s", errors={"model": errs}),
                              Cell("Modelled tokens/s for the three configurations; the "
                                   "whiskers span the range over unstated settings", refs)))
    presets = tuple(c for c in cfg.clusters if len(cluster(c).pools) > 1)
    rows = colossus_200k_gain(cfg.model, ctx.meas, clusters=presets) if presets else []
    if not rows:
        return sec
    rule = ctx.prov.source(SPLIT_RULE, "assumption")
    mixed = Table(["cluster", "GPUs", "best option", "with H200 tokens/s, best",
                   "all-H100 best", "colossus-100k best", "gain vs all-H100 (best vs best)",
                   "gain vs 100k (best vs best)", "with H200, best one job",
                   "all-H100, one job at that layout", "gain (one job vs one job, same layout)"],
                  [],
                  "The 200k plans against the same GPU count all H100 and against the "
                  "100k-H100 cluster they grew from. Every compared cluster is the best of the "
                  "same options (assumption, the split rule): one job at its best layout (for "
                  "the mixed plans: equal or throughput-proportional micro-batches), or "
                  "separate jobs, each with the full global batch, a pool split into at most "
                  "two jobs, one of them a Colossus preset's pool size. The last three "
                  "columns compare like for like: the plan's best one job against the same "
                  "GPU count all H100 as one job at the same layout. No ranges here: a sum "
                  "of jobs has none of its own (see the tables above).")
    for row in rows:
        r2 = ctx.basis(cluster(row["cluster"]).gpu_types, row["cluster"]) + (rule,)
        base = "+".join(f"{n // 1000}k" for n in row["colossus_100k_jobs"])
        mixed.rows.append([Cell(row["cluster"]), Cell(f"{row['gpus']:,}"),
                           Cell(OPTION_TEXT[row["mixed_best"]], (rule,)),
                           Cell(f"{row['mixed_tokens_per_s'] / 1e6:.2f} M", r2),
                           Cell(f"{row['all_h100_best_tokens_per_s'] / 1e6:.2f} M", r2),
                           Cell(f"{row['colossus_100k_tokens_per_s'] / 1e6:.2f} M "
                                f"({base} GPUs per job)", r2),
                           Cell(f"{row['gain_vs_best']:.3f}x", r2),
                           Cell(f"{row['gain_vs_100k_h100']:.3f}x", r2),
                           Cell(f"{row['mixed_one_job_tokens_per_s'] / 1e6:.2f} M "
                                f"({OPTION_TEXT[row['mixed_one_job_option']]})", r2),
                           Cell(f"{row['all_h100_one_job_same_layout_tokens_per_s'] / 1e6:.2f}"
                                f" M ({parallel_text(row['parallel'])})", r2),
                           Cell(f"{row['gain_one_job_same_layout']:.3f}x", r2)])
    sec.tables.append(mixed)
    return sec


def power_section(ctx: ModelContext) -> Section:
    cfg = ctx.config
    sec = Section("power", "Power and goodput",
                  intro="Site power under training load (GPU power, node overheads, network, "
                        "PUE) and the share of wall time that trains once interruptions and "
                        "checkpoints are paid for (Young/Daly).")
    rule = ctx.prov.source(SPLIT_RULE, "assumption")
    table = Table(["cluster", "GPUs", "GPU MW", "node overhead MW", "IT MW", "site MW",
                   "reported MW", "kWh per M tokens (best option)", "best option"], [],
                  f"Modelled power; energy per token for {cfg.model} at the cluster's best "
                  f"option (one job, or separate jobs by the split rule), every GPU busy "
                  f"either way; per token of steps, before goodput.")
    for name in cfg.clusters:
        p = power(name, cfg.model, ctx.meas)
        refs = ctx.basis(cluster(name).gpu_types, name)
        rep = (ctx.prov.source(p["reported_source"]),) if p.get("reported_source") else ()
        table.rows.append([Cell(name), Cell(f"{p['gpus']:,}"), Cell(f"{p['gpu_mw']:.1f}", refs),
                           Cell(f"{p['node_overhead_mw']:.1f}", refs),
                           Cell(f"{p['it_mw']:.1f}", refs), Cell(f"{p['site_mw']:.1f}", refs),
                           Cell(fmt(p["reported_mw"], ".0f"), rep),
                           Cell(f"{p['kwh_per_million_tokens']:.2f}", refs + (rule,)),
                           Cell(OPTION_TEXT[p["tokens_per_s_option"]], (rule,))])
        if name == cfg.clusters[0]:
            vs = f" (reported about {p['reported_mw']:.0f} MW)" if p["reported_mw"] else ""
            sec.headline.append((f"{name} site power (modelled)",
                                 Cell(f"{p['site_mw']:.0f} MW{vs}", refs + rep)))
    sec.tables.append(table)
    gtable = Table(["GPUs in one job", "mean time between interruptions",
                    "checkpoint interval", "useful fraction"], [],
                   "Goodput (reports/model/goodput.py): checkpoint every tau = sqrt(2 delta M) "
                   "(Young/Daly); the useful fraction is what is left after checkpoint writes, "
                   "work lost to interruptions and restarts. Every time to train in this "
                   "report divides by it.")
    xs, ys, grefs = [], [], ()
    for row in goodput(cfg.goodput_gpus):
        grefs = ctx.goodput_refs(row)
        gtable.rows.append([Cell(f"{row['gpus']:,}"),
                            Cell(f"{row['mtbf_s'] / 3600:.2f} h", grefs[:1]),
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
