"""The one spool: results the database refused are kept in `unstored-<run>.jsonl`, never lost.

Every spool is JSON Lines of result records (what `colossus-bench ingest` reads). Two users:

- the runner (bench/runner.py) appends a result there at once when its insert fails, and the
  run goes on;
- the collectives' rank 0 appends every finished row to a run spool while it also stores it,
  noting beside it (`<spool>.stored`) the ids it stored, each once its transaction has
  committed; whoever started the ranks inserts the rest of the spool after they end (`save`),
  BATCH_ROWS rows a transaction: inserts are idempotent by the rows' deterministic ids, and a
  row the store refuses costs only itself (its batch is halved until it is found). If any row
  stays unstored, or the pass is interrupted, all the rows go to the same
  `unstored-<run>.jsonl` (`keep`).

Either way one line says where the rows are and how to load them (`Saved.message`).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from results.errors import first_line
from results.schema import Result
from results.words import counted

# Assumption, not a measurement: long enough for a PostgreSQL restart or another writer's
# SQLite transaction to end. Only errors that may pass by themselves are retried.
STORE_RETRY_S = 60.0
RETRY_PAUSE_S = (0.5, 1.0, 2.0, 5.0)  # then every 5 s


def unstored_path(run_id: str) -> Path:
    """Where the rows of `run_id` that no database took are kept: beside the default table."""
    from results.store import default_path  # sqlalchemy: lazy, the CLI starts fast

    return default_path().parent / f"unstored-{run_id or 'run'}.jsonl"


def stored_ids_path(spool: str | os.PathLike) -> Path:
    return Path(f"{spool}.stored")


def append(spool: str | os.PathLike, row: Result | dict[str, Any], *, sync: bool = True) -> None:
    """Append one record (a Result or its dict) as one line; fsync'd unless `sync` is False."""
    path = Path(spool)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = row.to_dict() if isinstance(row, Result) else row
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(data, default=str) + "\n")
        f.flush()
        if sync:
            os.fsync(f.fileno())


def mark_stored(spool: str | os.PathLike, ids: list[str]) -> None:
    """Note rows that were stored as they came (for a true count if the final pass fails)."""
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
    """What the final pass achieved. `kept` is where the rows went when storing failed."""

    rows: int
    stored: int  # rows known to be in the database
    kept: str | None = None
    error: str | None = None
    where: str = ""  # the database, with its secrets hidden

    def message(self) -> str | None:
        """The one line to print when rows could not be stored, else None."""
        if self.kept is None:
            return None
        return (f"warning: {self.rows - self.stored} of {counted(self.rows, 'finished row')} "
                f"could not be stored in {self.where} ({self.error}); "
                f"{'it is' if self.rows == 1 else f'all {self.rows} are'} kept in "
                f"{self.kept}: load them later with `colossus-bench ingest {self.kept} "
                f"--db {self.where}`")


# Rows per transaction of the final pass, a choice: one commit per 500 rows rather than per
# row (a 20k-row spool is 40 transactions), and halving finds a refused row in 9 more.
BATCH_ROWS = 500


def _insert_batches(db_url: str, rows: list[dict[str, Any]], done: set[str],
                    refused: dict[str, str]) -> None:
    """Insert the rows not yet in `done` or `refused`, BATCH_ROWS to a transaction (each all
    or nothing). A batch the store refuses (results/validate.py's door, a constraint) is
    halved until the refused rows are found, so a refused row costs only itself: its id and
    reason go to `refused` and every other row is stored. A database that cannot be used at
    all (open fails, connection lost) raises, for the caller to retry what is left."""
    from results.store import Store  # lazy: sqlalchemy costs CLI start time

    todo, seen = [], done | set(refused)
    for row in rows:  # each id once (a row spooled twice is the same row: its id is its content)
        key = str(row.get("id"))
        if key not in seen:
            seen.add(key)
            todo.append((key, row))
    with Store(db_url) as store:
        for start in range(0, len(todo), BATCH_ROWS):
            _insert_batch(store, todo[start:start + BATCH_ROWS], done, refused)


def _insert_batch(store, batch: list[tuple[str, dict[str, Any]]], done: set[str],
                  refused: dict[str, str]) -> None:
    """One transaction for `batch` ((id, row) pairs); on a refusal, each half on its own."""
    import sqlalchemy as sa  # lazy, as above

    from results.store import transient

    try:
        store.insert([Result.from_dict(row, where="spooled row") for _, row in batch])
    except (sa.exc.SQLAlchemyError, ValueError, TypeError) as e:
        if transient(e):
            raise
        if len(batch) == 1:
            refused[batch[0][0]] = first_line(e)
            return
        half = len(batch) // 2
        _insert_batch(store, batch[:half], done, refused)
        _insert_batch(store, batch[half:], done, refused)
        return
    done.update(key for key, _ in batch)


def save(spool: str | os.PathLike, db_url: str | None, run_id: str, *,
         retry_s: float = STORE_RETRY_S) -> Saved:
    """Insert every spooled row into `db_url`, in batches (each all or nothing; a refused row
    costs only itself, see `_insert_batches`); when any cannot be stored, or a second Ctrl-C
    (KeyboardInterrupt) stops the pass, keep them all (see `keep`; inserts are idempotent, so
    loading the kept file later adds only the missing ones)."""
    import sqlalchemy as sa  # lazy: only a run that stored something needs it

    from results.store import StoreError, redact, transient

    rows = read_rows(spool)
    if not rows or not db_url:
        return Saved(len(rows), 0)
    where = redact(db_url)
    deadline = time.monotonic() + retry_s
    # rows rank 0 noted as stored (after their commit) are in the database: not sent again
    done: set[str] = _stored_ids(spool)
    refused: dict[str, str] = {}
    error = None
    for attempt in itertools.count():
        try:
            _insert_batches(db_url, rows, done, refused)
            break
        except (StoreError, sa.exc.SQLAlchemyError, ValueError, TypeError) as e:
            pause = RETRY_PAUSE_S[min(attempt, len(RETRY_PAUSE_S) - 1)]
            if not transient(e) or time.monotonic() + pause > deadline:
                error = first_line(e)
                break
            time.sleep(pause)
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the database, keep rows
            error = "interrupted while storing"
            break
    ids = {str(r.get("id")) for r in rows}
    if error is None and not refused:
        return Saved(len(rows), len(rows), where=where)
    error = error or next(iter(refused.values()))
    stored = len((done | _stored_ids(spool)) & ids)
    return Saved(len(rows), stored, str(keep(spool, run_id)), error, where)


def keep(spool: str | os.PathLike, run_id: str) -> Path:
    """Append the spool's rows to `unstored_path(run_id)`, else to the current folder's file
    of that name; where they went. Returns the spool itself when neither can be written (the
    caller must then not delete it)."""
    rows = read_rows(spool)
    name = unstored_path(run_id).name
    for dest in (unstored_path(run_id), Path.cwd() / name):
        try:
            for row in rows:
                append(dest, row, sync=False)
            with open(dest, "a") as f:
                os.fsync(f.fileno())
            return dest.absolute()
        except OSError:
            continue
    print(f"warning: cannot write {name} anywhere stable; the rows stay in {spool}",
          file=sys.stderr, flush=True)
    return Path(spool).absolute()
