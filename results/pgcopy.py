"""Rows into PostgreSQL by COPY, the fast way in: the upload's last step (results/upload.py).

Rows are raw local rows (tuples in ROW_COLUMNS order, JSON and times as text, samples as packed
bytes) and are written as COPY text lines formatted here: psycopg's per-value `write_row`
costs about 40 us a row of ~30 columns in Python (measured: 0.76 s of a 4.2 s upload of 20,000
rows), the formatting below a fraction of that; the bytes go in as bytea hex.

A batch is COPYed straight into `results` inside a savepoint: the batch's ids were missing a
moment before, so this nearly always works; when another uploader inserted one of them in
between (a unique violation), the savepoint is rolled back and the batch goes through a
temporary table and INSERT ... SELECT ... ON CONFLICT DO NOTHING instead, in id order.
"""

from __future__ import annotations

import psycopg

from results.tables import ROW_COLUMNS

QUOTED = ", ".join(f'"{c}"' for c in ROW_COLUMNS)
_ID_AT = ROW_COLUMNS.index("id")
_SPECIAL = ("\\", "\t", "\n", "\r")


def _text(value) -> str:
    """One value in COPY's text format."""
    if value is None:
        return "\\N"
    kind = type(value)
    if kind is str:
        if any(c in value for c in _SPECIAL):
            value = (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                     .replace("\r", "\\r"))
        return value
    if kind is bytes or kind is memoryview:
        return "\\\\x" + bytes(value).hex()
    if kind is bool:
        return "t" if value else "f"
    return str(value)  # int, float: Python's repr round-trips and PostgreSQL reads it


def copy_lines(rows: list[tuple]) -> str:
    return "".join("\t".join(map(_text, row)) + "\n" for row in rows)


def copy_rows(conn, rows: list[tuple]) -> int:
    """Insert the rows (see the module docstring) in the open transaction of `conn` (a
    SQLAlchemy connection); returns how many were new."""
    rows = sorted(rows, key=lambda r: r[_ID_AT])  # the same lock order in every uploader
    data = copy_lines(rows)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("SET LOCAL TIME ZONE 'UTC'")  # a created_at without offset is UTC
        cursor.execute("SAVEPOINT colossus_copy")
        try:
            with cursor.copy(f"COPY results ({QUOTED}) FROM STDIN") as copy:
                copy.write(data)
            cursor.execute("RELEASE SAVEPOINT colossus_copy")
            return len(rows)
        except psycopg.errors.UniqueViolation:
            cursor.execute("ROLLBACK TO SAVEPOINT colossus_copy")
        cursor.execute("CREATE TEMP TABLE colossus_upload (LIKE results INCLUDING DEFAULTS) "
                       "ON COMMIT DROP")
        with cursor.copy(f"COPY colossus_upload ({QUOTED}) FROM STDIN") as copy:
            copy.write(data)
        cursor.execute(f"INSERT INTO results ({QUOTED}) SELECT {QUOTED} FROM colossus_upload "
                       "ORDER BY id ON CONFLICT (id) DO NOTHING")
        return cursor.rowcount
    finally:
        cursor.close()
