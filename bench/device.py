"""What device is this, and what can it do on paper.

`detect()` describes the device the benchmarks run on (the current CUDA GPU, else the CPU).
The datasheet peaks live in `results.peaks.PEAKS` (one table, read by every layer).
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import asdict, dataclass

from results.peaks import PEAKS, Peaks, model_of  # noqa: F401  (re-exported: the harness API)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceInfo:
    """The device a run measures. `kind` is 'cuda' or 'cpu'; `model` keys PEAKS (None: unknown).
    `sm_count` is a GPU's streaming multiprocessors, `cores` a CPU's logical cores: a CPU has
    no SMs, and its record says cores, not sm_count."""

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
    cores: int | None = None

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
        if d["cores"] is None:  # a GPU's record keeps the keys it always had
            d.pop("cores")
        if self.kind == "cpu":
            d.pop("sm_count")
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
    return DeviceInfo(name=_cpu_name(), kind="cpu", cores=os.cpu_count(), memory_bytes=mem)
