"""The serving model: output tokens/s, time to first token and time per output token of a dense
transformer served with continuous batching on one GPU type, and the batch its memory holds.

A serving scenario (reports.model.serving_scenario) is a mapping with `"mode": "serve"` and a
`serving` section, or a preset name. Prefill is compute-bound: measured GEMM
and attention rates (reports.model.measurements). A decode step is bound by reading the weights and
the KV cache: the measured HBM bandwidth (membw rows) and, for the KV cache, measured decode-kernel
rows (workload `decode_attention`), else the HBM figure. The KV cache and the
weights set the batch. Every assumption is plain data in ASSUMPTIONS with its source; the formulas
are the named functions below. Conventions: bytes decimal, GiB binary; per GPU unless named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

from reports.model.compute import attention_core_flops
from reports.model.config import ScenarioError
from reports.model.hardware import GIB, GPU
from reports.model.measurements import Figure, Measurements
from reports.model.presets import Model
from reports.model.serving_allreduce import allreduce_busbw_gbps, allreduce_curve
from results.words import counted

# bytes per weight / KV element
PRECISIONS = {"bf16": 2, "fp8": 1}

_TRT = "NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md"
_MLP40 = "mlcommons/inference_results_v4.0 closed/NVIDIA/configs/llama2-70b"
ASSUMPTIONS: dict[str, Figure] = {
    "kv_free_fraction": Figure(0.90, "KV cache gets 90% of the memory left after weights: "
                               f"TensorRT-LLM's default kv_cache_free_gpu_mem_fraction ({_TRT}); "
                               f"kvcache_free_gpu_mem_frac 0.90 in {_MLP40}", "assumption"),
    "runtime_reserve_gib": Figure(3.0, "assumption: 3 GiB per GPU for the CUDA context, GEMM "
                                  "workspaces and one engine step's activations", "assumption"),
    "max_batch": Figure(2048, "assumption: engine cap on sequences in flight (TensorRT-LLM "
                        "builds default to max_batch_size 2048)", "assumption"),
    "fp8_gemm_speedup": Figure(1.8, "assumption: compute-bound FP8 GEMMs run 1.8x bf16 (peak 2x, "
                               "NVIDIA H100 datasheet; FlashAttention-3 reaches 1.6x in FP8, Shah "
                               "et al. 2024); no fp8 gemm rows", "assumption"),
    "step_overhead_s": Figure(5e-4, "assumption: 0.5 ms per decode step for sampling, "
                              "scheduling and launches (CUDA graphs)", "assumption"),
    "efficiency_spread": Figure(0.10, "assumption: measured kernel rates and bandwidths hold to "
                                "+-10% inside a serving engine (the range's spread)", "assumption"),
    "continuous_batching": Figure(1.0, "assumption: continuous (in-flight) batching with a paged "
                                  "KV cache keeps `batch` sequences in flight, each on average "
                                  "half-way through its output, so the KV cache holds input + "
                                  "output/2 tokens per sequence; finished sequences are replaced "
                                  "at once and their prefill runs inside the decode steps",
                                  "assumption"),
    "ttft_wait_steps": Figure(1.5, "assumption: a new request waits half a step to be scheduled, "
                              "then its prefill runs inside one full decode step", "assumption"),
    "poisson_in_flight": Figure(1.0, "assumption: under Poisson arrivals (MLPerf Server, Reddi et "
                                "al. 2020 sec. III) the sequences in flight are Poisson(b), so "
                                "a p-th percentile limit holds at b + z_p sqrt(b)", "assumption"),
}
A = {k: v.value for k, v in ASSUMPTIONS.items()}


@dataclass(frozen=True)
class Serving:
    """One serving setting: a replica of tp x pp GPUs, `replicas` of them."""

    name: str
    model: Model
    gpu: GPU
    precision: str
    kv_precision: str
    input_len: int
    output_len: int
    tp: int = 1
    pp: int = 1
    batch: int | None = None  # None: auto
    ttft_s: float | None = None
    tpot_s: float | None = None
    replicas: int = 1
    max_batch: int = int(A["max_batch"])
    latency_percentile: float | None = None  # targets are this percentile (None: the mean)

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp


# --- memory ---------------------------------------------------------------------------------------


def weight_bytes_per_gpu(s: Serving) -> float:
    """All weights split over the replica's tp x pp GPUs (embedding and output layer included)."""
    return s.model.params() * PRECISIONS[s.precision] / s.gpus_per_replica


def kv_bytes_per_token(s: Serving) -> float:
    """KV-cache bytes one token keeps on one GPU: K and V for each of the stage's layers over the
    GPU's share of the KV heads (replicated when tp exceeds the KV heads, as GQA engines do)."""
    heads = max(1.0, s.model.kv_heads / s.tp)
    return 2 * stage_layers(s) * heads * s.model.head_dim * PRECISIONS[s.kv_precision]


def stage_layers(s: Serving) -> int:
    return -(-s.model.layers // s.pp)


def kv_tokens_per_sequence(s: Serving) -> float:
    """Tokens a sequence keeps cached on average under continuous batching (ASSUMPTIONS)."""
    return s.input_len + s.output_len / 2


def kv_capacity_bytes(s: Serving) -> float:
    """KV-cache bytes per GPU: the free fraction of what weights and the runtime leave."""
    free = s.gpu.memory_bytes - weight_bytes_per_gpu(s) - A["runtime_reserve_gib"] * GIB
    return max(0.0, free) * A["kv_free_fraction"]


def max_batch_fitting(s: Serving) -> int:
    """Sequences in flight the KV cache holds (0: not even one)."""
    return int(kv_capacity_bytes(s) // (kv_bytes_per_token(s) * kv_tokens_per_sequence(s)))


def memory_parts_gib(s: Serving, batch: int) -> dict[str, float]:
    kv = batch * kv_tokens_per_sequence(s) * kv_bytes_per_token(s)
    return {"weights": weight_bytes_per_gpu(s) / GIB, "kv_cache": kv / GIB,
            "runtime": A["runtime_reserve_gib"]}


def check_fits(s: Serving, batch: int) -> None:
    """Refuse, in one line with the memory needed, a batch or context the GPU cannot hold."""
    cap_gib = s.gpu.memory_bytes / GIB
    parts = memory_parts_gib(s, batch)
    need = parts["kv_cache"] / A["kv_free_fraction"] + parts["weights"] + parts["runtime"]
    if need <= cap_gib:
        return
    what = f"{s.model.name} {s.precision} on {s.gpu.name} tp {s.tp} pp {s.pp}"
    fits = max_batch_fitting(s)
    hint = (f"at most {counted(fits, 'sequence')} {'fits' if fits == 1 else 'fit'}" if fits else
            "not even one sequence fits: raise tp/pp, use fp8 or shorten the context")
    raise ScenarioError(
        f"{what}: batch {batch} of {s.input_len}+{s.output_len} tokens needs {need:.1f} GiB per "
        f"GPU (weights {parts['weights']:.1f}, KV cache {parts['kv_cache']:.1f} / "
        f"{A['kv_free_fraction']:.0%}, runtime {parts['runtime']:.1f}) of {cap_gib:.1f} GiB; "
        f"{hint}")


def tp_allreduce_seconds(s: Serving, f: dict, tokens: float) -> float:
    """Tensor-parallel traffic of `tokens` tokens through one pipeline stage: two all-reduces
    per layer (after attention and after the MLP; Megatron-LM, Shoeybi et al. 2019, sec. 3) of
    tokens x hidden bf16 activations, each at the busbw its size reaches. Every token of a step
    pays it: decode tokens and the prefill tokens riding in the step alike."""
    if s.tp <= 1 or tokens <= 0:
        return 0.0
    nbytes = tokens * s.model.hidden * 2
    bw = allreduce_busbw_gbps(nbytes, f["nvlink_busbw_gbps"].value, f["allreduce_by_size"].value)
    return 2 * stage_layers(s) * nbytes * 2 * (s.tp - 1) / s.tp / (bw * 1e9)


# --- time -----------------------------------------------------------------------------------------

GEMM_M = 8192  # tokens of one engine step when compute-bound (TensorRT-LLM max_num_tokens 8192)


def gemm_shapes(m: Model, tp: int) -> list[tuple[int, int]]:
    """(n, k) per GPU of one layer's GEMMs: column-parallel QKV and gate/up, row-parallel
    output and down projections (Megatron tensor parallelism, as the training model)."""
    h, f = m.hidden, m.ffn_hidden
    return [((h + 2 * m.kv_dim) // tp, h), (h, h // tp),
            ((m.ffn_matrices - 1) * f // tp, h), (h, f // tp)]


def figures(s: Serving, meas: Measurements) -> dict[str, Figure]:
    """The measured (or fallback) figures one estimate rests on."""
    g = s.gpu
    hbm = meas.hbm_tbps(g)
    out = {"hbm_tbps": hbm, "kv_read_tbps": decode_kv_tbps(meas, g, hbm),
           "nvlink_busbw_gbps": meas.nvlink_busbw_gbps(g),
           "allreduce_by_size": allreduce_curve(meas, g),
           "attention_prefill_tflops": meas.attention_tflops(g, s.input_len, s.model.head_dim,
                                                             True, "fwd")}
    n, k = gemm_shapes(s.model, s.tp)[2]
    out["gemm_bf16"] = meas.gemm_seconds(g, GEMM_M, n, k)[1]
    if s.precision == "fp8":
        out["fp8_gemm_speedup"] = ASSUMPTIONS["fp8_gemm_speedup"]
    out["framework_efficiency"] = meas.efficiency(g)  # compute terms only
    return out


def decode_kv_tbps(meas: Measurements, g: GPU, hbm: Figure) -> Figure:
    """KV-cache read bandwidth of the decode attention kernel: the best measured decode row
    (workload decode_attention, bench/workloads/decode.py: its gbps counts the KV bytes read),
    else the HBM figure."""
    rows = [r for r in meas.rows("decode_attention", g.name) if (r.get("gbps") or 0) > 0]
    if not rows:
        return Figure(hbm.value, f"no decode-attention rows: the KV cache streams at the HBM "
                                 f"figure ({hbm.source})", hbm.kind)
    best = max(rows, key=lambda r: float(r["gbps"]))
    return Figure(float(best["gbps"]) / 1000, f"{best['_origin']}: attention decode "
                  f"{g.name} {best.get('backend')} {best['params']} run {best.get('run_id')}",
                  best["_origin"])


def gemm_seconds(s: Serving, meas: Measurements, tokens: float, eff: float) -> float:
    """Compute time of one layer's GEMMs for `tokens` tokens at the compute-bound rate measured
    for each shape (M = GEMM_M), FP8 faster by its speedup, slowed by the training model's one
    calibrated constant (kernels reach that fraction of their benchmarked speed in a framework)."""
    speed = A["fp8_gemm_speedup"] if s.precision == "fp8" else 1.0
    t = 0.0
    for n, k in gemm_shapes(s.model, s.tp):
        t += meas.gemm_seconds(s.gpu, GEMM_M, n, k)[0] * tokens / GEMM_M
    return t / speed / eff / meas.efficiency(s.gpu).value


def read_weight_bytes(s: Serving) -> float:
    """Weights a decode step streams per GPU: the layers and the output layer (the embedding
    matrix itself when tied), not the input embedding (a lookup)."""
    m = s.model
    return (m.layers * m.layer_params() + m.vocab * m.hidden) * PRECISIONS[s.precision] / \
        s.gpus_per_replica


def decode_stage(s: Serving, meas: Measurements, f: dict, b: float, eff: float,
                 overlap: float) -> dict[str, float]:
    """One pipeline stage advancing b sequences by one token, seconds by part.

    Weights stream from HBM once per step; the GEMMs' tensor-core time adds to it except the
    `overlap` share of the shorter (0: none, the central estimate; 1: roofline max). The KV cache
    of every sequence is read once (average context input + output/2). Tensor parallelism adds
    two all-reduces of b x hidden bf16 activations per layer (tp_allreduce_seconds).
    """
    L = stage_layers(s)
    w = read_weight_bytes(s) / (f["hbm_tbps"].value * 1e12 * eff)
    c = L * gemm_seconds(s, meas, b, eff)
    kv = b * kv_tokens_per_sequence(s) * kv_bytes_per_token(s) / (f["kv_read_tbps"].value
                                                                   * 1e12 * eff)
    ar = tp_allreduce_seconds(s, f, b) / eff
    return {"weights": w, "gemm_compute": c - overlap * min(w, c), "kv_cache": kv,
            "tp_comm": ar, "overhead": A["step_overhead_s"] / s.pp}


def prefill_stage_seconds(s: Serving, meas: Measurements, f: dict, eff: float) -> float:
    """What one request's prompt costs one pipeline stage (its weights are streamed by the
    decode step it rides in): the GEMMs plus causal attention at the measured prefill rate,
    plus the prompt tokens' tensor-parallel all-reduces (tp_allreduce_seconds)."""
    L = stage_layers(s)
    attn = attention_core_flops(s.model, s.input_len, s.input_len, s.model.heads / s.tp, True)
    return L * (gemm_seconds(s, meas, s.input_len, eff)
                + attn / (f["attention_prefill_tflops"].value * 1e12 * eff
                          * meas.efficiency(s.gpu).value)) \
        + tp_allreduce_seconds(s, f, s.input_len) / eff


@dataclass(frozen=True)
class Timing:
    tpot_s: float
    ttft_s: float
    tokens_per_s: float  # one replica
    parts: dict[str, float]  # one token step


def timing(s: Serving, meas: Measurements, f: dict, batch: int, eff: float = 1.0,
           overlap: float = 0.0) -> Timing:
    """Steady state at `batch` sequences in flight (continuous batching, ASSUMPTIONS).

    With pp stages the batch splits into pp micro-batches that follow each other through the
    stages, so a token step takes pp stage steps. Every output_len steps each slot's sequence ends
    and a new one is prefilled inside the step: batch/output_len prefills per step. TPOT is that
    step; TTFT waits ttft_wait_steps steps plus the prompt's own pass through every stage.
    """
    b = batch / s.pp
    stage = decode_stage(s, meas, f, b, eff, overlap)
    pre = prefill_stage_seconds(s, meas, f, eff)
    slack = max(0.0, stage["weights"] - stage["gemm_compute"])
    add = b / s.output_len * pre
    stage["prefill"] = add - overlap * min(add, slack)
    step = s.pp * sum(stage.values())
    alone = s.pp * (pre + read_weight_bytes(s) / (f["hbm_tbps"].value * 1e12 * eff))
    return Timing(step, A["ttft_wait_steps"] * step + alone, batch / step,
                  {k: s.pp * v for k, v in stage.items()})


# --- the batch and the estimate -------------------------------------------------------------------


def peak_batch(b: int, percentile: float | None) -> int:
    """The batch a percentile latency limit is checked at: a mean of b sequences in flight
    under Poisson arrivals is Poisson(b), so its p-th percentile is ~b + z_p sqrt(b) (normal
    approximation; ASSUMPTIONS poisson_in_flight). None: the mean, b."""
    if percentile is None:
        return b
    return math.ceil(b + NormalDist().inv_cdf(percentile / 100) * math.sqrt(b))


def choose_batch(s: Serving, meas: Measurements, f: dict) -> tuple[int, str]:
    """The batch and why: as given (checked to fit), else the largest that fits in memory, the
    engine cap and the latency targets. TPOT and TTFT grow with the batch, so a bisection finds
    the largest meeting them (percentile targets checked at peak_batch); a target not even batch
    1 meets is refused with the best value."""
    if s.batch is not None:
        check_fits(s, s.batch)
        return s.batch, "given"
    fits = max_batch_fitting(s)
    if fits < 1:
        check_fits(s, 1)  # raises, with the memory one sequence needs
    hi = min(fits, s.max_batch)
    why = "memory" if fits <= s.max_batch else "max_batch"

    def meets(b: int) -> bool:
        t = timing(s, meas, f, peak_batch(b, s.latency_percentile))
        return (s.tpot_s is None or t.tpot_s <= s.tpot_s) and \
            (s.ttft_s is None or t.ttft_s <= s.ttft_s)

    if meets(hi):
        return hi, why
    one = timing(s, meas, f, peak_batch(1, s.latency_percentile))
    if not meets(1):
        missed = [f"{k} {getattr(s, k)} s (best achievable {getattr(one, k):.4g} s at batch 1)"
                  for k in ("tpot_s", "ttft_s") if getattr(s, k) is not None
                  and getattr(one, k) > getattr(s, k)]
        raise ScenarioError(f"no batch meets the latency target {' and '.join(missed)} for "
                            f"{s.model.name} {s.precision} on {s.gpu.name} tp {s.tp} pp {s.pp}")
    lo = 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if meets(mid) else (lo, mid)
    return lo, "latency target"


@dataclass
class ServingEstimate:
    serving: Serving
    batch: int
    batch_reason: str
    timing: Timing
    low: Timing
    high: Timing
    max_batch_fits: int
    sources: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)  # sources' figures, kinds kept

    def to_dict(self) -> dict:
        s, t = self.serving, self.timing
        mem = memory_parts_gib(s, self.batch)
        per = s.replicas * t.tokens_per_s
        n = s.replicas * s.gpus_per_replica
        return {
            "scenario": s.name, "mode": "serve", "model": s.model.name,
            "params_b": s.model.params() / 1e9, "gpu": s.gpu.name, "precision": s.precision,
            "kv_precision": s.kv_precision, "tp": s.tp, "pp": s.pp, "replicas": s.replicas,
            "gpus": n, "input_len": s.input_len, "output_len": s.output_len,
            "batch": self.batch, "batch_reason": self.batch_reason,
            "max_batch_fits": self.max_batch_fits,
            "output_tokens_per_s": per, "output_tokens_per_s_per_gpu": per / n,
            "ttft_s": t.ttft_s, "tpot_s": t.tpot_s,
            "targets": {"ttft_s": s.ttft_s, "tpot_s": s.tpot_s},
            "kv_cache_gib": mem["kv_cache"], "weights_gib": mem["weights"],
            "memory_gib_per_gpu": sum(mem.values()),
            "memory_capacity_gib": s.gpu.memory_bytes / GIB, "fits_in_memory": True,
            "step_breakdown_s": t.parts,
            "range": {"output_tokens_per_s": [s.replicas * self.low.tokens_per_s,
                                              s.replicas * self.high.tokens_per_s],
                      "tpot_s": [self.high.tpot_s, self.low.tpot_s],
                      "ttft_s": [self.high.ttft_s, self.low.ttft_s],
                      "settings": "low: kernels 10% slower, no overlap; high: 10% faster, "
                                  "weight streaming and GEMMs fully overlapped, prefill hidden "
                                  "in the decode steps' memory-bound slack"},
            "assumptions": {k: v.source for k, v in ASSUMPTIONS.items()},
            "sources": self.sources,
            "figures": figure_dicts(self.figures),
        }


def figure_dicts(figures: dict[str, Figure]) -> dict[str, dict]:
    """Figures as plain data (value, kind, source), as `to_dict` and the report carry them."""
    return {k: {"value": f.value, "kind": f.kind, "source": f.source} for k, f in figures.items()}


def evaluate(s: Serving, meas: Measurements) -> ServingEstimate:
    """The serving estimate of one setting (batch chosen by choose_batch)."""
    if s.model.heads % s.tp or s.model.ffn_hidden % s.tp:
        raise ScenarioError(f"tp {s.tp} does not divide {s.model.name}'s heads/ffn")
    if s.pp > s.model.layers:
        raise ScenarioError(f"pp {s.pp} exceeds {s.model.name}'s {s.model.layers} layers")
    if s.tp > s.gpu.node_gpus:
        raise ScenarioError(f"tp {s.tp} spans more than one {s.gpu.node_gpus}-GPU NVLink node")
    f = figures(s, meas)
    batch, why = choose_batch(s, meas, f)
    spread = A["efficiency_spread"]
    # a preset model's shape and the GPU's memory are read from a paper and a listing:
    # "published"; a shape the scenario file gives is the user's own input
    given = s.model.source == "scenario file"
    figs = f | {"model": Figure(s.model.name, s.model.source,
                                "assumption" if given else "published"),
                "memory": Figure(s.gpu.memory_bytes, s.gpu.sources.get("memory_total_bytes", ""),
                                 "published")}
    return ServingEstimate(
        s, batch, why, timing(s, meas, f, batch), timing(s, meas, f, batch, 1 - spread, 0.0),
        timing(s, meas, f, batch, 1 + spread, 1.0), max_batch_fitting(s),
        {k: v.source for k, v in figs.items()}, figs)
