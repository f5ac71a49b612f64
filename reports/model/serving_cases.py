"""The serving model against published serving results: predicted vs published output tokens/s.

Cases (plain data, CASES):
- MLPerf Inference v4.0, closed division, Llama 2 70B (99.9% accuracy target), NVIDIA's DGX H100
  (8x H100-SXM-80GB) and H200 (8x H200-SXM-141GB) systems, Offline and Server. Published tokens/s
  from the submissions' mlperf_log_summary.txt; the settings from NVIDIA's submitted configuration
  (closed/NVIDIA/configs/llama2-70b: FP8; H100 tensor parallel 2 x 4 replicas, H200 one GPU per
  replica; Offline batch 896 / 806, Server at most 1024 / 896; kvcache_free_gpu_mem_frac 0.90).
  Output length: the log's tokens/s over samples/s (292 on H100, 293 on H200); input length 300
  is an assumption (the mean OpenOrca prompt; the log omits it).
  Server: the model's largest batch up to the configured one that meets MLPerf's latency limits
  (mlcommons/inference loadgen/mlperf.conf: llama2-70b.Server.ttft_latency 2000 ms,
  tpot_latency 200 ms, *.Server.target_latency_percentile 99) at the 99th percentile of the
  sequences in flight under LoadGen's Poisson arrivals (serving.peak_batch).
- TensorRT-LLM's published throughput table (docs/source/performance/perf-overview.md, "Total
  Output Throughput (tokens/sec)", trtllm-bench at maximum load, FP8 checkpoints): Llama 3.3 70B
  (Llama 3 70B's architecture) on H200 TP1 and H100 TP2, Llama 3.1 405B (Llama 3 405B's) on TP8,
  uniform input/output lengths; batch unstated, so the model's own (memory-bound) batch is used.
  Each run is a finite set of requests (the same file's $num_requests table: 3000 for 128/2048,
  500/2000 and 1000/1000, 1500 for 2048/2048), all queued at once with the same lengths, so
  they run in waves of at most `batch` that start and end together: the last wave runs part
  full, and the table's tokens/s is all tokens over the whole run (finite_run_tokens_per_s).

Nothing is fitted to these cases: the model runs on the shipped reference results or its labelled
fallbacks, with the training model's calibrated constant for the GPU's architecture.
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.model.config import ScenarioError
from reports.model.hardware import gpu
from reports.model.measurements import Measurements, as_measurements
from reports.model.presets import model_from
from reports.model.serving import Serving, ServingEstimate, evaluate, figures, timing

LLAMA2_70B = {"name": "llama2-70b", "layers": 80, "hidden": 8192, "heads": 64, "kv_heads": 8,
              "ffn_hidden": 28672, "vocab": 32000, "seq_len": 4096, "gated_mlp": True}
LLAMA2_SOURCE = "Touvron et al. 2023 (Llama 2), Table 1 and the released 70B configuration"

_MLP = "mlcommons/inference_results_v4.0 closed/NVIDIA/results/{sys}/llama2-70b-99.9/{sc}/" \
       "performance/run_1/mlperf_log_summary.txt"
MLPERF_SERVER_PERCENTILE = 99.0  # mlcommons/inference loadgen/mlperf.conf
_H100_SYS, _H200_SYS = "DGX-H100_H100-SXM-80GBx8_TRT", "H200-SXM-141GBx8_TRT"
_TRT = ("NVIDIA/TensorRT-LLM docs/source/performance/perf-overview.md (commit 00f3768), "
        "{model} {gpu} TP{tp} (FP8), ISL/OSL {i}/{o}")


@dataclass(frozen=True)
class ServingCase:
    name: str
    model: str  # a MODELS key, or "llama2-70b" (LLAMA2_70B)
    gpu: str
    precision: str
    tp: int
    gpus: int
    input_len: int
    output_len: int
    scenario: str  # offline | server
    published_tokens_per_s: float  # all `gpus` together
    source: str
    batch: int | None = None
    ttft_s: float | None = None
    tpot_s: float | None = None
    max_batch: int | None = None
    requests: int | None = None  # a finite run of this many requests (None: steady state)

    def setting(self) -> dict:
        return {"model": self.model, "precision": self.precision, "gpus": self.gpus,
                "tp": self.tp, "input_len": self.input_len, "output_len": self.output_len,
                "scenario": self.scenario, "batch": self.batch or "auto",
                "max_batch": self.max_batch, "ttft_s": self.ttft_s, "tpot_s": self.tpot_s}


def _mlperf(g: str, sc: str, published: float, tp: int, batch: int, out: int) -> ServingCase:
    """Offline runs at the configured batch; Server at the largest batch up to the configured
    one that meets the latency limits."""
    sys = _H100_SYS if g == "H100-SXM" else _H200_SYS
    server = sc == "Server"
    return ServingCase(f"MLPerf v4.0 Llama 2 70B {sc}, 8x {g}", "llama2-70b", g, "fp8", tp, 8,
                       300, out, sc.lower(), published, _MLP.format(sys=sys, sc=sc),
                       None if server else batch, 2.0 if server else None,
                       0.2 if server else None, batch if server else None)


# trtllm-bench requests per run by input/output length (perf-overview.md, "$num_requests")
TRT_REQUESTS = {(128, 2048): 3000, (500, 2000): 3000, (1000, 1000): 3000, (2048, 2048): 1500}


def _trt(model: str, g: str, tp: int, i: int, o: int, published: float) -> ServingCase:
    label = {"llama3-70b": "Llama 3.3 70B", "llama3-405b": "Llama 3.1 405B"}[model]
    return ServingCase(f"TensorRT-LLM {label} {i}/{o}, {g} TP{tp}", model, g, "fp8", tp, tp, i,
                       o, "offline", published,
                       _TRT.format(model=label, gpu=g.split("-")[0], tp=tp, i=i, o=o),
                       requests=TRT_REQUESTS[(i, o)])


def finite_run_tokens_per_s(est: ServingEstimate, requests: int, meas) -> float:
    """Output tokens/s of one replica over a finite run of `requests` equal requests queued at
    once: waves of min(batch, left) sequences, each output_len token steps at its own batch
    (the steady-state step of that batch: the same prefills and average KV cache per step),
    all tokens over the summed time. One wave or many full ones: the steady-state figure."""
    s = est.serving
    f = figures(s, meas)
    left, seconds = requests, 0.0
    while left > 0:
        wave = min(est.batch, left)
        seconds += s.output_len * timing(s, meas, f, wave).tpot_s
        left -= wave
    return requests * s.output_len / seconds


CASES: tuple[ServingCase, ...] = (
    _mlperf("H100-SXM", "Offline", 21805.8, 2, 896, 292),
    _mlperf("H100-SXM", "Server", 20556.40, 2, 1024, 292),
    _mlperf("H200-SXM", "Offline", 27738.3, 1, 806, 293),
    _mlperf("H200-SXM", "Server", 26485.43, 1, 896, 293),
    _trt("llama3-70b", "H200-SXM", 1, 128, 2048, 4336),
    _trt("llama3-70b", "H200-SXM", 1, 500, 2000, 3666),
    _trt("llama3-70b", "H200-SXM", 1, 1000, 1000, 2909),
    _trt("llama3-70b", "H200-SXM", 1, 2048, 2048, 2003),
    _trt("llama3-70b", "H100-SXM", 2, 128, 2048, 6651),
    _trt("llama3-70b", "H100-SXM", 2, 500, 2000, 5222),
    _trt("llama3-70b", "H100-SXM", 2, 1000, 1000, 4205),
    _trt("llama3-70b", "H100-SXM", 2, 2048, 2048, 3082),
    _trt("llama3-405b", "H200-SXM", 8, 128, 2048, 5348),
    _trt("llama3-405b", "H200-SXM", 8, 1000, 1000, 3330),
    _trt("llama3-405b", "H200-SXM", 8, 2048, 2048, 2948),
    _trt("llama3-405b", "H100-SXM", 8, 128, 2048, 4340),
    _trt("llama3-405b", "H100-SXM", 8, 1000, 1000, 2919),
    _trt("llama3-405b", "H100-SXM", 8, 2048, 2048, 2296),
)


def case_serving(c: ServingCase) -> Serving:
    model = model_from(LLAMA2_70B if c.model == "llama2-70b" else c.model)
    if c.model == "llama2-70b":
        model = type(model)(**{**model.__dict__, "source": LLAMA2_SOURCE})
    extra = {"max_batch": c.max_batch} if c.max_batch else {}
    if c.scenario == "server":
        extra["latency_percentile"] = MLPERF_SERVER_PERCENTILE
    return Serving(c.name, model, gpu(c.gpu), c.precision, c.precision, c.input_len,
                   c.output_len, c.tp, 1, c.batch, c.ttft_s, c.tpot_s, c.gpus // c.tp, **extra)


def validate_case(c: ServingCase, meas: Measurements) -> dict:
    """One case's row: published, predicted, error_pct, gpu, source, kind "serving"; raises
    ScenarioError when the model cannot serve the case as published (nothing fits, or no batch
    meets its latency targets)."""
    e = evaluate(case_serving(c), meas)
    est = e.to_dict()
    pred = est["output_tokens_per_s"]
    if c.requests:  # requests spread over the replicas, each a finite run of its share
        pred = est["replicas"] * finite_run_tokens_per_s(e, -(-c.requests // est["replicas"]),
                                                         meas)
    return {**_case_fields(c), "predicted": pred,
            "error_pct": (pred - c.published_tokens_per_s) / c.published_tokens_per_s * 100,
            "setting": c.setting(), "predicted_batch": est["batch"], "requests": c.requests,
            "steady_state": est["output_tokens_per_s"], "inputs": est["sources"],
            "figures": est["figures"]}


def _case_fields(c: ServingCase) -> dict:
    """What a case's row says whether or not the model can compute it."""
    return {"kind": "serving", "name": c.name, "gpu": c.gpu, "gpus": c.gpus,
            "published": c.published_tokens_per_s, "unit": "output tokens/s",
            "source": c.source}


def validate_serving(measurements=None) -> list[dict]:
    """One row per case (validate_case); a case the model cannot compute on these measurements
    keeps its row, with predicted and error_pct None and the reason in `error`."""
    meas = as_measurements(measurements)
    rows = []
    for c in CASES:
        try:
            rows.append(validate_case(c, meas))
        except ScenarioError as e:
            rows.append({**_case_fields(c), "predicted": None, "error_pct": None,
                         "error": f"cannot be computed: {e}"})
    return rows


# The band a serving prediction is judged by: within 20% of the published figure.
WITHIN_PCT = 20.0


def serving_summary(rows: list[dict]) -> dict:
    """How validate_serving's rows read: the cases computed, how many within WITHIN_PCT (all and
    per GPU), max and mean |error|."""
    rows = [r for r in rows if r.get("error_pct") is not None]
    errs = [abs(r["error_pct"]) for r in rows]
    by_gpu: dict[str, list[int]] = {}
    for r, e in zip(rows, errs):
        got = by_gpu.setdefault(r["gpu"], [0, 0])
        got[0] += e <= WITHIN_PCT
        got[1] += 1
    return {"cases": len(rows), "within": sum(e <= WITHIN_PCT for e in errs),
            "within_by_gpu": by_gpu, "max_abs_error_pct": max(errs, default=0.0),
            "mean_abs_error_pct": sum(errs) / max(len(errs), 1)}
