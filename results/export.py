"""Export the table as CSV, Parquet or JSON Lines.

JSON Lines keeps each record as it is (and `ingest` reads it back). CSV and Parquet are flat:
the dict and list columns (params, device, software, samples_s, telemetry) become JSON text,
and the most used nested fields are also spread into columns of their own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from results.store import JSON_COLUMNS

FORMATS = ("csv", "parquet", "jsonl")


def flat(df):
    """A flat copy: nested columns as JSON text, plus device_name and params_* columns."""
    out = df.copy()
    out.insert(out.columns.get_loc("device") + 1, "device_name",
               [d.get("name") if isinstance(d, dict) else None for d in df["device"]])
    keys = sorted({k for p in df["params"] if isinstance(p, dict) for k in p})
    for k in keys:
        out[f"params_{k}"] = [p.get(k) if isinstance(p, dict) else None for p in df["params"]]
    for c in JSON_COLUMNS:
        out[c] = [json.dumps(v, sort_keys=True) for v in df[c]]
    return out


def export(df, fmt: str, out: str | Path | None) -> None:
    """Write `df` (Store.frame()) to `out` (stdout when None, except for Parquet)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        if out is None:
            raise ValueError("parquet is binary: give --out FILE")
        flat(df).to_parquet(out, index=False)
        return
    stream = open(out, "w", encoding="utf-8") if out else sys.stdout
    try:
        if fmt == "csv":
            flat(df).to_csv(stream, index=False)
        else:
            for rec in df.to_dict(orient="records"):
                stream.write(json.dumps(rec, default=str) + "\n")
    finally:
        if out:
            stream.close()
