"""estimate(scenario, measurements) -> Estimate, the parallel-config search, and the
cluster-scale questions (throughput, H200 gain, mixed H100+H200 jobs, power, goodput).

A scenario (ARCHITECTURE.md, "The scenario file") is a dict, a JSON or YAML file or text, or a
preset name from SCENARIOS. `model` and `cluster` may be preset names or dicts; `parallel` may be
"auto" (search the fastest configuration that fits in memory). Optional keys: `training` (see
reports.model.step.Training), `mixed_batch` ("plain_dp": every data-parallel replica gets the same
micro-batches, the slowest GPU type sets the pace; "proportional": micro-batches in proportion to
each type's speed), `name`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from reports.model.hardware import Cluster, Pool, cluster, cluster_from_dict, gpu
from reports.model.measurements import Measurements, as_measurements
from reports.model.step import (
    RECOMPUTE,
    USABLE_MEMORY_FRACTION,
    Model,
    Parallel,
    ScenarioError,
    StepTime,
    Training,
    check_keys,
    flops_per_token,
    gib,
    memory_per_gpu,
    model_from,
    stage_layers,
    step_time,
    training_from,
)

__all__ = ["Estimate", "Scenario", "ScenarioError", "SCENARIOS", "estimate", "load_scenario"]

# Llama 3 trained with 16M-token batches on 16,384 H100 (Dubey et al. 2024, sec. 3.4.1 and
# Table 4): 1,024 tokens per GPU per step. Cluster-scale questions keep that ratio (assumption:
# 100k GPUs need a proportionally larger batch to keep pipelines full).
TOKENS_PER_GPU_PER_STEP = 1024

# --- scenarios -----------------------------------------------------------------------------------

_M16 = 16 * 2**20


def _colossus(model: str, cluster_name: str, gpus: int) -> dict:
    return {"model": model, "cluster": cluster_name, "parallel": "auto",
            "global_batch_tokens": TOKENS_PER_GPU_PER_STEP * gpus}


SCENARIOS: dict[str, dict] = {
    "colossus-100k-gpt3": _colossus("gpt3-175b", "colossus-100k", 100_000),
    "colossus-100k-llama3-70b": _colossus("llama3-70b", "colossus-100k", 100_000),
    "colossus-100k-llama3-405b": _colossus("llama3-405b", "colossus-100k", 100_000),
    "colossus-100k-dense-1t": _colossus("dense-1t", "colossus-100k", 100_000),
    "colossus-200k-llama3-405b": _colossus("llama3-405b", "colossus-200k", 200_000),
    "colossus-200k-h200-llama3-405b": _colossus("llama3-405b", "colossus-200k-h200", 200_000),
    # Llama 3's own 16k-GPU run size and batch (Dubey et al. 2024, Table 4), layout searched
    "llama3-405b-16k-h100": {
        "model": "llama3-405b",
        "cluster": {"name": "h100-16k", "gpu": "H100-SXM", "gpus": 16384, "gpus_per_node": 8,
                    "scale_out_gbps_per_gpu": 400},
        "parallel": "auto",
        "global_batch_tokens": _M16},
    # the example of ARCHITECTURE.md ("The scenario file")
    "gpt3-4096-h100": {
        "model": "gpt3-175b",
        "cluster": {"name": "h100-4096", "gpu": "H100-SXM", "gpus": 4096, "gpus_per_node": 8,
                    "scale_out_gbps_per_gpu": 400},
        "parallel": {"tp": 8, "pp": 8, "cp": 1, "dp": 64, "micro_batch": 1,
                     "virtual_stages": 1, "recompute": "none"},
        "global_batch_tokens": 4194304},
}

_SCENARIO_KEYS = {"name", "model", "cluster", "parallel", "training", "global_batch_tokens",
                  "mixed_batch"}
_PARALLEL_KEYS = {"tp", "pp", "cp", "dp", "micro_batch", "virtual_stages", "recompute"}


@dataclass(frozen=True)
class Scenario:
    name: str
    model: Model
    cluster: Cluster
    parallel: Parallel | None  # None: search
    training: Training
    global_batch_tokens: int
    mixed_batch: str = "plain_dp"

    @property
    def sequences(self) -> int:
        """Sequences per step (global batch)."""
        return self.global_batch_tokens // self.model.seq_len


def _read_text(spec: str) -> dict:
    """A scenario dict from a preset name, a file path, or JSON/YAML text."""
    if spec in SCENARIOS:
        return dict(SCENARIOS[spec], name=spec)
    name = None
    if "\n" in spec or spec.lstrip().startswith("{"):
        text = spec  # inline JSON or YAML
    else:
        path = Path(spec)
        if path.is_file():
            text, name = path.read_text(), path.stem
        elif path.suffix.lower() in (".json", ".yaml", ".yml"):
            raise ScenarioError(f"scenario file not found: {spec}")
        else:
            raise ScenarioError(f"unknown scenario preset {spec!r}; known: "
                                f"{', '.join(sorted(SCENARIOS))} (or give a JSON/YAML file)")
    try:
        data = json.loads(text)
    except ValueError:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ScenarioError(f"scenario is neither JSON nor YAML: {e}") from None
    if not isinstance(data, dict):
        raise ScenarioError("a scenario must be a mapping with model, cluster, parallel, ...")
    if name and "name" not in data:
        data["name"] = name
    return data


def load_scenario(spec) -> Scenario:
    """A Scenario from a Scenario, a dict, a preset name, a path, or JSON/YAML text."""
    if isinstance(spec, Scenario):
        return spec
    if isinstance(spec, Path):
        spec = str(spec)
    if isinstance(spec, str):
        spec = _read_text(spec)
    if not isinstance(spec, dict):
        raise ScenarioError(f"scenario must be a dict, a file or a preset name, not "
                            f"{type(spec).__name__}")
    check_keys(spec, _SCENARIO_KEYS, "scenario")
    for key in ("model", "cluster"):
        if key not in spec:
            raise ScenarioError(f"scenario needs '{key}'")
    model = model_from(spec["model"])
    try:
        clu = cluster(spec["cluster"]) if isinstance(spec["cluster"], str) else \
            cluster_from_dict(spec["cluster"])
    except (ValueError, TypeError, KeyError) as e:
        raise ScenarioError(f"cluster: {e}") from None
    train = training_from(spec.get("training"))
    par_spec = spec.get("parallel", "auto")
    if par_spec == "auto":
        par = None
    elif isinstance(par_spec, dict):
        check_keys(par_spec, _PARALLEL_KEYS, "parallel")
        p = dict(par_spec)
        if "dp" not in p:
            mp = Parallel(**p).model_parallel  # checks the types first (dp defaults to 1)
            if clu.gpus % mp:
                raise ScenarioError(f"tp*pp*cp = {mp} does not divide the {clu.gpus} GPUs")
            p["dp"] = clu.gpus // mp
        par = Parallel(**p)
    else:
        raise ScenarioError(f"parallel must be 'auto' or a dict, got {par_spec!r}")
    gbt = spec.get("global_batch_tokens", 4 * 2**20)
    if isinstance(gbt, bool) or not isinstance(gbt, int) or gbt < model.seq_len:
        raise ScenarioError(f"global_batch_tokens must be an integer >= seq_len "
                            f"({model.seq_len}), got {gbt!r}")
    mixed = spec.get("mixed_batch", "plain_dp")
    if mixed not in ("plain_dp", "proportional"):
        raise ScenarioError(f"mixed_batch must be 'plain_dp' or 'proportional', got {mixed!r}")
    name = str(spec.get("name", f"{model.name}@{clu.name}"))
    return Scenario(name, model, clu, par, train, gbt, mixed)


# --- the estimate --------------------------------------------------------------------------------


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

    @property
    def gpus(self) -> int:
        return self.scenario.cluster.gpus

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step / self.step_time_s

    @property
    def tflops_per_gpu(self) -> float:
        """Model TFLOP/s per GPU (recomputation not counted)."""
        return flops_per_token(self.scenario.model) * self.tokens_per_s / self.gpus / 1e12

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation against the GPUs' dense bf16 peak (count-weighted)."""
        pools = self.scenario.cluster.pools
        peak = sum(gpu(p.gpu).bf16_tflops * p.gpus for p in pools) / self.gpus
        return self.tflops_per_gpu / peak

    def days_to_train(self, tokens: float) -> float:
        return tokens / self.tokens_per_s / 86400.0

    def to_dict(self) -> dict:
        s = self.scenario
        d = {
            "scenario": s.name,
            "model": s.model.name,
            "params_b": s.model.params() / 1e9,
            "cluster": s.cluster.name,
            "gpus": self.gpus,
            "gpu_types": s.cluster.gpu_types,
            "parallel": self.parallel.to_dict() | {"auto": s.parallel is None},
            "training": s.training.to_dict(),
            "microbatches": self.microbatches,
            "global_batch_tokens": self.tokens_per_step,
            "requested_global_batch_tokens": s.global_batch_tokens,
            "step_time_s": self.step_time_s,
            "tokens_per_s": self.tokens_per_s,
            "tflops_per_gpu": self.tflops_per_gpu,
            "mfu": self.mfu,
            "breakdown_s": dict(self.breakdown_s),
            "memory_gib_per_gpu": gib(sum(self.memory_bytes.values())),
            "memory_breakdown_gib": {k: gib(v) for k, v in self.memory_bytes.items()},
            "memory_capacity_gib": gib(self.capacity_bytes),
            "fits_in_memory": self.fits_in_memory,
            "sources": dict(self.sources),
        }
        if self.per_type:
            d["per_type"] = self.per_type
            d["mixed_batch"] = s.mixed_batch
        if self.search is not None:
            d["search"] = self.search
        return d


def _replicas(clu: Cluster, par: Parallel) -> list[tuple[Pool, int]]:
    """Data-parallel replicas per GPU pool (a replica never straddles two GPU types)."""
    out = []
    for p in clu.pools:
        if p.gpus % par.model_parallel:
            raise ScenarioError(f"tp*pp*cp = {par.model_parallel} does not divide the {p.gpus} "
                                f"{p.gpu} GPUs (replicas cannot mix GPU types)")
        out.append((p, p.gpus // par.model_parallel))
    return out


def check_parallel(model: Model, par: Parallel, clu: Cluster, sequences: int) -> None:
    """Raise ScenarioError when the configuration cannot run at all."""
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
    if par.pp > model.layers:
        raise ScenarioError(f"pp ({par.pp}) exceeds the {model.layers} layers")
    per, _ = stage_layers(model.layers, par.pp)
    if per % par.virtual_stages:
        raise ScenarioError(f"{per} layers per stage do not split into {par.virtual_stages} "
                            "virtual stages")
    if sequences < par.dp * par.micro_batch:
        raise ScenarioError(f"global batch of {sequences} sequences is smaller than dp x "
                            f"micro_batch = {par.dp * par.micro_batch}; raise "
                            "global_batch_tokens or use more model parallelism")
    _replicas(clu, par)


def evaluate(scn: Scenario, par: Parallel, meas: Measurements) -> Estimate:
    """The estimate for one fixed parallel configuration (no search)."""
    check_parallel(scn.model, par, scn.cluster, scn.sequences)
    m_base = math.ceil(scn.sequences / (par.dp * par.micro_batch))
    reps = _replicas(scn.cluster, par)
    times: dict[str, StepTime] = {}
    mbs: dict[str, int] = {}

    def run(g: str, m: int) -> StepTime:
        return step_time(scn.model, par, scn.training, scn.cluster, gpu(g), meas, m)

    for pool, _ in reps:
        times[pool.gpu] = run(pool.gpu, m_base)
        mbs[pool.gpu] = m_base
    if scn.mixed_batch == "proportional" and len(reps) > 1:
        # micro-batches per replica in proportion to speed, same total (rounded)
        speed = {p.gpu: 1.0 / times[p.gpu].microbatch_s for p, _ in reps}
        total = sum(r for _, r in reps) * m_base
        norm = sum(r * speed[p.gpu] for p, r in reps)
        for pool, _ in reps:
            mbs[pool.gpu] = max(1, round(total * speed[pool.gpu] / norm))
            times[pool.gpu] = run(pool.gpu, mbs[pool.gpu])

    slow = max(times, key=lambda g: times[g].step_s)
    step = times[slow].step_s
    tokens = sum(r * mbs[p.gpu] for p, r in reps) * par.micro_batch * scn.model.seq_len
    fits = all(t.fits for t in times.values())
    worst_mem = max(times.values(), key=lambda t: t.memory_total / t.capacity_bytes)
    per_type = {}
    sources = dict(times[slow].sources)
    if len(reps) > 1:
        fpt = flops_per_token(scn.model)
        for pool, r in reps:
            t = times[pool.gpu]
            tok = r * mbs[pool.gpu] * par.micro_batch * scn.model.seq_len
            per_type[pool.gpu] = {
                "gpus": pool.gpus, "replicas": r, "microbatches": mbs[pool.gpu],
                "own_step_time_s": t.step_s, "idle_s": step - t.step_s,
                "tokens_per_s": tok / step,
                "tflops_per_gpu": fpt * tok / step / pool.gpus / 1e12,
                "mfu": fpt * tok / step / pool.gpus / 1e12 / gpu(pool.gpu).bf16_tflops,
                "breakdown_s": t.breakdown_s,
                "memory_gib_per_gpu": gib(t.memory_total),
                "memory_capacity_gib": gib(t.capacity_bytes),
                "fits_in_memory": t.fits,
            }
            for k, v in t.sources.items():
                sources.setdefault(f"{pool.gpu}: {k}", v)
    return Estimate(scn, par, mbs, step, tokens, times[slow].breakdown_s,
                    worst_mem.memory_bytes, worst_mem.capacity_bytes, fits, sources, per_type)


def _divisors(n: int, limit: int) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def candidates(scn: Scenario, *, recompute=RECOMPUTE, micro_batches=(1, 2, 4, 8),
               max_virtual: int = 4):
    """Every parallel configuration the search considers (valid ones only)."""
    model, clu = scn.model, scn.cluster
    g = math.gcd(*[p.gpus for p in clu.pools])
    tps = [t for t in (1, 2, 4, 8, 16) if t <= clu.gpus_per_node and g % t == 0
           and model.heads % t == 0 and model.kv_heads % t == 0 and model.ffn_hidden % t == 0]
    for tp in tps:
        for cp in (1, 2, 4, 8, 16):
            if (g // tp) % cp or (cp > 1 and model.seq_len % (2 * cp)) or \
                    (cp > 1 and model.seq_len // cp < 1024):
                continue
            for pp in _divisors(g // (tp * cp), model.layers):
                try:
                    per, _ = stage_layers(model.layers, pp)
                except ScenarioError:
                    continue
                dp = clu.gpus // (tp * cp * pp)
                for b in micro_batches:
                    if scn.sequences < dp * b:
                        continue
                    m = math.ceil(scn.sequences / (dp * b))
                    vs = [1] if pp == 1 else [v for v in range(1, max_virtual + 1)
                                              if per % v == 0 and (v == 1 or m % pp == 0)]
                    for v in vs:
                        for rc in recompute:
                            yield Parallel(tp, pp, cp, dp, b, v, rc)


def search(scn: Scenario, meas: Measurements, **kw) -> Estimate:
    """The fastest configuration (most tokens/s) that fits in memory on every GPU type."""
    best: Estimate | None = None
    evaluated = fitting = 0
    smallest = None
    capacity = min(gpu(p.gpu).memory_bytes for p in scn.cluster.pools) * USABLE_MEMORY_FRACTION
    for par in candidates(scn, **kw):
        evaluated += 1
        m = math.ceil(scn.sequences / (par.dp * par.micro_batch))
        mem = sum(memory_per_gpu(scn.model, par, scn.training, m).values())
        smallest = mem if smallest is None else min(smallest, mem)
        if mem > capacity:
            continue
        fitting += 1
        est = evaluate(scn, par, meas)
        if best is None or est.tokens_per_s > best.tokens_per_s * (1 + 1e-9):
            best = est
    if best is None:
        if evaluated == 0:
            raise ScenarioError(
                f"no parallel configuration is valid for {scn.model.name} on {scn.cluster.name} "
                f"({scn.cluster.gpus} GPUs, {scn.sequences} sequences per step): raise "
                "global_batch_tokens or change the GPU count")
        raise ScenarioError(
            f"{scn.model.name} fits nowhere on {scn.cluster.name}: the smallest of {evaluated} "
            f"configurations needs {gib(smallest):.0f} GiB per GPU")
    best.search = {"evaluated": evaluated, "fitting": fitting}
    return best


def estimate(scenario, measurements=None) -> Estimate:
    """The training-step estimate of a scenario (dict, JSON/YAML file or text, preset name).

    `measurements`: None (shipped reference results, then fallbacks), a pandas DataFrame of result
    records, or a Measurements object.
    """
    scn = load_scenario(scenario)
    meas = as_measurements(measurements)
    if scn.parallel is None:
        return search(scn, meas)
    est = evaluate(scn, scn.parallel, meas)
    return est


# --- cluster-scale questions ---------------------------------------------------------------------

# Token budgets for "days to train".
TOKEN_BUDGETS: dict[str, tuple[float, str]] = {
    "gpt3-175b": (300e9, "GPT-3 was trained on 300B tokens (Brown et al. 2020, sec. 2.2)"),
    "llama3-70b": (15e12, "Llama 3 pre-trained on over 15T tokens (Dubey et al. 2024)"),
    "llama3-405b": (15.6e12, "Llama 3 405B: 15.6T tokens (Dubey et al. 2024, sec. 3)"),
    "dense-1t": (20e12, "assumption: compute-optimal 20 tokens per parameter (Hoffmann et al. "
                        "2022, Chinchilla)"),
}

COLOSSUS_MODELS = ("gpt3-175b", "llama3-70b", "llama3-405b", "dense-1t")
COLOSSUS_CLUSTERS = ("colossus-100k", "colossus-200k", "colossus-200k-h200")


def _scenario_for(model: str, clu: Cluster | str, batch_tokens: int | None = None,
                  mixed_batch: str = "plain_dp", parallel="auto") -> Scenario:
    c = cluster(clu) if isinstance(clu, str) else clu
    m = model_from(model)
    tokens = batch_tokens or TOKENS_PER_GPU_PER_STEP * c.gpus
    return Scenario(f"{m.name}@{c.name}", m, c, None if parallel == "auto" else parallel,
                    Training(), max(tokens, m.seq_len), mixed_batch)


def cluster_throughput(models=COLOSSUS_MODELS, clusters=COLOSSUS_CLUSTERS, measurements=None,
                       batch_tokens: int | None = None) -> list[dict]:
    """Tokens/s, MFU and days to train each model on each cluster preset (auto parallel config;
    batch: TOKENS_PER_GPU_PER_STEP x GPUs unless given)."""
    meas = as_measurements(measurements)
    rows = []
    for c in clusters:
        for mname in models:
            est = search(_scenario_for(mname, c, batch_tokens), meas)
            budget, src = TOKEN_BUDGETS.get(mname, (None, ""))
            rows.append({
                "cluster": est.scenario.cluster.name, "model": mname, "gpus": est.gpus,
                "parallel": est.parallel.to_dict(), "global_batch_tokens": est.tokens_per_step,
                "tokens_per_s": est.tokens_per_s, "tflops_per_gpu": est.tflops_per_gpu,
                "mfu": est.mfu, "step_time_s": est.step_time_s,
                "token_budget": budget, "token_budget_source": src,
                "days_to_train": est.days_to_train(budget) if budget else None,
                "memory_gib_per_gpu": gib(sum(est.memory_bytes.values())),
            })
    return rows


def _homogeneous(gpu_name: str, gpus: int, base: str = "colossus-100k") -> Cluster:
    c = cluster(base)
    return c.with_pools((Pool(gpu_name, gpus),), name=f"{gpus // 1000}k-{gpu_name}")


def h200_gain(model: str = "llama3-405b", gpus: int = 16384, measurements=None,
              batch_tokens: int | None = None) -> dict:
    """H200 against H100 per GPU on `gpus` GPUs of each: (a) the H100's best configuration run
    unchanged on H200 (bandwidth only), (b) the H200's own best configuration, which can use its
    141 GB for less TP/PP, less recomputation, bigger micro-batches."""
    meas = as_measurements(measurements)
    h100 = search(_scenario_for(model, _homogeneous("H100-SXM", gpus), batch_tokens), meas)
    same = evaluate(_scenario_for(model, _homogeneous("H200-SXM", gpus), batch_tokens,
                                  parallel=h100.parallel), h100.parallel, meas)
    own = search(_scenario_for(model, _homogeneous("H200-SXM", gpus), batch_tokens), meas)
    base = h100.tokens_per_s
    return {
        "model": model, "gpus": gpus,
        "h100": {"parallel": h100.parallel.to_dict(), "tokens_per_s": base, "mfu": h100.mfu},
        "h200_same_config": {"parallel": same.parallel.to_dict(),
                             "tokens_per_s": same.tokens_per_s, "mfu": same.mfu,
                             "gain": same.tokens_per_s / base},
        "h200_own_config": {"parallel": own.parallel.to_dict(),
                            "tokens_per_s": own.tokens_per_s, "mfu": own.mfu,
                            "gain": own.tokens_per_s / base},
    }


def colossus_200k_gain(model: str = "llama3-405b", measurements=None,
                       clusters=("colossus-200k", "colossus-200k-h200")) -> list[dict]:
    """Each 200k preset with H200s (the better of plain and proportional batches) against the
    same cluster all H100, both at the mixed job's configuration and at the all-H100 cluster's
    own best (replicas never mix GPU types, so the mixed cluster has fewer valid layouts)."""
    meas = as_measurements(measurements)
    rows = []
    for name in clusters:
        c = cluster(name)
        h100 = c.with_pools((Pool("H100-SXM", c.gpus),), name=f"{name}-all-h100")
        mixed = mixed_job(model, name, meas)
        par = Parallel(**mixed["parallel"])
        same = evaluate(_scenario_for(model, h100, parallel=par), par, meas)
        best_h100 = search(_scenario_for(model, h100), meas)
        best = max(mixed["plain_dp"]["tokens_per_s"], mixed["proportional"]["tokens_per_s"])
        rows.append({"cluster": name, "model": model, "gpus": c.gpus,
                     "parallel": mixed["parallel"], "mixed_tokens_per_s": best,
                     "all_h100_same_config_tokens_per_s": same.tokens_per_s,
                     "all_h100_best_tokens_per_s": best_h100.tokens_per_s,
                     "all_h100_best_parallel": best_h100.parallel.to_dict(),
                     "gain_same_config": best / same.tokens_per_s,
                     "gain_vs_best": best / best_h100.tokens_per_s})
    return rows


def mixed_job(model: str = "llama3-405b", cluster_name: str = "colossus-200k",
              measurements=None) -> dict:
    """A mixed H100+H200 job: plain data parallelism (every replica the same micro-batches, the
    slowest GPU type sets the pace) against throughput-proportional batch shares, both at the
    configuration the search picks for plain data parallelism."""
    meas = as_measurements(measurements)
    plain = search(_scenario_for(model, cluster_name), meas)
    prop_scn = _scenario_for(model, cluster_name, mixed_batch="proportional",
                             parallel=plain.parallel)
    prop = evaluate(prop_scn, plain.parallel, meas)

    def summary(e: Estimate) -> dict:
        return {"tokens_per_s": e.tokens_per_s, "step_time_s": e.step_time_s, "mfu": e.mfu,
                "per_type": {g: {k: v for k, v in d.items() if k != "breakdown_s"}
                             for g, d in e.per_type.items()}}

    return {"model": model, "cluster": cluster_name, "parallel": plain.parallel.to_dict(),
            "plain_dp": summary(plain), "proportional": summary(prop),
            "gain": prop.tokens_per_s / plain.tokens_per_s}


def power(cluster_name: str = "colossus-100k", model: str = "llama3-405b",
          measurements=None) -> dict:
    """Site power of a cluster under training load and energy per token.

    GPU watts: NVML power under GEMM load (measured rows) or TDP (assumption), times the GPU
    count; plus the node overhead per node, the network share and the PUE (assumptions, in the
    cluster preset's sources); compared with the reported site power where there is one.
    """
    meas = as_measurements(measurements)
    c = cluster(cluster_name)
    gpu_w = 0.0
    sources = {}
    for p in c.pools:
        fig = meas.gemm_power_w(gpu(p.gpu))
        gpu_w += fig.value * p.gpus
        sources[f"gpu_power.{p.gpu}"] = fig.source
    node_w = c.power.node_overhead_w * c.nodes
    it_w = (gpu_w + node_w) * (1 + c.power.network_fraction)
    site_w = it_w * c.power.pue
    sources["overheads"] = c.sources.get("power", "assumption")
    est = search(_scenario_for(model, c), meas)
    out = {
        "cluster": c.name, "gpus": c.gpus, "gpu_mw": gpu_w / 1e6, "node_overhead_mw": node_w / 1e6,
        "it_mw": it_w / 1e6, "site_mw": site_w / 1e6, "pue": c.power.pue,
        "reported_mw": c.reported_power_mw,
        "model": model, "tokens_per_s": est.tokens_per_s,
        "joules_per_token": site_w / est.tokens_per_s,
        "kwh_per_million_tokens": site_w / est.tokens_per_s * 1e6 / 3.6e6,
        "sources": sources,
    }
    if c.reported_power_mw:
        out["vs_reported"] = out["site_mw"] / c.reported_power_mw
        out["reported_source"] = c.sources.get("reported_power_mw", "")
    return out


# Llama 3 405B pre-training: 419 unexpected interruptions on 16,384 H100 over 54 days
# (Dubey et al. 2024, sec. 3.3.4; ANCHORS.md).
LLAMA3_FAILURES_PER_GPU_HOUR = 419 / (16384 * 54 * 24)
# Assumptions: a checkpoint stalls training 30 s (asynchronous save to host memory first); an
# interruption costs 300 s to detect, reschedule and reload. With these the 16,384-GPU case
# keeps ~90% of its time, as Llama 3 reports (> 90% effective training time).
CHECKPOINT_S = 30.0
RESTART_S = 300.0


def young_daly_interval(checkpoint_s: float, mtbf_s: float) -> float:
    """Checkpoint interval tau = sqrt(2 delta M) (Young 1974; Daly 2006 first order)."""
    if checkpoint_s <= 0 or mtbf_s <= 0:
        raise ValueError("checkpoint time and MTBF must be positive")
    return math.sqrt(2 * checkpoint_s * mtbf_s)


def useful_fraction(checkpoint_s: float, restart_s: float, mtbf_s: float,
                    interval_s: float | None = None) -> float:
    """Fraction of wall time spent on work that is kept, with exponentially distributed failures
    of mean M: one segment of tau work + delta checkpoint takes M e^(R/M) (e^((tau+delta)/M) - 1)
    of wall time on average (Daly 2006, the expected wall clock time), so the fraction is tau
    over that. For tau, delta, R << M it is ~ 1 - delta/tau - (tau/2 + R)/M."""
    if restart_s < 0:
        raise ValueError("restart time must be >= 0")
    tau = interval_s or young_daly_interval(checkpoint_s, mtbf_s)
    wall = mtbf_s * math.exp(restart_s / mtbf_s) * math.expm1((tau + checkpoint_s) / mtbf_s)
    return tau / wall


def goodput(gpu_counts=(16384, 100_000, 200_000),
            failures_per_gpu_hour: float = LLAMA3_FAILURES_PER_GPU_HOUR,
            checkpoint_s: float = CHECKPOINT_S, restart_s: float = RESTART_S) -> list[dict]:
    """Mean time between job interruptions, Young/Daly checkpoint interval and useful fraction of
    time for synchronous jobs of several sizes."""
    if failures_per_gpu_hour <= 0:
        raise ValueError("failures_per_gpu_hour must be positive")
    llama = failures_per_gpu_hour == LLAMA3_FAILURES_PER_GPU_HOUR
    rows = []
    for n in gpu_counts:
        mtbf = 3600.0 / (failures_per_gpu_hour * n)
        tau = young_daly_interval(checkpoint_s, mtbf)
        rows.append({
            "gpus": n, "failures_per_gpu_hour": failures_per_gpu_hour,
            "mtbf_s": mtbf, "checkpoint_s": checkpoint_s, "restart_s": restart_s,
            "checkpoint_interval_s": tau,
            "useful_fraction": useful_fraction(checkpoint_s, restart_s, mtbf, tau),
            "sources": {
                "failures_per_gpu_hour": "Llama 3: 419 interruptions on 16,384 GPUs in 54 days "
                                         "(ANCHORS.md)" if llama else "caller",
                "checkpoint_s": "assumption (see CHECKPOINT_S)" if checkpoint_s == CHECKPOINT_S
                                else "caller",
                "restart_s": "assumption (see RESTART_S)" if restart_s == RESTART_S else "caller",
            },
        })
    return rows
