"""Model presets: a dense decoder-only transformer, built from the one shape table
(results/models.py), plus the training-era flags the scaling model needs."""

from __future__ import annotations

from dataclasses import dataclass

from reports.model.config import ScenarioError, check_bool, check_keys, check_str
from results.models import MODEL_SHAPES


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
    context_len: int | None = None  # the longest sequence it serves; None: seq_len

    @property
    def context_window(self) -> int:
        return self.context_len or self.seq_len

    def __post_init__(self):
        check_str(self.name, "model name")
        for f in ("layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "seq_len"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ScenarioError(f"model {f} must be a positive integer, got {v!r}")
        c = self.context_len
        if c is not None and (isinstance(c, bool) or not isinstance(c, int) or c < self.seq_len):
            raise ScenarioError(f"model context_len must be an integer >= seq_len "
                                f"({self.seq_len}), got {c!r}")
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


def padded_vocab(vocab: int, tp: int, divisible_by: int = 128) -> int:
    """The vocabulary a framework allocates: Megatron pads it to a multiple of 128 x tp
    (--make-vocab-size-divisible-by 128, megatron/training/tokenizer); GPT-2's 50,257 becomes
    51,200 at tp 8, the V Narayanan et al. 2021 state."""
    step = divisible_by * tp
    return -(-vocab // step) * step


def framework_vocab(model: Model, tp: int) -> int:
    """The vocabulary the step model prices: padded for tp > 1 (padded_vocab), else as given
    (an unsharded table needs no divisibility)."""
    return padded_vocab(model.vocab, tp) if tp > 1 else model.vocab


# Models whose published runs kept dropout (the GPT-3 / Megatron 2021 era); everything else
# trains without (Llama 3, Nemotron-4: assumption where the paper does not say).
_DROPOUT = {"gpt3-175b", "opt-175b", "mt-nlg-530b", "gpt3-177b-131k"} | {
    k for k in MODEL_SHAPES if k.startswith("megatron-")}


def _from_shape(name: str, row: dict) -> Model:
    return Model(name, row["layers"], row["hidden"], row["heads"], row["kv_heads"],
                 row["ffn_hidden"], row["vocab"], row["seq_len"], gated_mlp=row["gated_mlp"],
                 dropout=name in _DROPOUT, learned_positions=row["learned_positions"],
                 tied_embeddings=row["tied_embeddings"], source=row["source"],
                 context_len=row.get("context_len"))


MODELS: dict[str, Model] = {name: _from_shape(name, row) for name, row in MODEL_SHAPES.items()}

_MODEL_KEYS = {"name", "layers", "hidden", "heads", "kv_heads", "ffn_hidden", "vocab", "seq_len",
               "gated_mlp", "dropout", "learned_positions", "tied_embeddings", "context_len"}


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
                 spec.get("learned_positions", False), spec.get("tied_embeddings", False),
                 context_len=spec.get("context_len"))
