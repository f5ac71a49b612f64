"""`colossus-bench report`: the HTML + Markdown report (reports/page/render.py) as a CLI verb.

Measurements come from the table given by --db when it has usable rows; without --db from the
default local table (never created by this command) when it has rows; else from the shipped
reference results; else there are none, and the report says so in its measured sections.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import typer

from reports.page.context import CONFIGS
from reports.page.render import build_report
from reports.page.rows import NO_MEASUREMENTS, pick_measurements, usable_rows
from results.console import choice, console, err_console, fail, value


def _local_frame(db: str | None) -> tuple[object, str | None, str | None]:
    """(frame or None, display URL, why it was not read) of the table to read.

    --db given: it must open (StoreError otherwise). No --db: the default table is read only if
    it exists, so a report never leaves an empty database behind; one that cannot be opened is
    passed over with the reason.
    """
    from results.store import Store, StoreError, resolve_url

    url = resolve_url(db)
    if db is None and url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return None, None, None
    try:
        store = Store(url, create=False)  # a report only reads: it never creates a table
    except StoreError as e:
        if db is not None:
            raise
        return None, None, str(e)
    try:
        return store.frame(), store.display_url, None
    finally:
        store.close()


def _reference_frame():
    from results.reference import load_reference

    return load_reference()


@contextmanager
def _progress():
    """Say each stage on stderr: a spinner on a terminal, one line per stage in a log."""
    if err_console.is_terminal:
        with err_console.status("report") as status:
            yield lambda text: status.update(f"report: {text}")
    else:
        yield lambda text: err_console.print(f"report: {text}", highlight=False)


Config = choice("Config", CONFIGS)


def report(
    out: str = typer.Option("report", "--out", "-o",
                            help="folder for report.html, report.md and its figures"),
    db: str | None = typer.Option(None, "--db",
                                     help="Database URL or SQLite path (default: "
                                          "$COLOSSUS_BENCH_DB, else the per-user SQLite "
                                          "file; without rows there, the shipped reference "
                                          "results)"),
    config: Config = typer.Option("full", "--config",
                                  help="model sections (quick: fewer GPU counts, for a "
                                       "preview)"),
) -> None:
    """Write the HTML report (self-contained) and its Markdown twin."""
    from results.store import StoreError  # lazy: sqlalchemy costs every verb's start time

    config = value(config)
    if not out.strip():  # a Path option would read '' as '.' and write into the cwd
        raise fail("--out is empty; name the report's folder")
    try:
        local, where, why_not = _local_frame(db)
    except StoreError as e:
        raise fail(str(e)) from None
    if why_not:
        err_console.print(f"[yellow]the default table was not read: {why_not}[/]",
                          highlight=False, soft_wrap=True)
    frame, origin = pick_measurements(local, _reference_frame())
    if origin == "local table":
        origin = f"local table {where}"
    try:  # build_report checks the folder first, before the seconds of work
        with _progress() as say:
            html, md = build_report(frame, Path(out), origin=origin, config=config, progress=say)
    except OSError as e:
        raise fail(f"cannot write the report to {out}: {e.strerror or e}") from None
    n = len(usable_rows(frame))
    console.print(f"measurements: {origin}" + (f" ({n} results)" if n else
                                               f" ({NO_MEASUREMENTS})"), highlight=False,
                  soft_wrap=True)
    console.print(f"report: {html}\nmarkdown: {md}", highlight=False, soft_wrap=True)
