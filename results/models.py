"""The one table of transformer shapes: plain data read by the GEMM workload (bench) and the
scaling model (reports). name -> layers, hidden, heads, kv_heads, head_dim, ffn_hidden,
gated_mlp (SwiGLU: gate and up projections), vocab (the tokenizer's, unpadded: frameworks pad it,
Megatron to a multiple of 128 x tp), seq_len (pre-training context), context_len (the longest
sequence the released model takes: Llama 3's long-context stage extends 8K to 128K; else
seq_len), tied_embeddings, learned_positions, and the source of each row."""

from __future__ import annotations

_N21 = "Narayanan et al. 2021 (Megatron-LM, SC21), Table 1; vocab 51,200 and seq 2048 as stated"


def _gpt(layers: int, hidden: int, heads: int, source: str, vocab: int = 51200,
         seq: int = 2048) -> dict:
    """A GPT-style row: ffn 4h, GeLU, learned positions, tied input/output embedding."""
    return {"layers": layers, "hidden": hidden, "heads": heads, "kv_heads": heads,
            "head_dim": hidden // heads, "ffn_hidden": 4 * hidden, "gated_mlp": False,
            "vocab": vocab, "seq_len": seq, "context_len": seq, "tied_embeddings": True,
            "learned_positions": True, "source": source}


def _llama(layers: int, hidden: int, heads: int, kv_heads: int, ffn: int, source: str,
           vocab: int = 128256, seq: int = 8192, context: int = 131072) -> dict:
    """A Llama-style row: SwiGLU, rotary positions, untied output layer; pre-trained at 8K,
    then extended to a 128K context (Dubey et al. 2024, sec. 3.4.2, long-context pre-training)."""
    return {"layers": layers, "hidden": hidden, "heads": heads, "kv_heads": kv_heads,
            "head_dim": hidden // heads, "ffn_hidden": ffn, "gated_mlp": True, "vocab": vocab,
            "seq_len": seq, "context_len": context, "tied_embeddings": False,
            "learned_positions": False, "source": source}


def _nemotron(layers: int, hidden: int, heads: int, kv_heads: int, source: str) -> dict:
    """Nemotron-4: squared-ReLU MLP of 4h (not gated), rotary, untied, vocab 256,000, seq 4096."""
    return {"layers": layers, "hidden": hidden, "heads": heads, "kv_heads": kv_heads,
            "head_dim": hidden // heads, "ffn_hidden": 4 * hidden, "gated_mlp": False,
            "vocab": 256000, "seq_len": 4096, "context_len": 4096, "tied_embeddings": False,
            "learned_positions": False, "source": source}


_LLAMA3 = ("The Llama 3 Herd of Models (Dubey et al. 2024), Table 3; vocab 128,256 from the "
           "released config.json")
MODEL_SHAPES: dict[str, dict] = {
    "gpt3-175b": _gpt(96, 12288, 96, "Brown et al. 2020 (GPT-3), Table 2.1; d_ff = 4 d_model "
                      "(sec. 2.1); GPT-2 BPE vocabulary of 50,257", vocab=50257),
    "llama3-8b": _llama(32, 4096, 32, 8, 14336, _LLAMA3),
    "llama3-70b": _llama(80, 8192, 64, 8, 28672, _LLAMA3),
    "llama3-405b": _llama(126, 16384, 128, 8, 53248, _LLAMA3),
    "dense-1t": {**_gpt(128, 25600, 160, "", vocab=128256, seq=8192),
                 "tied_embeddings": False, "learned_positions": False,
                 "source": "assumption: Megatron's 1T shape (Narayanan et al. 2021, Table 1) "
                           "with Llama 3's vocabulary and context"},
    "opt-175b": _gpt(96, 12288, 96, "Zhang et al. 2022 (OPT), Table 1; vocabulary 50,272 from "
                     "the released model configuration", vocab=50272),
    "megatron-1.7b": _gpt(24, 2304, 24, _N21),
    "megatron-3.6b": _gpt(30, 3072, 32, _N21),
    "megatron-7.5b": _gpt(36, 4096, 32, _N21),
    "megatron-18.4b": _gpt(40, 6144, 48, _N21),
    "megatron-39.1b": _gpt(48, 8192, 64, _N21),
    "megatron-76.1b": _gpt(60, 10240, 80, _N21),
    "megatron-145.6b": _gpt(80, 12288, 96, _N21),
    "megatron-310.1b": _gpt(96, 16384, 128, _N21),
    "megatron-529.6b": _gpt(105, 20480, 128, _N21),
    "megatron-1t": _gpt(128, 25600, 160, _N21),
    "megatron-22b": _gpt(48, 6144, 64, "Korthikanti et al. 2022 (Reducing Activation "
                         "Recomputation), Table 3: 48 layers, hidden 6144, 64 heads; vocab 51,200 "
                         "and seq 2048 (sec. 6)"),
    "mt-nlg-530b": _gpt(105, 20480, 128, "Smith et al. 2022 (MT-NLG), sec. 3.1: 105 layers, "
                        "hidden 20480, 128 heads, seq 2048; GPT-2 BPE vocabulary", vocab=50257),
    "bloom-176b": {**_gpt(70, 14336, 112, "", vocab=250880),
                   "learned_positions": False,
                   "source": "BigScience 2022 (BLOOM, arXiv 2211.05100), Table 3: 70 layers, "
                             "hidden 14336, 112 heads, seq 2048, ALiBi; vocab 250,880 "
                             "(padded) from the released config.json"},
    "nemotron4-15b": _nemotron(32, 6144, 48, 8, "Nemotron-4 15B Technical Report (Parmar et "
                               "al. 2024), Table 1"),
    "nemotron4-340b": _nemotron(96, 18432, 96, 8, "Nemotron-4 340B Technical Report (NVIDIA "
                                "2024), Table 1"),
    "gpt3-177b-131k": _gpt(96, 12288, 96, "NVIDIA/Megatron-LM README (2024), 'Training Speed "
                           "and Scalability': the standard GPT-3 with the benchmark "
                           "configuration's 131,072 vocabulary and 4,096 sequence length",
                           vocab=131072, seq=4096),
}
