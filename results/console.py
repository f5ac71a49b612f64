"""The command line's one error convention and its consoles, shared by every part's verbs.

A user mistake or an unusable database prints one line on stderr and exits 2 (`fail`); an
exception is reduced to its first line by `first_line`. Lives at the bottom of the layers (above
kernels) so that the verbs of results/, bench/ and reports/ all use the same one.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from results.errors import first_line  # noqa: F401  (re-exported: the verbs use it from here)

# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

DB_HELP = "Database URL or SQLite path (default: $COLOSSUS_BENCH_DB, else a per-user SQLite file)"


def choice(name: str, values) -> type[Enum]:
    """A str Enum of `values` for an option, so help lists the choices and shells complete them
    (read the chosen string as `.value`)."""
    return Enum(name, {v: v for v in values}, type=str)


def value(option) -> str | None:
    """The string of an enum option (None stays None)."""
    return None if option is None else getattr(option, "value", option)


def print_json(data) -> None:
    """What every `--json` flag prints on stdout: one indent style for every verb."""
    print(json.dumps(data, indent=JSON_INDENT, default=str))


JSON_INDENT = 2


@contextmanager
def working(message: str) -> Iterator[None]:
    """Progress of a long step on stderr: a spinner on a terminal, else one status line."""
    if err_console.is_terminal:
        with err_console.status(message):
            yield
    else:
        err_console.print(f"{message} ...", highlight=False, soft_wrap=True)
        yield


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line and return the Exit to raise. The message is shown as it is: text
    from a file or a table (a host named `node[/b]`) is never read as rich markup."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def not_the_database(path: Path, db: str | None, flag: str) -> None:
    """An output file must not be the SQLite file of the results table (`db` as --db takes
    it): writing it would replace the table. One line, exit 2, before anything is written."""
    from results.store import resolve_url, sqlite_file  # lazy: sqlalchemy costs start time

    table = sqlite_file(resolve_url(db))
    if table is not None and (path.resolve() == table.resolve() or (
            path.exists() and table.exists() and os.path.samefile(path, table))):
        raise fail(f"{flag} {path}: is the results database itself; name another file")


def open_store(db: str | None, *, create: bool = True):
    """The results table at `db`; an unusable one is a user error (one line, exit 2).

    create=False is for the verbs that only read (export, fleet, report): a database that does
    not exist (a mistyped path, `:memory:`, an empty server database) is refused and nothing is
    created."""
    from results.store import Store, StoreError  # lazy: sqlalchemy costs CLI start time

    try:
        return Store(db, create=create)
    except StoreError as e:
        raise fail(str(e)) from None
