"""Communication of one training step: collective formulas, overlap, and the four groups.

- Tensor parallel: two collectives per layer forward and two backward, each an all-reduce of the
  layer's activations, or with sequence parallelism an all-gather plus a reduce-scatter of the
  same bytes (Korthikanti et al. 2022, sec. 4.2.2). Megatron-Core's --tp-comm-overlap splits
  them into chunks hidden behind the neighbouring GEMMs (Transformer Engine userbuffers); the
  hidden part costs the SMs the copies occupy (`overlap_exposed`).
- Data parallel: gradients reduce-scattered (and weights all-gathered with a sharded optimizer)
  over dp x cp, bucketed, overlapped with the backward of the last micro-batch and the forward of
  the first (Megatron-Core --overlap-grad-reduce / --overlap-param-gather); two-level: NVLink
  inside a node, then each GPU's NIC across the Spectrum-X fabric.
- Pipeline: point-to-point of one micro-batch's activations per chunk boundary, each way.
- Context parallel: the ring exchange of K and V blocks, overlapped with attention.
"""

from __future__ import annotations

import math

from reports.model.config import Parallel, Training
from reports.model.hardware import GPU, Cluster
from reports.model.measurements import Measurements
from reports.model.presets import Model


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


def link(cluster: Cluster, group_span: int, nvlink_busbw: float) -> tuple[float, float]:
    """(busbw GB/s, alpha s) of a collective over `group_span` consecutive ranks: NVLink when they
    fit in one node, otherwise the scale-out NIC of each GPU."""
    if group_span <= cluster.gpus_per_node:
        return nvlink_busbw, cluster.nvlink_alpha_s
    return cluster.fabric.busbw_gbps, cluster.fabric.alpha_s


def tp_seconds(model: Model, tokens: int, par: Parallel, cluster: Cluster, g: GPU,
               meas: Measurements, gemm_s: float, train: Training) -> tuple[float, float]:
    """(forward, backward) exposed tensor-parallel seconds of one layer for one micro-batch.
    A fraction `tp_overlap` hides behind that direction's GEMMs (`gemm_s`: fwd GEMM seconds;
    backward has twice the window) at the SM share's cost."""
    if par.tp == 1:
        return 0.0, 0.0
    busbw, alpha = link(cluster, par.tp, meas.nvlink_busbw_gbps(g).value)
    one = allreduce_seconds(tokens * model.hidden * 2, par.tp, busbw, alpha)
    f = train.tp_overlap
    share = meas.comm_sm_share.value

    def exposed(comm: float, window: float) -> float:
        return comm * (1 - f) + overlap_exposed(comm * f, window, share)

    return exposed(2 * one, gemm_s), exposed(2 * one, 2 * gemm_s)


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


def pp_seconds(model: Model, par: Parallel, cluster: Cluster, g: GPU,
               meas: Measurements) -> float:
    """Point-to-point seconds per micro-batch on one stage: its activations cross each of the v
    chunk boundaries forward and their gradients backward; each tp rank sends its 1/t share over
    its own link (scatter/gather, Narayanan et al. 2021, sec. 4.1)."""
    if par.pp == 1:
        return 0.0
    nbytes = par.micro_batch * (model.seq_len // par.cp) * model.hidden * 2 / par.tp
    span = par.tp * par.cp * par.dp
    if span < cluster.gpus_per_node:
        bw, alpha = meas.nvlink_busbw_gbps(g).value, cluster.nvlink_alpha_s
    else:
        bw, alpha = cluster.fabric.busbw_gbps, cluster.fabric.alpha_s
    return 2 * par.virtual_stages * (nbytes / (bw * 1e9) + alpha)


def dp_seconds(model: Model, par: Parallel, train: Training, cluster: Cluster, g: GPU,
               meas: Measurements, params_local: float, stage: dict, m: int
               ) -> tuple[float, str]:
    """Exposed data-parallel communication per step (seconds) and how it was modelled.

    Gradients are reduced over dp x cp ranks (weights are replicated across cp). The group is
    hierarchical: ranks that share a node (when tp < GPUs per node) reduce over NVLink first,
    the rest cross the fabric on each GPU's NIC. With a sharded optimizer: reduce-scatter of
    grad_bytes gradients and all-gather of bf16 weights; replicated: an all-reduce. ZeRO-3
    gathers the weights for forward and backward and reduce-scatters gradients every
    micro-batch. With overlap, the reduce-scatter hides behind the last micro-batch's backward
    and the all-gather behind the first forward, except the last bucket.
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

    buckets = dp_bucket_count(params_local, n)

    def overlapped(total: float, window: float) -> float:
        tail = total / buckets  # the last bucket cannot hide
        return overlap_exposed(total - tail, window, meas.comm_sm_share.value) + tail

    rs_t = rs(params_local * train.grad_bytes) + (buckets - 1) * rs(0.0)
    ag_t = rs(params_local * 2) + (buckets - 1) * rs(0.0)
    how = (f"hierarchical: {n_local} per node on NVLink x {n_nodes} nodes on "
           f"{cluster.fabric.busbw_gbps:.1f} GB/s per GPU, {buckets} buckets")
    compute = stage.get("compute", 0.0)
    # the windows: the last micro-batch's backward (all v chunks) and the first one's forward
    bwd_window, fwd_window = compute * 2 / 3, compute / 3
    if train.zero == 3:
        window = sum(v for k, v in stage.items() if k != "pp_comm")
        return m * overlapped(2 * ag_t + rs_t, window), how + ", ZeRO-3 every micro-batch"
    if train.zero == 0:
        total = 2 * rs_t  # all-reduce = reduce-scatter + all-gather of the gradients
        if not train.overlap_grad_reduce:
            return total, how + ", all-reduce after the backward (not overlapped)"
        return overlapped(total, bwd_window), how + ", all-reduce overlapped"
    if not train.overlap_grad_reduce:
        return rs_t + ag_t, how + ", reduce-scatter + all-gather, not overlapped"
    exposed = overlapped(rs_t, bwd_window) + overlapped(ag_t, fwd_window)
    return exposed, how + ", reduce-scatter + all-gather overlapped with backward/forward"
