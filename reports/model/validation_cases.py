"""The published training runs the model is validated on: plain data, each with its source and
every assumption labelled. Settings a paper states are used as stated; a setting left as None is
unstated and searched over (the fastest value a framework can run that fits), and the estimate's
range spans the rest (reports/model/search.py estimate_range)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

from reports.model.config import Training

_T1 = "Narayanan et al. 2021 (Megatron-LM, SC21), Table 1"
_T2 = "Narayanan et al. 2021, Table 2 (PTD-P rows)"
_OPT = "Zhang et al. 2022 (OPT), section 2.4: up to 147 TFLOP/s per GPU on 992 A100"
_MTNLG = "Smith et al. 2022 (MT-NLG 530B), sec. 2.4: iteration time at 280/350/420 DGX A100 nodes"
_BLOOM = ("BigScience 2022 (BLOOM, arXiv 2211.05100), sec. 3.4: ~150 TFLOP/s per GPU on 384 "
          "A100 80GB; bigscience-workshop/bigscience train/tr11-176B-ml README (layout)")
_LLAMA = "Dubey et al. 2024 (The Llama 3 Herd of Models), Table 4"
_N340 = "Nemotron-4 340B Technical Report (NVIDIA 2024), Table 2: iteration time"
_MCORE = ("NVIDIA/Megatron-LM README (2024), 'Training Speed and Scalability': GPT-3 strong "
          "scaling at 1,152 sequences per step, MFU 47% on 96 H100 to 42% on 4,608")
_N15 = "Nemotron-4 15B Technical Report (Parmar et al. 2024), Table 2: iteration time"
_DGXC = "NVIDIA/dgxc-benchmarking {}, NeMo recipe, BF16: training step time"
_K22 = ("Korthikanti et al. 2022 (Reducing Activation Recomputation in Large Transformer Models), "
        "Table 5: iteration time with full recompute and with sequence parallelism + selective "
        "recompute, layouts of Table 3")
_K22_63 = ("Korthikanti et al. 2022, sec. 6.3: the 530B run on 2,240 GPUs (8-way data "
           "parallel) at 39.15 s per iteration, MFU 54.2% (the abstract's figure)")

# 2021-era Megatron-LM: unfused attention, no sequence parallelism, replicated optimizer, the
# gradient all-reduce after the backward pass, nothing overlapped. Its runs were fp16 mixed
# precision (assumption: Narayanan et al. 2021 say "mixed precision", the repository's scripts
# of the time pass --fp16), and fp16 keeps gradients and their all-reduce in fp16: only bf16
# forces fp32 (megatron/arguments.py: accumulate_allreduce_grads_in_fp32 is set for bf16 alone).
# Each micro-batch's gradient is added to the main gradient by its DDP hook
# (megatron/model/distributed.py: param.main_grad.add_(param.grad.data)).
MEGATRON_2021 = Training(attention="unfused", sequence_parallel=False, zero=0,
                         overlap_grad_reduce=False, tp_overlap=0.0, grad_bytes=2,
                         async_dgrad=False, grad_accum="add")
# OPT (metaseq): FSDP (ZeRO-3) with Megatron tensor parallelism (its 2021 fork: no async
# input-gradient all-reduce, no gradient-accumulation fusion, assumption), prefetching gathers;
# its gradients are reduce-scattered every micro-batch, so only the shard is accumulated.
OPT_2022 = Training(attention="unfused", sequence_parallel=False, zero=3,
                    overlap_grad_reduce=True, tp_overlap=0.0, grad_bytes=4, async_dgrad=False,
                    grad_accum="add")
# Megatron-LM 2022 (Korthikanti et al.): the input-gradient all-reduce behind the weight-gradient
# GEMM and the gradient accumulated inside it, both from LinearWithGradAccumulationAndAsync-
# Communication (late 2021); its baseline without sequence parallelism, otherwise as 2021.
MEGATRON_2022 = replace(MEGATRON_2021, async_dgrad=True, grad_accum="fused")
MEGATRON_2022_SP = replace(MEGATRON_2022, sequence_parallel=True)
# Megatron-DeepSpeed (MT-NLG, BLOOM): bf16 (MT-NLG: Smith et al. 2022, sec. 2, "mixed
# precision using 16-bit bfloat16"; BLOOM: BigScience 2022) through DeepSpeed's
# BF16_Optimizer: fp32 gradients, each micro-batch's cast to fp32 and added
# (hp_grad.add_(lp.grad.to(hp_grad.dtype))), optimizer state sharded over data parallelism
# (ZeRO-1). BF16_Optimizer was written for BLOOM (2022); MT-NLG trained in 2021 on a bf16 path
# that is not public: taking BLOOM's for it is an assumption. DeepSpeed's pipeline engine
# partitions the activations it sends over the tensor-parallel ranks but sends the gradients
# whole, each in its own blocking call
# (deepspeed/runtime/pipe/engine.py of 2020-21; comm.pp_seconds).
DEEPSPEED_2022 = replace(MEGATRON_2021, zero=1, pp_scatter_gather=False, grad_bytes=4,
                         grad_accum="cast_add")
# Llama 3: flash attention, sequence parallel, FSDP that keeps weights after the forward and
# shards optimizer state and gradients (ZeRO-2: reduce-scattered every micro-batch, since only
# the shard is kept), FP32 gradient reduce-scatter, overlapped, FP32 accumulation over
# micro-batches (Dubey et al. 2024, sec. 3.3.2): PyTorch autograd has no GEMM that accumulates,
# so an add kernel on the shard (assumption).
LLAMA3 = Training(attention="flash", sequence_parallel=True, zero=2, overlap_grad_reduce=True,
                  tp_overlap=0.0, grad_bytes=4, grad_accum="add")
# Megatron-Core as its README's scaling runs: all communication overlapped, as stated there
# (--overlap-grad-reduce --overlap-param-gather --tp-comm-overlap).
MCORE_README = Training(attention="flash", sequence_parallel=True, zero=1,
                        overlap_grad_reduce=True, tp_overlap=1.0, grad_bytes=4)
# NeMo's recipes on H100 (dgxc-benchmarking): Megatron-Core with --tp-comm-overlap
# (ub_tp_comm_overlap: True), distributed optimizer, overlapped grad and param sync
# (NVIDIA/NeMo-Framework-Launcher conf/training/nemotron/nemotron_15b.yaml: optim).
NEMO_RECIPE = MCORE_README
# Megatron-Core on H100 (Nemotron-4): flash, sequence parallel, distributed optimizer,
# overlapped grad reduce (assumption: --tp-comm-overlap off, unstated).
MCORE_2024 = Training(attention="flash", sequence_parallel=True, zero=1,
                      overlap_grad_reduce=True, tp_overlap=0.0, grad_bytes=4)


@dataclass(frozen=True)
class Case:
    """One published run: what it ran and what it reported.

    metric: "narayanan" (TFLOP/s per GPU counted as Narayanan et al. 2021: 96 B s l h^2 (...)
    with recompute), "model_full" / "model_causal" (TFLOP/s per GPU as 6N + full-square or
    causal attention), or "step_s" (seconds per iteration). A layout field left None is
    unstated: searched."""

    name: str
    model: str  # MODELS key
    cluster: str  # CLUSTERS key (its pool resized to `gpus`)
    gpus: int
    tp: int
    pp: int
    batch: int  # sequences per iteration
    published: float
    source: str
    metric: str = "narayanan"
    micro_batch: int | None = 1
    training: Training = MEGATRON_2021
    cp: int = 1
    virtual_stages: int | None = 1
    recompute: str | None = "full"
    seq_len: int | None = None  # None: the model's
    vocab: int | None = None  # the tokenizer the run used (None: the model's)
    kv_heads: int | None = None  # the run's query groups where they differ (None: the model's)
    flop_vocab: int | None = None  # the V a paper's FLOP count uses (None: padded vocab)
    ran_in_memory: bool = True  # the run really ran: the model must fit it
    # micro_batch None (unstated): the framework recipe's value is the point prediction, the
    # range spans the others (None: the fastest)
    recipe_micro_batch: int | None = None
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def published_tflops(self) -> float:
        return self.published

    @property
    def unit(self) -> str:
        return "s/step" if self.metric == "step_s" else "TFLOP/s/GPU"


# Narayanan et al. 2021, sec. 5.1: "we use the interleaved pipeline schedule with the
# scatter/gather optimization enabled"; the degree is not given, so it is searched.
_SOFTWARE_21 = ("2021 software: unfused attention, no sequence parallelism, fp16 gradients "
                "added per micro-batch and all-reduced after the backward (its --fp16 default), "
                "replicated optimizer (assumption)")
_UNSTATED_21 = {
    _T1: ("interleaved schedule with scatter/gather (sec. 5.1), degree unstated: searched; "
          "micro-batch unstated: searched", _SOFTWARE_21),
    _T2: ("micro-batch 1 (Table 2); interleaved with scatter/gather as sec. 5.1's runs "
          "(assumption), degree searched", _SOFTWARE_21),
}


def _n21(name, model, gpus, tp, pp, batch, tflops, src=_T1) -> Case:
    return Case(name, model, "selene-a100", gpus, tp, pp, batch, tflops, src,
                micro_batch=None if src == _T1 else 1, virtual_stages=None,
                assumptions=_UNSTATED_21[src])


class _K22Row(NamedTuple):
    """One model of Korthikanti et al. 2022: Table 3's layout (tp 8, no data parallelism) and
    Table 5's seconds per iteration with full recompute and with the present work."""

    size: str
    model: str
    gpus: int
    pp: int
    batch: int
    micro_batch: int
    virtual_stages: int | None  # None: unstated, searched
    full_s: float
    present_s: float


# sec. 6: "the interleaving schedule with three interleaving stages for the 175B and 530B
# models". The 1T (pp 64) has two layers per stage, so it cannot take three: its degree is
# unstated and searched, as every unstated setting is. Table 5 agrees: the 1T's MFU (56.3%)
# tops the 530B's (56.0%), which its 12% bubble without interleaving would not allow.
_K22_ROWS = (_K22Row("22B", "megatron-22b", 8, 1, 4, 4, 1, 1.42, 1.10),
             _K22Row("175B", "gpt3-175b", 64, 8, 64, 1, 3, 18.13, 13.75),
             _K22Row("530B", "megatron-529.6b", 280, 35, 280, 1, 3, 49.05, 37.83),
             _K22Row("1T", "megatron-1t", 512, 64, 512, 1, None, 94.42, 71.49))
_K22_SOFTWARE = ("unfused attention, fp16 gradients all-reduced after the backward (assumption: "
                 "Megatron-LM's --fp16 default)",
                 "the paper's 2022 Megatron-LM: input-gradient all-reduce behind the "
                 "weight-gradient GEMM and gradient-accumulation fusion (LinearWithGradAccumulation"
                 "AndAsyncCommunication; assumption: both on)")
_K22_A = ("layout, batch and micro-batch as Table 3 states, interleaving (v 3) for 175B and "
          "530B as sec. 6 states; the 1T's degree unstated (two layers per stage cannot take "
          "3): searched; not interleaved, its rows would read -11.3 / -10.8%; vocabulary "
          "51,200, seq 2048", *_K22_SOFTWARE)
_K22_63_A = ("batch 8 x 280 = 2,240 sequences and 8-way data parallelism (sec. 6.3: the batch "
             "multiplied by the data-parallel size; 39.15 s gives its MFU of 54.2%); Table 3's "
             "530B layout otherwise, interleaved (v 3) as sec. 6", *_K22_SOFTWARE)


_LLAMA_A = ("interleaving degree unstated: searched", "tensor-parallel overlap off (unstated)",
            "gradients sharded as sec. 3.3.2 says, so FP32-reduce-scattered every micro-batch "
            "(assumption: ZeRO-2; the text also fits accumulating whole FP32 gradients and "
            "reducing once, as PyTorch's pipelining does with FSDP: then the 8k rows read "
            "+6.0 / +6.9% but need 88.3 / 81.6 GiB per GPU, and the 131k row fits only with "
            "full recompute, -22.3%)",
            "fabric: 400 Gb/s RoCE per GPU at Spectrum-X's 95% efficiency (assumption; the "
            "per-micro-batch reduce-scatter keeps the NIC busy ~70% of the step at 8k: at 80% "
            "fabric efficiency the rows read -9.9 / -8.9 / -4.3%; the SMs its overlap takes, "
            "20 of 132 (assumption, as every overlap), cost 1.4 s of the 8k step: free, the "
            "rows would read +9.9 / +10.8 / +5.0%)",
            "FLOPs counted as 6N + causal attention (assumption: the paper cites Chowdhery et "
            "al. 2023 for MFU, whose formula counts the full square; counted so, the three "
            "rows would read +1.1 / +2.5 / +36.3%)")
_NEMO_A = ("interleaving degree and recompute unstated: searched",
           "fabric: 8x 400 Gb/s NDR InfiniBand per DGX H100 at 94% (assumption)",
           "Megatron-Core defaults: distributed optimizer, overlapped grad reduce, TP overlap off")

_DGXC_A = ("layout, micro-batch and batch as the README states; no recompute (none configured)",
           "NeMo's recipe settings: tp-comm-overlap, distributed optimizer, overlapped grad and "
           "param sync, fp32 gradients (assumption: its defaults)",
           "fabric: 8x 400 Gb/s NDR InfiniBand per DGX H100 at 94% (assumption)")

CASES: tuple[Case, ...] = (
    _n21("Megatron 1.7B", "megatron-1.7b", 32, 1, 1, 512, 137.0),
    _n21("Megatron 3.6B", "megatron-3.6b", 64, 2, 1, 512, 138.0),
    _n21("Megatron 7.5B", "megatron-7.5b", 128, 4, 1, 512, 142.0),
    _n21("Megatron 18.4B", "megatron-18.4b", 256, 8, 1, 1024, 135.0),
    _n21("Megatron 39.1B", "megatron-39.1b", 512, 8, 2, 1536, 138.0),
    _n21("Megatron 76.1B", "megatron-76.1b", 1024, 8, 4, 1792, 140.0),
    _n21("Megatron 145.6B", "megatron-145.6b", 1536, 8, 8, 2304, 148.0),
    _n21("Megatron 310.1B", "megatron-310.1b", 1920, 8, 16, 2160, 155.0),
    _n21("Megatron 529.6B", "megatron-529.6b", 2520, 8, 35, 2520, 163.0),
    _n21("Megatron 1T", "megatron-1t", 3072, 8, 64, 3072, 163.0),
    _n21("GPT-3 175B, 384 GPUs", "gpt3-175b", 384, 8, 12, 1536, 153.0, _T2),
    _n21("GPT-3 175B, 768 GPUs", "gpt3-175b", 768, 8, 12, 1536, 149.0, _T2),
    _n21("GPT-3 175B, 1536 GPUs", "gpt3-175b", 1536, 8, 12, 1536, 141.0, _T2),
    _n21("Megatron 529.6B, 560 GPUs", "megatron-529.6b", 560, 8, 35, 2240, 171.0, _T2),
    _n21("Megatron 529.6B, 1120 GPUs", "megatron-529.6b", 1120, 8, 35, 2240, 167.0, _T2),
    _n21("Megatron 529.6B, 2240 GPUs", "megatron-529.6b", 2240, 8, 35, 2240, 159.0, _T2),
    Case("OPT-175B", "opt-175b", "meta-opt-a100", 992, 8, 1, 992 * 8, 147.0, _OPT,
         micro_batch=8, training=OPT_2022,
         assumptions=("micro-batch 8 per GPU so 992 x 8 x 2048 = 2.03M matches the stated 2M "
                      "batch", "FLOPs counted as Narayanan's (assumption)",
                      "metaseq (assumption): FSDP full shard (ZeRO-3) with prefetched gathers, "
                      "fp32 gradients reduce-scattered every micro-batch and added on the "
                      "shard, Megatron tensor parallelism of 2021 (no async input-gradient "
                      "reduction), unfused attention")),
    *[Case(f"MT-NLG 530B, {n} GPUs", "mt-nlg-530b", "selene-a100", n, 8, 35, 1920, t, _MTNLG,
           metric="step_s", training=DEEPSPEED_2022, flop_vocab=51200, micro_batch=None,
           assumptions=("micro-batch unstated: searched (the range spans it); no interleaving "
                        "(DeepSpeed's pipeline engine has none)",
                        "Megatron-DeepSpeed, bf16 (sec. 2); assumption: DeepSpeed's bf16 path "
                        "of 2021 is not public, so BLOOM's BF16_Optimizer of 2022 stands for it "
                        "(fp32 gradients cast and added per micro-batch, ZeRO-1); unfused "
                        "attention, the all-reduce after the backward; DeepSpeed's pipeline "
                        "engine of 2021: partitioned activations, whole gradients"))
      for n, t in ((2240, 60.1), (2800, 50.2), (3360, 44.4))],
    Case("BLOOM 176B", "bloom-176b", "jean-zay-a100", 384, 4, 12, 2048, 150.0, _BLOOM,
         micro_batch=2, training=DEEPSPEED_2022,
         assumptions=("fabric: 4x 100 Gb/s Omni-Path per 8-GPU node as stated (BLOOM sec. "
                      "3.4.1) at 94% (assumption)",
                      "Megatron-DeepSpeed: BF16_Optimizer (fp32 gradients cast and added per "
                      "micro-batch), ZeRO-1, the all-reduce after the backward, pipeline sends "
                      "as the engine of 2021 (whole gradients; assumption: later engines "
                      "partition them too)",
                      "no dropout counted (BLOOM trained without)")),
    Case("Llama 3 405B, 8,192 GPUs", "llama3-405b", "meta-h100-roce", 8192, 8, 16,
         2048, 430.0, _LLAMA, metric="model_causal", training=LLAMA3, virtual_stages=None,
         recompute="none", assumptions=_LLAMA_A),
    Case("Llama 3 405B, 16,384 GPUs", "llama3-405b", "meta-h100-roce", 16384, 8,
         16, 2048, 400.0, _LLAMA, metric="model_causal", training=LLAMA3, virtual_stages=None,
         recompute="none", assumptions=_LLAMA_A),
    Case("Llama 3 405B, 16,384 GPUs, 131k context", "llama3-405b",
         "meta-h100-roce", 16384, 8, 16, 128, 380.0, _LLAMA, metric="model_causal",
         training=LLAMA3, cp=16, virtual_stages=None, recompute=None, seq_len=131072,
         assumptions=(*_LLAMA_A, "recompute unstated: searched")),
    *[Case(f"Nemotron-4 340B, {n} GPUs", "nemotron4-340b", "eos-h100",
           n, 8, 12, b, t, _N340, metric="step_s", training=MCORE_2024, virtual_stages=None,
           recompute=None, assumptions=_NEMO_A)
      for n, b, t in ((1536, 768, 10.3), (3072, 1536, 10.3), (6144, 2304, 8.0))],
    *[Case(f"Megatron-Core GPT-3 177B, {n} GPUs", "gpt3-177b-131k", "eos-h100", n, 8, 12,
           1152, round(mfu * 989.4, 1), _MCORE, metric="model_full", training=MCORE_README,
           micro_batch=None, virtual_stages=None, recompute=None, recipe_micro_batch=1,
           assumptions=("tp 8 x pp 12 (assumption: the README's text gives no layout; the series "
                        "starts at 96 GPUs, one replica of Megatron's GPT-3 layout, tp 8 x pp 12, "
                        "Narayanan et al. 2021 Table 2); interleaving and recompute unstated: "
                        "searched",
                        "micro-batch unstated: 1, the repository's GPT-3 175B recipe "
                        "(examples/gpt3/train_gpt3_175b_distributed.sh, --micro-batch-size 1); "
                        "the range spans 2, 4 and 8",
                        "seq 4096 and vocabulary 131,072: the README's benchmark configuration",
                        "published MFU x the 989.4 TFLOP/s dense bf16 peak; counted as "
                        "Megatron-LM does: 6N + full-square attention (assumption)",
                        "fabric: 400 Gb/s NDR InfiniBand per GPU at 94% (assumption)"))
      for n, mfu in ((96, 0.47), (4608, 0.42))],
    *[Case(f"Nemotron-4 15B, {n} GPUs", "nemotron4-15b", "eos-h100",
           n, 8, 1, b, t, _N15, metric="step_s", training=MCORE_2024, micro_batch=None,
           recompute=None, recipe_micro_batch=2,
           assumptions=(*_NEMO_A, "micro-batch unstated: 2, NeMo's recipe for this model "
                        "(NVIDIA/NeMo-Framework-Launcher conf/training/nemotron/nemotron_15b.yaml,"
                        " micro_batch_size: 2); the range spans 1 and 4"))
      for n, b, t in ((768, 384, 0.57), (1536, 768, 0.58), (2304, 1152, 0.64))],
    # Korthikanti et al. 2022, Table 5 on Table 3's layouts (one replica each: tp x pp GPUs, no
    # data parallelism), both settings on the paper's Megatron-LM
    *[Case(f"Megatron {size}, {what} (Korthikanti et al.)", model, "selene-a100", gpus, 8, pp,
           batch, t, _K22, metric="step_s", training=train, recompute=rc, micro_batch=mb,
           virtual_stages=v, vocab=51200, assumptions=_K22_A)
      for size, model, gpus, pp, batch, mb, v, full, present in _K22_ROWS
      for what, t, train, rc in (("full recompute", full, MEGATRON_2022, "full"),
                                 ("SP + selective recompute", present, MEGATRON_2022_SP,
                                  "selective"))],
    # sec. 6.3: the 530B run scaled to 8-way data parallelism, batch x 8
    Case("Megatron 530B, SP + selective recompute, 2240 GPUs (Korthikanti et al.)",
         "megatron-529.6b", "selene-a100", 2240, 8, 35, 2240, 39.15, _K22_63, metric="step_s",
         training=MEGATRON_2022_SP, recompute="selective", virtual_stages=3,
         assumptions=_K22_63_A),
    *[Case(f"NeMo Nemotron-4 15B, {n} GPUs", "nemotron4-15b", "dgx-cloud-h100", n, 4, 1, 4 * n,
           t, _DGXC.format("nemotron/README_15b.md (commit 0b71cfd)"), metric="step_s",
           training=NEMO_RECIPE, micro_batch=4, recompute="none", assumptions=_DGXC_A)
      for n, t in ((16, 2.812), (128, 2.859), (2048, 2.887))],
    *[Case(f"NeMo Llama 3.1 8B, {n} GPUs", "llama3-8b", "dgx-cloud-h100", n, 1, 1, 16 * n, t,
           _DGXC.format("llama3.1/README_8b.md (commit e6afea3), NeMo 24.09"),
           metric="step_s", training=NEMO_RECIPE, cp=2, virtual_stages=1, recompute="none",
           assumptions=_DGXC_A)
      for n, t in ((8, 12.91), (32, 13.05), (128, 13.10))],
    *[Case(f"NeMo Llama 3.1 70B, {n} GPUs", "llama3-70b", "dgx-cloud-h100", n, 4, 4, 2 * n, t,
           _DGXC.format("llama3.1/README_70b.md (commit 143b90d), NeMo 24.09"),
           metric="step_s", training=NEMO_RECIPE, cp=2, virtual_stages=5, recompute="none",
           assumptions=_DGXC_A)
      for n, t in ((64, 14.72), (256, 14.80), (2048, 14.98))],
    *[Case(f"NeMo Llama 3.1 405B, {n} GPUs", "llama3-405b", "dgx-cloud-h100", n, 8, 9, b, t,
           _DGXC.format("llama3.1/README_405b.md (commit 143b90d), NeMo 24.09"),
           metric="step_s", training=NEMO_RECIPE, cp=2, virtual_stages=7, recompute="none",
           vocab=50257, kv_heads=16,
           assumptions=(*_DGXC_A, "vocabulary 50,257: the recipe's GPT-2 tokenizer (stated as "
                        "its proxy)", "16 query groups, as NeMo's llama3_1_405b.yaml "
                        "(num_query_groups: 16) and the README's FLOP count (16/128)"))
      for n, b, t in ((576, 252, 17.20), (1152, 504, 17.52), (2304, 1008, 17.62))],
    # 128 GPUs (4.61 s) left out: data-parallel 2 needs 90 GiB per GPU in the model's count
    # with fp32 gradients, which cannot have run in 80 GB; the README leaves the precision out
    *[Case(f"NeMo Nemotron-4 340B, {n} GPUs", "nemotron4-340b", "dgx-cloud-h100", n, 8, 8,
           n // 4, t, _DGXC.format("nemotron/README_340b.md (commit 143b90d), NeMo 24.11"),
           metric="step_s", training=NEMO_RECIPE, virtual_stages=12, recompute="none",
           assumptions=_DGXC_A)
      for n, t in ((512, 4.70), (2048, 4.84))],
)

# The cases each architecture's constant is fitted on (fallbacks.FRAMEWORK_EFFICIENCY); the
# rest are held out. A100: the Megatron-LM 2021 tables and OPT. Hopper: NeMo's published H100
# recipes, the runs with every setting stated (the papers' H100 runs are held out).
CALIBRATION_BY_ARCH: dict[str, tuple[Case, ...]] = {
    "ampere": tuple(c for c in CASES if c.source in (_T1, _T2, _OPT)),
    "hopper": tuple(c for c in CASES if c.source.startswith("NVIDIA/dgxc-benchmarking")),
}
CALIBRATION: tuple[Case, ...] = tuple(c for cs in CALIBRATION_BY_ARCH.values() for c in cs)
