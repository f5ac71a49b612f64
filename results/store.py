"""The results table: SQLAlchemy Core over SQLite (default, one file per user) or PostgreSQL.

Inserts are idempotent (ON CONFLICT DO NOTHING on the deterministic id) and each `insert` is one
transaction, so a crash or Ctrl-C keeps every result already inserted and never half a batch.
The schema version lives in the `colossus_meta` table and is checked on open: a table written by
a newer colossus-bench is refused, an older one is migrated by the versioned DDL in MIGRATIONS.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from results.schema import SCHEMA_VERSION, Result

DB_ENV = "COLOSSUS_BENCH_DB"


class StoreError(RuntimeError):
    """The database cannot be used (unreachable, unwritable, newer schema). Message is one line."""


class SchemaTooNew(StoreError):
    pass


metadata = sa.MetaData()

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

results_table = sa.Table(
    "results", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.Column("schema_version", sa.Integer, nullable=False),
    sa.Column("workload", sa.String(64), nullable=False, index=True),
    sa.Column("backend", sa.String(64), nullable=False),
    sa.Column("dtype", sa.String(32), nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("device", JSONType, nullable=False),
    sa.Column("world_size", sa.Integer),
    sa.Column("rank", sa.Integer),
    sa.Column("software", JSONType),
    sa.Column("median_s", sa.Float),
    sa.Column("p20_s", sa.Float),
    sa.Column("p80_s", sa.Float),
    sa.Column("mean_s", sa.Float),
    sa.Column("stdev_s", sa.Float),
    sa.Column("n", sa.Integer),
    sa.Column("samples_s", JSONType),
    sa.Column("tflops", sa.Float),
    sa.Column("gbps", sa.Float),
    sa.Column("algbw_gbps", sa.Float),
    sa.Column("busbw_gbps", sa.Float),
    sa.Column("peak_fraction", sa.Float),
    sa.Column("correct", sa.Boolean),
    sa.Column("max_rel_error", sa.Float),
    sa.Column("tolerance", sa.Float),
    sa.Column("telemetry", JSONType),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text),
)

meta_table = sa.Table(
    "colossus_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

COLUMNS = [c.name for c in results_table.columns]
JSON_COLUMNS = ["params", "device", "software", "samples_s", "telemetry"]

# Versioned DDL: MIGRATIONS[v] takes a table at version v-1 to version v. Each entry is a list of
# SQL statements valid on both SQLite and PostgreSQL. Version 1 is the table created above.
MIGRATIONS: dict[int, list[str]] = {}


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


def redact(url: str) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _finite(value):
    """inf/nan -> None, recursively: neither JSON nor every database column can hold them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _row(rec: Result) -> dict:
    return _finite(rec.to_dict())


class Store:
    """One results table. `Store(url)` opens (and creates or migrates) it."""

    def __init__(self, url: str | None = None, *, create: bool = True):
        self.url = resolve_url(url)
        self.display_url = redact(self.url)
        if self.url.startswith("sqlite:///") and create:
            path = Path(self.url[len("sqlite:///"):])
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"cannot create the database folder {path.parent}: "
                                 f"{e.strerror or e}") from None
            if path.exists() and not os.access(path, os.W_OK):
                raise StoreError(f"database {path} is not writable")
            if not os.access(path.parent, os.W_OK):
                raise StoreError(f"database folder {path.parent} is not writable")
        connect_args = {"connect_timeout": 10} if self.url.startswith("postgresql") else {}
        self.engine = sa.create_engine(self.url, connect_args=connect_args)
        try:
            self._open(create)
        except StoreError:
            self.engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as e:
            self.engine.dispose()
            reason = str(getattr(e, "orig", e)).strip().splitlines()[0] if str(e) else type(e)
            raise StoreError(f"cannot open database {self.display_url}: {reason}") from None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _open(self, create: bool) -> None:
        with self.engine.begin() as conn:
            if create:
                metadata.create_all(conn, checkfirst=True)
            version = conn.execute(sa.select(meta_table.c.value).where(
                meta_table.c.key == "schema_version")).scalar()
            if version is None:
                self._insert_ignore(conn, meta_table, [{"key": "schema_version",
                                                        "value": str(SCHEMA_VERSION)}], "key")
                return
            version = int(version)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"database {self.display_url} has schema version {version}, newer than this "
                    f"colossus-bench understands ({SCHEMA_VERSION}): upgrade colossus-bench")
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS[v]:
                    conn.execute(sa.text(stmt))
                conn.execute(meta_table.update().where(meta_table.c.key == "schema_version")
                             .values(value=str(v)))

    def schema_version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(meta_table.c.value).where(
                meta_table.c.key == "schema_version")).scalar_one())

    def _insert_ignore(self, conn, table: sa.Table, rows: list[dict], key: str) -> list:
        """INSERT ... ON CONFLICT DO NOTHING; returns the keys actually inserted."""
        if not rows:
            return []
        mod = postgresql if self.dialect == "postgresql" else sqlite
        stmt = mod.insert(table).on_conflict_do_nothing(index_elements=[key])
        stmt = stmt.returning(table.c[key])
        return [r[0] for r in conn.execute(stmt, rows)]

    def insert(self, records: Iterable[Result], *, conn=None) -> int:
        """Insert records (one transaction); already-present ids are skipped. Returns new rows."""
        rows = [_row(r) for r in records]
        if conn is not None:
            return len(self._insert_ignore(conn, results_table, rows, "id"))
        with self.engine.begin() as c:
            return len(self._insert_ignore(c, results_table, rows, "id"))

    def count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(results_table)).scalar()

    def ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(results_table.c.id)).scalars())

    def records(self, where=None) -> list[Result]:
        stmt = sa.select(results_table).order_by(results_table.c.created_at, results_table.c.id)
        if where is not None:
            stmt = stmt.where(where)
        with self.engine.connect() as conn:
            return [Result(**dict(r._mapping)) for r in conn.execute(stmt)]

    def frame(self, where=None):
        """All rows (or those matching a SQLAlchemy condition) as a pandas DataFrame.

        JSON columns come back as Python dicts/lists, so `df.params.str["m"]` and the like work.
        """
        import pandas as pd

        rows = [r.to_dict() for r in self.records(where)]
        return pd.DataFrame(rows, columns=COLUMNS) if not rows else pd.DataFrame(rows)[COLUMNS]

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
