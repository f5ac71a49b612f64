"""The report: one self-contained HTML page and its Markdown twin, from the results table.

`build_report(frame, out_dir)` writes `report.html` (figures embedded as base64 PNG; no external
URL at all) and `report.md` (the same sections, figures as PNG files beside it). For capacity
planners: a short summary of headline figures first, then the measured sections (reports.page.
measured), then the modelled ones (reports.page.modelled), each number linked to its run,
source or model inputs (reports.page.provenance).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from reports.page.context import CONFIGS, ReportConfig
from reports.page.measured import (
    allreduce_section,
    baselines_section,
    flow_check_section,
    measured_power_table,
    roofline_section,
    summary_section,
)
from reports.page.modelled import model_sections
from reports.page.provenance import Cell, Provenance, Run, Section, SourceNote
from reports.page.rows import NO_MEASUREMENTS, gpu_frame, is_gpu_row, usable_rows

HTML_NAME, MD_NAME = "report.html", "report.md"


TEMPLATES = Path(__file__).resolve().parent / "templates"


# Markdown passes raw HTML through, so text from the table (host names, device names, errors)
# is escaped: an entity for <, > and &, a backslash for what would open a link.
_MD_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "[": "\\[", "]": "\\]"})


def md_text(text: object) -> str:
    """Text safe in Markdown prose: no raw HTML, no accidental links."""
    return str(text).translate(_MD_ESCAPES)


def md_cell(text: object) -> str:
    """Text safe inside a Markdown table cell: md_text, and no | or line break."""
    return md_text(text).replace("|", "\\|").replace("\n", " ")


def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), undefined=StrictUndefined,
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["md"] = md_cell
    env.filters["mdtext"] = md_text
    return env


@dataclass
class Report:
    """Everything both templates render."""

    title: str
    generated: str
    origin: str
    summary: Section
    sections: list[Section]
    runs: list[Run]
    sources: list[SourceNote]

    @property
    def all_sections(self) -> list[Section]:
        return [self.summary, *self.sections]


def out_dir_problem(out_dir: Path) -> str | None:
    """Why the report cannot be written into out_dir (build_report checks it before any work),
    or None: a file in its place, or a folder (its own, or the nearest existing one above) not
    writable, found by making a folder in it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        return f"{out_dir} exists and is not a folder"
    above = out_dir
    while not above.exists() and above != above.parent:  # the folder it will be made in
        above = above.parent
    if not above.is_dir():
        return f"{above} is not a folder"
    if not os.access(above, os.W_OK | os.X_OK):
        return f"folder {above} is not writable"
    try:  # os.access says yes to root everywhere, /proc included: make (and drop) a folder there
        os.rmdir(tempfile.mkdtemp(prefix=".report-probe-", dir=above))
    except OSError as e:
        return f"folder {above} is not writable ({e.strerror or e})"
    return None


def render(report: Report, out_dir: Path) -> tuple[Path, Path]:
    """Write report.html, report.md and the PNGs beside the Markdown. Each file is written in
    a temporary folder inside out_dir first and then moved into place (os.replace), so a
    failed write leaves no half-written file, and an older report is replaced whole."""
    env = _environment()
    html = env.get_template("report.html").render(r=report, no_measurements=NO_MEASUREMENTS)
    md = env.get_template("report.md").render(r=report, no_measurements=NO_MEASUREMENTS)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {fig.filename: fig.png for sec in report.all_sections for fig in sec.figures}
    files[MD_NAME], files[HTML_NAME] = md.encode("utf-8"), html.encode("utf-8")
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        for name in files:  # figures first, the pages that show them last
            os.replace(tmp / name, out_dir / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / HTML_NAME, out_dir / MD_NAME


def assemble_report(frame, *, origin: str | None = None, generated: str | None = None,
                    config: ReportConfig | str = "full", progress=None) -> Report:
    """The report as data (sections, runs, sources) from a results frame, or None.

    `origin` says where the frame came from ("local table", "shipped reference results");
    `config` is a ReportConfig or a CONFIGS name; `progress(text)`, if given, hears of each
    stage as it starts (the CLI shows it).
    """
    say = progress or (lambda text: None)
    if isinstance(config, str):
        if config not in CONFIGS:
            raise ValueError(f"unknown report config {config!r}; known: {', '.join(CONFIGS)}")
        config = CONFIGS[config]
    if not isinstance(config, ReportConfig):
        raise TypeError(f"config must be a ReportConfig or a name, not {type(config).__name__}")
    if frame is not None and not (hasattr(frame, "to_dict") and hasattr(frame, "columns")):
        raise TypeError(f"frame must be a pandas DataFrame or None, not {type(frame).__name__}")
    every = usable_rows(frame)
    rows = [r for r in every if is_gpu_row(r)]
    flow = [r for r in every if not is_gpu_row(r)]
    origin = origin or ("results frame" if every else "none")
    prov = Provenance(origin)
    say("measured sections")
    measured = [roofline_section(rows, prov), baselines_section(rows, prov),
                allreduce_section(rows, prov)]
    modelled = model_sections(gpu_frame(frame), rows, prov, config, progress=say)
    power = next(s for s in modelled if s.id == "power")
    table = measured_power_table(rows, prov)
    if table:
        power.tables.insert(0, table)
    else:
        power.notes.insert(0, Cell(f"Measured power: {NO_MEASUREMENTS}."))
    sections = measured + modelled + ([flow_check_section(flow, prov)] if flow else [])
    summary = summary_section(rows, prov, sections, frame, len(flow))
    now = generated or datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return Report("colossus-bench report", now, origin, summary, sections,
                  sorted(prov.runs.values(), key=lambda r: int(r.label[1:])),
                  sorted(prov.sources.values(), key=lambda s: int(s.label[1:])))


def build_report(frame, out_dir: str | Path, *, origin: str | None = None,
                 generated: str | None = None, config: ReportConfig | str = "full",
                 progress=None) -> tuple[Path, Path]:
    """Build the report from a results frame (or None: no measurements) into out_dir:
    report.html (self-contained) and report.md with its PNGs. Returns (html_path, md_path)."""
    problem = out_dir_problem(Path(out_dir))
    if problem:
        raise OSError(problem)
    report = assemble_report(frame, origin=origin, generated=generated, config=config,
                             progress=progress)
    if progress:
        progress("writing the page")
    return render(report, Path(out_dir))
