"""CLI verbs of the results part: `export`, `ingest`, `upload` (local -> shared table), `fleet`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.table import Table

from results.console import DB_HELP, console, err_console, fail, first_line, open_store
from results.fleet import DEFAULT_THRESHOLD
from results.upload import BACKOFF_ENV, DEFAULT_BATCH, TRIES_ENV, UPLOAD_ENV, RetryPolicy


def upload(
    to: str = typer.Option(..., "--to", envvar=UPLOAD_ENV, show_default=False,
                           help="shared database URL, e.g. postgresql://user@host/db (password "
                                "from the URL, $PGPASSWORD or ~/.pgpass)"),
    db: str | None = typer.Option(None, "--db", help="the local table: " + DB_HELP),
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", help="rows per transaction"),
    tries: int | None = typer.Option(None, "--tries", show_default=False,
                                     help="attempts per step while the server is unreachable "
                                          f"[default: ${TRIES_ENV}, else {RetryPolicy.tries}]"),
    backoff: float | None = typer.Option(None, "--backoff", show_default=False,
                                         help="first wait between attempts in seconds, doubling "
                                              f"[default: ${BACKOFF_ENV}, else "
                                              f"{RetryPolicy.backoff_s}]"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Copy every local row the shared table lacks; re-running it is harmless."""
    from results.upload import UploadError, upload_store

    _require_local(db, fail)
    try:
        policy = RetryPolicy.from_env(tries, backoff)
    except ValueError as e:
        raise fail(str(e)) from None
    store = open_store(db)
    try:
        report = upload_store(store, to, batch_size=batch_size, retry=policy)
    except (UploadError, ValueError) as e:
        raise fail(str(e)) from None
    finally:
        store.close()
    if as_json:
        print(json.dumps({**report.to_dict(), "from": store.display_url}, indent=1))
    else:
        console.print(f"uploaded {report}", highlight=False)
    if report.refused:  # the last line says how many rows were set aside, and where
        err_console.print(report.set_aside_line(), highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def _require_local(db: str | None, fail) -> None:
    """Uploading from a SQLite file that does not exist is a typo, not an empty table."""
    from results.store import resolve_url

    url = resolve_url(db)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        raise fail(f"no local results table at {url[len('sqlite:///'):]} (pass --db)")


def fleet(
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, "--threshold",
                                    help="flag devices below this share of their fleet's "
                                         "throughput"),
    all_runs: bool = typer.Option(False, "--all-runs",
                                  help="use every run, not only each device's latest per case"),
    top: int = typer.Option(20, "--top", help="devices listed in the summary table, slowest "
                                               "first (0: all); --json lists all"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Find slow GPUs: each device against the median of its GPU model, case by case."""
    from results.fleet import fleet as build

    store = open_store(db)
    try:
        report = build(store, threshold, latest_only=not all_runs)
    except ValueError as e:
        raise fail(str(e)) from None
    finally:
        store.close()
    if as_json:
        print(json.dumps(report.to_dict(), indent=1, default=str))
        return
    devices = report.devices()
    if not devices:
        console.print(f"no ok and correct results in {store.display_url}: nothing to compare")
        return
    if report.flagged:
        console.print(flagged_table(report))
    shown = devices if top <= 0 else devices[:top]
    console.print(devices_table(report, shown))
    if len(shown) < len(devices):
        console.print(f"({len(devices) - len(shown)} more devices: --top 0 lists all)")
    n_flagged = sum(d.flagged > 0 for d in devices)
    console.print(f"{n_flagged} of {len(devices)} devices below {report.threshold:.2f} of their "
                  f"fleet median on at least one case "
                  f"({'latest run' if report.latest_only else 'all runs'} per device and case)",
                  highlight=False)


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def flagged_table(report) -> Table:
    t = Table(title=f"below {report.threshold:.2f} of the fleet median")
    for col in ("device", "host", "model", "case", "median", "fleet", "ratio", "SM MHz mean/min",
                "power W", "temp C", "why"):
        t.add_column(col, justify="right" if col in ("median", "fleet", "ratio") else "left")
    for e in report.flagged:
        t.add_row(e.device, e.host, e.model, e.case, f"{e.median_s * 1e3:.3f} ms",
                  f"{e.fleet_median_s * 1e3:.3f} ms", f"[red]{e.ratio:.3f}[/]",
                  f"{_f(e.sm_clock_mhz_mean, '.0f')}/{_f(e.sm_clock_mhz_min, '.0f')}",
                  _f(e.power_w_mean, ".0f"), _f(e.temp_c_max, ".0f"), e.explain())
    return t


def devices_table(report, devices) -> Table:
    t = Table(title="devices, slowest first (geometric mean of their ratios over cases)")
    for col in ("device", "host", "model", "cases", "flagged", "worst ratio", "geomean ratio"):
        t.add_column(col, justify="right" if col in ("cases", "flagged", "worst ratio",
                                                     "geomean ratio") else "left")
    for d in devices:
        style = "red" if d.flagged else ""
        t.add_row(d.device, d.host, d.model, str(d.cases), str(d.flagged),
                  f"{d.worst_ratio:.3f}", f"{d.geomean_ratio:.3f}", style=style)
    return t


def export(
    format: str = typer.Option("csv", "--format", "-f", help="csv | parquet | jsonl"),
    out: Path | None = typer.Option(None, "--out", "-o", help="file (default: stdout)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Write the whole table as CSV, Parquet or JSON Lines."""
    from results.export import FORMATS
    from results.export import export as do_export

    if format not in FORMATS:
        raise fail(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    store = open_store(db)
    try:
        do_export(store.frame(), format, out)
    except BrokenPipeError:  # `export | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (ValueError, OSError) as e:
        raise fail(str(e)) from None


def ingest(
    files: list[Path] = typer.Argument(..., help="pytest-benchmark JSON or JSON Lines files"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Load result files into the table; each file is loaded whole or not at all."""
    from sqlalchemy.exc import SQLAlchemyError

    from results.ingest import IngestError
    from results.ingest import ingest as do_ingest
    from results.store import StoreError

    store = open_store(db)
    failed = 0
    for f in files:
        try:
            new, total = do_ingest(f, store)
            console.print(f"{f}: {total} rows, {new} new, {total - new} already there")
        except SQLAlchemyError as e:  # a row the database refuses; the file rolled back whole
            reason = first_line(e)
            err_console.print(f"[bold red]error:[/] {f}: the database refused a row: {reason} "
                              "(nothing from this file was written)", highlight=False)
            failed += 1
        except (IngestError, StoreError) as e:
            err_console.print(f"[bold red]error:[/] {e} (nothing from this file was written)",
                              highlight=False)
            failed += 1
    if failed:
        raise typer.Exit(2)
