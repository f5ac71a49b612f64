"""Ours against the vendor, case by case: the comparison view of `run` and `compare`; and
(`compare --against`) one run's times against another's, with the guest's speed on CPU.

In the manner of tritonbench's comparison output: for every case (workload, dtype, params) on a
device, our kernel (backend `triton`) is set against the vendor baseline (backend `torch`, or
the fastest `sdpa-*` backend for attention) as a speedup, with the accuracy of each side
(max_rel_error against the higher-precision reference, and whether it passed its tolerance).

Only rows with status ok that passed their check count as a throughput: a side that failed,
was skipped or was not checked shows its status and no speedup.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

import typer
from rich.table import Table

from results.console import DB_HELP, console, fail, print_json
from results.rows import case_params, shown_by_bandwidth
from results.schema import Result

OURS = "triton"


def is_vendor(backend: str) -> bool:
    """The vendor's implementations: torch (cuBLAS/cuBLASLt, ATen) and every SDPA backend."""
    return backend == "torch" or backend.startswith("sdpa-")


def counts(r: Result | Side) -> bool:
    """A row counts as a throughput only if it ran (status ok), passed its check, and was timed."""
    return r.status == "ok" and r.correct is True and bool(r.median_s) and r.median_s > 0


def case_key(r: Result) -> str:
    """'workload/dtype/params' as `--filter` and the run's progress name it (the case's params:
    rows.case_params, without the repetition counter of `allreduce -N`)."""
    return f"{r.workload}/{r.dtype}/" + ",".join(f"{k}={v}" for k, v in
                                                 case_params(r.params).items())


@dataclass
class Side:
    """One backend's row of a case."""

    backend: str
    status: str
    correct: bool | None
    max_rel_error: float | None
    median_s: float | None
    tflops: float | None
    gbps: float | None
    by_bandwidth: bool = False  # shown by GB/s, as the run table shows it

    @classmethod
    def of(cls, r: Result) -> Side:
        return cls(r.backend, r.status, r.correct, r.max_rel_error, r.median_s, r.tflops,
                   r.gbps, shown_by_bandwidth(r.workload, r.tflops))


@dataclass
class Comparison:
    """A case on a device: ours, the vendor baseline, and ours' speedup over it."""

    case: str
    device: str
    ours: Side | None
    baseline: Side | None

    @property
    def speedup(self) -> float | None:
        return speedup(self.ours, self.baseline)

    def to_dict(self) -> dict:
        return {"case": self.case, "device": self.device,
                "ours": asdict(self.ours) if self.ours else None,
                "baseline": asdict(self.baseline) if self.baseline else None,
                "speedup": self.speedup}


def speedup(ours: Side | None, baseline: Side | None) -> float | None:
    """Baseline time over our time (> 1: ours is faster), as tritonbench's `speedup` column.
    Same case and device, so the ratio of medians is the ratio of throughputs. None unless both
    sides count (ok and correct): an unchecked time is never compared."""
    if ours is None or baseline is None or not (counts(ours) and counts(baseline)):
        return None
    return baseline.median_s / ours.median_s


def geomean(xs: list[float]) -> float | None:
    """Geometric mean of speedups: the mean that treats 2x faster and 2x slower symmetrically
    (the usual summary of per-case ratios; Fleming and Wallace, CACM 1986)."""
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def compare(results: list[Result]) -> list[Comparison]:
    """One Comparison per case and device that has a row of ours, in first-seen order. The
    baseline is the fastest vendor row that counts; without one, the first vendor row (so its
    status and error show). A later row of the same backend replaces an earlier one."""
    groups: dict[tuple[str, str], dict[str, Result]] = {}
    for r in results:
        device = str((r.device or {}).get("name", ""))
        groups.setdefault((case_key(r), device), {})[r.backend] = r
    out = []
    for (case, device), by_backend in groups.items():
        if OURS not in by_backend:
            continue
        vendor = [r for b, r in by_backend.items() if is_vendor(b)]
        good = sorted((r for r in vendor if counts(r)), key=lambda r: r.median_s)
        base = good[0] if good else (vendor[0] if vendor else None)
        out.append(Comparison(case, device, Side.of(by_backend[OURS]),
                              Side.of(base) if base else None))
    return out


def _f(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def _throughput(s: Side | None) -> str:
    if s is None or not counts(s):
        return "-"
    return f"{_f(s.gbps, '.4g')} GB/s" if s.by_bandwidth else f"{s.tflops:.4g} TFLOP/s"


def _check(s: Side | None) -> str:
    if s is None:
        return "-"
    if s.status != "ok":
        return f"[red]{s.status}[/]"
    return {True: "yes", False: "[red]NO[/]", None: "unchecked"}[s.correct]


def comparison_table(rows: list[Comparison]) -> Table:
    t = Table(title=f"ours ({OURS}) against the vendor baseline (torch / fastest sdpa-*)")
    cols = ("case", "ours", "ours rel err", "ours ok", "baseline", "baseline's", "base rel err",
            "base ok", "speedup")
    for i, col in enumerate(cols):
        t.add_column(col, justify="right" if i in (1, 2, 5, 6, 8) else "left")
    for c in rows:
        b = c.baseline
        sp = c.speedup
        t.add_row(c.case, _throughput(c.ours), _f(c.ours.max_rel_error if c.ours else None, ".1e"),
                  _check(c.ours), b.backend if b else "(none)", _throughput(b),
                  _f(b.max_rel_error if b else None, ".1e"), _check(b),
                  "-" if sp is None else (f"{sp:.3g}x" if sp >= 1 else f"[yellow]{sp:.3g}x[/]"))
    return t


def summary(rows: list[Comparison]) -> str:
    sp = [c.speedup for c in rows if c.speedup is not None]
    g = geomean(sp)
    return (f"{len(sp)} of {len(rows)} cases compared (both sides ok and correct)"
            + (f"; geometric-mean speedup {g:.3g}x" if g else ""))


def print_comparison(results: list[Result], out=console) -> None:
    """The run's closing view: nothing when no case has a row of ours."""
    rows = compare(results)
    if rows:
        out.print(comparison_table(rows))
        out.print(summary(rows), highlight=False)


def yardstick_s(r: Result) -> float | None:
    """A CPU row's guest yardstick (software.timing.yardstick_s, bench/cpu_recipe.py `yardstick`:
    fixed pure-Python work timed among the cases); None on a GPU row or an older CPU row."""
    y = ((r.software or {}).get("timing") or {}).get("yardstick_s")
    return float(y) if isinstance(y, (int, float)) and y > 0 else None


def run_yardstick(results: list[Result]) -> float | None:
    """A run's yardstick: the median of its rows' (each row's: next to its own samples)."""
    ys = [y for r in results if (y := yardstick_s(r)) is not None]
    return statistics.median(ys) if ys else None


@dataclass
class RunRatio:
    """One case-backend in two runs: run B's median over run A's, raw and yardstick-scaled
    (each median over its own row's yardstick: what is left once the guest's speed is out)."""

    case: str
    backend: str
    a_s: float
    b_s: float
    ratio: float
    scaled: float | None


def between_runs(a: list[Result], b: list[Result]) -> list[RunRatio]:
    """Every case-backend (on one device) that counts in both runs, in run A's order."""
    def key(r: Result) -> tuple[str, str, str]:
        return case_key(r), r.backend, str((r.device or {}).get("name", ""))

    theirs = {key(r): r for r in b if counts(r)}
    out = []
    for ra in (r for r in a if counts(r) and key(r) in theirs):
        rb = theirs[key(ra)]
        ya, yb = yardstick_s(ra), yardstick_s(rb)
        scaled = (rb.median_s / yb) / (ra.median_s / ya) if ya and yb else None
        out.append(RunRatio(key(ra)[0], ra.backend, ra.median_s, rb.median_s,
                            rb.median_s / ra.median_s, scaled))
    return out


def within(x: float | None, band: float = 1.2) -> bool:
    """A ratio within `band` either way (1.2: the 20% two runs of one case should agree to)."""
    return x is not None and 1 / band <= x <= band


def print_between_runs(a_id: str, a: list[Result], b_id: str, b: list[Result], as_json: bool,
                       out=console) -> None:
    rows = between_runs(a, b)
    ya, yb = run_yardstick(a), run_yardstick(b)
    guest = yb / ya if ya and yb else None
    if as_json:
        print_json({"run_id": b_id, "against": a_id, "yardstick_s": {a_id: ya, b_id: yb},
                    "yardstick_ratio": guest, "rows": [asdict(r) for r in rows]})
        return
    t = Table(title=f"run {b_id} against run {a_id}: median B / median A")
    for col in ("case", "backend", "A median", "B median", "B/A"):
        t.add_column(col, justify="left" if col in ("case", "backend") else "right")
    if guest is not None:
        t.add_column("B/A yardstick-scaled", justify="right")
    for r in rows:
        cells = [r.case, r.backend, f"{r.a_s * 1e3:.4g} ms", f"{r.b_s * 1e3:.4g} ms",
                 f"{r.ratio:.3g}"]
        t.add_row(*cells, *([_f(r.scaled, ".3g")] if guest is not None else []))
    out.print(t)
    line = (f"{len(rows)} case-backends in both runs; B/A within 20%: "
            f"{sum(within(r.ratio) for r in rows)}")
    if guest is None:
        out.print(line + " (no yardstick on both sides: GPU rows, or CPU rows timed without "
                  "one)", highlight=False)
        return
    out.print(f"guest speed: run {b_id}'s yardstick {guest:.3g}x run {a_id}'s "
              f"({yb * 1e3:.3g} ms against {ya * 1e3:.3g} ms; >1: B's guest was slower)",
              highlight=False)
    out.print(line + f"; yardstick-scaled (each median over its row's yardstick): "
              f"{sum(within(r.scaled) for r in rows)}", highlight=False)


def runs_summary(results: list[Result]) -> list[dict]:
    """One line per run, oldest first: what `--run` and `--against` take, and what each holds
    (when it started, where, on what, how many rows ran ok)."""
    runs: dict[str, list[Result]] = {}
    for r in results:  # records come in created_at order
        runs.setdefault(r.run_id, []).append(r)

    def names(values) -> str:
        return ", ".join(sorted({v for v in values if v}))

    return [{"run_id": rid, "started": str(rows[0].created_at),
             "hosts": names(r.host for r in rows),
             "devices": names((r.device or {}).get("model") or (r.device or {}).get("name")
                              for r in rows),
             "rows": len(rows), "ok": sum(r.status == "ok" for r in rows)}
            for rid, rows in runs.items()]


def compare_verb(
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
    run: str | None = typer.Option(None, "--run", help="run id (default: the latest run)"),
    as_json: bool = typer.Option(False, "--json", help="print the comparison as JSON"),
    against: str | None = typer.Option(None, "--against", metavar="RUN",
                                       help="instead: the run's medians against this run's, "
                                            "per case-backend (on CPU also per the guest's "
                                            "yardstick)"),
    list_runs: bool = typer.Option(False, "--runs", help="instead: list the table's runs "
                                                         "(ids for --run and --against)"),
) -> None:
    """Ours (triton) against the vendor baseline per case: speedup and accuracy of each; or,
    with --against, two runs' medians per case-backend."""
    from results.console import open_store
    from results.store import resolve_url

    url = resolve_url(db)
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        hint = "" if db else " (pass --db)"  # only the default table needs the hint
        raise fail(f"no results table at {url[len('sqlite:///'):]}{hint}")
    with open_store(db, create=False) as store:
        results = store.records()
    if not results:
        raise fail(f"no results in {store.display_url}")
    if list_runs:
        if run is not None or against is not None:
            raise fail("--runs lists the runs: give it without --run and --against")
        runs = runs_summary(results)
        if as_json:
            print_json(runs)
            return
        table = Table("run", "started (UTC)", "host", "device", "rows", "ok")
        for r in runs:
            table.add_row(r["run_id"], r["started"], r["hosts"], r["devices"], str(r["rows"]),
                          str(r["ok"]))
        console.print(table)
        return
    run_id = run or results[-1].run_id  # records come in created_at order
    def rows_of(rid: str) -> list[Result]:
        rows = [r for r in results if r.run_id == rid]
        if not rows:
            raise fail(f"no run {rid!r} in {store.display_url}")
        return rows

    chosen = rows_of(run_id)
    if against is not None:
        print_between_runs(against, rows_of(against), run_id, chosen, as_json)
        return
    rows = compare(chosen)
    if as_json:
        print_json({"run_id": run_id, "cases": [c.to_dict() for c in rows]})
        return
    console.print(f"run {run_id} in {store.display_url}", highlight=False)
    if not rows:
        console.print("no case of this run has a triton row to compare")
        return
    console.print(comparison_table(rows))
    console.print(summary(rows), highlight=False)
