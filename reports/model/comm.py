"""Communication of one training step: collective formulas, overlap, and the four groups.

- Tensor parallel: two collectives per layer forward and two backward, each an all-reduce of the
  layer's activations, or with sequence parallelism an all-gather plus a reduce-scatter of the
  same bytes (Korthikanti et al. 2022, sec. 4.2.2). Megatron-Core's --tp-comm-overlap runs
  them as Transformer Engine's userbuffers overlap, site by site as NeMo configures it on H100
  (UB_SITES): all-gathers in peer-to-peer steps behind the GEMM's row chunks, reduce-scatters
  in chunks behind the next chunk on fewer SMs, the backward's in bulk beside whole GEMMs.
- Data parallel: gradients reduce-scattered (and weights all-gathered with a sharded optimizer)
  over dp x cp, bucketed, overlapped with the backward of the last micro-batch and the forward of
  the first (Megatron-Core --overlap-grad-reduce / --overlap-param-gather); with gradients
  sharded (ZeRO-2, -3) every micro-batch's, behind the next one's work; two-level: NVLink
  inside a node, then each GPU's NIC across the Spectrum-X fabric.
- Pipeline: point-to-point of one micro-batch's activations per chunk boundary, each way.
- Context parallel: the ring exchange of K and V blocks, overlapped with attention.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from reports.model.compute import gemm_roles
from reports.model.config import Parallel, Training
from reports.model.hardware import GPU, Cluster
from reports.model.measurements import Measurements
from reports.model.presets import Model
from results.words import counted


def allreduce_seconds(nbytes: float, n: int, busbw_gbps: float, alpha_s: float) -> float:
    """All-reduce of `nbytes` over n ranks: bytes * 2(n-1)/n / busbw + alpha * 2(n-1) steps.
    busbw as nccl-tests define it (algbw x 2(n-1)/n, doc/PERFORMANCE.md), so a measured busbw
    plugs in directly; a ring takes 2(n-1) latency steps."""
    if n <= 1:
        return 0.0
    return nbytes * 2 * (n - 1) / n / (busbw_gbps * 1e9) + alpha_s * 2 * (n - 1)


def reduce_scatter_seconds(nbytes: float, n: int, busbw_gbps: float, alpha_s: float) -> float:
    """Reduce-scatter (or all-gather) of a buffer of `nbytes` over n ranks: bytes * (n-1)/n /
    busbw + alpha * (n-1) (nccl-tests: busbw = algbw x (n-1)/n for these two)."""
    if n <= 1:
        return 0.0
    return nbytes * (n - 1) / n / (busbw_gbps * 1e9) + alpha_s * (n - 1)


def hierarchical_reduce_scatter_seconds(nbytes: float, n_local: int, n_nodes: int,
                                        nvlink_busbw: float, net_busbw: float,
                                        nvlink_alpha: float, net_alpha: float) -> float:
    """Reduce-scatter over n_local GPUs per node x n_nodes nodes, two levels: inside the node on
    NVLink, then across nodes on each GPU's own NIC with 1/n_local of the data. NCCL pipelines the
    two levels, so the slower one sets the time (this reproduces the ~350 GB/s all-reduce busbw
    measured on 248 nodes x 8 H200 with 8x400G, NVIDIA/nccl-tests issue #283)."""
    intra = reduce_scatter_seconds(nbytes, n_local, nvlink_busbw, nvlink_alpha)
    inter = reduce_scatter_seconds(nbytes / n_local, n_nodes, net_busbw, net_alpha)
    return max(intra, inter)


def dp_bucket_count(params_local: float, dp: int) -> int:
    """Gradient buckets per step: Megatron-Core's default bucket holds max(40M, 1M x dp)
    parameters (megatron/core/distributed/distributed_data_parallel.py)."""
    return max(1, math.ceil(params_local / max(40e6, 1e6 * dp)))


def overlap_exposed(comm_s: float, window_s: float, sm_share: float) -> float:
    """Time a collective adds when it runs alongside `window_s` of compute: the part that does not
    fit in the window, plus the compute slowed by the SMs the collective occupies while hidden."""
    hidden = min(comm_s, window_s)
    return comm_s - hidden + hidden * sm_share


def staggered_exposed(comm_s: float, chunks: int, window_s: float, gap_s: float,
                      sm_share: float, lag_s: float = 0.0) -> float:
    """Time a once-per-step data-parallel collective adds when the model is cut into `chunks`
    chunks per stage whose equal shares are issued one chunk at a time, on one stream, as
    Megatron-Core's interleaved schedule issues them (megatron/core/pipeline_parallel/
    schedules.py, forward_backward_pipelining_with_interleaving).

    Chunk c (counted from the one issued last) may start `window_s` before the compute it hides
    behind ends plus c gaps of `gap_s`, and `lag_s` later than that (never after the compute
    ends): weights, all gathered from the step's start, are needed chunk after chunk;
    gradients, with Megatron-Core's default align_grad_reduce, are launched after a chunk's last
    backward and pp_rank passes later (`window_s` 0, `lag_s` the last rank's pp - 1 passes; the
    last chunk's launched after the compute). What is late is the single server's finish past
    that end: max over c of (c + 1) shares less c gaps, the window and the lag. One chunk, no
    lag: overlap_exposed."""
    d = comm_s / chunks
    late = max([0.0] + [min(0.0, lag_s - c * gap_s - window_s) + (c + 1) * d
                        for c in range(chunks)])
    return late + (comm_s - late) * sm_share


def weights_gathered_exposed(comm_s: float, chunks: int, buckets: int, window_s: float,
                             gap_s: float, sm_share: float) -> float:
    """Time the once-per-step weight all-gather adds ahead of the forward: `buckets` equal
    buckets (at least one per chunk) gathered in the order the forward needs them, on one
    stream from the step's start; the forward waits for each (Megatron-Core's
    finish_param_sync). Chunk c's pass takes window_s / chunks and starts c gaps of `gap_s`
    after the first; its buckets are needed evenly over the pass. The forward ends late by the
    largest (gathered by then - needed by then) over the buckets (a single server feeding one
    consumer), at each chunk's first or last bucket. One chunk: staggered_exposed(comm_s,
    buckets, 0, window_s / buckets, sm_share), bucket by bucket."""
    d, per, tau = comm_s / buckets, buckets / chunks, window_s / chunks
    late = max(max(d * (c * per + 1), d * (c + 1) * per - tau + tau / per) - c * gap_s
               for c in range(chunks))
    return late + (comm_s - late) * sm_share


def link(cluster: Cluster, group_span: int, nvlink_busbw: float) -> tuple[float, float]:
    """(busbw GB/s, alpha s) of a collective over `group_span` consecutive ranks: NVLink when they
    fit in one node, otherwise the scale-out NIC of each GPU."""
    if group_span <= cluster.gpus_per_node:
        return nvlink_busbw, cluster.nvlink_alpha_s
    return cluster.fabric.busbw_gbps, cluster.fabric.alpha_s


@dataclass(frozen=True)
class UbSite:
    """One tensor-parallel collective of a layer under Transformer Engine's comm-GEMM overlap
    (userbuffers, Megatron-Core --tp-comm-overlap) and the GEMM that hides it.

    method: "ring_exchange" (an all-gather as tp - 1 peer-to-peer steps on copy engines, each
    behind one of the tp row chunks of the GEMM), "pipeline" (a reduce-scatter in `num_splits`
    chunks, each behind the next GEMM chunk, the GEMM confined to the SMs the kernel leaves:
    set_sm_margin), "bulk" (the whole collective on `num_sm` SMs alongside the whole GEMM)."""

    role: str  # gemm_roles key
    gemm_pass: str  # "fprop" (m, n, k), "dgrad" (m, k, n) or "wgrad" (k, n, m)
    method: str
    num_sm: int = 0
    num_splits: int = 1


# NeMo's H100 userbuffers configuration (NVIDIA/NeMo-Framework-Launcher,
# launcher_scripts/conf/training/tp_overlap/ub_cfg_h100_h8192_tp4_mbs1_seqlen8192.yaml) for the
# four collectives of sequence parallelism each way: forward all-gathers (qkv, fc1 inputs) and
# reduce-scatters (out_proj, fc2 outputs); backward all-gathers of output gradients (out_proj,
# fc2 dgrad) and reduce-scatters of input gradients behind the weight-gradient GEMMs (qkv, fc1
# wgrad). Its bulk re-gathers of the inputs for the weight gradients (qkv_dgrad, fc1_dgrad) are
# not priced: the plain count leaves them out too (Megatron hides them behind the data gradient).
UB_SITES: dict[str, tuple[UbSite, ...]] = {
    "fwd": (UbSite("qkv", "fprop", "ring_exchange"),
            UbSite("out_proj", "fprop", "pipeline", 24, 4),
            UbSite("fc1", "fprop", "ring_exchange"),
            UbSite("fc2", "fprop", "pipeline", 16, 4)),
    "bwd": (UbSite("fc2", "dgrad", "ring_exchange"), UbSite("fc1", "wgrad", "bulk", 4),
            UbSite("out_proj", "dgrad", "ring_exchange"), UbSite("qkv", "wgrad", "bulk", 24)),
}


def pass_shape(gemm_pass: str, m: int, n: int, k: int) -> tuple[int, int, int]:
    """The (m, n, k) of a layer GEMM's forward (m, n, k), data-gradient or weight-gradient pass
    (as compute.gemm_fwd_bwd prices them)."""
    return {"fprop": (m, n, k), "dgrad": (m, k, n), "wgrad": (k, n, m)}[gemm_pass]


def ub_site_exposed(site: UbSite, coll_s: float, gemm: Callable[[int, int, int], float],
                    m: int, n: int, k: int, tp: int, sm_count: int) -> float:
    """Seconds one userbuffers site adds to its GEMM. `gemm(m, n, k)`: seconds of one GEMM at a
    shape; (m, n, k): the layer's forward GEMM; `coll_s`: the collective alone (an all-gather or
    reduce-scatter of the layer's activations over tp). What it adds: the part of the collective
    no chunk hides, the cost of running the GEMM as smaller chunks, and the SMs it occupies."""
    rows, cols, inner = pass_shape(site.gemm_pass, m, n, k)
    whole = gemm(rows, cols, inner)
    if site.method == "bulk":
        return max(0.0, coll_s - whole) + min(coll_s, whole) * site.num_sm / sm_count
    if site.method == "ring_exchange":
        # the gathered tokens arrive as tp row chunks: chunk 0 is local, each later one
        # arrives behind a GEMM (TE CommOverlapP2PBase::split_overlap_ag, aggregate off)
        part = gemm(max(1, rows // tp), cols, inner)
        return max(0.0, part + (tp - 1) * max(part, coll_s / (tp - 1)) - whole)
    if site.method == "pipeline":
        # the weight is split along the output features (TE CommOverlapBase::split_overlap_rs
        # chunks A's rows); each chunk's tokens are reduce-scattered behind the next chunk, all
        # chunks on the SMs the kernel leaves (set_sm_margin)
        splits = site.num_splits
        part = gemm(rows, max(1, cols // splits), inner) * sm_count / (sm_count - site.num_sm)
        return max(0.0, part + (splits - 1) * max(part, coll_s / splits) + coll_s / splits
                   - whole)
    raise ValueError(f"unknown userbuffers method {site.method!r}")


def tp_seconds(model: Model, tokens: int, par: Parallel, cluster: Cluster, g: GPU,
               meas: Measurements, train: Training) -> tuple[float, float]:
    """(forward, backward) exposed tensor-parallel seconds of one layer for one micro-batch.

    Without overlap: two all-reduces each way, or with sequence parallelism an all-gather and a
    reduce-scatter each. Backward, the column-parallel layers' (qkv, fc1) input-gradient
    reduce-scatter (all-reduce) runs behind their weight-gradient GEMM where the framework does
    so (`async_dgrad`); sequence parallelism's re-gather of the inputs for the weight gradient
    hides behind the data gradient and is not counted. A fraction `tp_overlap` runs as
    Transformer Engine's comm-GEMM overlap instead, site by site (UB_SITES, ub_site_exposed)."""
    if par.tp == 1:
        return 0.0, 0.0
    busbw, alpha = link(cluster, par.tp, meas.nvlink_busbw_gbps(g).value)
    nbytes = tokens * model.hidden * 2
    coll = reduce_scatter_seconds(nbytes, par.tp, busbw, alpha)  # or an all-gather
    allreduce = allreduce_seconds(nbytes, par.tp, busbw, alpha)  # = 2 coll
    fe = meas.efficiency(g).value
    roles = gemm_roles(model, par.tp)

    def gemm(m: int, n: int, k: int) -> float:
        return meas.gemm_seconds(g, m, n, k)[0] / fe

    plain_f = plain_b = 2 * allreduce  # or 2 x (all-gather + reduce-scatter)
    if train.async_dgrad:
        share = meas.comm_sm_share.value
        dgrad_comm = coll if train.sequence_parallel else allreduce  # per column-parallel layer
        plain_b = 2 * allreduce - 2 * dgrad_comm + sum(
            overlap_exposed(dgrad_comm, gemm(*pass_shape("wgrad", tokens, *roles[r])), share)
            for r in ("qkv", "fc1"))
    # userbuffers overlap needs sequence parallelism (Megatron-LM arguments.py refuses
    # --tp-comm-overlap without --sequence-parallel)
    f = train.tp_overlap if train.sequence_parallel else 0.0
    if f == 0:
        return plain_f, plain_b

    def overlapped(direction: str) -> float:
        # a hedge, not a framework rule: a site whose chunks would cost more than its
        # collective is priced plainly (the chunks run on several streams in Transformer
        # Engine, so one chunk's tail overlaps the next; pricing each alone overstates them)
        return sum(min(ub_site_exposed(s, coll, gemm, tokens, *roles[s.role], par.tp,
                                       g.sm_count), coll) for s in UB_SITES[direction])

    return (1 - f) * plain_f + f * overlapped("fwd"), (1 - f) * plain_b + f * overlapped("bwd")


def cp_seconds(model: Model, par: Parallel, cluster: Cluster, g: GPU, meas: Measurements,
               attn_f: float, attn_b: float) -> tuple[float, float]:
    """(forward, backward) exposed context-parallel seconds of one layer: the ring passes cp - 1
    K/V blocks (bf16, this tp rank's KV heads) forward and K, V, dK, dV backward, overlapped with
    the attention compute (Megatron-Core's ring attention, Liu et al. 2023)."""
    if par.cp == 1:
        return 0.0, 0.0
    busbw, _ = link(cluster, par.tp * par.cp, meas.nvlink_busbw_gbps(g).value)
    kv_block = par.micro_batch * (model.seq_len // par.cp) * 2 * (model.kv_dim / par.tp) * 2
    comm_f = (par.cp - 1) * kv_block / (busbw * 1e9)
    share = meas.comm_sm_share.value
    return overlap_exposed(comm_f, attn_f, share), overlap_exposed(2 * comm_f, attn_b, share)


# DeepSpeed's TrainSchedule issues every send and receive as its own blocking call at a step
# boundary, and each holds both neighbours: a transfer crosses the critical path ~1.9 times per
# micro-batch (a simulation of the schedule with rendezvous sends: 1.86 at pp 35 x 240
# micro-batches, 1.95 at pp 12 x 256; tests/test_pipeline_sends.py). Megatron-LM pairs each
# send with the opposite receive in one batched call, crossed once each way.
DEEPSPEED_P2P_EXPOSURE = 1.9


def pp_seconds(model: Model, par: Parallel, cluster: Cluster, g: GPU,
               meas: Measurements, train: Training) -> float:
    """Point-to-point seconds per micro-batch on one stage: its activations cross each of the v
    chunk boundaries forward and their gradients backward.

    Megatron-LM (scatter/gather, Narayanan et al. 2021, sec. 4.1): each tp rank sends its 1/t
    share both ways over its own link. DeepSpeed's pipeline engine (Training.pp_scatter_gather
    False; deepspeed/runtime/pipe/engine.py, 2020-21): activations leave as 1/t partitions
    (PartitionedTensor) that the receiver all-gathers over NVLink, gradients go back whole
    (is_grad_partitioned False); each send exposed DEEPSPEED_P2P_EXPOSURE times, the gather
    once."""
    if par.pp == 1:
        return 0.0
    nbytes = par.micro_batch * (model.seq_len // par.cp) * model.hidden * 2
    # ranks are ordered tp - cp - dp - pp, so stages sit tp*cp*dp ranks apart: the hops stay on
    # NVLink only when the whole pipeline fits in one node; otherwise some boundary crosses the
    # fabric, and the slowest hop paces every micro-batch
    if par.tp * par.cp * par.dp * par.pp <= cluster.gpus_per_node:
        bw, alpha = meas.nvlink_busbw_gbps(g).value, cluster.nvlink_alpha_s
    else:
        bw, alpha = cluster.fabric.busbw_gbps, cluster.fabric.alpha_s

    def hop(b: float) -> float:
        return b / (bw * 1e9) + alpha

    if train.pp_scatter_gather:
        return 2 * par.virtual_stages * hop(nbytes / par.tp)
    tp_bw, tp_alpha = link(cluster, par.tp, meas.nvlink_busbw_gbps(g).value)
    gather = reduce_scatter_seconds(nbytes, par.tp, tp_bw, tp_alpha)  # an all-gather
    # the receiver's all-gather holds only itself: once per micro-batch
    return par.virtual_stages * (DEEPSPEED_P2P_EXPOSURE * (hop(nbytes / par.tp) + hop(nbytes))
                                 + gather)


def dp_seconds(model: Model, par: Parallel, train: Training, cluster: Cluster, g: GPU,
               meas: Measurements, params_local: float, stage: dict, m: int
               ) -> tuple[float, str]:
    """Exposed data-parallel communication per step (seconds) and how it was modelled.

    Gradients are reduced over dp x cp ranks (weights are replicated across cp). The group is
    hierarchical: ranks that share a node (when tp < GPUs per node) reduce over NVLink first,
    the rest cross the fabric on each GPU's NIC. With a sharded optimizer: reduce-scatter of
    grad_bytes gradients and all-gather of bf16 weights; replicated: an all-reduce. ZeRO-2
    keeps only its gradient shard, so it reduce-scatters every micro-batch (and gathers the
    updated weights once); ZeRO-3 also gathers the weights for each forward and backward. With
    overlap, a once-per-step reduce-scatter hides behind the last micro-batch's backward and the
    all-gather behind the first forward, bucket by bucket as the gradients come and the weights
    are needed, except the last bucket; per-micro-batch collectives hide behind the next
    micro-batch's work, the last micro-batch's behind its own backward (ZeRO-2) or whole work
    (ZeRO-3), its last bucket exposed.
    """
    n = par.dp * par.cp
    if n == 1:
        return 0.0, "no data parallelism"
    n_local = max(1, min(n, cluster.gpus_per_node // par.tp))
    while n % n_local:
        n_local -= 1
    n_nodes = n // n_local
    nvl = meas.nvlink_busbw_gbps(g).value

    def rs(nbytes: float) -> float:
        return hierarchical_reduce_scatter_seconds(nbytes, n_local, n_nodes, nvl,
                                                   cluster.fabric.busbw_gbps,
                                                   cluster.nvlink_alpha_s, cluster.fabric.alpha_s)

    v = par.virtual_stages
    # Megatron-Core keeps one gradient buffer per model chunk: at least one bucket each
    buckets = max(dp_bucket_count(params_local, n), v)
    compute = stage.get("compute", 0.0)
    share = meas.comm_sm_share.value

    def behind(total: float, window: float) -> float:
        # bucket by bucket over `window`: a bucket's reduction starts once the backward has
        # made its last gradient (Megatron-Core: param_and_grad_buffer.py, register_grad_ready),
        # the buckets spaced evenly (a layer's GEMMs take time in proportion to its weights:
        # assumption). The last bucket is exposed whole; a collective longer than `window` also
        # waits window / buckets for the first. Per micro-batch under chunks: the other
        # micro-batches' collectives fill the stream between the chunks' passes
        return staggered_exposed(total, buckets, 0.0, window / buckets, share)

    def gathered(total: float, window: float) -> float:
        # the weights behind the first forward (`window`: all v chunks); interleaved, chunk
        # after chunk, a group of pp micro-batches' passes of one chunk apart (Megatron-Core's
        # default microbatch_group_size_per_vp_stage): weights_gathered_exposed
        return weights_gathered_exposed(total, v, buckets, window, par.pp * window / v, share)

    def reduced(total: float, window: float) -> float:
        # the gradients once per step behind the last micro-batch's backward (`window`);
        # interleaved, each chunk's whole share after its last backward, pp_rank passes late
        if v == 1:
            return behind(total, window)
        tau = window / v
        return staggered_exposed(total, v, 0.0, par.pp * tau, share, lag_s=(par.pp - 1) * tau)

    rs_t = rs(params_local * train.grad_bytes) + (buckets - 1) * rs(0.0)
    ag_t = rs(params_local * 2) + (buckets - 1) * rs(0.0)
    how = (f"hierarchical: {n_local} per node on NVLink x {counted(n_nodes, 'node')} on "
           f"{cluster.fabric.busbw_gbps:.1f} GB/s per GPU, {counted(buckets, 'bucket')}")
    # the windows: the last micro-batch's backward (all v chunks, with what it recomputes) and
    # the first one's forward
    bwd_window, fwd_window = compute * 2 / 3 + stage.get("recompute", 0.0), compute / 3
    window = sum(t for k, t in stage.items() if k not in ("pp_comm", "grad_accum"))

    def every_microbatch(per_mb: float, last_window: float) -> float:
        # each micro-batch's collectives hide behind the next one's work; only the last
        # micro-batch's wait, behind `last_window`, their last bucket exposed
        return (m - 1) * overlap_exposed(per_mb, window, share) + behind(per_mb, last_window)

    if train.grads_sharded:
        # only a gradient shard is kept (memory.state_bytes_per_param), so each micro-batch's
        # are reduce-scattered as they come (DeepSpeed's ZeRO-2). ZeRO-3 also gathers the
        # weights for each forward and backward; ZeRO-2 keeps them whole (memory holds them)
        # and gathers them once, after the optimizer step
        zero3 = train.zero == 3
        per_mb = rs_t + (2 * ag_t if zero3 else 0.0)
        how += ", ZeRO-3 every micro-batch" if zero3 else \
            ", ZeRO-2: reduce-scatter every micro-batch"
        if not train.overlap_grad_reduce:
            return m * per_mb + (0.0 if zero3 else ag_t), how + ", not overlapped"
        if zero3:
            # lumped: the last micro-batch's gathers and reduce-scatter, bucket by bucket over
            # its whole work (an approximation: its reduce-scatter cannot start before its
            # backward, so this errs fast)
            return every_microbatch(per_mb, window), how
        return (every_microbatch(per_mb, bwd_window) + gathered(ag_t, fwd_window),
                how + ", all-gather once")
    if train.zero == 0:
        total = 2 * rs_t  # all-reduce = reduce-scatter + all-gather of the gradients
        if not train.overlap_grad_reduce:
            return total, how + ", all-reduce after the backward (not overlapped)"
        return reduced(total, bwd_window), how + ", all-reduce overlapped"
    if not train.overlap_grad_reduce:
        return rs_t + ag_t, how + ", reduce-scatter + all-gather, not overlapped"
    exposed = reduced(rs_t, bwd_window) + gathered(ag_t, fwd_window)
    return exposed, how + ", reduce-scatter + all-gather overlapped with backward/forward"
