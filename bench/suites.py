"""Named suites as plain data: which workload families a suite runs.

Each workload decides its own cases for a suite name (and shrinks them on CPU), so a suite here
is only the list of families. Collectives are not here: they need several processes and have
their own verb (`colossus-bench allreduce`).
"""

from __future__ import annotations

import fnmatch

from bench.device import DeviceInfo
from bench.workloads import WORKLOADS, Case

SUITES: dict[str, tuple[str, ...]] = {
    "quick": ("membw", "gemm", "attention", "decode_attention"),
    "standard": ("membw", "gemm", "attention", "decode_attention", "hostdevice"),
    "full": ("membw", "gemm", "attention", "decode_attention", "hostdevice"),
    "mamf": ("gemm",),  # the max-achievable-matmul sweep
    # One GPU window (about 8 minutes on an H200, see bench/budget.py), in priority order: what
    # matters most first, so a time-boxed run (--budget) drops the least important cases.
    "campaign": ("membw", "hostdevice", "gemm", "attention", "decode_attention"),
}


class SuiteError(ValueError):
    pass


def suite_cases(suite: str, device: DeviceInfo) -> list[Case]:
    """Every case of a suite on this device, in suite order."""
    if suite not in SUITES:
        raise SuiteError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    cases: list[Case] = []
    for name in SUITES[suite]:
        if name in WORKLOADS:  # a family not built yet is simply absent
            cases.extend(WORKLOADS[name].cases(suite, device))
    return cases


def matches(case: Case, backend: str, expr: str) -> bool:
    """--filter: comma-separated terms; a term with * ? [ is a glob over 'KEY:BACKEND', any
    other term a substring of it. Example: 'gemm/bf16,*:triton'."""
    target = f"{case.key}:{backend}"
    for term in (t.strip() for t in expr.split(",")):
        if not term:
            continue
        if any(ch in term for ch in "*?[") and fnmatch.fnmatchcase(target, term):
            return True
        if term in target:
            return True
    return False


def select(cases: list[Case], device: DeviceInfo, expr: str | None) -> list[tuple[Case, str]]:
    """(case, backend) pairs runnable on this device that match the filter."""
    pairs = [(c, b) for c in cases for b in WORKLOADS[c.workload].backends(c, device)]
    if expr:
        pairs = [(c, b) for c, b in pairs if matches(c, b, expr)]
        if not pairs:
            raise SuiteError(f"filter {expr!r} matches no case of this suite on this device")
    return pairs
