"""What a serving scenario is: the `serving` section's keys, the presets usable as `estimate
--scenario NAME`, and `estimate_serving(spec, measurements)`, the serving half of `estimate`.

A scenario is a mapping {"mode": "serve", "serving": {...}} (optional "name"), given as a mapping,
a JSON/YAML file or text, or a preset name from SERVING_SCENARIOS. Serving keys: model (a preset
name or a model mapping, as the training model takes), gpu (a GPU preset), precision (bf16, fp8),
kv_precision (default: precision), input_len, output_len, tp, pp (default 1), batch (a number or
"auto": the largest that fits, meets the targets and the engine cap), ttft_s and tpot_s (targets,
optional), latency_percentile (the percentile the targets bound, e.g. 99 as MLPerf Server;
default: the mean), replicas (default 1), max_batch (the engine cap).
"""

from __future__ import annotations

import math
from pathlib import Path

from reports.model.config import ScenarioError
from reports.model.hardware import gpu
from reports.model.measurements import as_measurements
from reports.model.presets import model_from
from reports.model.scenario import file_text, parse_text
from reports.model.serving import (
    PRECISIONS,
    A,
    Serving,
    ServingEstimate,
    check_fits,
    evaluate,
    max_batch_fitting,
)

SERVING_KEYS = {"model", "gpu", "precision", "kv_precision", "input_len", "output_len", "tp",
                "pp", "batch", "ttft_s", "tpot_s", "replicas", "max_batch",
                "latency_percentile"}


def _serve(model: str, g: str, precision: str, tp: int, pp: int = 1, inp: int = 1000,
           out: int = 1000, **kw) -> dict:
    return {"mode": "serve", "serving": {"model": model, "gpu": g, "precision": precision,
                                         "tp": tp, "pp": pp, "input_len": inp,
                                         "output_len": out, "batch": "auto", **kw}}


# Presets: Llama 3 on one replica of the smallest TP that holds it (FP8: TensorRT-LLM's published
# configurations, 70B on H200 TP1 and H100 TP2, 405B on TP8), 1000 input / 1000 output tokens.
SERVING_SCENARIOS: dict[str, dict] = {
    "serve-llama3-70b-h100": _serve("llama3-70b", "H100-SXM", "fp8", 2),
    "serve-llama3-70b-h200": _serve("llama3-70b", "H200-SXM", "fp8", 1),
    "serve-llama3-70b-h100-bf16": _serve("llama3-70b", "H100-SXM", "bf16", 4),
    "serve-llama3-70b-h200-bf16": _serve("llama3-70b", "H200-SXM", "bf16", 2),
    "serve-llama3-70b-h100-chat": _serve("llama3-70b", "H100-SXM", "fp8", 2, tpot_s=0.05),
    "serve-llama3-70b-h200-chat": _serve("llama3-70b", "H200-SXM", "fp8", 1, tpot_s=0.05),
    "serve-llama3-405b-h100-fp8": _serve("llama3-405b", "H100-SXM", "fp8", 8),
    "serve-llama3-405b-h200-fp8": _serve("llama3-405b", "H200-SXM", "fp8", 8),
    "serve-llama3-405b-h100-bf16": _serve("llama3-405b", "H100-SXM", "bf16", 8, 2),
    "serve-llama3-405b-h200-bf16": _serve("llama3-405b", "H200-SXM", "bf16", 8),
}


def _int(v, what: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ScenarioError(f"serving {what} must be an integer >= {lo}, got {v!r}")
    return v


def _seconds(v, what: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf:
        raise ScenarioError(f"serving {what} must be a positive number of seconds, got {v!r}")
    return float(v)


def _percentile(v) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not 50 <= v < 100:
        raise ScenarioError(f"serving latency_percentile must be a number in [50, 100), got {v!r}")
    return float(v)


def _precision(v, what: str) -> str:
    if v not in PRECISIONS:
        raise ScenarioError(f"serving {what} must be one of {', '.join(PRECISIONS)}, got {v!r}")
    return v


def serving_from(d: dict, name: str = "custom") -> Serving:
    """A Serving from a scenario mapping with mode "serve" (every key checked, one line each)."""
    if d.get("mode") != "serve":
        raise ScenarioError("a serving scenario needs \"mode\": \"serve\"")
    extra = set(d) - {"mode", "serving", "name"}
    s = d.get("serving")
    if extra or not isinstance(s, dict):
        raise ScenarioError("a serving scenario holds mode, name and a `serving` mapping"
                            + (f"; unknown keys: {', '.join(sorted(map(str, extra)))}"
                               if extra else ""))
    unknown = set(s) - SERVING_KEYS
    if unknown:
        raise ScenarioError(f"unknown serving keys: {', '.join(sorted(map(str, unknown)))}; "
                            f"allowed: {', '.join(sorted(SERVING_KEYS))}")
    missing = [k for k in ("model", "gpu", "input_len", "output_len") if k not in s]
    if missing:  # all of them at once, as a training scenario's
        raise ScenarioError(f"serving is missing {', '.join(map(repr, missing))}")
    try:
        g = gpu(s["gpu"]) if isinstance(s["gpu"], str) else None
    except ValueError as e:
        raise ScenarioError(str(e)) from None
    if g is None:
        raise ScenarioError(f"serving gpu must be a GPU name, got {s['gpu']!r}")
    prec = _precision(s.get("precision", "bf16"), "precision")
    if g.peaks.tflops(prec) is None:  # e.g. an A100: no FP8 tensor cores, no fp8 peak
        raise ScenarioError(f"serving precision {prec!r}: {g.name} has no {prec} peak in the "
                            f"peak table (`info` lists the peaks), nothing to price it at; use "
                            f"bf16")
    batch = s.get("batch", "auto")
    if batch != "auto":
        batch = _int(batch, "batch")
    sv = Serving(d.get("name", name), model_from(s["model"]), g, prec,
                   _precision(s.get("kv_precision", prec), "kv_precision"),
                   _int(s["input_len"], "input_len"), _int(s["output_len"], "output_len"),
                   _int(s.get("tp", 1), "tp"), _int(s.get("pp", 1), "pp"),
                   None if batch == "auto" else batch, _seconds(s.get("ttft_s"), "ttft_s"),
                   _seconds(s.get("tpot_s"), "tpot_s"), _int(s.get("replicas", 1), "replicas"),
                   _int(s.get("max_batch", int(A["max_batch"])), "max_batch"),
                   _percentile(s.get("latency_percentile")))
    _check_context(sv)
    return sv


def _check_context(s: Serving) -> None:
    """Refuse a sequence longer than the model's context window (input + output tokens)."""
    window = s.model.context_window
    if s.input_len + s.output_len <= window:
        return
    if max_batch_fitting(s) < 1:
        check_fits(s, 1)  # nor does it fit in memory: that line names the GiB it needs
    raise ScenarioError(f"serving input_len + output_len = {s.input_len + s.output_len:,} tokens "
                        f"exceeds {s.model.name}'s context window of {window:,} tokens")


def serving_spec(spec) -> dict | None:
    """The mapping of a serving scenario (preset name, mapping, JSON/YAML file or text), or None
    when `spec` is not one (the training model reads it then)."""
    if isinstance(spec, dict):
        return spec if spec.get("mode") == "serve" else None
    if not isinstance(spec, str):
        return None
    if spec in SERVING_SCENARIOS:
        return dict(SERVING_SCENARIOS[spec], name=spec)
    if spec.startswith("serve-") and "\n" not in spec and not Path(spec).is_file():
        raise ScenarioError(f"unknown serving preset {spec!r}; known: "
                            f"{', '.join(SERVING_SCENARIOS)}")
    path = Path(spec)
    text = file_text(path) if "\n" not in spec and path.is_file() else spec
    try:
        data = parse_text(text)
    except ScenarioError:
        return None  # not ours: the training reader reports it
    if isinstance(data, dict) and data.get("mode") == "serve":
        return {"name": path.stem if text is not spec else "custom", **data}
    return None


def estimate_serving(spec, measurements=None) -> ServingEstimate:
    """The serving estimate of a scenario (mapping, preset name, JSON/YAML file or text).
    `measurements`: None (reference results, then fallbacks), a DataFrame or Measurements."""
    d = serving_spec(spec)
    if d is None:
        raise ScenarioError("not a serving scenario (it needs \"mode\": \"serve\")")
    return evaluate(serving_from(d, d.get("name", "custom")), as_measurements(measurements))
