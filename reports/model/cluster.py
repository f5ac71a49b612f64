"""Cluster-scale questions: throughput and time to train, the batch's effect, the H200 gain with
its reasons, mixed H100 + H200 clusters, power. Every answer names the global batch it assumed
(default: Llama 3's 16M tokens per step, reports/model/scenario.py BATCH_PRESETS).

Assumption (the split rule, SPLIT_RULE): a GPU pool runs as one job or as two separate jobs (at
most two jobs per pool), each with the full global batch; one job's size is one of the Colossus
presets' pool sizes (of any GPU type: 50k, 100k, 150k GPUs), the other job takes the rest. Every
cluster a comparison names (the 200k presets, the same count all H100, the 100k-H100 cluster
they grew from) gets the same options (`job_splits`): never split jobs against one unsplit job.
"""

from __future__ import annotations

from dataclasses import replace

from reports.model.config import Parallel, Training
from reports.model.estimate import Estimate
from reports.model.goodput import goodput
from reports.model.hardware import Cluster, Pool, cluster, gpu
from reports.model.measurements import as_measurements
from reports.model.memory import gib
from reports.model.presets import model_from
from reports.model.scenario import BATCH_PRESETS, DEFAULT_BATCH, Scenario
from reports.model.search import estimate_range, evaluate, search

TOKEN_BUDGETS: dict[str, tuple[float, str]] = {
    "gpt3-175b": (300e9, "GPT-3 was trained on 300B tokens (Brown et al. 2020, sec. 2.2)"),
    "llama3-70b": (15e12, "Llama 3 pre-trained on over 15T tokens (Dubey et al. 2024)"),
    "llama3-405b": (15.6e12, "Llama 3 405B: 15.6T tokens (Dubey et al. 2024, sec. 3)"),
    "dense-1t": (20e12, "assumption: compute-optimal 20 tokens per parameter (Hoffmann et al. "
                        "2022, Chinchilla)"),
}


COLOSSUS_MODELS = ("gpt3-175b", "llama3-70b", "llama3-405b", "dense-1t")
COLOSSUS_CLUSTERS = ("colossus-100k", "colossus-200k", "colossus-200k-h200")

# the job sizes of the split rule: every pool size of the Colossus presets, any GPU type
PRESET_POOL_SIZES = tuple(sorted({q.gpus for k in COLOSSUS_CLUSTERS for q in cluster(k).pools}))
SPLIT_RULE = ("assumption: a GPU pool runs as one job or as two separate jobs (at most two "
              "per pool), each with the full global batch; one job's size is a Colossus "
              "preset's pool size (any GPU type: "
              f"{', '.join(f'{n // 1000}k' for n in PRESET_POOL_SIZES)} GPUs), the other takes "
              "the rest; every compared cluster gets the same options "
              "(reports/model/cluster.py job_splits)")


def job_splits(pool_gpus: int) -> list[tuple[int, ...]]:
    """The job sizes a pool of `pool_gpus` GPUs may run as under SPLIT_RULE: the whole pool,
    or two jobs, one of a preset's pool size and the rest (larger job first, no repeats)."""
    out = [(pool_gpus,)]
    for n in PRESET_POOL_SIZES:
        split = tuple(sorted((n, pool_gpus - n), reverse=True))
        if n < pool_gpus and split not in out:
            out.append(split)
    return out


def _batch(batch_tokens: int | None) -> tuple[int, str]:
    if batch_tokens is None:
        return BATCH_PRESETS[DEFAULT_BATCH]
    return batch_tokens, "caller"


def _scenario_for(model: str, clu: Cluster | str, batch_tokens: int | None = None,
                  mixed_batch: str = "plain_dp", parallel="auto") -> Scenario:
    c = cluster(clu) if isinstance(clu, str) else clu
    m = model_from(model)
    tokens, src = _batch(batch_tokens)
    return Scenario(f"{m.name}@{c.name}", m, c, None if parallel == "auto" else parallel,
                    Training(), max(tokens, m.seq_len), mixed_batch, src)


def useful_fraction_at(gpus: int) -> float:
    """Goodput's useful fraction of wall time for a synchronous job on `gpus` GPUs."""
    return goodput((gpus,))[0]["useful_fraction"]


def cluster_throughput(models=COLOSSUS_MODELS, clusters=COLOSSUS_CLUSTERS, measurements=None,
                       batch_tokens: int | None = None) -> list[dict]:
    """Tokens/s (with its range over unstated settings, search.estimate_range), MFU and days to
    train (goodput applied) of each model on each cluster preset, one job (auto layout; batch:
    Llama 3's 16M tokens unless given)."""
    meas = as_measurements(measurements)
    rows = []
    for c in clusters:
        for mname in models:
            scn = _scenario_for(mname, c, batch_tokens)
            est = search(scn, meas)
            budget, src = TOKEN_BUDGETS.get(mname, (None, ""))
            useful = useful_fraction_at(est.gpus)
            rows.append({
                "cluster": est.scenario.cluster.name, "model": mname, "gpus": est.gpus,
                "parallel": est.parallel.to_dict(), "global_batch_tokens": est.tokens_per_step,
                "global_batch_source": scn.batch_source,
                "tokens_per_s": est.tokens_per_s, "tflops_per_gpu": est.tflops_per_gpu,
                "mfu": est.mfu, "step_time_s": est.step_time_s,
                "range": estimate_range(est, meas),
                "token_budget": budget, "token_budget_source": src,
                "useful_fraction": useful,
                "days_to_train": est.days_to_train(budget, useful) if budget else None,
                "days_to_train_no_failures": est.days_to_train(budget) if budget else None,
                "memory_gib_per_gpu": gib(sum(est.memory_bytes.values())),
            })
    return rows


def batch_sensitivity(model: str = "llama3-405b", cluster_name: str = "colossus-100k",
                      batches=(4 * 2**20, 8 * 2**20, 16 * 2**20, 32 * 2**20, 64 * 2**20,
                               1024 * 100_000), measurements=None) -> list[dict]:
    """Tokens/s and MFU of the best layout at several global batches: a small batch leaves
    pipelines short of micro-batches (bubble) or forces less data parallelism."""
    meas = as_measurements(measurements)
    rows = []
    for b in batches:
        est = search(_scenario_for(model, cluster_name, b), meas)
        rows.append({"global_batch_tokens": est.tokens_per_step, "tokens_per_s": est.tokens_per_s,
                     "mfu": est.mfu, "parallel": est.parallel.to_dict(),
                     "step_time_s": est.step_time_s})
    return rows


def mixed_job(model: str = "llama3-405b", cluster_name: str = "colossus-200k",
              measurements=None, batch_tokens: int | None = None) -> dict:
    """A mixed H100 + H200 cluster three ways, and the best: one job with per-type replicas and
    equal micro-batches (plain data parallelism: the slower type sets the pace), one job with
    throughput-proportional micro-batches, or separate jobs per GPU type (each pool split as
    SPLIT_RULE allows; tokens/s summed). Adding faster GPUs can then never make the cluster
    slower than its parts: separate jobs are always an option."""
    meas = as_measurements(measurements)
    plain = search(_scenario_for(model, cluster_name, batch_tokens), meas)
    prop = evaluate(_scenario_for(model, cluster_name, batch_tokens, "proportional",
                                  plain.parallel), plain.parallel, meas)
    c = cluster(cluster_name)
    parts = {p.gpu: _best_split(model, c, p, batch_tokens, meas) for p in c.pools}
    separate = sum(v["tokens_per_s"] for v in parts.values())

    def summary(e: Estimate) -> dict:
        return {"tokens_per_s": e.tokens_per_s, "step_time_s": e.step_time_s, "mfu": e.mfu,
                "per_type": {g: {k: v for k, v in d.items() if k != "breakdown_s"}
                             for g, d in e.per_type.items()}}

    options = {"plain_dp": plain.tokens_per_s, "proportional": prop.tokens_per_s,
               "separate_jobs": separate}
    best = max(options, key=options.get)
    reason = {
        "plain_dp": "one job, equal micro-batches per replica: the H200 replicas are not slow "
                    "enough to idle much",
        "proportional": "one job, micro-batches in proportion to each type's speed: no replica "
                        "idles",
        "separate_jobs": "separate jobs per GPU type (each with the full global batch, a pool "
                         "split in two where two jobs beat one): one job must use a layout "
                         "that divides both pools and fits the smaller memory, and one batch "
                         "cannot keep all GPUs busy",
    }[best]
    return {"model": model, "cluster": cluster_name, "parallel": plain.parallel.to_dict(),
            "plain_dp": summary(plain), "proportional": summary(prop),
            "separate_jobs": {"tokens_per_s": separate, "per_type": parts},
            "gain": prop.tokens_per_s / plain.tokens_per_s,
            "best": best, "best_tokens_per_s": options[best], "reason": reason,
            "options": {p.gpu: parts[p.gpu]["considered"] for p in c.pools},
            "split_rule": SPLIT_RULE}


def _job_cluster(c: Cluster, gpu_name: str, gpus: int) -> Cluster:
    """One job's share of cluster c: its fabric, node shape and power, one pool; named by GPU
    type and size only, so the same job on the same fabric is searched once (meas.cache)."""
    return replace(c.with_pools((Pool(gpu_name, gpus),), f"{gpu_name}-{gpus}-job"),
                   reported_power_mw=None)


def _best_split(model: str, c: Cluster, pool: Pool, batch_tokens: int | None,
                meas) -> dict:
    """The most tokens/s one GPU pool gives under SPLIT_RULE (job_splits), each job with the
    full global batch and its own best layout: the whole pool as one job, or two jobs (so a
    grown cluster always has the option of running the old job unchanged beside a new one).
    `considered` lists every split tried."""
    best = None
    splits = job_splits(pool.gpus)
    for split in splits:
        jobs = []
        for n in split:
            e = search(_scenario_for(model, _job_cluster(c, pool.gpu, n), batch_tokens), meas)
            jobs.append({"gpus": n, "parallel": e.parallel.to_dict(),
                         "tokens_per_s": e.tokens_per_s, "mfu": e.mfu})
        total = sum(j["tokens_per_s"] for j in jobs)
        if best is None or total > best["tokens_per_s"]:
            best = {"gpus": pool.gpus, "tokens_per_s": total, "jobs": jobs}
    best["considered"] = [list(s) for s in splits]
    return best


def single_pool_options(model: str, c: Cluster, batch_tokens: int | None, meas) -> dict:
    """A one-pool cluster under the same options as a mixed one (SPLIT_RULE): one job at its
    best layout, or the pool split into two jobs; the best of them (_best_split, whose first
    option is the whole pool as one job: `one_job` is that estimate, from the search cache)."""
    (pool,) = c.pools
    split = _best_split(model, c, pool, batch_tokens, meas)
    one = search(_scenario_for(model, _job_cluster(c, pool.gpu, pool.gpus), batch_tokens), meas)
    return {"one_job": one, "split": split, "best_tokens_per_s": split["tokens_per_s"],
            "best": "one_job" if len(split["jobs"]) == 1 else "separate_jobs",
            "options": {pool.gpu: split["considered"]}}


def colossus_200k_gain(model: str = "llama3-405b", measurements=None,
                       clusters=("colossus-200k", "colossus-200k-h200"),
                       batch_tokens: int | None = None) -> list[dict]:
    """Each 200k preset with H200s (the best of one plain job, one proportional job, separate
    jobs) against the same GPU count all H100 and against the 100k-H100 cluster it grew from,
    each of those also at its best of one job or separate jobs: every compared cluster gets the
    options of SPLIT_RULE (`options` lists the splits each one tried, per pool). A row below
    1.0 says why in `reason`.

    Gains: `gain_vs_best` and `gain_vs_100k_h100` are best against best (any option each);
    `gain_one_job_same_layout` is like for like, one job against one job at the same layout:
    the mixed cluster's best one-job figure (`mixed_one_job_option`: plain or proportional
    micro-batches) over the all-H100 cluster run as one job at that layout."""
    meas = as_measurements(measurements)
    base = single_pool_options(model, cluster("colossus-100k"), batch_tokens, meas)
    base100 = base["best_tokens_per_s"]
    rows = []
    for name in clusters:
        c = cluster(name)
        h100 = c.with_pools((Pool("H100-SXM", c.gpus),), name=f"{name}-all-h100")
        mixed = mixed_job(model, name, meas, batch_tokens)
        par = Parallel(**mixed["parallel"])
        same = evaluate(_scenario_for(model, h100, batch_tokens, parallel=par), par, meas)
        alt = single_pool_options(model, h100, batch_tokens, meas)
        best_h100, h100_best = alt["one_job"], alt["best_tokens_per_s"]
        best = mixed["best_tokens_per_s"]
        # like for like: the mixed cluster's best ONE job (plain or proportional micro-batches,
        # both at mixed["parallel"]) against the all-H100 cluster as one job at that layout
        one_opt = max(("plain_dp", "proportional"), key=lambda k: mixed[k]["tokens_per_s"])
        one_job = mixed[one_opt]["tokens_per_s"]
        gain = best / h100_best
        why = mixed["reason"]
        if gain < 1:
            why += (f"; {1 - gain:.1%} below the same count of H100s, whose one pool allows "
                    "layouts and job splits the two pools do not")
        rows.append({"cluster": name, "model": model, "gpus": c.gpus,
                     "parallel": mixed["parallel"], "mixed_tokens_per_s": best,
                     "mixed_best": mixed["best"],
                     "mixed_one_job_tokens_per_s": one_job, "mixed_one_job_option": one_opt,
                     "all_h100_one_job_same_layout_tokens_per_s": same.tokens_per_s,
                     "all_h100_one_job_tokens_per_s": best_h100.tokens_per_s,
                     "all_h100_separate_jobs_tokens_per_s": alt["split"]["tokens_per_s"],
                     "all_h100_best_tokens_per_s": h100_best,
                     "all_h100_best_parallel": best_h100.parallel.to_dict(),
                     "colossus_100k_one_job_tokens_per_s": base["one_job"].tokens_per_s,
                     "colossus_100k_separate_jobs_tokens_per_s": base["split"]["tokens_per_s"],
                     "colossus_100k_jobs": [j["gpus"] for j in base["split"]["jobs"]],
                     "colossus_100k_tokens_per_s": base100,
                     "gain_one_job_same_layout": one_job / same.tokens_per_s,
                     "gain_vs_best": gain,
                     "gain_vs_100k_h100": best / base100,
                     "options": {name: mixed["options"], h100.name: alt["options"],
                                 "colossus-100k": base["options"]},
                     "split_rule": SPLIT_RULE,
                     "reason": why})
    return rows


def best_tokens_per_s(model: str, c: Cluster, batch_tokens: int | None, meas) -> dict:
    """The cluster's most tokens/s under the options every comparison uses (SPLIT_RULE): for
    a mixed preset mixed_job's best, for one pool single_pool_options'; with the cluster run
    as one job beside it (plain data parallelism for a mixed one)."""
    if len(c.pools) > 1:
        m = mixed_job(model, c.name, meas, batch_tokens)
        return {"tokens_per_s": m["best_tokens_per_s"], "option": m["best"],
                "one_job_tokens_per_s": m["plain_dp"]["tokens_per_s"]}
    o = single_pool_options(model, c, batch_tokens, meas)
    return {"tokens_per_s": o["best_tokens_per_s"], "option": o["best"],
            "one_job_tokens_per_s": o["one_job"].tokens_per_s}


def power(cluster_name: str = "colossus-100k", model: str = "llama3-405b",
          measurements=None) -> dict:
    """Site power of a cluster under training load and energy per token.

    GPU watts: NVML power under GEMM load (measured rows) or TDP (assumption), times the GPU
    count; plus the node overhead per node, the network share and the PUE (assumptions, in the
    cluster preset's sources); compared with the reported site power where there is one.
    Energy per token: site power over the cluster's best tokens/s (one job or separate jobs,
    SPLIT_RULE; `tokens_per_s_option` names it), every GPU busy either way; the one-job figure
    beside it.
    """
    meas = as_measurements(measurements)
    c = cluster(cluster_name)
    gpu_w = 0.0
    sources = {}
    for p in c.pools:
        fig = meas.gemm_power_w(gpu(p.gpu))
        gpu_w += fig.value * p.gpus
        sources[f"gpu_power.{p.gpu}"] = fig.source
    node_w = c.power.node_overhead_w * c.nodes
    it_w = (gpu_w + node_w) * (1 + c.power.network_fraction)
    site_w = it_w * c.power.pue
    sources["overheads"] = c.sources.get("power", "assumption")
    sources["tokens_per_s"] = SPLIT_RULE
    best = best_tokens_per_s(model, c, None, meas)
    tps, one = best["tokens_per_s"], best["one_job_tokens_per_s"]
    out = {
        "cluster": c.name, "gpus": c.gpus, "gpu_mw": gpu_w / 1e6, "node_overhead_mw": node_w / 1e6,
        "it_mw": it_w / 1e6, "site_mw": site_w / 1e6, "pue": c.power.pue,
        "reported_mw": c.reported_power_mw,
        "model": model, "tokens_per_s": tps, "tokens_per_s_option": best["option"],
        "joules_per_token": site_w / tps,
        "kwh_per_million_tokens": site_w / tps * 1e6 / 3.6e6,
        "one_job_tokens_per_s": one,
        "kwh_per_million_tokens_one_job": site_w / one * 1e6 / 3.6e6,
        "sources": sources,
    }
    if c.reported_power_mw:
        out["vs_reported"] = out["site_mw"] / c.reported_power_mw
        out["reported_source"] = c.sources.get("reported_power_mw", "")
    return out
