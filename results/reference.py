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


# HBM bandwidth ratio H200 / H100 that a healthy pair of reference runs must show: the
# datasheets say 4.8 / 3.35 = 1.43 (docs/SOURCES.md, h100-h200-hbm). The bounds around it are an
# assumption: a copy reaches a somewhat different share of each part's peak.
HBM_RATIO_BOUNDS = (1.2, 1.5)
PROVENANCE_DEVICE = ("uuid", "driver", "cuda")
PROVENANCE_SOFTWARE = ("torch", "triton", "git_sha")


def sanity_problems(records) -> list[str]:
    """What is wrong with a reference file's records, as readable lines (empty: nothing).

    Every row ok and checked correct, or explicitly skipped; no throughput above the device's
    datasheet peak; GPU rows carry NVML telemetry and full provenance.
    """
    from results.peaks import PEAKS

    problems = []
    for r in records:
        where = f"{r.workload}/{r.backend}/{r.dtype}/{r.params}"
        if r.status == "skipped":
            continue
        if r.status != "ok" or r.correct is not True:
            problems.append(f"{where}: status {r.status}, correct={r.correct}")
            continue
        peak = PEAKS.get(r.device.get("model") or "")
        if r.device.get("kind") == "cuda":
            if peak is None:
                problems.append(f"{where}: unknown device model {r.device.get('model')!r}")
            if (r.telemetry or {}).get("source") != "nvml":
                problems.append(f"{where}: no NVML telemetry")
            missing = [k for k in PROVENANCE_DEVICE if not r.device.get(k)] + \
                [k for k in PROVENANCE_SOFTWARE if not (r.software or {}).get(k)]
            if missing:
                problems.append(f"{where}: provenance lacks {missing}")
        if peak is not None:
            top = peak.tflops(r.dtype)
            if r.tflops is not None and top and r.tflops > top:
                problems.append(f"{where}: {r.tflops:.0f} TFLOP/s above the {top} peak")
            if r.workload == "membw" and r.gbps and peak.hbm_tbps and \
                    r.gbps > peak.hbm_tbps * 1e3:
                problems.append(f"{where}: {r.gbps:.0f} GB/s above the HBM peak")
    return problems


def best_copy_gbps(records) -> float | None:
    """The best checked HBM copy bandwidth of a run (GB/s, read plus written)."""
    xs = [r.gbps for r in records if r.workload == "membw" and r.params.get("op") == "copy"
          and r.status == "ok" and r.correct and r.gbps]
    return max(xs) if xs else None
