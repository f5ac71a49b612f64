"""hostdevice: host <-> device copy bandwidth, pinned and pageable memory, both directions.

GB/s = bytes copied / time (one direction; nothing else is counted). Pinned host memory lets
the copy engines DMA straight from or to the buffer; pageable memory goes through the driver's
pinned staging buffer, so it is slower and more variable: the pair shows what a data loader or
an offload path pays for each. Timing is the harness recipe (CUDA events around each copy). A
pageable copy blocks the host while it stages, and the events still bracket it, because the
end event is queued only after the call returns. GPU only: on CPU there is no host-device
link, so `cases()` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.device import DeviceInfo
from bench.workloads.base import (
    Case,
    Check,
    Unsupported,
    Workload,
    human_bytes,
    max_rel_error,
    register,
)

MiB = 1024**2
GiB = 1024**3

# Bytes per copy. Large copies reach the link's plateau; 1 MiB shows the per-copy overhead.
SIZES = {
    "quick": [256 * MiB],
    "standard": [64 * MiB, 1 * GiB],
    "full": [1 * MiB, 16 * MiB, 64 * MiB, 256 * MiB, 1 * GiB],
    "campaign": [1 * GiB],
}
CAMPAIGN_MEMORY = ("pinned",)  # one GPU window: the DMA path both ways
OPS = ("h2d", "d2h")
MEMORY = ("pinned", "pageable")

# PCIe Gen5 x16: 32 GT/s x 16 lanes with 128b/130b coding ~ 63 GB/s per direction (PCI-SIG
# PCIe 5.0 specification; H100/H200 SXM and PCIe parts all attach to the host by Gen5 x16,
# NVIDIA H100 datasheet "PCIe Gen5: 128 GB/s" counts both directions).
PCIE_GEN5_X16_GBPS = 63.0


@dataclass
class Inputs:
    src: torch.Tensor
    dst: torch.Tensor


@register
class HostDevice(Workload):
    name = "hostdevice"
    bound = "memory"

    def cases(self, suite: str, device: DeviceInfo) -> list[Case]:
        if device.kind != "cuda" or suite not in SIZES:
            return []
        return [Case("hostdevice", "fp32", {"op": op, "memory": mem, "bytes": size}, ("torch",))
                for size in SIZES[suite] for op in OPS
                for mem in (CAMPAIGN_MEMORY if suite == "campaign" else MEMORY)]

    def setup(self, case: Case, device: DeviceInfo) -> Inputs:
        if device.kind != "cuda":
            raise Unsupported("host-device copies need a CUDA GPU")
        op, memory, nbytes = case.params["op"], case.params["memory"], case.params["bytes"]
        if op not in OPS or memory not in MEMORY:
            raise ValueError(f"hostdevice: op must be one of {OPS} and memory one of {MEMORY}, "
                             f"got {op!r}, {memory!r}")
        n = nbytes // 4
        pinned = memory == "pinned"
        host = torch.randn(n, pin_memory=pinned) if op == "h2d" else \
            torch.empty(n, pin_memory=pinned)
        dev = torch.empty(n, device=device.torch_device) if op == "h2d" else \
            torch.randn(n, device=device.torch_device)
        return Inputs(src=host, dst=dev) if op == "h2d" else Inputs(src=dev, dst=host)

    def prepare(self, case: Case, backend: str, x: Inputs):
        if backend != "torch":
            raise Unsupported(f"hostdevice has no backend {backend!r}")
        # non_blocking: pinned copies are queued on the stream, so the events time the DMA
        # itself; pageable copies are synchronous whatever the flag says.
        return lambda: x.dst.copy_(x.src, non_blocking=True)

    def check(self, case: Case, backend: str, x: Inputs, out: torch.Tensor) -> Check:
        torch.cuda.synchronize()
        dev = x.src.device if x.src.is_cuda else x.dst.device
        got, ref = out.to(dev), x.src.to(dev)  # compare on the GPU: fast at GiB sizes
        if torch.equal(got, ref):
            return Check(True, 0.0, 0.0)  # a copy is exact
        err = max_rel_error(got, ref)
        return Check(False, err, 0.0)

    def bytes_moved(self, case: Case) -> float:
        return float(case.params["bytes"])

    def shape(self, case: Case) -> str:
        p = case.params
        return f"{p['op']} {p['memory']} {human_bytes(p['bytes'])}"

    def peak_gbps(self, case: Case, device: DeviceInfo) -> float | None:
        """The link's peak for this case (PCIe Gen5 x16 per direction), not HBM's."""
        return PCIE_GEN5_X16_GBPS if device.kind == "cuda" else None
