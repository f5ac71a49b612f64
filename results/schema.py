"""The result record: one row per (run, case, backend, rank) of the shared table.

Field names are a contract (ARCHITECTURE.md): reports and anyone reading the table rely on them.
Add fields freely (in the `Result` declaration below: the table and the checks follow from it);
rename or remove one only with a SCHEMA_VERSION bump and a migration in `results/tables.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

# 2: device and software in tables of their own, samples packed, created_at a timestamp; the
# nullable fields compile_s, flops, bytes and shape
SCHEMA_VERSION = 2

STATUSES = ("ok", "failed", "skipped")

# The workloads this colossus-bench writes (bench/workloads/*.py's registered names, and the
# collectives' family, bench/collectives/worker.py WORKLOAD), as data: results/ cannot import
# bench/; tests/test_record_fields.py checks the two agree. `ingest` refuses any other name.
KNOWN_WORKLOADS = ("gemm", "attention", "decode_attention", "membw", "hostdevice", "allreduce")


class RecordError(ValueError):
    """A row that is not a valid result record (missing field, wrong type, bad value)."""


def finite(value: Any) -> Any:
    """inf/nan -> None, recursively: neither JSON nor every database column can hold them, so
    the table stores them as null, and ids must hash what the table stores."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # sample lists: plain floats take the short path
        return [v if type(v) is float and math.isfinite(v) else finite(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal text (ids hash this)."""
    return json.dumps(finite(value), sort_keys=True, separators=(",", ":"), default=str)


def result_id(run_id: str, workload: str, backend: str, dtype: str, params: dict,
              rank: int) -> str:
    """Deterministic id: the same run and case give the same id, so uploads are idempotent."""
    key = canonical_json([run_id, workload, backend, dtype, params, rank])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# The one declaration of the record. Each field's type is what a record holds; `column(...)`
# adds what the table needs beyond it. results/tables.py derives the tables, their columns and
# types from these fields, and `Result.from_dict` derives its checks, so a field is declared
# here and nowhere else. Storage (derived from the type unless given):
#   str -> text (max_length: the column's width), int -> integer (int_range: its bounds),
#   float -> double, bool -> boolean, dict -> JSON, list[float] -> packed float64 ("floats"),
#   "timestamp" -> timestamptz on PostgreSQL (ISO 8601 text elsewhere),
#   "own_table" -> a table of its own holding each distinct value once (what repeats once per
#   run: the device and the software), the results row keeps a content key.
INT32 = (-2**31, 2**31 - 1)  # PostgreSQL `integer`


def column(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           max_length: int | None = None, int_range: tuple[int, int] | None = None,
           storage: str | None = None, table: str | None = None, not_null: bool = False,
           index: bool = False, primary_key: bool = False) -> Any:
    """A record field with the table's metadata (see above). Fields without a default are
    required and NOT NULL; `not_null` makes a field with a default NOT NULL too."""
    meta = {"max_length": max_length, "int_range": int_range, "storage": storage, "table": table,
            "not_null": not_null or primary_key, "index": index, "primary_key": primary_key}
    return field(default=default, default_factory=default_factory, metadata=meta)


@dataclass
class Result:
    """One measured (or failed, or skipped) case. See ARCHITECTURE.md for each field."""

    # what ran
    run_id: str = column(max_length=64, index=True)
    workload: str = column(max_length=64, index=True)
    backend: str = column(max_length=64)
    dtype: str = column(max_length=32)
    params: dict[str, Any] = column()
    # where
    host: str = column(max_length=255)
    device: dict[str, Any] = column(storage="own_table", table="devices")
    world_size: int = column(1, int_range=INT32)
    rank: int = column(0, int_range=INT32)
    software: dict[str, Any] = column(default_factory=dict, storage="own_table",
                                      table="software")
    # timing (seconds)
    median_s: float | None = None
    p20_s: float | None = None
    p80_s: float | None = None
    mean_s: float | None = None
    stdev_s: float | None = None
    n: int | None = column(None, int_range=INT32)
    samples_s: list[float] = column(default_factory=list)
    compile_s: float | None = None  # first call's JIT compile + autotune (bench/runner.py)
    # derived
    tflops: float | None = None
    gbps: float | None = None
    algbw_gbps: float | None = None
    busbw_gbps: float | None = None
    peak_fraction: float | None = None  # of the device's datasheet peak (TFLOP/s or HBM TB/s)
    # the case's counts and a short label, so readers never rebuild a case (bench/runner.py)
    flops: float | None = None
    bytes: float | None = None
    shape: str | None = column(None, max_length=128)
    # correctness
    correct: bool | None = None
    max_rel_error: float | None = None
    tolerance: float | None = None
    # telemetry (see bench/telemetry.py for the keys)
    telemetry: dict[str, Any] = column(default_factory=lambda: {"source": "none"})
    # outcome
    status: str = column("ok", max_length=16, not_null=True)
    error: str | None = None
    # identity
    id: str = column("", max_length=64, primary_key=True)
    created_at: str = column(default_factory=utc_now, max_length=40, storage="timestamp",
                             not_null=True)
    schema_version: int = column(SCHEMA_VERSION, int_range=INT32, not_null=True)

    def __post_init__(self) -> None:
        if not self.id:
            self.id = result_id(self.run_id, self.workload, self.backend, self.dtype,
                                self.params, self.rank)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, row: dict[str, Any], *, where: str = "row") -> Result:
        """Validate and build a record; errors name `where` (file and line, say) and the field."""
        if not isinstance(row, dict):
            raise RecordError(f"{where}: expected an object, got {type(row).__name__}")
        version = row.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise RecordError(f"{where}: schema_version {version!r} is newer than this "
                              f"colossus-bench ({SCHEMA_VERSION}); upgrade colossus-bench")
        unknown = set(row) - FIELD_NAMES
        if unknown:
            raise RecordError(f"{where}: unknown field(s) {sorted(unknown)}")
        missing = [f for f in REQUIRED if row.get(f) in (None, "")]
        if missing:
            raise RecordError(f"{where}: missing field(s) {missing}")
        for name, value in row.items():
            problem = field_problem(name, value)
            if problem:
                raise RecordError(f"{where}: field {name!r} {problem}")
        if row.get("status", "ok") not in STATUSES:
            raise RecordError(f"{where}: status {row['status']!r} not one of {STATUSES}")
        rec = cls(**{k: v for k, v in row.items() if k in FIELD_NAMES})
        expected = result_id(rec.run_id, rec.workload, rec.backend, rec.dtype, rec.params,
                             rec.rank)
        if row.get("id") and row["id"] != expected:
            raise RecordError(f"{where}: id {row['id']!r} does not match its run and case")
        if rec.status == "ok" and rec.correct is False:
            raise RecordError(f"{where}: status 'ok' with correct=false")
        return rec


@dataclass(frozen=True)
class FieldSpec:
    """One field of the declaration, as the table and the checks see it."""

    name: str
    types: tuple[type, ...]  # what isinstance accepts (None is always accepted)
    item_types: tuple[type, ...] | None  # for lists: what each item may be (or None)
    storage: str  # text, integer, double, boolean, json, floats, timestamp, own_table
    required: bool  # no default: a record must give it
    not_null: bool
    max_length: int | None
    int_range: tuple[int, int] | None
    index: bool
    primary_key: bool
    table: str | None  # own_table fields: the table's name


_NUM = (int, float)
_STORAGE = {str: ("text", (str,)), int: ("integer", (int,)), float: ("double", _NUM),
            bool: ("boolean", (bool,)), dict: ("json", (dict,)), list: ("floats", (list,))}


def _spec(f: dataclasses.Field, hint: Any) -> FieldSpec:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = args[0]
        args = list(typing.get_args(hint))
    base = typing.get_origin(hint) or hint
    storage, accepted = _STORAGE[base]
    meta = f.metadata
    required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    return FieldSpec(
        name=f.name, types=accepted, item_types=_NUM + (type(None),) if base is list else None,
        storage=meta.get("storage") or storage, required=required,
        not_null=required or bool(meta.get("not_null")), max_length=meta.get("max_length"),
        int_range=meta.get("int_range"), index=bool(meta.get("index")),
        primary_key=bool(meta.get("primary_key")), table=meta.get("table"))


_HINTS = typing.get_type_hints(Result)
FIELDS: tuple[FieldSpec, ...] = tuple(_spec(f, _HINTS[f.name]) for f in dataclasses.fields(Result))
SPECS = {f.name: f for f in FIELDS}
FIELD_NAMES = set(SPECS)
REQUIRED = tuple(f.name for f in FIELDS if f.required)
MAX_LENGTHS = {f.name: f.max_length for f in FIELDS if f.max_length}
# Column order (of the table, frames and exports, as since version 1): the identity fields
# first, then the others in declaration order.
IDENTITY = ("id", "run_id", "created_at", "schema_version")
ORDERED = sorted(FIELDS, key=lambda f: IDENTITY.index(f.name) if f.name in IDENTITY else 99)
FIELD_ORDER = [spec.name for spec in ORDERED]
COLUMNS = FIELD_ORDER  # the record's fields in column order (frames, exports)
# fields stored as JSON, in tables of their own, or packed: read back as Python values
JSON_COLUMNS = [s.name for s in FIELDS if s.storage in ("json", "own_table", "floats")]
INT_RANGES = {f.name: f.int_range for f in FIELDS if f.int_range}


def has_nul(value: Any) -> bool:
    """Whether a string, or any string in a nested value, holds a NUL character: PostgreSQL's
    text and JSONB cannot store one (SQLite can), so such a row would never upload."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(has_nul(v) for v in value if not isinstance(v, float))
    return False


def field_problem(name: str, value: Any) -> str | None:
    """Why `value` cannot be field `name` of a record (its type, the table's width, integer
    range, a timestamp that is not ISO 8601); None when it can. Every check comes from the
    declaration above. (A NUL character is the shared table's limit, not the record's: SQLite
    keeps it; the upload checks for it with `has_nul`.)"""
    spec = SPECS.get(name)
    if spec is None or value is None:
        return None
    if not isinstance(value, spec.types):
        return f"has type {type(value).__name__}"
    if spec.item_types and any(not isinstance(v, spec.item_types) or isinstance(v, bool)
                               for v in value):
        return "holds an item that is not a number"
    if spec.max_length and len(value) > spec.max_length:
        return f"is {len(value)} characters, longer than the table's {spec.max_length}"
    if spec.int_range and not spec.int_range[0] <= value <= spec.int_range[1]:
        return f"is {value}, outside the table's integer range"
    if spec.storage == "timestamp":
        try:
            datetime.fromisoformat(value)
        except ValueError:
            return f"is {value!r}, not an ISO 8601 time"
    return None


NUL_PROBLEM = "holds a NUL character, which PostgreSQL cannot store"
