"""Which kernel launches a workload call makes on an H100/H200, and how many compiles and
autotune benchmarks a list of calls costs there, without a GPU and without running anything.

A call is a plain dict, as the harness's cases describe them:

- GEMM: {"kernel": "gemm", "dtype": "bf16" | "fp16" | "fp32" | "fp8_e4m3" | "fp8_e5m2",
  "m", "n", "k", "layout": "nn" | "nt" | "tn" | "tt"} (layout as bench/workloads/gemm.py: one
  letter per operand, "t" = stored transposed; default "nt").
- attention: {"kernel": "attention", "dtype": "bf16" | "fp16" | "fp32", "b", "h", "kv_h", "s",
  "d", "causal", "direction": "fwd" | "bwd" | "fwd_bwd"} (optional "s_k", default "s").

`launches(call)` runs the real host code of kernels.gemm / kernels.attention on meta tensors
(shapes and strides, no data) with a recording launcher, so the arguments, constexprs and config
lists are exactly those a GPU run would use. `count_compiles(calls)` then applies Triton's rules:

- a compile per distinct (kernel, constexprs, config, argument specialisation). Triton (3.6 and
  3.8 alike) specialises each int argument not in the kernel's do_not_specialize list on
  == 1 (it becomes a constant) and on % 16 == 0, types ints as i32 or i64 by size, and pointers on
  16-byte alignment (torch allocations are aligned);
- an autotuner caches its choice per key (the key arguments plus every tensor's dtype); a new key
  benchmarks every config left after pruning (and compiles each); a known key with a new
  specialisation compiles only the chosen config. Triton 3.6 benchmarks even when pruning left
  one config, 3.8 does not (`single_config_bench`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kernels import attention, gemm, host
from kernels.gemm_configs import family, hopper_tiles
from kernels.gemm_kernel import matmul_tma_kernel

H100_SMS = 132  # SMs of an H100 SXM and an H200 (NVIDIA H100 / H200 datasheets)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
          "fp8_e4m3": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}
TRITON_TYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32",
                torch.float8_e4m3fn: "fp8e4nv", torch.float8_e5m2: "fp8e5"}


@dataclass(frozen=True)
class Launch:
    """One kernel launch as Triton sees it."""

    kernel: str  # "gemm", "attn_fwd", "attn_delta", "attn_dkdv", "attn_dq"
    fn: object  # the JIT function
    variant: str  # what the constexprs say, for people
    args: tuple  # ((name, value), ...): runtime arguments (ints, tensors, floats, None)
    constexprs: tuple  # ((name, value), ...): non-config constexprs
    configs: tuple  # ((label, {meta}, num_warps, num_stages), ...) after pruning
    tuner: tuple | None  # autotuner identity when there are several configs, else None
    key: tuple  # the autotune cache key


def _not_specialised(fn) -> tuple:
    """The do_not_specialize names of a JIT function (an interpreted one keeps its kwargs)."""
    names = getattr(fn, "do_not_specialize", None)
    if names is None:
        names = getattr(fn, "kwargs", {}).get("do_not_specialize")
    return tuple(names or ())


def _spec(fn, value, name) -> tuple:
    """Triton's specialisation of one runtime argument (see the module docstring)."""
    if value is None:
        return ("constexpr", None)
    if isinstance(value, torch.Tensor):
        return ("*" + TRITON_TYPES[value.dtype], "D")
    if isinstance(value, bool):
        return ("i1", None)
    if isinstance(value, int):
        ty = "i32" if -2**31 <= value < 2**31 else "i64"
        if name in _not_specialised(fn):
            return (ty, None)
        return ("constexpr", 1) if value == 1 else (ty, "D" if value % 16 == 0 else "")
    return ("fp32", None)


def specialisation(launch: Launch) -> tuple:
    return tuple(_spec(launch.fn, v, n) for n, v in launch.args)


def _tensor_dtypes(args) -> tuple:
    return tuple(str(v.dtype) for _, v in args if isinstance(v, torch.Tensor))


def _meta(shape, dtype, transposed=False) -> torch.Tensor:
    if transposed:
        return torch.empty(shape[::-1], dtype=dtype, device="meta").t()
    return torch.empty(shape, dtype=dtype, device="meta")


def gemm_launches(call: dict, fp8_fast: bool = False, tf32: bool = False) -> list[Launch]:
    dtype = DTYPES[call["dtype"]]
    m, n, k = call["m"], call["n"], call["k"]
    layout = call.get("layout", "nt")
    a = _meta((m, k), dtype, layout[0] == "t")
    b = _meta((k, n), dtype, layout[1] == "t")
    a, b = gemm.tma_operands(a, b)
    a_k, b_k = gemm.tma_layout(a, b)
    fp8 = dtype in gemm.FP8_DTYPES
    c = _meta((m, n), gemm._out_dtype(dtype, None))
    scale = _meta((1,), torch.float32) if fp8 else None
    fam = family(a.element_size(), fp8 and not fp8_fast, tf32)
    consts = dict(A_KMAJOR=a_k, B_KMAJOR=b_k, C_TMA=host.aligned(c), HAS_SCALE=fp8,
                  ROW_SCALE_A=False, COL_SCALE_B=False, INTERPRET=False,
                  DOT_PRECISION="tf32" if tf32 else "ieee", FP8_PRECISE=fp8 and not fp8_fast,
                  NUM_SMS=H100_SMS, WARP_SPECIALIZE=False)
    fn = matmul_tma_kernel
    values = (a, b, c, scale, scale, m, n, k, a.stride(0) if a_k else a.stride(1),
              b.stride(1) if b_k else b.stride(0), c.stride(0))
    args = tuple(zip(fn.arg_names, values, strict=False))
    named = dict(args, **consts)
    configs = tuple((t.label(), t.config(True).kwargs, t.warps, t.stages)
                    for t in hopper_tiles(fam, m))
    key = tuple(named[x] for x in gemm.TMA_KEY) + _tensor_dtypes(args)
    lay = ("k" if a_k else "m") + ("k" if b_k else "m")
    variant = f"{call['dtype']} {fam} A/B {lay}-major" + ("" if consts["C_TMA"] else " C masked")
    return [Launch("gemm", fn, variant, args, tuple(consts.items()), configs,
                   ("gemm", fam) if len(configs) > 1 else None, key)]


def attention_launches(call: dict) -> list[Launch]:
    dtype = DTYPES[call["dtype"]]
    b, h, kv_h, s, d = call["b"], call["h"], call["kv_h"], call["s"], call["d"]
    sk = call.get("s_k", s)
    q, k, v = _meta((b, h, s, d), dtype), _meta((b, kv_h, sk, d), dtype), \
        _meta((b, kv_h, sk, d), dtype)
    causal = call["causal"]
    scale = attention.validate(q, k, v, causal, None, for_kernel=False)  # head_dim, GQA heads
    out: list[Launch] = []

    def record(kind, grid_rows, grid_y, args, *, head_dim, elem_bytes, device, use_desc, **meta):
        fn = attention._KERNELS[kind]
        named = tuple(zip(fn.arg_names, args, strict=False))
        consts = dict(HEAD_DIM=head_dim)
        if kind != "delta":
            consts.update(CAUSAL=meta["CAUSAL"], USE_DESC=use_desc,
                          F32_DOT=dtype == torch.float32)  # on the GPU: fp32 inputs only
            cfgs = attention.launch_configs(kind, "sm90", host.HOPPER_SMEM_BYTES, head_dim,
                                            elem_bytes)
            configs = tuple((c.label(), {"BLOCK_M": c.block_m, "BLOCK_N": c.block_n},
                             c.num_warps, c.num_stages) for c in cfgs)
        else:
            cm = attention.DELTA_BLOCK_M
            configs = ((f"{cm} w{attention.DELTA_WARPS}", {"BLOCK_M": cm},
                        attention.DELTA_WARPS, 3),)
        lookup = dict(named, **consts)
        key = (tuple(lookup[x] for x in attention.TUNE_KEYS[kind]) + _tensor_dtypes(named)
               if kind != "delta" else ())
        tuner = ("attn", kind, head_dim, elem_bytes) if len(configs) > 1 else None
        mask = " causal" if consts.get("CAUSAL") else ""
        out.append(Launch(f"attn_{kind}", fn, f"{call['dtype']} hd{head_dim}{mask}", named,
                          tuple(consts.items()), configs, tuner, key))

    o, lse = attention._forward(q, k, v, causal, scale, True, launch=record)
    if call.get("direction", "fwd") != "fwd":
        attention._backward(torch.empty_like(o), q, k, v, o, lse, causal, scale, True,
                            launch=record)
    return out


_INTS = {"gemm": ("m", "n", "k"), "attention": ("b", "h", "kv_h", "s", "d")}
_CHOICES = {"layout": ("nn", "nt", "tn", "tt"), "direction": ("fwd", "bwd", "fwd_bwd")}


def _check(call) -> None:
    if not isinstance(call, dict) or call.get("kernel") not in _INTS:
        raise ValueError(f"a call must be a dict with kernel 'gemm' or 'attention': {call!r}")
    for name in _INTS[call["kernel"]] + ("dtype",):
        if name not in call:
            raise ValueError(f"call {call!r} lacks {name!r}")
    for name in _INTS[call["kernel"]] + (("s_k",) if "s_k" in call else ()):
        v = call[name]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"call {call!r}: {name} must be a positive int")
    allowed = tuple(DTYPES) if call["kernel"] == "gemm" else ("bf16", "fp16", "fp32")
    if call["dtype"] not in allowed:
        raise ValueError(f"call {call!r}: dtype must be one of {', '.join(allowed)}")
    for name, options in _CHOICES.items():
        if name in call and call[name] not in options:
            raise ValueError(f"call {call!r}: {name} must be one of {', '.join(options)}")
    if call["kernel"] == "attention" and not isinstance(call.get("causal"), bool):
        raise ValueError(f"call {call!r}: causal must be true or false")


def launches(call: dict) -> list[Launch]:
    """The sm90 launches of one call (see the module docstring for the call format)."""
    _check(call)
    if call["kernel"] == "gemm":
        return gemm_launches(call)
    try:
        return attention_launches(call)
    except TypeError as e:  # attention.validate's verdict on shapes (head_dim, GQA heads)
        raise ValueError(f"call {call!r}: {e}") from None


@dataclass
class CompileCounter:
    """The rules above, one call at a time: what each call adds to a fresh process's compile
    and autotune caches. `count_compiles` and the harness's run-time estimate (bench/budget.py)
    both count with it, so there is one rule."""

    single_config_bench: bool = True
    compiles: set = field(default_factory=set)
    tuned: set = field(default_factory=set)
    benchmarks: int = 0

    def add(self, call: dict, *, commit: bool = True) -> tuple[int, int]:
        """(new compiles, autotune benchmarks) of running `call` next; with commit=False the
        caches are left as they were (a peek)."""
        compiles = self.compiles if commit else set(self.compiles)
        tuned = self.tuned if commit else set(self.tuned)
        before, benchmarks = len(compiles), 0
        for la in launches(call):
            base = (la.kernel, la.constexprs, specialisation(la))
            if la.tuner is None:
                compiles.add(base + (la.configs[0][0],))
                continue
            if (la.tuner, la.key) in tuned:
                compiles.add(base + (("chosen", la.tuner, la.key),))
                continue
            tuned.add((la.tuner, la.key))
            if len(la.configs) > 1 or self.single_config_bench:
                benchmarks += len(la.configs)
            compiles.update(base + (c[0],) for c in la.configs)
        if commit:
            self.benchmarks += benchmarks
        return len(compiles) - before, benchmarks


def count_compiles(calls, *, single_config_bench: bool = True) -> tuple[int, int]:
    """(compiles, autotune config benchmarks) that running `calls` in order triggers on a fresh
    H100/H200 process (empty caches). See the module docstring for the rules."""
    counter = CompileCounter(single_config_bench)
    for call in calls:
        counter.add(call)
    return len(counter.compiles), counter.benchmarks


# The campaign suite's kernel calls (plain data; the harness can pass its own list instead).
# Llama 3 405B (Llama Team 2024, "The Llama 3 Herd of Models", Table 3): hidden 16384, 128 query
# heads, 8 kv heads of 128, FFN 53248; projections at 8192 tokens, gate and up fused.
_L405 = dict(hidden=16384, heads=128, kv_heads=8, head_dim=128, ffn=53248)


def _projections(m: int, dtype: str) -> list[dict]:
    hd, q = _L405["hidden"], _L405["heads"] * _L405["head_dim"]
    kv = _L405["kv_heads"] * _L405["head_dim"]
    shapes = [(q + 2 * kv, hd), (hd, q), (2 * _L405["ffn"], hd), (hd, _L405["ffn"])]
    return [dict(kernel="gemm", dtype=dtype, m=m, n=n, k=k, layout="nt") for n, k in shapes]


def _attn(b, h, kv_h, s, causal, direction="bwd", dtype="bf16", d=128) -> dict:
    return dict(kernel="attention", dtype=dtype, b=b, h=h, kv_h=kv_h, s=s, d=d, causal=causal,
                direction=direction)


CAMPAIGN_CALLS: list[dict] = [
    *[dict(kernel="gemm", dtype=dt, m=s, n=s, k=s, layout="nt")
      for dt in ("bf16", "fp16") for s in (8192, 4096)],
    dict(kernel="gemm", dtype="fp8_e4m3", m=8192, n=8192, k=4096, layout="nt"),
    *_projections(8192, "bf16"),
    *_projections(8192, "fp8_e4m3"),
    *[c for m in (1, 16, 128) for c in _projections(m, "bf16")[:1]],  # decode: the qkv shape
    # FlashAttention grid at head_dim 128: hidden 2048 (16 heads), batch x seq = 16k tokens
    *[_attn(16384 // s, 16, 16, s, causal) for s in (8192, 16384) for causal in (False, True)],
    _attn(1, _L405["heads"], _L405["kv_heads"], 8192, True),  # Llama 3 405B GQA, seq 8k
    # decode attention: one query token per sequence against an 8k cache, Llama 3 70B heads
    # (64 query, 8 kv), 64 sequences (bench/workloads/decode.py's campaign case)
    dict(_attn(64, 64, 8, 1, True, direction="fwd"), s_k=8192),
]

SUITES = {"campaign": CAMPAIGN_CALLS}

