"""Rank 0's spool of finished rows, and the final pass that makes sure they are stored.

Rank 0 stores each row as its size finishes and also appends it to a spool file (JSON Lines of
records: what `colossus-bench ingest` reads), noting beside it (`<spool>.stored`) the ids it
stored. A busy SQLite file or a PostgreSQL blip can make those inserts fail; so whoever started
the ranks (the launcher, or the CLI running as rank 0 itself) inserts the whole spool again
after they end, normally or not. Inserts are idempotent by the rows' deterministic ids, so rows
already stored are skipped. If that fails too, the spool is copied to a stable place and one
line says where it is and how to load it: finished results are never lost silently.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Assumption, not a measurement: long enough for a PostgreSQL restart or another writer's
# SQLite transaction to end. Only errors that may pass by themselves are retried.
STORE_RETRY_S = 60.0
RETRY_PAUSE_S = (0.5, 1.0, 2.0, 5.0)  # then every 5 s


def stored_ids_path(spool: str | os.PathLike) -> Path:
    return Path(f"{spool}.stored")


def append_row(spool: str | os.PathLike, row: dict[str, Any]) -> None:
    with open(spool, "a") as f:
        f.write(json.dumps(row, default=str) + "\n")


def mark_stored(spool: str | os.PathLike, ids: list[str]) -> None:
    """Note rows the worker stored itself (for a true count if the final pass fails)."""
    with open(stored_ids_path(spool), "a") as f:
        f.write("".join(f"{i}\n" for i in ids))


def read_rows(spool: str | os.PathLike) -> list[dict[str, Any]]:
    """The spooled rows; a line cut short by a kill is skipped."""
    path = Path(spool)
    if not path.exists():
        return []
    rows = []
    for text in path.read_text().splitlines():
        try:
            rows.append(json.loads(text))
        except ValueError:
            continue
    return rows


def _stored_ids(spool: str | os.PathLike) -> set[str]:
    path = stored_ids_path(spool)
    return set(path.read_text().split()) if path.exists() else set()


@dataclass
class Saved:
    """What the final pass achieved. `kept` is the spool's stable copy when storing failed."""

    rows: int
    stored: int  # rows known to be in the database
    kept: str | None = None
    error: str | None = None
    where: str = ""  # the database, with its secrets hidden

    def message(self) -> str | None:
        """The one line to print when rows could not be stored, else None."""
        if self.kept is None:
            return None
        return (f"warning: {self.rows - self.stored} of {self.rows} finished rows could not be "
                f"stored in {self.where} ({self.error}); all {self.rows} are kept in "
                f"{self.kept}: load them later with `colossus-bench ingest {self.kept} "
                f"--db {self.where}`")


def _insert(db_url: str, rows: list[dict[str, Any]]) -> None:
    from results.schema import Result
    from results.store import Store

    records = [Result.from_dict(r, where="spooled row") for r in rows]
    with Store(db_url) as store:
        store.insert(records)


def _reason(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def save(spool: str | os.PathLike, db_url: str | None, run_id: str, *,
         retry_s: float = STORE_RETRY_S) -> Saved:
    """Insert every spooled row into `db_url`; on failure keep the spool (see `keep`)."""
    import sqlalchemy as sa

    from results.store import StoreError, redact, transient

    rows = read_rows(spool)
    if not rows or not db_url:
        return Saved(len(rows), 0)
    where = redact(db_url)
    deadline = time.monotonic() + retry_s
    for attempt in itertools.count():
        try:
            _insert(db_url, rows)
            return Saved(len(rows), len(rows), where=where)
        except (StoreError, sa.exc.SQLAlchemyError, ValueError, TypeError) as e:
            pause = RETRY_PAUSE_S[min(attempt, len(RETRY_PAUSE_S) - 1)]
            if not transient(e) or time.monotonic() + pause > deadline:
                error = _reason(e)
                break
            time.sleep(pause)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the database, keep rows
            error = "interrupted while storing"
            break
    stored = len(_stored_ids(spool) & {r.get("id") for r in rows})
    return Saved(len(rows), stored, str(keep(spool, run_id)), error, where)


def keep(spool: str | os.PathLike, run_id: str) -> Path:
    """Copy the spool to the per-user data folder, else the current folder; where it went.

    Returns the spool itself when neither can be written (the caller must then not delete it).
    """
    from results.store import default_path

    name = f"unsaved-allreduce-{run_id or 'run'}-{os.getpid()}.jsonl"
    for folder in (default_path().parent / "unsaved", Path.cwd()):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            dest = folder / name
            shutil.copyfile(spool, dest)
            return dest.absolute()
        except OSError:
            continue
    print(f"warning: cannot copy {spool} anywhere stable; it is left where it is",
          file=sys.stderr, flush=True)
    return Path(spool).absolute()
