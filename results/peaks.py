"""Datasheet peaks of the devices we know, keyed by device model, each row with its source.

The one peak table: the harness (bench.device), the table's checks (results) and the reports all
read it from here. Dense figures only: NVIDIA's headline tensor numbers count 2:4 sparsity and are
twice these. Peaks are leads, not ceilings: the ceilings that count are the measured ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Peaks:
    """Datasheet peaks of one device model (dense, boost clock)."""

    bf16_tflops: float | None
    fp16_tflops: float | None
    fp8_tflops: float | None
    tf32_tflops: float | None
    fp32_tflops: float | None
    hbm_tbps: float | None
    memory_gb: float | None
    tdp_w: float | None
    source: str

    def tflops(self, dtype: str) -> float | None:
        """Peak for a result dtype name (bf16, fp16, fp8_e4m3, fp8_e5m2, tf32, fp32)."""
        if dtype.startswith("fp8"):
            return self.fp8_tflops
        return getattr(self, f"{dtype}_tflops", None)


_H100_SXM_SRC = "NVIDIA H100 Tensor Core GPU datasheet (2023), SXM column, dense = sparse/2"
_H100_NVL_SRC = "NVIDIA H100 datasheet, NVL column; dense = sparse/2"
_H200_SRC = "NVIDIA H200 Tensor Core GPU datasheet (2024); compute as H100 SXM"
_A100_SRC = "NVIDIA A100 Tensor Core GPU datasheet (2021)"
_L40S_SRC = "NVIDIA L40S datasheet (2023); dense = sparse/2"

PEAKS: dict[str, Peaks] = {
    "H100-SXM": Peaks(989.4, 989.4, 1978.9, 494.7, 66.9, 3.35, 80, 700, _H100_SXM_SRC),
    "H100-PCIe": Peaks(756.5, 756.5, 1513.0, 378.0, 51.2, 2.0, 80, 350,
                       "NVIDIA H100 datasheet, PCIe column; dense = sparse/2"),
    "H100-NVL": Peaks(835.5, 835.5, 1670.5, 417.5, 60.0, 3.9, 94, 400, _H100_NVL_SRC),
    "H200-SXM": Peaks(989.4, 989.4, 1978.9, 494.7, 66.9, 4.8, 141, 700, _H200_SRC),
    "H200-NVL": Peaks(835.5, 835.5, 1670.5, 417.5, 60.0, 4.8, 141, 600,
                      "NVIDIA H200 datasheet, NVL column; dense = sparse/2"),
    "A100-SXM-80GB": Peaks(312.0, 312.0, None, 156.0, 19.5, 2.039, 80, 400, _A100_SRC),
    "A100-SXM-40GB": Peaks(312.0, 312.0, None, 156.0, 19.5, 1.555, 40, 400, _A100_SRC),
    "A100-PCIe-80GB": Peaks(312.0, 312.0, None, 156.0, 19.5, 1.935, 80, 300, _A100_SRC),
    "L40S": Peaks(362.05, 362.05, 733.0, 183.0, 91.6, 0.864, 48, 350, _L40S_SRC),
}

# torch/NVML device names -> PEAKS keys; first match wins, so specific patterns come first.
_NAME_PATTERNS: list[tuple[str, str]] = [
    (r"H200.*NVL", "H200-NVL"),
    (r"H200", "H200-SXM"),  # "NVIDIA H200" is the SXM part
    (r"H100.*NVL", "H100-NVL"),
    (r"H100.*PCIe", "H100-PCIe"),
    (r"H100", "H100-SXM"),  # "NVIDIA H100 80GB HBM3"
    (r"A100.*SXM.*40GB", "A100-SXM-40GB"),
    (r"A100.*SXM", "A100-SXM-80GB"),
    (r"A100.*PCIe", "A100-PCIe-80GB"),
    (r"L40S", "L40S"),
]


def model_of(name: str) -> str | None:
    """The PEAKS key for a device name as torch or NVML reports it, or None if unknown."""
    for pattern, key in _NAME_PATTERNS:
        if re.search(pattern, name, re.IGNORECASE):
            return key
    return None
