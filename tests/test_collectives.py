"""Collectives, in one process: sizes, formulas, verifiable data, faults, statuses, the table,
the configuration, the CLI's argument errors, the process-tree teardown, and a world of one
rank run in this process (gloo; NCCL under the gpu marker). Multi-rank runs are in
test_collectives_dist.py."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time

import pytest
import torch

from bench.collectives import faults, report, status
from bench.collectives.config import CollConfig, World, world_from_env
from bench.collectives.formulas import (
    algbw_gbps,
    algbw_or_none,
    busbw_factor,
    busbw_gbps,
    shape,
)
from bench.collectives.launch import alive, descendants, teardown, torchrun_command
from bench.collectives.rank import run
from bench.collectives.sizes import format_size, parse_size, size_sweep
from bench.collectives.verify import count_wrong, fill_input, pattern, tolerance

K, M, G = 1024, 1024**2, 1024**3


# ---- sizes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("1K", K), ("1k", K), ("16M", 16 * M), ("1G", G), ("4096", 4096), ("0.5M", M // 2),
    ("8", 8), (" 2 K ", 2 * K), ("64KB", 64 * K), (128, 128)])
def test_parse_size_like_nccl_tests(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "1X", "K", "-1K", "1.2.3", "1 T"])
def test_parse_size_rejects_garbage(bad):
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(bad)


def test_parse_size_types():
    with pytest.raises(TypeError):
        parse_size(1.5)
    with pytest.raises(TypeError):
        parse_size(True)
    with pytest.raises(ValueError):
        parse_size(-3)


def test_size_sweep_factor_and_step():
    assert size_sweep(K, 16 * M, 4) == [K, 4 * K, 16 * K, 64 * K, 256 * K, M, 4 * M, 16 * M]
    assert size_sweep(K, 3 * K, 1, K) == [K, 2 * K, 3 * K]
    assert size_sweep(8, 8, 2) == [8]
    assert size_sweep(K, 3 * K, 2) == [K, 2 * K]  # the max is a bound, not a member
    with pytest.raises(ValueError, match="minimum"):
        size_sweep(2 * K, K, 2)
    with pytest.raises(ValueError, match="factor"):
        size_sweep(K, M, 0)
    assert format_size(16 * M) == "16M" and format_size(1536) == "1536"


# ---- formulas ------------------------------------------------------------------------------
def test_shapes_follow_nccl_tests_counts():
    ar = shape("all_reduce", 4 * K, 4, 4)
    assert (ar.count, ar.send_count, ar.recv_count, ar.nbytes) == (K, K, K, 4 * K)
    ag = shape("all_gather", 4 * K, 4, 4)  # count per rank; S = count * typesize * n
    assert (ag.count, ag.send_count, ag.recv_count, ag.nbytes) == (256, 256, K, 4 * K)
    assert (ag.send_inplace_offset, ag.recv_inplace_offset) == (256, 0)
    rs = shape("reduce_scatter", 4 * K, 4, 4)
    assert (rs.count, rs.send_count, rs.recv_count, rs.nbytes) == (256, K, 256, 4 * K)
    assert (rs.send_inplace_offset, rs.recv_inplace_offset) == (0, 256)
    odd = shape("all_gather", 1000, 3, 4)  # 250 elements, 83 per rank
    assert (odd.count, odd.nbytes) == (83, 996)
    assert shape("reduce_scatter", 8, 4, 4).count == 0
    with pytest.raises(ValueError, match="unknown collective"):
        shape("broadcast", K, 2, 4)


@pytest.mark.parametrize("n", [1, 2, 4, 8, 64])
def test_busbw_factors(n):
    assert busbw_factor("all_reduce", n) == pytest.approx(2 * (n - 1) / n)
    assert busbw_factor("all_gather", n) == pytest.approx((n - 1) / n)
    assert busbw_factor("reduce_scatter", n) == pytest.approx((n - 1) / n)
    if n == 1:
        assert busbw_gbps(10.0, "all_reduce", 1) is None  # undefined with one rank
    else:
        assert busbw_gbps(10.0, "all_reduce", n) == pytest.approx(10.0 * 2 * (n - 1) / n)


def test_algbw():
    assert algbw_gbps(2_000_000_000, 0.5) == pytest.approx(4.0)  # decimal GB/s
    with pytest.raises(ValueError):
        algbw_gbps(K, 0.0)
    # what the sweep uses: a call that did no work may read 0.0 s; no bandwidth, no crash
    assert algbw_or_none(K, 0.0) is None and algbw_or_none(2 * K, 2e-6) == pytest.approx(1.024)
    assert busbw_gbps(None, "all_reduce", 4) is None


# ---- verifiable data -----------------------------------------------------------------------
def test_pattern_is_reproducible_by_range_and_has_no_zeros():
    whole = pattern(0, 200_000, 3, 7, "cpu")
    assert torch.equal(pattern(70_000, 100_000, 3, 7, "cpu"), whole[70_000:170_000])
    assert not (whole == 0).any() and whole.abs().max() == 2
    assert not torch.equal(whole, pattern(0, 200_000, 2, 7, "cpu"))  # ranks differ
    assert not torch.equal(whole, pattern(0, 200_000, 3, 8, "cpu"))  # seeds differ


def _simulate(op, n, count_bytes, dtype=torch.float32, seed=5):
    """Each rank's input from fill_input, the collective done by plain torch."""
    sh = shape(op, count_bytes, n, torch.tensor([], dtype=dtype).element_size())
    inputs = []
    for r in range(n):
        x = torch.empty(sh.send_count, dtype=dtype)
        fill_input(sh, x, r, seed)
        inputs.append(x)
    if op == "all_reduce":
        outs = [torch.stack(inputs).sum(0).to(dtype) for _ in range(n)]
    elif op == "all_gather":
        outs = [torch.cat(inputs) for _ in range(n)]
    else:
        total = torch.stack(inputs).sum(0).to(dtype)
        outs = [total[r * sh.count:(r + 1) * sh.count].clone() for r in range(n)]
    return sh, outs


@pytest.mark.parametrize("op", ["all_reduce", "all_gather", "reduce_scatter"])
def test_check_counts_wrong_elements(op):
    sh, outs = _simulate(op, 3, 12 * K)
    for r, out in enumerate(outs):
        assert count_wrong(sh, out, r, 5, torch.float32).wrong == 0
    bad = outs[1].clone()
    bad[7] += 1
    bad[-1] = math.nan  # never written
    v = count_wrong(sh, bad, 1, 5, torch.float32)
    assert v.wrong == 2 and v.checked == sh.recv_count and v.max_rel_error == math.inf
    assert count_wrong(sh, outs[1], 0, 5, torch.float32).wrong > 0 or op != "reduce_scatter"
    assert count_wrong(sh, outs[0], 0, 6, torch.float32).wrong > 0  # other seed, other data


def test_bf16_sums_are_exact_for_small_worlds():
    sh, outs = _simulate("all_reduce", 4, 4 * K, torch.bfloat16)
    assert count_wrong(sh, outs[2], 2, 5, torch.bfloat16).wrong == 0
    assert tolerance(sh, torch.bfloat16) == 0.0
    big = shape("all_reduce", 4 * K, 512, 2)  # 2n = 1024 > 256: bf16 rounds
    assert tolerance(big, torch.bfloat16) == pytest.approx(511 * 2.0**-8)
    assert tolerance(big, torch.float32) == 0.0


# ---- faults --------------------------------------------------------------------------------
def test_fault_spec():
    fs = faults.parse_faults("wrong:1, die:3:after=4K:op=reduce_scatter,hang:0:after=1K")
    assert fs == [faults.Fault("wrong", 1), faults.Fault("die", 3, 4096, "reduce_scatter"),
                  faults.Fault("hang", 0, 1024)]
    assert faults.corrupts(fs, 1, 8, "all_reduce") and not faults.corrupts(fs, 0, 8, "all_gather")
    assert fs[1].fires(3, 8192, "reduce_scatter") and not fs[1].fires(3, 4096, "reduce_scatter")
    assert not fs[1].fires(3, 8192, "all_reduce")
    assert faults.parse_faults(None) == [] and faults.parse_faults("") == []
    for bad in ("explode:1", "die", "die:x", "die:1:after", "die:1:when=3", "die:1:op=bcast"):
        with pytest.raises(ValueError, match="COLOSSUS_BENCH_FAULT"):
            faults.parse_faults(bad)


# ---- statuses and diagnosis ----------------------------------------------------------------
def _st(rank, step, state, what="x", error=None, t=0.0):
    return {"rank": rank, "pid": 100 + rank, "host": "h", "step": step, "what": what,
            "state": state, "error": error, "t": t}


def test_status_file_roundtrip(tmp_path):
    w = status.StatusWriter(tmp_path, 2)
    w.step("all_reduce 1024 B out-of-place: timing")
    w.finish(status.ERROR, "boom")
    w.finish(status.TERMINATED)  # the first final word stands
    got = status.read_statuses(tmp_path)[2]
    assert (got["step"], got["state"], got["error"]) == (1, "error", "boom")
    assert got["pid"] == os.getpid()
    status.StatusWriter(None, 0).step("no folder: no file")  # srun without a folder


def test_diagnose_names_the_dead_rank():
    sts = {0: _st(0, 9, "error", error="RuntimeError: [/x/pair.cc:537] Connection reset", t=2),
           1: _st(1, 9, "terminated"), 2: _st(2, 8, "running", "all_reduce 4096 B: check")}
    msg = status.diagnose(sts, 3)
    assert msg.startswith("rank 2 died after step 8 (all_reduce 4096 B: check)")
    assert "pair.cc" not in msg and "Connection reset" in msg


def test_diagnose_names_the_laggard_and_the_timeout():
    sts = {0: _st(0, 7, "error", "all_reduce 4096 B out-of-place: timing", "Timed out", 1),
           1: _st(1, 6, "terminated", "all_reduce 1024 B in-place: check")}
    msg = status.diagnose(sts, 2, timed_out=True, timeout_s=3)
    assert msg.startswith("no progress for 3 s (--timeout)")
    assert "rank 1 stopped after step 6 (all_reduce 1024 B in-place: check) while rank 0 " \
           "waited in step 7" in msg
    stuck = {r: _st(r, 5, "terminated", "all_gather 1024 B in-place: timing") for r in (0, 1)}
    assert "ranks 0, 1 stuck in step 5" in status.diagnose(stuck, 2, timed_out=True, timeout_s=1)
    assert "ranks 1, 2 never started" in status.diagnose({0: _st(0, 1, "terminated")}, 3)
    assert status.diagnose({}, 1).startswith("no rank reported a status")


# ---- the table -----------------------------------------------------------------------------
# The row pattern a parser of nccl-tests output uses (copied in spirit from such parsers).
NCCL_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\w+)\s+(\w+)\s+(-?\d+)\s+([\d.]+)\s+([\d.]+)\s+"
                      r"([\d.]+)\s+(\S+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\S+)")


def test_table_lines_parse_like_nccl_tests():
    st = report.IterStats.of([1e-3, 2e-3, 3e-3])
    out = report.Cell(2e-3, 0.5, 0.75, 0, st)
    inp = report.Cell(123.4e-6, 8.3, 12.45, 0, st)
    text = report.line(1048576, 262144, "fp32", "sum", out, inp)
    m = NCCL_ROW.match(text)
    assert m, text
    assert m.group(3) == "float" and m.group(6) == "2000.0" and m.group(10) == "123.4"
    assert report.time_text(12.3456e-3) == "  12346" and report.time_text(5e-6) == "   5.00"
    # a failed check: its time, no speed (0.00 where nccl-tests prints numbers), #wrong %5g
    wrong = report.line(1024, 256, "bf16", "sum", report.Cell(3e-6, None, None, 7), inp)
    assert "bfloat16" in wrong and wrong.split()[5:9] == ["3.00", "0.00", "0.00", "7"]
    assert len(report.header()) == 3 and "#wrong" in report.header()[1]
    assert "median" in report.header(iter_stats=True)[1]
    with_stats = report.line(1, 1, "fp32", "sum", out, inp, iter_stats=True)
    assert with_stats.split()[13:] == ["2000.0", "2980.0", "50.0"] * 2
    assert len(with_stats) == len(report.header(iter_stats=True)[1])


def test_footer_and_iteration_statistics():
    cells = [report.Cell(1.0, 2.0, 3.0, 0), report.Cell(1.0, 2.0, 5.0, 0),
             report.Cell(None, None, None, 4)]
    foot = report.footer(cells, 4)
    assert foot[0] == "# Out of bounds values : 1 FAILED"
    assert foot[1].startswith("# Avg bus bandwidth    : 4 ")
    assert "undefined with one rank" in report.footer(cells[:1], 1)[2]
    assert report.aggregate_samples([[1.0, 3.0], [3.0, 5.0]]) == [2.0, 4.0]
    with pytest.raises(ValueError):
        report.aggregate_samples([[1.0], [1.0, 2.0]])
    s = report.IterStats.of([1.0] * 99 + [10.0])
    assert s.median_s == 1.0 and 1.0 < s.p99_s <= 10.0 and s.cv > 0


# ---- configuration, world, CLI arguments ---------------------------------------------------
def test_config_validates_and_roundtrips():
    cfg = CollConfig(ops=("all_gather", "all_reduce"), min_bytes=K, max_bytes=M, step_factor=4)
    assert CollConfig.from_json(cfg.to_json()) == cfg
    assert cfg.sizes() == [K, 4 * K, 16 * K, 64 * K, 256 * K, M]
    for bad, match in [(dict(ops=("broadcast",)), "unknown collective"),
                       (dict(ops="all_reduce"), "sequence"), (dict(backend="mpi"), "backend"),
                       (dict(dtype="int4"), "datatype"), (dict(iters=0), "iters"),
                       (dict(min_bytes=M, max_bytes=K), "minimum"),
                       (dict(timeout_s=0), "timeout")]:
        with pytest.raises(ValueError, match=match):
            CollConfig(**bad)
    with pytest.raises(TypeError):
        CollConfig(iters=2.5)


def test_world_from_env():
    assert world_from_env({}) is None
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3"}) == \
        World(3, 8, 3, "torchrun")
    step = {"SLURM_PROCID": "9", "SLURM_STEP_NUM_TASKS": "16", "SLURM_LOCALID": "1"}
    assert world_from_env(step) == World(9, 16, 1, "slurm")
    assert world_from_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "16"}) is None  # batch script
    assert world_from_env({"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"}) is None
    with pytest.raises(ValueError, match="rank variables"):
        world_from_env({"RANK": "x", "WORLD_SIZE": "2"})


def test_cli_argument_errors_are_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))  # not the user's database
    monkeypatch.delenv("COLOSSUS_BENCH_DB", raising=False)
    from cli import app

    runner = CliRunner()
    for args, needle in [(["-b", "1X"], "invalid size"),
                         (["--collective", "bcast"], "unknown collective"),
                         (["-b", "1M", "-e", "1K", "--backend", "gloo"], "minimum"),
                         (["--backend", "mpi"], "'mpi' is not one of")]:
        r = runner.invoke(app, ["allreduce", *args])
        assert r.exit_code == 2, r.output
        assert needle in r.output
    if not torch.cuda.is_available():
        r = runner.invoke(app, ["allreduce", "--backend", "nccl"])
        assert r.exit_code == 2 and "needs CUDA" in r.output


def test_cli_ops_parsing():
    from bench.collectives.cli import _ops

    assert _ops(None) == ("all_reduce",)
    assert _ops(["all"]) == ("all_reduce", "all_gather", "reduce_scatter")
    assert _ops(["reduce_scatter,all_reduce", "all_reduce"]) == ("reduce_scatter", "all_reduce")


# ---- the teardown leaves no process behind -------------------------------------------------
def test_teardown_kills_children_in_their_own_sessions(tmp_path):
    """torchrun starts each worker in a session of its own: killing its group is not enough."""
    token = str(tmp_path / "marker")
    code = ("import subprocess, sys, time\n"
            "kids = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', "
            f"{token!r}], start_new_session=True) for _ in range(2)]\n"
            "print('ready', flush=True)\n"
            "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code, token], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    assert parent.stdout.readline().strip() == "ready"
    kids = descendants(parent.pid)
    assert len(kids) == 2 and all(alive(k) for k in kids)
    t0 = time.monotonic()
    teardown(parent, token, grace_s=2.0)
    assert time.monotonic() - t0 < 10
    assert parent.returncode is not None
    deadline = time.monotonic() + 5
    while any(alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(k) for k in kids)


def test_torchrun_command():
    cmd = torchrun_command(4, "/tmp/x/config.json")
    assert cmd[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc-per-node=4" in cmd and cmd[-4:] == ["-m", "bench.collectives", "--config",
                                                        "/tmp/x/config.json"]
    with pytest.raises(ValueError):
        torchrun_command(0, "c")


# ---- a world of one rank, in this process --------------------------------------------------
def _one_rank(backend, db_url, capsys, monkeypatch):
    for var in ("MASTER_ADDR", "MASTER_PORT", faults.FAULT_ENV):
        monkeypatch.delenv(var, raising=False)
    cfg = CollConfig(ops=("all_reduce", "all_gather", "reduce_scatter"), backend=backend,
                     min_bytes=K, max_bytes=4 * K, step_factor=4, iters=3, warmup_iters=1,
                     db_url=db_url, run_id="one-rank")
    rows = run(cfg, World(0, 1, 0, "torchrun"))
    return rows, capsys.readouterr().out


def _check_one_rank_rows(rows, db_url, table, backend):
    from results.store import Store

    assert len(rows) == 3 * 2 * 2  # ops x sizes x placements
    for r in rows:
        assert r.correct is True and r.world_size == 1 and r.rank == 0
        assert r.workload == "allreduce" and r.backend == backend and r.dtype == "fp32"
        assert set(r.params) == {"op", "bytes", "placement", "count", "nranks"}
        assert r.busbw_gbps is None  # undefined with one rank
        if backend == "nccl":  # no peer, no data moved: checked, never a throughput
            assert r.status == "skipped" and r.error.startswith("one rank: NCCL moves no data")
            assert r.algbw_gbps is None and r.n is None and not r.samples_s
            continue
        assert r.status == "ok"
        assert r.algbw_gbps == pytest.approx(r.params["bytes"] / r.mean_s / 1e9)
        assert r.n == 3 and len(r.samples_s) == 3 and r.median_s > 0
    assert all(NCCL_ROW.match(t) for t in table.splitlines()
               if t.strip() and not t.startswith("#"))  # nccl-tests' numbers, printed
    with Store(db_url) as store:
        assert store.count() == 12
    assert "bus bandwidth is undefined with one rank" in table
    assert "# Avg bus bandwidth    : 0 " in table  # nccl-tests: factor 0, busbw 0.00


def test_world_of_one_gloo_rank(db_url, capsys, monkeypatch):
    rows, table = _one_rank("gloo", db_url, capsys, monkeypatch)
    _check_one_rank_rows(rows, db_url, table, "gloo")
    assert rows[0].telemetry["source"] == "none"


@pytest.mark.gpu
def test_world_of_one_nccl_rank(db_url, capsys, monkeypatch):
    rows, table = _one_rank("nccl", db_url, capsys, monkeypatch)
    _check_one_rank_rows(rows, db_url, table, "nccl")
    assert rows[0].device["kind"] == "cuda"


# ---- NCCL with one rank: the decision, on CPU -----------------------------------------------
def test_one_nccl_rank_is_no_bandwidth_only_there():
    from bench.collectives.backend import not_a_bandwidth

    assert not_a_bandwidth("nccl", 1).startswith("one rank: NCCL moves no data")
    assert not_a_bandwidth("nccl", 2) is None and not_a_bandwidth("gloo", 1) is None


def test_one_rank_nccl_aggregate_is_skipped_printed_and_stored(db_url, monkeypatch):
    """The sweep's own aggregate step with NCCL's one-rank samples (microseconds, or 0.0 when
    the call did nothing): the table prints nccl-tests numbers, the record is skipped with its
    reason and the check, the door takes it; a 0.0 time no longer stops the rank."""
    import dataclasses

    from bench.collectives.formulas import shape as make_shape
    from bench.collectives.worker import RankRun
    from results.store import Store

    cfg = CollConfig(backend="gloo", iters=3, db_url=None, run_id="one-nccl", telemetry=False)
    rr = RankRun(cfg, World(0, 1, 0, "torchrun"), status.StatusWriter(None, 0))
    rr.cfg = dataclasses.replace(cfg, backend="nccl")  # the decisions NCCL's rank 0 takes
    rr.dtype_name, rr.dtype, rr.redop, rr.cycle = "fp32", torch.float32, "sum", 0
    sh = make_shape("all_reduce", 1 << 30, 1, 4)
    tele = {"source": "none"}
    rows = []
    for samples in ([2.9e-6, 3.0e-6, 3.1e-6], [0.0, 0.0, 0.0]):
        gathered = [{"samples": samples, "wrong": 0, "err": 0.0, "telemetry": tele}]
        row, cell = rr.aggregate(sh, "in", gathered)
        assert row.status == "skipped" and row.correct is True and row.max_rel_error == 0.0
        assert row.error.startswith("one rank: NCCL moves no data")
        assert row.algbw_gbps is None and row.median_s is None and not row.samples_s
        text = report.line(sh.nbytes, sh.count, "fp32", "sum", cell, cell)
        assert NCCL_ROW.match(text), text
        rows.append(row)
    assert report.line(sh.nbytes, sh.count, "fp32", "sum", cell, cell).split()[6] == "0.00"
    with Store(db_url) as store:
        store.insert(rows[:1])
        assert store.count() == 1


def test_allreduce_refuses_buffers_larger_than_the_host_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    db = tmp_path / "never.db"
    res = CliRunner().invoke(app, ["allreduce", "-b", "8", "-e", "100G", "--db", str(db)])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "GiB of buffers for 2 local ranks" in lines[0], res.output
    assert "Traceback" not in res.output and not db.exists()
