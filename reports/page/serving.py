"""The serving section on the page: reports.page.serving_section's data in the report's terms.

serving_section() numbers its own refs (S sources, M model inputs, A the serving assumptions);
here each becomes the report's own: a source gets an S label from the provenance document, a
set of model inputs an I label in the model context, so every serving number links like the
training ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from reports.page.context import InputRow, ModelContext
from reports.page.provenance import Cell, Figure, Ref, Section, Table, source_kind
from reports.page.serving_section import serving_section


def _inputs(ctx: ModelContext, text: str) -> Ref:
    """An I label for one estimate's inputs, given as 'name: source; name: source'."""

    def build() -> list[InputRow]:
        rows = []
        for part in text.split("; "):
            name, _, src = part.partition(": ")
            kind = source_kind(src)
            rows.append(InputRow(name, "", kind, src, (ctx.prov.source(src, kind),)))
        return rows

    return ctx._input_set(f"serving:{text}", "serving estimate", build)


def serving_page_section(ctx: ModelContext) -> Section:
    with tempfile.TemporaryDirectory() as tmp:
        data = serving_section(ctx.meas, tmp)
        pngs = {f["path"]: Path(f["path"]).read_bytes() for f in data["figures"]}
    refs: dict[str, Ref] = {}
    for rid, item in data["refs"].items():
        if item["kind"] == "model inputs":
            refs[rid] = _inputs(ctx, item["text"])
        elif item["kind"] == "assumptions":
            refs[rid] = ctx.prov.source(f"serving model assumptions: {item['text']}",
                                        "assumption")
        else:
            refs[rid] = ctx.prov.source(item["text"])
    sec = Section("serving", data["title"], intro=data["intro"])
    for t in data["tables"]:
        rows = [[Cell(c["text"], (refs[c["ref"]],)) for c in row] for row in t["rows"]]
        sec.tables.append(Table(list(t["columns"]), rows, t["title"]))
    for f in data["figures"]:
        name = Path(f["path"]).stem
        sec.figures.append(Figure(name, f["caption"], pngs[f["path"]],
                                  Cell(f["caption"], tuple(refs[r] for r in f["refs"]))))
    return sec
