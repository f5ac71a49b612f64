"""Host-side facts and helpers shared by the kernels: device arch, shared memory, TMA alignment,
the workspace allocator for device-side tensor descriptors, and the tuning switch.

Nothing here launches a kernel; everything that asks the driver is cached per device index.
"""

from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl

# TMA needs 16-byte aligned base addresses and row strides (CUDA driver API,
# cuTensorMapEncodeTiled: globalAddress and globalStrides multiples of 16).
TMA_ALIGN_BYTES = 16

# Opt-in shared memory per block (CUDA C++ Programming Guide, "Technical Specifications per
# Compute Capability"): 227 KiB on sm90, 163 KiB on sm80, 99 KiB on sm86/sm89; used when torch
# does not report it.
HOPPER_SMEM_BYTES = 232448
SMEM_BY_MAJOR = {9: HOPPER_SMEM_BYTES, 8: 166912}
SMEM_DEFAULT = 101376

# Autotuning beyond the fixed per-shape tables (the attention backward's search space) runs only
# when asked: it costs compiles and benchmarks in a short GPU window. `colossus-bench --tune`
# sets this.
TUNE_ENV = "COLOSSUS_TUNE"


def tune_requested() -> bool:
    """True when COLOSSUS_TUNE=1: search the full config spaces instead of the fixed tables."""
    return os.environ.get(TUNE_ENV) == "1"


def has_tensor_descriptors() -> bool:
    """Whether this Triton has device-side tensor descriptors (tl.make_tensor_descriptor,
    Triton >= 3.4; both 3.6 and 3.8 do)."""
    return hasattr(tl, "make_tensor_descriptor")


@functools.cache
def _facts_at(index: int) -> tuple[int, int, int, int]:
    p = torch.cuda.get_device_properties(index)
    smem = getattr(p, "shared_memory_per_block_optin", 0)
    if not smem:
        smem = SMEM_DEFAULT if p.major == 8 and p.minor != 0 else SMEM_BY_MAJOR.get(
            p.major, SMEM_DEFAULT)
    return p.major, p.minor, p.multi_processor_count, smem


def _index(device: torch.device) -> int:
    device = torch.device(device)
    return device.index if device.index is not None else torch.cuda.current_device()


def cuda_facts(device: torch.device) -> tuple[int, int, int, int]:
    """(major, minor, SM count, opt-in shared memory bytes per block) of a CUDA device."""
    return _facts_at(_index(device))


def is_sm90(device: torch.device) -> bool:
    """Hopper (compute capability 9.x): the arch our TMA/wgmma configs are tuned for."""
    return torch.device(device).type == "cuda" and cuda_facts(device)[0] == 9


def sm_count(device: torch.device) -> int:
    return cuda_facts(device)[2]


def smem_limit(device: torch.device) -> int:
    return cuda_facts(device)[3]


def aligned(t: torch.Tensor) -> bool:
    """TMA can describe t: 16-byte aligned base, unit last stride, 16-byte multiple strides."""
    e = t.element_size()
    return (t.data_ptr() % TMA_ALIGN_BYTES == 0 and t.stride(-1) == 1
            and all((s * e) % TMA_ALIGN_BYTES == 0 for s in t.stride()[:-1]))


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def pad_rows(t: torch.Tensor) -> torch.Tensor:
    """A copy of the 2-D row-major view t whose row stride is a 16-byte multiple (TMA-describable).

    Only the storage is padded: the result has t's shape, and the kernels' descriptors use the
    logical shape, so the pad columns are never read (out-of-bounds boxes read zeros).
    """
    cols = round_up(t.shape[1], TMA_ALIGN_BYTES // t.element_size())
    out = torch.empty((t.shape[0], cols), dtype=t.dtype, device=t.device)[:, : t.shape[1]]
    return out.copy_(t)


def _workspace(size: int, alignment: int, stream) -> torch.Tensor:
    # Global scratch for device-side tensor descriptors. Triton calls this at launch, on the
    # current device and for the current stream (both torch's, which Triton launches on), so a
    # caching-allocator block freed after the launch is reused only in stream order. torch's
    # blocks are 512-byte aligned, more than the 128 bytes a descriptor needs.
    if alignment > 512:
        raise ValueError(f"descriptor workspace alignment {alignment} > 512 bytes")
    return torch.empty(size, device="cuda", dtype=torch.int8)


def ensure_allocator() -> None:
    """Install the descriptor workspace allocator. Triton keeps it in a ContextVar (per thread and
    context), and any other code may replace it, so this sets it before every launch; a
    ContextVar.set costs well under a microsecond."""
    triton.set_allocator(_workspace)
