"""The serving section on the page: reports.page.serving_section's data in the report's terms.

serving_section() numbers its own refs (S sources, M model inputs, A the serving assumptions,
T the training model's H200 gain); here each becomes the report's own: a source gets an S
label from the provenance document, a set of model inputs an I label in the model context (one
row per input, built by the same ModelContext.figure_row as the training inputs: the Figure's
own value, kind and source), so every serving number links like the training ones.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from reports.model.measurements import Figure as MFigure
from reports.page.context import H200_GAIN_BASE, ModelContext
from reports.page.provenance import Cell, Figure, Ref, Section, Table
from reports.page.rows import ALLREDUCE_WORKLOADS, ROOF_GPUS, fmt_bytes
from reports.page.serving_section import serving_section

# the measured workloads each serving input is read from (reports.model.serving.figures), so a
# measured input links to its runs as the training inputs do
INPUT_WORKLOADS = {"hbm_tbps": ("membw",), "kv_read_tbps": ("decode_attention",),
                   "nvlink_busbw_gbps": ALLREDUCE_WORKLOADS,
                   "allreduce_by_size": ALLREDUCE_WORKLOADS,
                   "attention_prefill_tflops": ("attention",), "gemm_bf16": ("gemm",)}
# the inputs the same silicon's rows price for either type (measurements.same_silicon)
KERNEL_INPUTS = {"attention_prefill_tflops", "gemm_bf16"}

# an input's unit from its name's suffix: (unit, format)
UNITS = {"_tbps": ("TB/s", ".2f"), "_gbps": ("GB/s", ".0f"), "_tflops": ("TFLOP/s", ".0f"),
         "_gib": ("GiB", ".1f"), "_s": ("s", ".3g"), "_speedup": ("x", ".3g")}


def input_value(name: str, value) -> str:
    """A serving input's value as the table shows it: with its unit, a curve by its extent."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):  # (bytes, microseconds) points of a curve
        return f"{len(value)} sizes, {fmt_bytes(value[0][0])} to {fmt_bytes(value[-1][0])}"
    if name == "memory":
        return fmt_bytes(value)
    if name == "gemm_bf16":  # the rate of the layer's largest GEMM at M = GEMM_M
        return f"{value:.0f} TFLOP/s"
    for suffix, (unit, spec) in UNITS.items():
        if name.endswith(suffix):
            return f"{value:{spec}} {unit}".replace(" x", "x")
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:.3g}"


def _inputs(ctx: ModelContext, item: dict) -> Ref:
    """The I label of one estimate's inputs: one row per input, as the model holds it."""
    inputs = item["inputs"]
    several = len({i["gpu"] for i in inputs}) > 1

    def build():
        return [ctx.figure_row(f"{i['gpu']} {i['name']}" if several else i["name"],
                               input_value(i["name"], i["value"]),
                               MFigure(i["value"], i["source"], i["kind"]), i["gpu"] or "",
                               INPUT_WORKLOADS.get(i["name"], ()),
                               kernel=i["name"] in KERNEL_INPUTS) for i in inputs]

    key = "serving:" + repr([sorted(i.items()) for i in inputs])
    return ctx._input_set(key, item["title"], build)


def _refs(ctx: ModelContext, item: dict) -> tuple[Ref, ...]:
    if item["kind"] == "model inputs":
        return (_inputs(ctx, item),)
    if item["kind"] == "training":  # the training H200 gain: what the H200 section rests on
        return ctx.basis(ROOF_GPUS, H200_GAIN_BASE)
    return (ctx.prov.source(item["text"]),)


def serving_page_section(ctx: ModelContext) -> Section:
    with tempfile.TemporaryDirectory() as tmp:
        data = serving_section(ctx.meas, tmp)
        pngs = {f["path"]: Path(f["path"]).read_bytes() for f in data["figures"]}
    refs = {rid: _refs(ctx, item) for rid, item in data["refs"].items()}
    sec = Section("serving", data["title"], intro=data["intro"])
    sec.notes = [Cell(n["text"], refs[n["ref"]]) for n in data["notes"]]
    for t in data["tables"]:
        rows = [[Cell(c["text"], refs[c["ref"]]) for c in row] for row in t["rows"]]
        sec.tables.append(Table(list(t["columns"]), rows, t["title"]))
    for f in data["figures"]:
        name = Path(f["path"]).stem
        sec.figures.append(Figure(name, f["caption"], pngs[f["path"]],
                                  Cell(f["caption"], tuple(r for rid in f["refs"]
                                                           for r in refs[rid]))))
    return sec
