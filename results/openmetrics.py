"""Results as Prometheus gauges, in the node_exporter textfile collector's format.

`colossus-bench export --format openmetrics -o /var/lib/node_exporter/textfile/colossus.prom` writes
one gauge per figure (`GAUGES`) for each usable row (results/rows.py) of the latest run of every
series; a series is labelled by workload, backend, dtype, case (the case's params as `k=v` pairs:
`rows.case_params`, so the repetitions of `allreduce -N` are one series, whose latest cycle is
shown), GPU model, device uuid and host. The text is the Prometheus text exposition format 0.0.4
that the textfile collector reads (no timestamps: the collector refuses them), label values escaped
(backslash, double quote, newline). The file is written whole (a temporary file renamed over it), as
the collector's documentation asks. Which DCGM field each telemetry figure matches:
docs/TELEMETRY.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from results.rows import case_params, is_usable
from results.validate import parse_time
from results.words import counted

PREFIX = "colossus_bench_"
# name -> (help, unit factor, how to read it from a record)
GAUGES: dict[str, tuple[str, float, str]] = {
    "throughput_tflops": ("Measured throughput, TFLOP/s (dense).", 1.0, "tflops"),
    "throughput_gbps": ("Measured memory or transfer throughput, GB/s.", 1.0, "gbps"),
    "bus_bandwidth_gbps": ("Collective bus bandwidth, GB/s (nccl-tests convention).", 1.0,
                           "busbw_gbps"),
    "median_seconds": ("Median time of one call, seconds.", 1.0, "median_s"),
    "power_watts": ("Mean board power over the timed region, watts (DCGM_FI_DEV_POWER_USAGE).",
                    1.0, "telemetry.power_w_mean"),
    "energy_joules": ("Energy over the timed region, joules (difference of "
                      "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION).", 1.0, "telemetry.energy_j"),
    "sm_clock_hertz": ("Mean SM clock over the timed region, hertz (DCGM_FI_DEV_SM_CLOCK is "
                       "in MHz).", 1e6, "telemetry.sm_clock_mhz_mean"),
}
LABELS = ("workload", "backend", "dtype", "case", "model", "uuid", "host")


def escape_label(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def case_label(params: dict) -> str:
    return " ".join(f"{k}={params[k]}" for k in sorted(params))


def labels(row: dict) -> tuple[str, ...]:
    device = row.get("device") or {}
    return (row["workload"], row["backend"], row["dtype"],
            case_label(case_params(row.get("params"))),
            str(device.get("model") or device.get("name") or ""), str(device.get("uuid") or ""),
            row["host"])


def _value(row: dict, path: str):
    if path.startswith("telemetry."):
        return (row.get("telemetry") or {}).get(path.split(".", 1)[1])
    return row.get(path)


def _cycle(row: dict) -> int:
    """The repetition a row is within its run (0 when not repeated), the last one wins."""
    c = (row.get("params") or {}).get("cycle")
    return c if isinstance(c, int) and not isinstance(c, bool) else 0


def latest(rows: list[dict]) -> dict[tuple[str, ...], dict]:
    """Per series (label set): the usable row of its latest run (rank 0 for collectives)."""
    out: dict[tuple[str, ...], dict] = {}
    for r in sorted((r for r in rows if is_usable(r) and r.get("rank", 0) in (0, None)),
                    key=lambda r: (parse_time(r.get("created_at")).timestamp(), r["run_id"],
                                   _cycle(r))):
        out[labels(r)] = r
    return out


@dataclass(frozen=True)
class Exposition:
    """The exposition text and what it holds: samples (one line each: a gauge of one label
    set) and the distinct label sets (the measured series of `latest`) they cover."""

    text: str
    label_sets: int
    samples: int

    def __str__(self) -> str:
        return f"{counted(self.samples, 'sample')} of {counted(self.label_sets, 'label set')}"


def openmetrics(rows: list[dict]) -> str:
    """The gauges of `rows` (dicts the door accepted) as exposition text."""
    return exposition(rows).text


def exposition(rows: list[dict]) -> Exposition:
    """The gauges of `rows` (dicts the door accepted), with their counts."""
    series = latest(rows)
    lines, used, n_samples = [], set(), 0
    for name, (help_text, factor, path) in GAUGES.items():
        samples = []
        for key, row in series.items():
            v = _value(row, path)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                pairs = ",".join(f'{k}="{escape_label(x)}"' for k, x in zip(LABELS, key))
                samples.append(f"{PREFIX}{name}{{{pairs}}} {float(v) * factor!r}")
                used.add(key)
        n_samples += len(samples)
        if samples:
            lines += [f"# HELP {PREFIX}{name} {help_text}", f"# TYPE {PREFIX}{name} gauge",
                      *samples]
    return Exposition("\n".join(lines) + "\n" if lines else "", len(used), n_samples)
