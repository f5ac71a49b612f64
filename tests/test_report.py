"""The report: HTML and its Markdown twin, from a synthetic table and from no measurements.

The browser tests open each HTML page in real headless Chromium (Playwright, /usr/bin/chromium,
never a downloaded browser) and check that it renders with every figure loaded, no console
error and no request leaving the page. Without Chromium they skip, except in CI (CI=true), where
they fail: CI must really run them.
"""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from reports.page import context as context_mod
from reports.page import provenance as prov_mod
from reports.page import render
from reports.page import rows as rows_mod
from reports.page.render import build_report
from reports.page.rows import NO_MEASUREMENTS
from results.schema import Result
from results.store import Store

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
MEASURED_HEADINGS = ("Roofline", "Our kernels against the vendor baselines",
                     "All-reduce bus bandwidth by size")
MODEL_HEADINGS = ("Model inputs", "Throughput against GPU count", "The H200 gain", "Serving",
                  "Power and goodput", "Validation")
ALL_HEADINGS = ("Summary", *MEASURED_HEADINGS, *MODEL_HEADINGS, "Runs",
                "Sources and assumptions")
GENERATED = "2026-01-01 00:00 UTC"  # fixed, so reports are comparable

# ----------------------------------------------------------------------------------------------
# Test data (built here, not shipped): a few results on H100 and H200 device dicts
# ----------------------------------------------------------------------------------------------

DEVICES = {
    "H100-SXM": {"name": "NVIDIA H100 80GB HBM3", "kind": "cuda", "model": "H100-SXM",
                 "cc": "9.0", "sm_count": 132, "memory_bytes": 85_000_000_000,
                 "uuid": "GPU-test-h100", "driver": "570.00", "cuda": "12.8"},
    "H200-SXM": {"name": "NVIDIA H200", "kind": "cuda", "model": "H200-SXM", "cc": "9.0",
                 "sm_count": 132, "memory_bytes": 150_000_000_000, "uuid": "GPU-test-h200",
                 "driver": "570.00", "cuda": "12.8"},
}
SHA = {"H100-SXM": "1111111111aaaa", "H200-SXM": "2222222222bbbb"}


def _result(gpu: str, workload: str, backend: str, dtype: str, params: dict, *, tflops=None,
            gbps=None, busbw=None, world_size=1, status="ok", correct=True, power=None,
            run_id=None) -> Result:
    telemetry = {"source": "none"}
    if power:
        telemetry = {"source": "nvml", "power_w_mean": power, "sm_clock_mhz_min": 1755.0,
                     "throttle_reasons": []}
    return Result(run_id=run_id or f"run-{gpu.lower()}", workload=workload, backend=backend,
                  dtype=dtype, params=params, host=f"node-{gpu.lower()}",
                  device=DEVICES[gpu], world_size=world_size,
                  software={"git_sha": SHA[gpu], "git_dirty": False}, median_s=1e-3,
                  tflops=tflops, gbps=gbps, busbw_gbps=busbw,
                  algbw_gbps=busbw * 8 / 14 if busbw else None, correct=correct,
                  telemetry=telemetry, status=status,
                  created_at="2026-01-01T10:00:00+00:00" if gpu == "H100-SXM"
                  else "2026-01-02T11:30:00+00:00")


ATTN = {"b": 2, "h": 16, "kv_h": 16, "s": 8192, "d": 128, "causal": True, "direction": "fwd"}


def synthetic_records() -> list[Result]:
    out = []
    for gpu, scale in (("H100-SXM", 1.0), ("H200-SXM", 1.02)):
        for n, (tri, tor) in {4096: (650.0, 700.0), 8192: (760.0, 798.0)}.items():
            gemm = {"m": n, "n": n, "k": n, "layout": "nt", "shape": "square"}
            out += [_result(gpu, "gemm", "triton", "bf16", gemm, tflops=tri * scale, power=690.0),
                    _result(gpu, "gemm", "torch", "bf16", gemm, tflops=tor * scale, power=695.0)]
        out += [_result(gpu, "attention", "triton", "bf16", ATTN, tflops=480.0 * scale),
                _result(gpu, "attention", "sdpa-flash", "bf16", ATTN, tflops=500.0 * scale),
                _result(gpu, "attention", "sdpa-cudnn", "bf16", ATTN, tflops=540.0 * scale)]
        hbm = 3000.0 if gpu == "H100-SXM" else 4300.0
        out += [_result(gpu, "membw", b, "fp32", {"op": "copy", "bytes": 2**30}, gbps=hbm * f)
                for b, f in (("torch", 1.0), ("triton", 0.98))]
    # all-reduce over 8 H100, a run of its own
    for i, size in enumerate((2**20, 2**24, 2**28, 2**30)):
        out.append(_result("H100-SXM", "allreduce", "nccl", "bf16",
                           {"op": "all_reduce", "bytes": size, "placement": "out"},
                           busbw=(60.0, 250.0, 360.0, 370.0)[i], world_size=8,
                           run_id="run-allreduce"))
    # rows that must not count: a failed case and a kernel that was wrong
    out.append(_result("H100-SXM", "gemm", "triton", "bf16", {"m": 1, "n": 1, "k": 1},
                       status="failed", correct=None))
    out.append(_result("H100-SXM", "gemm", "triton", "fp16", {"m": 512, "n": 512, "k": 512},
                       tflops=9999.0, correct=False, status="skipped"))
    return out


def _with_counts(d: dict) -> dict:
    """The row as the runner stores it: its case's FLOPs and bytes (the workloads' formulas)."""
    from bench.workloads import WORKLOADS, Case

    wl = WORKLOADS.get(d["workload"])
    if wl is not None and d["status"] == "ok":
        try:
            case = Case(d["workload"], d["dtype"], dict(d["params"]), (d["backend"],))
            d["flops"] = d.get("flops") or wl.flops(case)
            d["bytes"] = d.get("bytes") or wl.bytes_moved(case)
        except (KeyError, TypeError, ValueError):
            pass
        # and the time they took at the row's throughput (results/validate.py: they agree)
        if d.get("tflops") and d.get("flops"):
            d["median_s"] = d["flops"] / (d["tflops"] * 1e12)
        elif d.get("gbps") and d.get("bytes"):
            d["median_s"] = d["bytes"] / (d["gbps"] * 1e9)
    return d


def synthetic_frame() -> pd.DataFrame:
    return pd.DataFrame([_with_counts(r.to_dict()) for r in synthetic_records()])


# ----------------------------------------------------------------------------------------------
# Fixtures: each report built once
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    out = tmp_path_factory.mktemp("measured")
    html, md = build_report(synthetic_frame(), out, origin="test table", generated=GENERATED,
                            config="quick")
    return html, md


@pytest.fixture(scope="module")
def empty(tmp_path_factory):
    from results.reference import load_reference

    out = tmp_path_factory.mktemp("empty")
    ref = load_reference()
    assert len(ref) == 0, "the shipped reference is no longer empty: update this test"
    html, md = build_report(ref, out, generated=GENERATED, config="quick")
    return html, md


class _Page(HTMLParser):
    """Headings, ids, internal links, image sources and external references of a page."""

    def __init__(self):
        super().__init__()
        self.h2: list[str] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.srcs: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if "src" in a:
            self.srcs.append(a["src"])
        self._in_h2 = tag == "h2"
        if tag == "h2":
            self.h2.append("")

    def handle_endtag(self, tag):
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._in_h2:
            self.h2[-1] += data


def parse(html: Path) -> _Page:
    p = _Page()
    p.feed(html.read_text(encoding="utf-8"))
    return p


def md_headings(md: Path) -> list[str]:
    return [line[3:].strip() for line in md.read_text(encoding="utf-8").splitlines()
            if line.startswith("## ")]


def section_text(md: Path, heading: str) -> str:
    """The Markdown of one `## heading` section (up to the next one)."""
    text = md.read_text(encoding="utf-8")
    start = next(m.end() for m in re.finditer(r"^## (.*)$", text, re.M)
                 if m.group(1).startswith(heading))
    nxt = re.compile(r"^## ", re.M).search(text, start)
    return text[start:nxt.start() if nxt else len(text)]


# ----------------------------------------------------------------------------------------------
# Plain tests
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["measured", "empty"])
def test_markdown_twin_has_the_same_sections(which, request):
    html, md = request.getfixturevalue(which)
    h2 = [t.strip() for t in parse(html).h2]
    assert h2 == md_headings(md)
    for heading in ALL_HEADINGS:
        assert any(t.startswith(heading) for t in h2), (heading, h2)
    assert h2[0] == "Summary"  # the summary comes first, for capacity planners


@pytest.mark.parametrize("which", ["measured", "empty"])
def test_html_is_self_contained_and_links_resolve(which, request):
    html, md = request.getfixturevalue(which)
    page = parse(html)
    text = html.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "url(" not in text and "@import" not in text and "<script" not in text
    assert page.srcs and all(s.startswith("data:image/png;base64,") for s in page.srcs)
    internal = [h[1:] for h in page.links if h.startswith("#")]
    assert internal and set(internal) <= page.ids, set(internal) - page.ids
    # the Markdown's figures are PNG files beside it, as many as the HTML embeds
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md.read_text(encoding="utf-8"))
    assert len(pngs) == len(page.srcs)
    for name in pngs:
        assert "/" not in name and (md.parent / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_measured_numbers_link_to_their_runs(measured):
    html, md = measured
    text = md.read_text(encoding="utf-8")
    runs = section_text(md, "Runs")
    # three runs, each with its run id, device, git sha and time
    for run_id, device, sha, when in (
            ("run-h100-sxm", "NVIDIA H100 80GB HBM3", SHA["H100-SXM"][:10], "2026-01-01 10:00"),
            ("run-h200-sxm", "NVIDIA H200", SHA["H200-SXM"][:10], "2026-01-02 11:30"),
            ("run-allreduce", "NVIDIA H100 80GB HBM3", SHA["H100-SXM"][:10], "2026-01-01")):
        row = next(line for line in runs.splitlines() if f"| {run_id} |" in line)
        assert device in row and sha in row and when in row
    label = {m.group(2): m.group(1) for m in re.finditer(r'id="(r\d+)"></a>R\d+ \| (\S+) \|',
                                                          runs)}
    # the triton GEMM at 8192^3 on H100: 760.0 TFLOP/s, linked to the H100 run
    base = section_text(md, "Our kernels")
    row = next(line for line in base.splitlines() if "H100-SXM" in line and "8192x8192x8192"
               in line)
    assert f"760.0 [{label['run-h100-sxm'].upper()}](#{label['run-h100-sxm']})" in row
    assert "798.0" in row and "0.95" in row  # torch baseline and the ratio
    # the all-reduce busbw at 1 GiB, linked to the all-reduce run
    ar = section_text(md, "All-reduce")
    row = next(line for line in ar.splitlines() if "| 1 GiB |" in line)
    assert f"370.0 [{label['run-allreduce'].upper()}]" in row
    # the failed and the wrong rows do not count
    assert "9999" not in text
    assert "2 of 24 rows are not shown" in text


def _table_rows(section: str) -> list[str]:
    """Data rows of the Markdown tables in a section (not header or separator)."""
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [line for i, line in enumerate(lines) if "---" not in line
            and not (i + 1 < len(lines) and "---" in lines[i + 1])]


@pytest.mark.parametrize("which", ["measured", "empty"])
def test_every_number_carries_provenance(which, request):
    html, md = request.getfixturevalue(which)
    text = md.read_text(encoding="utf-8")
    sources = section_text(md, "Sources and assumptions")
    known = set(re.findall(r'id="([sri]\d+)"', text))
    for heading in ALL_HEADINGS[:-2]:  # every section but the Runs and Sources lists
        sec = section_text(md, heading)
        for row in _table_rows(sec):
            if "does not fit" in row:
                continue
            refs = re.findall(r"\]\(#([rsi]\d+)\)", row)
            assert refs, f"{heading}: a row without provenance: {row}"
            assert set(refs) <= known, f"{heading}: dangling ref in {row}"
        for fact in re.findall(r"^- \*\*.*$", sec, re.M):  # headline figures
            assert re.search(r"\]\(#[rsi]\d+\)", fact), fact
    # assumptions are labelled as such, with their source
    assert re.search(r"\| assumption \| assumption: ", sources)
    assert re.search(r"\| published \| NVIDIA H100 Tensor Core GPU datasheet", sources)


def test_empty_measurements_say_so(empty):
    html, md = empty
    for path in (html, md):
        text = path.read_text(encoding="utf-8")
        assert text.count(NO_MEASUREMENTS) >= 4  # summary, three measured sections
    for heading in MEASURED_HEADINGS:
        assert NO_MEASUREMENTS in section_text(md, heading)
    assert "No runs" in section_text(md, "Runs")
    # the model sections still render, from labelled assumptions
    for heading in MODEL_HEADINGS:
        sec = section_text(md, heading)
        assert _table_rows(sec), heading
    assert "assumption" in section_text(md, "Model inputs")
    summary = section_text(md, "Summary")
    assert "(modelled)" in summary and "model error on published runs" in summary


def input_set(md: Path, title: str) -> str:
    """The Markdown of one input-set table in the Model inputs section ('GPU H100-SXM')."""
    sec = section_text(md, "Model inputs")
    start = re.search(rf"^I\d+: {re.escape(title)}$", sec, re.M)
    assert start, f"no input set {title!r}"
    nxt = re.compile(r"^(<a id=|I\d+: )", re.M).search(sec, start.end())
    return sec[start.end():nxt.start() if nxt else len(sec)]


def test_model_inputs_use_the_measurements(measured, empty):
    """Measured rows replace the assumptions: the H100 GEMM input becomes the best measured
    8192^3 (798 TFLOP/s from torch), the HBM input the measured copy (3.00 TB/s), each linked
    to its run; without measurements the inputs are assumptions and published figures."""
    h100 = input_set(measured[1], "GPU H100-SXM")
    row = next(line for line in h100.splitlines() if line.startswith("| GEMM bf16 8192^3 |"))
    assert "798 TFLOP/s" in row and "| measured |" in row and "](#r" in row
    assert re.search(r"^\| HBM bandwidth \| 3\.00 TB/s.*\| measured \|", h100, re.M)
    e = input_set(empty[1], "GPU H100-SXM")
    assert "| measured |" not in e and "| assumption |" in e
    # every modelled number points to input sets that exist
    assert input_set(empty[1], "cluster colossus-100k")


def test_reference_measurements_are_labelled_as_such(monkeypatch, request):
    """With the shipped reference as the measurements, the model's inputs say 'reference'."""
    import results.reference
    from reports.model import frame_rows

    frame = synthetic_frame()
    monkeypatch.setattr(results.reference, "load_reference", lambda: frame)
    # reference_frame() reads the shipped files once per process: forget an earlier read, and
    # forget this test's planted frame afterwards
    frame_rows.reference_frame.cache_clear()
    request.addfinalizer(frame_rows.reference_frame.cache_clear)
    rows = rows_mod.usable_rows(frame)
    for origin, kind in ((prov_mod.REFERENCE, "reference"), ("local table", "measured")):
        ctx = context_mod.ModelContext(frame, rows, prov_mod.Provenance(origin),
                                       context_mod.CONFIGS["quick"])
        ref = ctx.gpu_set("H100-SXM")
        inputs = ctx.sets["gpu:H100-SXM"][2]
        assert ref.label == "I1"
        gemm = next(r for r in inputs if r.name.startswith("GEMM"))
        assert gemm.kind == kind and gemm.value == "798 TFLOP/s"
        assert any(x.label.startswith("R") for x in gemm.refs)


def test_an_h200_priced_from_h100_rows_points_to_those_runs():
    """Same silicon: an H200 without kernel rows of its own takes the H100's, and its input
    rows link the H100 runs they came from; its HBM row stays its own."""
    frame = synthetic_frame()
    frame = frame[frame.apply(lambda r: r["device"]["model"] == "H100-SXM", axis=1)]
    rows = rows_mod.usable_rows(frame)
    ctx = context_mod.ModelContext(frame, rows, prov_mod.Provenance("local table"),
                                   context_mod.CONFIGS["quick"])
    ctx.gpu_set("H200-SXM")
    inputs = {r.name: r for r in ctx.sets["gpu:H200-SXM"][2]}
    gemm = next(r for n, r in inputs.items() if n.startswith("GEMM"))
    assert gemm.kind == "measured" and "H100-SXM" in gemm.source
    assert any(x.label.startswith("R") for x in gemm.refs)
    assert not any(x.label.startswith("R") for x in inputs["HBM bandwidth"].refs)


def test_run_times_are_utc():
    assert prov_mod._time("2026-01-01T12:30:00+02:00") == "2026-01-01 10:30 UTC"
    assert prov_mod._time("2026-01-01T12:30:00") == "2026-01-01 12:30 UTC"
    assert prov_mod._time(None) == "unknown"


def test_flops_and_bytes_from_the_row():
    rows = rows_mod.usable_rows(synthetic_frame())
    attn = next(r for r in rows if r["workload"] == "attention")
    from bench.workloads.attention import attention_bytes, attention_flops

    f, b = rows_mod.flops_and_bytes(attn)
    assert f == attention_flops(2, 16, 8192, 128, True, "fwd")
    assert b == attention_bytes(2, 16, 16, 8192, 128, 2, "fwd")
    gemm = next(r for r in rows if r["workload"] == "gemm")
    f, b = rows_mod.flops_and_bytes(gemm)
    n = gemm["params"]["m"]
    assert f == 2 * n**3 and b == 3 * n * n * 2
    membw = next(r for r in rows if r["workload"] == "membw")
    assert rows_mod.flops_and_bytes(membw) is None  # no FLOPs: not a roofline point
    # an older row without the counts: its throughputs times its median time
    old = dict(gemm, flops=None, bytes=None, tflops=100.0, gbps=50.0, median_s=2e-3)
    assert rows_mod.flops_and_bytes(old) == pytest.approx((100e12 * 2e-3, 50e9 * 2e-3))
    assert rows_mod.flops_and_bytes(dict(old, gbps=None)) is None  # no bytes: skipped
    assert rows_mod.flops_and_bytes(dict(old, flops=-1.0, tflops=None)) is None


def test_formulas():
    assert rows_mod.attainable_tflops(10, 989.4, 3.35) == pytest.approx(33.5)
    assert rows_mod.attainable_tflops(1000, 989.4, 3.35) == 989.4
    assert rows_mod.ridge_point(989.4, 3.35) == pytest.approx(295.3, abs=0.1)
    assert rows_mod.fmt_bytes(2**30) == "1 GiB" and rows_mod.fmt_bytes(1536) == "1.5 KiB"
    assert rows_mod.shape_label("gemm", {"m": 8, "n": 16, "k": 32, "layout": "nt",
                                       "shape": "llama3-70b qkv"}) == "8x16x32 nt (llama3-70b qkv)"
    assert rows_mod.shape_label("attention", ATTN) == "b2 h16/16 s8192 d128 causal fwd"
    assert rows_mod.shape_label("membw", {"op": "triad", "bytes": 2**26}) == "triad 64 MiB"


def test_picking_measurements():
    frame = synthetic_frame()
    empty = frame.iloc[0:0]
    failed_only = frame[frame.status == "failed"]
    assert rows_mod.pick_measurements(frame, empty)[1] == "local table"
    assert rows_mod.pick_measurements(empty, frame)[1] == "shipped reference results"
    assert rows_mod.pick_measurements(failed_only, frame)[1] == "shipped reference results"
    assert rows_mod.pick_measurements(None, empty) == (None, "none")


def test_bad_input_gives_clear_errors(tmp_path):
    with pytest.raises(TypeError, match="pandas DataFrame"):
        build_report([{"workload": "gemm"}], tmp_path)
    with pytest.raises(ValueError, match="lacks columns"):
        build_report(pd.DataFrame([{"workload": "gemm"}]), tmp_path)
    with pytest.raises(ValueError, match="unknown report config"):
        build_report(None, tmp_path, config="huge")


# ----------------------------------------------------------------------------------------------
# The CLI verb
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["measured", "empty"])
def test_every_code_path_the_report_names_exists(which, request):
    """A report that cites code cites a file of this repository (it once named
    reports/scaling.py, moved to reports/model/goodput.py)."""
    html, md = request.getfixturevalue(which)
    root = Path(__file__).resolve().parent.parent
    for page in (md, html):
        named = set(re.findall(r"\b((?:reports|bench|results|kernels)/[\w/]+\.py)\b",
                               page.read_text(encoding="utf-8")))
        assert named, page  # the goodput table and the model inputs cite their modules
        missing = sorted(p for p in named if not (root / p).is_file())
        assert not missing, (page.name, missing)


@pytest.fixture
def app():
    from cli import app as main_app

    return main_app


def test_cli_report_from_a_table(app, tmp_path, db_url):
    with Store(db_url) as store:
        store.insert(synthetic_records())
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["report", "--out", str(out), "--db", db_url,
                                   "--config", "quick"])
    assert res.exit_code == 0, res.output
    assert "22 results" in res.output and "local table" in res.output
    assert (out / "report.html").exists() and (out / "report.md").exists()
    assert "run-allreduce" in (out / "report.md").read_text()


def test_cli_report_without_measurements(app, tmp_path, monkeypatch):
    """No --db, and the default table unreadable: say so, and report without measurements."""
    home = tmp_path / "home"
    junk = home / "colossus-bench" / "results.db"
    junk.parent.mkdir(parents=True)
    junk.write_bytes(b"not a database")
    monkeypatch.setenv("XDG_DATA_HOME", str(home))
    monkeypatch.delenv("COLOSSUS_BENCH_DB", raising=False)
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["report", "--out", str(out), "--config", "quick"])
    assert res.exit_code == 0, res.output
    text = res.output.replace("\n", " ")
    assert "the default table was not read" in text and NO_MEASUREMENTS in text
    assert junk.read_bytes() == b"not a database"  # left alone
    assert NO_MEASUREMENTS in (out / "report.md").read_text()


def test_default_table_is_never_created(tmp_path, monkeypatch):
    from reports.page.cli import _local_frame

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("COLOSSUS_BENCH_DB", raising=False)
    assert _local_frame(None) == (None, None, None)
    assert not (tmp_path / "home").exists()


def test_cli_report_errors(app, tmp_path):
    (tmp_path / "file").write_text("")
    res = CliRunner().invoke(app, ["report", "--db", str(tmp_path / "file" / "x.db"),
                                   "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "no database at" in res.output  # read-only: nothing made
    res = CliRunner().invoke(app, ["report", "--config", "huge", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "is not one of 'full', 'quick'" in res.output


def test_cli_report_empty_out_refused(app, tmp_path, monkeypatch):
    # a Path option reads '' as '.', so the report landed in the current folder
    monkeypatch.chdir(tmp_path)
    for out in ("", " "):
        res = CliRunner().invoke(app, ["report", "--out", out])
        assert res.exit_code == 2 and "--out is empty" in res.output
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# In a real browser
# ----------------------------------------------------------------------------------------------

def _no_browser(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _no_browser(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install playwright)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


FIGURE_STATE = """() => ({
  imgs: [...document.querySelectorAll('img')].map(i => ({
      alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight})),
  svgs: [...document.querySelectorAll('svg')].map(s => {
      const r = s.getBoundingClientRect(); return {w: r.width, h: r.height}; }),
  figures: document.querySelectorAll('figure').length,
  h2: [...document.querySelectorAll('h2')].map(h => h.textContent.trim()),
  title: document.title,
})"""


@pytest.mark.browser
@pytest.mark.parametrize("which", ["measured", "empty"])
def test_report_renders_in_chromium(which, request, browser):
    html, _ = request.getfixturevalue(which)
    page = browser.new_page()
    errors, failed, outside = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(("file:", "data:")) else None)
    try:
        resp = page.goto(html.resolve().as_uri(), wait_until="load")
        assert resp is None or resp.ok
        state = page.evaluate(FIGURE_STATE)
    finally:
        page.close()
    assert state["title"] == "colossus-bench report"
    for heading in ALL_HEADINGS:
        assert any(h.startswith(heading) for h in state["h2"]), (heading, state["h2"])
    assert state["imgs"] and len(state["imgs"]) + len(state["svgs"]) == state["figures"]
    for img in state["imgs"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
    for svg in state["svgs"]:
        assert svg["w"] > 0 and svg["h"] > 0, svg
    assert not errors, errors
    assert not failed, failed
    assert not outside, outside


def test_browser_tests_skip_outside_ci_and_fail_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        _no_browser("no Chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the browser tests"):
        _no_browser("no Chromium")


def test_the_summary_all_reduce_figure_ignores_other_collectives():
    """all_gather and reduce_scatter rows share the workload name `allreduce`; their busbw
    (another factor) must not become the headline all-reduce figure."""
    recs = [r for r in synthetic_records()]
    ag = next(r for r in recs if r.workload == "allreduce")
    other = Result(**{**ag.to_dict(), "id": "", "params": {**ag.params, "op": "all_gather"},
                      "busbw_gbps": 9999.0})
    frame = pd.DataFrame([r.to_dict() for r in [*recs, other]])
    summary = render.assemble_report(frame, config="quick").summary
    text = "\n".join(cell.text for label, cell in summary.facts if "all-reduce" in label)
    assert "9999" not in text and "370" in text


# ----------------------------------------------------------------------------------------------
# CPU rows are flow checks; hostile text stays text
# ----------------------------------------------------------------------------------------------

CPU_DEVICE = {"name": "AMD EPYC 9654", "kind": "cpu", "model": None}


def _cpu_frame(host: str = "node-cpu") -> pd.DataFrame:
    rows = []
    for wl, backend, params, tf, gb in (
            ("gemm", "torch", {"m": 64, "n": 64, "k": 64, "layout": "nt"}, 0.02, None),
            ("membw", "torch", {"op": "copy", "bytes": 2**24}, None, 40.0)):
        r = _result("H100-SXM", wl, backend, "bf16", params, tflops=tf, gbps=gb).to_dict()
        r.update(device=CPU_DEVICE, host=host, run_id="run-cpu")
        rows.append(r)
    return pd.DataFrame(rows)


def test_cpu_rows_are_flow_checks_never_gpu_figures():
    report = render.assemble_report(_cpu_frame(), origin="local table", config="quick")
    facts = " ".join(label for label, _ in report.summary.facts)
    assert "EPYC" not in facts and "HBM bandwidth" not in facts
    ids = [s.id for s in report.sections]
    assert "flow-checks" in ids
    flow = next(s for s in report.sections if s.id == "flow-checks")
    assert len(flow.tables[0].rows) == 2
    roof = next(s for s in report.sections if s.id == "roofline")
    assert not roof.figures or all("EPYC" not in f.title for f in roof.figures)
    assert any("flow checks" in n.text for n in report.summary.notes)


def test_mixed_gpu_and_cpu_rows_keep_the_gpu_headlines():
    frame = pd.concat([synthetic_frame(), _cpu_frame()], ignore_index=True)
    report = render.assemble_report(frame, origin="local table", config="quick")
    facts = " ".join(label for label, _ in report.summary.facts)
    assert "H100-SXM best GEMM" in facts and "EPYC" not in facts


def test_markdown_escapes_what_the_table_holds(tmp_path):
    frame = _cpu_frame(host="node[/bold]01<script>alert(1)</script>")
    _, md = build_report(frame, tmp_path, origin="local <b>table</b>", config="quick")
    text = md.read_text()
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;" in text
    assert render.md_cell("a|b\nc") == "a\\|b c"


def test_report_out_is_checked_before_any_work(app, tmp_path):
    f = tmp_path / "file"
    f.write_text("keep me")
    res = CliRunner().invoke(app, ["report", "-o", str(f), "--config", "quick"])
    assert res.exit_code == 2 and "exists and is not a folder" in res.output
    assert "measured sections" not in res.output and f.read_text() == "keep me"
    res = CliRunner().invoke(app, ["report", "-o", str(f / "sub"), "--config", "quick"])
    assert res.exit_code == 2 and "is not a folder" in res.output
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        res = CliRunner().invoke(app, ["report", "-o", str(ro / "r"), "--config", "quick"])
        assert res.exit_code == 2 and "not writable" in res.output
    # a folder where nothing can be made, even by root (os.access says yes there): refused
    # before any section is computed, and build_report (the one check) says so too
    res = CliRunner().invoke(app, ["report", "-o", "/proc/colossus-report", "--config", "quick"])
    assert res.exit_code == 2 and "folder /proc is not writable" in res.output
    assert "measured sections" not in res.output and "Traceback" not in res.output
    assert render.out_dir_problem(Path("/proc/x")).startswith("folder /proc is not writable")
    assert render.out_dir_problem(tmp_path / "new" / "deeper") is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]  # probe gone


def test_report_files_are_moved_into_place_whole(tmp_path):
    """A write that fails (report.html's place is taken by a folder) leaves no temporary
    folder and no half-written page; the figures and report.md it did write are whole."""
    out = tmp_path / "rep"
    (out / "report.html").mkdir(parents=True)
    with pytest.raises(OSError):
        build_report(None, out, generated=GENERATED, config="quick")
    assert (out / "report.html").is_dir()
    assert not [p for p in out.iterdir() if p.name.startswith(".report-")]
    html, md = build_report(None, tmp_path / "ok", generated=GENERATED, config="quick")
    assert html.read_text().rstrip().endswith("</html>") and md.is_file()
    assert [p.name for p in (tmp_path / "ok").iterdir() if p.name.startswith(".")] == []
