"""Result rows as the scaling model reads them: the shipped reference frame, the usable rows of
a frame as plain dicts tagged with their origin (results/rows.py's one rule; the report's
reports/page/rows.py reads them for its tables), and the small readers of their fields."""

from __future__ import annotations

import functools
import json
import logging
import math
from typing import Any

from results.rows import usable_records

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def reference_frame():
    """The shipped reference results, or None when results.reference is not there (yet).
    Read once per process: the shipped files do not change while it runs."""
    try:
        from results.reference import load_reference
    except ImportError:
        return None
    try:
        return load_reference()
    except Exception as e:  # a broken shipped file must not break estimates
        log.warning("could not load reference results: %s", e)
        return None


def as_dict(v: Any) -> dict:
    """A record's dict column as a dict, whether it comes from a frame (dict) or from CSV/JSON
    text; anything else is an empty dict."""
    if isinstance(v, dict):
        return v
    if isinstance(v, str) and v.startswith("{"):
        try:
            return json.loads(v)
        except ValueError:
            return {}
    return {}


def tagged_rows(frame, origin: str) -> list[dict]:
    """Plain dict rows of the usable results in a frame, by the one rule (results/rows.py:
    the door's checks, status ok, kernels checked correct), each tagged with its origin."""
    if frame is None or len(frame) == 0:
        return []
    rows, _ = usable_records(frame.to_dict("records"))
    out = []
    for rec in rows:
        for k in ("params", "device", "telemetry"):
            rec[k] = as_dict(rec.get(k))
        rec["_origin"] = origin
        out.append(rec)
    return out


def intra_node(row: dict, node_gpus: int) -> bool:
    """A collective row over 2..node_gpus ranks (one node's NVLink; a larger world crossed the
    network). world_size must be a whole number."""
    w = positive(row.get("world_size"))
    return w is not None and w == int(w) and 2 <= w <= node_gpus


def positive(v) -> float | None:
    """A positive finite number, else None (a missing, text or zero field counts as none)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None
