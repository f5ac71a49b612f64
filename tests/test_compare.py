"""The comparison view: ours (triton) against the vendor baseline, case by case."""

import pytest
from rich.console import Console

from results.compare import compare, comparison_table, geomean, summary
from results.schema import Result


def row(backend, median_s, *, correct=True, status="ok", err=1e-3, workload="attention",
        params=None, run_id="r", software=None):
    return Result(run_id=run_id, software=software or {}, workload=workload, backend=backend,
                  dtype="bf16",
                  params=params or {"s": 64}, host="h", device={"name": "GPU"},
                  median_s=median_s, correct=correct, status=status, max_rel_error=err,
                  tflops=1.0 / median_s if median_s else None)


def test_fastest_correct_vendor_backend_is_the_baseline():
    rows = compare([row("triton", 1.0), row("sdpa-math", 4.0), row("sdpa-flash", 2.0),
                    row("sdpa-cudnn", 0.5, correct=False)])
    (c,) = rows
    assert c.baseline.backend == "sdpa-flash" and c.speedup == pytest.approx(2.0)
    assert c.case == "attention/bf16/s=64" and c.ours.max_rel_error == 1e-3


def test_memory_bound_cases_are_shown_by_bandwidth_as_the_run_table_shows_them():
    decode = [row("triton", 1e-3, workload="decode_attention"),
              row("torch", 2e-3, workload="decode_attention")]
    for r in decode:
        r.gbps = 0.5 / r.median_s  # decode reports TFLOP/s too, but bandwidth bounds it
    gemm = [row("triton", 1.0, workload="gemm"), row("torch", 2.0, workload="gemm")]
    con = Console(width=200, record=True)
    con.print(comparison_table(compare(decode + gemm)))
    lines = con.export_text().splitlines()
    assert any("decode_attention" in ln and "GB/s" in ln and "TFLOP/s" not in ln for ln in lines)
    assert any(ln.lstrip("│ ").startswith("gemm") and "TFLOP/s" in ln for ln in lines)


def test_a_failed_or_wrong_side_is_never_a_speedup():
    wrong = compare([row("triton", 1.0, correct=False, status="failed"), row("torch", 2.0)])
    assert wrong[0].speedup is None and wrong[0].to_dict()["ours"]["status"] == "failed"
    unchecked = compare([row("triton", 1.0, correct=None), row("torch", 2.0)])
    assert unchecked[0].speedup is None
    no_vendor = compare([row("triton", 1.0), row("torch", None, status="skipped",
                                                   correct=None)])
    assert no_vendor[0].baseline.status == "skipped" and no_vendor[0].speedup is None
    assert "0 of 1 cases compared" in summary(no_vendor)


def test_cases_without_ours_are_left_out_and_geomean():
    rows = compare([row("torch", 1.0, workload="hostdevice"),
                    row("triton", 1.0, params={"s": 1}), row("torch", 4.0, params={"s": 1}),
                    row("triton", 4.0, params={"s": 2}), row("torch", 1.0, params={"s": 2})])
    assert [c.speedup for c in rows] == [4.0, 0.25]
    assert geomean([4.0, 0.25]) == pytest.approx(1.0) and geomean([]) is None


def timed(run_id, backend, median_s, yardstick_s=None, s=64):
    # with a yardstick: a CPU row, and how fast the guest was while it was timed
    timing = {"torch_threads": 1, "gc": False, "yardstick_s": yardstick_s}
    return row(backend, median_s, params={"s": s}, run_id=run_id,
               software=None if yardstick_s is None else {"timing": timing})


def test_two_cpu_runs_are_compared_raw_and_per_yardstick():
    from results.compare import between_runs, run_yardstick, within

    a = [timed("A", "triton", 1.0, 0.001), timed("A", "torch", 2.0, 0.001),
         timed("A", "torch", 1.0, 0.001, s=2), row("sdpa-math", None, status="skipped")]
    b = [timed("B", "triton", 1.5, 0.0015), timed("B", "torch", 2.2, 0.0015)]
    got = between_runs(a, b)  # s=2 is in run A only, a skipped row never counts
    assert [(r.backend, r.ratio) for r in got] == [("triton", 1.5), ("torch", pytest.approx(1.1))]
    assert got[0].scaled == pytest.approx(1.0) and got[1].scaled == pytest.approx(1.1 / 1.5)
    assert run_yardstick(b) / run_yardstick(a) == pytest.approx(1.5)
    assert not within(got[0].ratio) and within(got[0].scaled) and not within(None)
    no_yard = between_runs([timed("A", "torch", 1.0)], [timed("B", "torch", 1.0, 0.001)])
    assert no_yard[0].scaled is None and run_yardstick([timed("A", "torch", 1.0)]) is None


def test_compare_against_shows_the_guest_speed_of_two_stored_cpu_runs(db_url):
    import json

    from typer.testing import CliRunner

    from cli import app
    from results.store import Store

    with Store(db_url) as store:
        store.insert([timed("A", "triton", 1.0, 0.001), timed("A", "torch", 2.0, 0.001)])
        store.insert([timed("B", "triton", 1.18, 0.00118), timed("B", "torch", 2.6, 0.00118)])
    cli = CliRunner()
    out = cli.invoke(app, ["compare", "--db", db_url, "--run", "B", "--against", "A"])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "guest speed: run B's yardstick 1.18x run A's" in text
    assert "B/A within 20%: 1; yardstick-scaled (each median over its row's yardstick): 2" in text
    js = cli.invoke(app, ["compare", "--db", db_url, "--run", "B", "--against", "A", "--json"])
    data = json.loads(js.stdout)
    assert data["yardstick_ratio"] == pytest.approx(1.18)
    assert [r["scaled"] for r in data["rows"]] == pytest.approx([1.0, 1.3 / 1.18])
    gpu = Store(db_url)
    with gpu:
        gpu.insert([timed("G", "triton", 1.0), timed("G", "torch", 2.0)])
    raw = cli.invoke(app, ["compare", "--db", db_url, "--run", "G", "--against", "A"])
    assert "no yardstick on both sides" in " ".join(raw.output.split())
    assert "guest speed" not in raw.output
    bad = cli.invoke(app, ["compare", "--db", db_url, "--against", "nope"])
    assert bad.exit_code == 2 and "no run 'nope'" in bad.output


def test_compare_runs_lists_the_ids_run_and_against_take(db_url):
    """The ids were shown only by `run`'s last line and by `export` (a new-user trial)."""
    import json

    from typer.testing import CliRunner

    from cli import app
    from results.store import Store

    with Store(db_url) as store:
        store.insert([timed("A", "triton", 1.0, 0.001), timed("A", "torch", 2.0, 0.001)])
        store.insert([timed("B", "triton", 1.2)])
    res = CliRunner().invoke(app, ["compare", "--db", db_url, "--runs", "--json"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout)
    assert [(r["run_id"], r["rows"], r["ok"]) for r in runs] == [("A", 2, 2), ("B", 1, 1)]
    text = CliRunner().invoke(app, ["compare", "--db", db_url, "--runs"]).output
    assert "A" in text and "B" in text and "started (UTC)" in text
    both = CliRunner().invoke(app, ["compare", "--db", db_url, "--runs", "--run", "A"])
    assert both.exit_code == 2 and "--runs lists the runs" in both.output
