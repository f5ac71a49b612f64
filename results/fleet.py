"""The slow-GPU finder: every device against the fleet of its own GPU model, case by case.

For each case (workload, backend, dtype, params) and GPU model, a device's time is the median of
its `median_s` over the rows used, and the fleet's is the median over the devices (each device
counts once, however often it ran). ratio = fleet median time / device median time, i.e. the
device's throughput relative to its fleet: 1.0 is typical, 0.90 is 10% slow. A device below the
threshold is flagged together with the telemetry of its runs that usually explains it: SM clocks
(mean and minimum) against the fleet's, power, temperature and the throttle reasons NVML gave.

Rows used: the usable ones (results/rows.py: they pass the table's checks, status ok and
correct), with a time; unusable rows are skipped and counted in `FleetReport.skipped`. By
default only each device's latest run of each case counts (a GPU that was fixed leaves the list
at its next run, and an old bad run does not haunt it); `latest_only=False` takes every run. A
device is its GPU uuid, else its host and device model (the CPU fallback and GPUs without NVML:
a host's CPU rows and its rows of an unknown GPU are two devices). A case is `rows.case_key`:
the repetitions of `allreduce -N` (params["cycle"]) are runs of one case, not cases. Groups with one
device have nothing to compare with: ratio 1.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from results.rows import case_key, case_params, read, usable_records
from results.store import Store, results_table
from results.validate import parse_time

# Default flag threshold: 8% below the fleet median. Run-to-run spread of the median on a
# healthy H100 is a few percent (assumption, from the p20-p80 spread our timing recipe stores);
# 0.92 leaves room for that and still catches a GPU stuck at reduced clocks or power.
DEFAULT_THRESHOLD = 0.92

# Throttle reasons that say nothing is wrong (an idle GPU between kernels, user-set clocks).
BENIGN_REASONS = frozenset({"gpu_idle", "applications_clocks_setting", "none"})

_NEVER = datetime.min.replace(tzinfo=timezone.utc)  # the time of a row without one


@dataclass(frozen=True)
class Entry:
    """One device on one case, against its fleet."""

    workload: str
    backend: str
    dtype: str
    params: dict
    model: str  # GPU model (device["model"], else its name)
    device: str  # uuid, else host
    host: str
    runs: int  # rows (runs) behind median_s
    median_s: float
    fleet_median_s: float
    fleet_devices: int  # devices of this model that ran this case
    ratio: float  # fleet median time / device median time: relative throughput
    flagged: bool
    sm_clock_mhz_mean: float | None = None
    sm_clock_mhz_min: float | None = None
    power_w_mean: float | None = None
    temp_c_max: float | None = None
    throttle_reasons: list[str] = field(default_factory=list)
    fleet_sm_clock_mhz_mean: float | None = None  # median over the model's devices
    fleet_power_w_mean: float | None = None

    @property
    def case(self) -> str:
        p = " ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.workload}/{self.backend}/{self.dtype} {p}".strip()

    def explain(self) -> str:
        """The telemetry that explains a slow device, in a few words."""
        out = []
        if self.sm_clock_mhz_mean is not None and self.fleet_sm_clock_mhz_mean:
            drop = 1 - self.sm_clock_mhz_mean / self.fleet_sm_clock_mhz_mean
            if drop > 0.02:  # clocks 2% or more below the fleet's (noise is well under that)
                out.append(f"SM clock {self.sm_clock_mhz_mean:.0f} MHz, fleet "
                           f"{self.fleet_sm_clock_mhz_mean:.0f} (-{drop:.0%})")
        reasons = [r for r in self.throttle_reasons if r not in BENIGN_REASONS]
        if reasons:
            out.append("throttled: " + ", ".join(reasons))
        if self.power_w_mean is not None and self.fleet_power_w_mean:
            if self.power_w_mean < 0.9 * self.fleet_power_w_mean:
                out.append(f"power {self.power_w_mean:.0f} W, fleet "
                           f"{self.fleet_power_w_mean:.0f}")
        if self.temp_c_max is not None and self.temp_c_max >= 85:  # H100 slows near 85-90 C
            out.append(f"hot: {self.temp_c_max:.0f} C")
        if not out:
            out.append("no telemetry explains it" if self.sm_clock_mhz_mean is not None
                       else "no telemetry recorded")
        return "; ".join(out)

    def to_dict(self) -> dict:
        return {**asdict(self), "case": self.case, "explain": self.explain()}


@dataclass(frozen=True)
class DeviceSummary:
    device: str
    host: str
    model: str
    cases: int
    flagged: int
    worst_ratio: float
    geomean_ratio: float  # over its cases: one number for "how slow is this GPU"


@dataclass
class FleetReport:
    threshold: float
    latest_only: bool
    entries: list[Entry]
    skipped: int = 0  # rows that claimed to be ok measurements but are unusable

    @property
    def flagged(self) -> list[Entry]:
        return sorted((e for e in self.entries if e.flagged), key=lambda e: e.ratio)

    def devices(self) -> list[DeviceSummary]:
        """One line per device, slowest (lowest geometric-mean ratio) first."""
        by: dict[tuple[str, str], list[Entry]] = defaultdict(list)
        for e in self.entries:  # a host without GPU uuids holds one device per model
            by[e.device, e.model].append(e)
        out = [DeviceSummary(device=d, host=es[0].host, model=model, cases=len(es),
                             flagged=sum(e.flagged for e in es),
                             worst_ratio=min(e.ratio for e in es),
                             geomean_ratio=math.exp(statistics.fmean(math.log(e.ratio)
                                                                     for e in es)))
               for (d, model), es in by.items()]
        return sorted(out, key=lambda s: (s.geomean_ratio, s.device, s.model))

    def to_dict(self) -> dict:
        return {"threshold": self.threshold,
                "runs": "latest" if self.latest_only else "all",
                "skipped_rows": self.skipped,
                "cases": len({(*case_key(asdict(e)), e.model) for e in self.entries}),
                "devices": [asdict(d) for d in self.devices()],
                "flagged": [e.to_dict() for e in self.flagged]}


def device_key(device: dict, host: str) -> str:
    return device.get("uuid") or host


def model_of(device: dict) -> str:
    return device.get("model") or device.get("name") or "unknown"


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.fmean(xs) if xs else None


def _median(xs: list) -> float | None:
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def _telemetry(rows: list[dict]) -> dict:
    """The telemetry of a device's rows on one case: clocks and power averaged, the minimum
    clock, the hottest temperature, every throttle reason seen."""
    tel = [r.get("telemetry") or {} for r in rows]
    mins = [t.get("sm_clock_mhz_min") for t in tel if t.get("sm_clock_mhz_min") is not None]
    temps = [t.get("temp_c_max") for t in tel if t.get("temp_c_max") is not None]
    return {"sm_clock_mhz_mean": _mean([t.get("sm_clock_mhz_mean") for t in tel]),
            "sm_clock_mhz_min": min(mins) if mins else None,
            "power_w_mean": _mean([t.get("power_w_mean") for t in tel]),
            "temp_c_max": max(temps) if temps else None,
            "throttle_reasons": sorted({r for t in tel for r in (t.get("throttle_reasons") or [])})}


def fleet_report(rows: Iterable[dict], threshold: float = DEFAULT_THRESHOLD, *,
                 latest_only: bool = True) -> FleetReport:
    """Compare devices case by case; `rows` are result dicts (the usable ones are used)."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0 < threshold <= 10:
        raise ValueError(f"threshold must be a number in (0, 10], got {threshold!r}")
    rows, skipped = usable_records(rows)
    # (case, model) -> device -> rows
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("median_s") is None:
            continue
        case = (*case_key(r), model_of(r["device"]))
        groups[case][device_key(r["device"], r["host"])].append(r)
    entries = []
    for (_, _, _, _, model), devices in groups.items():
        if latest_only:
            devices = {d: _latest(rs) for d, rs in devices.items()}
        medians = {d: statistics.median(r["median_s"] for r in rs) for d, rs in devices.items()}
        tele = {d: _telemetry(rs) for d, rs in devices.items()}
        fleet = statistics.median(medians.values())
        fleet_clock = _median([t["sm_clock_mhz_mean"] for t in tele.values()])
        fleet_power = _median([t["power_w_mean"] for t in tele.values()])
        for d, rs in devices.items():
            ratio = fleet / medians[d]
            first = rs[0]
            entries.append(Entry(
                workload=first["workload"], backend=first["backend"], dtype=first["dtype"],
                params=case_params(first["params"]), model=model, device=d,
                host=first["host"], runs=len(rs),
                median_s=medians[d], fleet_median_s=fleet, fleet_devices=len(devices),
                ratio=ratio, flagged=ratio < threshold, **tele[d],
                fleet_sm_clock_mhz_mean=fleet_clock, fleet_power_w_mean=fleet_power))
    entries.sort(key=lambda e: (e.model, e.case, e.device))
    return FleetReport(threshold=float(threshold), latest_only=latest_only, entries=entries,
                       skipped=skipped)


def _latest(rows: list[dict]) -> list[dict]:
    """The rows of the latest run (by created_at) among a device's rows on one case."""
    last = max(rows, key=lambda r: (parse_time(r.get("created_at")) or _NEVER,
                                    r["run_id"]))["run_id"]
    return [r for r in rows if r["run_id"] == last]


def load_rows(store: Store) -> list[dict]:
    """The rows the fleet view may use (status ok, timed), read so that no stored value can
    crash the query (results.rows.read); every column, as the usable-rows rule checks them all."""
    t = results_table
    return read(store, where=(t.c.status == "ok") & t.c.median_s.is_not(None))


def fleet(store: Store, threshold: float = DEFAULT_THRESHOLD, *,
          latest_only: bool = True) -> FleetReport:
    return fleet_report(load_rows(store), threshold, latest_only=latest_only)
