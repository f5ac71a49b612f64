"""What the model sections share: the report configuration, the measurements as the scaling
model sees them, and the input sets (I labels) every modelled number points to.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from reports.model.hardware import cluster, gpu
from reports.model.measurements import Figure as MFigure
from reports.model.measurements import Measurements, same_silicon
from reports.page.provenance import (
    REFERENCE,
    Cell,
    Provenance,
    Ref,
    Section,
    Table,
    source_kind,
)
from reports.page.rows import ALLREDUCE_WORKLOADS, ROOF_GPUS, gpu_model

RACK_GPUS = 64  # pools scale in whole racks: 8 servers x 8 GPUs (docs/SOURCES.md: colossus-rack)


# the base the H200-gain comparison builds its one-GPU-type clusters on (reports.model.scaling)
H200_GAIN_BASE = "colossus-100k"


@dataclass(frozen=True)
class ReportConfig:
    """What the model sections compute: plain data, with named presets in CONFIGS."""

    model: str = "llama3-405b"  # the model the cluster-scale figures are quoted for
    clusters: tuple[str, ...] = ("colossus-100k", "colossus-200k", "colossus-200k-h200")
    sweep_gpus: tuple[int, ...] = (1024, 4096, 16384, 65536)  # plus each preset's own size
    # the every-model table at each preset's full size (empty: left out)
    models: tuple[str, ...] = ("gpt3-175b", "llama3-70b", "llama3-405b", "dense-1t")
    h200_gain_gpus: int = 16384  # the size of Llama 3's H100 run (Dubey et al. 2024)
    goodput_gpus: tuple[int, ...] = (1024, 4096, 16384, 65536, 100_000, 200_000)


CONFIGS: dict[str, ReportConfig] = {
    "full": ReportConfig(),
    # fewer searches (tests, previews): the same sections at fewer points
    "quick": ReportConfig(sweep_gpus=(4096,), models=()),
}


# representative shapes for the model-inputs table: the 8192^3 anchor GEMM; attention at the
# Llama 3 pre-training context (seq 8192, head dim 128, causal; Dubey et al. 2024)
INPUT_GEMM = (8192, 8192, 8192)


INPUT_ATTENTION = (8192, 128, True)


@dataclass
class InputRow:
    """One figure a modelled number rests on: what, its value, its kind and refs."""

    name: str
    value: str
    kind: str
    source: str
    refs: tuple[Ref, ...]


class ModelContext:
    """What the model sections share: the measurements, the provenance, and the input sets.

    A modelled number points to input sets (I labels): one per GPU type (GEMM, attention, HBM,
    NVLink, power as the model sees them) and one per cluster preset (pools, fabric, power
    overheads); the Model inputs section lists each set's rows with their R and S refs.
    """

    def __init__(self, frame, rows: list[dict], prov: Provenance, config: ReportConfig):
        self.config = config
        # the frame as chosen by the caller, never mixed with another; the shipped reference is
        # read by Measurements itself, so its figures are labelled reference results
        if prov.origin == REFERENCE:
            self.meas = Measurements(None, use_reference=True)
        else:
            self.meas = Measurements(frame if rows else None, use_reference=False)
        self.rows = rows
        self.prov = prov
        self.sets: dict[str, tuple[Ref, str, list[InputRow]]] = {}  # key -> (ref, title, rows)

    def _input_set(self, key: str, title: str, build) -> Ref:
        if key not in self.sets:
            ref = Ref(f"I{len(self.sets) + 1}")
            self.sets[key] = (ref, title, [])
            self.sets[key][2].extend(build())
        return self.sets[key][0]

    def figure_row(self, name: str, value: str, fig, gpu_name: str = "",
                   workloads: tuple[str, ...] = (), kernel: bool = False) -> InputRow:
        """The input row of a model Figure, with the Figure's own kind (never guessed from its
        text) and source; a measured or reference figure also points to the runs of its
        workloads on its GPU, and a kernel figure (GEMM, attention) to those on the GPU types of
        the same silicon too, whose rows stand for its own (measurements.same_silicon)."""
        kind = source_kind(fig.source, fig.kind)
        refs = (self.prov.source(fig.source, kind),)
        if kind in ("measured", "reference"):
            names = {gpu_name}
            if kernel and gpu_name:
                names |= {g.name for g in same_silicon(gpu(gpu_name))}
            refs += self.prov.runs_of(r for r in self.rows if gpu_model(r) in names
                                      and r["workload"] in workloads)
        return InputRow(name, value, kind, fig.source, refs)

    def gpu_set(self, gpu_name: str) -> Ref:
        """The I ref of a GPU type's inputs."""
        def build() -> list[InputRow]:
            g, m = gpu(gpu_name), self.meas
            s, d, causal = INPUT_ATTENTION
            _, gemm = m.gemm_seconds(g, *INPUT_GEMM)
            fwd = m.attention_tflops(g, s, d, causal, "fwd")
            bwd = m.attention_tflops(g, s, d, causal, "bwd")
            hbm, nvl, pw = m.hbm_tbps(g), m.nvlink_busbw_gbps(g), m.gemm_power_w(g)
            att = f"s={s} d={d}{' causal' if causal else ''}"
            row = self.figure_row
            return [
                row("GEMM bf16 8192^3", f"{gemm.value:.0f} TFLOP/s", gemm, gpu_name, ("gemm",),
                    kernel=True),
                row(f"attention fwd {att}", f"{fwd.value:.0f} TFLOP/s", fwd, gpu_name,
                    ("attention",), kernel=True),
                row(f"attention bwd {att}", f"{bwd.value:.0f} TFLOP/s", bwd, gpu_name,
                    ("attention",), kernel=True),
                row("HBM bandwidth", f"{hbm.value:.2f} TB/s", hbm, gpu_name, ("membw",)),
                row("NVLink all-reduce busbw", f"{nvl.value:.0f} GB/s", nvl, gpu_name,
                    ALLREDUCE_WORKLOADS),
                row("GPU power under load", f"{pw.value:.0f} W", pw, gpu_name, ("gemm",)),
            ]

        return self._input_set(f"gpu:{gpu_name}", f"GPU {gpu_name}", build)

    def cluster_set(self, name: str) -> Ref:
        """The I ref of a cluster preset's inputs (pools, node shape, fabric, power)."""
        def build() -> list[InputRow]:
            c = cluster(name)
            f, pw, src = c.fabric, c.power, c.sources

            def row(what: str, value: str, text: str) -> InputRow:
                kind = source_kind(text)
                return InputRow(what, value, kind, text, (self.prov.source(text, kind),))

            pools = ", ".join(f"{p.gpus:,} {p.gpu}" for p in c.pools)
            rows = [row("GPU pools", pools, src.get("pools", "assumption: not stated")),
                    row("GPUs per node", str(c.gpus_per_node),
                        src.get("gpus_per_node", "assumption: not stated"))]
            rows += [row(f"fabric {f.name}: {k}", v, f.sources.get(k, "assumption: not stated"))
                     for k, v in (("gbps_per_gpu", f"{f.gbps_per_gpu:.0f} Gb/s per GPU"),
                                  ("efficiency", f"{f.efficiency:.0%} = {f.busbw_gbps:.1f} GB/s"),
                                  ("alpha_s", f"{f.alpha_s * 1e6:.1f} us per step"))]
            rows.append(row("NVLink step latency", f"{c.nvlink_alpha_s * 1e6:.1f} us",
                            src.get("nvlink_alpha_s", "assumption: not stated")))
            rows.append(row("power beyond the GPUs",
                            f"{pw.node_overhead_w / 1000:.1f} kW per node, network "
                            f"{pw.network_fraction:.0%}, PUE {pw.pue}",
                            src.get("power", "assumption: not stated")))
            if c.reported_power_mw:
                rows.append(row("reported site power", f"{c.reported_power_mw:.0f} MW",
                                src.get("reported_power_mw", "")))
            return rows

        return self._input_set(f"cluster:{name}", f"cluster {name}", build)

    def constants(self) -> list:
        """(name, Figure) of the model-wide constants the Measurements object carries (the
        calibrated framework efficiency, the SM share of overlapped collectives, ...)."""
        return [(k, v) for k, v in vars(self.meas).items() if isinstance(v, MFigure)]

    def constants_set(self) -> Ref | None:
        """The I ref of the model-wide constants, or None when there are none."""
        if not self.constants():
            return None

        def build() -> list[InputRow]:
            return [self.figure_row(name.replace("_", " "), f"{fig.value:.3g}", fig)
                    for name, fig in self.constants()]

        return self._input_set("constants", "model-wide constants (every GPU type)", build)

    def goodput_refs(self, row: dict) -> tuple[Ref, Ref]:
        """The S refs of a goodput row (reports/model/goodput.py): the interruption rate's
        source and the checkpoint/restart assumption."""
        rate = self.prov.source(f"{row['failures_per_gpu_hour']:.2e} interruptions per "
                                f"GPU-hour: {row['sources']['failures_per_gpu_hour']}")
        ckpt = self.prov.source(f"assumption: checkpoint write {row['checkpoint_s']:.0f} s, "
                                f"restart after an interruption {row['restart_s']:.0f} s "
                                f"(reports/model/goodput.py CHECKPOINT_S, RESTART_S)",
                                "assumption")
        return rate, ckpt

    def basis(self, gpu_names: Iterable[str], cluster: str | None = None) -> tuple[Ref, ...]:
        """The I refs an estimate on these GPU types (and this cluster preset) rests on."""
        refs = [self.gpu_set(g) for g in dict.fromkeys(gpu_names)]
        refs += [self.cluster_set(cluster)] if cluster else []
        const = self.constants_set()
        return tuple(refs + ([const] if const else []))


def inputs_section(ctx: ModelContext) -> Section:
    """The input sets every modelled number points to (built last: it lists all sets used)."""
    sec = Section("inputs", "Model inputs: what the estimates rest on",
                  intro="The scaling model prices every GEMM, attention kernel and collective "
                        "with these figures: measured where the measurements have them, else "
                        "the labelled published figure or assumption. Modelled numbers point "
                        "here (I labels); each row points to its run (R) or source (S).")
    for g in ROOF_GPUS:
        ctx.gpu_set(g)
    kinds = []
    for _, (ref, title, rows) in sorted(ctx.sets.items(), key=lambda kv: int(kv[1][0].label[1:])):
        table = Table(["input", "value", "kind", "source"], [], f"{ref.label}: {title}",
                      id=ref.anchor)
        for r in rows:
            table.rows.append([Cell(r.name), Cell(r.value, r.refs), Cell(r.kind),
                               Cell(r.source)])
            kinds.append(r.kind)
        sec.tables.append(table)
    measured = sum(k in ("measured", "reference") for k in kinds)
    sec.notes.append(Cell(f"{measured} of {len(kinds)} inputs are measured; the rest are "
                          f"published figures, calibrated constants or assumptions."))
    return sec
