"""nccl-tests semantics one-to-one: its options and names (-o -d -a -z -N -g -G -I, the
collective by --collective or by nccl-tests' binary names), refusals in one line, every
reduction and type checked exactly, and our output read by a parser written to nccl-tests'
format (header-indexed and regex), with one rank and with a planted wrong rank."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.collectives import backend as be
from bench.collectives import report
from bench.collectives.cli import _ops
from bench.collectives.config import (
    REDOPS,
    CollConfig,
    World,
    parse_dtypes,
    parse_redops,
    refusal,
)
from bench.collectives.faults import FAULT_ENV
from bench.collectives.formulas import shape
from bench.collectives.verify import count_wrong, fill_input, tolerance, unwritten

K = 1024
ROOT = Path(__file__).resolve().parents[1]


# ---- a parser of nccl-tests output ---------------------------------------------------------
# What scripts that read nccl-tests logs do: find the column-name header line, index the
# columns by name (two groups: out-of-place, then in-place), and take every line that is not a
# comment and matches the row pattern; numbers must be numbers, #wrong a number or N/A.
ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(-?\d+)"
                 + 2 * r"\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)" + r"\s*$")
AVG_BUSBW = re.compile(r"^# Avg bus bandwidth\s+:\s+(\S+)")
OOB = re.compile(r"^# Out of bounds values : (\d+) (OK|FAILED)")


def parse_nccl_tests(text: str) -> tuple[list[dict], list[float], list[int]]:
    """(rows, avg busbw per table, out-of-bounds count per table) of nccl-tests output."""
    names = None
    rows, avgs, oobs = [], [], []
    for line in text.splitlines():
        if line.startswith("#") and "size" in line and "#wrong" in line:
            tokens = line.lstrip("#").split()
            half = (len(tokens) - 5) // 2
            names = tokens[:5] + [f"out_{t}" for t in tokens[5:5 + half]] + \
                [f"in_{t}" for t in tokens[5 + half:]]
            continue
        if m := AVG_BUSBW.match(line):
            avgs.append(float(m.group(1)))
        if m := OOB.match(line):
            oobs.append(int(m.group(1)))
        if line.startswith("#") or not line.strip():
            continue
        m = ROW.match(line)
        if m is None or names is None:
            continue
        row = dict(zip(names, line.split()))
        for key, value in row.items():
            if key in ("type", "redop"):
                continue
            if key.endswith("#wrong") and value == "N/A":
                row[key] = None
            else:
                row[key] = float(value)  # a ValueError here: a cell that is not a number
        rows.append(row)
    return rows, avgs, oobs


def _env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in (FAULT_ENV, "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                        "MASTER_PORT", "COLOSSUS_BENCH_DB")}
    env.update(extra)
    return env


def _cli(args, env, cwd=ROOT, timeout=240):
    return subprocess.run([sys.executable, "-m", "cli", "allreduce", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, env=env)


def test_one_rank_output_parses_like_nccl_tests(tmp_path):
    """One rank (RANK=0 WORLD_SIZE=1, as torchrun/srun start it): busbw 0.00 as nccl-tests
    prints it (factor 0), #wrong 0, the footer's average 0; -c 0 gives N/A."""
    args = ["--backend", "gloo", "--collective", "all_reduce_perf", "-b", "1K", "-e", "4K",
            "-f", "4", "-n", "2", "-w", "1", "-o", "sum,max", "-d", "float,int8",
            "--no-telemetry", "--db", str(tmp_path / "one.db")]
    r = _cli(args, _env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"))
    assert r.returncode == 0, r.stderr[-3000:]
    rows, avgs, oobs = parse_nccl_tests(r.stdout)
    assert len(rows) == 2 * 2 * 2  # sizes x types x reductions
    assert {(x["type"], x["redop"]) for x in rows} == {
        ("float", "sum"), ("float", "max"), ("int8", "sum"), ("int8", "max")}
    for x in rows:
        assert x["out_busbw"] == 0.0 and x["in_busbw"] == 0.0
        assert x["out_#wrong"] == 0 and x["in_#wrong"] == 0
        assert x["out_time"] > 0 and x["out_algbw"] >= 0 and x["root"] == -1
        assert x["count"] == x["size"] / (4 if x["type"] == "float" else 1)
    assert avgs == [0.0] * 4 and oobs == [0] * 4
    unchecked = _cli([*args[:-2], "-c", "0", "--db", str(tmp_path / "c0.db")],
                     _env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"))
    assert unchecked.returncode == 0, unchecked.stderr[-3000:]
    rows, _, _ = parse_nccl_tests(unchecked.stdout)
    assert rows and all(x["out_#wrong"] is None and x["in_#wrong"] is None for x in rows)
    assert "0.00    N/A" in unchecked.stdout  # "  %6.2f  %5s"


@pytest.mark.slow
def test_planted_wrong_rank_parses_and_fails(tmp_path):
    """Two ranks, prod over bfloat16; from 4 KiB rank 1 corrupts its output: those lines
    carry #wrong > 0 and no speed (time, then 0.00), the footer says FAILED, exit 1."""
    r = _cli(["--backend", "gloo", "--nproc-per-node", "2", "-b", "1K", "-e", "16K", "-f", "4",
              "-n", "2", "-w", "1", "-o", "prod", "-d", "bfloat16", "-a", "3", "-z", "1",
              "--no-telemetry", "--db", str(tmp_path / "w.db")],
             _env(**{FAULT_ENV: "wrong:1:after=1K"}))
    assert r.returncode == 1, r.stderr[-3000:]
    assert "data check failed (#wrong > 0) for 4 of 6 rows" in r.stderr
    assert "# Blocking Enabled" in r.stdout and "(-a 3): max over ranks" in r.stdout
    rows, avgs, oobs = parse_nccl_tests(r.stdout)
    assert [x["size"] for x in rows] == [K, 4 * K, 16 * K]
    assert all(x["type"] == "bfloat16" and x["redop"] == "prod" for x in rows)
    good, *bad = rows
    assert good["out_#wrong"] == 0 and good["in_#wrong"] == 0 and good["out_time"] > 0
    for x in bad:
        assert x["out_#wrong"] > 0 and x["in_#wrong"] > 0
        assert x["out_time"] > 0 and x["out_algbw"] == 0.0 and x["in_busbw"] == 0.0
    assert oobs == [4] and len(avgs) == 1 and avgs[0] >= 0
    from results.store import Store

    with Store(f"sqlite:///{tmp_path / 'w.db'}") as store:
        stored = [x.to_dict() for x in store.records()]
    assert len(stored) == 6
    for x in stored:
        assert x["params"]["redop"] == "prod" and x["params"]["average"] == 3
        assert x["params"]["blocking"] == 1 and x["dtype"] == "bf16"
        assert (x["correct"] is True) == (x["params"]["bytes"] == K)


# ---- options and refusals ------------------------------------------------------------------
def test_names_follow_nccl_tests():
    assert parse_dtypes("float") == ("fp32",) and parse_dtypes("half,bfloat16") == (
        "fp16", "bf16")
    assert parse_dtypes("bf16") == ("bf16",)  # the project's names too
    assert "uint32" not in parse_dtypes("all") and "fp8_e4m3" in parse_dtypes("all")
    assert parse_redops("all") == REDOPS and parse_redops("min,max") == ("min", "max")
    with pytest.raises(ValueError, match="--collective all_reduce"):
        parse_redops("all_reduce")  # the old --op meaning: a hint, not a guess
    with pytest.raises(ValueError, match="pre-multiplied"):
        parse_redops("mulsum")
    assert _ops(["all_gather_perf", "./build/reduce_scatter_perf"]) == (
        "all_gather", "reduce_scatter")
    assert refusal("gloo", "fp8_e4m3", "all_gather", None) is not None
    assert refusal("nccl", "fp8_e4m3", "all_gather", None) is None
    assert "fp8 reductions" in refusal("nccl", "fp8_e5m2", "all_reduce", "sum")
    assert "floating types only" in refusal("gloo", "int32", "all_reduce", "avg")
    cfg = CollConfig(ops=("all_reduce", "all_gather"), dtypes=("fp8_e4m3",), backend="nccl")
    assert cfg.tests() == [("all_gather", "fp8_e4m3", None)]
    assert CollConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize(("args", "needle"), [
    (["-g", "2"], "one GPU per rank"), (["-t", "4"], "one thread per rank"),
    (["-m", "2"], "aggregated"), (["-G", "1"], "CUDA graph"), (["-o", "mulsum"], "mulsum"),
    (["--op", "all_gather"], "--collective all_gather"), (["-d", "uint32"], "nothing to run"),
    (["-d", "f8e4m3"], "gloo has no f8e4m3"), (["-a", "5"], "-a must be"),
    (["-N", "-1"], "-N must be"), (["-z", "2"], "0 or 1"), (["-d", "float128"], "datatype"),
    (["-o", "avg", "-d", "int8"], "floating types only")])
def test_refused_options_are_one_line(args, needle, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # not the user's database
    monkeypatch.delenv("COLOSSUS_BENCH_DB", raising=False)
    from cli import app

    r = CliRunner().invoke(app, ["allreduce", "--backend", "gloo", *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_average_modes_pick_samples_whose_mean_is_the_nccl_tests_time():
    per_rank = [[1.0, 3.0], [5.0, 7.0], [2.0, 2.0]]  # rank means 2, 6, 2
    assert report.aggregate_samples(per_rank, 1) == pytest.approx([8 / 3, 4.0])
    assert report.aggregate_samples(per_rank, 0) == [1.0, 3.0]
    assert report.aggregate_samples(per_rank, 2) == [1.0, 3.0]  # first of the fastest
    assert report.aggregate_samples(per_rank, 3) == [5.0, 7.0]


# ---- every reduction and type, checked exactly ---------------------------------------------
def _simulate(op, redop, dtype, n=3, nbytes=3 * K, seed=4):
    sh = shape(op, nbytes, n, torch.tensor([], dtype=dtype).element_size())
    inputs = []
    for r in range(n):
        x = torch.empty(sh.send_count, dtype=dtype)
        fill_input(sh, x, r, seed, redop)
        inputs.append(x)
    if op == "all_gather":
        return sh, [torch.cat(inputs) for _ in range(n)]
    wide = torch.stack([x.to(torch.float64 if dtype.is_floating_point else torch.int64)
                        for x in inputs])
    total = {"sum": wide.sum(0), "avg": wide.sum(0) / n, "prod": wide.prod(0),
             "min": wide.min(0).values, "max": wide.max(0).values}[redop].to(dtype)
    if op == "all_reduce":
        return sh, [total.clone() for _ in range(n)]
    return sh, [total[r * sh.count:(r + 1) * sh.count].clone() for r in range(n)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64,
                                   torch.int8, torch.uint8, torch.int32, torch.int64])
@pytest.mark.parametrize("redop", REDOPS)
@pytest.mark.parametrize("op", ["all_reduce", "reduce_scatter"])
def test_check_is_exact_for_every_reduction_and_type(op, redop, dtype):
    if redop == "avg" and not dtype.is_floating_point:
        pytest.skip("refused: averages of integer types")
    sh, outs = _simulate(op, redop, dtype)
    for r, out in enumerate(outs):
        assert count_wrong(sh, out, r, 4, dtype, redop).wrong == 0, (r, out[:8])
    bad = outs[1].clone()
    bad[5] += 1
    assert count_wrong(sh, bad, 1, 4, dtype, redop).wrong == 1
    assert count_wrong(sh, outs[1], 1, 5, dtype, redop).wrong > 0  # other seed, other data
    untouched = torch.full_like(outs[0], unwritten(dtype))
    assert count_wrong(sh, untouched, 0, 4, dtype, redop).wrong == sh.recv_count
    if not dtype.is_floating_point or redop in ("min", "max", "prod"):
        assert tolerance(sh, dtype, redop) == 0.0


def test_all_gather_of_integer_types():
    for dtype in (torch.uint8, torch.int64):
        sh, outs = _simulate("all_gather", None, dtype)
        assert count_wrong(sh, outs[2], 2, 4, dtype, None).wrong == 0


# ---- the CUDA-only decisions, on CPU --------------------------------------------------------
def test_cuda_device_choice_and_process_group_arguments():
    assert be.cuda_index("gloo", 3, 8) is None
    assert be.cuda_index("nccl", 3, 8) == 3
    assert be.cuda_index("nccl", 5, 1) == 0  # a site that binds one GPU per task
    with pytest.raises(RuntimeError, match="needs CUDA"):
        be.cuda_index("nccl", 0, 0)
    cfg = CollConfig(backend="nccl", timeout_s=7)
    kw = be.init_kwargs(cfg, World(0, 1, 0, "torchrun"), 0, env={})
    assert kw["device_id"] == torch.device("cuda", 0) and kw["world_size"] == 1
    assert kw["timeout"].total_seconds() == 7 and kw["backend"] == "nccl"
    kw = be.init_kwargs(cfg, World(2, 4, 2, "slurm"), 2, env={"MASTER_ADDR": "n1"})
    assert "store" not in kw and kw["device_id"] == torch.device("cuda", 2)
    assert "device_id" not in be.init_kwargs(CollConfig(), World(0, 2, 0, "torchrun"), None,
                                             env={"MASTER_ADDR": "x"})


@pytest.mark.gpu
def test_world_of_one_nccl_rank_every_type_and_reduction(db_url, monkeypatch, capsys):
    """The CUDA-only path at world size 1: device placement, set_device and device_id before
    NCCL starts, CUDA-event marks, bf16/fp16 reductions and fp8 all_gather on NCCL."""
    from bench.collectives.rank import run

    for var in ("MASTER_ADDR", "MASTER_PORT", FAULT_ENV):
        monkeypatch.delenv(var, raising=False)
    cfg = CollConfig(ops=("all_reduce", "all_gather", "reduce_scatter"), backend="nccl",
                     dtypes=("bf16", "fp16", "int8", "fp8_e4m3", "fp8_e5m2"), redops=REDOPS,
                     min_bytes=K, max_bytes=64 * K, step_factor=8, iters=3, warmup_iters=1,
                     db_url=db_url, run_id="nccl-one")
    rows = run(cfg, World(0, 1, 0, "torchrun"))
    # one rank: NCCL moves no data, so every row is checked but stored as skipped
    assert rows and all(r.status == "skipped" and r.correct is True for r in rows), [
        r.error for r in rows if r.status != "skipped"][:3]
    assert all(r.error.startswith("one rank: NCCL moves no data") for r in rows)
    assert all(r.device["kind"] == "cuda" for r in rows)
    fp8 = [r for r in rows if r.dtype.startswith("fp8")]
    assert fp8 and {r.params["op"] for r in fp8} == {"all_gather"}
    assert "# not run: -d f8e4m3 with all_reduce" in capsys.readouterr().out


def test_help_names_every_type_reduction_and_collective():
    from typer.testing import CliRunner

    from bench.collectives.config import DTYPES, REFUSED_TYPES
    from bench.collectives.formulas import OPS
    from cli import app

    text = " ".join(CliRunner().invoke(app, ["allreduce", "-h"], env={"COLUMNS": "300"})
                    .output.replace("│", " ").split())
    for ours, (_, nccl) in DTYPES.items():
        assert ours in REFUSED_TYPES or nccl in text, nccl
    assert all(r in text for r in REDOPS) and all(o in text for o in OPS)
