"""Named suites as plain data: which workload families a suite runs.

Each workload decides its own cases for a suite name (and shrinks them on CPU), so a suite here
is only the list of families. Collectives are not here: they need several processes and have
their own verb (`colossus-bench allreduce`).
"""

from __future__ import annotations

import fnmatch

from bench.device import DeviceInfo
from bench.workloads import WORKLOADS, Case

# The backends that run our own kernels (kernels/); every other backend is a vendor's.
OURS = ("triton",)

SUITES: dict[str, tuple[str, ...]] = {
    "quick": ("membw", "gemm", "attention", "decode_attention"),
    "standard": ("membw", "gemm", "attention", "decode_attention", "hostdevice"),
    "full": ("membw", "gemm", "attention", "decode_attention", "hostdevice"),
    "mamf": ("gemm",),  # the max-achievable-matmul sweep
    # One GPU window (about 8 minutes on an H200, see bench/budget.py), in priority order: what
    # matters most first, so a time-boxed run (--budget) drops the least important cases.
    "campaign": ("membw", "hostdevice", "gemm", "attention", "decode_attention"),
}


class SuiteError(ValueError):
    pass


def suite_cases(suite: str, device: DeviceInfo) -> list[Case]:
    """Every case of a suite on this device, in suite order."""
    if suite not in SUITES:
        raise SuiteError(f"unknown suite {suite!r}; choose one of {', '.join(SUITES)}")
    cases: list[Case] = []
    for name in SUITES[suite]:
        if name in WORKLOADS:  # a family not built yet is simply absent
            cases.extend(WORKLOADS[name].cases(suite, device))
    return cases


def _term_matches(target: str, term: str) -> bool:
    """A term with * ? [ is a glob over 'KEY:BACKEND'; any other term a substring of it."""
    if any(ch in term for ch in "*?["):
        return fnmatch.fnmatchcase(target, term)
    return term in target


def matches(case: Case, backend: str, expr: str) -> bool:
    """One --filter value against a case-backend: the whole value as a glob or substring of
    'KEY:BACKEND', else (a value with commas that matches as a whole nothing, like
    'gemm/bf16,*:triton') each comma-separated term. Exact keys are `select`'s job."""
    target = f"{case.key}:{backend}"
    expr = expr.strip()
    if expr and _term_matches(target, expr):
        return True
    return "," in expr and any(_term_matches(target, t.strip()) for t in expr.split(",")
                               if t.strip())


def _unordered(key: str):
    """A case key with its params as a set: PostgreSQL's JSONB gives a row's params back in
    its own order (k=83,m=67,n=45 for m=67,n=45,k=83), and a key copied from such a table
    names the same case."""
    parts = key.split("/", 2)
    return (parts[0], parts[1], frozenset(parts[2].split(","))) if len(parts) == 3 else key


def _names(expr: str, key: str, backend: str) -> bool:
    """Whether a --filter value names this case exactly (KEY, or KEY:BACKEND), in any order of
    its params."""
    if expr in (f"{key}:{backend}", key):
        return True
    body = expr[:-len(backend) - 1] if expr.endswith(f":{backend}") else expr
    return "=" in body and _unordered(body) == _unordered(key)


def _pick(pairs: list[tuple[Case, str]], expr: str) -> tuple[list[tuple[Case, str]], list[str]]:
    """The pairs one --filter value selects, and the terms it was split into (none unless it
    was): a value that names a case exactly (KEY:BACKEND, or KEY for all its backends) selects
    only that; else glob or substring (`matches`). Case keys hold commas, so an exact key is
    never split into terms."""
    expr = expr.strip()
    exact = [(c, b) for c, b in pairs if _names(expr, c.key, b)]
    if exact:
        return exact, []
    whole = [(c, b) for c, b in pairs if _term_matches(f"{c.key}:{b}", expr)] if expr else []
    if whole or "," not in expr:
        return whole, []
    terms = [t.strip() for t in expr.split(",") if t.strip()]
    return [(c, b) for c, b in pairs if matches(c, b, expr)], terms


def vendor_first(backends) -> list[str]:
    """A case's backends with the vendors' (torch, SDPA, cuBLAS) first and ours (OURS) last:
    an illegal-address fault in our kernel poisons the CUDA context, and every later row of the
    process would fail, the baselines included."""
    return sorted(backends, key=lambda b: b in OURS)


def select(cases: list[Case], device: DeviceInfo,
           expr: str | list[str] | tuple[str, ...] | None) -> list[tuple[Case, str]]:
    """select_and_unmatched's pairs."""
    return select_and_unmatched(cases, device, expr)[0]


def select_and_unmatched(cases: list[Case], device: DeviceInfo,
                         expr: str | list[str] | tuple[str, ...] | None
                         ) -> tuple[list[tuple[Case, str]], list[str]]:
    """The filters that select nothing here (run warns of each: the others still run), and
    (case, backend) pairs runnable on this device that match the filter: one string, or the
    values of repeated --filter/-k options (a pair matching any of them), in suite order and,
    within a case, vendor-first (`vendor_first`).

    The filter applies to the cases' declared backends first; only the cases it selects are
    asked which backends can run here (for SDPA a trial run each, which loads cuDNN), so a
    stage that runs one family never probes another's."""
    pairs = [(c, b) for c in cases for b in vendor_first(c.backends)]
    exprs = [expr] if isinstance(expr, str) else [e for e in (expr or ()) if e]
    each: dict[str, set[tuple[int, str]]] = {}
    terms: dict[str, list[str]] = {}
    if exprs:
        for e in exprs:
            picked, terms[e] = _pick(pairs, e)
            each[e] = {(id(c), b) for c, b in picked}
        chosen = set().union(*each.values())
        pairs = [(c, b) for c, b in pairs if (id(c), b) in chosen]
    runnable: dict[int, set[str]] = {}
    for c in dict.fromkeys(c for c, _ in pairs):  # each selected case once, in order
        runnable[id(c)] = set(WORKLOADS[c.workload].backends(c, device))
    pairs = [(c, b) for c, b in pairs if b in runnable[id(c)]]
    if exprs and not pairs:
        shown = exprs[0] if len(exprs) == 1 else " | ".join(exprs)
        raise SuiteError(f"filter {shown!r} matches no case of this suite on this device")
    kept = {(id(c), b) for c, b in pairs}
    unmatched = [e for e, picked in each.items() if not picked & kept]
    for e in exprs:  # a value split into terms: each term that selects nothing here too
        if e not in unmatched:
            unmatched += [t for t in terms[e]
                          if not any(_term_matches(f"{c.key}:{b}", t) for c, b in pairs)]
    return pairs, unmatched
