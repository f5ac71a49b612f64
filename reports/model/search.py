"""estimate(scenario) -> Estimate: one layout evaluated, or the search over every layout a
framework can run that fits in memory at the requested batch (pipeline.closest_batches), each
estimate with its range over unstated settings."""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import replace

from reports.model.compute import flops_per_token, mfu
from reports.model.config import RECOMPUTE, Parallel, ScenarioError
from reports.model.estimate import Estimate
from reports.model.hardware import Cluster, Pool, gpu
from reports.model.measurements import Figure, Measurements, as_measurements
from reports.model.memory import capacity_bytes, gib, memory_per_gpu
from reports.model.pipeline import (
    BATCH_TOLERANCE,
    closest_batches,
    inflight_microbatches,
    microbatches_per_replica,
    schedule_problem,
    stage_layers,
    valid_microbatch_counts,
    virtual_stage_options,
)
from reports.model.presets import Model
from reports.model.scenario import Scenario, load_scenario
from reports.model.step import StepTime, step_time
from results.words import counted


def _replicas(clu: Cluster, par: Parallel) -> list[tuple[Pool, int]]:
    """Data-parallel replicas per GPU pool (a replica never straddles two GPU types)."""
    out = []
    for p in clu.pools:
        if p.gpus % par.model_parallel:
            raise ScenarioError(f"tp*pp*cp = {par.model_parallel} does not divide the {p.gpus} "
                                f"{p.gpu} GPUs (replicas cannot mix GPU types)")
        out.append((p, p.gpus // par.model_parallel))
    return out


def check_parallel(model: Model, par: Parallel, clu: Cluster, sequences: int,
                   attention: str) -> None:
    """Raise ScenarioError when the configuration cannot run at all (`attention`: the
    training's, flash or unfused)."""
    if par.gpus != clu.gpus:
        raise ScenarioError(f"tp*pp*cp*dp = {par.tp}*{par.pp}*{par.cp}*{par.dp} = {par.gpus}, "
                            f"but the cluster has {clu.gpus} GPUs")
    if model.heads % par.tp:
        raise ScenarioError(f"heads ({model.heads}) not divisible by tp ({par.tp})")
    if model.kv_heads % par.tp:
        raise ScenarioError(f"kv_heads ({model.kv_heads}) not divisible by tp ({par.tp}); "
                            "Megatron needs query groups divisible by tp")
    if model.ffn_hidden % par.tp:
        raise ScenarioError(f"ffn_hidden ({model.ffn_hidden}) not divisible by tp ({par.tp})")
    if model.seq_len % (2 * par.cp) and par.cp > 1:
        raise ScenarioError(f"seq_len ({model.seq_len}) not divisible by 2*cp ({2 * par.cp}): "
                            "context parallelism splits the sequence into 2*cp chunks")
    if par.cp > 1 and attention != "flash":  # megatron/core/transformer/dot_product_attention.py
        raise ScenarioError(f"cp={par.cp} needs fused attention (training.attention: flash): "
                            "Megatron-Core runs context parallelism only in "
                            "TEDotProductAttention")
    stage_layers(model.layers, par.pp)
    if sequences < par.dp * par.micro_batch:
        raise ScenarioError(f"global batch of {counted(sequences, 'sequence')} is smaller than "
                            f"dp x micro_batch = {par.dp * par.micro_batch}; raise "
                            "global_batch_tokens or use more model parallelism")
    m = microbatches_per_replica(sequences, par.dp, par.micro_batch)
    problem = schedule_problem(model.layers, par.pp, par.virtual_stages, m)
    if problem:
        raise ScenarioError(problem)
    _replicas(clu, par)


def evaluate(scn: Scenario, par: Parallel, meas: Measurements) -> Estimate:
    """The estimate for one fixed parallel configuration (no search, no range)."""
    check_parallel(scn.model, par, scn.cluster, scn.sequences, scn.training.attention)
    m_base = microbatches_per_replica(scn.sequences, par.dp, par.micro_batch)
    reps = _replicas(scn.cluster, par)
    times: dict[str, StepTime] = {}
    mbs: dict[str, int] = {}

    def run(g: str, m: int) -> StepTime:
        return step_time(scn.model, par, scn.training, scn.cluster, gpu(g), meas, m)

    for pool, _ in reps:
        times[pool.gpu] = run(pool.gpu, m_base)
        mbs[pool.gpu] = m_base
    if scn.mixed_batch == "proportional" and len(reps) > 1:
        mbs, times = _proportional(scn, par, reps, times, run)
    slow = max(times, key=lambda g: times[g].step_s)
    step = times[slow].step_s
    tokens = sum(r * mbs[p.gpu] for p, r in reps) * par.micro_batch * scn.model.seq_len
    fits = all(t.fits for t in times.values())
    worst_mem = max(times.values(), key=lambda t: t.memory_total / t.capacity_bytes)
    per_type = {}
    sources = dict(times[slow].sources)
    sources["global_batch_tokens"] = scn.batch_source
    if len(reps) > 1:
        fpt = flops_per_token(scn.model, scn.attention_count)
        for pool, r in reps:
            t = times[pool.gpu]
            tok = r * mbs[pool.gpu] * par.micro_batch * scn.model.seq_len
            per_type[pool.gpu] = {
                "gpus": pool.gpus, "replicas": r, "microbatches": mbs[pool.gpu],
                "own_step_time_s": t.step_s, "idle_s": step - t.step_s,
                "tokens_per_s": tok / step,
                "tflops_per_gpu": fpt * tok / step / pool.gpus / 1e12,
                "mfu": mfu(tok / step / pool.gpus, scn.model, gpu(pool.gpu).bf16_tflops,
                           scn.attention_count),
                "inflight_microbatches": inflight_microbatches(par.pp, mbs[pool.gpu],
                                                               par.virtual_stages),
                "breakdown_s": t.breakdown_s,
                "memory_gib_per_gpu": gib(t.memory_total),
                "memory_capacity_gib": gib(t.capacity_bytes),
                "fits_in_memory": t.fits,
            }
            for k, v in t.sources.items():
                sources.setdefault(f"{pool.gpu}: {k}", v)
    return Estimate(scn, par, mbs, step, tokens, times[slow].breakdown_s,
                    worst_mem.memory_bytes, worst_mem.capacity_bytes, fits, sources, per_type)


def _proportional(scn: Scenario, par: Parallel, reps, times: dict, run) -> tuple[dict, dict]:
    """Micro-batches per replica of each GPU type in proportion to its speed (the requested
    batch shared out), each a count the schedule can run (valid_microbatch_counts: a multiple
    of pp when interleaved): of the counts next to each type's share, the combination with the
    most tokens/s among those within BATCH_TOLERANCE of the request (closest_batches)."""
    speed = {p.gpu: 1.0 / times[p.gpu].microbatch_s for p, _ in reps}
    norm = sum(r * speed[p.gpu] for p, r in reps)
    total = scn.sequences / par.micro_batch  # micro-batches over all replicas
    options = [valid_microbatch_counts(par.pp, par.virtual_stages, total * speed[p.gpu] / norm)
               for p, _ in reps]
    st = {(p.gpu, m): run(p.gpu, m) for (p, _), ms in zip(reps, options) for m in ms}
    per_mb = par.micro_batch * scn.model.seq_len

    def tokens(combo) -> int:
        return sum(r * m for (_, r), m in zip(reps, combo)) * per_mb

    combos = closest_batches(list(itertools.product(*options)), tokens, scn.global_batch_tokens)
    best = max(combos, key=lambda c: tokens(c) / max(st[(p.gpu, m)].step_s
                                                     for (p, _), m in zip(reps, c)))
    return ({p.gpu: m for (p, _), m in zip(reps, best)},
            {p.gpu: st[(p.gpu, m)] for (p, _), m in zip(reps, best)})


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def candidates(scn: Scenario, *, recompute=RECOMPUTE, micro_batches=(1, 2, 4, 8),
               max_virtual: int = 8):
    """Every parallel configuration a framework can run (Megatron-Core's rules, see
    check_parallel and pipeline.schedule_problem): context parallelism only with flash
    attention."""
    model, clu = scn.model, scn.cluster
    flash = scn.training.attention == "flash"  # step.layer_seconds, memory.py: no s^2 term
    cps = (1, 2, 4, 8, 16) if flash else (1,)
    g = math.gcd(*[p.gpus for p in clu.pools])
    tps = [t for t in (1, 2, 4, 8, 16) if t <= clu.gpus_per_node and g % t == 0
           and model.heads % t == 0 and model.kv_heads % t == 0 and model.ffn_hidden % t == 0]
    for tp in tps:
        for cp in cps:
            if (g // tp) % cp or (cp > 1 and model.seq_len % (2 * cp)) or \
                    (cp > 1 and model.seq_len // cp < 1024):
                continue
            for pp in _divisors(g // (tp * cp), model.layers):
                dp = clu.gpus // (tp * cp * pp)
                for b in micro_batches:
                    if scn.sequences < dp * b:
                        continue
                    m = microbatches_per_replica(scn.sequences, dp, b)
                    for v in virtual_stage_options(model.layers, pp, m, max_virtual):
                        for rc in recompute:
                            if rc == "selective" and flash and "none" in recompute:
                                continue  # with flash: none's bytes, and the forward again
                            yield Parallel(tp, pp, cp, dp, b, v, rc)


def search(scn: Scenario, meas: Measurements, **kw) -> Estimate:
    """The fastest configuration (most tokens/s) that fits in memory on every GPU type, among
    those whose run batch lies within BATCH_TOLERANCE of the request (or, when none does, those
    closest to it: pipeline.closest_batches; Estimate.notes says so). Kept in
    `meas.cache`: the cluster questions and the report ask for the same scenario many times."""
    key = ("search", scn, tuple(sorted(kw.items())))
    if key not in meas.cache:
        meas.cache[key] = _search(scn, meas, **kw)
    return copy.copy(meas.cache[key])  # callers may set fields (range) on theirs


def _search(scn: Scenario, meas: Measurements, **kw) -> Estimate:
    evaluated = 0
    smallest = None
    fit: list[Estimate] = []
    capacity = min(capacity_bytes(gpu(p.gpu).memory_bytes) for p in scn.cluster.pools)
    for par in candidates(scn, **kw):
        evaluated += 1
        m = microbatches_per_replica(scn.sequences, par.dp, par.micro_batch)
        mem = sum(memory_per_gpu(scn.model, par, scn.training, m).values())
        smallest = mem if smallest is None else min(smallest, mem)
        if mem > capacity:
            continue
        est = evaluate(scn, par, meas)
        if est.fits_in_memory:
            fit.append(est)
    kept = closest_batches(fit, lambda e: e.tokens_per_step, scn.global_batch_tokens)
    best: Estimate | None = None
    for est in kept:  # the first of equals, in candidates' order
        if best is None or est.tokens_per_s > best.tokens_per_s * (1 + 1e-9):
            best = est
    if best is None:
        if evaluated == 0:
            raise ScenarioError(
                f"no parallel configuration is valid for {scn.model.name} on {scn.cluster.name} "
                f"({counted(scn.cluster.gpus, 'GPU')}, {counted(scn.sequences, 'sequence')} per "
                f"step): raise "
                "global_batch_tokens or change the GPU count")
        raise ScenarioError(
            f"{scn.model.name} fits nowhere on {scn.cluster.name}: the smallest of {evaluated} "
            f"configurations needs {gib(smallest):.0f} GiB per GPU")
    best.search = {"evaluated": evaluated, "fitting": len(fit), "batch_within_tolerance":
                   sum(abs(e.batch_deviation) <= BATCH_TOLERANCE + 1e-12 for e in fit)}
    return best


def with_efficiency(meas: Measurements, factor: float, why: str) -> Measurements:
    """The same measurements with every architecture's framework efficiency scaled (a fresh
    derived cache)."""
    out = copy.copy(meas)
    out.efficiencies = {a: Figure(fe.value * factor, f"{fe.source}; x{factor:.3f} ({why})",
                                  fe.kind) for a, fe in meas.efficiencies.items()}
    out.cache = {}
    return out


# The efficiency spread an estimate carries: the two Hopper GEMM readings are 1.3% apart
# (reports/model/fallbacks.py HOPPER_GEMM_READINGS); validation's largest |error| bounds the
# model's own spread (assumption: +-5% around the calibrated constant).
EFFICIENCY_SPREAD = 0.05


def estimate_range(est: Estimate, meas: Measurements) -> dict:
    """tokens/s and MFU over the settings a run leaves unstated: every interleaving degree the
    layout allows, TP communication overlapped or not, and the efficiency spread."""
    scn, par = est.scenario, est.parallel
    m = microbatches_per_replica(scn.sequences, par.dp, par.micro_batch)
    variants = [(replace(par, virtual_stages=v), scn.training, meas)
                for v in virtual_stage_options(scn.model.layers, par.pp, m)]
    if par.tp > 1 and scn.training.sequence_parallel:  # overlap needs sequence parallelism
        variants += [(par, replace(scn.training, tp_overlap=f), meas) for f in (0.0, 1.0)]
    for f in (1 - EFFICIENCY_SPREAD, 1 + EFFICIENCY_SPREAD):
        variants.append((par, scn.training, with_efficiency(meas, f, "efficiency spread")))
    tps = [est.tokens_per_s]
    for p, t, ms in variants:
        try:
            e = evaluate(replace(scn, training=t), p, ms)
        except ScenarioError:
            continue
        if e.fits_in_memory:
            tps.append(e.tokens_per_s)
    lo, hi = min(tps), max(tps)
    scale = est.mfu / est.tokens_per_s
    return {"tokens_per_s": [lo, hi], "mfu": [lo * scale, hi * scale],
            "over": "interleaving degree, TP overlap off/on, framework efficiency "
                    f"+-{EFFICIENCY_SPREAD:.0%}"}


def estimate(scenario, measurements=None, *, with_range: bool = True) -> Estimate:
    """The training-step estimate of a scenario (dict, JSON/YAML file or text, preset name).

    `measurements`: None (shipped reference results, then fallbacks), a pandas DataFrame of result
    records, or a Measurements object.
    """
    scn = load_scenario(scenario)
    meas = as_measurements(measurements)
    est = search(scn, meas) if scn.parallel is None else evaluate(scn, scn.parallel, meas)
    if not est.fits_in_memory:  # a layout that cannot run has no throughput to show
        p, need = est.parallel, gib(sum(est.memory_bytes.values()))
        raise ScenarioError(
            f"{scn.model.name} at tp {p.tp} pp {p.pp} cp {p.cp} dp {p.dp} micro-batch "
            f"{p.micro_batch} recompute {p.recompute} needs {need:.1f} GiB per GPU, "
            f"{gib(est.capacity_bytes):.1f} usable: it does not fit (parallel: auto searches "
            "the layouts that do)")
    if with_range:
        est.range = estimate_range(est, meas)
    return est
