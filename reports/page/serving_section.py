"""The report's serving section as data, and its PNG charts (matplotlib, Agg backend).

`serving_section(measurements, out_dir)` returns {"title", "intro", "tables", "figures", "refs"}:
tables are {"title", "columns", "rows"} with every cell {"text", "value", "ref"}; figures are
{"path", "caption", "refs"} (PNG files written under out_dir); refs maps each ref id to what a
number rests on: "S<n>" a published source, "M<n>" the model inputs of one estimate (each input
with its source: a measured row, the reference results, or a labelled assumption), "A" the
serving model's assumptions. The page engineer wires it into the report.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reports.model.config import ScenarioError
from reports.model.measurements import as_measurements
from reports.model.serving import ASSUMPTIONS, Serving, evaluate, max_batch_fitting
from reports.model.serving_cases import validate_serving
from reports.model.serving_cluster import WORKLOADS, cluster_serving, serving_gain
from reports.model.serving_scenario import SERVING_SCENARIOS, estimate_serving

TITLE = "Serving: what Colossus serves, and what the H200 adds"
CURVE = {"H100-SXM": "serve-llama3-70b-h100", "H200-SXM": "serve-llama3-70b-h200"}
COLORS = {"H100-SXM": "#1f77b4", "H200-SXM": "#d62728"}


class Refs:
    """Ref ids for sources and model inputs, numbered in the order the section cites them."""

    def __init__(self):
        self.items: dict[str, dict] = {"A": {"kind": "assumptions", "text": "; ".join(
            f"{k}: {v.source}" for k, v in ASSUMPTIONS.items())}}
        self._by_text: dict[tuple[str, str], str] = {}

    def add(self, kind: str, text: str) -> str:
        key = (kind, text)
        if key not in self._by_text:
            n = sum(1 for k in self.items if k.startswith(kind[0].upper())) + 1
            rid = f"{kind[0].upper()}{n}"
            self._by_text[key] = rid
            self.items[rid] = {"kind": kind, "text": text}
        return self._by_text[key]

    def model(self, sources: dict[str, str]) -> str:
        return self.add("model inputs", "; ".join(f"{k}: {v}" for k, v in sources.items()))


def cell(value, text: str, ref: str) -> dict:
    return {"text": text, "value": value, "ref": ref}


def _plt():
    import matplotlib  # lazy: only the report draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def batch_sweep(s: Serving, meas, points: int = 14) -> list[dict]:
    """Throughput and latency at log-spaced batches up to the largest that fits."""
    top = min(max_batch_fitting(s), s.max_batch)
    batches = sorted({max(1, round(top ** (i / (points - 1)))) for i in range(points)})
    out = []
    for b in batches:
        try:
            d = evaluate(replace(s, batch=b, tpot_s=None, ttft_s=None), meas).to_dict()
        except ScenarioError:
            continue
        out.append({"batch": b, "per_gpu": d["output_tokens_per_s_per_gpu"],
                    "tpot_ms": d["tpot_s"] * 1e3, "ttft_s": d["ttft_s"]})
    return out


def _save(fig, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return str(path)


def curves_png(sweeps: dict[str, list[dict]], out_dir: Path) -> tuple[str, str]:
    """Tokens/s per GPU against batch, and TPOT against tokens/s per GPU (the latency-throughput
    curve), H100 and H200."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for g, pts in sweeps.items():
        ax.plot([p["batch"] for p in pts], [p["per_gpu"] for p in pts], "o-", color=COLORS[g],
                label=g)
    ax.set_xscale("log")
    ax.set(xlabel="sequences in flight (batch)", ylabel="output tokens/s per GPU",
           title="Llama 3 70B FP8, 1000 in / 1000 out: throughput against batch")
    ax.grid(alpha=0.3)
    ax.legend()
    a = _save(fig, out_dir / "serving_throughput_batch.png")
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for g, pts in sweeps.items():
        ax.plot([p["per_gpu"] for p in pts], [p["tpot_ms"] for p in pts], "o-",
                color=COLORS[g], label=g)
    ax.set(xlabel="output tokens/s per GPU", ylabel="time per output token (ms)",
           title="latency against throughput (each point a batch)")
    ax.grid(alpha=0.3)
    ax.legend()
    return a, _save(fig, out_dir / "serving_latency_throughput.png")


def gain_png(gains: list[dict], out_dir: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = [f"{g['model']} ({g['workload']})" for g in gains]
    x = range(len(gains))
    ax.bar([i - 0.2 for i in x], [g["serving_gain"] for g in gains], 0.4, label="serving",
           color="#d62728")
    ax.bar([i + 0.2 for i in x], [g["training_gain"] or 0 for g in gains], 0.4,
           label="training", color="#7f7f7f")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set(ylabel="H200 / H100 per GPU", title="the H200 gain: serving against training")
    ax.legend()
    return _save(fig, out_dir / "serving_gain.png")


def _fmt(x: float, spec: str = ",.0f") -> str:
    return format(x, spec)


def serving_section(measurements, out_dir) -> dict:
    """The section: presets, validation, cluster figures, the gain, and three charts."""
    meas = as_measurements(measurements)
    out_dir = Path(out_dir)
    refs = Refs()
    presets = []
    for name in SERVING_SCENARIOS:
        try:
            d = estimate_serving(name, meas).to_dict()
        except ScenarioError as e:
            presets.append([cell(None, name, "A"), cell(None, str(e), "A")] + [
                cell(None, "", "A")] * 6)
            continue
        m = refs.model(d["sources"])
        lo, hi = (x / d["gpus"] for x in d["range"]["output_tokens_per_s"])
        presets.append([
            cell(None, name, m), cell(None, f"{d['gpu']} tp{d['tp']} pp{d['pp']} "
                                               f"{d['precision']}", m),
            cell(d["batch"], f"{d['batch']} ({d['batch_reason']})", m),
            cell(d["output_tokens_per_s_per_gpu"], _fmt(d["output_tokens_per_s_per_gpu"]), m),
            cell([lo, hi], f"{_fmt(lo)}-{_fmt(hi)}", m),
            cell(d["ttft_s"], f"{d['ttft_s']:.3f}", m),
            cell(d["tpot_s"], f"{d['tpot_s'] * 1e3:.1f}", m),
            cell(d["kv_cache_gib"], f"{d['kv_cache_gib']:.1f}", m)])
    val, vrows = [], validate_serving(meas)
    for r in vrows:
        s = refs.add("source", r["source"])
        val.append([cell(None, r["name"], s), cell(r["gpus"], str(r["gpus"]), s),
                    cell(r["published"], _fmt(r["published"]), s),
                    cell(r["predicted"], _fmt(r["predicted"]), refs.model(r["inputs"])),
                    cell(r["error_pct"], f"{r['error_pct']:+.1f}%", s)])
    clu = []
    for w in WORKLOADS:
        for r in cluster_serving(workload=w, measurements=meas):
            p = refs.add("source", f"{r['cluster']}: {r['sources']['pools']}")
            ws = refs.add("source", r["sources"]["workload"])
            fit = [q for q in r["pools"] if q["fits"]]
            per = "; ".join(f"{q['gpu']} tp{q['tp']}: {_fmt(q['tokens_per_s_per_gpu'])}/GPU"
                            for q in fit)
            m = refs.model({f"{q['gpu']} {k}": v for q in fit for k, v in q["inputs"].items()})
            clu.append([cell(None, r["cluster"], p), cell(None, f"{r['model']} ({w})", ws),
                        cell(r["output_tokens_per_s"],
                             f"{r['output_tokens_per_s'] / 1e6:,.1f}M", m),
                        cell(r["output_tokens_per_s_per_gpu"],
                             _fmt(r["output_tokens_per_s_per_gpu"]), m),
                        cell(None, per, m)])
    gains, grow = [], []
    for model in ("llama3-70b", "llama3-405b"):
        for w in WORKLOADS:
            g = serving_gain(model, w, meas)
            gains.append(g)
            hb = refs.add("model inputs", "; ".join(
                f"{k}: {v}" for k, v in g["reasons"]["hbm_sources"].items()))
            tr = refs.add("model inputs", g["training_gain_note"])
            grow.append([cell(None, f"{model} ({w})", hb),
                         cell(g["serving_gain"], f"{g['serving_gain']:.2f}x", hb),
                         cell(g["serving_gain_same_tp"], f"{g['serving_gain_same_tp']:.2f}x",
                              hb),
                         cell(g["training_gain"], "n/a" if g["training_gain"] is None
                              else f"{g['training_gain']:.2f}x", tr),
                         cell(None, g["reasons"]["why"], hb)])
    sweeps = {}
    for g, name in CURVE.items():
        est = estimate_serving(name, meas)
        sweeps[g] = batch_sweep(est.serving, meas)
    tput, lat = curves_png(sweeps, out_dir)
    curve_ref = refs.model(estimate_serving(CURVE["H200-SXM"], meas).sources)
    return {
        "title": TITLE,
        "intro": ("Decoding reads every weight and the whole KV cache once per output token, so "
                  "its speed follows HBM bandwidth, and the batch that amortises each weight "
                  "read follows the memory left for the KV cache. The H200 has the H100's "
                  "tensor cores but 1.43x the bandwidth and 1.76x the memory. Estimates come "
                  "from the serving model (reports.model.serving) on the same measurements as "
                  "the training sections."),
        "tables": [
            {"title": "serving presets (estimate --scenario NAME)", "columns": [
                "preset", "replica", "batch", "tokens/s per GPU", "range", "TTFT s", "TPOT ms",
                "KV cache GiB"], "rows": presets},
            {"title": "the serving model against published results (output tokens/s; "
                      f"{sum(abs(r['error_pct']) <= 20 for r in vrows)} of {len(vrows)} within "
                      "20%, mean |error| "
                      f"{sum(abs(r['error_pct']) for r in vrows) / max(len(vrows), 1):.1f}%)",
             "columns": ["case", "GPUs", "published", "predicted", "error"], "rows": val},
            {"title": "what the Colossus presets serve", "columns": [
                "cluster", "model (workload)", "output tokens/s", "per GPU", "per pool"],
             "rows": clu},
            {"title": "the H200 gain per GPU: serving against training", "columns": [
                "model (workload)", "serving, own best tp", "serving, same tp", "training",
                "why"], "rows": grow},
        ],
        "figures": [
            {"path": tput, "caption": "output tokens/s per GPU against batch, Llama 3 70B FP8 "
                                      "(H100 tp2, H200 tp1)", "refs": [curve_ref, "A"]},
            {"path": lat, "caption": "time per output token against tokens/s per GPU",
             "refs": [curve_ref, "A"]},
            {"path": gain_png(gains, out_dir), "caption": "H200 over H100 per GPU, serving and "
                                                          "training", "refs": ["A"]},
        ],
        "refs": refs.items,
    }
