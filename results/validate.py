"""The door: the value checks every result record passes before any table stores it.

`problems(record)` lists what is wrong with a record (a dict as read from a file, or a Result);
`check(record)` raises a `FieldError` naming the first bad field and its value. `Store.insert`,
`ingest` and `upload` all call them, so a table never holds a negative time, a throughput above
the device's datasheet peak, a date that is not one, a bool where a number belongs, a NUL byte
(PostgreSQL text refuses it) or an integer its column cannot hold.

The rules, one per kind of field:
- times (median_s, p20_s, p80_s, mean_s, samples_s): finite and > 0; stdev_s finite and >= 0;
- counts: n >= 1, world_size >= 1, 0 <= rank < world_size, each within its column's range;
- throughputs: finite, >= 0; for ok rows at most `PEAK_SLACK` x the device's datasheet peak where
  results/peaks.py knows it (TFLOP/s for gemm and attention, HBM for membw), else at most the
  `ABSURD_*` ceilings (and `flags` says there was nothing to check against);
- n equals len(samples_s) when samples are given, and an ok row with n has its samples;
- an ok row agrees with itself: a throughput comes with the median_s it was computed from, the
  time summary (median, p20, p80, mean) lies within its own samples, and tflops / gbps are
  flops / bytes over the median (bench.runner.tflops, gbps) to `AGREE_REL`;
- created_at: ISO 8601 with a zone; correct: a bool; text: no NUL, no control characters and no
  format characters (Unicode category Cf: the bidi overrides, zero-width marks) but in `error`;
  nested fields: JSON values of the right shape (see `NESTED`).

`strict=True` (what `ingest` checks in the files it reads) adds the contract's names, which rows
of older versions or a planted test workload may not meet: a run id of one token (`RUN_ID`) and
a workload this colossus-bench knows (schema.KNOWN_WORKLOADS). Tables keep and read whatever
they hold.
"""

from __future__ import annotations

import math
import re
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any

from results.peaks import PEAKS, model_of
from results.schema import (
    FIELD_NAMES,
    FIELDS,
    INT_RANGES,
    KNOWN_WORKLOADS,
    MAX_LENGTHS,
    REQUIRED,
    SCHEMA_VERSION,
    STATUSES,
    RecordError,
)

# The integer columns of the table (results/store.py declares them sa.Integer, PostgreSQL
# `integer`: 32-bit signed); nested JSON integers must fit a signed 64-bit (bigint) so that
# pandas, Arrow and PostgreSQL's casts read them. tests/test_validate.py checks these against
# the table's declaration.
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
INT_COLUMNS: dict[str, tuple[int, int]] = dict(INT_RANGES)  # from the record's declaration
_TYPES: dict[str, tuple[type, ...]] = {f.name: f.types for f in FIELDS}

TIMES = ("median_s", "p20_s", "p80_s", "mean_s")
THROUGHPUTS = ("tflops", "gbps", "algbw_gbps", "busbw_gbps")
# A measured throughput may beat the datasheet by rounding and clocks above the datasheet's,
# not more: 5% (an assumption, not a measurement).
PEAK_SLACK = 1.05
# Where no peak is known (CPUs, GPUs missing from results/peaks.py): 100 PFLOP/s and 100 TB/s
# per device, 50x the highest TFLOP/s and 20x the highest HBM TB/s in the peak table; above
# them a figure is a unit or arithmetic slip, whatever the device.
ABSURD_TFLOPS = 1e5
ABSURD_GBPS = 1e5
# dense matmul FLOP counts: the tensor peak applies
TFLOPS_WORKLOADS = ("gemm", "attention", "decode_attention")
HBM_WORKLOADS = ("membw",)  # device-memory traffic: the HBM peak applies

# Nested fields: key -> allowed types of its value (None always allowed). Unknown keys may
# hold any JSON value (checked for NUL, finite-or-null numbers and integer range only).
_NUMBER = (int, float)
NESTED: dict[str, dict[str, tuple[type, ...]]] = {
    "device": {"name": (str,), "model": (str,), "uuid": (str,), "kind": (str,), "cc": (str,),
               "sm_count": (int,), "memory_bytes": (int,), "index": (int,), "driver": (str,),
               "cuda": (str,)},
    "telemetry": {"source": (str,), "throttle_reasons": (list,), "samples": (int,),
                  "power_w_mean": _NUMBER, "power_w_max": _NUMBER, "energy_j": _NUMBER,
                  "sm_clock_mhz_mean": _NUMBER, "sm_clock_mhz_min": _NUMBER,
                  "mem_clock_mhz": _NUMBER, "temp_c_max": _NUMBER, "hbm_temp_c_max": _NUMBER,
                  "gpu_util_pct": _NUMBER, "mem_util_pct": _NUMBER,
                  "dram_bw_util_pct": _NUMBER, "tensor_util_pct": _NUMBER,
                  "duration_s": _NUMBER, "region": (str,), "reason": (str,),
                  "unsupported": (dict,)},
    "params": {}, "software": {},
}
MAX_DEPTH = 8  # nesting of the JSON fields; ours are two deep
# A created_at later than now by more than this is a wrong clock or a made-up date: such a row
# would stay "the latest run" of its device for ever (fleet). One day covers any time zone slip.
FUTURE_SLACK = timedelta(days=1)
# A run's id: bench writes 16 hex digits (bench.runner.new_run_id, the collectives' run), but
# $COLOSSUS_BENCH_RUN_ID names a pytest-benchmark run and tables written before hold names
# ("r2", "run-cpu"), so the door asks for a name of one token: letters, digits, . _ : -, from a
# letter or digit, no spaces, slashes, quotes or other punctuation.
RUN_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._:-]{0,63}")


ABSENT = object()  # the value of a problem that is about the field itself (missing, unknown)


def _line(field: str, value: Any, reason: str) -> str:
    return reason if value is ABSENT else f"field {field!r} = {show(value)}: {reason}"


class FieldError(RecordError):
    """One bad field of a record: `.field`, `.value` and `.reason`; the message names all three
    (and `where`, a file and line, when given)."""

    def __init__(self, field: str, value: Any, reason: str, where: str = ""):
        self.field, self.value, self.reason = field, value, reason
        prefix = f"{where}: " if where else ""
        super().__init__(prefix + _line(field, value, reason))


def show(value: Any, limit: int = 60) -> str:
    """A value for a one-line message: repr (NUL and control bytes escaped), cut short."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time with a zone as an aware datetime, else None ("Z" taken as UTC). An
    aware datetime (a timestamptz column read back) is taken as it is."""
    if isinstance(value, datetime):
        return value if value.utcoffset() is not None else None
    if not isinstance(value, str) or not value or "\x00" in value:
        return None
    text = value[:-1] + "+00:00" if value[-1:] in "zZ" else value
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    return t if t.tzinfo is not None and t.utcoffset() is not None else None


def _peak(row: dict, what: str) -> float | None:
    """The datasheet peak that bounds `what` (tflops or gbps) for this row's device, if known."""
    device = row.get("device") if isinstance(row.get("device"), dict) else {}
    key = device.get("model") if isinstance(device.get("model"), str) else None
    if key not in PEAKS:
        name = device.get("name")
        key = model_of(name) if isinstance(name, str) else None
    peaks = PEAKS.get(key or "")
    if peaks is None:
        return None
    if what == "tflops" and row.get("workload") in TFLOPS_WORKLOADS \
            and isinstance(row.get("dtype"), str):
        return peaks.tflops(row["dtype"])
    if what == "gbps" and row.get("workload") in HBM_WORKLOADS and peaks.hbm_tbps:
        return peaks.hbm_tbps * 1e3
    return None


_SURROGATES = re.compile("[\ud800-\udfff]")


# Control characters (C0, DEL, C1): an ESC in a host name would drive the terminal of whoever
# runs `fleet`, a newline would forge a line of its table. Refused in the record's text fields
# but tab; nested values (software versions, device facts) may keep tab and line breaks.
CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
NESTED_ALLOWED = "\t\n\r"
# `error` is an exception's own text (multi-line, whatever a library printed): a run's record
# is never refused for it; output escapes it (results/cli.py `_t`).
FREE_TEXT = ("error",)


def text_problem(text: str, allowed: str | None = None) -> str | None:
    """Why a text cannot be stored: PostgreSQL text and JSONB refuse NUL, a lone surrogate
    (JSON's "\\ud800") is not Unicode, so no database driver can encode it, and a control
    character other than those `allowed` (None: any) is refused (see CONTROLS), and so is
    any format character (Unicode Cf: U+202E RIGHT-TO-LEFT OVERRIDE would show a host name
    backwards in `fleet`, a zero-width space makes two names look one) unless allowed is None."""
    if "\x00" in text:
        return "text holds a NUL byte"
    if _SURROGATES.search(text):
        return "text holds a lone surrogate (not valid Unicode)"
    bad = None if allowed is None else next(
        (c for c in CONTROLS.findall(text) if c not in allowed), None)
    if bad is not None:
        return f"text holds a control character ({bad!r})"
    fmt = None if allowed is None or text.isascii() else next(
        (c for c in text if unicodedata.category(c) == "Cf"), None)
    if fmt is not None:
        return f"text holds a format character (U+{ord(fmt):04X} {unicodedata.name(fmt, '')})"
    return None


def _json_problems(name: str, value: Any, depth: int = 0):
    """Problems of a nested JSON value: NUL in text or keys, bad numbers, too deep."""
    if depth > MAX_DEPTH:
        yield name, "...", f"nested more than {MAX_DEPTH} deep"
    elif isinstance(value, str):
        why = text_problem(value, NESTED_ALLOWED)
        if why:
            yield name, value, why
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int):
        if not INT64[0] <= value <= INT64[1]:
            yield name, value, "integer outside the signed 64-bit range"
    elif isinstance(value, float):
        pass  # inf/nan are stored as null (results.schema.finite)
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str) or text_problem(k, ""):
                yield name, k, "key is not text without NUL, control or format " \
                               "characters or lone surrogates"
            else:
                yield from _json_problems(f"{name}.{k}", v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from _json_problems(f"{name}[{i}]", v, depth + 1)
    else:
        yield name, value, f"{type(value).__name__} is not a JSON value"


def contract_problems(row: dict):
    """The contract's names (strict checks, see the module docstring): run id and workload."""
    run_id, workload = row.get("run_id"), row.get("workload")
    if isinstance(run_id, str) and run_id and not RUN_ID.fullmatch(run_id):
        yield "run_id", run_id, "not a run id (letters, digits, . _ : - from a letter or " \
                                "digit; `run` writes 16 hex digits)"
    if isinstance(workload, str) and workload and workload not in KNOWN_WORKLOADS:
        yield "workload", workload, f"not a known workload ({', '.join(KNOWN_WORKLOADS)})"


def field_problems(record: Any, strict: bool = False):
    """Yield (field, value, reason) for every problem of a record (dict or Result); `strict`
    adds `contract_problems`."""
    row = record if isinstance(record, dict) else vars(record)
    version = row.get("schema_version")
    if type(version) is int and version > SCHEMA_VERSION:
        yield "schema_version", version, f"newer than this colossus-bench ({SCHEMA_VERSION}): " \
                                         "upgrade colossus-bench"
        return
    unknown = sorted(str(k) for k in set(row) - FIELD_NAMES)
    if unknown:
        yield unknown[0], ABSENT, f"unknown field(s) {unknown}"
    missing = [name for name in REQUIRED if row.get(name) in (None, "")]
    if missing:
        yield missing[0], ABSENT, f"missing field(s) {missing}"
    for name, types in _TYPES.items():
        v = row.get(name)
        if v is None:
            continue
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            yield name, v, f"{type(v).__name__} where {'/'.join(t.__name__ for t in types)} " \
                           "belongs"
        elif isinstance(v, str) and text_problem(v, None if name in FREE_TEXT else "\t"):
            yield name, v, text_problem(v, None if name in FREE_TEXT else "\t")
        elif isinstance(v, str) and len(v) > MAX_LENGTHS.get(name, math.inf):
            yield name, ABSENT, f"field {name!r} is {len(v)} characters, longer than the " \
                                f"table's {MAX_LENGTHS[name]}"
    if row.get("status") not in (None, *STATUSES):
        yield "status", row.get("status"), f"not one of {', '.join(STATUSES)}"
    if row.get("status") == "ok" and row.get("correct") is False:
        yield "correct", False, "status 'ok' with a failed check"
    if "created_at" in row:
        t = parse_time(row["created_at"])
        if t is None:
            yield "created_at", row["created_at"], "not an ISO 8601 time with a zone"
        elif t > datetime.now(timezone.utc) + FUTURE_SLACK:
            yield "created_at", row["created_at"], "in the future"
    number = list(_number_problems(row))
    yield from number
    if not number:  # the figures agree only once each is a valid figure at all
        yield from _agreement_problems(row)
    if strict:
        yield from contract_problems(row)
    for name, known in NESTED.items():
        v = row.get(name)
        if not isinstance(v, dict):
            continue
        for key, types in known.items():
            x = v.get(key)
            if x is not None and (not isinstance(x, types)
                                  or (isinstance(x, bool) and bool not in types)):
                yield f"{name}.{key}", x, f"{type(x).__name__} where " \
                                          f"{'/'.join(t.__name__ for t in types)} belongs"
        if name == "params" and any(isinstance(k, str) and k != k.lower() for k in v):
            yield name, sorted(v), "keys must be lower case"
        yield from _json_problems(name, v)
    reasons = (row.get("telemetry") or {}).get("throttle_reasons") \
        if isinstance(row.get("telemetry"), dict) else None
    if isinstance(reasons, list) and not all(isinstance(r, str) for r in reasons):
        yield "telemetry.throttle_reasons", reasons, "not a list of names"


def _number_problems(row: dict):
    for name in TIMES:
        v = row.get(name)
        if _is_number(v) and not (math.isfinite(v) and v > 0):
            yield name, v, "a time must be a finite number of seconds > 0"
    v = row.get("stdev_s")
    if _is_number(v) and not (math.isfinite(v) and v >= 0):
        yield "stdev_s", v, "a spread must be a finite number >= 0"
    samples = row.get("samples_s")
    if isinstance(samples, (list, tuple)) and not (  # fast path: plain floats in (0, inf)
            all(type(x) is float for x in samples) and all(0 < x < math.inf for x in samples)):
        for i, x in enumerate(samples):
            if not _is_number(x) or not (math.isfinite(x) and x > 0):
                yield f"samples_s[{i}]", x, "a sample must be a finite number of seconds > 0"
                break
    for name, lo in (("n", 1), ("world_size", 1), ("rank", 0), ("schema_version", 1)):
        v = row.get(name)
        if _is_number(v) and isinstance(v, int):
            low, high = INT_COLUMNS[name]
            if not low <= v <= high:
                yield name, v, f"outside the column's integer range [{low}, {high}]"
            elif v < lo:
                yield name, v, f"must be >= {lo}"
    n = row.get("n")  # the samples' count (bench.timing.Timing.n), once it is a count at all
    if type(n) is int and 1 <= n <= INT_COLUMNS["n"][1] and isinstance(samples, (list, tuple)):
        if samples and n != len(samples):
            yield "n", n, f"does not match the {len(samples)} samples in samples_s"
        elif not samples and row.get("status", "ok") == "ok":
            yield "n", n, "counts samples, but samples_s is empty"
    ws, rank = row.get("world_size"), row.get("rank")
    if type(ws) is int and type(rank) is int and ws >= 1 and rank >= ws:
        yield "rank", rank, f"must be below world_size {ws}"
    for name in THROUGHPUTS:
        v = row.get(name)
        if not _is_number(v):
            continue
        if not (math.isfinite(v) and v >= 0):
            yield name, v, "a throughput must be a finite number >= 0"
            continue
        if row.get("status", "ok") != "ok":  # a failed or skipped case's figure is no result
            continue  # (a wrong kernel may well "run" faster than the device can)
        peak = _peak(row, "tflops" if name == "tflops" else "gbps" if name == "gbps" else "")
        ceiling = PEAK_SLACK * peak if peak else (ABSURD_TFLOPS if name == "tflops"
                                                  else ABSURD_GBPS)
        if v > ceiling:
            what = f"{PEAK_SLACK}x the device's datasheet peak {peak:g}" if peak else \
                f"the {ceiling:g} no device reaches"
            yield name, v, f"above {what}"
    for name in ("peak_fraction", "max_rel_error", "tolerance"):
        v = row.get(name)
        if _is_number(v) and v < 0:
            yield name, v, "must be >= 0"


# How far a stored throughput may differ from its work over its median: rounding of a figure
# written with three significant digits, not a second timing (an assumption).
AGREE_REL = 0.01


def _agreement_problems(row: dict):
    """An ok row's figures against each other (once each is valid on its own): an edited or
    broken row would otherwise price the model and head the report with a time its own samples
    deny."""
    median, samples = row.get("median_s"), row.get("samples_s")
    if row.get("status", "ok") != "ok":
        return
    if not _is_number(median):
        yield from ((n, row[n], "a throughput needs the median_s it was computed from")
                    for n in THROUGHPUTS if _is_number(row.get(n)))
        return
    lo, hi = (min(samples), max(samples)) if isinstance(samples, (list, tuple)) and samples \
        else (0.0, math.inf)
    for name in TIMES:
        v = row.get(name)
        if _is_number(v) and not lo * (1 - 1e-9) <= v <= hi * (1 + 1e-9):
            yield name, v, f"outside its own samples [{lo:.6g}, {hi:.6g}] s"
    for name, work, scale in (("tflops", "flops", 1e12), ("gbps", "bytes", 1e9)):
        v, w = row.get(name), row.get(work)
        if not (_is_number(v) and _is_number(w) and w > 0):
            continue
        expect = w / median / scale
        if abs(v - expect) > AGREE_REL * expect:
            yield name, v, f"is not {work} / median_s = {expect:.6g}"


def problems(record: Any) -> list[str]:
    """Every problem of a record, one readable line each (empty: the record may be stored)."""
    return [_line(f, v, why) for f, v, why in field_problems(record)]


def check(record: Any, where: str = "", *, strict: bool = False) -> None:
    """Raise FieldError for the first problem of a record; `where` prefixes the message;
    `strict` adds the contract's names (`contract_problems`)."""
    for f, v, why in field_problems(record, strict):
        raise FieldError(f, v, why, where)


NO_PEAK = "no datasheet peak known for this device to check it"


def unchecked(record: Any) -> list[str]:
    """The throughputs of a record that could not be checked against a peak (not errors: the
    row is stored, its figure is unchecked): the device has no known datasheet peak."""
    row = record if isinstance(record, dict) else vars(record)
    out = []
    for name, what in (("tflops", "tflops"), ("gbps", "gbps")):
        v = row.get(name)
        applies = row.get("workload") in (TFLOPS_WORKLOADS if what == "tflops"
                                           else HBM_WORKLOADS)
        if _is_number(v) and applies and _peak(row, what) is None:
            out.append(name)
    return out


def flags(record: Any) -> list[str]:
    """What could not be checked (not errors), one line each: `unchecked` with the values."""
    row = record if isinstance(record, dict) else vars(record)
    return [f"{name} {row[name]:g}: {NO_PEAK}" for name in unchecked(row)]
