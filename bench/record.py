"""The one result-record builder: every measured, failed or skipped case becomes a Result here.

The runner (bench/runner.py) and the collectives (bench/collectives/) both describe a case by
its facts (run, workload, backend, dtype, params, device, world) and an outcome; this module
adds where and with what it ran (host, device record, software) and the timing statistics,
and enforces the rule every row obeys: a case that failed its check, or did not finish, has no
timing and no throughput (a wrong kernel has no speed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench import provenance
from bench.device import DeviceInfo
from bench.timing import Timing
from results.schema import Result

THROUGHPUT = ("tflops", "gbps", "algbw_gbps", "busbw_gbps", "peak_fraction")
DESCRIBED = ("flops", "bytes", "shape")


@dataclass(frozen=True)
class Facts:
    """What ran and where: everything of a record that does not depend on the outcome."""

    run_id: str
    workload: str
    backend: str
    dtype: str
    params: dict[str, Any] = field(default_factory=dict)
    device: DeviceInfo | None = None
    world_size: int = 1
    rank: int = 0
    described: dict[str, Any] = field(default_factory=dict)  # flops, bytes, shape of one call


def build_record(facts: Facts, *, status: str = "ok", timing: Timing | None = None,
                 correct: bool | None = None, max_rel_error: float | None = None,
                 tolerance: float | None = None, telemetry: dict | None = None,
                 error: str | None = None, compile_s: float | None = None,
                 **throughput: float | None) -> Result:
    """A Result from the case's facts and its outcome.

    `compile_s` (the first call's compile and autotune time) is a figure of the case, kept on
    failed rows too; `facts.described` (flops, bytes, shape) is stored on every row.

    `throughput` takes tflops, gbps, algbw_gbps, busbw_gbps and peak_fraction. A row with
    status other than ok, or correct=False, must carry neither timing nor throughput: passing
    them is a programming error (ValueError), not something to store quietly.
    """
    unknown = set(throughput) - set(THROUGHPUT)
    if unknown:
        raise TypeError(f"unknown throughput field(s): {', '.join(sorted(unknown))}")
    measured = timing is not None or any(v is not None for v in throughput.values())
    if measured and (status != "ok" or correct is False):
        raise ValueError("a failed, skipped or wrong case has no timing and no throughput")
    unknown = set(facts.described) - set(DESCRIBED)
    if unknown:
        raise TypeError(f"unknown case figure(s): {', '.join(sorted(unknown))}")
    extra: dict[str, Any] = {**facts.described, **throughput}
    if timing is not None:
        extra.update(timing.stats())
    if telemetry is not None:
        extra["telemetry"] = telemetry
    device = facts.device.record() if facts.device is not None else {}
    software = provenance.software()
    how = timing.software() if timing is not None else {}
    if how:  # how a CPU row was timed (bench/timing.py)
        software = {**software, "timing": how}
    return Result(run_id=facts.run_id, workload=facts.workload, backend=facts.backend,
                  dtype=facts.dtype, params=dict(facts.params), host=provenance.host(),
                  device=device, world_size=facts.world_size, rank=facts.rank,
                  software=software, correct=correct,
                  max_rel_error=max_rel_error, tolerance=tolerance, status=status,
                  error=error, compile_s=compile_s, **extra)
