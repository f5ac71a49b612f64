"""Estimate: the model's answer for one scenario (its layout, step time and breakdown,
memory, sources and notes) and what `estimate --json` prints of it; days_to_train."""

from __future__ import annotations

from dataclasses import dataclass, field

from reports.model.compute import flops_per_token, mfu
from reports.model.config import Parallel
from reports.model.hardware import gpu
from reports.model.memory import gib
from reports.model.pipeline import BATCH_TOLERANCE, batch_deviation, inflight_microbatches
from reports.model.scenario import Scenario
from results.words import counted


def days_to_train(tokens: float, tokens_per_s: float, useful_fraction: float = 1.0) -> float:
    """Days to train `tokens` at `tokens_per_s`, with goodput's useful fraction of wall time."""
    return tokens / (tokens_per_s * useful_fraction) / 86400.0


@dataclass
class Estimate:
    """The model's answer for one scenario. `to_dict()` is what `estimate --json` prints."""

    scenario: Scenario
    parallel: Parallel
    microbatches: dict[str, int]  # per GPU type
    step_time_s: float
    tokens_per_step: int
    breakdown_s: dict[str, float]
    memory_bytes: dict[str, float]
    capacity_bytes: float
    fits_in_memory: bool
    sources: dict[str, str]
    per_type: dict[str, dict] = field(default_factory=dict)
    search: dict | None = None
    range: dict | None = None

    @property
    def gpus(self) -> int:
        return self.scenario.cluster.gpus

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_time_s

    @property
    def tflops_per_gpu(self) -> float:
        """Model TFLOP/s per GPU (attention as computed; recomputation not counted)."""
        return flops_per_token(self.scenario.model, self.scenario.attention_count) * \
            self.tokens_per_s / self.gpus / 1e12

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation against the GPUs' dense bf16 peak (count-weighted)."""
        pools = self.scenario.cluster.pools
        peak = sum(gpu(p.gpu).bf16_tflops * p.gpus for p in pools) / self.gpus
        return mfu(self.tokens_per_s / self.gpus, self.scenario.model, peak,
                   self.scenario.attention_count)

    @property
    def batch_deviation(self) -> float:
        """The batch this layout runs over the requested one, minus one."""
        return batch_deviation(self.tokens_per_step, self.scenario.global_batch_tokens)

    @property
    def inflight_microbatches(self) -> float:
        """Micro-batches the first pipeline rank holds in flight (pipeline.inflight_microbatches),
        the most over the GPU types."""
        p = self.parallel
        return max(inflight_microbatches(p.pp, m, p.virtual_stages)
                   for m in self.microbatches.values())

    def days_to_train(self, tokens: float, useful_fraction: float = 1.0) -> float:
        """Days to train `tokens`, with the goodput's useful fraction of wall time applied."""
        return days_to_train(tokens, self.tokens_per_s, useful_fraction)

    def notes(self) -> list[str]:
        """What a planner must know to read this estimate: a bubble that dominates the step (too
        small a batch for the cluster), a run batch off the request by more than
        BATCH_TOLERANCE, and that a mixed cluster's figure is one job only."""
        out = []
        dev, tol = self.batch_deviation, f"+-{BATCH_TOLERANCE:.0%}"
        if abs(dev) > BATCH_TOLERANCE:
            why = (f"no layout that fits comes within {tol} of it, the closest taken" if
                   self.scenario.parallel is None else f"this layout's whole micro-batches per "
                   f"replica miss it by more than {tol}")
            out.append(f"the step runs {self.tokens_per_step:,} tokens, {dev:+.1%} against the "
                       f"requested {self.scenario.global_batch_tokens:,}: {why}")
        bubble = self.breakdown_s.get("pp_bubble", 0.0) / self.step_time_s
        mb = min(self.microbatches.values())
        if bubble > 0.25:
            out.append(f"the pipeline bubble is {bubble:.0%} of the step: "
                       f"{self.tokens_per_step / 1e6:.1f}M tokens per step leave "
                       f"{counted(mb, 'micro-batch', 'micro-batches')} per replica on "
                       f"{counted(self.gpus, 'GPU')}; "
                       f"a larger global_batch_tokens (a labelled input) or fewer GPUs per job "
                       f"keeps them busy")
        if len(self.scenario.cluster.gpu_types) > 1:
            out.append("one job across every GPU type (its layout must divide each pool); the "
                       "cluster questions (reports.model.cluster.colossus_200k_gain, the "
                       "report's H200 section) also weigh separate jobs per type and the same "
                       "number of H100s, and name the best with its reason")
        return out

    def to_dict(self) -> dict:
        s = self.scenario
        d = {
            "scenario": s.name, "model": s.model.name, "params_b": s.model.params() / 1e9,
            "cluster": s.cluster.name, "gpus": self.gpus, "gpu_types": s.cluster.gpu_types,
            "parallel": self.parallel.to_dict() | {"auto": s.parallel is None,
                                                   "schedule": self.parallel.schedule},
            "training": s.training.to_dict(),
            "microbatches": self.microbatches,
            "global_batch_tokens": self.tokens_per_step,
            "requested_global_batch_tokens": s.global_batch_tokens,
            "global_batch_source": s.batch_source,
            "batch_tolerance": BATCH_TOLERANCE,
            "inflight_microbatches": self.inflight_microbatches,
            "step_time_s": self.step_time_s,
            "tokens_per_s": self.tokens_per_s,
            "tflops_per_gpu": self.tflops_per_gpu,
            "mfu": self.mfu,
            "mfu_convention": "6N + causal attention as computed, recomputation not counted "
                              "(reports/model/compute.py flops_per_token)",
            "breakdown_s": dict(self.breakdown_s),
            "memory_gib_per_gpu": gib(sum(self.memory_bytes.values())),
            "memory_breakdown_gib": {k: gib(v) for k, v in self.memory_bytes.items()},
            "memory_capacity_gib": gib(self.capacity_bytes),
            "fits_in_memory": self.fits_in_memory,
            "sources": dict(self.sources),
        }
        if self.range is not None:
            d["range"] = self.range
        if self.per_type:
            d["per_type"] = self.per_type
            d["mixed_batch"] = s.mixed_batch
        d["notes"] = self.notes()
        if self.search is not None:
            d["search"] = self.search
        return d
