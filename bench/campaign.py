"""The one-GPU-window campaign: its wall-time estimate, and the summary its script prints last.

`bench/device_campaign.sh` runs the stages (device facts, the bandwidth and GEMM families, the
telemetry overhead, NCCL at world size 1, decode attention, attention), each under its own
timeout, into one SQLite file, and exports what finished after every stage and at the end.
`python -m bench.campaign summary OUT` prints the stage table and the rows by workload and
status; `python -m bench.campaign estimate` prints the estimate.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from bench.device import DeviceInfo

# The script's suite stages (one process each) and the workload families each runs.
SUITE_STAGES = {"bandwidth": ("membw", "hostdevice"), "gemm": ("gemm",),
                "decode": ("decode_attention",), "attention": ("attention",)}
# The stages the script runs besides the suite, with the seconds each is allowed (the script's
# own timeouts; the estimate counts them in full, so it is an upper bound).
EXTRA_STAGES_S = {"facts": 30, "telemetry_overhead": 45, "allreduce": 60, "export": 20}
# The machine the campaign is sized for (datasheet facts only; no measurement).
H200 = DeviceInfo(name="NVIDIA H200", kind="cuda", model="H200-SXM", cc="9.0", sm_count=132,
                  memory_bytes=141 * 10**9)


def estimate(device: DeviceInfo = H200, tune: bool = False) -> dict:
    """Wall time of the campaign on `device`, stage by stage: every declared backend of every
    case (an upper bound: a backend this torch cannot run is skipped in a second), per-case
    timing from the GPU preset, compiles by bench/budget.py's assumptions, each stage's process
    start, and the other stages at their full timeouts."""
    # lazy: the summary (the script's last word) must not need torch, which the cases import
    from bench.budget import total_estimate
    from bench.suites import suite_cases
    from bench.timing import PRESETS

    cases = suite_cases("campaign", device)
    stages: dict[str, dict] = {}
    for name, families in SUITE_STAGES.items():
        pairs = [(c, b) for c in cases if c.workload in families for b in c.backends]
        stages[name] = total_estimate(pairs, device, PRESETS["gpu"], tune)
    suite_s = sum(s["total_s"] for s in stages.values())
    compile_s = sum(s["compile_s"] for s in stages.values())
    out = {"pairs": sum(s["pairs"] for s in stages.values()), "compile_s": compile_s,
           "suite_stages": {k: round(v["total_s"], 1) for k, v in stages.items()},
           "suite_total_s": suite_s, "other_stages_s": EXTRA_STAGES_S,
           "total_s": suite_s + sum(EXTRA_STAGES_S.values())}
    out["inspected"] = None if tune else inspected(out)
    return out


def inspected(est: dict) -> dict:
    """The same total with the compiles and autotune benchmarks the kernels' own count finds
    for the campaign's Triton calls (kernels.plan.count_compiles, from the sm90 specialisation
    and config tables the static inspection checks), at bench/budget.py's per-compile and
    per-benchmark assumptions, in place of the harness's own compile estimate. Without --tune
    only: the tuned tables are not counted there."""
    from bench.budget import AUTOTUNE_BENCH_S, COMPILE_S
    from kernels.plan import SUITES, count_compiles

    compiles, benchmarks = count_compiles(SUITES["campaign"])  # the fixed tables (no --tune)
    cost = compiles * COMPILE_S + benchmarks * AUTOTUNE_BENCH_S
    return {"compiles": compiles, "benchmarks": benchmarks, "compile_and_tune_s": cost,
            "total_s": est["total_s"] - est["compile_s"] + cost}


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a half-written last line: the summary skips it
            continue
    return rows


def summary(out: Path) -> str:
    """The stage table (stages.tsv: name, exit status, seconds) and rows per workload/status."""
    lines = ["stage                 exit   seconds"]
    stages = out / "stages.tsv"
    for row in (stages.read_text().splitlines() if stages.exists() else []):
        name, rc, secs = (row.split("\t") + ["", ""])[:3]
        note = {"0": "ok", "1": "a case failed", "2": "bad input or nothing selected",
                "124": "timed out", "137": "killed", "130": "interrupted",
                "cap": "not run (cap)"}.get(rc, "failed")
        lines.append(f"{name:<20} {rc:>5} {secs:>9}  {note}")
    overhead = out / "telemetry_overhead.json"
    try:
        pct = json.loads(overhead.read_text())["overhead_pct"]
        lines.append(f"telemetry overhead: {pct:+.2f}% (sampler on vs off, {overhead.name})")
    except (OSError, ValueError, KeyError, TypeError):  # the stage did not finish
        pass
    rows = read_rows(out / "results.jsonl")
    counts = Counter((r.get("workload"), r.get("status"), r.get("error") == "budget")
                     for r in rows)
    lines.append("")
    lines.append(f"rows: {len(rows)} in {out / 'results.jsonl'}")
    for (workload, status, budget), n in sorted(counts.items(), key=str):
        lines.append(f"  {workload:<18} {status:<8} {n:>4}" + ("  (budget)" if budget else ""))
    return "\n".join(lines)


def _rounded(x):
    """Seconds to the hundredth for printing (sums of float estimates read 430.25000000000006)."""
    if isinstance(x, float):
        return round(x, 2)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.campaign",
                                description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)
    s = sub.add_parser("summary", help="print the stage table and row counts of an $OUT folder")
    s.add_argument("out", type=Path)
    e = sub.add_parser("estimate", help="print the campaign's wall-time estimate on an H200")
    e.add_argument("--tune", action="store_true")
    a = p.parse_args(argv)
    if a.verb == "summary":
        print(summary(a.out))
    else:
        print(json.dumps(_rounded(estimate(tune=a.tune)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
