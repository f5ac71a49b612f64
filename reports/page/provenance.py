"""The report's provenance document: every number points to a run (R), a source (S) or the
model inputs it rests on (I). Cells, tables, figures and sections are plain data that both
templates (HTML and Markdown) render.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

REFERENCE = "shipped reference results"  # the origin pick_measurements names the reference
KINDS = ("measured", "reference", "calibrated", "assumption", "published")


@dataclass(frozen=True)
class Ref:
    """A pointer from a number to where it came from: a run ("R3"), a source ("S2") or a set
    of model inputs ("I1")."""

    label: str

    @property
    def anchor(self) -> str:
        return self.label.lower()


@dataclass
class Cell:
    """A piece of text (a table cell, a note, a headline figure) and the refs it rests on."""

    text: str
    refs: tuple[Ref, ...] = ()

    def __post_init__(self):
        self.refs = tuple(dict.fromkeys(self.refs))  # each ref once, first use first


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    id: str = ""  # an anchor refs can point to (the I labels' tables)


@dataclass
class Figure:
    """A matplotlib figure rendered to PNG: embedded in HTML, a file beside the Markdown."""

    name: str  # file stem, also the HTML element id
    title: str
    png: bytes
    caption: Cell

    @property
    def filename(self) -> str:
        return f"{self.name}.png"

    @property
    def b64(self) -> str:
        return base64.b64encode(self.png).decode("ascii")


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    facts: list[tuple[str, Cell]] = field(default_factory=list)  # headline label -> value
    notes: list[Cell] = field(default_factory=list)
    lists: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # title, plain items
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    empty: str | None = None  # said plainly when the section has nothing measured
    headline: list[tuple[str, Cell]] = field(default_factory=list)  # lifted into the summary


@dataclass
class Run:
    """One run a measured number came from."""

    label: str
    run_id: str
    origin: str  # "local table" or "shipped reference results"
    device: str
    model: str
    git: str
    created_at: str
    host: str

    @property
    def anchor(self) -> str:
        return self.label.lower()


@dataclass
class SourceNote:
    label: str
    text: str
    kind: str  # "assumption" or "published"

    @property
    def anchor(self) -> str:
        return self.label.lower()


class Provenance:
    """Hands out the R and S labels and keeps what they stand for."""

    def __init__(self, origin: str):
        self.origin = origin
        self.runs: dict[str, Run] = {}
        self.sources: dict[str, SourceNote] = {}

    def run(self, row: dict) -> Ref:
        """The ref of the run that produced `row` (registered on first use)."""
        run_id = str(row.get("run_id") or "unknown")
        if run_id not in self.runs:
            dev = row.get("device") or {}
            sw = row.get("software") or {}
            sha = sw.get("git_sha")
            git = (str(sha)[:10] + ("+dirty" if sw.get("git_dirty") else "")) if sha else \
                "unknown"
            self.runs[run_id] = Run(f"R{len(self.runs) + 1}", run_id, self.origin,
                                    str(dev.get("name") or "?"), str(dev.get("model") or "?"),
                                    git, _time(row.get("created_at")), str(row.get("host") or "?"))
        else:  # a run's time is its earliest row
            r = self.runs[run_id]
            t = _time(row.get("created_at"))
            if t < r.created_at:
                r.created_at = t
        return Ref(self.runs[run_id].label)

    def runs_of(self, rows: Iterable[dict]) -> tuple[Ref, ...]:
        return tuple(dict.fromkeys(self.run(r) for r in rows))

    def source(self, text: str, kind: str | None = None) -> Ref:
        """The ref of a source or assumption text (the same text gets the same label)."""
        text = text.strip() or "assumption: source not stated"
        if text not in self.sources:
            kind = kind or source_kind(text)
            self.sources[text] = SourceNote(f"S{len(self.sources) + 1}", text, kind)
        return Ref(self.sources[text].label)


def _time(value: Any) -> str:
    """ISO 8601 -> 'YYYY-MM-DD HH:MM UTC' (sorts as text); no offset is taken as UTC, as the
    record's created_at is written."""
    if not value:
        return "unknown"
    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M UTC")


def source_kind(text: str, kind: str | None = None) -> str:
    """measured | reference | calibrated | assumption | published: a Figure's own kind when it
    has one, else read from the text (a source string with no Figure behind it)."""
    if kind in KINDS:
        return kind
    low = text.lower()
    for k in ("measured", "reference", "calibrated"):
        if low.startswith(k):
            return k
    return "assumption" if "assumption" in low else "published"
