"""Pipeline schedules as Megatron-Core runs them: 1F1B and interleaved 1F1B.

1F1B (Narayanan et al. 2021, sec. 2.2.1): p stages, m micro-batches per step; bubble (p - 1)
micro-batch times; the first stage holds up to p micro-batches' activations in flight.
Interleaved 1F1B (sec. 2.2.2): each rank holds v model chunks of l/(p v) layers; the bubble
shrinks to (p - 1)/v, the in-flight activations grow by 1 + (p - 1)/(p v) (Korthikanti et al.
2022, sec. 4.2.3), and there are v times as many point-to-point transfers. Megatron-Core
requires the micro-batches per step to be a multiple of p for the interleaved schedule
(megatron/core/pipeline_parallel/schedules.py: "number of microbatches must be divisible by
pipeline-model-parallel-size when using interleaved schedule") and the layers to split evenly
into p x v chunks (megatron/core/transformer: num_layers divisible by
pipeline_model_parallel_size x virtual_pipeline_model_parallel_size), or to do so with one layer
fewer on the first and the last stage (Megatron-Core --decoder-first/last-pipeline-num-layers;
Llama 3 ran 126 layers so on 16 stages, Dubey et al. 2024, sec. 3.3.2).

A framework runs a whole number of micro-batches per replica and step, so the global batch it
runs moves in steps of dp x micro_batch sequences: `microbatches_per_replica` takes the nearest
whole number, and `closest_batches` is the one rule every search keeps layouts by (within
BATCH_TOLERANCE of the requested batch, or the closest when none is).
"""

from __future__ import annotations

import functools
import math

from reports.model.config import ScenarioError

# How far the batch a layout runs may be from the requested one (assumption: +-5%). The batch
# is a labelled input because it is an optimisation setting, not a throughput knob: the learning
# rate and its schedule are tuned to it, and a run that trains 1.8x the tokens per step is a
# different run, so a layout search must not buy tokens/s with a larger batch. Some rounding is
# forced: Megatron-LM takes the global batch in sequences and requires it divisible by
# micro_batch x dp (megatron/core/num_microbatches_calculator.py, "global batch size ... is not
# divisible by micro batch size ... times data parallel size"), so the batch moves in steps of
# dp x micro_batch sequences. 5% is our choice of "the same batch" (no source): small against
# the 2x steps between the batch sizes papers compare, large enough that most layouts of a
# 100k-GPU cluster have a whole micro-batch count near a 16M-token batch.
BATCH_TOLERANCE = 0.05


def microbatches_per_replica(sequences: int, dp: int, micro_batch: int) -> int:
    """Micro-batches each data-parallel replica runs per step: the nearest whole number to
    sequences / (dp x micro_batch) (halves round up), at least one."""
    return max(1, math.floor(sequences / (dp * micro_batch) + 0.5))


def batch_deviation(realised_tokens: float, requested_tokens: float) -> float:
    """Realised over requested global batch, minus one (+0.05: 5% more tokens per step)."""
    return realised_tokens / requested_tokens - 1


def closest_batches(items: list, realised, requested_tokens: float) -> list:
    """The items (layouts, estimates) whose realised batch (`realised(item)`, tokens) lies
    within BATCH_TOLERANCE of the request; when none does, those closest to it."""
    dev = [abs(batch_deviation(realised(x), requested_tokens)) for x in items]
    ok = [x for x, d in zip(items, dev) if d <= BATCH_TOLERANCE + 1e-12]
    if ok or not items:
        return ok
    best = min(dev)
    return [x for x, d in zip(items, dev) if d <= best + 1e-12]


def valid_microbatch_counts(pp: int, virtual_stages: int, target: float) -> list[int]:
    """The whole micro-batch counts next to `target` (below and above) that the schedule can
    run: any count for 1F1B, a multiple of pp (at least pp) interleaved (schedule_problem)."""
    step = pp if virtual_stages > 1 else 1
    lo = max(step, step * math.floor(target / step))
    return sorted({lo, max(step, step * math.ceil(target / step))})


def bubble_fraction(pp: int, microbatches: int, virtual_stages: int = 1) -> float:
    """Pipeline bubble over ideal compute time: (p - 1) / (v m) (Narayanan et al. 2021, sec. 2.2:
    1F1B has (p - 1)/m, the interleaved schedule divides it by v)."""
    if pp < 1 or microbatches < 1 or virtual_stages < 1:
        raise ValueError("pp, microbatches and virtual_stages must be >= 1")
    return (pp - 1) / (virtual_stages * microbatches)


def stage_layers(layers: int, pp: int) -> tuple[int, int]:
    """(layers on the fullest stage, layers on the last stage). Stages hold ceil(l/p) or
    floor(l/p) layers; the last stage, which also holds the output layer, takes floor(l/p)
    (Llama 3 likewise put fewer layers on its last stage)."""
    if pp > layers:
        raise ScenarioError(f"pp={pp} exceeds the {layers} layers: a stage would be empty")
    return -(-layers // pp), layers // pp


def inflight_microbatches(pp: int, microbatches: int, virtual_stages: int = 1) -> float:
    """Micro-batches whose activations the first stage holds at the peak, in units of one
    micro-batch through the whole stage: min(p, m) for 1F1B, x (1 + (p - 1)/(p v)) interleaved
    (Korthikanti et al. 2022, sec. 4.2.3). No pipeline: one."""
    if pp == 1:
        return 1.0
    base = min(pp, microbatches)
    return base * (1 + (pp - 1) / (pp * virtual_stages)) if virtual_stages > 1 else float(base)


def schedule_problem(layers: int, pp: int, virtual_stages: int, microbatches: int) -> str | None:
    """Why Megatron-Core cannot run this schedule, or None when it can."""
    if pp > layers:
        return f"pp ({pp}) exceeds the {layers} layers"
    if virtual_stages == 1:
        return None
    if layers % (pp * virtual_stages) and (layers + 2) % (pp * virtual_stages):
        return (f"{layers} layers do not split into pp x virtual_stages = {pp} x "
                f"{virtual_stages} equal chunks (interleaving needs layers divisible by pp*v, "
                "or layers + 2 with one layer fewer on the first and last stage)")
    if microbatches % pp:
        return (f"micro-batches per step ({microbatches}) are not a multiple of pp ({pp}): the "
                "interleaved schedule needs them divisible by pp")
    return None


def virtual_stage_options(layers: int, pp: int, microbatches: int, limit: int = 8) -> list[int]:
    """Every interleaving degree v (1 = plain 1F1B) Megatron-Core can run for this layout."""
    if pp == 1:
        return [1]
    return [v for v in range(1, limit + 1)
            if schedule_problem(layers, pp, v, microbatches) is None]


def chunk_layers(layers: int, pp: int, virtual_stages: int) -> list[list[int]]:
    """Layers in each model chunk of each pipeline rank, [rank][chunk]. Even when the layers
    split evenly into pp x v chunks; otherwise with one layer fewer on the first chunk of the
    first rank and the last chunk of the last rank, when layers + 2 splits evenly (Llama 3's
    layout: that first chunk holds the embedding, that last one the output layer; Dubey et al.
    2024, sec. 3.3.2); otherwise (plain 1F1B only) ceil(l/p) on the first l mod p ranks and
    floor(l/p) on the rest, the last among them (stage_layers)."""
    v = virtual_stages
    n = pp * v
    if layers % n == 0:
        return [[layers // n] * v for _ in range(pp)]
    if (layers + 2) % n == 0:
        c = (layers + 2) // n
        out = [[c] * v for _ in range(pp)]
        out[0][0] -= 1
        out[-1][-1] -= 1
        return out
    per, last = stage_layers(layers, pp)
    fuller = layers - last * pp  # ranks holding one layer more (none when even)
    return [[per if r < fuller else last] for r in range(pp)]


@functools.lru_cache(maxsize=65536)  # pure, and asked again for every candidate layout
def inflight_layer_microbatches(layers: int, pp: int, virtual_stages: int, microbatches: int,
                                rank: int) -> float:
    """Layer-micro-batches of activations rank `rank` holds at its peak under Megatron-Core's
    schedules: 1F1B warms up with p - r micro-batches (at most m); the interleaved schedule with
    2 (p - r - 1) + (v - 1) p + 1 chunk passes (at most m v), cycling through its chunks p
    micro-batches at a time (megatron/core/pipeline_parallel/schedules.py, warm-up counts). For
    rank 0 with even chunks this is Korthikanti et al.'s L (1 + (p - 1)/(p v))."""
    chunks = chunk_layers(layers, pp, virtual_stages)[rank]
    v = virtual_stages
    if pp == 1:
        return float(sum(chunks))
    if v == 1:
        return float(min(microbatches, pp - rank) * chunks[0])
    passes = min(microbatches * v, 2 * (pp - rank - 1) + (v - 1) * pp + 1)
    held = 0
    for i in range(passes):
        held += chunks[(i // pp) % v]
    return float(held)
