"""FLOP conventions and the compute of one layer: GEMM shapes, attention, memory-bound kernels.

FLOP conventions (stated once, used everywhere):
- GEMM: 2 m n k.
- Attention core (softmax(QK^T)V), forward: 4 x queries x keys x heads x head_dim, halved for a
  causal mask because flash kernels skip the masked half (FlashAttention-2/3 count it so);
  backward 2.5x the forward (FlashAttention-2, Dao 2023, sec. 4: 5 matmuls against 2).
- Model FLOPs per token, the MFU numerator (`flops_per_token`): 6 N for the matmul weights
  (forward 2N, backward 4N; Kaplan et al. 2020) plus the attention core counted as computed
  (causal: half of PaLM's 12 l s h; Chowdhery et al. 2022, appendix B counts the full square).
  Recomputation is never counted (MFU, not HFU: Korthikanti et al. 2022, sec. 6). Published
  runs are compared in their own convention (reports/model/validation.py).
"""

from __future__ import annotations

from reports.model.hardware import GPU
from reports.model.measurements import Figure, Measurements
from reports.model.presets import Model, framework_vocab


def flops_per_token(model: Model, attention: str = "causal", vocab: int | None = None,
                    seq: int | None = None) -> float:
    """Model FLOPs per trained token (the one MFU numerator): 6 N_matmul + attention.

    attention: "causal" (half the square, as computed by flash kernels) or "full" (PaLM's
    12 l s h). N_matmul counts the output layer (`vocab`, default the model's) but not the
    embedding lookups. With attention="full" and Megatron's padded vocabulary this equals
    Narayanan's 72 B s l h^2 (1 + s/(6h) + V/(12 l h)) per token for GPT shapes.
    """
    if attention not in ("causal", "full"):
        raise ValueError(f"attention must be 'causal' or 'full', got {attention!r}")
    v = model.vocab if vocab is None else vocab
    s = model.seq_len if seq is None else seq
    n_matmul = model.layers * (model.layer_params() - 2 * model.hidden) + v * model.hidden
    attn = 12.0 * model.layers * s * model.heads * model.head_dim
    return 6.0 * n_matmul + (attn / 2 if attention == "causal" else attn)


def mfu(tokens_per_s_per_gpu: float, model: Model, peak_tflops: float,
        attention: str = "causal") -> float:
    """Model FLOPs utilisation: model FLOPs per second per GPU over the dense bf16 peak."""
    return flops_per_token(model, attention) * tokens_per_s_per_gpu / (peak_tflops * 1e12)


def narayanan_flops_per_iteration(batch: int, seq: int, layers: int, hidden: int, vocab: int,
                                  recompute: bool = True) -> float:
    """Narayanan et al. 2021, section 5.1: F = 96 B s l h^2 (1 + s/(6h) + V/(16 l h)) with full
    activation recomputation (one extra forward pass); without it 72 B s l h^2 (1 + s/(6h) +
    V/(12 l h)). The GPT-style FLOPs their tables report (ffn 4h, full attention)."""
    b, s, lyr, h, v = batch, seq, layers, hidden, vocab
    if recompute:
        return 96.0 * b * s * lyr * h * h * (1 + s / (6 * h) + v / (16 * lyr * h))
    return 72.0 * b * s * lyr * h * h * (1 + s / (6 * h) + v / (12 * lyr * h))


def attention_core_flops(model: Model, tokens: float, kv_len: int, heads: float,
                         causal: bool) -> float:
    """Forward FLOPs of softmax(QK^T)V for `tokens` queries against `kv_len` keys over `heads`
    heads: 2 matmuls of 2 * head_dim FLOPs per (query, key) pair, halved for causal masks when
    the kernel skips the masked half."""
    f = 4.0 * tokens * kv_len * heads * model.head_dim
    return f / 2 if causal else f


def gemm_roles(model: Model, tp: int) -> dict[str, tuple[int, int]]:
    """(n, k) of the per-GPU forward GEMMs of one layer; m is the micro-batch's token count.
    Megatron's column-parallel QKV and fc1 split n by t, row-parallel projections split k."""
    h, f = model.hidden, model.ffn_hidden
    return {
        "qkv": ((h + 2 * model.kv_dim) // tp, h),
        "out_proj": (h, h // tp),
        "fc1": ((model.ffn_matrices - 1) * f // tp, h),
        "fc2": (h, f // tp),
    }


class Clock:
    """Accumulates per-layer seconds by category and keeps the first source of each figure."""

    def __init__(self):
        self.t: dict[str, float] = {}
        self.sources: dict[str, str] = {}

    def add(self, cat: str, seconds: float):
        self.t[cat] = self.t.get(cat, 0.0) + seconds

    def note(self, key: str, fig: Figure):
        self.sources.setdefault(key, fig.source)


def gemm_fwd_bwd(clock: Clock, meas: Measurements, g: GPU, role: str, m: int, n: int,
                 k: int) -> tuple[float, float]:
    """Forward GEMM (m, n, k) and its two backward GEMMs: data gradient (m, k, n) and weight
    gradient (k, n, m); each priced at its own shape."""
    tf, fig = meas.gemm_seconds(g, m, n, k)
    clock.note(f"gemm.{role}", fig)
    td, _ = meas.gemm_seconds(g, m, k, n)
    tw, _ = meas.gemm_seconds(g, k, n, m)
    return tf, td + tw


def elementwise_bytes_per_token(model: Model, tp: int, sp: bool) -> float:
    """HBM bytes the memory-bound kernels of one layer move per token in the forward pass, with
    Megatron's fused kernels (each reads its inputs and writes its output once, bf16): two norms
    (read h, write h: 8h), two bias-dropout-residual adds (read 2h, write h: 12h, + 2h of masks
    with dropout), and the activation function (GeLU read f write f; SwiGLU read 2f write f).
    Norms and residuals run replicated on every tensor-parallel rank unless sequence-parallel."""
    h, f = model.hidden, model.ffn_hidden
    rep = 8 * h + 12 * h + (2 * h if model.dropout else 0)
    act = (6 if model.gated_mlp else 4) * f
    return (rep / tp if sp else rep) + act / tp


def layer_compute(c: Clock, model: Model, tokens: int, tp: int, cp: int, micro_batch: int,
                  attention: str, causal: bool, sp: bool, g: GPU,
                  meas: Measurements) -> dict[str, float]:
    """Forward and backward seconds of one layer's compute for one micro-batch on one GPU:
    GEMMs (each at its shape), the attention core, the memory-bound kernels. Returns fwd, bwd,
    attn_f, attn_b, elem_f, elem_b, score_f (seconds)."""
    s = model.seq_len
    hbm = meas.hbm_tbps(g)
    c.note("hbm", hbm)
    bw = hbm.value * 1e12
    fe = meas.efficiency(g)
    c.note("framework_efficiency", fe)
    fwd = bwd = 0.0
    for role, (n, k) in gemm_roles(model, tp).items():
        tf, tb = gemm_fwd_bwd(c, meas, g, role, tokens, n, k)
        fwd += tf
        bwd += tb
    fwd, bwd = fwd / fe.value, bwd / fe.value
    heads = model.heads / tp
    score_f = score_b = 0.0
    if attention == "flash":
        fl = attention_core_flops(model, tokens, s, heads, causal)
        af, ab = (meas.attention_tflops(g, s, model.head_dim, causal, d) for d in ("fwd", "bwd"))
        c.note("attention.fwd", af)
        c.note("attention.bwd", ab)
        attn_f = fl / (af.value * 1e12) / fe.value
        attn_b = 2.5 * fl / (ab.value * 1e12) / fe.value
    else:
        # batched GEMMs over all (batch, head) pairs: QK^T (s x s x d), then PV (s x d x s)
        m_rows = micro_batch * (model.heads // tp) * (s // cp)
        qk_f, qk_b = gemm_fwd_bwd(c, meas, g, "attention_scores", m_rows, s, model.head_dim)
        pv_f, pv_b = gemm_fwd_bwd(c, meas, g, "attention_values", m_rows, model.head_dim, s)
        attn_f, attn_b = (qk_f + pv_f) / fe.value, (qk_b + pv_b) / fe.value
        # scale-mask-softmax (read + write, 2 B) and dropout (read, write, 1 B mask) over the
        # scores: 9 B per score forward; backward reads grads, outputs and masks: 11 B
        per_score_f = 4 + (5 if model.dropout else 0)
        per_score_b = 6 + (5 if model.dropout else 0)
        scores = micro_batch * heads * (s // cp) * s
        score_f, score_b = scores * per_score_f / bw, scores * per_score_b / bw
    elem_f = tokens * elementwise_bytes_per_token(model, tp, sp) / bw
    elem_b = 2 * elem_f + score_b  # backward reads inputs and grads, writes grads
    return {"fwd": fwd, "bwd": bwd, "attn_f": attn_f, "attn_b": attn_b,
            "elem_f": elem_f + score_f, "elem_b": elem_b, "score_f": score_f}


def output_layer_compute(model: Model, tokens: int, tp: int, g: GPU, meas: Measurements,
                         clock: Clock) -> dict[str, float]:
    """The output layer (logits GEMM over the padded vocabulary, vocab-parallel over tp) and its
    cross-entropy for one micro-batch: fwd + bwd GEMMs, and ~12 B per logit of memory traffic
    (bf16 logits, fp32 softmax read/write; assumption) for the loss."""
    n = framework_vocab(model, tp) // tp
    tf, tb = gemm_fwd_bwd(clock, meas, g, "logits", tokens, n, model.hidden)
    fe = meas.efficiency(g).value
    tf, tb = tf / fe, tb / fe
    loss = tokens * n * 12 / (meas.hbm_tbps(g).value * 1e12)
    return {"compute": tf + tb, "memory_bound": loss}
