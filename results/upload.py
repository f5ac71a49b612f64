"""Copy the local results table into a shared one (PostgreSQL, or any Store URL).

Every local row the shared table lacks is sent, in batches of `batch_size` ids, each batch one
transaction on the shared table: a batch asks which of its ids are there already, reads the
missing rows from the local table, and inserts them with ON CONFLICT DO NOTHING on the
deterministic id. So re-running an upload, or 32 nodes uploading overlapping rows at once, is
harmless, and a crash loses at most the batch in flight. The local table is only read.

A server that cannot be reached (or drops the connection, or is restarting) is retried with
exponential backoff a bounded number of times, then the upload stops with a one-line
UploadError; the batches already committed stay, and running the upload again finishes the
rest. Passwords come from the URL, $PGPASSWORD or ~/.pgpass (libpq reads both when the URL has
none) and never appear in messages: URLs are shown through `redact` and any error text is
scrubbed of the password.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from urllib.parse import quote

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from results.store import (
    COLUMNS,
    JSON_COLUMNS,
    Store,
    StoreError,
    redact,
    resolve_url,
    results_table,
    transient,
    url_secrets,
)

log = logging.getLogger(__name__)

UPLOAD_ENV = "COLOSSUS_BENCH_UPLOAD_URL"
TRIES_ENV = "COLOSSUS_BENCH_UPLOAD_TRIES"
BACKOFF_ENV = "COLOSSUS_BENCH_UPLOAD_BACKOFF"
# Rows per transaction. 5,000 rows of 1-3 KB is 5-15 MB a round trip: large enough to amortise
# latency to a remote server, small enough that a failed batch costs little (assumption, checked
# by `python -m results.upload_bench`).
DEFAULT_BATCH = 5000
MAX_BATCH = 10_000  # keeps the IN (...) lists under SQLite's 32,766 bound-parameter limit


class UploadError(RuntimeError):
    """The upload stopped. One line, no password; `report` says what was done before."""

    def __init__(self, message: str, report: UploadReport):
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class RetryPolicy:
    """Tries per step (opening the shared table, each batch) and the waits between them.

    The defaults wait 1, 2, 4, 8 s (15 s in all) before giving up: enough to ride out a server
    restart or a network blip, short enough that a node's job does not hang (assumption).
    """

    tries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.tries, int) or self.tries < 1:
            raise ValueError(f"retry tries must be an integer >= 1, got {self.tries!r}")
        if self.backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("retry backoff must be >= 0 seconds")

    @classmethod
    def from_env(cls, tries: int | None = None, backoff_s: float | None = None) -> RetryPolicy:
        """Arguments, else $COLOSSUS_BENCH_UPLOAD_TRIES / _BACKOFF, else the defaults (so
        `run --upload` in a batch job can be tuned without new flags)."""
        try:
            tries = tries if tries is not None else int(os.environ.get(TRIES_ENV, cls.tries))
            backoff_s = backoff_s if backoff_s is not None else \
                float(os.environ.get(BACKOFF_ENV, cls.backoff_s))
        except ValueError as e:
            raise ValueError(f"bad {TRIES_ENV} or {BACKOFF_ENV}: {e}") from None
        return cls(tries=tries, backoff_s=backoff_s)

    def wait_s(self, attempt: int) -> float:
        """Wait after failed attempt `attempt` (1-based): exponential, capped."""
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)


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

    @property
    def rows_per_s(self) -> float:
        return (self.new + self.already) / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        retried = f", {self.retries} retries" if self.retries else ""
        batches = f"{self.batches} batch" + ("" if self.batches == 1 else "es")
        return (f"{self.new} new rows, {self.already} already there ({self.local} local rows, "
                f"{batches}{retried}) to {self.to} in {self.seconds:.1f} s")

    def to_dict(self) -> dict:
        return {**asdict(self), "rows_per_s": self.rows_per_s}


def destination(url: str | None) -> str:
    """--to URL, else $COLOSSUS_BENCH_UPLOAD_URL."""
    url = url or os.environ.get(UPLOAD_ENV)
    if not url:
        raise ValueError(f"no destination: pass --to URL or set {UPLOAD_ENV}")
    return url


def scrub(text: str, url: str) -> str:
    """`text` with the URL's secrets (plain or URL-encoded) replaced by ***."""
    for secret in url_secrets(url):
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, "***")
    return text


def _first_line(e: BaseException) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class _Retrying:
    """Runs steps with the retry policy, counting retries in the report."""

    def __init__(self, policy: RetryPolicy, report: UploadReport, url: str, sleep):
        self.policy, self.report, self.url, self.sleep = policy, report, url, sleep

    def __call__(self, step: Callable, what: str):
        for attempt in range(1, self.policy.tries + 1):
            try:
                return step()
            except (StoreError, sa.exc.SQLAlchemyError) as e:
                reason = scrub(str(e) if isinstance(e, StoreError) else _first_line(e), self.url)
                if not transient(e):
                    raise UploadError(f"upload to {self.report.to} failed while {what}: "
                                      f"{reason}", self.report) from None
                if attempt == self.policy.tries:
                    raise UploadError(
                        f"cannot reach {self.report.to} after {attempt} tries ({reason}); "
                        f"{self.report.new} new rows were uploaded before that, the local table "
                        "is untouched: run the upload again to send the rest",
                        self.report) from None
                wait = self.policy.wait_s(attempt)
                self.report.retries += 1
                self.report.errors.append(reason)
                log.warning("%s: %s; retrying in %.1f s", what, reason, wait)
                self.sleep(wait)


def _send_batch(src: Store, dst: Store, ids: list[str]) -> int:
    """One batch, one transaction on the shared table. Returns the rows it inserted."""
    col = results_table.c.id
    if dst.dialect == "postgresql":  # one array parameter, not thousands of placeholders
        present = col == sa.any_(sa.bindparam("ids", ids, type_=postgresql.ARRAY(sa.String)))
    else:
        present = col.in_(ids)
    with dst.engine.begin() as conn:
        there = set(conn.execute(sa.select(col).where(present)).scalars())
        missing = [i for i in ids if i not in there]
        if not missing:
            return 0
        if dst.dialect == "postgresql":
            try:
                return _copy_pg(conn, _local_rows(src, missing, json_as_text=True))
            except psycopg.Error as e:
                # COPY runs on the raw cursor, outside SQLAlchemy's error wrapping: wrap it the
                # same way (OperationalError, DataError, ...) so retries and messages see it
                raise sa.exc.DBAPIError.instance("COPY results", None, e, psycopg.Error) from e
        return dst.insert_rows(_local_rows(src, missing), conn=conn)


def _local_rows(src: Store, ids: list[str], *, json_as_text: bool = False) -> list:
    """The local rows with these ids: dicts, or tuples in COLUMNS order with the JSON columns
    as their stored text (COPY takes that as it is: no decoding and encoding again)."""
    cols = [sa.cast(c, sa.Text) if json_as_text and c.name in JSON_COLUMNS else c
            for c in results_table.c]
    stmt = sa.select(*cols).where(results_table.c.id.in_(ids))
    with src.engine.connect() as conn:
        result = conn.execute(stmt)
        return [tuple(r) for r in result] if json_as_text else \
            [dict(zip(COLUMNS, r)) for r in result]


_QUOTED = ", ".join(f'"{c}"' for c in COLUMNS)


def _copy_pg(conn, rows: list[tuple]) -> int:
    """Insert rows on PostgreSQL through COPY into a temporary table, then INSERT ... SELECT
    ... ON CONFLICT DO NOTHING in id order. COPY is several times faster than a multi-row
    INSERT, whose huge parameter lists psycopg has to rewrite in Python."""
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("CREATE TEMP TABLE colossus_upload (LIKE results INCLUDING DEFAULTS) "
                       "ON COMMIT DROP")
        with cursor.copy(f"COPY colossus_upload ({_QUOTED}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"INSERT INTO results ({_QUOTED}) SELECT {_QUOTED} FROM colossus_upload "
                       "ORDER BY id ON CONFLICT (id) DO NOTHING")
        return cursor.rowcount
    finally:
        cursor.close()


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
    if not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"batch size must be an integer from 1 to {MAX_BATCH}, "
                         f"got {batch_size!r}")
    url = destination(url)
    report = UploadReport(to=redact(resolve_url(url)))
    if resolve_url(url) == source.url:
        raise UploadError(f"the destination {report.to} is the local table itself", report)
    attempt = _Retrying(retry or RetryPolicy.from_env(), report, url, sleep)
    start = time.perf_counter()
    ids = sorted(source.ids())  # id order: concurrent uploaders lock rows in the same order
    report.local = len(ids)
    dst = attempt(partial(Store, url), "opening the shared table")
    try:
        for i in range(0, len(ids), batch_size):
            chunk = ids[i:i + batch_size]
            new = attempt(partial(_send_batch, source, dst, chunk),
                          f"sending batch {i // batch_size + 1}")
            report.new += new
            report.already += len(chunk) - new
            report.batches += 1
            report.seconds = time.perf_counter() - start
            if on_batch:
                on_batch(report)
    finally:
        dst.close()
        report.seconds = time.perf_counter() - start
    return report


def upload(db: str | None, to: str | None, **kwargs) -> UploadReport:
    """Open the local table (`db`, as `--db` resolves it) and upload it; see upload_store."""
    with Store(db) as source:
        return upload_store(source, to, **kwargs)

