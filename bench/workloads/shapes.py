"""Transformer projection shapes as plain data: the GEMMs of one layer's forward for the
models we benchmark (the gemm workload's projection cases; the scaling model reads them too)."""

from __future__ import annotations

# Transformer shapes. Llama 3: "The Llama 3 Herd of Models" (Llama Team, 2024), Table 3 (layers,
# model dim, FFN dim, heads, KV heads), vocab_size from the meta-llama/Meta-Llama-3-70B and
# Llama-3.1-405B config.json files. GPT-3: Brown et al. 2020, "Language Models are Few-Shot
# Learners", Table 2.1 (n_layers, d_model, n_heads, d_head; d_ff = 4 d_model, section 2.1),
# vocabulary of the GPT-2 BPE (50257). seq_len: pre-training context (GPT-3 2048; Llama 3 8192
# before long-context training, Herd paper section 3.4).
MODEL_SHAPES: dict[str, dict] = {
    "gpt3-175b": {"layers": 96, "hidden": 12288, "heads": 96, "kv_heads": 96, "head_dim": 128,
                  "ffn_hidden": 49152, "gated_mlp": False, "vocab": 50257, "seq_len": 2048,
                  "source": "Brown et al. 2020, Table 2.1"},
    "llama3-70b": {"layers": 80, "hidden": 8192, "heads": 64, "kv_heads": 8, "head_dim": 128,
                   "ffn_hidden": 28672, "gated_mlp": True, "vocab": 128256, "seq_len": 8192,
                   "source": "Llama Team 2024, Table 3; Meta-Llama-3-70B config.json"},
    "llama3-405b": {"layers": 126, "hidden": 16384, "heads": 128, "kv_heads": 8, "head_dim": 128,
                    "ffn_hidden": 53248, "gated_mlp": True, "vocab": 128256, "seq_len": 8192,
                    "source": "Llama Team 2024, Table 3; Llama-3.1-405B config.json"},
}
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
