"""The training-step model of a dense transformer: FLOPs, communication, pipeline, memory.

One training step of a decoder-only transformer under tensor (tp), pipeline (pp, interleaved over
`virtual_stages`), context (cp) and data (dp) parallelism, with micro-batches and activation
recomputation. `step_time()` returns the time of one step on one GPU type with a breakdown, and
`memory_per_gpu()` the bytes each GPU holds. The formulas are small named functions, each with the
reasoning or source beside it; the efficiencies they are fed (GEMM and attention TFLOP/s, HBM and
link bandwidths) come from reports/measurements.py.

Conventions: bf16 activations and weights (2 bytes); "GB" decimal, "GiB" binary; Megatron rank
order tp (fastest) - cp - dp - pp, so a tp group sits inside a node when tp <= GPUs per node.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from reports.model.hardware import GIB, GPU, Cluster
from reports.model.measurements import Figure, Measurements


class ScenarioError(ValueError):
    """A scenario the model cannot evaluate: the message says what is wrong."""


# Scenario files are YAML or JSON: a quoted "false" is a non-empty string, which bool() would take
# as true, so flags must be real booleans and numbers real numbers (bools are ints in Python and
# are refused where a number is meant).


def check_bool(v, what: str) -> bool:
    if not isinstance(v, bool):
        raise ScenarioError(f"{what} must be true or false (a boolean), got {v!r} "
                            f"({type(v).__name__})")
    return v


def check_number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ScenarioError(f"{what} must be a number, got {v!r} ({type(v).__name__})")
    return v


def check_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ScenarioError(f"{what} must be an integer, got {v!r} ({type(v).__name__})")
    return v


def key_names(keys) -> str:
    """Keys for a message, sorted (YAML keys need not be strings)."""
    return ", ".join(sorted(map(str, keys)))


def check_keys(spec: dict, allowed: set[str], what: str) -> None:
    """Refuse the keys a scenario section does not know, naming them and the allowed ones."""
    unknown = set(spec) - allowed
    if unknown:
        raise ScenarioError(f"unknown {what} keys: {key_names(unknown)}; allowed: "
                            f"{', '.join(sorted(allowed))}")


def check_str(v, what: str) -> str:
    if not isinstance(v, str):
        raise ScenarioError(f"{what} must be a string, got {v!r} ({type(v).__name__})")
    return v


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A dense decoder-only transformer. `gated_mlp`: SwiGLU (three ffn matrices, Llama);
    `dropout`: dropout layers present (GPT-3/Megatron era; modern pre-training runs without);
    `learned_positions`: a learned position embedding table (GPT) rather than rotary;
    `tied_embeddings`: the output layer shares the input embedding's weights (Megatron GPT)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn_hidden: int
    vocab: int
    seq_len: int
    gated_mlp: bool = False
    dropout: bool = False
    learned_positions: bool = False
    tied_embeddings: bool = False
    source: str = "scenario file"

    def __post_init__(self):
        check_str(self.name, "model name")
        for f in ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "seq_len"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ScenarioError(f"model {f} must be a positive integer, got {v!r}")
        for f in ("gated_mlp", "dropout", "learned_positions", "tied_embeddings"):
            check_bool(getattr(self, f), f"model {f}")
        if self.hidden % self.heads:
            raise ScenarioError(f"hidden {self.hidden} is not divisible by heads {self.heads}")
        if self.heads % self.kv_heads:
            raise ScenarioError(f"heads {self.heads} not divisible by kv_heads {self.kv_heads}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def ffn_matrices(self) -> int:
        return 3 if self.gated_mlp else 2

    def layer_params(self) -> int:
        """Weights of one layer: QKV, output projection, MLP, two norms (biases ignored)."""
        h = self.hidden
        attn = h * (h + 2 * self.kv_dim) + h * h
        mlp = self.ffn_matrices * h * self.ffn_hidden
        return attn + mlp + 2 * h

    def embedding_params(self) -> int:
        return self.vocab * self.hidden + (self.seq_len * self.hidden
                                           if self.learned_positions else 0)

    def params(self) -> int:
        """All weights (an untied output layer counted on top of the input embedding)."""
        out = 0 if self.tied_embeddings else self.vocab * self.hidden
        return self.layers * self.layer_params() + self.embedding_params() + out


# Presets. Calibration models follow Narayanan et al. 2021 Table 1 (vocab 51,200, seq 2048, ffn 4h,
# GPT architecture); Colossus workloads follow the published architectures.
_N21 = "Narayanan et al. 2021 (Megatron-LM, SC21), Table 1"
_LLAMA3 = "Llama 3 Herd of Models (Dubey et al. 2024), Table 3"


def _gpt(name: str, layers: int, hidden: int, heads: int, source: str, vocab: int = 51200,
         seq: int = 2048) -> Model:
    return Model(name, layers, hidden, heads, heads, 4 * hidden, vocab, seq, gated_mlp=False,
                 dropout=True, learned_positions=True, tied_embeddings=True, source=source)


MODELS: dict[str, Model] = {
    "gpt3-175b": _gpt("gpt3-175b", 96, 12288, 96, "Brown et al. 2020 (GPT-3), Table 2.1; "
                      "vocab 51,200 as in Narayanan et al. 2021"),
    "llama3-70b": Model("llama3-70b", 80, 8192, 64, 8, 28672, 128256, 8192, gated_mlp=True,
                        source=_LLAMA3),
    "llama3-405b": Model("llama3-405b", 126, 16384, 128, 8, 53248, 128256, 8192, gated_mlp=True,
                         source=_LLAMA3),
    "dense-1t": Model("dense-1t", 128, 25600, 160, 160, 4 * 25600, 128256, 8192,
                      source="assumption: Megatron's 1T shape (l=128, h=25600, a=160, ffn 4h, "
                             "Narayanan et al. 2021) with Llama 3's vocabulary and context"),
    "opt-175b": _gpt("opt-175b", 96, 12288, 96, "Zhang et al. 2022 (OPT), Table 1; vocabulary "
                     "50,272 from the released model configuration", vocab=50272),
    # Narayanan et al. 2021, Table 1 (the weak-scaling sweep on Selene)
    "megatron-1.7b": _gpt("megatron-1.7b", 24, 2304, 24, _N21),
    "megatron-3.6b": _gpt("megatron-3.6b", 30, 3072, 32, _N21),
    "megatron-7.5b": _gpt("megatron-7.5b", 36, 4096, 32, _N21),
    "megatron-18.4b": _gpt("megatron-18.4b", 40, 6144, 48, _N21),
    "megatron-39.1b": _gpt("megatron-39.1b", 48, 8192, 64, _N21),
    "megatron-76.1b": _gpt("megatron-76.1b", 60, 10240, 80, _N21),
    "megatron-145.6b": _gpt("megatron-145.6b", 80, 12288, 96, _N21),
    "megatron-310.1b": _gpt("megatron-310.1b", 96, 16384, 128, _N21),
    "megatron-529.6b": _gpt("megatron-529.6b", 105, 20480, 128, _N21),
    "megatron-1t": _gpt("megatron-1t", 128, 25600, 160, _N21),
}


_MODEL_KEYS = {"name", "layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "seq_len",
               "gated_mlp", "dropout", "learned_positions", "tied_embeddings"}


def model_from(spec) -> Model:
    """A model from a preset name or a scenario dict (kv_heads defaults to heads, ffn_hidden to
    4 x hidden)."""
    if isinstance(spec, Model):
        return spec
    if isinstance(spec, str):
        if spec not in MODELS:
            raise ScenarioError(f"unknown model preset {spec!r}; known: "
                                f"{', '.join(sorted(MODELS))}")
        return MODELS[spec]
    if not isinstance(spec, dict):
        raise ScenarioError(f"model must be a preset name or a dict, not {type(spec).__name__}")
    check_keys(spec, _MODEL_KEYS, "model")
    missing = {"layers", "hidden", "heads", "vocab", "seq_len"} - set(spec)
    if missing:
        raise ScenarioError(f"model is missing: {', '.join(sorted(missing))}")
    hidden = spec["hidden"]
    ffn = spec["ffn_hidden"] if "ffn_hidden" in spec else \
        4 * hidden if isinstance(hidden, int) else hidden  # Model reports a bad hidden
    # Model checks every type (flags real booleans, sizes positive integers)
    return Model(spec.get("name", "custom"), spec["layers"], hidden, spec["heads"],
                 spec.get("kv_heads", spec["heads"]), ffn, spec["vocab"], spec["seq_len"],
                 spec.get("gated_mlp", False), spec.get("dropout", False),
                 spec.get("learned_positions", False), spec.get("tied_embeddings", False))


# --- the parallel configuration and the training settings -----------------------------------------

RECOMPUTE = ("none", "selective", "full")


@dataclass(frozen=True)
class Parallel:
    """How one job is split: the searchable knobs."""

    tp: int = 1
    pp: int = 1
    cp: int = 1
    dp: int = 1
    micro_batch: int = 1
    virtual_stages: int = 1
    recompute: str = "none"

    def __post_init__(self):
        for f in ("tp", "pp", "cp", "dp", "micro_batch", "virtual_stages"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ScenarioError(f"parallel {f} must be a positive integer, got {v!r}")
        if not isinstance(self.recompute, str) or self.recompute not in RECOMPUTE:
            raise ScenarioError(f"recompute must be one of {RECOMPUTE}, got {self.recompute!r}")
        if self.virtual_stages > 1 and self.pp == 1:
            raise ScenarioError("virtual_stages > 1 needs pp > 1 (interleaving splits stages)")

    @property
    def model_parallel(self) -> int:
        return self.tp * self.pp * self.cp

    @property
    def gpus(self) -> int:
        return self.model_parallel * self.dp

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Training:
    """Settings of the training software, fixed during a search.

    attention: "flash" (fused kernel, causal work skipped, nothing s^2 stored) or "unfused"
    (batched GEMMs plus softmax/dropout kernels over the full s^2 scores: Megatron-LM 2021).
    zero: 0 replicated optimizer, 1 distributed optimizer (ZeRO-1 over dp x cp), 3 fully sharded.
    tp_overlap: fraction of tensor-parallel communication hidden behind GEMMs.
    grad_bytes: bytes per gradient element in the data-parallel reduction.
    """

    attention: str = "flash"
    sequence_parallel: bool = True
    zero: int = 1
    overlap_grad_reduce: bool = True
    tp_overlap: float = 0.0
    grad_bytes: int = 4
    causal: bool = True
    sources: dict[str, str] = field(default_factory=lambda: {
        "grad_bytes": "FP32 gradient reduce-scatter, as Llama 3 (Dubey et al. 2024, sec. 3.3.2)",
        "tp_overlap": "assumption: tensor-parallel collectives exposed (no overlap)",
    }, compare=False)

    def __post_init__(self):
        for f in ("sequence_parallel", "overlap_grad_reduce", "causal"):
            check_bool(getattr(self, f), f"training {f}")
        check_str(self.attention, "training attention")
        check_int(self.zero, "training zero")
        check_number(self.tp_overlap, "training tp_overlap")
        check_int(self.grad_bytes, "training grad_bytes")
        if self.attention not in ("flash", "unfused"):
            raise ScenarioError(f"attention must be 'flash' or 'unfused', got {self.attention!r}")
        if self.zero not in (0, 1, 3):
            raise ScenarioError(f"zero must be 0, 1 or 3, got {self.zero!r}")
        if not 0.0 <= self.tp_overlap <= 1.0:
            raise ScenarioError(f"tp_overlap must be in [0, 1], got {self.tp_overlap!r}")
        if self.grad_bytes not in (2, 4):
            raise ScenarioError(f"grad_bytes must be 2 or 4, got {self.grad_bytes!r}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("sources")
        return d


_TRAINING_KEYS = {"attention", "sequence_parallel", "zero", "overlap_grad_reduce", "tp_overlap",
                  "grad_bytes", "causal"}


def training_from(spec: dict | None) -> Training:
    if spec is None:
        return Training()
    if not isinstance(spec, dict):
        raise ScenarioError(f"training must be a dict, not {type(spec).__name__}")
    check_keys(spec, _TRAINING_KEYS, "training")
    return replace(Training(), **spec)


# --- FLOPs ----------------------------------------------------------------------------------------


def flops_per_token(model: Model) -> float:
    """Model FLOPs per trained token, recomputation not counted (the MFU numerator).

    6 N for the matmul weights (forward 2N, backward 4N; Kaplan et al. 2020) plus 12 l s h for
    attention scores and values counted over the full s x s matrix, as PaLM's MFU does
    (Chowdhery et al. 2022, appendix B). N counts the output layer but not embedding lookups.
    For GPT this equals Narayanan's 72 B s l h^2 (1 + s/(6h) + V/(12 l h)) per token.
    """
    n_matmul = model.layers * (model.layer_params() - 2 * model.hidden) + \
        model.vocab * model.hidden
    return 6.0 * n_matmul + 12.0 * model.layers * model.seq_len * model.heads * model.head_dim


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
    the kernel skips the masked half (ANCHORS.md convention: 4 B H S^2 D, halved for causal)."""
    f = 4.0 * tokens * kv_len * heads * model.head_dim
    return f / 2 if causal else f


# --- the pipeline ---------------------------------------------------------------------------------


def bubble_fraction(pp: int, microbatches: int, virtual_stages: int = 1) -> float:
    """Pipeline bubble over ideal compute time: (p - 1) / (v m) (Narayanan et al. 2021, sec. 2.2:
    1F1B has (p - 1)/m, the interleaved schedule divides it by v)."""
    if pp < 1 or microbatches < 1 or virtual_stages < 1:
        raise ValueError("pp, microbatches and virtual_stages must be >= 1")
    return (pp - 1) / (virtual_stages * microbatches)


def stage_layers(layers: int, pp: int) -> tuple[int, int]:
    """(layers on the fullest stage, layers on the last stage). Stages hold ceil(l/p) or
    floor(l/p) layers; the last stage, which also holds the output layer, takes floor(l/p)
    (Llama 3 likewise put fewer layers on its last stage)."""
    if pp > layers:
        raise ScenarioError(f"pp={pp} exceeds the {layers} layers: a stage would be empty")
    return -(-layers // pp), layers // pp


# --- communication --------------------------------------------------------------------------------


def allreduce_seconds(nbytes: float, n: int, busbw_gbps: float, alpha_s: float) -> float:
    """All-reduce of `nbytes` over n ranks: bytes * 2(n-1)/n / busbw + alpha * 2(n-1) steps.
    busbw as nccl-tests define it (algbw x 2(n-1)/n, doc/PERFORMANCE.md), so a measured busbw
    plugs in directly; a ring takes 2(n-1) latency steps."""
    if n <= 1:
        return 0.0
    return nbytes * 2 * (n - 1) / n / (busbw_gbps * 1e9) + alpha_s * 2 * (n - 1)


def reduce_scatter_seconds(nbytes: float, n: int, busbw_gbps: float, alpha_s: float) -> float:
    """Reduce-scatter (or all-gather) of a buffer of `nbytes` over n ranks: bytes * (n-1)/n /
    busbw + alpha * (n-1) (nccl-tests: busbw = algbw x (n-1)/n for these two)."""
    if n <= 1:
        return 0.0
    return nbytes * (n - 1) / n / (busbw_gbps * 1e9) + alpha_s * (n - 1)


def hierarchical_reduce_scatter_seconds(nbytes: float, n_local: int, n_nodes: int,
                                        nvlink_busbw: float, net_busbw: float,
                                        nvlink_alpha: float, net_alpha: float) -> float:
    """Reduce-scatter over n_local GPUs per node x n_nodes nodes, two levels: inside the node on
    NVLink, then across nodes on each GPU's own NIC with 1/n_local of the data. NCCL pipelines the
    two levels, so the slower one sets the time (this reproduces the ~350 GB/s all-reduce busbw
    measured on 248 nodes x 8 H200 with 8x400G, nccl-tests #283, ANCHORS.md)."""
    intra = reduce_scatter_seconds(nbytes, n_local, nvlink_busbw, nvlink_alpha)
    inter = reduce_scatter_seconds(nbytes / n_local, n_nodes, net_busbw, net_alpha)
    return max(intra, inter)


def dp_bucket_count(params_local: float, dp: int) -> int:
    """Gradient buckets per step: Megatron-Core's default bucket holds max(40M, 1M x dp)
    parameters (megatron/core/distributed/distributed_data_parallel.py)."""
    return max(1, math.ceil(params_local / max(40e6, 1e6 * dp)))


# --- memory ---------------------------------------------------------------------------------------


def state_bytes_per_param(zero: int, shards: int) -> dict[str, float]:
    """Weights, gradients and Adam state per parameter held on one GPU (mixed precision):
    bf16 weights 2 + fp32 main gradients 4 + fp32 master weights, momentum and variance 12 = 18
    bytes; the distributed optimizer (ZeRO-1) shards the 12 over the data-parallel ranks: 6 + 12/d
    (Megatron-LM docs, distributed optimizer); ZeRO-3 shards all 18 (Rajbhandari et al. 2020)."""
    if zero == 3:
        return {"weights": 2 / shards, "grads": 4 / shards, "optimizer": 12 / shards}
    if zero == 1:
        return {"weights": 2.0, "grads": 4.0, "optimizer": 12 / shards}
    return {"weights": 2.0, "grads": 4.0, "optimizer": 12.0}


def activation_bytes_per_layer(model: Model, micro_batch: int, seq: int, tp: int, sp: bool,
                               recompute: str, flash: bool) -> float:
    """Activation bytes one layer keeps for one micro-batch (Korthikanti et al. 2022, sec. 4).

    GPT with ffn 4h and dropout: s b h (34 + 5 a s / h) without parallelism, where 34 sums the
    attention block (11: QKV input 2, Q and K 4, V 2, projection input 2, dropout mask 1), the
    MLP (19: input 2, GeLU input 8, fc2 input 8, dropout mask 1) and two layer norms (4), and
    5 a s / h is the s x s softmax output, dropout mask and dropout output. Here generalised to
    GQA, other ffn widths, gated MLPs and no dropout. Tensor parallelism divides all but the norms,
    dropout masks and the block inputs (10 s b h) by t; sequence parallelism divides those too.
    Selective recomputation drops the s x s part, as does a flash kernel (it stores none); full
    recomputation keeps only each layer's input (2 s b h, / t with sequence parallelism).
    """
    sbh = seq * micro_batch * model.hidden
    kv = model.kv_dim / model.hidden
    f = model.ffn_hidden / model.hidden
    drop = 1.0 if model.dropout else 0.0
    # replicated across tensor-parallel ranks unless sequence-parallel: norms, block inputs, masks
    replicated = 4 + 2 + 2 + 2 * drop
    # sharded by tp: Q, K, V, projection input; MLP hidden activations
    sharded = (2 + 2 * kv + 2 * kv + 2) + (2 * f * (model.ffn_matrices - 1) + 2 * f)
    scores = 0.0 if flash or recompute != "none" else \
        (5 if model.dropout else 2) * model.heads * seq / model.hidden
    if recompute == "full":
        return 2 * sbh / (tp if sp else 1)
    rep = replicated / tp if sp else replicated
    return sbh * (rep + sharded / tp + scores / tp)


# --- one step on one GPU type ---------------------------------------------------------------------


@dataclass
class StepTime:
    """One training step on one GPU type, seconds, with where the time goes."""

    step_s: float
    microbatch_s: float  # one micro-batch through the slowest stage, all its chunks
    breakdown_s: dict[str, float]
    memory_bytes: dict[str, float]
    capacity_bytes: float
    sources: dict[str, str]

    @property
    def memory_total(self) -> float:
        return sum(self.memory_bytes.values())

    @property
    def fits(self) -> bool:
        return self.memory_total <= self.capacity_bytes


# Usable fraction of HBM for the model state (assumption: ~10% goes to the CUDA context, NCCL
# buffers, cuBLAS workspaces and allocator fragmentation).
USABLE_MEMORY_FRACTION = 0.9


def _gemm_roles(model: Model, tp: int) -> dict[str, tuple[int, int]]:
    """(n, k) of the per-GPU forward GEMMs of one layer; m is the micro-batch's token count.
    Megatron's column-parallel QKV and fc1 split n by t, row-parallel projections split k."""
    h, f = model.hidden, model.ffn_hidden
    return {
        "qkv": ((h + 2 * model.kv_dim) // tp, h),
        "out_proj": (h, h // tp),
        "fc1": ((model.ffn_matrices - 1) * f // tp, h),
        "fc2": (h, f // tp),
    }


class _Clock:
    """Accumulates per-layer seconds by category and keeps the first source of each figure."""

    def __init__(self):
        self.t: dict[str, float] = {}
        self.sources: dict[str, str] = {}

    def add(self, cat: str, seconds: float):
        self.t[cat] = self.t.get(cat, 0.0) + seconds

    def note(self, key: str, fig: Figure):
        self.sources.setdefault(key, fig.source)


def _gemm_fwd_bwd(clock: _Clock, meas: Measurements, g: GPU, role: str, m: int, n: int,
                  k: int) -> tuple[float, float]:
    """Forward GEMM (m, n, k) and its two backward GEMMs: data gradient (m, k, n) and weight
    gradient (k, n, m); each priced at its own shape."""
    tf, fig = meas.gemm_seconds(g, m, n, k)
    clock.note(f"gemm.{role}", fig)
    td, _ = meas.gemm_seconds(g, m, k, n)
    tw, _ = meas.gemm_seconds(g, k, n, m)
    return tf, td + tw


def _elementwise_bytes_per_token(model: Model, tp: int, sp: bool) -> float:
    """HBM bytes the memory-bound kernels of one layer move per token in the forward pass, with
    Megatron's fused kernels (each reads its inputs and writes its output once, bf16): two norms
    (read h, write h: 8h), two bias-dropout-residual adds (read 2h, write h: 12h, + 2h of masks
    with dropout), and the activation function (GeLU read f write f; SwiGLU read 2f write f).
    Norms and residuals run replicated on every tensor-parallel rank unless sequence-parallel."""
    h, f = model.hidden, model.ffn_hidden
    rep = 8 * h + 12 * h + (2 * h if model.dropout else 0)
    act = (6 if model.gated_mlp else 4) * f
    return (rep / tp if sp else rep) + act / tp


def layer_seconds(model: Model, par: Parallel, train: Training, cluster: Cluster, g: GPU,
                  meas: Measurements) -> _Clock:
    """Seconds of one layer for one micro-batch on one GPU, forward + backward (+ recompute), by
    category: compute, recompute, memory_bound, tp_comm, cp_comm."""
    c = _Clock()
    t, cp, b, s = par.tp, par.cp, par.micro_batch, model.seq_len
    tokens = b * s // cp  # each context-parallel rank holds s / cp of the sequence
    hbm = meas.hbm_tbps(g)
    c.note("hbm", hbm)
    bw = hbm.value * 1e12

    fwd = bwd = 0.0
    for role, (n, k) in _gemm_roles(model, t).items():
        tf, tb = _gemm_fwd_bwd(c, meas, g, role, tokens, n, k)
        fwd += tf
        bwd += tb

    fe = meas.framework_efficiency
    c.note("framework_efficiency", fe)
    fwd, bwd = fwd / fe.value, bwd / fe.value
    heads = model.heads / t
    if train.attention == "flash":
        fl = attention_core_flops(model, tokens, s, heads, train.causal)
        af, ab = (meas.attention_tflops(g, s, model.head_dim, train.causal, d) for d in
                  ("fwd", "bwd"))
        c.note("attention.fwd", af)
        c.note("attention.bwd", ab)
        attn_f = fl / (af.value * 1e12) / fe.value
        attn_b = 2.5 * fl / (ab.value * 1e12) / fe.value  # ANCHORS: backward 2.5x forward FLOPs
        score_f = score_b = 0.0
    else:
        # batched GEMMs over all (batch, head) pairs: QK^T (s x s x d), then PV (s x d x s)
        m_rows = b * (model.heads // t) * (s // cp)
        qk_f, qk_b = _gemm_fwd_bwd(c, meas, g, "attention_scores", m_rows, s, model.head_dim)
        pv_f, pv_b = _gemm_fwd_bwd(c, meas, g, "attention_values", m_rows, model.head_dim, s)
        attn_f, attn_b = (qk_f + pv_f) / fe.value, (qk_b + pv_b) / fe.value
        # scale-mask-softmax (read + write, 2 B) and dropout (read, write, 1 B mask) over the
        # scores: 9 B per score forward; backward reads grads, outputs and masks: 11 B
        per_score_f = 4 + (5 if model.dropout else 0)
        per_score_b = 6 + (5 if model.dropout else 0)
        scores = b * heads * (s // cp) * s
        score_f, score_b = scores * per_score_f / bw, scores * per_score_b / bw

    elem_f = tokens * _elementwise_bytes_per_token(model, t, train.sequence_parallel) / bw
    elem_f += score_f
    elem_b = 2 * (elem_f - score_f) + score_b  # backward reads inputs and grads, writes grads

    # tensor-parallel collectives: two per layer forward (after attention, after the MLP) and two
    # backward, each an all-reduce of the layer's activations, or with sequence parallelism an
    # all-gather plus a reduce-scatter, the same bytes (Korthikanti et al. 2022, sec. 4.2.2)
    tp_coll = 0.0
    if t > 1:
        nvl = meas.nvlink_busbw_gbps(g)
        c.note("nvlink", nvl)
        busbw, alpha = _link(cluster, t, nvl.value)
        tp_coll = allreduce_seconds(tokens * model.hidden * 2, t, busbw, alpha)
    tp_f, tp_b = 2 * tp_coll, 2 * tp_coll

    # context parallelism: ring exchange of K and V blocks, overlapped with the attention compute
    cp_f = cp_b = 0.0
    if cp > 1:
        nvl = meas.nvlink_busbw_gbps(g)
        busbw, _ = _link(cluster, t * cp, nvl.value)
        kv_block = b * (s // cp) * 2 * (model.kv_dim / t) * 2
        comm_f = (cp - 1) * kv_block / (busbw * 1e9)
        cp_f = overlap_exposed(comm_f, attn_f, meas.comm_sm_share.value)
        cp_b = overlap_exposed(2 * comm_f, attn_b, meas.comm_sm_share.value)  # K, V; dK, dV

    c.add("compute", fwd + bwd + attn_f + attn_b)
    c.add("memory_bound", elem_f + elem_b)
    exposed = 1.0 - train.tp_overlap
    c.add("tp_comm", (tp_f + tp_b) * exposed)
    c.add("cp_comm", cp_f + cp_b)
    if par.recompute == "full":
        c.add("recompute", fwd + attn_f + elem_f)
        c.add("tp_comm", tp_f * exposed)
        c.add("cp_comm", cp_f)
    elif par.recompute == "selective":
        # the attention core (scores, softmax, dropout) again: free for flash, which already
        # recomputes it in its backward
        if train.attention == "unfused":
            c.add("recompute", attn_f + score_f)
    return c


def overlap_exposed(comm_s: float, window_s: float, sm_share: float) -> float:
    """Time a collective adds when it runs alongside `window_s` of compute: the part that does not
    fit in the window, plus the compute slowed by the SMs the collective occupies while hidden."""
    hidden = min(comm_s, window_s)
    return comm_s - hidden + hidden * sm_share


def _link(cluster: Cluster, group_span: int, nvlink_busbw: float) -> tuple[float, float]:
    """(busbw GB/s, alpha s) of a collective over `group_span` consecutive ranks: NVLink when they
    fit in one node, otherwise the scale-out NIC of each GPU."""
    if group_span <= cluster.gpus_per_node:
        return nvlink_busbw, cluster.nvlink_alpha_s
    return cluster.fabric.busbw_gbps, cluster.fabric.alpha_s


def output_layer_seconds(model: Model, par: Parallel, g: GPU, meas: Measurements,
                         clock: _Clock) -> dict[str, float]:
    """The output layer (logits GEMM, vocab-parallel over tp) and its cross-entropy for one
    micro-batch: fwd + bwd GEMMs, and ~12 B per logit of memory traffic (bf16 logits, fp32
    softmax read/write; assumption) for the loss."""
    tokens = par.micro_batch * model.seq_len // par.cp
    n = -(-model.vocab // par.tp)
    tf, tb = _gemm_fwd_bwd(clock, meas, g, "logits", tokens, n, model.hidden)
    tf, tb = tf / meas.framework_efficiency.value, tb / meas.framework_efficiency.value
    loss = tokens * n * 12 / (meas.hbm_tbps(g).value * 1e12)
    return {"compute": tf + tb, "memory_bound": loss}


def end_params(model: Model, pp: int) -> tuple[int, int]:
    """Parameters of the embedding and output layers held by the (first, last) pipeline stage.

    With pp > 1 the first stage holds the input embedding and the last the output layer (a copy
    of the embedding when tied: Megatron keeps one and all-reduces its gradient with the first
    stage). With pp = 1 one stage holds both: the embedding plus, untied, the output layer too.
    The one rule for memory and for the data-parallel gradient and optimizer bytes.
    """
    out = model.vocab * model.hidden
    if pp == 1:
        both = model.embedding_params() + (0 if model.tied_embeddings else out)
        return both, both
    return model.embedding_params(), out


def stage_params(model: Model, pp: int) -> tuple[int, int]:
    """All parameters (before tensor parallelism) on the (first, last) pipeline stage: the fullest
    stage's layers plus the embedding, the last stage's layers plus the output layer."""
    per, last = stage_layers(model.layers, pp)
    first_end, last_end = end_params(model, pp)
    return per * model.layer_params() + first_end, last * model.layer_params() + last_end


def memory_per_gpu(model: Model, par: Parallel, train: Training, microbatches: int) -> dict:
    """Bytes per GPU on the fullest pipeline stage: weights, gradients, optimizer state and
    activations (with the 1F1B in-flight micro-batches), the larger of the first and last stage.

    1F1B keeps up to p micro-batches in flight on the first stage, so it holds l/p x p = l
    layers' activations; interleaving multiplies that by 1 + (p-1)/(p v) (Korthikanti et al.
    2022, sec. 4.2.3). Full recomputation also rematerialises one layer at a time. The last stage
    holds the logits: bf16 plus fp32 for the loss, 6 B per logit / t (assumption).
    """
    p, v, t = par.pp, par.virtual_stages, par.tp
    per, last = stage_layers(model.layers, p)
    shards = par.dp * par.cp
    state = state_bytes_per_param(train.zero, shards)
    first_params, last_params = stage_params(model, p)
    layer = model.layer_params() / t
    seq = model.seq_len // par.cp
    flash = train.attention == "flash"
    a_layer = activation_bytes_per_layer(model, par.micro_batch, seq, t, train.sequence_parallel,
                                         par.recompute, flash)
    a_full = activation_bytes_per_layer(model, par.micro_batch, seq, t, train.sequence_parallel,
                                        "none", flash)
    inflight = min(p, microbatches) * (1 + (p - 1) / (p * v) if v > 1 else 1)
    remat = a_full if par.recompute == "full" else 0.0
    logits = par.micro_batch * seq * (-(-model.vocab // t)) * 6
    # ZeRO-3 gathers one layer's full bf16 weights at a time (plus one prefetched)
    gathered = 2 * 2 * layer if train.zero == 3 else 0.0

    def stage(params: float, acts: float) -> dict:
        return {k: params * bpp for k, bpp in state.items()} | {
            "activations": acts, "zero3_buffers": gathered}

    first = stage(first_params / t, per * a_layer * inflight + remat)
    lastd = stage(last_params / t, last * a_layer * (1 if p > 1 else inflight) + remat + logits)
    return max(first, lastd, key=lambda d: sum(d.values()))


def step_time(model: Model, par: Parallel, train: Training, cluster: Cluster, g: GPU,
              meas: Measurements, microbatches: int) -> StepTime:
    """One training step with `microbatches` micro-batches per pipeline on GPU type `g`.

    step = (m + (p-1)/v) x t_mb  +  exposed data-parallel communication  +  optimizer step,
    where t_mb is one micro-batch (forward + backward, all chunks) on the slowest stage.
    """
    if microbatches < 1:
        raise ScenarioError("a step needs at least one micro-batch per pipeline")
    # one layer and the output layer depend on tp, cp, micro-batch and recompute only: a search
    # over pp, dp and interleaving reuses them
    key = ("layer", model, par.tp, par.cp, par.micro_batch, par.recompute, train, cluster, g.name)
    if key not in meas.cache:
        clock = layer_seconds(model, par, train, cluster, g, meas)
        meas.cache[key] = (clock, output_layer_seconds(model, par, g, meas, clock))
    layer, out = meas.cache[key]
    per, last = stage_layers(model.layers, par.pp)
    # the slowest stage: a full stage, or the last one with the output layer
    full = {k: per * v for k, v in layer.t.items()}
    tail = {k: last * v for k, v in layer.t.items()}
    for k, v in out.items():
        tail[k] = tail.get(k, 0.0) + v
    stage = max(full, tail, key=lambda d: sum(d.values())) if par.pp > 1 else \
        {k: full.get(k, 0.0) + out.get(k, 0.0) for k in set(full) | set(out)}

    # pipeline point-to-point: the activations of one micro-batch cross each chunk boundary
    # forward and their gradients backward; each tp rank sends its 1/t share over its own link
    # (scatter/gather, Narayanan et al. 2021, sec. 4.1); blocking sends, not overlapped
    pp_mb = 0.0
    if par.pp > 1:
        nbytes = par.micro_batch * (model.seq_len // par.cp) * model.hidden * 2 / par.tp
        span = par.tp * par.cp * par.dp
        if span < cluster.gpus_per_node:
            bw, alpha = meas.nvlink_busbw_gbps(g).value, cluster.nvlink_alpha_s
        else:
            bw, alpha = cluster.fabric.busbw_gbps, cluster.fabric.alpha_s
        pp_mb = 2 * par.virtual_stages * (nbytes / (bw * 1e9) + alpha)
    stage["pp_comm"] = pp_mb
    t_mb = sum(stage.values())

    m = microbatches
    breakdown = {k: m * v for k, v in stage.items()}
    breakdown["pp_bubble"] = bubble_fraction(par.pp, m, par.virtual_stages) * m * t_mb

    # data-parallel gradient reduction (and parameter all-gather with a sharded optimizer)
    # the fuller stage's parameters, by the rule memory_per_gpu uses (end_params)
    params_local = max(stage_params(model, par.pp)) / par.tp
    breakdown["dp_comm"], dp_src = _dp_seconds(model, par, train, cluster, g, meas,
                                               params_local, stage, m)
    # optimizer: Adam over this GPU's shard, ~30 B per parameter (fp32 master, m, v read and
    # written, fp32 grad read, bf16 weight written), memory-bound
    shard = params_local / (par.dp * par.cp if train.zero in (1, 3) else 1)
    breakdown["optimizer"] = shard * 30 / (meas.hbm_tbps(g).value * 1e12)

    mem = memory_per_gpu(model, par, train, m)
    sources = dict(layer.sources)
    sources["fabric"] = f"{cluster.fabric.name}: " + "; ".join(
        f"{k}: {v}" for k, v in cluster.fabric.sources.items())
    sources["dp_comm"] = dp_src
    return StepTime(sum(breakdown.values()), t_mb, breakdown, mem,
                    g.memory_bytes * USABLE_MEMORY_FRACTION, sources)


def _dp_seconds(model: Model, par: Parallel, train: Training, cluster: Cluster, g: GPU,
                meas: Measurements, params_local: float, stage: dict, m: int
                ) -> tuple[float, str]:
    """Exposed data-parallel communication per step (seconds) and how it was modelled.

    Gradients are reduced over dp x cp ranks (weights are replicated across cp). The group is
    hierarchical: ranks that share a node (when tp < GPUs per node) reduce over NVLink first,
    the rest cross the fabric on each GPU's NIC. With the distributed optimizer: reduce-scatter
    of grad_bytes gradients and all-gather of bf16 weights; without: an all-reduce. ZeRO-3 gathers
    the weights for forward and backward and reduce-scatters gradients every micro-batch.
    With overlap, the reduce-scatter hides behind the last micro-batch's backward and the
    all-gather behind the first forward, except the last bucket (Megatron-Core overlap_grad_reduce
    / overlap_param_gather).
    """
    n = par.dp * par.cp
    if n == 1:
        return 0.0, "no data parallelism"
    # members of the group sit tp ranks apart (rank order tp, cp, dp), so a node holds
    # GPUs-per-node / tp of them
    n_local = max(1, min(n, cluster.gpus_per_node // par.tp))
    while n % n_local:
        n_local -= 1
    n_nodes = n // n_local
    nvl = meas.nvlink_busbw_gbps(g).value
    net = cluster.fabric.busbw_gbps

    def rs(nbytes: float) -> float:
        return hierarchical_reduce_scatter_seconds(nbytes, n_local, n_nodes, nvl, net,
                                                   cluster.nvlink_alpha_s, cluster.fabric.alpha_s)

    def overlapped(total: float, window: float) -> float:
        # all buckets but the last can hide behind the window; the last one cannot
        tail = total / buckets
        return overlap_exposed(total - tail, window, meas.comm_sm_share.value) + tail

    buckets = dp_bucket_count(params_local, n)
    grads = params_local * train.grad_bytes
    weights = params_local * 2
    # the latency terms are paid per bucket; the bandwidth terms once for all bytes
    rs_t = rs(grads) + (buckets - 1) * rs(0.0)
    ag_t = rs(weights) + (buckets - 1) * rs(0.0)
    how = (f"hierarchical: {n_local} per node on NVLink x {n_nodes} nodes on "
           f"{cluster.fabric.busbw_gbps:.1f} GB/s per GPU, {buckets} buckets")
    bwd_window = stage.get("compute", 0.0) * 2 / 3  # backward is ~2/3 of fwd + bwd compute
    fwd_window = stage.get("compute", 0.0) / 3
    if train.zero == 3:
        per_mb = 2 * ag_t + rs_t
        window = sum(v for k, v in stage.items() if k != "pp_comm")
        return m * overlapped(per_mb, window), how + ", ZeRO-3 every micro-batch, prefetched"
    if train.zero == 0:
        total = 2 * rs_t  # all-reduce = reduce-scatter + all-gather of the gradients
        if not train.overlap_grad_reduce:
            return total, how + ", all-reduce after the backward (not overlapped)"
        return overlapped(total, bwd_window), how + ", all-reduce overlapped"
    if not train.overlap_grad_reduce:
        return rs_t + ag_t, how + ", reduce-scatter + all-gather, not overlapped"
    exposed = overlapped(rs_t, bwd_window) + overlapped(ag_t, fwd_window)
    return exposed, how + ", reduce-scatter + all-gather overlapped with backward/forward"


def gib(nbytes: float) -> float:
    return nbytes / GIB
