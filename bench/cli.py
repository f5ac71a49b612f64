"""The harness verbs `run` and `info` (registered on the one app by the top-level cli.py)."""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from results.compare import print_comparison, run_yardstick
from results.console import (
    DB_HELP,
    JSON_INDENT,
    choice,
    console,
    err_console,
    fail,
    first_line,
    not_the_database,
    open_store,
    print_json,
    value,
)
from results.export import write_atomically
from results.rows import shown_by_bandwidth
from results.words import counted


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _params(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in p.items())


def results_table(results) -> Table:
    # lazy: the workloads import torch, which `--help` must not load (a run has loaded it)
    from bench.workloads import WORKLOADS

    notes = {f"{r.workload}/{r.backend}: {WORKLOADS[r.workload].notes[r.backend]}": None
             for r in results if r.workload in WORKLOADS
             and r.backend in WORKLOADS[r.workload].notes}
    t = Table(title="results", show_lines=False, caption="\n".join(notes) or None,
              caption_justify="left")
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
        # one throughput per row, the one that bounds it: compute-bound workloads TFLOP/s,
        # memory-bound ones (bandwidth, decode attention) GB/s; the rule every view shares
        tf, gb = (None, r.gbps) if shown_by_bandwidth(r.workload, r.tflops) else (r.tflops, None)
        t.add_row(r.workload, r.backend, r.dtype, _params(r.params), median,
                  _fmt(tf, ".4g"), _fmt(gb, ".4g"), _fmt(pct, ".1f"),
                  _fmt(power, ".0f"), correct, status)
    return t


# Choices as plain data for help and shell completion; bench.suites.SUITES and
# bench.timing.PRESETS are the truth (tests/test_cli.py checks these match): importing
# bench.suites here would load torch on every `--help`.
Suite = choice("Suite", ("quick", "standard", "full", "mamf", "campaign"))
Timing = choice("Timing", ("gpu", "cpu", "smoke"))

FILTER_HELP = ("select by case key (workload/dtype/params) and backend: an exact KEY:BACKEND, "
               "or KEY for all its backends, else a glob (* ? [) or a substring of "
               "KEY:BACKEND; repeat for several (a case matching any is run)")


def list_pairs(suite: str, filters: list[str] | None, device) -> list[tuple]:
    """`run --list`: the (case, backend) pairs a suite and filter select on this device."""
    from bench.suites import select_and_unmatched, suite_cases

    pairs, unmatched = select_and_unmatched(suite_cases(suite, device), device, filters)
    for e in unmatched:  # as with several filters a user expects: the matching ones run
        err_console.print(f"[yellow]warning: filter {escape(repr(e))} matches no case of "
                          f"suite {suite} on this device[/]", highlight=False, soft_wrap=True)
    return pairs


def run(
    suite: Suite = typer.Option("quick", "--suite", "-s", help="which cases"),
    filter: list[str] | None = typer.Option(None, "--filter", "-k", metavar="KEY",
                                            help=FILTER_HELP),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    list_only: bool = typer.Option(False, "--list", help="print the cases and backends the "
                                   "suite and filter select, with the estimated time, and run "
                                   "nothing"),
    as_json: bool = typer.Option(False, "--json", help="print the records (or with --list the "
                                 "selection) as JSON on stdout; tables go to stderr"),
    json_out: Path | None = typer.Option(None, "--json-out", help="also write the records to "
                                         "this file", show_default=False),
    no_telemetry: bool = typer.Option(False, "--no-telemetry", help="do not sample NVML"),
    timing: Timing | None = typer.Option(None, "--timing", show_default="gpu on a GPU, else cpu",
                                         help="timing preset"),
    upload: str | None = typer.Option(None, "--upload",
                                         help="after the run, upload to this shared database"),
    budget: float | None = typer.Option(None, "--budget", metavar="SECONDS",
                                        help="time box: cases run in suite (priority) order; "
                                             "those that would not fit are stored as skipped "
                                             "(error 'budget')"),
    tune: bool = typer.Option(False, "--tune", help="full Triton autotuning (COLOSSUS_TUNE=1); "
                                                    "costs compiles, see --list"),
) -> None:
    """Check, time and store every case of a suite on this machine's device.

    Exit status: 0 every case ok or skipped, 1 a case failed its check or crashed or results
    were not stored (kept in a file) or not uploaded, 2 bad input, 130 interrupted.
    """
    started = time.monotonic()  # --budget counts from here: torch's import and CUDA's start too
    from bench import runner
    from bench.device import detect
    from bench.suites import SuiteError
    from bench.timing import PRESETS, default_config

    if budget is not None and not (budget > 0 and math.isfinite(budget)):  # nan, inf too
        raise fail(f"--budget must be a positive, finite number of seconds, got {budget}")
    if upload is not None:  # a mistyped URL is refused before a campaign, not after it
        _check_upload_url(upload, db)
    if tune:
        os.environ["COLOSSUS_TUNE"] = "1"  # read by the kernels when they pick configs
    device = detect()
    try:
        pairs = list_pairs(value(suite), filter, device)
    except SuiteError as e:
        raise fail(str(e)) from None
    cfg = PRESETS[value(timing)] if timing else default_config(device)
    if list_only:
        _list(pairs, value(suite), device, cfg, tune, budget, as_json)
        return
    if json_out is not None:  # refused before any case runs
        _check_json_out(json_out)
        not_the_database(json_out, db, "--json-out")
    out = err_console if as_json else console  # --json: stdout holds only the JSON
    store = open_store(db)
    if device.kind == "cpu":
        out.print("[yellow]no CUDA GPU: running small CPU cases (Triton through its "
                  "interpreter); the numbers prove the flow, they do not measure a GPU[/]")
    out.print(f"device: {device.name} ({device.kind}) | suite {value(suite)}: "
              f"{counted(len(pairs), 'case-backend')} | database: {store.display_url}")
    run_id = runner.new_run_id()
    done = []
    unstored: dict = {}  # spool path -> [count, last error]

    def note_unstored(result, path, error):
        if path not in unstored:  # said at once: each refused insert may wait out a lock
            err_console.print(f"[yellow]{store.display_url} refused a result "
                              f"({escape(first_line(error))}); it is kept in {path}, and so is "
                              f"each later one it refuses (the run goes on)[/]",
                              highlight=False, soft_wrap=True)
        entry = unstored.setdefault(path, [0, error])
        entry[0] += 1
        entry[1] = error

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("{task.fields[left]}"))
    try:  # progress on stderr, so piped stdout stays clean
        with _sigterm_as_interrupt(), Progress(*cols, console=err_console,
                                                transient=True) as progress:
            task = progress.add_task("starting", total=len(pairs), left="")
            runner.run(pairs, store, device=device, run_id=run_id, timing=cfg,
                       telemetry=not no_telemetry, budget_s=budget, tune=tune, started=started,
                       on_start=lambda c, b: progress.update(task, description=f"{c.key}:{b}"),
                       on_estimate=lambda s: progress.update(task, left=f"~{_duration(s)} left"),
                       on_result=lambda r: (done.append(r), progress.advance(task)),
                       on_unstored=note_unstored)
    except KeyboardInterrupt as e:
        word, code = ("terminated", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        if done:
            out.print(results_table(done))
            err_console.print(f"{word}: finished results are stored in {store.display_url} "
                              f"({counted(len(done), 'result')}, run {run_id})")
        else:  # no table of nothing
            err_console.print(f"{word}: no case finished, nothing was stored (run {run_id})")
        # --json and --json-out still hold what they promise: the finished records
        _records_out([r.to_dict() for r in done], json_out, as_json, store.display_url)
        raise typer.Exit(code) from None
    out.print(results_table(done))
    yard = run_yardstick(done)
    if yard is not None:  # CPU: how fast the guest was while the cases were timed
        out.print(f"guest yardstick: {yard * 1e3:.3g} ms (fixed pure-Python work timed next to "
                  f"each case's samples; two runs: compare --run B --against A)", highlight=False)
    print_comparison(done, out)
    bad = [r for r in done if r.status == "failed"]
    left_out = sum(r.status == "skipped" and r.error == runner.BUDGET for r in done)
    kept = sum(n for n, _ in unstored.values())
    out.print(f"run {run_id}: {counted(len(done) - kept, 'result')} stored in {store.display_url}"
              + (f"; [red]{len(bad)} failed[/]" if bad else "")
              + (f"; {left_out} skipped: over the {budget:g} s budget" if left_out else ""))
    for path, (n, error) in unstored.items():
        reason = first_line(error)
        err_console.print(f"[yellow]{counted(n, 'result')} could not be stored in "
                          f"{store.display_url} ({escape(reason)}); "
                          f"{'it is' if n == 1 else 'they are'} kept in {path}: load with "
                          f"`colossus-bench ingest --db '{store.display_url}' {path}`[/]",
                          highlight=False, soft_wrap=True)
    written = _records_out([r.to_dict() for r in done], json_out, as_json, store.display_url)
    uploaded = _upload_after_run(store, upload) if upload else True
    # 1 when a case failed (its row says why), rows were set aside (kept in a spool file or
    # only local after a failed --upload) or --json-out could not be written: fleet scripts
    # count a node ok only on 0
    if bad or kept or not uploaded or not written:
        raise typer.Exit(1)


class Terminated(KeyboardInterrupt):
    """SIGTERM during `run` (timeout, Slurm's time limit, scancel): answered as Ctrl-C is, the
    finished results kept and said, exit 143 (128 + SIGTERM)."""


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises Terminated while the cases run; one the shell ignores stays ignored."""
    def stop(signum, frame):
        raise Terminated()

    before = signal.getsignal(signal.SIGTERM)
    # only the main thread may set handlers; a handler someone else set is theirs
    if threading.current_thread() is not threading.main_thread() or before is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _check_json_out(path: Path) -> None:
    """--json-out must name a file that can be written: not a folder, in a writable folder."""
    if path.is_dir():
        raise fail(f"--json-out {path}: is a folder; name a file")
    if not path.parent.is_dir():
        raise fail(f"--json-out {path}: no folder {path.parent}")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise fail(f"--json-out {path}: not writable")
    try:  # the write itself, as the end of the run will do it: root passes os.access on /sys
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as e:
        raise fail(f"--json-out {path}: cannot write in {path.parent}: {e.strerror or e}") \
            from None
    os.close(fd)
    os.unlink(probe)


def _duration(seconds: float) -> str:
    """42s, 3m07s, 5h03m; a day and more in days (3 significant digits: a budget of 1e308 s
    reads 1.16e+303 d, not 300 digits)."""
    if seconds >= 86400:
        return f"{seconds / 86400:.3g} d"
    s = max(0, round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _list(pairs, suite: str, device, cfg, tune: bool, budget: float | None,
          as_json: bool) -> None:
    """--list: the case-backends a suite and filter select, each with its time estimate."""
    from bench.budget import Estimator, planned_within, total_estimate

    estimates = Estimator(device, cfg, tune).plan(pairs)
    within = planned_within(estimates, budget)
    rows = [{"case": c.key, "backend": b, "estimate_s": round(e, 2)}
            | ({} if budget is None else {"within_budget": ok})
            for (c, b), e, ok in zip(pairs, estimates, within)]
    total = total_estimate(pairs, device, cfg, tune)
    if as_json:
        print_json(rows)
    else:
        for r, ok in zip(rows, within):
            console.print(f"{r['case']}:{r['backend']}  ~{r['estimate_s']:.1f} s"
                          + ("" if ok else "  (past the budget on the estimates)"),
                          highlight=False, soft_wrap=True)
    left_out = within.count(False)
    err_console.print(f"{counted(total['pairs'], 'case-backend')} of suite {suite} on "
                      f"{device.name} ({device.kind}), estimated {_duration(total['total_s'])} "
                      f"(compiles {_duration(total['compile_s'])}; assumptions in bench/budget.py)"
                      + (f"; budget {_duration(budget)}" if budget else "")
                      + (f": on the estimates the last {left_out} would be skipped (the run "
                         "decides on its measured time)" if left_out else ""),
                      highlight=False)


def _records_out(records: list[dict], json_out, as_json: bool, where: str) -> bool:
    """The run's records to --json-out (whole or not at all: a reader never sees half a file)
    and to stdout with --json; False when --json-out could not be written."""
    written = True
    if json_out:
        try:
            write_atomically(json_out, (json.dumps(records, indent=JSON_INDENT, default=str)
                                        + "\n").encode("utf-8"))
        except OSError as e:
            written = False
            err_console.print(f"[yellow]cannot write {json_out}: {e.strerror or e} (the results "
                              f"are stored in {where})[/]", highlight=False)
    if as_json:
        print_json(records)
    return written


def _check_upload_url(url: str, db: str | None) -> None:
    """--upload names a database URL the upload can use (results/upload.py's and the store's
    rules; a SQLite one as far as it can be known without creating it); else one line, exit 2.
    A server that is unreachable still fails only at the end."""
    try:  # lazy: sqlalchemy and psycopg cost CLI start time
        from results.store import BACKENDS, UNSUPPORTED, backend, redact, resolve_url
        from results.upload import UploadError, check_target
    except ImportError as e:
        raise fail(f"--upload: upload is not available in this build ({e})") from None
    try:
        check_target(resolve_url(db), url, 1)
    except (ValueError, UploadError) as e:  # a line each, password-free
        raise fail(f"--upload: {e}") from None
    if backend(resolve_url(url)) not in BACKENDS:
        raise fail(f"--upload: cannot use database URL {redact(resolve_url(url))}: "
                   f"{UNSUPPORTED}")


def _upload_after_run(store, url: str) -> bool:
    """--upload: a failed upload never loses the run (its rows stay local); False then, and
    `run` exits 1 so a fleet script sees the node's rows are not in the shared database."""
    try:
        from results.upload import upload_store
    except ImportError:
        err_console.print("upload is not available in this build; results stay local")
        return False
    try:
        report = upload_store(store, url)
        console.print(f"uploaded: {report}")
        return True
    except Exception as e:  # the run has finished; say why the upload did not
        err_console.print(f"[yellow]upload failed, results kept locally: {e}[/]")
        return False


def info(as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """What device is this, its datasheet peaks, and the peak table of every GPU we know."""
    from dataclasses import asdict

    from bench.device import detect, peaks
    from bench.provenance import software
    from results.peaks import PEAKS

    d = detect()
    p = peaks(d)
    data = {"device": d.record(), "peaks": asdict(p) if p else None, "software": software()}
    if as_json:
        print_json({**data, "known_peaks": {k: asdict(v) for k, v in PEAKS.items()}})
        return
    for section, values in data.items():
        console.print(f"[bold]{section}[/]")
        if not values:
            console.print("  none: not a GPU in the peak table", highlight=False)
        for k, v in (values or {}).items():
            console.print(f"  {k}: {v}", highlight=False)
    console.print(peaks_table(PEAKS))


def peaks_table(table) -> Table:
    """The datasheet peaks of every known GPU (dense; TFLOP/s, HBM TB/s) with their sources."""
    t = Table(title="datasheet peaks of the GPUs we know (dense; the ceilings that count are "
                    "measured)")
    cols = ("model", "bf16", "fp16", "fp8", "tf32", "fp32", "HBM TB/s", "GB", "TDP W", "source")
    for col in cols:
        t.add_column(col, justify="left" if col in ("model", "source") else "right")
    for name, p in table.items():
        t.add_row(name, *(_fmt(x, "g") for x in (p.bf16_tflops, p.fp16_tflops, p.fp8_tflops,
                                                   p.tf32_tflops, p.fp32_tflops, p.hbm_tbps,
                                                   p.memory_gb, p.tdp_w)), p.source)
    return t
