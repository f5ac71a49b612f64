"""One training step of a dense transformer on one GPU type: the pieces assembled.

Tensor (tp), pipeline (pp, interleaved over `virtual_stages`), context (cp) and data (dp)
parallelism, micro-batches, activation recomputation. `step_time()` returns the time of one step
with a breakdown and the bytes each GPU holds. The formulas live by concern: compute.py (FLOPs,
GEMMs, attention, memory-bound kernels), comm.py (collectives), pipeline.py (schedules),
memory.py (bytes); the efficiencies they are fed come from measurements.py.

Conventions: bf16 activations and weights (2 bytes); "GB" decimal, "GiB" binary; Megatron rank
order tp (fastest) - cp - dp - pp, so a tp group sits inside a node when tp <= GPUs per node.
"""

from __future__ import annotations

from dataclasses import dataclass

from reports.model.comm import cp_seconds, dp_seconds, pp_seconds, tp_seconds
from reports.model.compute import Clock, layer_compute, output_layer_compute
from reports.model.config import GRAD_ACCUM, Parallel, ScenarioError, Training, training_from
from reports.model.hardware import GPU, Cluster
from reports.model.measurements import Measurements
from reports.model.memory import capacity_bytes, memory_per_gpu, rank_params
from reports.model.pipeline import bubble_fraction, stage_layers
from reports.model.presets import Model, model_from

__all__ = ["StepTime", "Training", "model_from", "step_time", "training_from"]

# Adam's step over this GPU's shard, ~30 B per parameter of HBM traffic (fp32 master, m, v read
# and written, fp32 gradient read, bf16 weight written): memory-bound.
OPTIMIZER_BYTES_PER_PARAM = 30


def grad_accum_bytes(params_local: float, train: Training, shards: int) -> float:
    """HBM traffic of one micro-batch's gradient accumulation outside the GEMM
    (config.GRAD_ACCUM), over the gradients this GPU accumulates: a 1/shards share when they
    are reduce-scattered every micro-batch (ZeRO-2 and -3), else all of them."""
    fixed, per = GRAD_ACCUM[train.grad_accum]
    return params_local / shards * (fixed + per * train.grad_bytes)


@dataclass
class StepTime:
    """One training step on one GPU type, seconds, with where the time goes."""

    step_s: float
    microbatch_s: float  # one micro-batch through the slowest stage, all its chunks
    breakdown_s: dict[str, float]
    memory_bytes: dict[str, float]
    capacity_bytes: float
    sources: dict[str, str]

    @property
    def memory_total(self) -> float:
        return sum(self.memory_bytes.values())

    @property
    def fits(self) -> bool:
        return self.memory_total <= self.capacity_bytes


def layer_seconds(model: Model, par: Parallel, train: Training, cluster: Cluster, g: GPU,
                  meas: Measurements) -> Clock:
    """Seconds of one layer for one micro-batch on one GPU, forward + backward (+ recompute), by
    category: compute, recompute, memory_bound, tp_comm, cp_comm."""
    c = Clock()
    tokens = par.micro_batch * model.seq_len // par.cp  # each cp rank holds s / cp
    x = layer_compute(c, model, tokens, par.tp, par.cp, par.micro_batch, train.attention,
                      train.causal, train.sequence_parallel, g, meas)
    if par.tp > 1:
        c.note("nvlink", meas.nvlink_busbw_gbps(g))
    tp_f, tp_b = tp_seconds(model, tokens, par, cluster, g, meas, train)
    cp_f, cp_b = cp_seconds(model, par, cluster, g, meas, x["attn_f"], x["attn_b"])
    c.add("compute", x["fwd"] + x["bwd"] + x["attn_f"] + x["attn_b"])
    c.add("memory_bound", x["elem_f"] + x["elem_b"])
    c.add("tp_comm", tp_f + tp_b)
    c.add("cp_comm", cp_f + cp_b)
    if par.recompute == "full":
        c.add("recompute", x["fwd"] + x["attn_f"] + x["elem_f"])
        c.add("tp_comm", tp_f)
        c.add("cp_comm", cp_f)
    elif par.recompute == "selective":
        # the attention core again: Megatron-Core's selective granularity checkpoints core_attn,
        # so a flash forward re-runs before its backward (for the same bytes as none); unfused,
        # its scores, softmax and dropout too
        c.add("recompute", x["attn_f"] + (x["score_f"] if train.attention == "unfused" else 0.0))
    return c


def step_time(model: Model, par: Parallel, train: Training, cluster: Cluster, g: GPU,
              meas: Measurements, microbatches: int) -> StepTime:
    """One training step with `microbatches` micro-batches per pipeline on GPU type `g`.

    step = (m + (p-1)/v) x t_mb  +  exposed data-parallel communication  +  optimizer step,
    where t_mb is one micro-batch (forward + backward, all chunks, its pipeline sends and its
    gradient accumulation) on the slowest stage.
    """
    if microbatches < 1:
        raise ScenarioError("a step needs at least one micro-batch per pipeline")
    # one layer and the output layer depend on tp, cp, micro-batch and recompute only: a search
    # over pp, dp and interleaving reuses them
    key = ("layer", model, par.tp, par.cp, par.micro_batch, par.recompute, train, cluster, g.name)
    if key not in meas.cache:
        clock = layer_seconds(model, par, train, cluster, g, meas)
        tokens = par.micro_batch * model.seq_len // par.cp
        meas.cache[key] = (clock, output_layer_compute(model, tokens, par.tp, g, meas, clock))
    layer, out = meas.cache[key]
    per, last = stage_layers(model.layers, par.pp)
    full = {k: per * v for k, v in layer.t.items()}
    tail = {k: last * v for k, v in layer.t.items()}
    for k, v in out.items():
        tail[k] = tail.get(k, 0.0) + v
    stage = max(full, tail, key=lambda d: sum(d.values())) if par.pp > 1 else \
        {k: full.get(k, 0.0) + out.get(k, 0.0) for k in {**full, **out}}
    stage["pp_comm"] = pp_seconds(model, par, cluster, g, meas, train)
    params_local = max(rank_params(model, par.pp, par.virtual_stages, par.tp)) / par.tp
    # sharded gradients are reduce-scattered every micro-batch (comm.dp_seconds), so only the
    # shard is accumulated; otherwise the whole gradients, reduced once per step
    grad_shards = par.dp * par.cp if train.grads_sharded else 1
    stage["grad_accum"] = grad_accum_bytes(params_local, train, grad_shards) / (
        meas.hbm_tbps(g).value * 1e12)
    t_mb = sum(stage.values())

    m = microbatches
    breakdown = {k: m * v for k, v in stage.items()}
    breakdown["pp_bubble"] = bubble_fraction(par.pp, m, par.virtual_stages) * m * t_mb
    breakdown["dp_comm"], dp_src = dp_seconds(model, par, train, cluster, g, meas,
                                              params_local, stage, m)
    shard = params_local / (par.dp * par.cp if train.zero >= 1 else 1)
    breakdown["optimizer"] = shard * OPTIMIZER_BYTES_PER_PARAM / (meas.hbm_tbps(g).value * 1e12)

    mem = memory_per_gpu(model, par, train, m)
    sources = dict(layer.sources)
    sources["fabric"] = f"{cluster.fabric.name}: " + "; ".join(
        f"{k}: {v}" for k, v in cluster.fabric.sources.items())
    sources["dp_comm"] = dp_src
    if train.grad_accum != "fused":
        per = grad_accum_bytes(1, train, 1)
        on = "its whole gradients" if grad_shards == 1 else f"its 1/{grad_shards} shard"
        sources["grad_accum"] = (f"{train.grad_accum}: {per:g} B per parameter per micro-batch "
                                 f"at the HBM rate, on {on}")
    return StepTime(sum(breakdown.values()), t_mb, breakdown, mem,
                    capacity_bytes(g.memory_bytes), sources)
