"""Copy the local results table into a shared one (PostgreSQL, or any Store URL).

Every local row the shared table lacks is sent, in batches of `batch_size` ids, each batch one
transaction on the shared table: a batch asks which of its ids are there already, reads the
missing rows from the local table, and inserts them with ON CONFLICT DO NOTHING on the
deterministic id. So re-running an upload, or 32 nodes uploading overlapping rows at once, is
harmless, and a crash loses at most the batch in flight. The local table is only read.

The device and software values a batch refers to go first (results/tables.py keeps each once,
by content key), then the batch's rows: on PostgreSQL by COPY, the samples as packed bytes.

A row the shared table refuses (a NUL character, an integer beyond its column: results/refused.py
finds those before sending; anything else by halving the failed batch until the refused rows
are found) is set aside in `refused-upload-<time>.jsonl` beside the local table with its reason,
and every other row goes in; the report counts them and the next upload tries them again.

A server that cannot be reached (or drops the connection, or is restarting) is retried with
exponential backoff and full jitter a bounded number of times, then the upload stops with a
one-line UploadError; the batches already committed stay, and running the upload again
finishes the rest. Passwords come from the URL, $PGPASSWORD or ~/.pgpass (libpq reads both
when the URL has none) and never appear in messages: URLs are shown through `redact` and any
error text is scrubbed of the password.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from results.errors import first_line
from results.refused import precheck, precheck_values, write_refused
from results.retry import (  # noqa: F401  (re-exported: the upload API)
    BACKOFF_ENV,
    DEFAULT_BATCH,
    MAX_BATCH,
    TRIES_ENV,
    UPLOAD_ENV,
    RetryPolicy,
)
from results.store import (
    Store,
    StoreError,
    backend,
    in_memory,
    redact,
    resolve_url,
    sqlite_file,
    transient,
    url_secrets,
)
from results.tables import (
    KEYED,
    OWN_TABLES,
    ROW_COLUMNS,
    UtcTime,
    insert_ignore,
    result_rows,
)
from results.words import counted, was

log = logging.getLogger(__name__)

class UploadError(RuntimeError):
    """The upload stopped. One line, no password; `report` says what was done before."""

    def __init__(self, message: str, report: UploadReport):
        super().__init__(message)
        self.report = report




@dataclass
class UploadReport:
    """What an upload did; str() is the line the CLI prints."""

    to: str  # the destination, password hidden
    local: int = 0  # rows in the local table
    new: int = 0  # rows the shared table did not have
    already: int = 0  # rows it had (from an earlier upload or another node)
    batches: int = 0  # batches committed
    retries: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)  # transient errors that were retried
    refused: int = 0  # rows the shared table refused, set aside in refused_file
    refused_file: str | None = None
    refused_reason: str | None = None  # the first row's reason

    @property
    def rows_per_s(self) -> float:
        return (self.new + self.already) / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        retried = f", {self.retries} retries" if self.retries else ""
        batches = counted(self.batches, "batch", "batches")
        refused = f", {self.refused} set aside in {self.refused_file}" if self.refused else ""
        return (f"{counted(self.new, 'new row')}, {self.already} already there "
                f"({counted(self.local, 'local row')}, "
                f"{batches}{retried}{refused}) to {self.to} in {self.seconds:.1f} s")

    def set_aside_line(self) -> str:
        """The last line of an upload that set rows aside."""
        return (f"{counted(self.refused, 'row')} set aside in "
                f"{self.refused_file}: the shared table refused them (first: "
                f"{self.refused_reason}); the next upload tries them again")

    def to_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": self.rows_per_s}


def destination(url: str | None) -> str:
    """--to URL, else $COLOSSUS_BENCH_UPLOAD_URL; a URL with a scheme, never a bare path, and
    for PostgreSQL a driver that imports."""
    url = url or os.environ.get(UPLOAD_ENV)
    if not url:
        raise ValueError(f"no destination: pass --to URL or set {UPLOAD_ENV}")
    if "://" not in url:  # a plain path would quietly become a new local SQLite file
        raise ValueError(f"destination {url!r} is not a database URL: give the shared table's "
                         "URL (postgresql://user@host/db; sqlite:///path for a local copy)")
    if backend(resolve_url(url)) == "postgresql":  # asked before any row is read or run
        try:
            import psycopg  # noqa: F401  (the driver, imported where it is needed)
        except ImportError as e:
            raise ValueError(f"destination {redact(resolve_url(url))} needs psycopg 3, which "
                             f"cannot be imported here ({first_line(str(e))}): pip install "
                             "'psycopg[binary]'") from None
    return url


def check_target(source_url: str, url: str | None, batch_size: int) -> str:
    """The destination URL (`destination`) once the upload's arguments are known good, else a
    ValueError line: a batch size out of range, no URL, a plain path, a SQLite destination that
    cannot be one (`check_sqlite_target`); an UploadError: the local table itself.
    The command line calls it before it says "uploading ..."."""
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be an integer from 1 to {MAX_BATCH}, "
                         f"got {batch_size!r}")
    url = destination(url)
    if resolve_url(url) == source_url:
        to = redact(resolve_url(url))
        raise UploadError(f"the destination {to} is the local table itself", UploadReport(to=to))
    if backend(resolve_url(url)) == "sqlite":
        check_sqlite_target(url)
    return url


def check_sqlite_target(url: str) -> None:
    """What can be known of a SQLite destination without creating anything (`run --upload`
    asks before its cases run): not in memory, its folder there, and a file already there a
    database. A ValueError line otherwise."""
    resolved = resolve_url(url)
    if in_memory(resolved):
        raise ValueError(f"destination {url} is an in-memory database: the rows would vanish "
                         "with the process; give the shared table's URL")
    path = sqlite_file(resolved)
    if path is not None and not path.exists():
        if not path.parent.is_dir():
            raise ValueError(f"destination {redact(resolved)}: no folder {path.parent}")
        return
    try:
        Store(resolved, create=False).close()  # reads only: refuses a folder, a non-database
    except StoreError as e:
        raise ValueError(f"destination {redact(resolved)}: {e}") from None


def scrub(text: str, url: str) -> str:
    """`text` with the URL's secrets (plain or URL-encoded) replaced by ***."""
    for secret in url_secrets(url):
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, "***")
    return text


class Refused(Exception):
    """The server refused the data of a step (a value it cannot store), not the connection."""


def data_error(e: BaseException) -> bool:
    """Whether the server (or the driver, for it) refused a value: SQLSTATE class 22 (data
    exception: NUL character, integer out of range, bad time) or 23 (integrity)."""
    orig = getattr(e, "orig", None)
    pg = sys.modules.get("psycopg")  # never imported: the error cannot be one of its own
    if pg is not None and isinstance(orig, (pg.DataError, pg.IntegrityError)):
        return True
    state = getattr(orig, "sqlstate", None) or ""
    return state.startswith(("22", "23")) or (
        isinstance(e, sa.exc.StatementError) and isinstance(orig, (ValueError, TypeError)))


class _Retrying:
    """Runs steps with the retry policy, counting retries in the report."""

    def __init__(self, policy: RetryPolicy, report: UploadReport, url: str, sleep):
        self.policy, self.report, self.url, self.sleep = policy, report, url, sleep

    def __call__(self, step: Callable, what: str):
        for attempt in range(1, self.policy.tries + 1):
            try:
                return step()
            except (StoreError, sa.exc.SQLAlchemyError) as e:
                reason = scrub(str(e) if isinstance(e, StoreError) else first_line(e), self.url)
                if data_error(e):
                    raise Refused(reason) from None
                if not transient(e):
                    raise UploadError(f"upload to {self.report.to} failed while {what}: "
                                      f"{reason}", self.report) from None
                if attempt == self.policy.tries:
                    raise UploadError(
                        f"cannot reach {self.report.to} after {attempt} tries ({reason}); "
                        f"{counted(self.report.new, 'new row')} "
                        f"{was(self.report.new)} uploaded before that, the "
                        "local table is untouched: run the upload again to send the rest",
                        self.report) from None
                wait = self.policy.wait_s(attempt)
                self.report.retries += 1
                self.report.errors.append(reason)
                log.warning("%s: %s; retrying in %.1f s", what, reason, wait)
                self.sleep(wait)


def _missing(dst: Store, ids: list[str]) -> list[str]:
    """Those of `ids` the shared table lacks."""
    col = result_rows.c.id
    if dst.dialect == "postgresql":  # one array parameter, not thousands of placeholders
        present = col == sa.any_(sa.bindparam("ids", ids, type_=postgresql.ARRAY(sa.String)))
    else:
        present = col.in_(ids)
    with dst.engine.connect() as conn:
        there = set(conn.execute(sa.select(col).where(present)).scalars())
    return [i for i in ids if i not in there]


# The raw local columns for COPY: JSON and times as their stored text, samples as their bytes
# (COPY takes them as they are: no decoding and encoding again).
_RAW = [sa.cast(c, sa.Text) if isinstance(c.type, (sa.JSON, UtcTime))
        else sa.type_coerce(c, sa.LargeBinary) if c.name == "samples_s" else c
        for c in result_rows.c]
_KEY_AT = {name: ROW_COLUMNS.index(col) for name, col in KEYED.items()}
ID_AT = ROW_COLUMNS.index("id")


def _local_rows(src: Store, ids: list[str]) -> list[tuple]:
    """The local rows with these ids, raw, as tuples in ROW_COLUMNS order."""
    stmt = sa.select(*_RAW).where(result_rows.c.id.in_(ids))
    with src.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(stmt)]


def _send_values(src: Store, dst: Store, rows: list[tuple]) -> None:
    """The device and software values these rows refer to, on the shared table, in a short
    transaction of their own: content-keyed rows are harmless if the rows never follow, and
    holding them in the long results transaction would make every uploader wait for the one
    that inserted them first."""
    for name, at in _KEY_AT.items():
        table = OWN_TABLES[name]
        keys = sorted({r[at] for r in rows if r[at] is not None})
        if not keys:
            continue
        with dst.engine.connect() as conn:
            there = set(conn.execute(sa.select(table.c.key).where(table.c.key.in_(keys)))
                        .scalars())
        need = [k for k in keys if k not in there]
        if not need:
            continue
        with src.engine.connect() as conn:
            values = [dict(r._mapping) for r in conn.execute(
                sa.select(table).where(table.c.key.in_(need)))]
        with dst.engine.begin() as conn:
            insert_ignore(conn, table, values, "key")


def _send_rows(src: Store, dst: Store, rows: list[tuple]) -> int:
    """Rows (raw tuples) into the shared table, in one transaction. Returns the rows inserted."""
    _send_values(src, dst, rows)
    with dst.engine.begin() as conn:
        if dst.dialect == "postgresql":
            # imported here: an upload to SQLite (or a run without --upload) needs no psycopg
            import psycopg

            from results.pgcopy import copy_rows
            try:
                return copy_rows(conn, rows)
            except psycopg.Error as e:
                # COPY runs on the raw cursor, outside SQLAlchemy's error wrapping: wrap it the
                # same way (OperationalError, DataError, ...) so retries and messages see it
                raise sa.exc.DBAPIError.instance("COPY results", None, e, psycopg.Error) from e
        with src.engine.connect() as c:  # another kind of database: typed rows, plain INSERT
            typed = [dict(r._mapping) for r in c.execute(sa.select(result_rows).where(
                result_rows.c.id.in_([r[ID_AT] for r in rows])))]
        return len(insert_ignore(conn, result_rows, typed, "id"))


class _Batches:
    """Sends batches; a batch the server refuses for its data is halved until the rows it
    refuses are found (one row each): those are set aside, every other row goes in."""

    def __init__(self, src: Store, dst: Store, attempt: _Retrying):
        self.src, self.dst, self.attempt = src, dst, attempt
        self.refused: dict[str, str] = {}  # id -> reason

    def send(self, ids: list[str], what: str) -> int:
        missing = self.attempt(partial(_missing, self.dst, ids), what)
        if not missing:
            return 0
        rows = _local_rows(self.src, missing)
        if self.dst.dialect == "postgresql":  # what PostgreSQL cannot store: set aside now
            values = precheck_values(self.src, rows)
            checked = [(r, precheck(r) or next((values[r[at]] for at in _KEY_AT.values()
                                                if r[at] in values), None)) for r in rows]
            self.refused.update((r[ID_AT], why) for r, why in checked if why)
            rows = [r for r, why in checked if not why]
        return self._bisect(rows, what)

    def _bisect(self, rows: list[tuple], what: str) -> int:
        if not rows:
            return 0
        try:
            return self.attempt(partial(_send_rows, self.src, self.dst, rows), what)
        except Refused as e:
            if len(rows) == 1:
                self.refused[rows[0][ID_AT]] = str(e)
                return 0
            mid = len(rows) // 2
            return self._bisect(rows[:mid], what) + self._bisect(rows[mid:], what)


def upload_store(source: Store, url: str | None = None, *, batch_size: int = DEFAULT_BATCH,
                 retry: RetryPolicy | None = None,
                 on_batch: Callable[[UploadReport], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> UploadReport:
    """Copy every row of `source` that the table at `url` lacks; see the module docstring.

    `url` defaults to $COLOSSUS_BENCH_UPLOAD_URL, `retry` to RetryPolicy.from_env().
    `on_batch(report)` runs after each committed batch (progress; tests stop the server there).
    Raises UploadError (one line, no password) when the upload cannot finish; batches committed
    before stay committed.
    """
    url = check_target(source.url, url, batch_size)
    report = UploadReport(to=redact(resolve_url(url)))
    attempt = _Retrying(retry or RetryPolicy.from_env(), report, url, sleep)
    start = time.perf_counter()
    ids = sorted(source.ids())  # id order: concurrent uploaders lock rows in the same order
    report.local = len(ids)
    try:
        dst = attempt(partial(Store, url), "opening the shared table")
    except Refused as e:
        raise UploadError(f"upload to {report.to} failed while opening the shared table: {e}",
                          report) from None
    batches = _Batches(source, dst, attempt)
    try:
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            before = len(batches.refused)
            what = f"sending batch {i // batch_size + 1}"
            try:
                new = batches.send(chunk, what)
            except Refused as e:  # refused outside any row (the check for present ids)
                raise UploadError(f"upload to {report.to} failed while {what}: {e}",
                                  report) from None
            report.new += new
            report.already += len(chunk) - new - (len(batches.refused) - before)
            report.batches += 1
            report.seconds = time.perf_counter() - start
            if on_batch:
                on_batch(report)
    finally:
        dst.close()
        if batches.refused:
            report.refused = len(batches.refused)
            report.refused_reason = next(iter(batches.refused.values()))
            report.refused_file = str(write_refused(source, batches.refused))
        report.seconds = time.perf_counter() - start
    return report


def upload(db: str | None, to: str | None, **kwargs) -> UploadReport:
    """Open the local table (`db`, as `--db` resolves it) and upload it; see upload_store."""
    with Store(db) as source:
        return upload_store(source, to, **kwargs)

