"""The pytest-benchmark suite fits pytest-benchmark's own tools: groups per workload, plain
string params, machine_info stable across runs, `pytest-benchmark compare` and
--benchmark-compare-fail on two real runs (CPU, smoke timing), options it owns refused; and the
cache flush it hands to pedantic(setup=...) returns None (the GPU-only defect, run on CPU)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.timing import flusher

ROOT = Path(__file__).resolve().parent.parent
FILTER = "membw/*:torch"


def _suite(tmp_path, *args, timing="smoke"):
    env = {**os.environ, "COLOSSUS_BENCH_SUITE": "quick", "COLOSSUS_BENCH_FILTER": FILTER,
           "COLOSSUS_BENCH_TIMING": timing, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "bench/benchmarks", "-q", "-p", "no:cacheprovider",
         f"--benchmark-storage=file://{tmp_path / 'store'}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _cli():
    exe = shutil.which("pytest-benchmark") or shutil.which("py.test-benchmark")
    return [exe] if exe else [sys.executable, "-m", "pytest_benchmark.cli"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pb")
    first = _suite(tmp, "--benchmark-autosave", f"--benchmark-json={tmp / 'a.json'}")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = _suite(tmp, "--benchmark-compare", "--benchmark-compare-fail=median:1000%",
                    f"--benchmark-json={tmp / 'b.json'}")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return tmp, json.loads((tmp / "a.json").read_text()), json.loads((tmp / "b.json").read_text())


@pytest.mark.slow
def test_groups_params_and_run_id(two_runs):
    _, a, b = two_runs
    assert len(a["benchmarks"]) == 2
    for bench in a["benchmarks"]:
        assert bench["group"] == "membw"
        assert bench["params"] == {"pair": bench["param"]}  # a plain string: the case key
        assert bench["param"].startswith("membw/fp32/op=") and bench["param"].endswith(":torch")
        assert bench["extra_info"]["run_id"] == bench["extra_info"]["record"]["run_id"]
    assert a["benchmarks"][0]["extra_info"]["run_id"] != b["benchmarks"][0]["extra_info"]["run_id"]


@pytest.mark.slow
def test_machine_info_is_the_same_for_two_runs(two_runs):
    _, a, b = two_runs
    assert a["machine_info"] == b["machine_info"]
    assert a["machine_info"]["colossus_device"]["kind"] in ("cpu", "cuda")


@pytest.mark.slow
def test_pytest_benchmark_compare_reads_both_runs(two_runs):
    tmp, _, _ = two_runs
    proc = subprocess.run([*_cli(), "compare", str(tmp / "a.json"), str(tmp / "b.json"),
                           "--group-by=group"], cwd=tmp, capture_output=True, text=True,
                          timeout=120)  # cwd: outside the project, whose pytest config it reads
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "membw" in proc.stdout and "op=copy" in proc.stdout


@pytest.mark.slow
def test_compare_fail_fails_a_regression(two_runs):
    """A saved run made 1000x faster than the truth: any real run regresses against it."""
    tmp, _, _ = two_runs
    (saved,) = (tmp / "store").glob("*/0001_*.json")
    doc = json.loads(saved.read_text())
    for bench in doc["benchmarks"]:
        for key in ("min", "max", "mean", "median", "stddev", "iqr", "q1", "q3"):
            bench["stats"][key] /= 1000
    (saved.parent / "0009_fast.json").write_text(json.dumps(doc))
    proc = _suite(tmp, "--benchmark-compare=0009", "--benchmark-compare-fail=median:5%")
    assert proc.returncode != 0 and "Performance has regressed" in proc.stdout + proc.stderr


@pytest.mark.parametrize("flag", ["--benchmark-timer=time.process_time",
                                  "--benchmark-min-rounds=50"])
def test_options_the_suite_owns_are_refused_in_one_line(tmp_path, flag):
    proc = _suite(tmp_path, flag, "--co")
    assert proc.returncode != 0
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and "COLOSSUS_BENCH_TIMING" in err[0], proc.stderr


def test_the_flush_handed_to_pedantic_returns_none(benchmark):
    """The L2 flush given to benchmark.pedantic(setup=...) must return None: pytest-benchmark
    reads a true return value as (args, kwargs). Here the buffer is a CPU tensor with the same
    `fill_` contract as the GPU one (it returns the tensor), through real pedantic."""
    buf = torch.empty(1 << 20)
    calls = []
    benchmark.pedantic(lambda: calls.append(1), setup=flusher(buf), rounds=3)
    assert len(calls) == 3 and bool((buf == 1).all())


def test_a_flush_returning_the_tensor_breaks_pedantic(benchmark):
    """The defect itself (what every GPU benchmark hit), so the test above means something."""
    buf = torch.empty(1 << 20)
    with pytest.raises(RuntimeError, match="ambiguous"):
        benchmark.pedantic(lambda: None, setup=lambda: buf.fill_(1), rounds=1)
