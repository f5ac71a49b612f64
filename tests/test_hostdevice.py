"""hostdevice: host <-> device copy bandwidth. Only the registration and the CPU behaviour run
here; the copies themselves need a GPU (gpu marker)."""

from __future__ import annotations

import pytest

from bench.device import detect
from bench.suites import SUITES
from bench.workloads import WORKLOADS, Case, Unsupported
from bench.workloads.hostdevice import MEMORY, OPS, PCIE_GEN5_X16_GBPS, SIZES

WL = WORKLOADS["hostdevice"]


def test_registered_and_in_the_standard_and_full_suites():
    assert "hostdevice" in SUITES["standard"] and "hostdevice" in SUITES["full"]
    assert WL.name == "hostdevice"


def test_no_cases_without_a_gpu():
    cpu = detect() if detect().kind == "cpu" else None
    if cpu is None:
        pytest.skip("this machine has a GPU")
    for suite in ("quick", "standard", "full", "mamf"):
        assert WL.cases(suite, cpu) == []
    case = Case("hostdevice", "fp32", {"op": "h2d", "memory": "pinned", "bytes": 1 << 20},
                ("torch",))
    with pytest.raises(Unsupported):
        WL.setup(case, cpu)
    assert WL.peak_gbps(case, cpu) is None


def test_formulas():
    case = Case("hostdevice", "fp32", {"op": "d2h", "memory": "pageable", "bytes": 1 << 30},
                ("torch",))
    assert WL.bytes_moved(case) == float(1 << 30)  # one direction, bytes copied
    assert WL.flops(case) is None
    assert 60 < PCIE_GEN5_X16_GBPS < 65


@pytest.mark.gpu
def test_copies_on_the_gpu():
    from bench.runner import RunContext, run_case
    from bench.timing import PRESETS

    device = detect()
    cases = WL.cases("full", device)
    assert len(cases) == len(SIZES["full"]) * len(OPS) * len(MEMORY)
    ctx = RunContext("hostdevice-test", device, PRESETS["smoke"], telemetry=False)
    for op in OPS:
        for memory in MEMORY:
            case = Case("hostdevice", "fp32", {"op": op, "memory": memory, "bytes": 16 << 20},
                        ("torch",))
            r = run_case(case, "torch", ctx)
            assert r.status == "ok" and r.correct is True, r.error
            assert r.gbps is not None and 0.1 < r.gbps < 1000
