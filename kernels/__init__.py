"""Our Triton kernels: plain functions on torch tensors, no harness code.

Without a CUDA device the kernels run through the Triton interpreter, so the same kernel code is
exercised on CPU machines (tests, CI, the CPU fallback of `colossus-bench run`). The interpreter
is chosen by TRITON_INTERPRET, which Triton reads when a kernel is decorated, so it is set here,
before any kernel module imports triton.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def interpreted() -> bool:
    """True when Triton kernels run in the CPU interpreter rather than on a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
