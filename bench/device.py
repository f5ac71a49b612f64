"""What device is this, and what can it do on paper.

`detect()` describes the device the benchmarks run on (the current CUDA GPU, else the CPU).
`PEAKS` is the one table of datasheet peaks, keyed by device model, each row with its source.
Dense figures only: NVIDIA's headline tensor numbers count 2:4 sparsity and are twice these.
Peaks are leads, not ceilings: the ceilings that count are measured (see ANCHORS.md).
"""

from __future__ import annotations

import logging
import os
import platform
import re
from dataclasses import asdict, dataclass

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class DeviceInfo:
    """The device a run measures. `kind` is 'cuda' or 'cpu'; `model` keys PEAKS (None: unknown)."""

    name: str
    kind: str
    model: str | None = None
    cc: str | None = None
    sm_count: int | None = None
    memory_bytes: int | None = None
    uuid: str | None = None
    driver: str | None = None
    cuda: str | None = None
    index: int = 0

    @property
    def torch_device(self) -> str:
        return f"cuda:{self.index}" if self.kind == "cuda" else "cpu"

    @property
    def is_hopper(self) -> bool:
        return self.kind == "cuda" and self.cc == "9.0"

    def record(self) -> dict:
        """The `device` dict of the result record."""
        d = asdict(self)
        d.pop("index")
        return d


_warned_unknown: set[str] = set()


def peaks(device: DeviceInfo) -> Peaks | None:
    """Datasheet peaks for this device; an unknown GPU runs anyway and is said once."""
    if device.model in PEAKS:
        return PEAKS[device.model]
    if device.kind == "cuda" and device.name not in _warned_unknown:
        _warned_unknown.add(device.name)
        log.warning("unknown GPU %r: no peak figures, %% of peak will be empty", device.name)
    return None


def _nvml_facts(uuid: str | None, index: int) -> dict:
    """The driver version (and the uuid where torch has none) from NVML; {} without NVML.

    NVML numbers GPUs physically and ignores CUDA_VISIBLE_DEVICES, so the GPU is found by the
    uuid torch reports; its index is used only when no GPU is hidden (else under
    CUDA_VISIBLE_DEVICES=3 every process would describe physical GPU 0).
    """
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no NVML (CPU machines, containers without the library)
        return {}
    try:
        facts = {"driver": pynvml.nvmlSystemGetDriverVersion()}
        try:
            h = pynvml.nvmlDeviceGetHandleByUUID(uuid) if uuid else None
        except pynvml.NVMLError:
            h = None
        if h is None and "CUDA_VISIBLE_DEVICES" not in os.environ:
            h = pynvml.nvmlDeviceGetHandleByIndex(index)
        if h is not None:
            facts["uuid"] = pynvml.nvmlDeviceGetUUID(h)
        return {k: v.decode() if isinstance(v, bytes) else v for k, v in facts.items()}
    except Exception:
        return {}
    finally:
        pynvml.nvmlShutdown()


def torch_uuid(props) -> str | None:
    """The GPU's uuid as torch reports it, in NVML's 'GPU-...' form."""
    u = getattr(props, "uuid", None)
    return f"GPU-{u}" if u else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def detect(index: int | None = None) -> DeviceInfo:
    """Describe the current CUDA device (or `index`), else the CPU."""
    import torch

    if torch.cuda.is_available():
        i = torch.cuda.current_device() if index is None else index
        p = torch.cuda.get_device_properties(i)
        nv = _nvml_facts(torch_uuid(p), i)
        uuid = torch_uuid(p) or nv.get("uuid")
        return DeviceInfo(
            name=p.name,
            kind="cuda",
            model=model_of(p.name),
            cc=f"{p.major}.{p.minor}",
            sm_count=p.multi_processor_count,
            memory_bytes=p.total_memory,
            uuid=uuid,
            driver=nv.get("driver"),
            cuda=torch.version.cuda,
            index=i,
        )
    return detect_cpu()


def detect_cpu() -> DeviceInfo:
    """Describe the host CPU (also where a GPU exists: gloo buffers live on the host)."""
    mem = None
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    return DeviceInfo(name=_cpu_name(), kind="cpu", sm_count=os.cpu_count(), memory_bytes=mem)
