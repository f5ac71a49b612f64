"""CLI verbs of the scaling model: `estimate` and `validate` (registered by the top-level cli.py).

`estimate --scenario FILE|PRESET [--json] [--db URL]` prints the training-step estimate of a
scenario (a JSON/YAML file or a preset name from reports.model.scaling.SCENARIOS), using the
measured rows of a results table when --db is given (else the shipped reference results, then the
labelled fallbacks). `validate [--json]` prints the model against published training runs. A
scenario the model cannot evaluate prints one line on stderr and exits 2."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.table import Table

from reports.model.cluster import TOKEN_BUDGETS, useful_fraction_at
from reports.model.config import ScenarioError
from reports.model.estimate import days_to_train
from reports.model.scenario import SCENARIOS
from reports.model.search import estimate as run_estimate
from reports.model.serving_cases import WITHIN_PCT, serving_summary, validate_serving
from reports.model.serving_scenario import SERVING_SCENARIOS, estimate_serving, serving_spec
from reports.model.validation import summary
from reports.model.validation import validate as run_validation
from results.console import print_json
from results.words import counted


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 200)


def _fail(message: str) -> typer.Exit:
    _console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False,
                                soft_wrap=True)
    return typer.Exit(2)


def _frame(db: str):
    """The results table at `db` as a DataFrame (an unusable database is a user error)."""
    from results.store import Store, StoreError

    try:
        with Store(db, create=False) as store:
            return store.frame()
    except StoreError as e:
        raise _fail(str(e)) from None


def _fmt(x: float, spec: str = ".3g") -> str:
    return format(x, spec)


def _batch(d: dict) -> str:
    """The step's tokens, and the requested ones when whole micro-batches per replica rounded
    them up (search.py: every replica runs a whole number of micro-batches)."""
    got, asked = d["global_batch_tokens"], d.get("requested_global_batch_tokens")
    if asked is None or asked == got:
        return f"{got:,} tokens ({d['global_batch_source']})"
    return (f"{got:,} tokens (requested {asked:,}: {got / asked - 1:+.1%}, whole micro-batches "
            f"per replica; {d['global_batch_source']})")


def _time_to_train(d: dict) -> list[tuple[str, str]]:
    """The 'time to train' row for a model with a token budget (cluster.TOKEN_BUDGETS): goodput
    applied (the useful fraction of wall time at this GPU count, reports/model/goodput.py), the
    figure at 100% goodput beside it."""
    if d["model"] not in TOKEN_BUDGETS:
        return []
    budget, _ = TOKEN_BUDGETS[d["model"]]
    useful = useful_fraction_at(d["gpus"])
    days, days_all = (days_to_train(budget, d["tokens_per_s"], u) for u in (useful, 1.0))
    return [("time to train", f"{days:.1f} d for {budget / 1e12:.3g}T tokens with "
                              f"goodput applied ({useful:.1%} of wall time trains at "
                              f"{counted(d['gpus'], 'GPU')}); {days_all:.1f} d at 100% "
                              f"goodput")]


def range_text(d: dict) -> str:
    """What the range spans (search.estimate_range)."""
    return f"range: over {d['range']['over']}" if "range" in d else ""


def estimate_tables(d: dict) -> list[Table]:
    """Rich tables for an Estimate.to_dict()."""
    head = Table(title=f"estimate: {d['scenario']}", show_header=False, caption=range_text(d))
    head.add_column("what")
    head.add_column("value", justify="right")
    par = d["parallel"]
    rows = [
        ("model", f"{d['model']} ({d['params_b']:.1f}B params)"),
        ("cluster", f"{d['cluster']}: {d['gpus']:,} GPUs ({', '.join(d['gpu_types'])})"),
        ("parallel", f"tp {par['tp']} pp {par['pp']} cp {par['cp']} dp {par['dp']} mb "
                     f"{par['micro_batch']} v {par['virtual_stages']} recompute "
                     f"{par['recompute']}" + (" (searched)" if par["auto"] else "")),
        ("global batch", _batch(d)),
        ("step time", f"{d['step_time_s']:.3f} s"),
        ("tokens/s", f"{d['tokens_per_s']:,.0f}" + (
            f" (range {d['range']['tokens_per_s'][0]:,.0f}-{d['range']['tokens_per_s'][1]:,.0f})"
            if "range" in d else "")),
        ("TFLOP/s per GPU", f"{d['tflops_per_gpu']:.0f} (model FLOPs)"),
        ("MFU", f"{d['mfu']:.1%}" + (f" (range {d['range']['mfu'][0]:.1%}-"
                                      f"{d['range']['mfu'][1]:.1%})" if "range" in d else "")),
        *_time_to_train(d),
        ("memory per GPU", f"{d['memory_gib_per_gpu']:.1f} of {d['memory_capacity_gib']:.1f} GiB "
                           f"usable: {'fits' if d['fits_in_memory'] else 'DOES NOT FIT'}"),
    ]
    for k, v in rows:
        head.add_row(k, v)
    tables = [head]
    bd = Table(title="where the step goes")
    bd.add_column("part")
    bd.add_column("seconds", justify="right")
    bd.add_column("share", justify="right")
    for k, v in d["breakdown_s"].items():
        bd.add_row(k, f"{v:.4f}", f"{v / d['step_time_s']:.1%}")
    tables.append(bd)
    if d.get("per_type"):
        pt = Table(title=f"per GPU type ({d['mixed_batch']} batches)")
        for col in ("GPU", "GPUs", "micro-batches", "own step s", "idle s", "tokens/s", "MFU",
                    "memory GiB"):
            pt.add_column(col, justify="left" if col == "GPU" else "right")
        for g, v in d["per_type"].items():
            pt.add_row(g, f"{v['gpus']:,}", str(v["microbatches"]), f"{v['own_step_time_s']:.3f}",
                       f"{v['idle_s']:.3f}", f"{v['tokens_per_s']:,.0f}", f"{v['mfu']:.1%}",
                       f"{v['memory_gib_per_gpu']:.1f}")
        tables.append(pt)
    src = Table(title="what the estimate rests on")
    src.add_column("figure")
    src.add_column("source")
    for k, v in d["sources"].items():
        src.add_row(k, v)
    tables.append(src)
    return tables


def validation_table(rows) -> Table:
    s = summary(rows)
    t = Table(title="the model against published runs (error on throughput)",
              caption=f"{s['cases']} runs ({s['h100_cases']} on H100): max |error| "
                      f"{s['max_abs_error_pct']:.1f}%, mean {s['mean_abs_error_pct']:.1f}%; "
                      f"published inside the range over unstated settings in "
                      f"{s['within_range']} of {s['cases']}")
    cols = ("run", "GPU", "GPUs", "published", "predicted", "range", "unit", "error", "source")
    for col in cols:
        t.add_column(col, justify="right" if col in ("GPUs", "published", "predicted", "error")
                     else "left")
    for r in rows:
        lo, hi = r.range
        t.add_row(r.name, r.gpu, f"{r.gpus:,}", f"{r.published:.3g}", f"{r.predicted:.3g}",
                  f"{lo:.3g}-{hi:.3g}" + ("" if r.within_range else " (outside)"),
                  r.unit, f"{r.error_pct:+.1f}%", r.source)
    return t


def serving_table(d: dict) -> Table:
    """A rich table for a ServingEstimate.to_dict()."""
    t = Table(title=f"serving estimate: {d['scenario']}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    lo, hi = d["range"]["output_tokens_per_s"]
    rows = [
        ("model", f"{d['model']} ({d['params_b']:.1f}B) {d['precision']}, KV {d['kv_precision']}"),
        ("replica", f"{d['gpu']} tp {d['tp']} pp {d['pp']} x {d['replicas']} = "
                    f"{counted(d['gpus'], 'GPU')}"),
        ("tokens in / out", f"{d['input_len']} / {d['output_len']}"),
        ("batch", f"{d['batch']} ({d['batch_reason']}; {d['max_batch_fits']} fit)"),
        ("output tokens/s", f"{d['output_tokens_per_s']:,.0f} (range {lo:,.0f}-{hi:,.0f})"),
        ("per GPU", f"{d['output_tokens_per_s_per_gpu']:,.0f}"),
        ("TTFT / TPOT", f"{d['ttft_s']:.3f} s / {d['tpot_s'] * 1e3:.1f} ms"),
        ("memory per GPU", f"{d['memory_gib_per_gpu']:.1f} of {d['memory_capacity_gib']:.1f} GiB "
                           f"(KV cache {d['kv_cache_gib']:.1f})"),
    ]
    rows += [(f"step: {k}", f"{v * 1e3:.2f} ms") for k, v in d["step_breakdown_s"].items()]
    rows += [(f"source: {k}", v) for k, v in d["sources"].items()]
    for k, v in rows:
        t.add_row(k, v)
    return t


def serving_validation_table(rows: list[dict]) -> Table:
    s = serving_summary(rows)
    gpus = ", ".join(f"{g} {w} of {n}" for g, (w, n) in s["within_by_gpu"].items())
    t = Table(title="the serving model against published results (output tokens/s)",
              caption=f"{s['cases']} of {len(rows)} results computed: {s['within']} within "
                      f"{WITHIN_PCT:.0f}% ({gpus}); "
                      f"max |error| {s['max_abs_error_pct']:.1f}%, mean "
                      f"{s['mean_abs_error_pct']:.1f}%")
    for col in ("case", "GPUs", "published", "predicted", "error", "source"):
        t.add_column(col, justify="left" if col in ("case", "source") else "right")
    for r in rows:
        if r.get("error_pct") is None:  # the model cannot serve it on these measurements
            t.add_row(r["name"], str(r["gpus"]), f"{r['published']:,.0f}", "-", "-",
                      f"{r['error']}; {r['source']}")
            continue
        t.add_row(r["name"], str(r["gpus"]), f"{r['published']:,.0f}", f"{r['predicted']:,.0f}",
                  f"{r['error_pct']:+.1f}%", r["source"])
    return t


def estimate(
    scenario: str = typer.Option(..., "--scenario", "-s",
                                 help="Scenario JSON/YAML file, or a preset: "
                                      + ", ".join([*SCENARIOS, *SERVING_SCENARIOS])),
    as_json: bool = typer.Option(False, "--json", help="Print the estimate as JSON"),
    db: str | None = typer.Option(None, "--db", help="Results table to take measured "
                                  "efficiencies from (URL or SQLite path)"),
):
    """Estimate a training scenario (step time, tokens/s, MFU, memory) or a serving one
    ("mode": "serve": output tokens/s, TTFT, TPOT, batch, KV cache)."""

    if not scenario.strip():  # else it reads as the current folder
        raise _fail("--scenario is empty: give a scenario file or a preset ("
                    + ", ".join([*SCENARIOS, *SERVING_SCENARIOS]) + ")")
    frame = _frame(db) if db else None
    try:
        serve = serving_spec(scenario)
        est = estimate_serving(serve, frame) if serve else run_estimate(scenario, frame)
    except ScenarioError as e:
        raise _fail(str(e)) from None
    d = est.to_dict()
    if serve and not as_json:
        _console().print(serving_table(d))
        return
    if as_json:
        print_json(d)
        return
    out = _console()
    for t in estimate_tables(d):
        out.print(t)
    if d.get("notes"):
        out.print("notes:", highlight=False)
        for note in d["notes"]:
            out.print(f"- {note}", markup=False, highlight=False, soft_wrap=True)


def validate(
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON"),
):
    """Compare the model with published training runs (A100 and H100) and published serving
    results (MLPerf Inference v4.0, TensorRT-LLM), each with its source."""

    rows = run_validation()
    serving = validate_serving()
    if as_json:
        print_json([{**r.to_dict(), "kind": "training"} for r in rows] + serving)
        return
    _console().print(validation_table(rows))
    _console().print(serving_validation_table(serving))
