"""Rows the shared table cannot take: found before sending, and set aside in a file.

`precheck(row)` looks at a raw local row (a tuple in ROW_COLUMNS order, JSON as text) for what
PostgreSQL refuses, with the limits the record declaration gives (results/schema.py): a NUL
character in a text or JSON field, a string longer than its column, an integer outside its
column's range; `precheck_values` checks the device and software values they refer to. It is
cheap (a few string scans a row), so a known-bad row costs nothing to find; anything else the
server refuses is found by halving the batch (results/upload.py).

`write_refused(store, refused)` writes the refused rows, each as `{"reason": ..., "row":
{record}}` on one line, to `refused-upload-<UTC time>.jsonl` beside the local table, whole or
not at all. The local table keeps them: the next upload tries them again.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from results.schema import NUL_PROBLEM, SPECS, field_problem, has_nul
from results.store import Store, default_path, sqlite_file
from results.tables import KEYED, OWN_TABLES, ROW_COLUMNS, records

_TEXT = tuple((i, c, SPECS[c].max_length or 2**62) for i, c in enumerate(ROW_COLUMNS)
              if c in SPECS and SPECS[c].storage == "text")
_JSON = tuple((i, c) for i, c in enumerate(ROW_COLUMNS)
              if c in SPECS and SPECS[c].storage == "json")
_INTS = tuple((i, c, *SPECS[c].int_range) for i, c in enumerate(ROW_COLUMNS)
              if c in SPECS and SPECS[c].int_range)


def precheck(row: tuple) -> str | None:
    """Why PostgreSQL would refuse this raw row (one line naming the field), or None."""
    for i, name, limit in _TEXT:
        v = row[i]
        if v is not None and (len(v) > limit or "\x00" in v):
            return f"field {name!r} {field_problem(name, v) or NUL_PROBLEM}"
    for i, name, lo, hi in _INTS:
        v = row[i]
        if v is not None and not lo <= v <= hi:
            return f"field {name!r} {field_problem(name, v)}"
    for i, name in _JSON:
        v = row[i]
        if v is not None and "\\u0000" in v and has_nul(json.loads(v)):  # JSON's NUL
            return f"field {name!r} {NUL_PROBLEM}"
    return None


def precheck_values(store: Store, rows: list[tuple]) -> dict[str, str]:
    """The device and software values these rows refer to that PostgreSQL would refuse:
    {content key: reason}. (Few values a batch, so they are read and checked whole.)"""
    bad = {}
    for name, column in KEYED.items():
        at, table = ROW_COLUMNS.index(column), OWN_TABLES[name]
        keys = {r[at] for r in rows if r[at] is not None}
        if not keys:
            continue
        with store.engine.connect() as conn:
            for key, value in conn.execute(sa.select(table.c.key, table.c.value)
                                           .where(table.c.key.in_(sorted(keys)))):
                problem = field_problem(name, value) or (NUL_PROBLEM if has_nul(value) else None)
                if problem:
                    bad[key] = f"field {name!r} {problem}"
    return bad


def refused_path(store: Store) -> Path:
    """Where the refused rows of an upload from `store` go: beside its SQLite file (else beside
    the default table), named by the time."""
    path = sqlite_file(store.url)
    folder = path.parent if path is not None else default_path().parent
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return folder / f"refused-upload-{stamp}.jsonl"


def write_refused(store: Store, refused: dict[str, str]) -> Path:
    """Write the refused rows (id -> reason) with their reasons; returns the file."""
    rows = store.rows(records.c.id.in_(list(refused)))
    path = refused_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({"reason": refused[row["id"]], "row": row}, default=str) + "\n")
    os.replace(tmp, path)  # whole or not at all
    return path
