"""The runner: check before timing, failures and skips stored, every result kept at once."""

import time

import pytest
import torch

from bench.cpu_recipe import timing_settings
from bench.device import detect
from bench.runner import RunContext, run, run_case
from bench.timing import PRESETS
from bench.workloads import WORKLOADS, Case, Check, Unsupported, Workload
from bench.workloads.membw import MemBandwidth
from results.store import Store

DEVICE = detect()
CTX = RunContext("testrun", DEVICE, PRESETS["smoke"], telemetry=True)


class Planted(Workload):
    """A workload whose behaviour each case chooses: ok, wrong, unsupported, oom, crash."""

    name = "planted"

    def setup(self, case, device):
        what = case.params["what"]
        if what == "unsupported":
            raise Unsupported("not on this device")
        if what == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 GiB")
        if what == "interrupt":
            raise KeyboardInterrupt
        return torch.randn(64)

    def prepare(self, case, backend, x):
        if case.params["what"] == "crash":
            raise RuntimeError("kernel launch failed")
        if case.params["what"] == "flaky":  # right once (the check), then fails while timed
            calls = []

            def flaky():
                calls.append(1)
                if len(calls) > 1:
                    raise RuntimeError("lost the device")
                return x * 2

            return flaky
        return (lambda: x * 2) if case.params["what"] != "wrong" else (lambda: x * 2 + 1e-2)

    def check(self, case, backend, x, out):
        err = (out - 2 * x).abs().max().item() / (2 * x).abs().max().item()
        return Check(err <= 1e-6, err, 1e-6)

    def flops(self, case):
        return 64.0


@pytest.fixture
def planted(monkeypatch):
    monkeypatch.setitem(WORKLOADS, "planted", Planted())


def case(what):
    return Case("planted", "fp32", {"what": what}, ("torch",))


def test_ok_case_is_checked_timed_and_described(planted):
    r = run_case(case("ok"), "torch", CTX)
    assert r.status == "ok" and r.correct is True
    assert r.n == 3 and len(r.samples_s) == 3 and r.median_s > 0
    assert r.tflops == pytest.approx(64 / r.median_s / 1e12)
    assert r.telemetry["source"] == "none"
    assert r.software["torch"] == torch.__version__
    timing = dict(r.software.get("timing", {}))  # how a CPU row was timed
    if DEVICE.kind != "cuda":  # and how fast the guest was meanwhile
        assert timing.pop("yardstick_s") > 0
    assert timing == timing_settings(DEVICE)


def test_wrong_output_is_stored_as_failed_without_throughput(planted):
    r = run_case(case("wrong"), "torch", CTX)
    assert r.status == "failed" and r.correct is False
    assert r.tflops is None and r.median_s is None and r.samples_s == []
    assert "reference check failed" in r.error and r.max_rel_error > r.tolerance


@pytest.mark.parametrize(("what", "status", "text"), [
    ("unsupported", "skipped", "unsupported: not on this device"),
    ("oom", "skipped", "out of memory"),
    ("crash", "failed", "RuntimeError: kernel launch failed"),
])
def test_problems_are_stored_and_the_run_goes_on(planted, db_url, what, status, text):
    with Store(db_url) as store:
        results = run([(case(what), "torch"), (case("ok"), "torch")], store, device=DEVICE,
                      run_id="r", timing=PRESETS["smoke"])
        assert [r.status for r in results] == [status, "ok"]
        assert text in results[0].error
        assert store.count() == 2


def test_interrupt_keeps_every_finished_result(planted, db_url):
    pairs = [(case("ok"), "torch"), (case("wrong"), "torch"), (case("interrupt"), "torch"),
             (Case("planted", "fp32", {"what": "ok", "n": 2}, ("torch",)), "torch")]
    with Store(db_url) as store:
        with pytest.raises(KeyboardInterrupt):
            run(pairs, store, device=DEVICE, run_id="r", timing=PRESETS["smoke"])
        assert store.count() == 2  # the two before the interrupt, nothing after


def test_membw_cpu_cases_pass_their_check():
    wl = MemBandwidth()
    for c in wl.cases("quick", DEVICE):
        for b in wl.backends(c, DEVICE):
            r = run_case(c, b, CTX)
            assert r.status == "ok", r.error
            assert r.correct and r.gbps > 0
            assert r.params["bytes"] * {"copy": 2, "triad": 3}[r.params["op"]] == \
                pytest.approx(r.gbps * 1e9 * r.median_s)


def test_peak_fraction_uses_the_right_ceiling():
    from bench.device import DeviceInfo
    from bench.runner import peak_fraction

    h100 = DeviceInfo(name="NVIDIA H100 80GB HBM3", kind="cuda", model="H100-SXM")
    assert peak_fraction(h100, "bf16", 989.4 / 2, None) == pytest.approx(0.5)
    assert peak_fraction(h100, "fp8_e4m3", 1978.9, None) == pytest.approx(1.0)
    assert peak_fraction(h100, "fp32", None, 3350.0) == pytest.approx(1.0)  # HBM
    assert peak_fraction(h100, "fp32", None, 31.5, link_peak_gbps=63.0) == pytest.approx(0.5)
    unknown = DeviceInfo(name="NVIDIA Mystery", kind="cuda")
    assert peak_fraction(unknown, "bf16", 100.0, None) is None


def test_decode_is_memory_bound_its_share_and_table_are_bandwidth():
    """Decode attention declares itself memory-bound (plain data on the workload): its share of
    peak is GB/s against HBM, though it reports TFLOP/s too; the table shows its GB/s."""
    from rich.console import Console

    from bench.cli import results_table
    from bench.device import DeviceInfo, peaks
    from bench.runner import peak_fraction
    from results.schema import Result

    assert WORKLOADS["decode_attention"].bound == "memory"
    assert {WORKLOADS[n].bound for n in ("gemm", "attention")} == {"compute"}
    assert {WORKLOADS[n].bound for n in ("membw", "hostdevice")} == {"memory"}
    h200 = DeviceInfo(name="NVIDIA H200", kind="cuda", model="H200-SXM")
    hbm = peaks(h200).hbm_tbps * 1e3
    bound = WORKLOADS["decode_attention"].bound
    assert peak_fraction(h200, "bf16", 12.5, hbm / 2, bound=bound) == pytest.approx(0.5)
    assert peak_fraction(h200, "bf16", 989.4 / 4, hbm / 2) == pytest.approx(0.25)  # compute
    rows = [Result(run_id="t", workload=w, backend="triton", dtype="bf16", params={"i": i},
                   host="h", device={}, tflops=12.25, gbps=4321.0, median_s=1e-3,
                   status="ok") for i, w in enumerate(("decode_attention", "attention"))]
    console = Console(width=250, record=True)
    console.print(results_table(rows))
    shown = console.export_text()
    decode, attention = [t for t in shown.splitlines() if " bf16 " in t]
    assert "4321" in decode and "12.25" not in decode
    assert "12.25" in attention and "4321" not in attention
    # our decode rows are the prefill kernel's, and the table says so under them
    text = " ".join(shown.split())
    assert "decode_attention/triton: the prefill kernel, not a decode kernel" in text
    assert "64-128x redundant MMA work" in text and "attention/triton:" not in text.replace(
        "decode_attention/triton:", "")


def test_results_the_table_refuses_are_kept_and_can_be_ingested(planted, tmp_path,
                                                                monkeypatch):
    from results.ingest import ingest

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    path = tmp_path / "r.db"
    Store(str(path)).close()
    # the same file opened read-only: SQLite itself refuses every insert
    readonly = Store(f"sqlite:///file:{path}?mode=ro&uri=true", create=False)
    told = []
    results = run([(case("ok"), "torch"), (case("wrong"), "torch")], readonly, device=DEVICE,
                  run_id="ro", timing=PRESETS["smoke"],
                  on_unstored=lambda r, p, e: told.append((r.id, p, str(e))))
    assert [r.status for r in results] == ["ok", "failed"]  # the run went on
    assert len(told) == 2 and "readonly" in told[0][2]
    spool = told[0][1]
    assert spool.name == "unstored-ro.jsonl" and len(spool.read_text().splitlines()) == 2
    with Store(str(path)) as store:
        assert ingest(spool, store) == (2, 2)
        assert store.ids() == {r.id for r in results}


def test_rows_carry_flops_bytes_shape_and_compile_time(planted, db_url):
    with Store(db_url) as store:
        run([(case("ok"), "torch"), (case("wrong"), "torch"), (case("unsupported"), "torch")],
            store, device=DEVICE, run_id="r", timing=PRESETS["smoke"])
        rows = {r.params["what"]: r for r in store.records()}
    for r in rows.values():  # every row, measured or not, says what the case is
        assert r.flops == 64.0 and r.bytes is None and r.shape == r.params["what"]
    assert rows["ok"].compile_s is not None and rows["ok"].compile_s >= 0
    assert rows["wrong"].compile_s is not None  # the first call ran, then failed its check
    assert rows["unsupported"].compile_s is None


class Slow(Planted):
    """Each case takes at least 0.2 s (its setup sleeps), far above its estimate."""

    def setup(self, case, device):
        time.sleep(0.2)
        return super().setup(case, device)


def test_a_budget_stores_the_rest_as_skipped(monkeypatch, db_url):
    from bench.runner import BUDGET

    monkeypatch.setitem(WORKLOADS, "planted", Slow())
    pairs = [(Case("planted", "fp32", {"what": "ok", "i": i}, ("torch",)), "torch")
             for i in range(4)]
    lefts = []
    with Store(db_url) as store:
        # smoke timing on CPU is estimated at a few hundredths of a second per case
        results = run(pairs, store, device=DEVICE, run_id="b", timing=PRESETS["smoke"],
                      budget_s=0.3, on_estimate=lefts.append)
        assert store.count() == 4  # the skipped ones are rows too: the table says so
    statuses = [(r.status, r.error) for r in results]
    assert statuses[0] == ("ok", None)
    assert ("skipped", BUDGET) in statuses
    first_skip = statuses.index(("skipped", BUDGET))
    assert all(s == ("skipped", BUDGET) for s in statuses[first_skip:])  # in order: the rest
    assert lefts and lefts[0] <= 0.3


class SlowCalls(Planted):
    """Each call takes 0.1 s: what a checked CPU case's later timing costs is priced from it."""

    def prepare(self, case, backend, x):
        def slow():
            time.sleep(0.1)
            return x * 2

        return slow


def test_cpu_cases_waiting_to_be_timed_are_priced_from_their_first_call(monkeypatch):
    """On CPU the checked cases are timed together at the end: the budget prices that from
    each one's first call (min_reps calls of 0.1 s with the margin: ~0.9 s a case), not from
    the preset alone (0.2 s), so a 2 s box keeps two cases, not six."""
    from bench.budget import CALL_MARGIN, Estimator
    from bench.device import DeviceInfo
    from bench.runner import BUDGET

    cpu = DeviceInfo(name="cpu", kind="cpu")
    cfg = PRESETS["cpu"]
    monkeypatch.setitem(WORKLOADS, "planted", SlowCalls())
    est = Estimator(cpu, cfg)
    assert est.checked_timing_s("torch", 0.0) == est.timing_s("torch")  # never below the plan
    assert est.checked_timing_s("torch", 0.1) == pytest.approx(
        (2 + cfg.min_reps) * 0.1 * CALL_MARGIN)
    pairs = [(Case("planted", "fp32", {"what": "ok", "i": i}, ("torch",)), "torch")
             for i in range(6)]
    results = run(pairs, None, device=cpu, run_id="c", timing=cfg, budget_s=2.0)
    assert [r.status for r in results].count("ok") == 2
    assert [r.error for r in results if r.status == "skipped"] == [BUDGET] * 4


def test_the_budget_counts_from_the_start_it_is_given(planted):
    """The CLI passes its verb's start, so time spent importing torch and starting CUDA before
    the first case is inside the box: a start 10 s ago leaves a 5 s budget nothing."""
    from bench.runner import BUDGET

    results = run([(case("ok"), "torch")] * 2, None, device=DEVICE, run_id="s",
                  timing=PRESETS["smoke"], budget_s=5.0, started=time.monotonic() - 10.0)
    assert [(r.status, r.error) for r in results] == [("skipped", BUDGET)] * 2


def test_no_budget_runs_everything_and_tells_the_time_left(planted):
    lefts = []
    results = run([(case("ok"), "torch")] * 3, None, device=DEVICE, run_id="n",
                  timing=PRESETS["smoke"], on_estimate=lefts.append)
    assert [r.status for r in results] == ["ok"] * 3
    assert len(lefts) == 3 and lefts[0] > lefts[1] > lefts[2] > 0


def test_a_copied_tree_without_git_takes_its_commit_from_the_environment(monkeypatch, tmp_path):
    import subprocess as sp

    from bench import provenance

    def no_git(*a, **k):
        raise sp.CalledProcessError(128, "git")

    monkeypatch.setattr(provenance.subprocess, "run", no_git)
    monkeypatch.setenv("COLOSSUS_GIT_SHA", "abc123")
    provenance.git_state.cache_clear()
    try:
        assert provenance.git_state() == ("abc123", None)
        monkeypatch.delenv("COLOSSUS_GIT_SHA")
        provenance.git_state.cache_clear()
        assert provenance.git_state() == (None, None)
    finally:
        provenance.git_state.cache_clear()
        provenance.software.cache_clear()


def test_checks_compare_in_chunks_and_take_a_reference_made_chunk_by_chunk(monkeypatch):
    """A whole-buffer fp64 comparison of an 8 GiB buffer would not fit an 80 GB GPU beside the
    buffers: max_rel_error works a chunk at a time, and takes the reference as a function."""
    import torch

    from bench.workloads import base

    monkeypatch.setattr(base, "COMPARE_CHUNK", 7)  # many chunks, one of them short
    b, c = torch.randn(50), torch.randn(50)
    out = b + 3.0 * c
    whole = base.max_rel_error(out, b.double() + 3.0 * c.double())
    chunked = base.max_rel_error(out, lambda i, j: b[i:j].double() + 3.0 * c[i:j].double())
    assert whole == chunked and whole < 1e-6
    bad = out.clone()
    bad[43] = float("nan")
    assert base.max_rel_error(bad, out) == float("inf")


def test_the_attention_reference_counts_its_kv_copies_in_each_chunk():
    """Decode: one query row against a long cache holds K and V copies 64x the scores."""
    import torch

    from bench.workloads.attention import reference_attention

    q, k, v = torch.randn(2, 4, 1, 64), torch.randn(2, 2, 96, 64), torch.randn(2, 2, 96, 64)
    small = reference_attention(q, k, v, causal=True, budget_bytes=4 * (4 * 96 + 2 * 96 * 64))
    whole = reference_attention(q, k, v, causal=True)
    assert torch.allclose(small[0], whole[0])


def test_cpu_cases_are_checked_one_by_one_then_timed_together(planted, db_url):
    from bench.cpu_recipe import CPU_TIMING
    from bench.device import DeviceInfo
    from bench.timing import TimingConfig

    cpu = DeviceInfo(name="cpu", kind="cpu")
    cfg = TimingConfig(warmup_s=0.0, budget_s=0.0, min_reps=2, max_reps=2, flush_l2=False,
                       rounds=2)
    pairs = [(Case("planted", "fp32", {"what": w, "i": i}, ("torch",)), "torch")
             for i, w in enumerate(("ok", "wrong", "flaky", "ok"))]
    seen = []
    with Store(db_url) as store:
        results = run(pairs, store, device=cpu, run_id="rr", timing=cfg, on_result=seen.append)
        assert store.count() == 4
    # a failed check is stored at once, a case failing while timed when it fails, the others
    # as each has its last sample
    assert [(r.params["i"], r.status) for r in results] == [
        (1, "failed"), (2, "failed"), (0, "ok"), (3, "ok")]
    assert seen == results
    assert "reference check failed" in results[0].error
    assert "lost the device" in results[1].error and results[1].median_s is None
    for r in results[2:]:
        assert r.n == 2 and r.correct is True
        timing = dict(r.software["timing"])
        assert timing.pop("yardstick_s") > 0 and timing == CPU_TIMING  # the guest's speed too
