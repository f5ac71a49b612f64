"""The one record builder (bench/record.py), used by the runner and the collectives."""

from __future__ import annotations

import pytest

from bench import provenance
from bench.device import DeviceInfo
from bench.record import Facts, build_record
from bench.timing import Timing

DEVICE = DeviceInfo(name="cpu", kind="cpu")
FACTS = Facts("r1", "allreduce", "gloo", "fp32", {"op": "all_reduce", "bytes": 1024}, DEVICE,
              world_size=4, rank=0)


def test_an_ok_record_carries_timing_throughput_and_provenance():
    row = build_record(FACTS, timing=Timing([1.0, 2.0, 3.0]), algbw_gbps=1.5, busbw_gbps=2.25,
                       correct=True, max_rel_error=0.0, tolerance=0.0,
                       telemetry={"source": "none"})
    assert (row.median_s, row.mean_s, row.n, row.samples_s) == (2.0, 2.0, 3, [1.0, 2.0, 3.0])
    assert row.algbw_gbps == 1.5 and row.world_size == 4 and row.status == "ok"
    assert row.host == provenance.host() and row.device == DEVICE.record()
    assert row.software == provenance.software()
    assert row.id == build_record(FACTS, status="skipped", error="x").id  # same case, same id


def test_a_cpu_row_says_how_it_was_timed_in_its_software():
    from bench.cpu_recipe import CPU_TIMING

    row = build_record(FACTS, timing=Timing([1.0, 2.0], dict(CPU_TIMING)), correct=True)
    assert row.software == {**provenance.software(), "timing": CPU_TIMING}
    assert "timing" not in provenance.software()  # the shared dict is not changed
    assert build_record(FACTS, status="skipped", error="x").software == provenance.software()
    timed = build_record(FACTS, timing=Timing([1.0], dict(CPU_TIMING), 0.0015), correct=True)
    assert timed.software["timing"] == {**CPU_TIMING, "yardstick_s": 0.0015}  # the guest's speed


def test_a_failed_or_wrong_record_has_no_speed():
    wrong = build_record(FACTS, correct=False, status="failed", error="#wrong 3",
                         max_rel_error=1.0, tolerance=0.0)
    assert wrong.median_s is None and wrong.samples_s == [] and wrong.algbw_gbps is None
    with pytest.raises(ValueError, match="no timing and no throughput"):
        build_record(FACTS, correct=False, status="failed", timing=Timing([1.0]))
    with pytest.raises(ValueError, match="no timing and no throughput"):
        build_record(FACTS, status="skipped", gbps=3.0)
    with pytest.raises(TypeError, match="unknown throughput"):
        build_record(FACTS, speed=1.0)
