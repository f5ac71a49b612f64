"""The measured results we ship (results/reference/*.jsonl), for machines without a GPU.

Each file holds the records of one complete device run (one GPU model), with provenance in every
row (device uuid, driver, CUDA, torch, triton, git commit, time).
"""

from __future__ import annotations

from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"


def reference_files() -> list[Path]:
    return sorted(REFERENCE_DIR.glob("*.jsonl"))


def load_reference():
    """All shipped reference records as a DataFrame with the table's columns (maybe empty)."""
    import pandas as pd

    from results.ingest import load_jsonl
    from results.store import COLUMNS

    rows = [r.to_dict() for f in reference_files() for r in load_jsonl(f)]
    return pd.DataFrame(rows, columns=COLUMNS) if not rows else pd.DataFrame(rows)[COLUMNS]
