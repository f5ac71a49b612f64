"""How long a run will take: per-case time estimates, and the budget that stops a run in time.

A (case, backend) costs its setup and reference check, the timing recipe's warm-up and sample
budget (bench/timing.py), and, for a Triton backend, the compiles and autotune benchmarks of the
kernels it is the first to need. `run --budget SECONDS` asks `Estimator.estimate` before each
case and stores the rest as skipped (error "budget") once the next one would not fit; the
measured first-call time is stored as each row's `compile_s`.

Every constant below is an ASSUMPTION (no GPU measured them; sources named beside each). They
err long, so a budgeted run ends early rather than late; the run measures its own time and
never trusts an estimate for more than the next case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.device import DeviceInfo
from bench.timing import TimingConfig
from bench.workloads import Case

# One Triton kernel specialisation compiled for sm90 (host work: Triton's passes and ptxas).
# Measured on the CPU: the 26 sm90 compiles of the campaign's kernels took 44.1 s wall
# (`python -m kernels.inspect --suite campaign`, commit 191a02e, 2026-12-01 ~21:00 UTC, 2-core
# x86 VM under load), 1.7 s each; rounded up to 2 s for a GPU node's host.
COMPILE_S = 2.0
# One autotune benchmark of one config: triton.testing.do_bench's defaults are 25 ms warm-up and
# 100 ms of repetitions (triton-lang/triton, python/triton/testing.py); with its cache flushes
# and the first launch we assume twice that, 0.25 s (assumption).
AUTOTUNE_BENCH_S = 0.25
# Fresh inputs, the higher-precision reference and the baseline of one (case, backend) on a
# GPU: fp64 GEMM references at 8192^3 or fp32 attention references at seq 16k take tenths of a
# second (assumption: H200 fp64 ~67 TFLOP/s, fp32 ~67 TFLOP/s, datasheet), plus allocation.
SETUP_S_GPU = 0.5
# On CPU the cases are tiny; the Triton interpreter (numpy, one program at a time) dominates:
# assumption from runs on a 2-core x86 machine, a few tenths to about two seconds per case.
SETUP_S_CPU = 0.05
INTERPRETER_S = 1.5
# One interpreted call, for the CPU recipe's samples of a Triton case (at least min_reps calls,
# whatever the budget): the quick suite's Triton rows took 0.04 to 0.52 s a call on a 2-core
# x86 VM (`colossus-bench run`, 2026-12-01 ~23:00 UTC); 0.25 s is an assumption near their mean.
INTERPRETER_CALL_S = 0.25
# A checked CPU case's later calls against its first: 25% slower at most (assumption; priced
# at 1.0x, `run --suite campaign --budget 30` took 32.4 s wall on a 2-core x86 VM, 2026-12-03;
# the yardsticks between the shares and storing the rows come on top). A case not yet checked
# is priced by the plan (`estimate`), so the last one admitted can still overrun by its error.
CALL_MARGIN = 1.25
# Process start (CUDA context, NVML, imports) before the first case: assumption, seconds.
START_S = {"cuda": 10.0, "cpu": 3.0}

# Triton kernels each case needs compiled. On a GPU without --tune the GEMM and attention
# kernels are counted by kernels.plan.CompileCounter (the kernels' own pruned config lists and
# Triton's specialisation and autotune-cache rules: GEMM tunes 2-4 tiles per new (M, N, K),
# the attention forward 3-4 configs per new shape); the tables below are for what it does not
# cover (the stream kernel, --tune). COLOSSUS_TUNE=1 compiles and benchmarks each kernel's whole
# config space: counts of kernels/gemm.py (HOPPER_TILES) and kernels/attention.py
# (CONFIGS["sm90"]) at the time of writing; a count that drifts only makes the estimate drift.
KERNELS = {  # (workload, direction or "") -> kernels launched by one call
    ("gemm", ""): ("gemm",),
    ("membw", ""): ("stream",),
    ("attention", "fwd"): ("attn_fwd",),
    ("attention", "bwd"): ("attn_fwd", "attn_delta", "attn_dkdv", "attn_dq"),
    ("attention", "fwd_bwd"): ("attn_fwd", "attn_delta", "attn_dkdv", "attn_dq"),
    ("decode_attention", ""): ("attn_fwd",),
}
TUNED_CONFIGS = {"gemm": 9, "stream": 1, "attn_fwd": 10, "attn_delta": 1, "attn_dkdv": 16,
                 "attn_dq": 16}
# The params that select a different compiled specialisation (Triton specialises constexprs,
# dtypes, and integer arguments equal to 1 or divisible by 16); the others reuse a compile.
SPECIALISING_PARAMS = {
    "gemm": ("layout",), "membw": ("op",), "attention": ("d", "causal"),
    "decode_attention": ("d", "causal", "s_q"),
}


def plan_call(case: Case) -> dict | None:
    """The case as a kernels.plan call (plain data), or None where the plan has no such kernel."""
    p = case.params
    if case.workload == "gemm":
        return dict(kernel="gemm", dtype=case.dtype, m=p["m"], n=p["n"], k=p["k"],
                    layout=p.get("layout", "nt"))
    if case.workload == "attention":
        return dict(kernel="attention", dtype=case.dtype, b=p["b"], h=p["h"], kv_h=p["kv_h"],
                    s=p["s"], d=p["d"], causal=p["causal"], direction=p["direction"])
    if case.workload == "decode_attention":
        return dict(kernel="attention", dtype=case.dtype, b=p["b"], h=p["h"], kv_h=p["kv_h"],
                    s=p["s_q"], s_k=p["s"], d=p["d"], causal=p["causal"], direction="fwd")
    return None


def kernels_of(case: Case) -> tuple[str, ...]:
    direction = case.params.get("direction", "") if case.workload == "attention" else ""
    return KERNELS.get((case.workload, direction), ())


def specialisation(case: Case, kernel: str) -> tuple:
    """What one compile of `kernel` is keyed on, as far as this estimate can tell."""
    keys = SPECIALISING_PARAMS.get(case.workload, ())
    extra = ()
    if case.workload == "gemm":  # decode-sized M (1, or below one tile) picks other tiles
        m = case.params.get("m", 0)
        extra = ("m=1" if m == 1 else "m<128" if m < 128 else "m>=128",)
    return (kernel, case.dtype, *(case.params.get(k) for k in keys), *extra)


@dataclass
class Estimator:
    """Seconds each (case, backend) will take, in run order: compiles are charged to the first
    case that needs each specialisation (later ones reuse it, and the autotuner's cache)."""

    device: DeviceInfo
    timing: TimingConfig
    tune: bool = False
    compiled: set = field(default_factory=set)
    counter: object = None  # kernels.plan.CompileCounter, made on the first GPU estimate

    def timing_s(self, backend: str = "") -> float:
        """The recipe's own time: warm-up plus the sample budget (reps fill the budget); on CPU
        an interpreted Triton case's min_reps calls outlast the budget."""
        samples = self.timing.budget_s
        if backend == "triton" and self.device.kind != "cuda":
            samples = max(samples, self.timing.min_reps * INTERPRETER_CALL_S)
        return self.timing.warmup_s + samples

    def checked_timing_s(self, backend: str, call_s: float) -> float:
        """A checked case's timing still to come, now that its first call took `call_s` (on CPU,
        where this is used, nothing compiles: a first call is no faster than a steady one):
        warm-up (one untimed call, then calls until warmup_s), then repetitions filling the
        budget, at least min_reps of them (bench/timing.py `warm_up`, `repetitions`). Never
        below the plain estimate (`timing_s`)."""
        call_s *= CALL_MARGIN
        warm = call_s + max(self.timing.warmup_s, call_s)
        samples = max(self.timing.budget_s, self.timing.min_reps * call_s)
        return max(self.timing_s(backend), warm + samples)

    def compile_s(self, case: Case, backend: str, *, commit: bool = True) -> float:
        if backend != "triton":
            return 0.0
        if self.device.kind != "cuda":
            return INTERPRETER_S
        call = None if self.tune else plan_call(case)
        if call is not None:
            try:
                return self._planned_s(call, commit)
            except ValueError:  # a shape the kernels refuse: it fails fast, the tables count it
                pass
        total = 0.0
        for kernel in kernels_of(case):
            spec = specialisation(case, kernel)
            configs = TUNED_CONFIGS.get(kernel, 1) if self.tune else 1
            if spec not in self.compiled:
                total += configs * COMPILE_S
                if commit:
                    self.compiled.add(spec)
            if self.tune:  # the autotuner benchmarks again for every new shape key
                total += configs * AUTOTUNE_BENCH_S
        return total

    def _planned_s(self, call: dict, commit: bool) -> float:
        """Compiles and autotune benchmarks the kernels' own count gives `call` next."""
        if self.counter is None:
            # lazy: kernels.plan imports triton, which only a GPU estimate needs
            from kernels.plan import CompileCounter

            self.counter = CompileCounter()  # Triton 3.6 rule: even one config is benchmarked
        compiles, benchmarks = self.counter.add(call, commit=commit)
        return compiles * COMPILE_S + benchmarks * AUTOTUNE_BENCH_S

    def estimate(self, case: Case, backend: str, *, commit: bool = True) -> float:
        setup = SETUP_S_GPU if self.device.kind == "cuda" else SETUP_S_CPU
        return setup + self.timing_s(backend) + self.compile_s(case, backend, commit=commit)

    def plan(self, pairs: list[tuple[Case, str]]) -> list[float]:
        """The estimate of each pair, in order (charging compiles as the run would)."""
        return [self.estimate(c, b) for c, b in pairs]


def total_estimate(pairs: list[tuple[Case, str]], device: DeviceInfo, timing: TimingConfig,
                   tune: bool = False) -> dict[str, float | int]:
    """The wall time of running `pairs` in one process: start, setups, timing, compiles."""
    est = Estimator(device, timing, tune)
    compile_total = sum(est.compile_s(c, b) for c, b in pairs)
    setup = SETUP_S_GPU if device.kind == "cuda" else SETUP_S_CPU
    per_case = sum(setup + est.timing_s(b) for _, b in pairs)
    start = START_S.get(device.kind, 0.0)
    return {"pairs": len(pairs), "start_s": start, "setup_and_timing_s": per_case,
            "compile_s": compile_total, "total_s": start + per_case + compile_total}


def planned_within(estimates: list[float], budget_s: float | None) -> list[bool]:
    """Which of a run's planned case-backends a `--budget` would let run, on the estimates
    alone (for `run --list`): the runner's rule, a case runs while the time spent plus its own
    estimate fits, and once one does not, it and every later one are skipped."""
    if budget_s is None:
        return [True] * len(estimates)
    out, spent, stopped = [], 0.0, False
    for e in estimates:
        stopped = stopped or spent + e > budget_s
        out.append(not stopped)
        spent += e
    return out
