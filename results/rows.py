"""The one rule for usable rows, and a reader that survives any row already in a table.

A row is *usable* (counts as a measurement in `fleet`, `export`, the report and the model) when
  1. it passes the door's checks (results/validate.py: finite positive times, throughputs under
     the datasheet peak, a real date, nested fields of the right types, ...): rows stored before
     those checks existed, or written by another tool, may not;
  2. its status is "ok" and its `correct` is not False;
  3. for kernels (gemm, attention), `correct` is True: an unchecked kernel time is not a result.
Rows that are not ok (failed, skipped) are not measurements and are dropped silently; rows that
claim to be ok measurements but break the rule are *skipped* and counted, so a reader can say
"N rows skipped" in one line instead of crashing or quietly using them.

Frames from `Store.frame()`, from CSV or Parquet exports, and plain dict rows all work: NaN in a
scalar column is read as null, whole floats in integer columns as integers (pandas makes an int
column with nulls float), and JSON text in the nested columns as the dict or list it holds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from results.schema import COLUMNS, FIELD_NAMES, JSON_COLUMNS, canonical_json
from results.validate import INT_COLUMNS, problems, show

# rows that count only when checked correct
KERNEL_WORKLOADS = ("gemm", "attention", "decode_attention")
# workloads bound by memory bandwidth, shown by GB/s (bench's Workload.bound == "memory", which
# reports/ cannot import; tests/test_report_inputs.py checks the two agree)
MEMORY_BOUND_WORKLOADS = ("decode_attention", "hostdevice", "membw")


# Params that number a repetition of a case, not a case of its own: `allreduce -N` sweeps the
# same sizes again and again and each sweep's rows carry params["cycle"] (bench/collectives/
# worker.py). They stay in the row (its id tells the repetitions apart) but no reader keys a case
# by them: a case's key is `case_key`.
REPETITION_PARAMS = ("cycle",)


def case_params(params: dict) -> dict:
    """A row's params less the repetition counters (REPETITION_PARAMS): what names its case."""
    return {k: v for k, v in (params or {}).items() if k not in REPETITION_PARAMS}


def case_key(row: dict) -> tuple[str, str, str, str]:
    """The one rule for the case of a row: (workload, backend, dtype, its case params as
    canonical JSON). Rows of one case on one device are repetitions of one measurement."""
    return (row["workload"], row["backend"], row["dtype"],
            canonical_json(case_params(row.get("params") or {})))


def shown_by_bandwidth(workload: str, tflops: float | None) -> bool:
    """Whether a row is shown by its GB/s rather than its TFLOP/s, the run table's rule
    (bench/cli.py, Workload.bound): a memory-bound workload, or a row with no TFLOP/s."""
    return workload in MEMORY_BOUND_WORKLOADS or tflops is None


def _json(value: Any) -> Any:
    """A nested column's value: JSON text parsed (unparseable text kept, the door refuses it)."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return value
    return value


def _truth(value: Any) -> Any:
    """numpy bools as Python bools; anything else unchanged."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, TypeError):
            return value
    return value


def clean(row: dict) -> dict:
    """A row as the record holds it: nulls for NaN, ints for whole floats in integer columns,
    nested columns parsed, numpy scalars as Python ones, timestamps as ISO 8601 text (naive ones
    taken as UTC, as timestamp-without-zone columns hold them)."""
    out = {}
    for k, v in row.items():
        v = _truth(v)
        if isinstance(v, datetime):  # a timestamp column (PostgreSQL timestamptz, Parquet)
            v = v.isoformat() if v.utcoffset() is not None else v.isoformat() + "+00:00"
        elif isinstance(v, float) and math.isnan(v) and k not in JSON_COLUMNS:
            v = None
        elif k in INT_COLUMNS and isinstance(v, float) and v.is_integer():
            v = int(v)
        elif k in JSON_COLUMNS:
            v = _json(v)
            if hasattr(v, "tolist"):  # a numpy array (Parquet list column)
                v = v.tolist()
        out[k] = v
    return out


def first_problem(row: dict) -> str | None:
    """The first reason the door refuses a (clean) row, or None."""
    found = problems({k: v for k, v in row.items() if k in FIELD_NAMES})
    return found[0] if found else None


def is_usable(row: dict) -> bool | None:
    """True: a usable measurement; None: not a measurement (failed, skipped); False: a row that
    claims to be one but breaks the rule (see the module docstring)."""
    if row.get("status") != "ok":
        return None
    correct = row.get("correct")
    if correct is False or (row.get("workload") in KERNEL_WORKLOADS and correct is not True):
        return False
    return first_problem(row) is None


def usable_records(rows: Iterable[dict]) -> tuple[list[dict], int]:
    """(the usable rows, cleaned; how many ok-looking rows were skipped as unusable)."""
    out, skipped = [], 0
    for r in rows:
        r = clean(r)
        verdict = is_usable(r)
        if verdict:
            out.append(r)
        elif verdict is False:
            skipped += 1
    return out, skipped


def usable(frame) -> tuple[Any, int]:
    """(a frame of the usable rows, same columns; the number skipped). None/empty: empty."""
    import pandas as pd  # lazy: pandas costs CLI start time

    if frame is None or len(frame) == 0:
        return (frame if frame is not None else pd.DataFrame(columns=COLUMNS)), 0
    rows, skipped = usable_records(frame.to_dict("records"))
    return pd.DataFrame(rows, columns=list(frame.columns)), skipped


def valid_records(rows: Iterable[dict]) -> tuple[list[dict], list[str]]:
    """(rows the door accepts, cleaned; one line per refused row): every status, for export."""
    out, refused = [], []
    for r in rows:
        r = clean(r)
        why = first_problem(r)
        if why is None:
            out.append(r)
        else:
            refused.append(f"row {show(r.get('id'), 40)}: {why}")
    return out, refused


def read(store, columns: Iterable[str] = COLUMNS, where=None) -> list[dict]:
    """Rows of the table as dicts, whatever they hold (Store.rows)."""
    return store.rows(where, columns=columns)
