"""Transformer projection shapes as plain data: the GEMMs of one layer's forward for the
models we benchmark (the gemm workload's projection cases; the scaling model reads them too)."""

from __future__ import annotations

from results.models import MODEL_SHAPES as SHAPES

# The benchmarked models' rows of the one shape table, results/models.py (each row carries its
# source: Brown et al. 2020 for GPT-3, the Llama 3 Herd paper, Table 3, for Llama 3).
MODEL_SHAPES: dict[str, dict] = {m: SHAPES[m] for m in ("gpt3-175b", "llama3-70b", "llama3-405b")}
PROJECTIONS = ("qkv", "attn_out", "mlp_up", "mlp_down")


def _gated(spec: dict) -> int:
    return 2 if spec["gated_mlp"] else 1


def projection_widths(model: str) -> dict[str, tuple[int, int]]:
    """(N, K) of each projection of one transformer layer, for y (M, N) = x (M, K) @ W.

    qkv: Q heads plus K and V for each KV head (grouped-query attention), all head_dim wide.
    mlp_up: the up projection; for gated MLPs (SwiGLU) gate and up fused into one GEMM of twice
    the FFN width, as Megatron-LM's linear_fc1 does.
    """
    spec = _model(model)
    h, d = spec["hidden"], spec["head_dim"]
    return {
        "qkv": ((spec["heads"] + 2 * spec["kv_heads"]) * d, h),
        "attn_out": (h, spec["heads"] * d),
        "mlp_up": (_gated(spec) * spec["ffn_hidden"], h),
        "mlp_down": (h, spec["ffn_hidden"]),
    }


def projection_shapes(model: str, tokens: int) -> list[tuple[str, int, int, int]]:
    """(label, m, n, k) of the four projection GEMMs of one layer's forward at `tokens` rows."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive int, got {tokens!r}")
    return [(f"{model}.{p}", tokens, n, k) for p, (n, k) in projection_widths(model).items()]


def _model(model: str) -> dict:
    if model not in MODEL_SHAPES:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODEL_SHAPES)}")
    return MODEL_SHAPES[model]
