"""Case selection (bench/suites.py): the filter before the probe, vendor backends first."""

from __future__ import annotations

import pytest

from bench.device import detect_cpu
from bench.suites import OURS, SuiteError, select, suite_cases, vendor_first
from bench.workloads import WORKLOADS, Case, Workload

CPU = detect_cpu()


class Probed(Workload):
    """A family whose `backends` notes each case it is asked about (as SDPA's trial runs
    would cost a GPU), and which cannot run its 'never' backend."""

    name = "probed"

    def __init__(self):
        self.asked: list[str] = []

    def backends(self, case, device):
        self.asked.append(case.key)
        return [b for b in case.backends if b != "never"]


@pytest.fixture
def probed(monkeypatch):
    wl = Probed()
    monkeypatch.setitem(WORKLOADS, "probed", wl)
    return wl


def cases():
    return [Case("probed", "bf16", {"i": i, "fam": fam}, ("triton", "torch", "never"))
            for fam in ("a", "b") for i in range(3)]


def test_only_the_cases_the_filter_selects_are_probed(probed):
    pairs = select(cases(), CPU, "probed/bf16/i=*,fam=b*")
    assert len(pairs) == 3 * 2 and {c.params["fam"] for c, _ in pairs} == {"b"}
    assert probed.asked == [c.key for c in cases() if c.params["fam"] == "b"]  # once each
    probed.asked.clear()
    with pytest.raises(SuiteError, match="matches no case"):  # declared, but cannot run here
        select(cases(), CPU, "*:never")
    assert len(probed.asked) == 6
    probed.asked.clear()
    with pytest.raises(SuiteError, match="matches no case"):
        select(cases(), CPU, "gemm/*")
    assert probed.asked == []  # nothing selected, nothing probed


def test_each_case_runs_the_vendors_backends_before_ours(probed):
    assert vendor_first(("triton", "sdpa-flash", "sdpa-math")) == ["sdpa-flash", "sdpa-math",
                                                                   "triton"]
    pairs = select(cases()[:2], CPU, None)
    assert [b for _, b in pairs] == ["torch", "triton"] * 2  # suite order kept across cases
    for case in suite_cases("quick", CPU):  # the real families: ours always last
        got = [b for c, b in select([case], CPU, None)]
        assert got == sorted(got, key=lambda b: b in OURS) and got, case.key
        if "triton" in got and len(got) > 1:
            assert got[-1] == "triton"


def test_a_key_names_its_case_in_any_order_of_its_params(probed):
    """PostgreSQL's JSONB gives params back in its own order; a key copied from `compare`
    against such a table split into terms and ran other cases (6 for 2, no warning)."""
    key = cases()[4].key  # probed/bf16/i=1,fam=b
    assert key == "probed/bf16/i=1,fam=b"
    for expr in ("probed/bf16/fam=b,i=1", key):
        assert {(c.key, b) for c, b in select(cases(), CPU, expr)} == \
            {(key, "triton"), (key, "torch")}
    assert [(c.key, b) for c, b in select(cases(), CPU, "probed/bf16/fam=b,i=1:torch")] == \
        [(key, "torch")]
