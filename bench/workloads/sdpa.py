"""torch's scaled_dot_product_attention pinned to one implementation, for the attention and
decode workloads: which implementation runs a shape here (a tiny trial), and its memory bound.

Backends `sdpa-flash`, `sdpa-cudnn`, `sdpa-efficient`, `sdpa-math`, each run inside
`sdpa_kernel(...)` with that one implementation allowed, so a row never hides a fallback.
Causal masking is bottom-right aligned, as in our kernel (query i sees keys j <= i + s_k - s_q):
torch's `is_causal` is top-left aligned, so where s_q != s_k the mask is passed explicitly (and
for a single query token, which sees every key, no mask is needed at all).
"""

from __future__ import annotations

import warnings

import torch

from bench.device import DeviceInfo
from bench.workloads.base import Unsupported

SDPA_BACKENDS = {  # our name -> torch.nn.attention.SDPBackend member
    "sdpa-flash": "FLASH_ATTENTION",
    "sdpa-cudnn": "CUDNN_ATTENTION",
    "sdpa-efficient": "EFFICIENT_ATTENTION",
    "sdpa-math": "MATH",
}

# sdpa-math materialises the (b, h, s_q, s_k) scores; upcast to fp32 (torch >= 2.5) and about
# three such matrices live in the forward, six with the backward graph (assumption, from the
# math path's ops: scores, softmax, output of dropout/masking; plus their gradients). Skip it
# when that would exceed this share of device memory.
MATH_MATRICES = {"fwd": 3, "bwd": 6, "fwd_bwd": 6, "decode": 3}
MATH_MEMORY_SHARE = 0.5


def _sdpa_backend(backend: str):
    from torch.nn.attention import SDPBackend

    member = getattr(SDPBackend, SDPA_BACKENDS[backend], None)
    if member is None:
        raise Unsupported(f"this torch has no SDPBackend.{SDPA_BACKENDS[backend]}")
    return member


def repeat_kv(q, k, v):
    """Expand kv heads to q's head count (for SDPA paths without native GQA)."""
    group = q.shape[1] // k.shape[1]
    if group == 1:
        return k, v
    return k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)


def lower_right_mask(s_q: int, s_k: int, device) -> torch.Tensor:
    """Boolean (s_q, s_k), True where query i may see key j: j <= i + s_k - s_q."""
    i = torch.arange(s_q, device=device)[:, None]
    j = torch.arange(s_k, device=device)[None, :]
    return j <= i + (s_k - s_q)


def sdpa_attention(backend: str, q, k, v, *, causal: bool, scale: float, gqa: str = "native",
                   mask: torch.Tensor | None = None):
    """torch SDPA restricted to one implementation; gqa 'native' (enable_gqa) or 'repeat'.
    `mask`: the bottom-right causal mask where s_q != s_k (see `causal_args`)."""
    from torch.nn.attention import sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention

    kwargs = {}
    if q.shape[1] != k.shape[1]:
        if gqa == "native":
            kwargs["enable_gqa"] = True
        else:
            k, v = repeat_kv(q, k, v)
    if mask is not None:
        kwargs["attn_mask"] = mask
    with sdpa_kernel(_sdpa_backend(backend)):
        return scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, **kwargs)


def causal_args(causal: bool, s_q: int, s_k: int, device) -> tuple[bool, torch.Tensor | None]:
    """(is_causal, mask) for SDPA giving bottom-right causal attention: equal lengths use
    is_causal; one query token sees every key (no mask); otherwise an explicit mask."""
    if not causal or s_q == s_k:
        return causal, None
    return False, (None if s_q == 1 else lower_right_mask(s_q, s_k, device))


_PROBES: dict[tuple, str | None] = {}


def sdpa_gqa_mode(backend: str, device: str, dtype: torch.dtype, d: int, causal: bool,
                  group: int, grad: bool, s_q: int | None = None) -> str | None:
    """How `backend` runs here: 'native', 'repeat' (kv heads expanded), or None (cannot run).

    Decided once per (backend, device, dtype, head dim, causal, GQA, grad, query shape) by a
    tiny trial run: the SDPA implementations' constraints change between torch versions and
    GPUs. `s_q`: a query length shorter than the keys' (decode; 1 or more tokens).
    """
    q_len = 64 if s_q is None else min(s_q, 16)
    shape = "square" if s_q is None else "one" if s_q == 1 else "short"
    key = (backend, device, dtype, d, causal, group > 1, grad, shape)
    if key in _PROBES:
        return _PROBES[key]
    result = None
    for mode in ("native", "repeat") if group > 1 else ("native",):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # SDPA explains each refusal in a warning
                q = torch.randn(1, group, q_len, d, device=device, dtype=dtype,
                                requires_grad=grad)
                k = torch.randn(1, 1, 64, d, device=device, dtype=dtype, requires_grad=grad)
                v = torch.randn(1, 1, 64, d, device=device, dtype=dtype, requires_grad=grad)
                is_causal, mask = causal_args(causal, q_len, 64, device)
                o = sdpa_attention(backend, q, k, v, causal=is_causal, scale=d**-0.5, gqa=mode,
                                   mask=mask)
                if grad:
                    torch.autograd.grad(o, (q, k, v), torch.ones_like(o))
                if o.is_cuda:
                    torch.cuda.synchronize(o.device)
            result = mode
            break
        except (RuntimeError, ValueError, TypeError, NotImplementedError, Unsupported):
            continue
    _PROBES[key] = result
    return result


def math_fits(b: int, h: int, s_q: int, s_k: int, direction: str, device: DeviceInfo) -> bool:
    """Whether sdpa-math's materialised score matrices fit (see MATH_MATRICES)."""
    if device.kind != "cuda" or not device.memory_bytes:
        return True
    need = b * h * s_q * s_k * 4 * MATH_MATRICES[direction]
    return need <= MATH_MEMORY_SHARE * device.memory_bytes
