"""The results table: SQLAlchemy Core over SQLite (default, one file per user) or PostgreSQL.

Inserts are idempotent (ON CONFLICT DO NOTHING on the deterministic id) and each `insert` is one
transaction, so a crash or Ctrl-C keeps every result already inserted and never half a batch.
The schema version lives in the `colossus_meta` table and is checked on open: a table written by
a newer colossus-bench is refused, an older one is migrated by the versioned DDL in MIGRATIONS
(results/tables.py, which also derives the tables from the record declaration).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa

from results.errors import first_line
from results.schema import SCHEMA_VERSION, Result
from results.tables import (  # noqa: F401  (COLUMNS, JSON_COLUMNS: the store's public names)
    BASE_VERSION,
    COLUMNS,
    JSON_COLUMNS,
    MIGRATIONS,
    insert_ignore,
    insert_table_rows,
    layout_version,
    meta_table,
    metadata,
    record_row,
    records,
    result_rows,
)
from results.validate import FieldError, check

DB_ENV = "COLOSSUS_BENCH_DB"


class StoreError(RuntimeError):
    """The database cannot be used (unreachable, unwritable, newer schema). Message is one line."""


class SchemaTooNew(StoreError):
    pass


class StoreUnreachable(StoreError):
    """The server could not be reached or dropped the connection: trying again may work."""


# Errors worth retrying: connection exceptions (SQLSTATE class 08), server shutting down or
# starting up (57P01-57P03), deadlock and serialisation failures (40P01, 40001).
TRANSIENT_SQLSTATES = ("08", "57P01", "57P02", "57P03", "40P01", "40001")
# libpq reports these as connection failures too, but retrying cannot fix them.
PERMANENT_TEXT = ("authentication failed", "no password supplied", "does not exist",
                  "permission denied", "pg_hba.conf")


def transient(e: BaseException) -> bool:
    """Whether a database error may go away by itself (server down or restarting, a network
    blip, a deadlock), as opposed to a wrong URL, password or statement."""
    if isinstance(e, StoreUnreachable):
        return True
    if not isinstance(e, sa.exc.DBAPIError):
        return False
    text = str(e.orig or e).lower()
    if type(e.orig).__module__.startswith("sqlite3"):  # only a busy file passes by itself
        return "locked" in text or "busy" in text
    if any(t in text for t in PERMANENT_TEXT):
        return False
    state = getattr(e.orig, "sqlstate", None) or ""
    if state.startswith(TRANSIENT_SQLSTATES) or e.connection_invalidated:
        return True
    return isinstance(e, (sa.exc.OperationalError, sa.exc.InterfaceError)) and not state


# What readers select from: every record field by name (the join of the results, devices and
# software tables; see results/tables.py). Inserts go through Store.insert.
results_table = records
# JSON fields (own tables' values included) read as text by `rows`; the packed samples are not
TEXT_JSON = [c for c in JSON_COLUMNS if c != "samples_s"]

# Key of the PostgreSQL advisory lock that serialises creating and migrating the shared table
# (32 uploaders opening a new database at once must not race on CREATE TABLE). Any constant
# works; this one is "colo" in ASCII.
PG_LOCK_KEY = 0x636F6C6F

def default_path() -> Path:
    """The per-user SQLite file: $XDG_DATA_HOME/colossus-bench/results.db."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(Path.home(), ".local", "share")
    return Path(base) / "colossus-bench" / "results.db"


def resolve_url(url: str | None = None) -> str:
    """--db URL, else $COLOSSUS_BENCH_DB, else the per-user SQLite file. Plain paths are SQLite."""
    url = url or os.environ.get(DB_ENV) or str(default_path())
    if "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().absolute()}"
    if url.startswith(("postgresql://", "postgres://")):  # psycopg 3 is our driver
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


# libpq also takes secrets as query parameters (postgresql://u@h/db?password=...)
SECRET_QUERY_KEYS = ("password", "sslpassword")


def url_secrets(url: str) -> list[str]:
    """Every secret a URL carries: the password of user:password@ and secret query values."""
    try:
        u = sa.engine.make_url(url)
    except Exception:
        return []
    found = [str(u.password)] if u.password else []
    for key in SECRET_QUERY_KEYS:
        values = u.query.get(key)
        found += [values] if isinstance(values, str) else list(values or ())
    return [x for x in found if x]


BACKENDS = ("sqlite", "postgresql")  # the databases the store is written and tested for
UNSUPPORTED = "only SQLite paths, sqlite:/// URLs and postgresql:// URLs are supported"


def backend(url: str) -> str | None:
    """The database a URL names (sqlite, postgresql, mysql, ...); None when it does not parse."""
    try:
        return sa.engine.make_url(url).get_backend_name()
    except Exception:
        return None


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL; None for other databases, in-memory ones and SQLite URI
    filenames (sqlite:///file:...?uri=true: SQLite itself checks those)."""
    try:
        u = sa.engine.make_url(url)
    except Exception:
        return None
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:" \
            or u.query.get("uri") or u.database.startswith("file:"):
        return None
    return Path(u.database)


def in_memory(url: str) -> bool:
    """Whether a URL names an in-memory SQLite database (sqlite://, sqlite:///:memory:)."""
    try:
        u = sa.engine.make_url(url)
        return u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")
    except Exception:
        return False


def redact(url: str) -> str:
    """The URL with its secrets hidden, for messages and logs."""
    try:
        u = sa.engine.make_url(url)
        hidden = {k: "***" for k in SECRET_QUERY_KEYS if k in u.query}
        text = u.update_query_dict(hidden).render_as_string(hide_password=True)
        return text.replace("%2A%2A%2A", "***")
    except Exception:
        return "<unparseable database URL>"


def _json(value):
    """A JSON column's stored text parsed (psycopg parses JSONB itself); other text is kept."""
    try:
        return json.loads(value) if isinstance(value, str) else value
    except (ValueError, RecursionError):
        return value


class Store:
    """One results table. `Store(url)` opens (and creates or migrates) it."""

    def __init__(self, url: str | None = None, *, create: bool = True):
        """create=False: read only; a database that does not exist is refused, none created."""
        if url == ":memory:" or in_memory(resolve_url(url)):
            why = "a results table must persist" if create else "it holds nothing to read"
            raise StoreError(f"{url} is an in-memory database: {why}; give the file or URL of "
                             "a results table")
        self.url = resolve_url(url)
        self.display_url = redact(self.url)
        path = sqlite_file(self.url)
        if path is not None and path.is_dir():
            raise StoreError(f"{path} is a folder; give the database file in it (e.g. "
                             f"{path / 'results.db'})")
        if path is not None and create:
            default = default_path().expanduser().absolute()
            if path != default and not path.parent.is_dir():  # a mistyped --db path
                raise StoreError(f"cannot create the database folder {path.parent}: no such "
                                 "folder (only the default one is made; create it first)")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the database folder {path.parent}: "
                                 f"{e.strerror or e}") from None
            if path.exists() and not os.access(path, os.W_OK):
                raise StoreError(f"database {path} is not writable")
            if not os.access(path.parent, os.W_OK):
                raise StoreError(f"database folder {path.parent} is not writable")
        elif path is not None and not path.exists():
            raise StoreError(f"no database at {path}")  # and do not create an empty one
        if backend(self.url) not in (None, *BACKENDS):  # None: unparseable, said below
            raise StoreError(f"cannot use database URL {self.display_url}: {UNSUPPORTED}")
        pg = self.url.startswith("postgresql")
        try:
            # pre-ping: a pooled connection to a server that restarted is replaced, not failed
            self.engine = sa.create_engine(self.url, pool_pre_ping=pg,
                                           connect_args={"connect_timeout": 10} if pg else {})
        except Exception as e:  # unknown driver, malformed URL or port
            raise StoreError(f"cannot use database URL {self.display_url}: "
                             f"{first_line(e)}") from None
        try:
            self._open(create)
        except StoreError:
            self.engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as e:
            self.engine.dispose()
            error = StoreUnreachable if transient(e) else StoreError
            raise error(f"cannot open database {self.display_url}: {first_line(e)}") from None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _open(self, create: bool) -> None:
        """Check the schema version; create or migrate the table when needed.

        The common case (table there, current version) reads one row and takes no lock. Creating
        or migrating happens under a lock and re-reads the version there, so that concurrent
        openers (uploaders on several nodes) create and migrate exactly once.
        """
        with self.engine.connect() as conn:
            version = self._version(conn)
        if version == SCHEMA_VERSION:
            return
        self._refuse_newer(version)
        if not create:
            if version is None:
                raise StoreError(f"database {self.display_url} has no results table: nothing "
                                 "to read")
            raise StoreError(f"database {self.display_url} has schema version {version}, older "
                             f"than this colossus-bench's {SCHEMA_VERSION}: a verb that writes "
                             "(ingest, run) migrates it")
        with self.engine.begin() as conn:
            self._lock(conn)
            version = self._version(conn)
            self._refuse_newer(version)
            if version is None:
                metadata.create_all(conn, checkfirst=True)
            else:
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    self._migrate(conn, v)
                metadata.create_all(conn, checkfirst=True)  # tables new since `version`
            conn.execute(meta_table.delete().where(meta_table.c.key == "schema_version"))
            conn.execute(meta_table.insert().values(key="schema_version",
                                                    value=str(SCHEMA_VERSION)))

    def _version(self, conn) -> int | None:
        """The table's schema version, as its layout has it (see `layout_version`); None when
        there is no results table yet. (One query lists the tables, as one `has_table` would.)"""
        tables = set(sa.inspect(conn).get_table_names())
        if meta_table.name in tables:
            value = conn.execute(sa.select(meta_table.c.value).where(
                meta_table.c.key == "schema_version")).scalar()
            if value is not None:
                return layout_version(int(value), tables)
        return BASE_VERSION if result_rows.name in tables else None

    def _refuse_newer(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database {self.display_url} has schema version {version}, newer than this "
                f"colossus-bench understands ({SCHEMA_VERSION}): upgrade colossus-bench")

    def _lock(self, conn) -> None:
        """Serialise schema changes: an advisory lock on PostgreSQL, the write lock on SQLite
        (BEGIN IMMEDIATE, the first statement of the transaction). Both end with it."""
        if self.dialect == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        elif self.dialect == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    def _migrate(self, conn, version: int) -> None:
        if version not in MIGRATIONS:
            raise StoreError(f"database {self.display_url}: no migration to schema version "
                             f"{version} in this colossus-bench")
        step = MIGRATIONS[version]
        try:
            if callable(step):
                step(conn)
            for stmt in [] if callable(step) else step:
                conn.execute(sa.text(stmt))
        except (sa.exc.SQLAlchemyError, ValueError) as e:  # ValueError: tables.to_v2 refuses
            raise StoreError(f"database {self.display_url}: migration to schema version "
                             f"{version} failed ({first_line(e)}); the table is unchanged"
                             ) from None

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(meta_table.c.value).where(
                meta_table.c.key == "schema_version")).scalar_one())

    def _insert_ignore(self, conn, table: sa.Table, rows: list[dict], key: str) -> list:
        """INSERT ... ON CONFLICT DO NOTHING; returns the keys actually inserted."""
        return insert_ignore(conn, table, rows, key)

    def insert(self, records: Iterable[Result], *, conn=None) -> int:
        """Insert records (one transaction); already-present ids are skipped. Returns new rows.
        Each passes results.validate.check first: one bad record raises, none is inserted."""
        records = list(records)
        for r in records:
            try:
                check(r)
            except FieldError as e:  # name the case only when it is needed
                raise FieldError(e.field, e.value, e.reason,
                                 f"result {r.workload}/{r.backend}/{r.dtype} {r.params}") from None
        return self.insert_rows([record_row(r) for r in records], conn=conn)

    def insert_rows(self, rows: list[dict], *, conn=None) -> int:
        """Insert record dicts (field -> value, non-finite floats already None, as `records`
        and `rows` read them); see `insert`. The device and software values go to their own
        tables, once each."""
        if conn is not None:
            return insert_table_rows(conn, rows)
        with self.engine.begin() as c:
            return insert_table_rows(c, rows)

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(result_rows)).scalar()

    def ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(result_rows.c.id)).scalars())

    def rows(self, where=None, *, columns: Iterable[str] = COLUMNS) -> list[dict]:
        """Record dicts (the fields asked for, by name), ordered by created_at and id, whatever
        they hold: JSON fields are read as text and parsed here, so a stored value that is not
        JSON cannot crash the query (results/rows.py then skips the row). `where` is a
        SQLAlchemy condition on `results_table` (the record fields)."""
        t = records
        stmt = sa.select(*[sa.type_coerce(t.c[c], sa.Text).label(c) if c in TEXT_JSON
                           else t.c[c] for c in columns]).order_by(t.c.created_at, t.c.id)
        if where is not None:
            stmt = stmt.where(where)
        with self.engine.connect() as conn:
            return [{k: _json(v) if k in TEXT_JSON else v for k, v in r._mapping.items()}
                    for r in conn.execute(stmt)]

    def records(self, where=None) -> list[Result]:
        return [Result(**row) for row in self.rows(where=where)]

    def frame(self, where=None):
        """All rows (or those matching a SQLAlchemy condition) as a pandas DataFrame.

        JSON columns come back as Python dicts/lists, so `df.params.str["m"]` and the like work.
        """
        import pandas as pd

        return pd.DataFrame(self.rows(where=where), columns=COLUMNS)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
