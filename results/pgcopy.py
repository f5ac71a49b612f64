"""Rows into PostgreSQL by COPY, the fast way in: the upload's last step (results/upload.py).

Rows are raw local rows (tuples in ROW_COLUMNS order, JSON and times as text, samples as packed
bytes) and are written as COPY text lines formatted here, one converter per column: psycopg's
per-value `write_row` took 0.76 s of a 4.2 s upload of 20,000 rows (cProfile, development VM),
the formatting here about half of that; the samples go in as bytea hex.

Rows are formatted and sent in chunks of CHUNK, so the server parses while the client formats.
A batch is COPYed straight into `results` inside a savepoint: the batch's ids were missing a
moment before, so this nearly always works; when another uploader inserted one of them in
between (a unique violation), the savepoint is rolled back and the batch goes through a
temporary table and INSERT ... SELECT ... ON CONFLICT DO NOTHING instead, in id order.
"""

from __future__ import annotations

import psycopg
import sqlalchemy as sa

from results.tables import ROW_COLUMNS, result_rows

QUOTED = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
_ID_AT = ROW_COLUMNS.index("id")


def _str(v: str) -> str:
    if "\\" in v or "\t" in v or "\n" in v or "\r" in v:
        return (v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                .replace("\r", "\\r"))
    return v


def _bytes(v) -> str:
    return "\\\\x" + bytes(v).hex()


def _bool(v) -> str:
    return "t" if v else "f"


def _converter(column):
    """How one column's values are written in COPY's text format (None is \\N)."""
    if isinstance(column.type, sa.LargeBinary) or column.name == "samples_s":
        return _bytes
    if isinstance(column.type, sa.Boolean):
        return _bool
    if isinstance(column.type, (sa.Integer, sa.Float)):
        return str  # Python's repr of a float round-trips, and PostgreSQL reads it
    return _str  # text, and JSON and times as their text


_CONVERT = [_converter(c) for c in result_rows.columns]


def copy_lines(rows: list[tuple]) -> str:
    """The rows in COPY's text format."""
    return "".join("\t".join(["\\N" if v is None else f(v) for f, v in zip(_CONVERT, row)])
                   + "\n" for row in rows)


# Rows formatted and sent at a time: the server parses one chunk while the client formats the
# next, so client and server work at once (on two cores) instead of taking turns.
CHUNK = 250


def _write(copy, rows: list[tuple]) -> None:
    for i in range(0, len(rows), CHUNK):
        copy.write(copy_lines(rows[i:i + CHUNK]))


def copy_rows(conn, rows: list[tuple]) -> int:
    """Insert the rows (see the module docstring) in the open transaction of `conn` (a
    SQLAlchemy connection); returns how many were new."""
    rows = sorted(rows, key=lambda r: r[_ID_AT])  # the same lock order in every uploader
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("SET LOCAL TIME ZONE 'UTC'")  # a created_at without offset is UTC
        cursor.execute("SAVEPOINT colossus_copy")
        try:
            with cursor.copy(f"COPY results ({QUOTED}) FROM STDIN") as copy:
                _write(copy, rows)
            cursor.execute("RELEASE SAVEPOINT colossus_copy")
            return len(rows)
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT colossus_copy")
        cursor.execute("CREATE TEMP TABLE colossus_upload (LIKE results INCLUDING DEFAULTS) "
                       "ON COMMIT DROP")
        with cursor.copy(f"COPY colossus_upload ({QUOTED}) FROM STDIN") as copy:
            _write(copy, rows)
        cursor.execute(f"INSERT INTO results ({QUOTED}) SELECT {QUOTED} FROM colossus_upload "
                       "ORDER BY id ON CONFLICT (id) DO NOTHING")
        return cursor.rowcount
    finally:
        cursor.close()
