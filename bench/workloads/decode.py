"""decode_attention: the serving decode step, a few query tokens against a long KV cache.

1-16 query tokens (one decode step, or a speculative-decoding draft) attend to a KV cache of 1k
to 32k tokens, with grouped-query heads (Llama 3), batch 1 to 256. Backends as in the attention
workload: ours (kernels.attention.attention with seq_q < seq_k; its causal mask is bottom-right
aligned, so the last query token sees the whole cache) and torch SDPA pinned to one
implementation (bench/workloads/sdpa.py passes the same bottom-right mask). Checked against the
fp32 reference before any timing, with the attention workload's tolerance rule.

Our backend is the attention (prefill) kernel as it is, not a decode kernel: one query row
runs in a 64-128-row tile and the GQA query heads of a KV head are not packed (64-128x redundant
MMA work, up to 8x the KV reads); its rows are no figure of a decode kernel of ours
(docs/KERNELS.md, `notes`).

Decode is memory-bound: every call reads the whole KV cache once. GB/s counts K and V at kv_h
heads plus Q and O (the compulsory traffic; an SDPA path that expands kv heads to q's reads
more, and its GB/s is still counted on the compulsory bytes, so rows compare the same work).
TFLOP/s counts the two matmuls over the (query, key) pairs the mask lets through.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.device import DeviceInfo
from bench.workloads.attention import (
    BASELINE_ORDER,
    DTYPES,
    FLOOR,
    MEMO,
    SEED,
    TOL_FACTOR,
    Inputs,
    _reference,
    memo,
    memo_case,
    runnable_backends,
    triton_available,
)
from bench.workloads.attention_cases import BACKENDS, LLAMA3
from bench.workloads.base import Case, Check, Unsupported, Workload, max_rel_error, register
from bench.workloads.sdpa import (
    SDPA_BACKENDS,
    causal_args,
    math_fits,
    repeat_kv,
    sdpa_attention,
    sdpa_gqa_mode,
)

PARAM_KEYS = ("b", "h", "kv_h", "s_q", "s", "d", "causal")
HEAD_DIM = 128  # Llama 3 (attention_cases.LLAMA3's source)
# KV tokens (batch x cache length) at most, so the cache and the fp32 reference fit: 2**21
# tokens x 8 kv heads x 128 x 2 bytes x 2 (K and V) = 8 GiB of bf16 cache.
MAX_KV_TOKENS = 2**21


def visible_pairs(s_q: int, s: int, causal: bool) -> int:
    """(query, key) pairs the mask lets through: all s_q*s, or bottom-right causal, where query
    i (of s_q) sees s - s_q + 1 + i keys: s_q*s - s_q*(s_q-1)/2."""
    return s_q * s - (s_q * (s_q - 1) // 2 if causal else 0)


def decode_flops(b: int, h: int, s_q: int, s: int, d: int, causal: bool) -> float:
    """QK^T and PV, 2*d FLOPs each per visible (query, key) pair and head (FlashAttention's
    convention, as attention_flops)."""
    return 4.0 * b * h * d * visible_pairs(s_q, s, causal)


def decode_bytes(b: int, h: int, kv_h: int, s_q: int, s: int, d: int, elem_bytes: int) -> float:
    """Compulsory HBM bytes: the KV cache read once (K and V, kv_h heads), q read, o written."""
    return float((2 * b * kv_h * s * d + 2 * b * h * s_q * d) * elem_bytes)


def _case(b: int, model: str, s_q: int, s: int, dtype: str = "bf16", causal: bool = True,
          heads: tuple[int, int] | None = None, d: int = HEAD_DIM) -> Case:
    h, kv_h = heads or LLAMA3[model]
    params = {"b": b, "h": h, "kv_h": kv_h, "s_q": s_q, "s": s, "d": d, "causal": causal}
    return Case("decode_attention", dtype, params, BACKENDS)


def _grid(models, batches, s_qs, seqs) -> list[Case]:
    return [_case(b, m, s_q, s) for m in models for s_q in s_qs for b in batches for s in seqs
            if b * s <= MAX_KV_TOKENS]


def gpu_cases(suite: str) -> list[Case]:
    if suite == "campaign":  # one serving shape: Llama 3 70B heads, 64 sequences of 8k
        return [_case(64, "llama3-70b", 1, 8192)]
    standard = (_grid(("llama3-8b", "llama3-70b"), (1, 16, 64, 256), (1,), (1024, 8192, 32768))
                + _grid(("llama3-70b",), (16,), (4, 16), (8192,)))
    if suite == "standard":
        return standard
    if suite == "full":
        more = _grid(tuple(LLAMA3), (1, 4, 16, 64, 128, 256), (1, 2, 4, 8, 16),
                     (1024, 4096, 16384, 32768))
        seen = {c.key for c in standard}
        return standard + [c for c in more if c.key not in seen]
    return []


CPU_HEADS = (4, 2)  # GQA, small: the interpreter runs one program at a time


def cpu_cases(suite: str) -> list[Case]:
    quick = [_case(2, "", 1, 67, heads=CPU_HEADS, d=64)]
    if suite in ("quick", "campaign"):
        return quick
    if suite in ("standard", "full"):
        return quick + [_case(1, "", 3, 40, heads=CPU_HEADS, d=64),
                        _case(1, "", 5, 33, causal=False, heads=CPU_HEADS, d=64)]
    return []


def _params(case: Case) -> dict[str, Any]:
    p = case.params
    missing = [k for k in PARAM_KEYS if k not in p]
    if missing:
        raise ValueError(f"decode_attention case is missing params {missing}; needs {PARAM_KEYS}")
    for k in ("b", "h", "kv_h", "s_q", "s", "d"):
        if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < 1:
            raise ValueError(f"decode_attention param {k}={p[k]!r} must be a positive int")
    if p["h"] % p["kv_h"] or p["s_q"] > p["s"] or case.dtype not in DTYPES:
        raise ValueError(f"decode_attention needs kv_h | h, s_q <= s and a dtype of "
                         f"{tuple(DTYPES)}: got {p} {case.dtype}")
    return p


@register
class DecodeAttention(Workload):
    name = "decode_attention"
    bound = "memory"  # every call reads the whole KV cache once (module docstring)
    # what the triton rows are not (docs/KERNELS.md): the table prints it under them
    notes = {"triton": "the prefill kernel, not a decode kernel: the one query row runs in a "
                       "64-128-row tile (64-128x redundant MMA work) and GQA query heads are "
                       "not packed (up to 8x the KV reads)"}

    def cases(self, suite: str, device: DeviceInfo) -> list[Case]:
        return gpu_cases(suite) if device.kind == "cuda" else cpu_cases(suite)

    def backends(self, case: Case, device: DeviceInfo) -> list[str]:
        p = _params(case)
        return runnable_backends(case.backends, device, DTYPES[case.dtype], p["d"], p["causal"],
                                 p["h"] // p["kv_h"], False,
                                 math_fits(p["b"], p["h"], p["s_q"], p["s"], "decode", device),
                                 s_q=p["s_q"])

    def setup(self, case: Case, device: DeviceInfo) -> Inputs:
        p = _params(case)
        dtype, dev = DTYPES[case.dtype], device.torch_device
        gen = torch.Generator(device=dev).manual_seed(SEED)

        def randn(heads, seq):
            return torch.randn(p["b"], heads, seq, p["d"], generator=gen, device=dev, dtype=dtype)

        q, k, v = randn(p["h"], p["s_q"]), randn(p["kv_h"], p["s"]), randn(p["kv_h"], p["s"])
        x = Inputs(q, k, v, None, p["d"] ** -0.5, device, case.key)
        MEMO.begin(memo_case(x))  # another case: the previous one's reference goes
        return x

    def prepare(self, case: Case, backend: str, x: Inputs):
        p = _params(case)
        causal, scale = p["causal"], x.scale
        if backend == "triton":
            if not triton_available(x.device):
                raise Unsupported("triton is not available on this device")
            from kernels.attention import attention  # lazy: triton loads only when asked

            return lambda: attention(x.q, x.k, x.v, causal=causal, sm_scale=scale)
        if backend not in SDPA_BACKENDS:
            raise ValueError(f"unknown decode backend {backend!r}; choose from {BACKENDS}")
        mode = sdpa_gqa_mode(backend, x.device.torch_device, x.q.dtype, p["d"], causal,
                             p["h"] // p["kv_h"], False, s_q=p["s_q"])
        if mode is None:
            raise Unsupported(f"{backend} cannot run s_q={p['s_q']} d={p['d']} causal={causal} "
                              f"kv_h={p['kv_h']}/h={p['h']} here")
        is_causal, mask = causal_args(causal, p["s_q"], p["s"], x.q.device)  # outside the timing
        k, v = repeat_kv(x.q, x.k, x.v) if mode == "repeat" else (x.k, x.v)
        return lambda: sdpa_attention(backend, x.q, k, v, causal=is_causal, scale=scale,
                                      gqa=mode, mask=mask)

    def check(self, case: Case, backend: str, x: Inputs, out) -> Check:
        p = _params(case)
        (ref,) = _reference({"causal": p["causal"], "direction": "fwd"}, x)
        err = max_rel_error(out, ref)
        tol = max(TOL_FACTOR * self._baseline_error(case, x, ref), FLOOR[case.dtype])
        return Check(err <= tol, err, tol)

    def _baseline_error(self, case: Case, x: Inputs, ref) -> float:
        """The same-precision torch path's error (BASELINE_ORDER); 0 (floor only) if none.
        Computed once per case (the attention workload's MEMO), like the reference."""

        def compute():
            runnable = self.backends(case, x.device)
            backend = next((b for b in BASELINE_ORDER if b in runnable), None)
            return 0.0 if backend is None else max_rel_error(self.prepare(case, backend, x)(), ref)

        return memo(x, f"baseline {case.key}", compute)

    def flops(self, case: Case) -> float:
        p = _params(case)
        return decode_flops(p["b"], p["h"], p["s_q"], p["s"], p["d"], p["causal"])

    def bytes_moved(self, case: Case) -> float:
        p = _params(case)
        return decode_bytes(p["b"], p["h"], p["kv_h"], p["s_q"], p["s"], p["d"],
                            DTYPES[case.dtype].itemsize)

    def shape(self, case: Case) -> str:
        p = case.params
        return (f"b{p['b']} h{p['h']}/{p['kv_h']} q{p['s_q']} kv{p['s']} d{p['d']}"
                + (" causal" if p["causal"] else ""))
