"""What the H200 adds on the same silicon: the H200 gain at a GPU count, with its reasons.

H100 SXM and H200 SXM share SMs and clocks (one GEMM and attention ceiling unless both have
measured rows: measurements.same_silicon); they differ in memory capacity and bandwidth. The
gain is the H200 at the H100's best layout and at its own best layout, against the H100's best;
the reasons say what the memory bought (fewer model-parallel ways, larger micro-batches, less
recompute, another split, faster memory-bound work), with the bandwidths the model prices.
"""

from __future__ import annotations

from reports.model.cluster import _job_cluster, _scenario_for
from reports.model.config import Parallel, ScenarioError
from reports.model.estimate import Estimate
from reports.model.hardware import Cluster, cluster, gpu
from reports.model.measurements import as_measurements
from reports.model.memory import gib
from reports.model.search import estimate_range, evaluate, search


def _homogeneous(gpu_name: str, gpus: int) -> Cluster:
    """`gpus` GPUs of one type on colossus-100k's fabric and nodes: cluster._job_cluster, so a
    job of that size elsewhere in the same process is searched once."""
    return _job_cluster(cluster("colossus-100k"), gpu_name, gpus)


def _why_h200(h100: Estimate, own: Estimate, same: Estimate, meas) -> list[str]:
    """What the H200's memory and bandwidth bought, in words; the bandwidths are the model's
    own inputs (meas.hbm_tbps), the datasheet's named beside them. A part that takes under
    half a millisecond on both GPUs says nothing and is left out."""
    a, b = h100.parallel, own.parallel
    out = []
    ways = f"tp{a.tp} pp{a.pp} cp{a.cp} -> tp{b.tp} pp{b.pp} cp{b.cp}"
    if (b.tp * b.pp * b.cp) < (a.tp * a.pp * a.cp):
        out.append(f"fewer model-parallel ways: {ways} (141 GB holds more of the model per GPU)")
    elif (b.tp, b.pp, b.cp) != (a.tp, a.pp, a.cp):
        out.append(f"another split of the model: {ways} ({_on_h100(h100, b, meas)})")
    if b.micro_batch > a.micro_batch:
        out.append(f"larger micro-batches: {a.micro_batch} -> {b.micro_batch}")
    order = {"none": 0, "selective": 1, "full": 2}
    if order[b.recompute] < order[a.recompute]:
        out.append(f"less recompute: {a.recompute} -> {b.recompute}")
    if b.virtual_stages != a.virtual_stages:
        out.append(f"interleaving v{a.virtual_stages} -> v{b.virtual_stages}")
    bw = hbm_figures(meas)
    why = (f"HBM {bw['H100-SXM']['model']:.2f} -> {bw['H200-SXM']['model']:.2f} TB/s as the "
           f"model prices it, {bw['H200-SXM']['kind']}; datasheet "
           f"{bw['H100-SXM']['datasheet']:g} -> {bw['H200-SXM']['datasheet']:g} TB/s")
    for k in ("memory_bound", "grad_accum", "optimizer"):  # the HBM-bound parts of a step
        h, s = h100.breakdown_s.get(k, 0.0), same.breakdown_s.get(k, 0.0)
        if max(h, s) >= 5e-4:  # both would print as 0.000 s
            out.append(f"{k} {h:.3g} s -> {s:.3g} s per step at the same layout ({why})")
    if not out:
        out.append("same layout and same compute ceiling: only memory-bound work is faster")
    return out


def _on_h100(h100: Estimate, par: Parallel, meas) -> str:
    """Why the H100 search did not take the H200's layout: it does not fit an H100, or it is
    slower there."""
    try:
        e = evaluate(h100.scenario, par, meas)
    except ScenarioError as err:
        return f"the H100 pools cannot run it: {err}"
    if not e.fits_in_memory:
        return (f"{gib(sum(e.memory_bytes.values())):.0f} GiB per GPU: more than an H100 "
                f"holds, {gib(e.capacity_bytes):.0f} usable")
    return f"on an H100 it runs at {e.tokens_per_s / h100.tokens_per_s:.3f}x the H100's best"


def hbm_figures(meas) -> dict:
    """HBM bandwidth of H100 and H200: what the model uses (measured rows, else the labelled
    fallback of reports/model/fallbacks.py HBM_FALLBACK) and the datasheet's figure."""
    out = {}
    for name in ("H100-SXM", "H200-SXM"):
        fig = meas.hbm_tbps(gpu(name))
        out[name] = {"model": fig.value, "kind": fig.kind, "source": fig.source,
                     "datasheet": gpu(name).hbm_tbps}
    return out


def h200_gain(model: str = "llama3-405b", gpus: int = 16384, measurements=None,
              batch_tokens: int | None = None) -> dict:
    """H200 against H100 per GPU on `gpus` GPUs of each: (a) the H100's best layout run
    unchanged on H200 (bandwidth only), (b) the H200's own best layout (its 141 GB allow less
    TP/PP, less recomputation, bigger micro-batches). One compute ceiling for both (same SMs and
    clocks), so any gain comes from memory: capacity and bandwidth, given as `reasons`."""
    meas = as_measurements(measurements)
    h100 = search(_scenario_for(model, _homogeneous("H100-SXM", gpus), batch_tokens), meas)
    same = evaluate(_scenario_for(model, _homogeneous("H200-SXM", gpus), batch_tokens,
                                  parallel=h100.parallel), h100.parallel, meas)
    own = search(_scenario_for(model, _homogeneous("H200-SXM", gpus), batch_tokens), meas)
    if own.tokens_per_s < same.tokens_per_s:  # the H100 layout is a valid H200 layout too
        own = same
    base = h100.tokens_per_s
    return {
        "model": model, "gpus": gpus, "global_batch_tokens": h100.tokens_per_step,
        "h100": {"parallel": h100.parallel.to_dict(), "tokens_per_s": base, "mfu": h100.mfu,
                 "memory_gib_per_gpu": gib(sum(h100.memory_bytes.values())),
                 "range": estimate_range(h100, meas)},
        "h200_same_config": {"parallel": same.parallel.to_dict(),
                             "tokens_per_s": same.tokens_per_s, "mfu": same.mfu,
                             "gain": same.tokens_per_s / base, "range": estimate_range(same, meas)},
        "h200_own_config": {"parallel": own.parallel.to_dict(),
                            "tokens_per_s": own.tokens_per_s, "mfu": own.mfu,
                            "gain": own.tokens_per_s / base,
                            "memory_gib_per_gpu": gib(sum(own.memory_bytes.values())),
                            "range": estimate_range(own, meas)},
        "reasons": _why_h200(h100, own, same, meas),
        "hbm_tbps": hbm_figures(meas),
        "gemm_8192_tflops": _ceilings(meas),
    }


def _ceilings(meas) -> dict:
    """The 8192^3 GEMM rate each GPU type is priced at, with its source: one shared figure from
    the fallbacks or from one type's rows (the other borrows them: same SMs and clocks), or each
    type's own rows when both have some (the source then states their spread)."""
    out = {}
    for name in ("H100-SXM", "H200-SXM"):
        _, fig = meas.gemm_seconds(gpu(name), 8192, 8192, 8192)
        out[name] = {"tflops": fig.value, "kind": fig.kind, "source": fig.source}
    return out
