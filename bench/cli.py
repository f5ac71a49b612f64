"""The harness verbs `run` and `info` (registered on the one app by the top-level cli.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from results.console import DB_HELP, console, err_console, fail, first_line, open_store


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _params(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in p.items())


def results_table(results) -> Table:
    t = Table(title="results", show_lines=False)
    for col in ("workload", "backend", "dtype", "params", "median", "TFLOP/s", "GB/s",
                "% peak", "power W", "correct", "status"):
        t.add_column(col, justify="right" if col in ("median", "TFLOP/s", "GB/s", "% peak",
                                                     "power W") else "left")
    for r in results:
        median = "-" if r.median_s is None else f"{r.median_s * 1e3:.3f} ms"
        pct = None if r.peak_fraction is None else r.peak_fraction * 100
        power = (r.telemetry or {}).get("power_w_mean")
        status = r.status if r.status == "ok" else f"[red]{r.status}[/]"
        if r.status == "skipped" and r.error == "budget":  # left out by --budget, not broken
            status = "[yellow]skipped: budget[/]"
        correct = {True: "yes", False: "[red]NO[/]", None: "-"}[r.correct]
        # compute workloads report TFLOP/s, bandwidth ones GB/s: one throughput per row
        gb = r.gbps if r.tflops is None else None
        t.add_row(r.workload, r.backend, r.dtype, _params(r.params), median,
                  _fmt(r.tflops, ".4g"), _fmt(gb, ".4g"), _fmt(pct, ".1f"),
                  _fmt(power, ".0f"), correct, status)
    return t


def run(
    suite: str = typer.Option("quick", "--suite", "-s", help="quick | standard | full | mamf"),
    filter: str | None = typer.Option(None, "--filter", "-k",
                                         help="comma-separated substrings or globs over "
                                              "'workload/dtype/params:backend'"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    json_out: Path | None = typer.Option(None, "--json", help="also write the records here"),
    no_telemetry: bool = typer.Option(False, "--no-telemetry", help="do not sample NVML"),
    timing: str | None = typer.Option(None, "--timing",
                                         help="timing preset: gpu | cpu | smoke"),
    upload: str | None = typer.Option(None, "--upload",
                                         help="after the run, upload to this shared database"),
    budget: float | None = typer.Option(None, "--budget", metavar="SECONDS",
                                        help="time box: cases run in suite (priority) order; "
                                             "those that would not fit are stored as skipped "
                                             "(error 'budget')"),
    tune: bool = typer.Option(False, "--tune", help="full Triton autotuning (COLOSSUS_TUNE=1); "
                                                    "costs compiles, see --list"),
    list_only: bool = typer.Option(False, "--list", help="print the selected case-backends and "
                                                         "the estimated time; run nothing"),
) -> None:
    """Check, time and store every case of a suite on this machine's device.

    Exit status: 0 every case ok or skipped, 1 a case failed its check or crashed, 2 bad input,
    130 interrupted.
    """
    from bench import runner
    from bench.device import detect
    from bench.suites import SuiteError, select, suite_cases
    from bench.timing import PRESETS, default_config

    if timing is not None and timing not in PRESETS:
        raise fail(f"unknown timing preset {timing!r}; choose one of {', '.join(PRESETS)}")
    if budget is not None and not budget > 0:  # also refuses nan
        raise fail(f"--budget must be a positive number of seconds, got {budget}")
    if tune:
        os.environ["COLOSSUS_TUNE"] = "1"  # read by the kernels when they pick configs
    device = detect()
    try:
        pairs = select(suite_cases(suite, device), device, filter)
    except SuiteError as e:
        raise fail(str(e)) from None
    cfg = PRESETS[timing] if timing else default_config(device)
    if list_only:
        _list(pairs, device, cfg, tune, budget)
        return
    store = open_store(db)
    if device.kind == "cpu":
        console.print("[yellow]no CUDA GPU: running small CPU cases (Triton through its "
                      "interpreter); the numbers prove the flow, they do not measure a GPU[/]")
    console.print(f"device: {device.name} ({device.kind}) | suite {suite}: {len(pairs)} "
                  f"case-backends | database: {store.display_url}")
    run_id = runner.new_run_id()
    done = []
    unstored: dict = {}  # spool path -> [count, last error]

    def note_unstored(result, path, error):
        entry = unstored.setdefault(path, [0, error])
        entry[0] += 1
        entry[1] = error

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[left]}"))
    try:
        with Progress(*cols, console=console, transient=True) as progress:
            task = progress.add_task("starting", total=len(pairs), left="")
            runner.run(pairs, store, device=device, run_id=run_id, timing=cfg,
                       telemetry=not no_telemetry, budget_s=budget, tune=tune,
                       on_start=lambda c, b: progress.update(task, description=f"{c.key}:{b}"),
                       on_estimate=lambda s: progress.update(task, left=f"~{_duration(s)} left"),
                       on_result=lambda r: (done.append(r), progress.advance(task)),
                       on_unstored=note_unstored)
    except KeyboardInterrupt:
        console.print(results_table(done))
        err_console.print(f"interrupted: the {len(done)} finished results are stored in "
                          f"{store.display_url} (run {run_id})")
        raise typer.Exit(130) from None
    console.print(results_table(done))
    bad = [r for r in done if r.status == "failed"]
    left_out = sum(r.status == "skipped" and r.error == runner.BUDGET for r in done)
    kept = sum(n for n, _ in unstored.values())
    console.print(f"run {run_id}: {len(done) - kept} results stored in {store.display_url}"
                  + (f"; [red]{len(bad)} failed[/]" if bad else "")
                  + (f"; {left_out} skipped: over the {budget:g} s budget" if left_out else ""))
    for path, (n, error) in unstored.items():
        reason = first_line(error)
        err_console.print(f"[yellow]{n} results could not be stored ({reason}); they are kept in "
                          f"{path}: load them with `colossus-bench ingest {path}`[/]",
                          highlight=False, soft_wrap=True)
    if json_out:
        json_out.write_text(json.dumps([r.to_dict() for r in done], indent=1, default=str))
    if upload:
        _upload_after_run(store, upload)
    if bad:
        raise typer.Exit(1)  # a case failed its check or crashed: its row says why


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _list(pairs, device, cfg, tune: bool, budget: float | None) -> None:
    """--list: the case-backends a suite and filter select, each with its time estimate."""
    from bench.budget import Estimator, total_estimate

    est = Estimator(device, cfg, tune)
    for case, backend in pairs:
        console.print(f"{case.key}:{backend}  ~{est.estimate(case, backend):.1f} s",
                      highlight=False, soft_wrap=True)
    total = total_estimate(pairs, device, cfg, tune)
    console.print(f"{total['pairs']} case-backends, estimated {_duration(total['total_s'])} "
                  f"(compiles {_duration(total['compile_s'])}; assumptions in bench/budget.py)"
                  + (f"; budget {_duration(budget)}" if budget else ""), highlight=False)


def _upload_after_run(store, url: str) -> None:
    """--upload: a failed upload never fails or loses the run (its rows stay local)."""
    try:
        from results.upload import upload_store
    except ImportError:
        err_console.print("upload is not available in this build; results stay local")
        return
    try:
        report = upload_store(store, url)
        console.print(f"uploaded: {report}")
    except Exception as e:  # the run has succeeded; say why the upload did not
        err_console.print(f"[yellow]upload failed, results kept locally: {e}[/]")


def info(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """What device is this, and its datasheet peaks."""
    from bench.device import detect, peaks
    from bench.provenance import software

    d = detect()
    p = peaks(d)
    data = {"device": d.record(), "peaks": p.__dict__ if p else None, "software": software()}
    if as_json:
        print(json.dumps(data, indent=1))
        return
    for section, values in data.items():
        console.print(f"[bold]{section}[/]")
        for k, v in (values or {"(unknown device)": ""}).items():
            console.print(f"  {k}: {v}", highlight=False)
