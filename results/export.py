"""Export the table as CSV, Parquet, JSON Lines or gauges (`openmetrics`: the Prometheus text
format 0.0.4 that node_exporter's textfile collector reads, not OpenMetrics 1.0).

JSON Lines keeps each record as it is (strict JSON: null for non-finite numbers) and `ingest`
reads it back. CSV and Parquet share one explicit, versioned Arrow schema, `EXPORT_SCHEMA`:
timestamps as UTC timestamps, integers as integers, the known params, device and telemetry keys
as typed columns of their own (`params_m`, `telemetry_power_w_mean`, ...), the keys it does not
know as JSON text (`params_other`, ...), raw samples as a list of floats (JSON text in CSV). Every
export has every column, so exports of different workloads read as one `pyarrow.dataset`.
The gauges: results/openmetrics.py. Only rows the door accepts (results/validate.py) are
written; the others are skipped and counted (results/cli.py).
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from results.openmetrics import exposition
from results.schema import SCHEMA_VERSION, finite
from results.validate import parse_time
from results.words import counted

FORMATS = ("csv", "parquet", "jsonl", "openmetrics")
EXPORT_SCHEMA_VERSION = 1  # bump when a column is renamed, removed or changes type

_S, _I, _F, _B = pa.string(), pa.int64(), pa.float64(), pa.bool_()
# The keys our workloads write (bench/workloads/*.py, bench/collectives/worker.py, bench/device.py,
# bench/telemetry.py) and their types. A value of another type goes to the *_other JSON column.
PARAM_KEYS = {"m": _I, "n": _I, "k": _I, "layout": _S, "shape": _S,  # gemm
              "b": _I, "h": _I, "kv_h": _I, "s": _I, "s_q": _I, "d": _I, "causal": _B,  # attention
              "direction": _S,
              "op": _S, "bytes": _I, "memory": _S,  # membw, hostdevice
              "placement": _S, "count": _I, "nranks": _I}  # collectives
DEVICE_KEYS = {"name": _S, "model": _S, "uuid": _S, "kind": _S, "cc": _S, "sm_count": _I,
               "memory_bytes": _I, "driver": _S, "cuda": _S}
SOFTWARE_KEYS = {"python": _S, "torch": _S, "triton": _S, "colossus_bench": _S, "git_sha": _S,
                 "git_dirty": _B}
TELEMETRY_KEYS = {"source": _S, "power_w_mean": _F, "power_w_max": _F, "energy_j": _F,
                  "sm_clock_mhz_mean": _F, "sm_clock_mhz_min": _F, "mem_clock_mhz": _F,
                  "temp_c_max": _F, "hbm_temp_c_max": _F, "throttle_reasons": pa.list_(_S),
                  "gpu_util_pct": _F, "mem_util_pct": _F, "dram_bw_util_pct": _F,
                  "tensor_util_pct": _F, "samples": _I, "duration_s": _F, "region": _S}
NESTED_KEYS = {"params": PARAM_KEYS, "device": DEVICE_KEYS, "software": SOFTWARE_KEYS,
               "telemetry": TELEMETRY_KEYS}


def _nested(name: str) -> list[pa.Field]:
    keys = NESTED_KEYS[name]
    return [pa.field(f"{name}_{k}", t) for k, t in keys.items()] + [
        pa.field(f"{name}_other", _S)]


_TS = pa.timestamp("us", tz="UTC")
EXPORT_SCHEMA = pa.schema(
    [pa.field("id", _S, nullable=False), pa.field("run_id", _S, nullable=False),
     pa.field("created_at", _TS, nullable=False), pa.field("schema_version", pa.int32()),
     pa.field("workload", _S, nullable=False), pa.field("backend", _S, nullable=False),
     pa.field("dtype", _S, nullable=False), *_nested("params"),
     pa.field("host", _S, nullable=False), *_nested("device"),
     pa.field("world_size", pa.int32()), pa.field("rank", pa.int32()), *_nested("software"),
     *[pa.field(c, _F) for c in ("median_s", "p20_s", "p80_s", "mean_s", "stdev_s")],
     pa.field("n", pa.int32()), pa.field("samples_s", pa.list_(_F)), pa.field("compile_s", _F),
     *[pa.field(c, _F) for c in ("tflops", "gbps", "algbw_gbps", "busbw_gbps", "peak_fraction",
                                 "flops", "bytes")],
     pa.field("shape", _S),
     pa.field("correct", _B), pa.field("max_rel_error", _F), pa.field("tolerance", _F),
     *_nested("telemetry"), pa.field("status", _S, nullable=False), pa.field("error", _S)],
    metadata={"colossus_bench.export_schema": str(EXPORT_SCHEMA_VERSION),
              "colossus_bench.record_schema": str(SCHEMA_VERSION)})


def _fits(value, t: pa.DataType) -> bool:
    if value is None:
        return True
    if t == _S:
        return isinstance(value, str)
    if t == _B:
        return isinstance(value, bool)
    if t == _I:
        return isinstance(value, int) and not isinstance(value, bool)
    if t == _F:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(x, str) for x in value)


def flat_row(row: dict) -> dict:
    """One record (a dict the door accepted) as a row of EXPORT_SCHEMA."""
    out = {f.name: row.get(f.name) for f in EXPORT_SCHEMA}
    out["created_at"] = parse_time(row["created_at"])
    for name, keys in NESTED_KEYS.items():
        nested = finite(row.get(name) or {})
        other = {}
        for k, v in nested.items():
            if k in keys and _fits(v, keys[k]):
                out[f"{name}_{k}"] = v
            else:
                other[k] = v
        out[f"{name}_other"] = json.dumps(other, sort_keys=True) if other else None
    out["samples_s"] = finite(row.get("samples_s"))
    for c in ("median_s", "p20_s", "p80_s", "mean_s", "stdev_s", "tflops", "gbps", "algbw_gbps",
              "busbw_gbps", "peak_fraction", "max_rel_error", "tolerance"):
        out[c] = finite(out[c])
    return out


def to_arrow(rows: list[dict]) -> pa.Table:
    """Records (dicts the door accepted) as a table of EXPORT_SCHEMA."""
    return pa.Table.from_pylist([flat_row(r) for r in rows], schema=EXPORT_SCHEMA)


def iso_utc(t: datetime) -> str:
    """An aware time as ISO 8601 in UTC, to the microsecond: 2026-12-02T04:53:12.746000+00:00."""
    return t.astimezone(timezone.utc).isoformat(timespec="microseconds")


def _csv_table(table: pa.Table) -> pa.Table:
    """CSV has no lists: the list columns become JSON text; timestamps become ISO 8601 text in
    UTC (`iso_utc`: the T separator and zone JSON Lines has, not Arrow's "2026-12-02 04:53:12Z");
    every column keeps its name."""
    cols = []
    for field, col in zip(table.schema, table.columns):
        if pa.types.is_list(field.type):
            col = pa.array([None if v is None else json.dumps(v) for v in col.to_pylist()],
                           type=_S)
        elif pa.types.is_timestamp(field.type):
            col = pa.array([None if v is None else iso_utc(v) for v in col.to_pylist()],
                           type=_S)
        cols.append(col)
    return pa.table(cols, names=table.column_names)


def jsonl_text(rows: list[dict]) -> str:
    """Records as strict JSON Lines (no NaN/Infinity: those are null, as the table stores)."""
    return "".join(json.dumps(finite(r), allow_nan=False, default=str) + "\n" for r in rows)


def render(rows: list[dict], fmt: str) -> tuple[bytes, str]:
    """The export of `rows` (dicts the door accepted) in `fmt`, as bytes, and what it holds in
    words ("2 rows"; for the gauges, their samples and label sets)."""
    if fmt == "jsonl":
        return jsonl_text(rows).encode(), counted(len(rows), "row")
    if fmt == "openmetrics":
        gauges = exposition(rows)
        return gauges.text.encode(), str(gauges)
    buf = io.BytesIO()
    table = to_arrow(rows)
    if fmt == "parquet":
        pq.write_table(table, buf)
    else:
        pa_csv.write_csv(_csv_table(table), buf)
    return buf.getvalue(), counted(len(rows), "row")


def write_atomically(path: Path, data: bytes) -> None:
    """Write a file whole or not at all: a temporary file beside it, renamed over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export(rows: list[dict], fmt: str, out: str | Path | None) -> str:
    """Write `rows` to `out` (stdout when None, except for Parquet); returns what was written,
    in words (`render`)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet" and out is None:
        raise ValueError("parquet is binary: give --out FILE")
    data, what = render(rows, fmt)
    if out is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_atomically(Path(out), data)
    return what
