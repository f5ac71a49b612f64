"""The result record: one row per (run, case, backend, rank) of the shared table.

Field names are a contract (ARCHITECTURE.md): reports and anyone reading the table rely on them.
Add fields freely; rename or remove one only with a SCHEMA_VERSION bump and a migration in
`results/store.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

SCHEMA_VERSION = 2  # 2: compile_s, flops, bytes, shape (nullable; see MIGRATIONS)

STATUSES = ("ok", "failed", "skipped")


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


@dataclass
class Result:
    """One measured (or failed, or skipped) case. See ARCHITECTURE.md for each field."""

    # what ran
    run_id: str
    workload: str
    backend: str
    dtype: str
    params: dict[str, Any]
    # where
    host: str
    device: dict[str, Any]
    world_size: int = 1
    rank: int = 0
    software: dict[str, Any] = field(default_factory=dict)
    # timing (seconds)
    median_s: float | None = None
    p20_s: float | None = None
    p80_s: float | None = None
    mean_s: float | None = None
    stdev_s: float | None = None
    n: int | None = None
    samples_s: list[float] = field(default_factory=list)
    compile_s: float | None = None  # first call's JIT compile + autotune (bench/runner.py)
    # derived
    tflops: float | None = None
    gbps: float | None = None
    algbw_gbps: float | None = None
    busbw_gbps: float | None = None
    peak_fraction: float | None = None  # of the device's datasheet peak (TFLOP/s or HBM TB/s)
    # the case's own formulas, so the table alone explains every row
    flops: float | None = None  # useful floating-point operations of one call
    bytes: float | None = None  # compulsory bytes read plus written by one call
    shape: str | None = None  # short shape label, e.g. "8192x8192x8192 nt"
    # correctness
    correct: bool | None = None
    max_rel_error: float | None = None
    tolerance: float | None = None
    # telemetry (see bench/telemetry.py for the keys)
    telemetry: dict[str, Any] = field(default_factory=lambda: {"source": "none"})
    # outcome
    status: str = "ok"
    error: str | None = None
    # identity
    id: str = ""
    created_at: str = field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION

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
        for name, types in _TYPES.items():
            value = row.get(name)
            if value is not None and not isinstance(value, types):
                raise RecordError(f"{where}: field {name!r} has type {type(value).__name__}")
        for name, limit in MAX_LENGTHS.items():
            value = row.get(name)
            if isinstance(value, str) and len(value) > limit:
                raise RecordError(f"{where}: field {name!r} is {len(value)} characters, "
                                  f"longer than the table's {limit}")
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


FIELD_NAMES = {f.name for f in dataclasses.fields(Result)}
REQUIRED = ("run_id", "workload", "backend", "dtype", "params", "host", "device")
_NUM = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "workload": (str,), "backend": (str,), "dtype": (str,),
    "params": (dict,), "host": (str,), "device": (dict,), "software": (dict,),
    "world_size": (int,), "rank": (int,), "n": (int,), "samples_s": (list,),
    "median_s": _NUM, "p20_s": _NUM, "p80_s": _NUM, "mean_s": _NUM, "stdev_s": _NUM,
    "tflops": _NUM, "gbps": _NUM, "algbw_gbps": _NUM, "busbw_gbps": _NUM,
    "peak_fraction": _NUM, "compile_s": _NUM, "flops": _NUM, "bytes": _NUM,
    "shape": (str,), "correct": (bool,), "max_rel_error": _NUM, "tolerance": _NUM,
    "telemetry": (dict,), "status": (str,), "error": (str,), "id": (str,),
    "created_at": (str,),
}


# Column widths of the table (results/store.py); PostgreSQL enforces them, SQLite does not, so
# records are checked here before any database sees them.
MAX_LENGTHS = {"id": 64, "run_id": 64, "workload": 64, "backend": 64, "dtype": 32,
               "host": 255, "status": 16, "created_at": 40, "shape": 128}
