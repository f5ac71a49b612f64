"""The report's modelled sections: every time to train has goodput applied, training estimates
carry their range (tables and charts), the H200 and cluster comparisons state the split rule
and use the model's own figures, and what the model does not model is one list, the same in
README.md and in the report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from matplotlib.collections import PolyCollection

from reports.model.cluster import SPLIT_RULE, TOKEN_BUDGETS, useful_fraction_at
from reports.model.hardware import cluster
from reports.model.measurements import Measurements
from reports.page import modelled
from reports.page.charts import lines_figure
from reports.page.context import CONFIGS, ModelContext, ReportConfig
from reports.page.model_limits import NOT_MODELLED, NOT_MODELLED_TITLE
from reports.page.provenance import Provenance
from reports.page.render import build_report, md_text
from reports.page.rows import fmt_days

REPO = Path(__file__).resolve().parents[1]
GENERATED = "2026-01-01 00:00 UTC"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report without measurements, quick configuration: (html text, markdown text)."""
    html, md = build_report(None, tmp_path_factory.mktemp("model"), generated=GENERATED,
                            config="quick")
    return html.read_text(encoding="utf-8"), md.read_text(encoding="utf-8")


def section(md: str, heading: str) -> str:
    start = next(m.end() for m in re.finditer(r"^## (.*)$", md, re.M)
                 if m.group(1).startswith(heading))
    nxt = re.compile(r"^## ", re.M).search(md, start)
    return md[start:nxt.start() if nxt else len(md)]


# a day or hour figure that reads as a time to train: '38.3 d', '5.8 h', '12 days'
DAYS = re.compile(r"\b\d+(?:\.\d+)? (?:d|h|days)\b")


def time_to_train_without_goodput(md: str) -> list[str]:
    """Lines of the Markdown whose time to train lacks goodput: a table column named 'time to
    train' without 'goodput' in its name, or a line of text that gives a day or hour figure to
    train without saying 'goodput' (applied, or 'at 100% goodput')."""
    out = []
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|"):
            is_header = i + 1 < len(lines) and lines[i + 1].startswith("| ---")
            if is_header:
                out += [line for col in line.strip("| ").split(" | ")
                        if "time to train" in col.lower() and "goodput" not in col.lower()]
            continue
        if "train" in line.lower() and DAYS.search(line) and "goodput" not in line.lower():
            out.append(line)
    return out


def test_the_checker_finds_a_time_to_train_without_goodput():
    assert time_to_train_without_goodput(
        "- **x (modelled)**: 6.7 M tokens/s, 26.9 d for 15.6T tokens to train\n")
    assert time_to_train_without_goodput("| cluster | time to train |\n| --- | --- |\n")
    assert not time_to_train_without_goodput(
        "| cluster | time to train (goodput applied) |\n| --- | --- |\n| a | 3.0 d |\n"
        "- 38.3 d to train 15.6T tokens with goodput applied\n"
        "- 26.9 d to train at 100% goodput\n")


def test_every_time_to_train_in_the_report_has_goodput(report):
    _, md = report
    assert not time_to_train_without_goodput(md)
    assert "time to train (goodput applied)" in section(md, "Throughput")


def test_the_headline_time_to_train_is_the_goodput_applied_one(report):
    """The summary's figure is the estimate's days divided by the useful fraction at its size."""
    _, md = report
    cfg = CONFIGS["quick"]
    ctx = ModelContext(None, [], Provenance("none"), cfg)
    name = cfg.clusters[0]
    est = modelled.sweep_estimate(ctx, name, cluster(name).gpus, cfg.model)
    budget, _ = TOKEN_BUDGETS[cfg.model]
    useful = useful_fraction_at(est.gpus)
    line = next(x for x in section(md, "Summary").splitlines()
                if x.startswith(f"- **{cfg.model} on {name}"))
    assert f"{fmt_days(est.days_to_train(budget, useful))} to train" in line
    assert "goodput applied" in line
    assert fmt_days(est.days_to_train(budget)) not in line  # not the figure without goodput


def test_training_tables_carry_the_range(report):
    _, md = report
    thr = section(md, "Throughput")
    header = next(x for x in thr.splitlines() if x.startswith("| cluster | GPUs |"))
    cols = header.strip("| ").split(" | ")
    assert "tokens/s range" in cols and "MFU range" in cols
    rows = [x for x in thr.splitlines() if x.startswith("| colossus-")]
    assert rows
    for row in rows:
        cells = row.strip("| ").split(" | ")
        value = float(cells[cols.index("tokens/s")].split(" ")[0])
        lo, hi = (float(v) for v in cells[cols.index("tokens/s range")].split(" ")[0]
                  .split("-"))
        assert lo <= value <= hi
    assert "tokens/s range" in section(md, "The H200 gain")
    assert "shaded: the range over" in thr


def test_the_models_table_carries_range_and_goodput():
    cfg = ReportConfig(clusters=("colossus-100k",), models=("gpt3-175b",))
    ctx = ModelContext(None, [], Provenance("none"), cfg)
    table = modelled.models_table(ctx)
    assert "tokens/s range" in table.columns
    assert "time to train (goodput applied)" in table.columns
    (row,) = table.rows
    lo, hi = (float(v) for v in row[table.columns.index("tokens/s range")].text[:-2]
              .split("-"))
    assert lo <= float(row[table.columns.index("tokens/s")].text[:-2]) <= hi


def test_the_throughput_charts_draw_the_range(monkeypatch):
    """Both throughput charts get a band per cluster: low <= value <= high at every point."""
    seen = []
    real = modelled.lines_png

    def spy(title, series, xlabel, ylabel, **kw):
        seen.append((series, kw.get("bands")))
        return real(title, series, xlabel, ylabel, **kw)

    monkeypatch.setattr(modelled, "lines_png", spy)
    ctx = ModelContext(None, [], Provenance("none"), CONFIGS["quick"])
    modelled.throughput_section(ctx)
    assert len(seen) == 2
    for series, bands in seen:
        assert bands and set(bands) == set(series)
        for name, (_xs, ys) in series.items():
            lo, hi = bands[name]
            assert len(lo) == len(hi) == len(ys) > 0
            assert all(a <= y <= b for a, y, b in zip(lo, ys, hi))


def test_lines_figure_shades_a_band_only_when_given():
    import matplotlib.pyplot as plt

    series = {"a": ([1, 10, 100], [1.0, 2.0, 3.0])}
    fig = lines_figure("t", series, "x", "y", bands={"a": ([0.5, 1.5, 2.5], [1.5, 2.5, 3.5])})
    assert any(isinstance(c, PolyCollection) for c in fig.axes[0].collections)
    plt.close(fig)
    fig = lines_figure("t", series, "x", "y")
    assert not any(isinstance(c, PolyCollection) for c in fig.axes[0].collections)
    plt.close(fig)


def test_the_h200_section_names_the_models_bandwidths_and_the_split_rule(report):
    _, md = report
    h200 = section(md, "The H200 gain")
    meas = Measurements(None, use_reference=False)
    from reports.model.hardware import gpu

    h100, h200_bw = (meas.hbm_tbps(gpu(g)).value for g in ("H100-SXM", "H200-SXM"))
    assert f"The model prices memory-bound work at {h200_bw:.2f} against {h100:.2f} TB/s" in h200
    assert "datasheet" in h200
    assert "0.000 s -&gt; 0.000 s" not in h200 and "0.000 s -> 0.000 s" not in h200
    assert "4.8 vs 3.35" not in h200
    # the cluster comparison: the same options for every compared cluster, said in the text
    assert "the split rule" in h200 and "at most two jobs" in h200
    assert "gain vs 100k" in h200 and "colossus-100k best" in h200
    # each gain says what it compares: best against best, or one job against one job at the
    # same layout (never a sum of separate jobs over one job, labelled "same config")
    assert "gain vs all-H100 (best vs best)" in h200 and "gain vs 100k (best vs best)" in h200
    assert "gain (one job vs one job, same layout)" in h200 and "same config" not in h200
    row = next(line for line in h200.splitlines() if line.startswith("| colossus-200k |"))
    assert "(one job, proportional micro-batches)" in row or "(one job, equal" in row
    assert md_text(SPLIT_RULE) in section(md, "Sources and assumptions")


def test_the_power_table_says_which_option_prices_energy(report):
    _, md = report
    power = section(md, "Power and goodput")
    assert "kWh per M tokens (best option)" in power and "| best option |" in power
    assert "at the cluster's best option" in power


def _readme_bullets() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## What the training model leaves out\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, "README.md has no 'What the training model leaves out' section"
    bullets: list[str] = []
    for line in m.group(1).splitlines():
        if line.startswith("- "):
            bullets.append(line[2:].strip())
        elif bullets and line.startswith("  ") and line.strip():  # a wrapped bullet
            bullets[-1] += " " + line.strip()
    return bullets


def test_readme_and_report_list_what_the_model_does_not_model(report):
    html, md = report
    assert 5 <= len(NOT_MODELLED) <= 8
    assert _readme_bullets() == list(NOT_MODELLED)
    val = section(md, "Validation")
    assert f"**{NOT_MODELLED_TITLE}**" in val
    for item in NOT_MODELLED:
        assert f"- {md_text(item)}" in val
    assert html.count('<ul class="plain">') == 1
    for item in NOT_MODELLED:
        assert f"<li>{item.replace(chr(39), '&#39;')}</li>" in html


def test_the_list_gives_no_figure_that_docs_model_does_not():
    doc = (REPO / "docs" / "MODEL.md").read_text(encoding="utf-8")
    for item in NOT_MODELLED:
        for figure in re.findall(r"[+-]?\d[\d,.]*%?", item):  # names too: 'Llama 3'
            assert figure.rstrip(".") in doc, (figure, item)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_chart_legends_cover_no_bar_and_labels_do_not_collide():
    """The H200-gain bars and the serving-gain bars: the legend outside the axes, no two
    x labels over each other (the four model/workload names once ran together)."""
    from reports.page.charts import bars_figure
    from reports.page.serving_section import gain_figure

    gains = [{"model": m, "workload": w, "serving_gain": 1.2, "training_gain": 1.02}
             for m in ("llama3-70b", "llama3-405b") for w in ("throughput", "interactive")]
    bars = bars_figure("t", ["H100, its best configuration", "H200, H100's configuration "
                             "unchanged", "H200, its own best configuration"],
                       {"model": [3.1, 3.12, 3.18]}, "M tokens/s",
                       errors={"model": ([0.3] * 3, [0.1] * 3)})
    for fig in (gain_figure(gains), bars):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        (ax,) = fig.axes
        legend = ax.get_legend().get_window_extent(r)
        assert not _overlaps(legend, ax.get_window_extent(r))
        for patch in ax.patches:
            assert not _overlaps(legend, patch.get_window_extent(r))
        ticks = [t.get_window_extent(r) for t in ax.get_xticklabels() if t.get_text()]
        assert all(not _overlaps(a, b) for a, b in zip(ticks, ticks[1:]))
        fig.clf()
