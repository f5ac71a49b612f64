"""The tables behind the results store, derived from the record declaration in results/schema.py,
and the versioned migrations that bring an older table to this version.

Schema version 2 (this one):
- `results`: one row per record; every record field a column of its own, except those declared
  `storage="own_table"` (device, software), which keep a content key (`device_key`,
  `software_key`) into
- `devices` and `software`: each distinct value once, keyed by a hash of its canonical JSON.
  What repeats once per run no longer travels, or is parsed by the server, once per row.
- samples_s: packed little-endian float64 (8 bytes a sample; null samples as NaN) instead of
  JSON text: measured on a 2-core x86 VM (COPY of 20,000 rows with 100 samples into a
  PostgreSQL 15 table, fsync on): JSONB 8,700 rows/s, float8[] 14,100, bytea 20,500-37,000.
- created_at: timestamptz on PostgreSQL (ISO 8601 text on SQLite); read back as ISO 8601 UTC.
`records` is the join of the three with the record's field names: what readers select from.
"""

from __future__ import annotations

import hashlib
import math
import sys
from array import array
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from results.schema import (  # noqa: F401  (COLUMNS, JSON_COLUMNS: re-exported)
    COLUMNS,
    FIELD_ORDER,
    FIELDS,
    JSON_COLUMNS,
    ORDERED,
    Result,
    canonical_json,
    finite,
)


class PackedFloats(sa.types.TypeDecorator):
    """A list of floats as packed little-endian float64 (None <-> NaN, as the table keeps no
    NaN: `finite` made them None)."""

    impl = sa.LargeBinary
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else pack_floats(value)

    def process_result_value(self, value, dialect):
        return None if value is None else unpack_floats(value)


def pack_floats(values) -> bytes:
    a = array("d", (math.nan if v is None else v for v in values))
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


def unpack_floats(blob: bytes) -> list:
    a = array("d")
    a.frombytes(blob)
    if sys.byteorder == "big":
        a.byteswap()
    out = a.tolist()
    return [None if v != v else v for v in out] if any(v != v for v in out) else out


class UtcTime(sa.types.TypeDecorator):
    """created_at: ISO 8601 text in records; timestamptz on PostgreSQL, the text on SQLite.
    Read back from PostgreSQL as UTC with milliseconds (microseconds when it has them): the
    form `utc_now` writes. A time without an offset is taken as UTC."""

    impl = sa.String(40)
    cache_ok = True

    def load_dialect_impl(self, dialect):
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.String(40))

    def process_bind_param(self, value, dialect):
        if value is None or dialect.name != "postgresql":
            return value
        t = datetime.fromisoformat(value) if isinstance(value, str) else value
        return t if t.tzinfo else t.replace(tzinfo=timezone.utc)

    def process_result_value(self, value, dialect):
        return iso_utc(value) if isinstance(value, datetime) else value


def iso_utc(t: datetime) -> str:
    t = t.astimezone(timezone.utc) if t.tzinfo else t.replace(tzinfo=timezone.utc)
    return t.isoformat(timespec="milliseconds" if t.microsecond % 1000 == 0 else "microseconds")


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
KEY_LENGTH = 32  # hex digits of a content key


def content_key(value) -> str:
    """The key of a device or software value: equal values (any key order) give equal keys."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:KEY_LENGTH]


def _type(spec):
    if spec.storage == "text":
        return sa.String(spec.max_length) if spec.max_length else sa.Text
    return {"integer": sa.Integer, "double": sa.Float, "boolean": sa.Boolean, "json": JSONType,
            "floats": PackedFloats, "timestamp": UtcTime}[spec.storage]


metadata = sa.MetaData()

# The value tables: one per `own_table` field, named after it (device -> devices).
OWN_TABLES = {spec.name: sa.Table(
    spec.table, metadata,
    sa.Column("key", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("value", JSONType, nullable=False),
) for spec in FIELDS if spec.storage == "own_table"}
devices_table, software_table = OWN_TABLES["device"], OWN_TABLES["software"]




def _columns():
    for spec in ORDERED:
        if spec.storage == "own_table":
            # No FOREIGN KEY: PostgreSQL checks one by a trigger per inserted row, a cost every
            # upload pays; the store and the upload write a value before any row naming it,
            # and `records` joins with LEFT JOIN, so a row is never hidden.
            yield sa.Column(f"{spec.name}_key", sa.String(KEY_LENGTH),
                            nullable=not spec.not_null)
        else:
            yield sa.Column(spec.name, _type(spec), primary_key=spec.primary_key,
                            nullable=not spec.not_null, index=spec.index or None)


result_rows = sa.Table("results", metadata, *_columns())
ROW_COLUMNS = [c.name for c in result_rows.columns]  # the physical columns, in order
KEYED = {name: f"{name}_key" for name in OWN_TABLES}  # field -> its key column


def _records():
    cols, joined = [], result_rows
    for spec in ORDERED:
        if spec.name in OWN_TABLES:
            t = OWN_TABLES[spec.name]
            joined = joined.outerjoin(t, t.c.key == result_rows.c[KEYED[spec.name]])
            cols.append(t.c.value.label(spec.name))
        else:
            cols.append(result_rows.c[spec.name])
    return sa.select(*cols).select_from(joined).subquery("records")


records = _records()  # every record field by name; select from it to read records

meta_table = sa.Table(
    "colossus_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)



def table_rows(rows: list[dict]) -> tuple[list[dict], dict[str, dict[str, dict]]]:
    """Record dicts (finite values) -> (results rows, {field: {key: value row}})."""
    own: dict[str, dict[str, dict]] = {name: {} for name in OWN_TABLES}
    out = []
    for row in rows:
        r = {c: row.get(c) for c in FIELD_ORDER if c not in OWN_TABLES}
        for name, seen in own.items():
            value = row.get(name)
            if value is None:
                r[KEYED[name]] = None
                continue
            key = content_key(value)
            r[KEYED[name]] = key
            if key not in seen:
                seen[key] = {"key": key, "value": value}
        out.append(r)
    return out, own


def record_row(rec: Result) -> dict:
    # Not rec.to_dict(): dataclasses.asdict deep-copies every sample list, and `finite` copies
    # the nested values anyway (this is the hot path of inserts and ingests).
    return {c: finite(getattr(rec, c)) for c in FIELD_ORDER}


# --- migrations --------------------------------------------------------------------------------
# MIGRATIONS[v] takes a table at version v-1 to version v: a list of SQL statements valid on
# both SQLite and PostgreSQL, or a function(conn) for what SQL alone cannot do portably. The
# store runs them under its schema lock, in one transaction with the version bump (both
# databases have transactional DDL), so a failed migration leaves the table as it was.

# The version 1 `results` table exactly as colossus-bench 1 created it (results/store.py from
# 57b5287 to 4e32d7e^), as plain data: never derived from today's declaration, which has fields
# version 1 never had. (name, type, width, NOT NULL); id is the primary key, run_id and
# workload are indexed.
V1_COLUMNS: tuple[tuple[str, str, int | None, bool], ...] = (
    ("id", "varchar", 64, True),
    ("run_id", "varchar", 64, True),
    ("created_at", "varchar", 40, True),
    ("schema_version", "integer", None, True),
    ("workload", "varchar", 64, True),
    ("backend", "varchar", 64, True),
    ("dtype", "varchar", 32, True),
    ("params", "json", None, True),
    ("host", "varchar", 255, True),
    ("device", "json", None, True),
    ("world_size", "integer", None, False),
    ("rank", "integer", None, False),
    ("software", "json", None, False),
    ("median_s", "float", None, False),
    ("p20_s", "float", None, False),
    ("p80_s", "float", None, False),
    ("mean_s", "float", None, False),
    ("stdev_s", "float", None, False),
    ("n", "integer", None, False),
    ("samples_s", "json", None, False),
    ("tflops", "float", None, False),
    ("gbps", "float", None, False),
    ("algbw_gbps", "float", None, False),
    ("busbw_gbps", "float", None, False),
    ("peak_fraction", "float", None, False),
    ("correct", "boolean", None, False),
    ("max_rel_error", "float", None, False),
    ("tolerance", "float", None, False),
    ("telemetry", "json", None, False),
    ("status", "varchar", 16, True),
    ("error", "text", None, False),
)
# The short-lived additive schema 2 (4e32d7e, replaced by this one in f37c1d3): version 1's one
# table with these four nullable columns added by ALTER TABLE, and "2" in colossus_meta.
ADDITIVE_V2_COLUMNS: tuple[tuple[str, str, int | None, bool], ...] = (
    ("compile_s", "float", None, False),
    ("flops", "float", None, False),
    ("bytes", "float", None, False),
    ("shape", "varchar", 128, False),
)
ADDITIVE_V2 = 2  # the version that schema wrote
V1_TYPES = {"varchar": sa.String, "integer": sa.Integer, "float": sa.Float,
            "boolean": sa.Boolean, "json": JSONType, "text": sa.Text}
V1_INDEXED = ("run_id", "workload")


def v1_table(name: str = "results", *, additive: bool = False) -> sa.Table:
    """The version 1 table, as colossus-bench 1 created it; additive=True: as 4e32d7e's
    additive schema 2 left it (for the migration and its tests)."""
    cols = []
    for col, kind, width, not_null in V1_COLUMNS + (ADDITIVE_V2_COLUMNS if additive else ()):
        typ = V1_TYPES[kind](width) if width else V1_TYPES[kind]
        cols.append(sa.Column(col, typ, primary_key=col == "id", nullable=not not_null,
                              index=col in V1_INDEXED or None))
    return sa.Table(name, sa.MetaData(), *cols)


def layout_version(version: int, tables) -> int:
    """The version a table's layout has, given the version its colossus_meta row names and the
    database's table names. The additive schema 2 wrote "2" but kept version 1's one table (no
    `devices` table, which this version creates with `results`): it is migrated as version 1,
    `to_v2` copying whatever columns it finds."""
    if version == ADDITIVE_V2 and devices_table.name not in tables:
        return BASE_VERSION
    return version


MIGRATION_CHUNK = 2000  # rows read and written at a time by the v1 -> v2 migration


def to_v2(conn) -> None:
    """v1 -> v2: the old table is renamed aside, the new tables are created, every row is copied
    through the same conversion as an insert (so keys and packing are the store's own), and the
    old table is dropped. Rows keep their record values exactly (exports are unchanged). Only the
    columns the old table has are read (version 1's, and the additive schema 2's four when
    there): a field it lacks is null."""
    pg = conn.dialect.name == "postgresql"
    present = {c["name"] for c in sa.inspect(conn).get_columns("results")}
    unknown = present - {c[0] for c in V1_COLUMNS + ADDITIVE_V2_COLUMNS}
    if unknown:  # the copy would drop them with the old table: refuse instead
        raise ValueError(f"the old table has columns this version does not know "
                         f"({', '.join(sorted(unknown))}); nothing is dropped")
    conn.execute(sa.text("ALTER TABLE results RENAME TO results_v1"))
    for index in ("ix_results_run_id", "ix_results_workload"):  # names are per schema
        conn.execute(sa.text(f"DROP INDEX IF EXISTS {index}"))
    if pg:
        conn.execute(sa.text("ALTER INDEX results_pkey RENAME TO results_v1_pkey"))
    metadata.create_all(conn)
    old = v1_table("results_v1", additive=True)
    read = [c for c in old.columns if c.name in present]
    last = ""
    while True:
        chunk = [dict(r._mapping) for r in conn.execute(
            sa.select(*read).where(old.c.id > last).order_by(old.c.id).limit(MIGRATION_CHUNK))]
        if not chunk:
            break
        last = chunk[-1]["id"]
        insert_table_rows(conn, [finite(r) for r in chunk])
    conn.execute(sa.text("DROP TABLE results_v1"))


def insert_ignore(conn, table: sa.Table, rows: list[dict], key: str) -> list:
    """INSERT ... ON CONFLICT DO NOTHING; returns the keys actually inserted."""
    if not rows:
        return []
    # Sorted by key, so concurrent transactions lock the same keys in the same order and
    # never deadlock on each other's uncommitted rows (PostgreSQL).
    rows = sorted(rows, key=lambda r: r[key])
    mod = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = mod.insert(table).on_conflict_do_nothing(index_elements=[key])
    stmt = stmt.returning(table.c[key])
    return [r[0] for r in conn.execute(stmt, rows)]


def insert_table_rows(conn, rows: list[dict]) -> int:
    """Insert record dicts (finite values) into the tables; returns the new results rows."""
    out, own = table_rows(rows)
    for name, values in own.items():
        insert_ignore(conn, OWN_TABLES[name], list(values.values()), "key")
    return len(insert_ignore(conn, result_rows, out, "id"))


MIGRATIONS: dict[int, list[str] | object] = {2: to_v2}
BASE_VERSION = 1
