"""membw: HBM bandwidth by STREAM copy and triad, torch and our Triton kernels.

GB/s counts bytes read plus written (copy moves 2 buffers' worth, triad 3), the convention of
STREAM (McCalpin, "STREAM: Sustainable Memory Bandwidth in High Performance Computers"). Buffers
are far larger than L2 (50-60 MB on Hopper), so this is HBM, not cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.device import DeviceInfo
from bench.workloads.base import Case, Check, Workload, human_bytes, max_rel_error, register

GiB = 1024**3
MiB = 1024**2

# bytes of ONE buffer per case; the op touches 2 (copy) or 3 (triad) such buffers
SIZES_GPU = {
    "quick": [1 * GiB],
    "standard": [64 * MiB, 256 * MiB, 1 * GiB, 4 * GiB],
    "full": [16 * MiB, 64 * MiB, 256 * MiB, 1 * GiB, 4 * GiB, 8 * GiB],
    "campaign": [1 * GiB],
}
SIZE_CPU = 4 * MiB
OPS = ("copy", "triad")
BACKENDS = ("torch", "triton")
TRIAD_SCALAR = 3.0


def buffers_touched(op: str) -> int:
    """Buffers read plus written by one call: copy reads 1 writes 1; triad reads 2 writes 1."""
    return {"copy": 2, "triad": 3}[op]


@dataclass
class Inputs:
    a: torch.Tensor  # destination
    b: torch.Tensor
    c: torch.Tensor | None


@register
class MemBandwidth(Workload):
    name = "membw"
    bound = "memory"

    def cases(self, suite: str, device: DeviceInfo) -> list[Case]:
        if suite not in SIZES_GPU:
            return []
        sizes = SIZES_GPU[suite] if device.kind == "cuda" else [SIZE_CPU]
        return [Case("membw", "fp32", {"op": op, "bytes": size}, BACKENDS)
                for size in sizes for op in OPS]

    def setup(self, case: Case, device: DeviceInfo) -> Inputs:
        n = case.params["bytes"] // 4
        dev = device.torch_device
        b = torch.randn(n, device=dev)
        c = torch.randn(n, device=dev) if case.params["op"] == "triad" else None
        return Inputs(a=torch.empty(n, device=dev), b=b, c=c)

    def prepare(self, case: Case, backend: str, x: Inputs):
        op = case.params["op"]
        if backend == "torch":
            if op == "copy":
                return lambda: x.a.copy_(x.b)
            return lambda: torch.add(x.b, x.c, alpha=TRIAD_SCALAR, out=x.a)
        from kernels import stream

        if op == "copy":
            return lambda: stream.copy(x.b, x.a)
        return lambda: stream.triad(x.a, x.b, x.c, TRIAD_SCALAR)

    def check(self, case: Case, backend: str, x: Inputs, out: torch.Tensor) -> Check:
        if case.params["op"] == "copy":
            ref = x.b
            tol = 0.0  # a copy is exact
        else:  # made chunk by chunk in fp64: a whole fp64 copy would not fit beside the buffers
            b, c = x.b.reshape(-1), x.c.reshape(-1)

            def ref(i: int, j: int) -> torch.Tensor:
                return b[i:j].double() + TRIAD_SCALAR * c[i:j].double()

            tol = 2 * torch.finfo(torch.float32).eps  # one fused multiply-add of rounding
        err = max_rel_error(out, ref)
        return Check(err <= tol, err, tol)

    def shape(self, case: Case) -> str:
        return f"{case.params['op']} {human_bytes(case.params['bytes'])}"

    def bytes_moved(self, case: Case) -> float:
        return float(buffers_touched(case.params["op"]) * case.params["bytes"])
