"""CLI verbs of the results part: `export`, `ingest`, `upload` (local -> shared table), `fleet`.

Exit codes: 0 all done; 2 bad input (a refused file, a missing or unusable database, a bad
option), one line on stderr and nothing of it written (`ingest` loads the other files all the
same); 130 interrupted (cli.main). `export` and `fleet`
only read: they open the table with create=False and never create a database.
"""

from __future__ import annotations

import os
import sys
import unicodedata
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from results.console import (
    DB_HELP,
    choice,
    console,
    err_console,
    fail,
    first_line,
    not_the_database,
    open_store,
    print_json,
    value,
    working,
)
from results.export import FORMATS
from results.fleet import DEFAULT_THRESHOLD
from results.retry import BACKOFF_ENV, DEFAULT_BATCH, TRIES_ENV, UPLOAD_ENV, RetryPolicy
from results.validate import CONTROLS
from results.words import counted


def upload(
    to: str = typer.Option(..., "--to", envvar=UPLOAD_ENV, show_default=False,
                           help="shared database URL, e.g. postgresql://user@host/db (password "
                                "from the URL, $PGPASSWORD or ~/.pgpass)"),
    db: str | None = typer.Option(None, "--db", help="the local table: " + DB_HELP),
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", help="rows per transaction"),
    tries: int | None = typer.Option(None, "--tries",
                                     show_default=f"${TRIES_ENV}, else {RetryPolicy.tries}",
                                     help="attempts per step while the server is unreachable"),
    backoff: float | None = typer.Option(None, "--backoff",
                                         show_default=f"${BACKOFF_ENV}, else "
                                                      f"{RetryPolicy.backoff_s}",
                                         help="first wait between attempts in seconds, "
                                              "doubling"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON"),
) -> None:
    """Copy every local row the shared table lacks; re-running it is harmless."""
    from results.upload import UploadError, check_target, upload_store

    _require_local(db, fail)
    try:
        policy = RetryPolicy.from_env(tries, backoff)
    except ValueError as e:
        raise fail(str(e)) from None
    store = open_store(db)
    try:  # every argument checked before the progress line: a refusal is the only line
        to = check_target(store.url, to, batch_size)
    except (UploadError, ValueError) as e:
        store.close()
        raise fail(str(e)) from None
    try:
        with working(f"uploading {store.display_url}"):
            report = upload_store(store, to, batch_size=batch_size, retry=policy)
    except (UploadError, ValueError) as e:
        raise fail(str(e)) from None
    finally:
        store.close()
    if as_json:
        print_json({**report.to_dict(), "from": store.display_url})
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
        hint = "" if db else " (pass --db)"  # the default table: say where another one is given
        raise fail(f"no local results table at {url[len('sqlite:///'):]}{hint}")


def fleet(
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, "--threshold",
                                    help="flag devices below this share of their fleet's "
                                         "throughput"),
    all_runs: bool = typer.Option(False, "--all-runs",
                                  help="use every run, not only each device's latest per case"),
    top: int = typer.Option(20, "--top", min=0, help="devices listed in the summary table, slowest "
                                               "first (0: all); --json lists all"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Find slow GPUs: each device against the median of its GPU model, case by case."""
    from sqlalchemy.exc import SQLAlchemyError

    from results.fleet import fleet as build

    store = open_store(db, create=False)
    try:
        report = build(store, threshold, latest_only=not all_runs)
    except ValueError as e:
        raise fail(str(e)) from None
    except SQLAlchemyError as e:
        raise fail(f"cannot read {store.display_url}: {first_line(e)}") from None
    finally:
        store.close()
    if report.skipped:
        err_console.print(f"fleet: {counted(report.skipped, 'unusable row')} skipped (values the "
                          "record checks refuse, or a kernel without a passed check)",
                          highlight=False)
    if as_json:
        print_json(report.to_dict())
        return
    devices = report.devices()
    if not devices:
        console.print(f"no ok and correct results in {escape(store.display_url)}: nothing to "
                      "compare", highlight=False)
        return
    if report.flagged:
        console.print(flagged_table(report))
    shown = devices if top <= 0 else devices[:top]
    console.print(devices_table(report, shown))
    if len(shown) < len(devices):
        console.print(f"({counted(len(devices) - len(shown), 'more device')}: --top 0 lists "
                      "all)")
    n_flagged = sum(d.flagged > 0 for d in devices)
    console.print(f"{n_flagged} of {counted(len(devices), 'device')} below "
                  f"{report.threshold:.2f} of their "
                  f"fleet median on at least one case "
                  f"({'latest run' if report.latest_only else 'all runs'} per device and case)",
                  highlight=False)


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _t(x) -> str:
    """Text from the table for a rich cell: never read as markup, and its control and format
    characters (an ESC, a newline, a U+202E in a row stored before the door refused them) shown
    escaped."""
    text = str(x)
    if CONTROLS.search(text):
        text = CONTROLS.sub(lambda m: repr(m.group())[1:-1], text)
    if not text.isascii():  # format characters too (a bidi override in an old row)
        text = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cf" else c
                       for c in text)
    return escape(text)


def flagged_table(report) -> Table:
    t = Table(title=f"below {report.threshold:.2f} of the fleet median")
    for col in ("device", "host", "model", "case", "median", "fleet", "ratio", "SM MHz mean/min",
                "power W", "temp C", "why"):
        t.add_column(col, justify="right" if col in ("median", "fleet", "ratio") else "left")
    for e in report.flagged:
        t.add_row(_t(e.device), _t(e.host), _t(e.model), _t(e.case), f"{e.median_s * 1e3:.3f} ms",
                  f"{e.fleet_median_s * 1e3:.3f} ms", f"[red]{e.ratio:.3f}[/]",
                  f"{_f(e.sm_clock_mhz_mean, '.0f')}/{_f(e.sm_clock_mhz_min, '.0f')}",
                  _f(e.power_w_mean, ".0f"), _f(e.temp_c_max, ".0f"), _t(e.explain()))
    return t


def devices_table(report, devices) -> Table:
    t = Table(title="devices, slowest first (geometric mean of their ratios over cases)")
    for col in ("device", "host", "model", "cases", "flagged", "worst ratio", "geomean ratio"):
        t.add_column(col, justify="right" if col in ("cases", "flagged", "worst ratio",
                                                     "geomean ratio") else "left")
    for d in devices:
        style = "red" if d.flagged else ""
        t.add_row(_t(d.device), _t(d.host), _t(d.model), str(d.cases), str(d.flagged),
                  f"{d.worst_ratio:.3f}", f"{d.geomean_ratio:.3f}", style=style)
    return t


Format = choice("Format", FORMATS)


def export(
    format: Format = typer.Option("csv", "--format", "-f", help="file format"),
    out: Path | None = typer.Option(None, "--out", "-o", help="file (default: stdout)"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Write the table as CSV, Parquet, JSON Lines or node_exporter gauges (openmetrics: the
    Prometheus text format 0.0.4; rows the record checks refuse are skipped and counted on
    stderr)."""
    from sqlalchemy.exc import SQLAlchemyError

    from results.export import export as do_export
    from results.rows import read, valid_records

    format = value(format)
    if format == "parquet" and out is None:
        raise fail("parquet is binary: give --out FILE")
    if out is not None and out.is_dir():
        raise fail(f"--out {out} is a folder; give a file name")
    if out is not None:
        not_the_database(out, db, "--out")
    store = open_store(db, create=False)
    try:
        rows, refused = valid_records(read(store))
    except SQLAlchemyError as e:
        raise fail(f"cannot read {store.display_url}: {first_line(e)}") from None
    finally:
        store.close()
    try:
        written = do_export(rows, format, out)
    except BrokenPipeError:  # `export | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    except OSError as e:
        raise fail(f"cannot write {out}: {e.strerror or first_line(e)}") from None
    except ValueError as e:
        raise fail(str(e)) from None
    err_console.print(f"export: {written} written to {escape(str(out or 'stdout'))}",
                      highlight=False)
    if refused:
        err_console.print(f"export: {counted(len(refused), 'row')} skipped, the record checks "
                          f"refuse {'it' if len(refused) == 1 else 'them'} "
                          f"(first: {escape(refused[0])})", highlight=False, soft_wrap=True)


def ingest(
    files: list[Path] = typer.Argument(..., metavar="FILE",
                                       help="JSON Lines of records (export -f jsonl), JSON "
                                            "arrays of records (run --json-out) or "
                                            "pytest-benchmark JSON files"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Load result files into the table; each file is loaded whole or not at all.

    Exit 0: every file loaded; 2: some file refused (one line each, nothing of it written),
    the other files are loaded all the same. A figure that could not be checked (no datasheet
    peak for its device) is a note on stderr, not a refusal."""
    from sqlalchemy.exc import SQLAlchemyError

    from results.ingest import IngestError, insert_all, load_file, unchecked_notes
    from results.schema import RecordError
    from results.store import StoreError

    store = None  # opened at the first good file: refused files alone create no database
    failed = 0
    try:
        for f in files:
            try:
                records = load_file(f, strict=True)
                store = store or open_store(db)
                new, total = insert_all(records, store), len(records)
                console.print(f"{escape(str(f))}: {counted(total, 'row')}, {new} new, "
                              f"{total - new} already there", highlight=False)
                for note in unchecked_notes(f, records):
                    err_console.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
            except SQLAlchemyError as e:  # a row the database refuses; the file rolled back
                err_console.print(f"[bold red]error:[/] {escape(str(f))}: the database refused "
                                  f"a row: {escape(first_line(e))} (nothing from this file was "
                                  "written)", highlight=False, soft_wrap=True)
                failed += 1
            except (IngestError, RecordError, StoreError) as e:
                err_console.print(f"[bold red]error:[/] {escape(str(e))} (nothing from this "
                                  "file was written)", highlight=False, soft_wrap=True)
                failed += 1
    finally:
        if store is not None:
            store.close()
    if failed:
        raise typer.Exit(2)
