"""Bytes per GPU: weights, gradients, optimizer state, activations, buffers; what fits.

State per parameter (mixed precision, Adam): bf16 weights 2 + main gradients (grad_bytes: fp32
4, Megatron's default for bf16 and Llama 3's; or bf16 2) + fp32 master weights, momentum and
variance 12. Sharding over the dp x cp ranks (weights are replicated across cp): ZeRO-1 /
Megatron-Core's distributed optimizer shards the 12 (Megatron-LM docs, distributed optimizer);
ZeRO-2 (FSDP without resharding after the forward, as Llama 3) the gradients too; ZeRO-3 / FSDP
full shard everything (Rajbhandari et al. 2020). With 16-bit gradients the optimizer also makes
an fp32 copy of its gradient shard (Megatron-LM's table: 4 + 16/d, not 4 + 12/d); it lives only
during the optimizer step, after the activations are freed (zero_grad(set_to_none)), so it is
left out of the peak (assumption).

Activations (Korthikanti et al. 2022, sec. 4) with sequence parallelism and selective or full
recompute; flash attention stores no s x s term. The pipeline's in-flight micro-batches come from
reports/model/pipeline.py. Capacity: the driver-reported bytes x USABLE_MEMORY_FRACTION.
"""

from __future__ import annotations

import functools

from reports.model.config import Parallel, Training
from reports.model.hardware import GIB
from reports.model.pipeline import chunk_layers, inflight_layer_microbatches
from reports.model.presets import Model, framework_vocab

# Usable fraction of HBM for the model state. Set from the largest runs known to have fit, not
# fitted to any speed: Llama 3 405B at 8k ran its interleaved schedule without activation
# checkpointing in 80 GB (Dubey et al. 2024, sec. 3.3.2), 76.6 GiB in this count, and NeMo's
# Llama 3.1 405B recipe at 576 GPUs (NVIDIA/dgxc-benchmarking) 75.6 GiB, of an H100's 79.65
# GiB. 0.965 leaves 2.8 GiB for the CUDA context, NCCL buffers and workspaces (assumption; runs
# this tight profile their memory and use the caching allocator's expandable segments).
USABLE_MEMORY_FRACTION = 0.965


def state_bytes_per_param(zero: int, shards: int, grad_bytes: int = 4) -> dict[str, float]:
    """Weights, gradients and Adam state per parameter held on one GPU (see the module doc):
    18 bytes replicated (fp32 gradients); ZeRO-1 6 + 12/d; ZeRO-2 2 + 16/d; ZeRO-3 18/d."""
    g = float(grad_bytes)
    if zero == 3:
        return {"weights": 2 / shards, "grads": g / shards, "optimizer": 12 / shards}
    if zero == 2:
        return {"weights": 2.0, "grads": g / shards, "optimizer": 12 / shards}
    if zero == 1:
        return {"weights": 2.0, "grads": g, "optimizer": 12 / shards}
    return {"weights": 2.0, "grads": g, "optimizer": 12.0}


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


def end_params(model: Model, pp: int, tp: int = 1) -> tuple[int, int]:
    """Parameters of the embedding and output layers held by the (first, last) pipeline stage,
    over the vocabulary padded for `tp` (padded_vocab).

    With pp > 1 the first stage holds the input embedding and the last the output layer (a copy
    of the embedding when tied: Megatron keeps one and all-reduces its gradient with the first
    stage). With pp = 1 one stage holds both: the embedding plus, untied, the output layer too.
    The one rule for memory and for the data-parallel gradient and optimizer bytes.
    """
    v = framework_vocab(model, tp)
    out = v * model.hidden
    emb = out + (model.seq_len * model.hidden if model.learned_positions else 0)
    if pp == 1:
        both = emb + (0 if model.tied_embeddings else out)
        return both, both
    return emb, out


def rank_params(model: Model, pp: int, virtual_stages: int = 1, tp: int = 1) -> list[int]:
    """All parameters (before tensor parallelism) on each pipeline rank: its chunks' layers
    (pipeline.chunk_layers: Llama 3's layout puts one layer fewer on the first and last rank)
    plus the embedding on the first and the output layer on the last. The one count for memory
    and for the data-parallel gradient, accumulation and optimizer bytes (step.step_time)."""
    first_end, last_end = end_params(model, pp, tp)
    out = [sum(c) * model.layer_params() for c in chunk_layers(model.layers, pp, virtual_stages)]
    out[0] += first_end
    if pp > 1:
        out[-1] += last_end
    return out


def memory_per_gpu(model: Model, par: Parallel, train: Training, microbatches: int) -> dict:
    """See `_memory_per_gpu`; a copy of the cached answer (the layout search asks the same
    question of many candidates, and the report of many searches)."""
    return dict(_memory_per_gpu(model, par, train, microbatches))


@functools.lru_cache(maxsize=65536)
def _memory_per_gpu(model: Model, par: Parallel, train: Training, microbatches: int) -> dict:
    """Bytes per GPU on the fullest pipeline rank: weights, gradients, optimizer state and
    activations (the schedule's in-flight micro-batches per rank, pipeline.py), the largest of
    the first, second and last rank (the first two hold the most warm-up micro-batches, the first
    the embedding, the last the output layer and logits).

    Full recomputation also rematerialises one layer at a time. The last stage holds the logits:
    bf16 plus fp32 for the loss, 6 B per logit / t (assumption). ZeRO-3 gathers one layer's full
    bf16 weights at a time plus one prefetched.
    """
    p, v, t = par.pp, par.virtual_stages, par.tp
    state = state_bytes_per_param(train.zero, par.dp * par.cp, train.grad_bytes)
    seq = model.seq_len // par.cp
    flash = train.attention == "flash"
    a_layer = activation_bytes_per_layer(model, par.micro_batch, seq, t, train.sequence_parallel,
                                         par.recompute, flash)
    a_full = activation_bytes_per_layer(model, par.micro_batch, seq, t, train.sequence_parallel,
                                        "none", flash)
    remat = a_full if par.recompute == "full" else 0.0
    logits = par.micro_batch * seq * (framework_vocab(model, t) // t) * 6
    gathered = 2 * 2 * model.layer_params() / t if train.zero == 3 else 0.0
    params_by_rank = rank_params(model, p, v, t)

    def rank(r: int) -> dict:
        params = params_by_rank[r]
        acts = inflight_layer_microbatches(model.layers, p, v, microbatches, r) * a_layer
        acts += remat + (logits if r == p - 1 else 0.0)
        return {k: params / t * bpp for k, bpp in state.items()} | {
            "activations": acts, "zero3_buffers": gathered}

    return max((rank(r) for r in sorted({0, min(1, p - 1), p - 1})),
               key=lambda d: sum(d.values()))


def capacity_bytes(memory_total_bytes: float) -> float:
    """What a GPU's model state may use: driver-reported bytes x USABLE_MEMORY_FRACTION."""
    return memory_total_bytes * USABLE_MEMORY_FRACTION


def gib(nbytes: float) -> float:
    return nbytes / GIB
