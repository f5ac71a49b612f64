"""Cluster questions of the serving model: how many output tokens/s the Colossus presets serve for
a 70B-class and a 405B-class model, H100 against H200 per GPU and per cluster, and the H200's
serving gain beside its training gain, with the reasons.

Every pool of a cluster serves with its own best replica (the tensor-parallel size, within one
NVLink node, with the most output tokens/s per GPU that fits and meets the workload's targets);
replicas never mix GPU types and serving needs no scale-out traffic, so a pool's throughput is its
replicas' sum (assumption: requests are spread over replicas in proportion to their speed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from reports.model import scaling
from reports.model.config import ScenarioError
from reports.model.hardware import cluster, gpu
from reports.model.measurements import Measurements, as_measurements
from reports.model.presets import model_from
from reports.model.serving import Serving, ServingEstimate, evaluate
from results.words import counted


@dataclass(frozen=True)
class Workload:
    """What the users send: token lengths, precision, latency targets (plain data)."""

    name: str
    input_len: int
    output_len: int
    precision: str = "fp8"
    tpot_s: float | None = None
    ttft_s: float | None = None
    source: str = ""


WORKLOADS: dict[str, Workload] = {
    "throughput": Workload("throughput", 1000, 1000, source="assumption: a chat-sized request "
                           "(1000 in, 1000 out: a row of TensorRT-LLM's perf-overview table), "
                           "no latency target (offline, maximum load)"),
    "interactive": Workload("interactive", 1000, 1000, tpot_s=0.05, ttft_s=2.0,
                            source="assumption: the same requests with 20 tokens/s per user "
                                   "(TPOT <= 50 ms) and TTFT <= 2 s (MLPerf's Llama 2 70B server "
                                   "TTFT limit)"),
}
SERVING_MODELS = ("llama3-70b", "llama3-405b")
TP_CHOICES = (1, 2, 4, 8)


def best_replica(model: str, gpu_name: str, workload: Workload,
                 meas: Measurements) -> ServingEstimate | None:
    """The tensor-parallel size with the most output tokens/s per GPU (None: nothing fits)."""
    m = model_from(model)
    best = None
    for tp in TP_CHOICES:
        s = Serving(f"{model}@{gpu_name}", m, gpu(gpu_name), workload.precision,
                    workload.precision, workload.input_len, workload.output_len, tp, 1, None,
                    workload.ttft_s, workload.tpot_s)
        try:
            est = evaluate(s, meas)
        except ScenarioError:
            continue  # does not fit, or no batch meets the targets at this tp
        if best is None or est.to_dict()["output_tokens_per_s_per_gpu"] > \
                best.to_dict()["output_tokens_per_s_per_gpu"]:
            best = est
    return best


def _replica_row(est: ServingEstimate) -> dict:
    d = est.to_dict()
    return {"tp": d["tp"], "batch": d["batch"], "batch_reason": d["batch_reason"],
            "tokens_per_s_per_gpu": d["output_tokens_per_s_per_gpu"],
            "tokens_per_s_per_gpu_range": [x / d["gpus"] for x in
                                           d["range"]["output_tokens_per_s"]],
            "tpot_s": d["tpot_s"], "ttft_s": d["ttft_s"], "kv_cache_gib": d["kv_cache_gib"],
            "memory_gib_per_gpu": d["memory_gib_per_gpu"], "inputs": d["sources"],
            "figures": d["figures"]}


def cluster_serving(models=SERVING_MODELS, clusters=scaling.COLOSSUS_CLUSTERS,
                    workload: str = "throughput", measurements=None) -> list[dict]:
    """Output tokens/s of each Colossus preset serving each model, pool by pool."""
    meas = as_measurements(measurements)
    w = WORKLOADS[workload]
    rows = []
    for cname in clusters:
        c = cluster(cname)
        for model in models:
            pools, total = [], 0.0
            for p in c.pools:
                est = best_replica(model, p.gpu, w, meas)
                if est is None:
                    pools.append({"gpu": p.gpu, "gpus": p.gpus, "fits": False})
                    continue
                r = _replica_row(est)
                replicas = p.gpus // r["tp"]
                tok = replicas * r["tp"] * r["tokens_per_s_per_gpu"]
                total += tok
                pools.append({"gpu": p.gpu, "gpus": p.gpus, "fits": True, "replicas": replicas,
                              "tokens_per_s": tok, **r})
            rows.append({"cluster": cname, "model": model, "workload": w.name,
                         "gpus": c.gpus, "output_tokens_per_s": total,
                         "output_tokens_per_s_per_gpu": total / c.gpus, "pools": pools,
                         "sources": {"pools": c.sources.get("pools", ""),
                                     "workload": w.source}})
    return rows


def serving_gain(model: str, workload: str = "throughput", measurements=None) -> dict:
    """H200 against H100 per GPU, each at its own best replica and at the H100's tp, with the
    reasons (the HBM bandwidth ratio, the batch the memory holds) and the training gain."""
    meas = as_measurements(measurements)
    w = WORKLOADS[workload]
    h100 = best_replica(model, "H100-SXM", w, meas)
    h200 = best_replica(model, "H200-SXM", w, meas)
    if h100 is None or h200 is None:
        which = " and ".join(g for g, e in (("H100-SXM", h100), ("H200-SXM", h200)) if e is None)
        raise ScenarioError(f"no tp of one {which} node serves {model} under workload "
                            f"{workload}: nothing fits, or no batch meets its latency targets")
    same = evaluate(replace(h100.serving, gpu=gpu("H200-SXM"), name=f"{model}@H200-SXM"), meas)
    a, b, c = (x.to_dict() for x in (h100, h200, same))
    bw = {g: meas.hbm_tbps(gpu(g)) for g in ("H100-SXM", "H200-SXM")}
    gain = b["output_tokens_per_s_per_gpu"] / a["output_tokens_per_s_per_gpu"]
    out = {
        "model": model, "workload": w.name, "precision": w.precision,
        "h100": _replica_row(h100), "h200": _replica_row(h200),
        "h200_at_h100_tp": _replica_row(same),
        "serving_gain": gain,
        "serving_gain_same_tp": c["output_tokens_per_s_per_gpu"]
        / a["output_tokens_per_s_per_gpu"],
        "reasons": {
            "hbm_ratio": bw["H200-SXM"].value / bw["H100-SXM"].value,
            "hbm_sources": {g: f.source for g, f in bw.items()},
            "memory_ratio": gpu("H200-SXM").memory_bytes / gpu("H100-SXM").memory_bytes,
            "batch_h100": a["batch"], "batch_h200_same_tp": c["batch"],
            "kv_cache_gib_h100": a["kv_cache_gib"], "kv_cache_gib_h200_same_tp":
                c["kv_cache_gib"],
            "gpus_per_replica": {"H100-SXM": a["tp"], "H200-SXM": b["tp"]},
            "why": why_gain(a, c, bw["H200-SXM"].value / bw["H100-SXM"].value),
        },
    }
    train = getattr(scaling, "h200_gain", None)
    if train is None:
        out["training_gain"] = None
        out["training_gain_note"] = "reports.model.scaling.h200_gain is not there"
    else:
        t = train(model, measurements=meas)
        out["training_gain"] = t["h200_own_config"]["gain"]
        out["training_gain_same_config"] = t["h200_same_config"]["gain"]
        out["training_gain_note"] = (f"reports.model.scaling.h200_gain({model!r}): "
                                     f"{t['gpus']:,} GPUs of each, the H200's own best layout")
    return out


def why_gain(h100: dict, h200_same: dict, hbm_ratio: float) -> str:
    """One sentence on where the serving gain comes from."""
    kv = h200_same["kv_cache_gib"] / max(h100["kv_cache_gib"], 1e-9)
    limit = {"memory": "memory-bound batch", "latency target": "batch set by the TPOT target",
             "max_batch": "engine batch cap", "given": "given batch"}
    return (f"decode streams weights and KV cache from HBM: {hbm_ratio:.2f}x the bandwidth; at "
            f"the same tp the H200 keeps {counted(h200_same['batch'], 'sequence')} in flight "
            f"against {h100['batch']} ({limit[h200_same['batch_reason']]} vs "
            f"{limit[h100['batch_reason']]}; {kv:.1f}x the KV cache), so each weight read serves "
            f"more tokens; at large batches the GEMMs turn compute-bound and the gain shrinks "
            f"toward 1; training is compute-bound and both GPUs have the same tensor cores")


