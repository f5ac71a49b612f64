"""The scaling model against published training runs (reports/model/validation_cases.py).

Each case runs the model with the published layout (unstated settings searched: the fastest a
framework can run that fits, or for a micro-batch the paper omits, the framework recipe's) and
compares in the paper's own unit and FLOP convention:
Narayanan's 96 B s l h^2 (...) with recompute for Megatron-LM-era tables, 6N + causal attention
for Llama 3 (assumption), seconds per iteration where a paper gives those.
error_pct is always on throughput: (predicted - published) / published for TFLOP/s, published /
predicted - 1 for seconds per step.

Calibrated, once for all cases (not per case): one constant per architecture,
`reports.model.fallbacks.FRAMEWORK_EFFICIENCY`, the fraction of their benchmarked speed that GEMM
and attention kernels reach inside a training step, each fitted on its CALIBRATION_BY_ARCH cases
(A100: Narayanan et al. 2021 Tables 1-2 and OPT-175B; Hopper: NeMo's published H100 recipes,
every setting stated); every other case (MT-NLG, BLOOM, Korthikanti et al., Llama 3,
Nemotron-4, Megatron-Core) is held out. `calibrate(arch=...)` re-runs a fit. Nothing else is
fitted."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace

from reports.model.compute import flops_per_token, narayanan_flops_per_iteration
from reports.model.config import RECOMPUTE, Parallel, ScenarioError
from reports.model.estimate import Estimate
from reports.model.hardware import cluster
from reports.model.measurements import Measurements
from reports.model.pipeline import closest_batches, microbatches_per_replica, virtual_stage_options
from reports.model.presets import MODELS, padded_vocab
from reports.model.scenario import Scenario
from reports.model.search import EFFICIENCY_SPREAD, evaluate, with_efficiency
from reports.model.validation_cases import CALIBRATION, CALIBRATION_BY_ARCH, CASES, Case

__all__ = ["CALIBRATION", "CALIBRATION_BY_ARCH", "CASES", "Case", "ValidationRow", "calibrate",
           "case_range", "fitting_estimates", "predict", "run_case", "summary", "validate"]


@dataclass(frozen=True)
class ValidationRow:
    name: str
    gpus: int
    published: float
    predicted: float
    error_pct: float  # on throughput (see the module doc)
    source: str
    gpu: str = ""
    unit: str = "TFLOP/s/GPU"
    fits_in_memory: bool = True
    memory_gib: float = 0.0
    parallel: dict | None = None
    assumptions: tuple[str, ...] = ()
    range: tuple[float, float] = (0.0, 0.0)  # predicted, over unstated settings (case_range)
    within_range: bool = False  # the published value lies inside `range`

    def to_dict(self) -> dict:
        return asdict(self)


def _cluster(case: Case):
    c = cluster(case.cluster)
    return c.with_pools((replace(c.pools[0], gpus=case.gpus),))


def _layouts(case: Case, model, sequences: int):
    dp = case.gpus // (case.tp * case.pp * case.cp)
    mbs = [case.micro_batch] if case.micro_batch else \
        [b for b in (1, 2, 4, 8) if sequences % (dp * b) == 0]
    rcs = [case.recompute] if case.recompute else list(RECOMPUTE)
    for b, rc in itertools.product(mbs, rcs):
        m = microbatches_per_replica(sequences, dp, b)
        vs = [case.virtual_stages] if case.virtual_stages else \
            virtual_stage_options(model.layers, case.pp, m)
        for v in vs:
            yield Parallel(case.tp, case.pp, case.cp, dp, b, v, rc)


def fitting_estimates(case: Case, meas: Measurements | None = None) -> list[Estimate]:
    """Every estimate of a case over its unstated settings (micro-batch, recompute,
    interleaving) that fits in memory (all of them when none fits) and runs the published batch
    within BATCH_TOLERANCE (the closest when none does: pipeline.closest_batches, the search's
    own rule)."""
    meas = meas or Measurements(None, use_reference=False)
    model = MODELS[case.model]
    if case.seq_len:
        model = replace(model, seq_len=case.seq_len)
    if case.vocab:
        model = replace(model, vocab=case.vocab)
    if case.kv_heads:
        model = replace(model, kv_heads=case.kv_heads)
    clu = _cluster(case)
    out = []
    for par in _layouts(case, model, case.batch):
        scn = Scenario(case.name, model, clu, par, case.training, case.batch * model.seq_len,
                       batch_source=case.source)
        try:
            out.append(evaluate(scn, par, meas))
        except ScenarioError:
            continue
    if not out:
        raise ScenarioError(f"{case.name}: no runnable layout")
    fit = [e for e in out if e.fits_in_memory] or out
    return closest_batches(fit, lambda e: e.tokens_per_step, case.batch * model.seq_len)


def point_estimate(case: Case, ests: list[Estimate]) -> Estimate:
    """The prediction among a case's estimates: the fastest (published runs are tuned), or with
    a framework recipe's micro-batch for a setting the run leaves unstated, the fastest with it."""
    # a recipe value that does not fit leaves the fastest (tests/test_validation.py checks that
    # every recipe value is the one used)
    pick = [e for e in ests if e.parallel.micro_batch == case.recipe_micro_batch] or ests
    return max(pick, key=lambda e: e.tokens_per_s)


def run_case(case: Case, meas: Measurements | None = None) -> Estimate:
    """The model's estimate of one case: the stated layout, unstated settings searched (fastest
    that fits; the fastest overall when none fits; point_estimate)."""
    return point_estimate(case, fitting_estimates(case, meas))


def case_range(case: Case, ests: list[Estimate], meas: Measurements) -> tuple[float, float]:
    """(low, high) prediction in the case's unit over what the run leaves unstated: every
    fitting value of its unstated settings (fitting_estimates) and the framework efficiency
    +-EFFICIENCY_SPREAD around the point estimate, the same spread `estimate` draws."""
    best = point_estimate(case, ests)
    values = [predict_value(case, e) for e in ests]
    for f in (1 - EFFICIENCY_SPREAD, 1 + EFFICIENCY_SPREAD):
        ms = with_efficiency(meas, f, "efficiency spread")
        values.append(predict_value(case, evaluate(best.scenario, best.parallel, ms)))
    return min(values), max(values)


def predict_value(case: Case, est: Estimate) -> float:
    """The prediction in the case's unit and FLOP convention."""
    model = est.scenario.model
    tp = est.parallel.tp
    if case.metric == "step_s":
        return est.step_time_s
    if case.metric == "narayanan":
        v = case.flop_vocab or padded_vocab(model.vocab, tp)
        batch = est.tokens_per_step // model.seq_len
        f = narayanan_flops_per_iteration(batch, model.seq_len, model.layers, model.hidden, v)
        return f / est.step_time_s / case.gpus / 1e12
    if case.metric in ("model_full", "model_causal"):
        fpt = flops_per_token(model, case.metric.removeprefix("model_"),
                              vocab=padded_vocab(model.vocab, tp))
        return fpt * est.tokens_per_s / case.gpus / 1e12
    raise ValueError(f"unknown metric {case.metric!r}")


def predict(case: Case, meas: Measurements | None = None) -> float:
    """The predicted value of one case in its unit."""
    return predict_value(case, run_case(case, meas))


def error_pct(case: Case, predicted: float) -> float:
    if case.metric == "step_s":
        return (case.published / predicted - 1) * 100
    return (predicted - case.published) / case.published * 100


def validate(measurements: Measurements | None = None, cases=CASES) -> list[ValidationRow]:
    """Every case: published vs predicted, the error, and the range over unstated settings. A100
    results are never in our measured tables, so by default only the fallbacks are used (no
    reference rows)."""
    meas = measurements or Measurements(None, use_reference=False)
    rows = []
    for case in cases:
        ests = fitting_estimates(case, meas)
        est = point_estimate(case, ests)
        pred = predict_value(case, est)
        lo, hi = case_range(case, ests, meas)
        rows.append(ValidationRow(
            case.name, case.gpus, case.published, pred, error_pct(case, pred), case.source,
            est.scenario.cluster.pools[0].gpu, case.unit, est.fits_in_memory,
            sum(est.memory_bytes.values()) / 2**30, est.parallel.to_dict(), case.assumptions,
            (lo, hi), lo <= case.published <= hi))
    return rows


def summary(rows: list[ValidationRow]) -> dict:
    errs = [abs(r.error_pct) for r in rows]
    return {"cases": len(rows), "h100_cases": sum(r.gpu == "H100-SXM" for r in rows),
            "max_abs_error_pct": max(errs), "mean_abs_error_pct": sum(errs) / len(errs),
            "within_range": sum(r.within_range for r in rows)}


def calibrate(grid=None, arch: str = "ampere") -> tuple[float, float]:
    """Re-run one architecture's fit: the framework efficiency that minimises the largest
    |error| over its calibration cases (CALIBRATION_BY_ARCH; the rest are held out), the other
    architectures' constants as shipped. Returns (efficiency, max |error| %)."""
    grid = grid or [x / 100 for x in range(60, 101)]
    cases = CALIBRATION_BY_ARCH[arch]
    best = (float("nan"), float("inf"))
    for eff in grid:
        meas = Measurements(None, use_reference=False, framework_efficiency={arch: eff})
        worst = max(abs(r.error_pct) for r in validate(meas, cases))
        if worst < best[1]:
            best = (eff, worst)
    return best
