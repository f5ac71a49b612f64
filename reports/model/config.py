"""What a scenario says besides the model and the cluster: the parallel layout (the searchable
knobs) and the training software's settings, with the type checks every scenario key gets.

Scenario files are YAML or JSON: a quoted "false" is a non-empty string, which bool() would take
as true, so flags must be real booleans and numbers real numbers (bools are ints in Python and
are refused where a number is meant)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace


class ScenarioError(ValueError):
    """A scenario the model cannot evaluate: the message says what is wrong."""


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


def check_str(v, what: str) -> str:
    if not isinstance(v, str):
        raise ScenarioError(f"{what} must be a string, got {v!r} ({type(v).__name__})")
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


RECOMPUTE = ("none", "selective", "full")


@dataclass(frozen=True)
class Parallel:
    """How one job is split: the searchable knobs. `virtual_stages` > 1 is Megatron-Core's
    interleaved 1F1B schedule (model chunks per pipeline rank); 1 is plain 1F1B."""

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

    @property
    def schedule(self) -> str:
        if self.pp == 1:
            return "none"
        return "interleaved-1f1b" if self.virtual_stages > 1 else "1f1b"

    def to_dict(self) -> dict:
        return asdict(self)


ZERO = (0, 1, 2, 3)


# HBM bytes per parameter of one micro-batch's gradient accumulation outside the GEMM, as
# (fixed, per accumulator byte): bytes = fixed + per x grad_bytes. "add" reads the 16-bit
# gradient (2) and reads and writes the accumulator (2 x grad_bytes); "cast_add" first casts it
# to a temporary (2 read + grad_bytes written), then adds (3 x grad_bytes); "fused": nothing.
GRAD_ACCUM: dict[str, tuple[int, int]] = {"fused": (0, 0), "add": (2, 2), "cast_add": (2, 4)}


@dataclass(frozen=True)
class Training:
    """Settings of the training software, fixed during a search.

    attention: "flash" (fused kernel, causal work skipped, nothing s^2 stored) or "unfused"
    (batched GEMMs plus softmax/dropout kernels over the full s^2 scores: Megatron-LM 2021).
    zero: 0 replicated optimizer; 1 distributed optimizer (Megatron-Core; ZeRO-1: optimizer
    state sharded over dp x cp); 2 gradients sharded too, so reduce-scattered every
    micro-batch (ZeRO-2; FSDP that does not reshard weights after the forward, as Llama 3's);
    3 weights too (ZeRO-3 / FSDP full shard).
    tp_overlap: fraction of a layer's tensor-parallel collectives run as Transformer Engine's
    comm-GEMM overlap (Megatron-Core --tp-comm-overlap: 1.0; comm.UB_SITES), paid for with
    smaller GEMM chunks and the SMs the overlapped collectives occupy; only with sequence
    parallelism (Megatron-LM refuses it otherwise).
    async_dgrad: the column-parallel layers' (qkv, fc1) input-gradient reduce-scatter, or
    all-reduce without sequence parallelism, runs behind their weight-gradient GEMM
    (Megatron-LM's LinearWithGradAccumulationAndAsyncCommunication, from late 2021; False for
    the Megatron-LM of 2021 and its forks).
    grad_bytes: bytes per main-gradient element kept and reduced (4: fp32, Megatron's default
    for bf16 and Llama 3's; 2: fp16 or bf16 gradients, as fp16 Megatron-LM keeps them).
    pp_scatter_gather: each tensor-parallel rank sends only its 1/t share of the activations
    and gradients between pipeline stages (Megatron-LM's scatter/gather, Narayanan et al. 2021,
    sec. 4.1); False: DeepSpeed's pipeline engine (Megatron-DeepSpeed), which partitions the
    activations but sends the gradients whole, one blocking call each (comm.pp_seconds).
    grad_accum: how each micro-batch's weight gradient reaches the main gradient. "fused": the
    weight-gradient GEMM accumulates straight into it (Megatron-LM's gradient-accumulation
    fusion, in the same LinearWithGradAccumulationAndAsyncCommunication as async_dgrad;
    Megatron-Core's default). "add": an add kernel per micro-batch (Megatron-LM of 2021, its DDP
    hook's main_grad.add_(grad)). "cast_add": the gradient cast to fp32 first, then added
    (DeepSpeed's BF16_Optimizer: hp_grad.add_(lp.grad.to(hp_grad.dtype))). Bytes: GRAD_ACCUM.
    """

    attention: str = "flash"
    sequence_parallel: bool = True
    zero: int = 1
    overlap_grad_reduce: bool = True
    tp_overlap: float = 0.0
    async_dgrad: bool = True
    grad_bytes: int = 4
    causal: bool = True
    pp_scatter_gather: bool = True
    grad_accum: str = "fused"
    sources: dict[str, str] = field(default_factory=lambda: {
        "grad_bytes": "FP32 gradient reduce-scatter, as Llama 3 (Dubey et al. 2024, sec. 3.3.2)",
        "tp_overlap": "assumption: tensor-parallel collectives exposed (no overlap)",
    }, compare=False)

    def __post_init__(self):
        for f in ("sequence_parallel", "overlap_grad_reduce", "causal", "pp_scatter_gather",
                  "async_dgrad"):
            check_bool(getattr(self, f), f"training {f}")
        check_str(self.attention, "training attention")
        check_int(self.zero, "training zero")
        check_number(self.tp_overlap, "training tp_overlap")
        check_int(self.grad_bytes, "training grad_bytes")
        check_str(self.grad_accum, "training grad_accum")
        if self.grad_accum not in GRAD_ACCUM:
            raise ScenarioError(f"grad_accum must be one of {', '.join(GRAD_ACCUM)}, got "
                                f"{self.grad_accum!r}")
        if self.attention not in ("flash", "unfused"):
            raise ScenarioError(f"attention must be 'flash' or 'unfused', got {self.attention!r}")
        if self.zero not in ZERO:
            raise ScenarioError(f"zero must be 0, 1, 2 or 3, got {self.zero!r}")
        if not 0.0 <= self.tp_overlap <= 1.0:
            raise ScenarioError(f"tp_overlap must be in [0, 1], got {self.tp_overlap!r}")
        if self.tp_overlap and not self.sequence_parallel:  # comm.py would ignore it silently
            raise ScenarioError(f"tp_overlap {self.tp_overlap!r} needs sequence_parallel: true "
                                "(Transformer Engine overlaps only the sequence-parallel "
                                "all-gathers and reduce-scatters); set tp_overlap 0 without it")
        if self.grad_bytes not in (2, 4):
            raise ScenarioError(f"grad_bytes must be 2 or 4, got {self.grad_bytes!r}")
        if self.grad_accum == "cast_add" and self.grad_bytes == 2:
            raise ScenarioError("grad_accum cast_add casts 16-bit gradients to fp32: it needs "
                                "grad_bytes 4")

    @property
    def grads_sharded(self) -> bool:
        """Only a 1/(dp x cp) gradient shard is kept (ZeRO-2 and -3), so each micro-batch's
        gradients are reduce-scattered as they come and only the shard is accumulated; below
        that the whole gradients are accumulated and reduced once per step."""
        return self.zero >= 2

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("sources")
        return d


_TRAINING_KEYS = {"attention", "sequence_parallel", "zero", "overlap_grad_reduce", "tp_overlap",
                  "async_dgrad", "grad_bytes", "causal", "pp_scatter_gather",
                  "grad_accum"}


def training_from(spec: dict | None) -> Training:
    if spec is None:
        return Training()
    if isinstance(spec, Training):
        return spec
    if not isinstance(spec, dict):
        raise ScenarioError(f"training must be a dict, not {type(spec).__name__}")
    check_keys(spec, _TRAINING_KEYS, "training")
    return replace(Training(), **spec)
