"""The report's serving section as data, and its PNG charts (matplotlib, Agg backend).

`serving_section(measurements, out_dir)` returns {"title", "intro", "notes", "tables",
"figures", "refs"}: tables are {"title", "columns", "rows"} with every cell {"text", "value",
"ref"}; notes are cells (one line per case the model could not compute, with the reason);
figures are {"path", "caption", "refs"} (PNG files written under out_dir); refs maps each ref id
to what a number rests on: "S<n>" {"kind": "source", "text"} a published source; "M<n>"
{"kind": "model inputs", "title", "inputs"} the inputs of one estimate, each {"name", "gpu",
"value", "kind", "source"} as the model's Figure holds it (measured, reference, calibrated,
assumption or published); "A" the serving model's assumptions, as model inputs; "T<n>"
{"kind": "training", "text"} the training model's H200 gain. The page engineer wires it into
the report.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from reports.model.config import ScenarioError
from reports.model.measurements import as_measurements
from reports.model.serving import ASSUMPTIONS, Serving, evaluate, figure_dicts, max_batch_fitting
from reports.model.serving_cases import WITHIN_PCT, serving_summary, validate_serving
from reports.model.serving_cluster import WORKLOADS, cluster_serving, serving_gain
from reports.model.serving_scenario import SERVING_SCENARIOS, estimate_serving
from reports.page.charts import pyplot, to_png

TITLE = "Serving: what Colossus serves, and what the H200 adds"
CURVE = {"H100-SXM": "serve-llama3-70b-h100", "H200-SXM": "serve-llama3-70b-h200"}
COLORS = {"H100-SXM": "#1f77b4", "H200-SXM": "#d62728"}


def figure_inputs(figures: dict[str, dict], gpu: str | None = None) -> list[dict]:
    """Each figure an estimate rests on as one input: its name, the GPU it was read for, and its
    value, kind and source exactly as the model's Figure holds them (nothing re-parsed)."""
    return [{"name": k, "gpu": gpu, "value": f["value"], "kind": f["kind"],
             "source": f["source"]} for k, f in figures.items()]


class Refs:
    """Ref ids for sources and model inputs, numbered in the order the section cites them."""

    def __init__(self):
        self.items: dict[str, dict] = {"A": {"kind": "model inputs",
                                             "title": "serving model assumptions",
                                             "inputs": figure_inputs(figure_dicts(ASSUMPTIONS))}}
        self._by_key: dict[tuple, str] = {}

    def _new(self, key: tuple, item: dict) -> str:
        if key not in self._by_key:
            letter = item["kind"][0].upper()
            rid = f"{letter}{sum(1 for k in self.items if k.startswith(letter)) + 1}"
            self._by_key[key] = rid
            self.items[rid] = item
        return self._by_key[key]

    def add(self, kind: str, text: str) -> str:
        """A "source" (a published text) or "training" (the training model's H200 gain)."""
        return self._new((kind, text), {"kind": kind, "text": text})

    def model(self, inputs: list[dict]) -> str:
        """The model inputs of one estimate (figure_inputs rows)."""
        key = ("model inputs", *(repr(sorted(i.items())) for i in inputs))
        return self._new(key, {"kind": "model inputs", "title": "serving estimate",
                               "inputs": inputs})


def cell(value, text: str, ref: str) -> dict:
    return {"text": text, "value": value, "ref": ref}


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
    path.write_bytes(to_png(fig))
    return str(path)


def curves_png(sweeps: dict[str, list[dict]], out_dir: Path) -> tuple[str, str]:
    """Tokens/s per GPU against batch, and TPOT against tokens/s per GPU (the latency-throughput
    curve), H100 and H200."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for g, pts in sweeps.items():
        ax.plot([p["batch"] for p in pts], [p["per_gpu"] for p in pts], "o-", color=COLORS[g],
                label=g)
    ax.set_xscale("log")
    ax.set(xlabel="sequences in flight (batch)", ylabel="output tokens/s per GPU",
           title="Llama 3 70B FP8, 1000 in / 1000 out: throughput against batch")
    ax.grid(alpha=0.3)
    if sweeps:  # a curve the model cannot compute is left out (and noted)
        ax.legend()
    a = _save(fig, out_dir / "serving_throughput_batch.png")
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for g, pts in sweeps.items():
        ax.plot([p["per_gpu"] for p in pts], [p["tpot_ms"] for p in pts], "o-",
                color=COLORS[g], label=g)
    ax.set(xlabel="output tokens/s per GPU", ylabel="time per output token (ms)",
           title="latency against throughput (each point a batch)")
    ax.grid(alpha=0.3)
    if sweeps:  # a curve the model cannot compute is left out (and noted)
        ax.legend()
    return a, _save(fig, out_dir / "serving_latency_throughput.png")


def gain_png(gains: list[dict], out_dir: Path) -> str:
    return _save(gain_figure(gains), out_dir / "serving_gain.png")


def gain_figure(gains: list[dict]):
    """Serving and training gain bars per model and workload: labels on two lines, the legend
    below the axes (never over a bar)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    labels = [f"{g['model']}\n({g['workload']})" for g in gains]  # two lines: no overlap
    x = range(len(gains))
    ax.bar([i - 0.2 for i in x], [g["serving_gain"] for g in gains], 0.4, label="serving",
           color="#d62728")
    ax.bar([i + 0.2 for i in x], [g["training_gain"] or 0 for g in gains], 0.4,
           label="training", color="#7f7f7f")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set(ylabel="H200 / H100 per GPU", title="the H200 gain: serving against training")
    if gains:  # every row the model could not compute is left out (and noted)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)  # below: no bar hidden
    return fig


def _fmt(x: float, spec: str = ",.0f") -> str:
    return format(x, spec)


def unserved(what: str, e: ScenarioError) -> str:
    """The one line a case the model cannot compute shows in place of its numbers."""
    return f"{what}: cannot be computed: {e}"


def _presets(meas, refs: Refs, notes: list[dict]) -> list[list[dict]]:
    rows = []
    for name in SERVING_SCENARIOS:
        try:
            d = estimate_serving(name, meas).to_dict()
        except ScenarioError as e:
            notes.append(cell(None, unserved(name, e), "A"))
            rows.append([cell(None, name, "A"), cell(None, f"cannot be computed: {e}", "A")]
                        + [cell(None, "-", "A")] * 6)
            continue
        m = refs.model(figure_inputs(d["figures"], d["gpu"]))
        lo, hi = (x / d["gpus"] for x in d["range"]["output_tokens_per_s"])
        rows.append([
            cell(None, name, m), cell(None, f"{d['gpu']} tp{d['tp']} pp{d['pp']} "
                                            f"{d['precision']}", m),
            cell(d["batch"], f"{d['batch']} ({d['batch_reason']})", m),
            cell(d["output_tokens_per_s_per_gpu"], _fmt(d["output_tokens_per_s_per_gpu"]), m),
            cell([lo, hi], f"{_fmt(lo)}-{_fmt(hi)}", m),
            cell(d["ttft_s"], f"{d['ttft_s']:.3f}", m),
            cell(d["tpot_s"], f"{d['tpot_s'] * 1e3:.1f}", m),
            cell(d["kv_cache_gib"], f"{d['kv_cache_gib']:.1f}", m)])
    return rows


def _validation(meas, refs: Refs, notes: list[dict]) -> tuple[list[list[dict]], list[dict]]:
    """The table rows, and the computed cases (a case the model cannot serve as published is
    one row saying why, and counts in no error figure)."""
    rows, done = [], []
    for r in validate_serving(meas):
        s = refs.add("source", r["source"])
        if r["error_pct"] is None:  # validate_serving's row for a case it cannot compute
            notes.append(cell(None, f"validation case {r['name']}: {r['error']}", s))
            rows.append([cell(None, r["name"], s), cell(r["gpus"], str(r["gpus"]), s),
                         cell(r["published"], _fmt(r["published"]), s),
                         cell(None, r["error"], s), cell(None, "-", s)])
            continue
        done.append(r)
        rows.append([cell(None, r["name"], s), cell(r["gpus"], str(r["gpus"]), s),
                     cell(r["published"], _fmt(r["published"]), s),
                     cell(r["predicted"], _fmt(r["predicted"]),
                          refs.model(figure_inputs(r["figures"], r["gpu"]))),
                     cell(r["error_pct"], f"{r['error_pct']:+.1f}%", s)])
    return rows, done


def _pools_inputs(pools: list[dict]) -> list[dict]:
    return [i for q in pools for i in figure_inputs(q["figures"], q["gpu"])]


def _clusters(meas, refs: Refs) -> list[list[dict]]:
    rows = []
    for w in WORKLOADS:
        for r in cluster_serving(workload=w, measurements=meas):
            p = refs.add("source", f"{r['cluster']}: {r['sources']['pools']}")
            ws = refs.add("source", r["sources"]["workload"])
            fit = [q for q in r["pools"] if q["fits"]]
            per = "; ".join(f"{q['gpu']} tp{q['tp']}: {_fmt(q['tokens_per_s_per_gpu'])}/GPU"
                            for q in fit) if fit else \
                "no pool serves it: nothing fits or meets the workload's latency targets"
            m = refs.model(_pools_inputs(fit)) if fit else "A"
            rows.append([cell(None, r["cluster"], p), cell(None, f"{r['model']} ({w})", ws),
                         cell(r["output_tokens_per_s"],
                              f"{r['output_tokens_per_s'] / 1e6:,.1f}M", m),
                         cell(r["output_tokens_per_s_per_gpu"],
                              _fmt(r["output_tokens_per_s_per_gpu"]), m),
                         cell(None, per, m)])
    return rows


def _gains(meas, refs: Refs, notes: list[dict]) -> tuple[list[list[dict]], list[dict]]:
    rows, gains = [], []
    for model in ("llama3-70b", "llama3-405b"):
        for w in WORKLOADS:
            try:
                g = serving_gain(model, w, meas)
            except ScenarioError as e:
                notes.append(cell(None, unserved(f"the H200 gain of {model} ({w})", e), "A"))
                rows.append([cell(None, f"{model} ({w})", "A")] + [cell(None, "-", "A")] * 3
                            + [cell(None, f"cannot be computed: {e}", "A")])
                continue
            gains.append(g)
            hb = refs.model(_pools_inputs([{"gpu": "H100-SXM", **g["h100"]},
                                           {"gpu": "H200-SXM", **g["h200"]}]))
            tr = refs.add("training", g["training_gain_note"])
            rows.append([cell(None, f"{model} ({w})", hb),
                         cell(g["serving_gain"], f"{g['serving_gain']:.2f}x", hb),
                         cell(g["serving_gain_same_tp"], f"{g['serving_gain_same_tp']:.2f}x",
                              hb),
                         cell(g["training_gain"], "n/a" if g["training_gain"] is None
                              else f"{g['training_gain']:.2f}x", tr),
                         cell(None, g["reasons"]["why"], hb)])
    return rows, gains


def _curves(meas, refs: Refs, notes: list[dict]) -> tuple[dict[str, list[dict]], list[str]]:
    """The batch sweep of each curve preset that can be computed, and the refs it rests on."""
    sweeps, used = {}, []
    for g, name in CURVE.items():
        try:
            est = estimate_serving(name, meas)
        except ScenarioError as e:
            notes.append(cell(None, unserved(f"the {g} curve ({name})", e), "A"))
            continue
        sweeps[g] = batch_sweep(est.serving, meas)
        used.append(refs.model(figure_inputs(figure_dicts(est.figures), g)))
    return sweeps, used


def serving_section(measurements, out_dir) -> dict:
    """The section: presets, validation, cluster figures, the gain, and three charts. A case the
    model cannot compute (ScenarioError: nothing fits, no batch meets a latency target) is one
    line with the reason, in its table and in "notes"; the rest of the section is computed."""
    meas = as_measurements(measurements)
    out_dir = Path(out_dir)
    refs, notes = Refs(), []
    presets = _presets(meas, refs, notes)
    val, vrows = _validation(meas, refs, notes)
    clu = _clusters(meas, refs)
    grow, gains = _gains(meas, refs, notes)
    sweeps, curve_refs = _curves(meas, refs, notes)
    tput, lat = curves_png(sweeps, out_dir)
    summ = serving_summary(vrows)
    return {
        "title": TITLE,
        "intro": ("Decoding reads every weight and the whole KV cache once per output token, so "
                  "its speed follows HBM bandwidth, and the batch that amortises each weight "
                  "read follows the memory left for the KV cache. The H200 has the H100's "
                  "tensor cores but 1.43x the bandwidth and 1.76x the memory. Estimates come "
                  "from the serving model (reports.model.serving) on the same measurements as "
                  "the training sections."),
        "notes": notes,
        "tables": [
            {"title": "serving presets (estimate --scenario NAME)", "columns": [
                "preset", "replica", "batch", "tokens/s per GPU", "range", "TTFT s", "TPOT ms",
                "KV cache GiB"], "rows": presets},
            {"title": "the serving model against published results (output tokens/s; "
                      f"{summ['within']} of {summ['cases']} computed within "
                      f"{WITHIN_PCT:.0f}%, mean |error| {summ['mean_abs_error_pct']:.1f}%)",
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
                                      "(H100 tp2, H200 tp1)", "refs": [*curve_refs, "A"]},
            {"path": lat, "caption": "time per output token against tokens/s per GPU",
             "refs": [*curve_refs, "A"]},
            {"path": gain_png(gains, out_dir), "caption": "H200 over H100 per GPU, serving and "
                                                          "training", "refs": ["A"]},
        ],
        "refs": refs.items,
    }
