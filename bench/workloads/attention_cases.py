"""The attention workload's cases: the FlashAttention-2/3 benchmark grid and Llama 3's
grouped-query shapes on a GPU, a handful of small shapes on CPU (plain data and builders)."""

from __future__ import annotations

from bench.workloads.base import Case

BACKENDS = ("triton", "sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math")
DIRECTIONS = ("fwd", "bwd", "fwd_bwd")


# FlashAttention-2 (Dao 2023, section 4.1) and FlashAttention-3 (Shah et al. 2024, section 4.1)
# benchmark grid: hidden 2048, batch chosen so batch x seq = 16k tokens, head dim 64/128/256
# (32/16/8 heads). The papers start at seq 512; standard starts at 1k, full adds 512.
FA_HIDDEN = 2048
FA_TOKENS = 16384
FA_SEQS = (1024, 2048, 4096, 8192, 16384)
FA_HEAD_DIMS = (64, 128, 256)

# Llama 3 (Dubey et al. 2024, "The Llama 3 Herd of Models", Table 3): query heads, kv heads,
# head dim 128 (model dim / heads); sequence 8192 is the pre-training context length (3.4.1).
LLAMA3 = {"llama3-8b": (32, 8), "llama3-70b": (64, 8), "llama3-405b": (128, 8)}
LLAMA3_HEAD_DIM = 128
LLAMA3_SEQ = 8192

CPU_SHAPE = dict(b=1, h=2, kv_h=2, d=64)  # CPU proves the flow through the interpreter


def _case(dtype: str, b: int, h: int, kv_h: int, s: int, d: int, causal: bool,
          direction: str) -> Case:
    params = {"b": b, "h": h, "kv_h": kv_h, "s": s, "d": d, "causal": causal,
              "direction": direction}
    return Case("attention", dtype, params, BACKENDS)


def _fa_grid(dtype: str, head_dims, seqs, directions) -> list[Case]:
    """The FlashAttention benchmark grid: h*d = 2048, b*s = 16384."""
    return [_case(dtype, FA_TOKENS // s, FA_HIDDEN // d, FA_HIDDEN // d, s, d, causal, direction)
            for direction in directions for d in head_dims for s in seqs
            for causal in (False, True)]


def _llama(models, directions) -> list[Case]:
    return [_case("bf16", 1, h, kv_h, LLAMA3_SEQ, LLAMA3_HEAD_DIM, True, direction)
            for direction in directions for h, kv_h in (LLAMA3[m] for m in models)]


def gpu_cases(suite: str) -> list[Case]:
    if suite == "campaign":  # head_dim 128 at 8k and 16k both ways, and one Llama 3 GQA shape
        return (_fa_grid("bf16", (128,), (8192, 16384), ("fwd", "bwd"))
                + _llama(("llama3-70b",), ("fwd", "bwd")))
    if suite == "quick":
        return [_case("bf16", 2, 16, 16, 8192, 128, causal, "fwd") for causal in (False, True)]
    standard = (_fa_grid("bf16", FA_HEAD_DIMS, FA_SEQS, ("fwd", "bwd"))
                + _llama(("llama3-70b", "llama3-405b"), ("fwd", "bwd"))
                + _fa_grid("fp16", (128,), FA_SEQS, ("fwd", "bwd")))
    if suite == "standard":
        return standard
    if suite == "full":
        more = (_fa_grid("bf16", FA_HEAD_DIMS, FA_SEQS, ("fwd_bwd",))
                + _fa_grid("bf16", FA_HEAD_DIMS, (512,), DIRECTIONS)
                + _llama(tuple(LLAMA3), DIRECTIONS)
                + _fa_grid("fp16", (64, 256), FA_SEQS, ("fwd", "bwd")))
        return _unique(standard + more)
    return []


def cpu_cases(suite: str) -> list[Case]:
    """A handful of small cases: odd and even lengths, causal and not, GQA, fwd and bwd."""
    c = CPU_SHAPE
    quick = [_case("bf16", c["b"], c["h"], c["kv_h"], 64, c["d"], causal, "fwd")
             for causal in (False, True)]
    if suite == "quick":
        return quick
    if suite == "campaign":
        return quick + [_case("bf16", c["b"], c["h"], c["kv_h"], 33, c["d"], True, "bwd"),
                        _case("bf16", c["b"], 4, 2, 47, c["d"], True, "fwd"),
                        _case("bf16", c["b"], 4, 2, 47, c["d"], True, "bwd")]
    standard = quick + [
        _case("bf16", c["b"], c["h"], c["kv_h"], 33, c["d"], False, "fwd"),
        _case("bf16", c["b"], c["h"], c["kv_h"], 33, c["d"], True, "bwd"),
        _case("bf16", c["b"], c["h"], c["kv_h"], 64, c["d"], False, "bwd"),
        _case("bf16", c["b"], 4, 2, 47, c["d"], True, "fwd"),  # GQA
        _case("bf16", c["b"], 4, 2, 47, c["d"], True, "bwd"),
    ]
    if suite == "standard":
        return standard
    if suite == "full":
        return standard + [
            _case("fp16", c["b"], c["h"], c["kv_h"], 33, c["d"], True, "fwd_bwd"),
            _case("bf16", c["b"], 4, 2, 47, c["d"], False, "fwd_bwd"),
        ]
    return []


def _unique(cases: list[Case]) -> list[Case]:
    seen, out = set(), []
    for c in cases:
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out

