"""The report's model-input tables, the cases the model cannot compute, and the power table.

- Each serving input is one row: the value, kind and whole source of the model's own figure
  (never a source text split on "; " and its kind guessed from the words).
- A serving case the model cannot compute is one line with the reason; the rest of the report
  is written and `report` exits 0 (docs/REPORT.md).
- Memory-bound kernels show their GB/s (and GB/s per kW) in the power table, as the run table
  shows them; the list of memory-bound workloads matches bench's Workload.bound.
The reports open in real headless Chromium (tests/test_report.py's browser fixture).
"""

from __future__ import annotations

import re

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from bench.workloads import WORKLOADS
from cli import app as main_app
from reports.model.cli import serving_validation_table
from reports.model.hardware import gpu
from reports.model.measurements import Measurements
from reports.model.serving import ASSUMPTIONS
from reports.model.serving_cases import CASES, serving_summary, validate_serving
from reports.model.serving_scenario import SERVING_SCENARIOS
from reports.page.measured import measured_power_table
from reports.page.provenance import KINDS, Provenance
from reports.page.render import build_report
from reports.page.rows import MEMORY_BOUND_WORKLOADS, usable_rows
from reports.page.serving_section import serving_section
from results.store import Store
from tests.test_report import (  # noqa: F401  (browser is a fixture)
    ALL_HEADINGS,
    GENERATED,
    _result,
    browser,
    section_text,
    synthetic_frame,
    synthetic_records,
)
from tests.test_report import test_report_renders_in_chromium as renders_in_chromium

# the inputs of one serving estimate (reports.model.serving.figures, plus the model's shape and
# the GPU's memory) and the serving model's assumptions
SERVING_INPUTS = {"hbm_tbps", "kv_read_tbps", "nvlink_busbw_gbps", "allreduce_by_size",
                  "attention_prefill_tflops", "gemm_bf16", "fp8_gemm_speedup",
                  "framework_efficiency", "model", "memory", *ASSUMPTIONS}
DECODE = {"b": 64, "h": 64, "kv_h": 8, "s_q": 1, "s": 8192, "d": 128, "causal": True}
INPUT_ROW = re.compile(r"^\| (?P<name>.+?) \| (?P<value>.*?) \| (?P<kind>[a-z]+) \| "
                       r"(?P<source>.*) \| ?$")


def _decode_row(gbps: float = 2500.0, power: float = 520.0) -> dict:
    return _result("H100-SXM", "decode_attention", "triton", "bf16", DECODE, gbps=gbps,
                   power=power).to_dict()


def measured_frame() -> pd.DataFrame:
    """The synthetic table of tests/test_report.py and a decode-attention row with power."""
    return pd.concat([synthetic_frame(), pd.DataFrame([_decode_row()])], ignore_index=True)


def slow_records():
    """H100 rows 10^4 times slower than a GPU (as CPU rows relabelled H100 would be): the MLPerf
    Server case can meet no latency target with them; the H200 keeps its own memory fallbacks
    (its GEMM and attention come from these rows: same SMs and clocks)."""
    out = []
    for r in synthetic_records():
        if r.device["model"] != "H100-SXM" or r.status != "ok":
            continue
        d = r.to_dict()
        for k in ("tflops", "gbps", "busbw_gbps", "algbw_gbps"):
            d[k] = d[k] / 1e4 if d.get(k) else d.get(k)
        d["id"] = ""
        out.append(type(r)(**d))
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """(html, md) of a measured report and of one with no measurements."""
    out = {}
    for name, frame in (("measured", measured_frame()), ("empty", None)):
        out[name] = build_report(frame, tmp_path_factory.mktemp(name), origin="test table",
                                 generated=GENERATED, config="quick")
    return out


def serving_input_rows(md) -> list[dict]:
    """The rows of every serving input set in the Model inputs section."""
    sec = section_text(md, "Model inputs")
    rows = []
    for block in re.split(r"^I\d+: ", sec, flags=re.M)[1:]:
        title, _, body = block.partition("\n")
        if not title.startswith("serving"):
            continue
        lines = [x for x in body.splitlines() if x.startswith("| ")][2:]  # after the header
        for line in lines:
            m = INPUT_ROW.match(line)
            assert m, f"a serving input row that is not one input: {line}"
            rows.append(m.groupdict() | {"title": title.strip()})
    return rows


def _bare(name: str) -> str:
    """An input's name without the GPU a multi-GPU set puts before it."""
    return name.split(" ", 1)[1] if name.startswith(("H100-SXM ", "H200-SXM ")) else name


# ----------------------------------------------------------------------------------------------
# 1. serving inputs: one row each, the figure's own kind and whole source
# ----------------------------------------------------------------------------------------------

def test_serving_inputs_carry_the_figures_themselves(tmp_path):
    meas = Measurements(None, use_reference=False)
    d = serving_section(meas, tmp_path)
    sets = [v for v in d["refs"].values() if v["kind"] == "model inputs"]
    assert sets and any(v["title"] == "serving model assumptions" for v in sets)
    for v in sets:
        for i in v["inputs"]:
            assert i["name"] in SERVING_INPUTS, i
            assert i["kind"] in KINDS and i["source"].strip() and i["value"] is not None, i
    # the H100's HBM figure exactly as the model holds it: an assumption, its source whole
    hbm = meas.hbm_tbps(gpu("H100-SXM"))
    got = [i for v in sets for i in v["inputs"] if i["name"] == "hbm_tbps"
           and i["gpu"] == "H100-SXM"]
    assert got and all((i["value"], i["kind"], i["source"]) ==
                       (hbm.value, hbm.kind, hbm.source) for i in got)
    nvl = meas.nvlink_busbw_gbps(gpu("H100-SXM"))
    assert "; " in nvl.source  # the text that used to be split into rows
    assert any(i["source"] == nvl.source for v in sets for i in v["inputs"])


@pytest.mark.parametrize("which", ["measured", "empty"])
def test_serving_input_tables_are_one_row_per_input(reports, which):
    html, md = reports[which]
    rows = serving_input_rows(md)
    assert len(rows) > 20
    for r in rows:
        assert _bare(r["name"]) in SERVING_INPUTS, r
        assert r["kind"] in KINDS, r
        assert re.search(r"\S+ \[S\d+\]\(#s\d+\)", r["value"]), r  # a value, then its source
        assert r["source"] and "source not stated" not in r["source"], r
    text = md.read_text(encoding="utf-8")
    assert "source not stated" not in text and "| ring taken |" not in text
    fallback = {r["kind"] for r in rows if _bare(r["name"]) in ("hbm_tbps", "gemm_bf16")
                and "H100" in r["source"] + r["name"]}
    if which == "empty":  # fallbacks: labelled assumptions, as in fallbacks.py
        assert fallback == {"assumption"}
        hbm = next(r for r in rows if r["name"] == "hbm_tbps" and "H100" in r["source"])
        label = re.search(r"\[(S\d+)\]", hbm["value"]).group(1)
        assert re.search(rf'id="{label.lower()}"></a>{label} \| assumption \|', text)
    else:  # the measured copy and GEMM, linked to their run
        hbm = [r for r in rows if _bare(r["name"]) == "hbm_tbps" and r["value"].startswith(
            "3.00 TB/s")]
        assert hbm and all(r["kind"] == "measured" and "](#r" in r["value"] for r in hbm)
        kv = [r for r in rows if _bare(r["name"]) == "kv_read_tbps" and "2.50 TB/s" in
              r["value"]]
        assert kv and all(r["kind"] == "measured" for r in kv)
    assert any(r["title"] == "serving model assumptions" and r["name"] == "max_batch"
               and r["value"].startswith("2,048 ") and r["kind"] == "assumption" for r in rows)


# ----------------------------------------------------------------------------------------------
# 2. a case the model cannot compute is one line; the rest is written, exit 0
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slow_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slow")
    url = f"sqlite:///{tmp / 'slow.db'}"
    with Store(url) as store:
        store.insert(slow_records())
    out = tmp / "rep"
    res = CliRunner().invoke(main_app, ["report", "--db", url, "--out", str(out),
                                        "--config", "quick"])
    return res, out / "report.html", out / "report.md"


def test_a_case_the_model_cannot_compute_is_one_line(slow_report):
    res, html, md = slow_report
    assert res.exit_code == 0, res.output
    assert html.is_file() and md.is_file()
    sec = section_text(md, "Serving")
    notes = [x for x in sec.splitlines() if "cannot be computed" in x and x.startswith("- ")]
    server = [x for x in notes if "MLPerf v4.0 Llama 2 70B Server, 8x H100-SXM" in x]
    assert len(server) == 1 and "no batch meets the latency target" in server[0]
    assert re.search(r"\]\(#[si]\d+\)$", server[0])  # the line rests on its source
    # every case and preset keeps its row; the others are computed
    for c in CASES:
        assert sum(line.startswith(f"| {c.name} ") for line in sec.splitlines()) == 1, c.name
    for name in SERVING_SCENARIOS:
        assert sum(line.startswith(f"| {name} ") for line in sec.splitlines()) == 1, name
    assert any(line.startswith("| TensorRT-LLM") and "%" in line and "cannot" not in line
               for line in sec.splitlines())
    headings = [x[3:] for x in md.read_text().splitlines() if x.startswith("## ")]
    for h in ALL_HEADINGS:
        assert any(x.startswith(h) for x in headings), h


@pytest.mark.browser
def test_a_report_with_an_uncomputable_case_renders_in_chromium(slow_report, browser):  # noqa: F811
    _, html, md = slow_report
    renders_in_chromium("slow", _Fixtures({"slow": (html, md)}), browser)


class _Fixtures:
    """Stands in for pytest's `request` to reuse the browser test on another report."""

    def __init__(self, values: dict):
        self.values = values

    def getfixturevalue(self, name: str):
        return self.values[name]


# ----------------------------------------------------------------------------------------------
# 3. memory-bound rows by their GB/s in the power table
# ----------------------------------------------------------------------------------------------

def test_validate_keeps_a_case_the_model_cannot_compute_as_a_row():
    meas = Measurements(pd.DataFrame([r.to_dict() for r in slow_records()]),
                        use_reference=False)
    rows = validate_serving(meas)
    assert len(rows) == len(CASES)
    bad = [r for r in rows if r["error_pct"] is None]
    assert bad and all(r["error"].startswith("cannot be computed: ") for r in bad)
    assert serving_summary(rows)["cases"] == len(rows) - len(bad)
    con = Console(width=300, record=True)
    con.print(serving_validation_table(rows))
    assert "cannot be computed" in con.export_text()


def test_memory_bound_workloads_match_bench():
    assert set(MEMORY_BOUND_WORKLOADS) == {n for n, w in WORKLOADS.items()
                                          if w.bound == "memory"}


def test_power_table_shows_memory_bound_rows_by_gbps():
    rows = usable_rows(measured_frame())
    table = measured_power_table(rows, Provenance("test table"))
    cols = table.columns
    assert {"TFLOP/s", "GB/s", "TFLOP/s per kW", "GB/s per kW"} <= set(cols)

    def cells(workload: str) -> list[dict]:
        return [{c: cell.text for c, cell in zip(cols, row, strict=True)} for row in table.rows
                if row[1].text == workload]

    (dec,) = cells("decode_attention")
    assert dec["TFLOP/s"] == "-" and dec["TFLOP/s per kW"] == "-"
    assert dec["GB/s"] == "2500.0" and dec["GB/s per kW"] == f"{2500 / 0.52:.1f}"
    gemm = cells("gemm")
    assert gemm and all(g["GB/s"] == "-" and g["TFLOP/s"] != "-" for g in gemm)


def test_the_report_power_table_shows_decode_by_gbps(reports):
    _, md = reports["measured"]
    sec = section_text(md, "Power")
    header = next(x for x in sec.splitlines() if x.startswith("| device | workload"))
    cols = [c.strip() for c in header.strip("| ").split(" | ")]
    row = next(x for x in sec.splitlines() if x.startswith("| H100-SXM | decode_attention"))
    cells = [c.strip() for c in row.strip().strip("|").split(" | ")]
    got = dict(zip(cols, cells, strict=True))
    assert got["GB/s"].startswith("2500.0 [R") and got["TFLOP/s"].startswith("-")
    assert got["GB/s per kW"].startswith(f"{2500 / 0.52:.1f}")
