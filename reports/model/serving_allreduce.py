"""All-reduce inside one NVLink node by message size, for the serving model's tensor-parallel
traffic: decode steps all-reduce 1-70 MB, where the fixed cost of a ring pass sets the busbw,
not the large-message figure. Measured NCCL rows where they exist, else a published curve."""

from __future__ import annotations

import math

from reports.model.hardware import GPU
from reports.model.measurements import Figure, Measurements

# nccl-tests all_reduce_perf, 8 ranks on one 8x H100-SXM node (NVLink 4 + NVSwitch), float sum,
# out-of-place time in us by message bytes (aws-samples/awsome-distributed-training,
# 1.architectures/3.aws-batch/README.md; mpirun -np 8 -N 8: one node). Decode all-reduces are
# 1-70 MB, where this curve's busbw (64-360 GB/s) is well below the 370-480 GB/s of the large
# sizes: the fixed cost of a ring pass (~13-20 us) and pipeline fill dominate there.
ALLREDUCE_8GPU_US = ((8, 12.90), (1024, 16.43), (65536, 19.09), (262144, 20.27),
                     (524288, 21.17), (1048576, 28.56), (2097152, 43.45), (4194304, 55.44),
                     (8388608, 84.29), (16777216, 124.0), (33554432, 198.6), (67108864, 326.6),
                     (134217728, 592.8), (268435456, 1121.4), (536870912, 2165.3),
                     (1073741824, 4253.0))


def allreduce_curve(meas: Measurements, g: GPU) -> Figure:
    """All-reduce time by size inside one node, as (bytes, us at 8 ranks) points: NCCL
    all_reduce rows of at least 3 sizes over the largest world in one node (the best busbw per
    size, as 8-rank time), else the published ALLREDUCE_8GPU_US (taken for the H200 too: same
    NVLink 4 and NVSwitch; assumption). value: the points."""
    rows = [r for w in ("allreduce", "all_reduce") for r in meas.rows(w, g.name)
            if r["params"].get("op") == "all_reduce" and r.get("backend") in ("nccl", None)
            and 2 <= int(r.get("world_size") or 0) <= g.node_gpus
            and float(r.get("busbw_gbps") or 0) > 0 and float(r["params"].get("bytes") or 0) > 0]
    world = max((int(r["world_size"]) for r in rows), default=0)
    best: dict[float, float] = {}
    for r in (r for r in rows if int(r["world_size"]) == world):
        x = float(r["params"]["bytes"])
        best[x] = max(best.get(x, 0.0), float(r["busbw_gbps"]))
    if len(best) < 3:
        return Figure(ALLREDUCE_8GPU_US, "published nccl-tests all-reduce by size on one 8x "
                      "H100-SXM node (ALLREDUCE_8GPU_US; for the H200 too: same NVLink 4 and "
                      "NVSwitch), busbw capped at the node's large-message figure", "assumption")
    pts = tuple((x, x * 2 * 7 / 8 / (bw * 1e9) * 1e6) for x, bw in sorted(best.items()))
    return Figure(pts, f"{rows[0]['_origin']}: nccl all_reduce {g.name} x{world}, {len(pts)} "
                  f"sizes {pts[0][0]:.3g}-{pts[-1][0]:.3g} bytes", rows[0]["_origin"])


def allreduce_busbw_gbps(nbytes: float, cap_gbps: float, pts=ALLREDUCE_8GPU_US) -> float:
    """Bus bandwidth (nccl-tests convention: algbw x 2(n-1)/n) of an all-reduce of `nbytes` in
    one NVLink node: the 8-rank time of allreduce_curve interpolated in log-log (clamped at its
    ends), capped by the node's large-message figure (measured rows, else the fallback). busbw
    normalises out the rank count, so the same curve prices tp 2 and 4 (assumption)."""
    x = min(max(nbytes, pts[0][0]), pts[-1][0])
    i = next(j for j in range(1, len(pts)) if pts[j][0] >= x)
    (a, ta), (b, tb) = pts[i - 1], pts[i]
    w = math.log(x / a) / math.log(b / a)
    t_us = math.exp(math.log(ta) + w * (math.log(tb) - math.log(ta)))
    return min(cap_gbps, x * 2 * 7 / 8 / (t_us * 1e-6) / 1e9)
