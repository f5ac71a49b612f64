"""Static Hopper (sm90) inspection of our kernels, on any CPU machine.

    python -m kernels.inspect [--suite NAME | --shapes FILE] [--json] [--jobs N]

Compiles with Triton's own compiler (`triton.compile`, `ASTSource`, target sm90) and the ptxas
inside the Triton wheel, and prints per compile: kernel, what its constexprs select, config,
registers per thread, spill bytes (ptxas's spill stores + spill loads), shared memory bytes,
and whether the PTX has wgmma (`wgmma.mma_async`) and TMA (`cp.async.bulk.tensor`) instructions.

- No argument: every config the sm90 paths can select, i.e. the sm90 tables of
  kernels/gemm_configs.py and kernels/attention_configs.py (the attention backward's whole
  table, as COLOSSUS_TUNE=1 searches it), for bf16/fp16/fp8 e4m3/e5m2/fp32 GEMMs at a large and a
  skinny M, and attention at head_dim 64/128/256, causal and not.
- `--shapes FILE`: a JSON list of kernel calls (format: kernels/plan.py); compiles exactly what
  those calls compile on an H100/H200 and appends {"compiles": N, "benchmarks": M} (from
  `kernels.plan.count_compiles`). colossus-bench's harness passes a suite's calls this way (or
  calls `kernels.plan.count_compiles` itself: import kernels.plan, not this module, which
  switches its process off the Triton interpreter): kernels/ imports nothing of the harness.
- `--suite NAME`: the same for a call list kept here as data (kernels.plan.SUITES: "campaign").

`--json` prints a list of objects with keys kernel, variant, config, regs, spill_bytes,
smem_bytes, wgmma, tma (and the counts object last). Exit codes: 0 ok, 1 a compile failed,
2 bad input.
"""

from __future__ import annotations

import os

# Real JIT functions, not the interpreter's: set before triton and our kernels are imported
# (kernels/__init__ only sets TRITON_INTERPRET if it is unset).
os.environ["TRITON_INTERPRET"] = "0"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402

import triton  # noqa: E402
from triton import knobs  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from kernels import host, plan  # noqa: E402

TARGET = GPUTarget("cuda", 90, 32)  # sm90 (Hopper), warp size 32
KEYS = ("kernel", "variant", "config", "regs", "spill_bytes", "smem_bytes", "wgmma", "tma")


def table_launches() -> list[plan.Launch]:
    """Launches covering every entry of the sm90 tables (see the module docstring)."""
    out = []
    for m in (8192, 64):
        for dtype, layout in (("bf16", "nt"), ("bf16", "nn"), ("fp16", "nt"),
                              ("fp8_e4m3", "nt"), ("fp8_e5m2", "nt"), ("fp32", "nt")):
            call = dict(kernel="gemm", dtype=dtype, m=m, n=8192, k=8192, layout=layout)
            out += plan.gemm_launches(call)
            if dtype == "fp8_e4m3":
                out += plan.gemm_launches(call, fp8_fast=True)
            if dtype == "fp32":
                out += plan.gemm_launches(call, tf32=True)
    old = os.environ.get(host.TUNE_ENV)
    os.environ[host.TUNE_ENV] = "1"  # the backward's whole table
    try:
        for d in (64, 128, 256):
            for causal in (False, True):
                out += plan.attention_launches(dict(kernel="attention", dtype="bf16", b=1, h=16,
                                                    kv_h=16, s=8192, d=d, causal=causal,
                                                    direction="bwd"))
    finally:
        if old is None:
            os.environ.pop(host.TUNE_ENV)
        else:
            os.environ[host.TUNE_ENV] = old
    return out


def jobs_of(launches) -> list[tuple]:
    """Distinct compiles: (launch, config) pairs, deduplicated as Triton's cache would."""
    seen, jobs = set(), []
    for la in launches:
        for cfg in la.configs:
            ident = (la.kernel, la.constexprs, plan.specialisation(la), cfg[0])
            if ident not in seen:
                seen.add(ident)
                jobs.append((la, cfg))
    return jobs


def _source(la: plan.Launch, cfg) -> ASTSource:
    signature, constexprs, attrs = {}, dict(la.constexprs), {}
    constexprs.update(cfg[1])
    for i, ((name, _), (ty, key)) in enumerate(zip(la.args, plan.specialisation(la),
                                                   strict=True)):
        if ty == "constexpr":
            signature[name] = "constexpr"
            constexprs[name] = key
            continue
        signature[name] = ty
        if key == "D":
            attrs[(i,)] = [["tt.divisibility", 16]]
    for name in constexprs:
        signature.setdefault(name, "constexpr")
    ordered = {n: signature[n] for n in la.fn.arg_names}
    return ASTSource(la.fn, ordered, constexprs, attrs)


_PTXAS = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def inspect_one(job) -> dict:
    """Compile one (launch, config) for sm90 and read ptxas's report and the PTX."""
    la, cfg = job
    row = dict(kernel=la.kernel, variant=la.variant, config=cfg[0])
    knobs.nvidia.dump_ptxas_log = True  # Triton prints ptxas -v's report (both 3.6 and 3.8)
    knobs.compilation.always_compile = True  # a cache hit would skip ptxas and its report
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            k = triton.compile(_source(la, cfg), target=TARGET,
                               options=dict(num_warps=cfg[2], num_stages=cfg[3]))
    except Exception as e:  # noqa: BLE001  (one failed compile is a row, not a crash)
        return dict(row, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    text = log.getvalue()
    regs = [int(x) for x in _PTXAS.findall(text)]
    spills = [int(a) + int(b) for a, b in _SPILL.findall(text)]
    ptx = k.asm["ptx"]
    return dict(row, regs=max(regs) if regs else None, spill_bytes=sum(spills),
                smem_bytes=k.metadata.shared, wgmma="wgmma.mma_async" in ptx,
                tma="cp.async.bulk.tensor" in ptx)


_JOBS: list = []  # forked workers inherit it: launches hold JIT functions and meta tensors


def _inspect_index(i: int) -> dict:
    return inspect_one(_JOBS[i])


def run(launches, workers: int = 1, progress=None) -> list[dict]:
    """Inspect every distinct compile of `launches`; progress(i, n) after each, if given."""
    jobs = jobs_of(launches)
    _JOBS[:] = jobs
    rows = []
    if workers <= 1:
        results = map(_inspect_index, range(len(jobs)))
        for row in results:
            rows.append(row)
            if progress:
                progress(len(rows), len(jobs))
        return rows
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        for row in pool.map(_inspect_index, range(len(jobs))):
            rows.append(row)
            if progress:
                progress(len(rows), len(jobs))
    return rows


def _progress(i: int, n: int) -> None:
    print(f"\rcompiled {i}/{n}", end="\n" if i == n else "", file=sys.stderr, flush=True)


def _calls(args) -> list[dict] | None:
    if args.suite:
        if args.suite not in plan.SUITES:
            raise ValueError(f"unknown suite {args.suite!r}; known here: {', '.join(plan.SUITES)}"
                             " (other suites: pass their calls with --shapes)")
        return plan.SUITES[args.suite]
    if args.shapes:
        try:
            with open(args.shapes) as f:
                calls = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read {args.shapes}: {e}") from None
        if not isinstance(calls, list):
            raise ValueError(f"{args.shapes}: expected a JSON list of calls")
        return calls
    return None


def _print_table(rows) -> None:
    widths = (10, 30, 24, 5, 6, 7, 6, 5)
    print("  ".join(k[:w].ljust(w) for k, w in zip(KEYS, widths, strict=True)))
    for r in rows:
        if "error" in r:
            print(f"{r['kernel']:10}  {r['variant']:30}  {r['config']:24}  ERROR {r['error']}")
            continue
        print("  ".join(str(r[k])[:w].ljust(w) for k, w in zip(KEYS, widths, strict=True)))
    ok = [r for r in rows if "error" not in r]
    if ok:
        print(f"{len(rows)} compiles (triton {triton.__version__}): max regs "
              f"{max(r['regs'] for r in ok)}, spill bytes {sum(r['spill_bytes'] for r in ok)}, "
              f"max smem {max(r['smem_bytes'] for r in ok)} (limit {host.HOPPER_SMEM_BYTES})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kernels.inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--suite", help="a call list kept in kernels.plan.SUITES")
    group.add_argument("--shapes", help="a JSON file: a list of kernel calls")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--jobs", type=int, default=1, help="compile processes (default 1)")
    args = parser.parse_args(argv)
    try:
        calls = _calls(args)
        launches = table_launches() if calls is None else [
            la for c in calls for la in plan.launches(c)]
        counts = plan.count_compiles(calls) if calls is not None else None
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = run(launches, max(1, args.jobs), _progress if sys.stderr.isatty() else None)
    if args.json:
        out = rows + ([{"compiles": counts[0], "benchmarks": counts[1]}] if counts else [])
        print(json.dumps(out, indent=1))
    else:
        _print_table(rows)
        if counts:
            print(f"on an H100/H200: {counts[0]} compiles, {counts[1]} autotune benchmarks")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
