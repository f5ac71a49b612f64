"""CLI verbs of the results part: `upload` (local table -> shared table) and `fleet`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from results.fleet import DEFAULT_THRESHOLD
from results.upload import BACKOFF_ENV, DEFAULT_BATCH, TRIES_ENV, UPLOAD_ENV, RetryPolicy

DB_HELP = "Database URL or SQLite path (default: $COLOSSUS_BENCH_DB, else a per-user SQLite file)"


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
    from bench.cli import console, fail, open_store
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
    from bench.cli import console, fail, open_store
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


def register(app: typer.Typer) -> None:
    app.command()(upload)
    app.command()(fleet)
