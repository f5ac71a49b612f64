"""attention: flash attention forward and backward, our Triton kernel against torch SDPA.

Cases follow the FlashAttention-2/3 benchmark grid (hidden 2048, batch x seq = 16k tokens, head
dim 64/128/256, causal and not) plus Llama 3's grouped-query shapes. Backends: `triton`
(kernels/attention.py) and torch's scaled_dot_product_attention pinned to one implementation
(`sdpa-flash`, `sdpa-cudnn`, `sdpa-efficient`, `sdpa-math`).

FLOP convention (FlashAttention papers, Triton tutorial 06): forward 4*b*h*s_q*s_k*d (two
matmuls), halved for causal; backward 2.5x forward (five matmuls, one recomputing S);
forward+backward 3.5x forward. Bytes: the compulsory HBM traffic of q, k, v, o (and dO, dq, dk,
dv for the backward), for the roofline; the softmax statistics (4 bytes a row) are left out.

Direction `bwd` times only the backward: the forward runs once in `prepare`, and the callable
computes torch.autograd.grad(o, (q, k, v), dO, retain_graph=True), which returns fresh
gradients rather than accumulating into .grad, so memory stays flat across calls.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

import torch

from bench.device import DeviceInfo
from bench.workloads.attention_cases import (  # noqa: F401  (re-exported: the suites' grids)
    BACKENDS,
    DIRECTIONS,
    LLAMA3,
    cpu_cases,
    gpu_cases,
)
from bench.workloads.base import (
    Case,
    CaseMemo,
    Check,
    Unsupported,
    Workload,
    max_rel_error,
    register,
)
from bench.workloads.sdpa import SDPA_BACKENDS, math_fits, repeat_kv, sdpa_attention, sdpa_gqa_mode

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PARAM_KEYS = ("b", "h", "kv_h", "s", "d", "causal", "direction")
# Correctness: our normwise error may be at most TOL_FACTOR x that of torch's same-precision
# path, and never needs to beat FLOOR (assumption: two machine epsilons of the input dtype for
# bf16/fp16, which covers rounding P and O once each; fp32 1e-5 covers reduction-order
# differences over 16k-long rows).
TOL_FACTOR = 2.0
FLOOR = {"bf16": 2 * 2.0**-7, "fp16": 2 * 2.0**-10, "fp32": 1e-5}
# Torch path used to calibrate the tolerance, in order of preference: the fused kernels keep P
# in the input precision as we do; sdpa-math upcasts bf16/fp16 to fp32 internally (torch >= 2.5).
BASELINE_ORDER = ("sdpa-flash", "sdpa-cudnn", "sdpa-efficient", "sdpa-math")
SEED = 0


# ----------------------------------------------------------------------------------------------
# Formulas
# ----------------------------------------------------------------------------------------------

def attention_flops(b: int, h: int, s: int, d: int, causal: bool, direction: str) -> float:
    """FLOPs of one call: forward 4*b*h*s^2*d (QK^T and PV, 2*s*s*d each per head), halved for
    causal (FlashAttention convention, ignoring the diagonal); bwd 2.5x (dV, dP, dQ, dK plus the
    recomputed S: 5 matmuls against 2); fwd_bwd 3.5x."""
    fwd = 4.0 * b * h * s * s * d / (2 if causal else 1)
    return fwd * {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}[direction]


def attention_bytes(b: int, h: int, kv_h: int, s: int, d: int, elem_bytes: int,
                    direction: str) -> float:
    """Compulsory HBM bytes: forward reads q, k, v and writes o; backward reads q, k, v, o, dO
    and writes dq, dk, dv (k, v and their grads have kv_h heads)."""
    q_like = b * h * s * d * elem_bytes  # q, o, dO, dq
    kv_like = b * kv_h * s * d * elem_bytes  # k, v, dk, dv
    fwd = 2 * q_like + 2 * kv_like
    bwd = 4 * q_like + 4 * kv_like
    return float({"fwd": fwd, "bwd": bwd, "fwd_bwd": fwd + bwd}[direction])


def roofline_s(flops: float, nbytes: float, tflops: float, tbps: float) -> tuple[float, float]:
    """(compute-bound time at peak FLOP/s, memory-bound time at HBM bandwidth), in seconds."""
    return flops / (tflops * 1e12), nbytes / (tbps * 1e12)



def _math_fits(p: dict, device: DeviceInfo) -> bool:
    """Whether sdpa-math's materialised score matrices fit (bench.workloads.sdpa.math_fits)."""
    return math_fits(p["b"], p["h"], p["s"], p["s"], p["direction"], device)


def triton_available(device: DeviceInfo) -> bool:
    if importlib.util.find_spec("triton") is None:
        return False
    return device.kind == "cpu" or (device.kind == "cuda" and torch.cuda.is_available())


def runnable_backends(backends, device: DeviceInfo, dtype: torch.dtype, d: int, causal: bool,
                      group: int, grad: bool, math_fits_here: bool,
                      s_q: int | None = None) -> list[str]:
    """The backends of `backends` that can run this attention case here: ours where Triton
    runs; on the CPU only sdpa-math (the fused SDPA kernels we compare with are GPU ones); on
    a GPU each SDPA backend its trial run accepts (sdpa_gqa_mode), sdpa-math only where its
    score matrices fit."""
    out = []
    for backend in backends:
        if backend == "triton":
            ok = triton_available(device)
        elif device.kind != "cuda":
            ok = backend == "sdpa-math"
        elif not torch.cuda.is_available():
            ok = False
        else:
            ok = sdpa_gqa_mode(backend, device.torch_device, dtype, d, causal, group, grad,
                               s_q=s_q) is not None
            ok = ok and (backend != "sdpa-math" or math_fits_here)
        if ok:
            out.append(backend)
    return out


def _params(case: Case) -> dict[str, Any]:
    """The case's params, checked: clear errors for anything a hand-made case gets wrong."""
    p = case.params
    missing = [k for k in PARAM_KEYS if k not in p]
    if missing:
        raise ValueError(f"attention case is missing params {missing}; needs {PARAM_KEYS}")
    for k in ("b", "h", "kv_h", "s", "d"):
        if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] < 1:
            raise ValueError(f"attention param {k}={p[k]!r} must be a positive int")
    if p["h"] % p["kv_h"]:
        raise ValueError(f"kv_h={p['kv_h']} must divide h={p['h']}")
    if not isinstance(p["causal"], bool):
        raise ValueError(f"attention param causal={p['causal']!r} must be a bool")
    if p["direction"] not in DIRECTIONS:
        raise ValueError(f"direction {p['direction']!r} is not one of {DIRECTIONS}")
    if case.dtype not in DTYPES:
        raise ValueError(f"dtype {case.dtype!r} is not one of {tuple(DTYPES)}")
    return p


# ----------------------------------------------------------------------------------------------
# The workload
# ----------------------------------------------------------------------------------------------

@dataclass
class Inputs:
    """Fresh random q, k, v (leaves requiring grad for bwd directions) and dO."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    do: torch.Tensor | None
    scale: float
    device: DeviceInfo
    case: str = ""  # the key of the case `setup` made them for ("" for hand-made inputs)


# The fp32 reference and the baseline's errors of the case being run, shared by its backends.
MEMO = CaseMemo()


def memo_case(inputs: Inputs) -> tuple:
    return (inputs.case, str(inputs.device.torch_device))


def fingerprint(inputs: Inputs) -> tuple:
    """A few values of each input: equal for the identically seeded inputs of one case."""
    xs = (inputs.q, inputs.k, inputs.v) + ((inputs.do,) if inputs.do is not None else ())
    return tuple(tuple(x.detach().reshape(-1)[:8].float().tolist()) + tuple(x.shape)
                 for x in xs)


def memo(inputs: Inputs, name: str, compute):
    """`compute()` once per case and inputs (MEMO)."""
    return MEMO.get(memo_case(inputs), (name, inputs.scale, fingerprint(inputs)), compute)


def _forward_fn(backend: str, p: dict, inputs: Inputs):
    """(f(q, k, v) -> o, gqa mode) for a backend; raises Unsupported if it cannot run here."""
    causal, scale = p["causal"], inputs.scale
    if backend == "triton":
        if not triton_available(inputs.device):
            raise Unsupported("triton is not available on this device")
        from kernels.attention import attention

        return (lambda q, k, v: attention(q, k, v, causal=causal, sm_scale=scale)), "native"
    if backend not in SDPA_BACKENDS:
        raise ValueError(f"unknown attention backend {backend!r}; choose from {BACKENDS}")
    mode = sdpa_gqa_mode(backend, inputs.device.torch_device, inputs.q.dtype, p["d"], causal,
                         p["h"] // p["kv_h"], p["direction"] != "fwd")
    if mode is None:
        raise Unsupported(f"{backend} cannot run d={p['d']} {inputs.q.dtype} causal={causal} "
                          f"kv_h={p['kv_h']}/h={p['h']} here")
    return (lambda q, k, v: sdpa_attention(backend, q, k, v, causal=causal, scale=scale,
                                           gqa=mode)), mode


def _callable(direction: str, forward, mode: str, inputs: Inputs):
    q, k, v, do = inputs.q, inputs.k, inputs.v, inputs.do
    if direction == "fwd":
        if mode == "repeat":  # expand kv heads once, outside the timed call
            k, v = repeat_kv(q, k, v)
        return lambda: forward(q, k, v)
    if direction == "bwd":
        o = forward(q, k, v)  # once, outside the timed call; the graph is kept for the backward

        def backward_only():
            return (o, *torch.autograd.grad(o, (q, k, v), do, retain_graph=True))

        return backward_only

    def forward_backward():
        o = forward(q, k, v)
        return (o.detach(), *torch.autograd.grad(o, (q, k, v), do))

    return forward_backward


@register
class Attention(Workload):
    name = "attention"

    def cases(self, suite: str, device: DeviceInfo) -> list[Case]:
        return gpu_cases(suite) if device.kind == "cuda" else cpu_cases(suite)

    def backends(self, case: Case, device: DeviceInfo) -> list[str]:
        p = _params(case)
        return runnable_backends(case.backends, device, DTYPES[case.dtype], p["d"], p["causal"],
                                 p["h"] // p["kv_h"], p["direction"] != "fwd",
                                 _math_fits(p, device))

    def setup(self, case: Case, device: DeviceInfo) -> Inputs:
        p = _params(case)
        dtype, dev = DTYPES[case.dtype], device.torch_device
        grad = p["direction"] != "fwd"
        gen = torch.Generator(device=dev).manual_seed(SEED)

        def randn(heads):
            x = torch.randn(p["b"], heads, p["s"], p["d"], generator=gen, device=dev, dtype=dtype)
            return x.requires_grad_(grad)

        q, k, v = randn(p["h"]), randn(p["kv_h"]), randn(p["kv_h"])
        do = randn(p["h"]).detach() if grad else None
        inputs = Inputs(q, k, v, do, p["d"] ** -0.5, device, case.key)
        MEMO.begin(memo_case(inputs))  # another case: the previous one's reference goes
        return inputs

    def prepare(self, case: Case, backend: str, inputs: Inputs):
        p = _params(case)
        forward, mode = _forward_fn(backend, p, inputs)
        return _callable(p["direction"], forward, mode, inputs)

    def check(self, case: Case, backend: str, inputs: Inputs, out) -> Check:
        p = _params(case)
        outs = (out,) if p["direction"] == "fwd" else tuple(out)
        refs = _reference(p, inputs)
        if len(outs) != len(refs):
            raise ValueError(f"expected {len(refs)} outputs (o[, dq, dk, dv]), got {len(outs)}")
        errs = [max_rel_error(o, r) for o, r in zip(outs, refs, strict=True)]
        tols = [max(TOL_FACTOR * e, FLOOR[case.dtype]) for e in _baseline_errors(case, inputs)]
        # report the tensor closest to (or furthest past) its tolerance
        worst = max(range(len(errs)), key=lambda i: errs[i] / tols[i])
        return Check(all(e <= t for e, t in zip(errs, tols, strict=True)), errs[worst],
                     tols[worst])

    def flops(self, case: Case) -> float:
        p = _params(case)
        return attention_flops(p["b"], p["h"], p["s"], p["d"], p["causal"], p["direction"])

    def bytes_moved(self, case: Case) -> float:
        p = _params(case)
        return attention_bytes(p["b"], p["h"], p["kv_h"], p["s"], p["d"],
                               DTYPES[case.dtype].itemsize, p["direction"])

    def shape(self, case: Case) -> str:
        p = case.params
        return (f"b{p['b']} h{p['h']}/{p['kv_h']} s{p['s']} d{p['d']}"
                + (" causal " if p["causal"] else " ") + p["direction"])


def causal_mask(seq_q: int, seq_k: int, device) -> torch.Tensor:
    """Boolean (seq_q, seq_k) mask, True where query i may see key j: j <= i + seq_k - seq_q."""
    i = torch.arange(seq_q, device=device)[:, None]
    j = torch.arange(seq_k, device=device)[None, :]
    return j <= i + (seq_k - seq_q)


def reference_attention(q, k, v, *, causal: bool = False, sm_scale: float | None = None,
                        do: torch.Tensor | None = None, budget_bytes: int = 1 << 30):
    """fp32 math attention; returns (o, dq, dk, dv) in fp32 (grads None when `do` is None).

    Works in chunks of (batch*head) rows so that what one chunk holds stays within about
    budget_bytes: four fp32 (rows, seq_q, seq_k) score matrices, plus the row's fp32 copies of
    K and V (2 seq_k d) and of q, o, dO (3 seq_q d). For decode (seq_q of 1-16 against a long
    cache) the K and V copies dominate, so they are counted too; that keeps the reference for
    seq 16k, and for batch 256 against a 32k cache, on the GPU. The backward is the textbook
    one: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)), dQ = scale dS K,
    dK = scale dS^T Q; GQA sums dK, dV over the q heads of each kv head. Rows that see no key
    (causal, seq_q > seq_k) give zeros.
    """
    # lazy, as in _forward_fn: importing kernels.attention imports triton
    from kernels.attention import validate

    scale = validate(q, k, v, causal, sm_scale, for_kernel=False)
    b, h, sq, d = q.shape
    kv_h, sk = k.shape[1], k.shape[2]
    group = h // kv_h
    qf, kf, vf = q.reshape(b * h, sq, d), k.reshape(b * kv_h, sk, d), v.reshape(b * kv_h, sk, d)
    dof = do.reshape(b * h, sq, d) if do is not None else None
    mask = causal_mask(sq, sk, q.device) if causal else None
    rows = max(1, budget_bytes // (4 * (4 * sq * sk + 2 * sk * d + 3 * sq * d)))
    f32 = dict(device=q.device, dtype=torch.float32)
    o = torch.empty(b * h, sq, d, **f32)
    dq = torch.empty(b * h, sq, d, **f32) if do is not None else None
    dk = torch.zeros(b * kv_h, sk, d, **f32) if do is not None else None
    dv = torch.zeros(b * kv_h, sk, d, **f32) if do is not None else None
    for r0 in range(0, b * h, rows):
        r1 = min(r0 + rows, b * h)
        # q row r is (batch r // h, head r % h); its kv row is batch * kv_h + head // group
        kv_idx = torch.arange(r0, r1, device=q.device)
        kv_idx = (kv_idx // h) * kv_h + (kv_idx % h) // group
        qc = qf[r0:r1].float()
        kc, vc = kf[kv_idx].float(), vf[kv_idx].float()
        s = torch.matmul(qc, kc.transpose(-1, -2)) * scale
        if mask is not None:
            s.masked_fill_(~mask, float("-inf"))
        p = torch.softmax(s, dim=-1).nan_to_num_(0.0)  # all-masked rows: NaN -> 0
        del s
        oc = torch.matmul(p, vc)
        o[r0:r1] = oc
        if do is None:
            del p, oc, kc, vc, qc  # before the next chunk's copies exist
            continue
        doc = dof[r0:r1].float()
        dv.index_add_(0, kv_idx, torch.matmul(p.transpose(-1, -2), doc))
        ds = torch.matmul(doc, vc.transpose(-1, -2))
        ds.sub_((doc * oc).sum(-1, keepdim=True)).mul_(p)
        del p
        dq[r0:r1] = torch.matmul(ds, kc) * scale
        dk.index_add_(0, kv_idx, torch.matmul(ds.transpose(-1, -2), qc) * scale)
        del ds, doc, kc, vc, qc, oc  # before the next chunk's copies exist
    o = o.reshape(b, h, sq, d)
    if do is None:
        return o, None, None, None
    return (o, dq.reshape(b, h, sq, d), dk.reshape(b, kv_h, sk, d), dv.reshape(b, kv_h, sk, d))


def _reference(p: dict, inputs: Inputs) -> tuple:
    """fp32 math attention on the same device: (o,) or (o, dq, dk, dv). Computed once per case
    (MEMO): every backend of a case checks against the same inputs."""
    grad = p["direction"] != "fwd"

    def compute():
        prev = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")  # a TF32 reference would not be fp32
        try:
            with torch.no_grad():
                ref = reference_attention(inputs.q.detach(), inputs.k.detach(), inputs.v.detach(),
                                          causal=p["causal"], sm_scale=inputs.scale,
                                          do=inputs.do if grad else None)
        finally:
            torch.set_float32_matmul_precision(prev)
        return ref if grad else ref[:1]

    return memo(inputs, f"ref causal={p['causal']} grad={grad}", compute)


def baseline_backend(case: Case, device: DeviceInfo) -> str | None:
    """The torch path whose error calibrates the tolerance (see BASELINE_ORDER)."""
    runnable = Attention().backends(case, device)
    for backend in BASELINE_ORDER:
        if backend in runnable:
            return backend
    return None


def _baseline_errors(case: Case, inputs: Inputs) -> list[float]:
    """Normwise errors of the same-precision torch path; zeros (floor only) if none can run.
    Computed once per case (MEMO), like the reference."""

    def compute():
        p = _params(case)
        refs = _reference(p, inputs)
        backend = baseline_backend(case, inputs.device)
        if backend is None:
            return [0.0] * len(refs)
        forward, mode = _forward_fn(backend, p, inputs)
        out = _callable(p["direction"], forward, mode, inputs)()
        outs = (out,) if p["direction"] == "fwd" else out
        return [max_rel_error(o, r) for o, r in zip(outs, refs, strict=True)]

    return memo(inputs, f"baseline {case.key}", compute)
