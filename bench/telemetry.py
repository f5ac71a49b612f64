"""NVML telemetry around a timed region.

`Sampler(device)` is a context manager: a thread polls NVML every `interval_s` while the region
runs; on exit `summary()` is the `telemetry` dict of the result record. Energy comes from the
total-energy counter (difference over the region), which is exact where the 1 s power average is
not. On Hopper, GPM metrics (DRAM bandwidth utilisation, tensor activity) come from two GPM
samples taken at the region's ends (NVML wants them at least 100 ms apart).

Robustness is the point: a metric that the driver does not support becomes null, with its reason
recorded once in `unsupported`; no NVML at all (CPU machines, containers without the library)
gives `source: none`. Telemetry never fails a benchmark.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from typing import Any

from bench.device import DeviceInfo

log = logging.getLogger(__name__)

GPM_MIN_INTERVAL_S = 0.1
# What the sampled region covers, stored with every summary: for kernels much shorter than a
# flush (~85 us for 256 MiB at ~3 TB/s), power and DRAM figures are mostly the flushes'.
REGION = "the timed samples, each preceded by its 256 MiB L2-flush write; warm-up excluded"

# NVML clock-event ("throttle") reason bits -> names, stable across driver versions.
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def reason_names(mask: int) -> list[str]:
    """Names of the set bits of a clock-event reason mask (unknown bits as hex)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    if rest:
        names.append(hex(rest))
    return names


def empty_summary(reason: str | None = None) -> dict[str, Any]:
    """The telemetry dict when there is nothing to sample."""
    d: dict[str, Any] = {"source": "none", "power_w_mean": None, "power_w_max": None,
                         "energy_j": None, "sm_clock_mhz_mean": None, "sm_clock_mhz_min": None,
                         "mem_clock_mhz": None, "temp_c_max": None, "hbm_temp_c_max": None,
                         "throttle_reasons": [], "gpu_util_pct": None, "mem_util_pct": None,
                         "dram_bw_util_pct": None, "tensor_util_pct": None, "samples": 0}
    if reason:
        d["reason"] = reason
    return d


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate raw poll samples (dicts of metric -> value or None) into record fields."""

    def values(key: str) -> list[float]:
        return [s[key] for s in samples if s.get(key) is not None]

    def agg(key: str, fn):
        xs = values(key)
        return fn(xs) if xs else None

    masks = values("throttle_mask")
    reasons = sorted({n for m in masks for n in reason_names(int(m))})
    return {
        "power_w_mean": agg("power_w", statistics.fmean),
        "power_w_max": agg("power_w", max),
        "sm_clock_mhz_mean": agg("sm_clock_mhz", statistics.fmean),
        "sm_clock_mhz_min": agg("sm_clock_mhz", min),
        "mem_clock_mhz": agg("mem_clock_mhz", statistics.median),
        "temp_c_max": agg("temp_c", max),
        "hbm_temp_c_max": agg("hbm_temp_c", max),
        "throttle_reasons": reasons,
        "gpu_util_pct": agg("gpu_util_pct", statistics.fmean),
        "mem_util_pct": agg("mem_util_pct", statistics.fmean),
        "samples": len(samples),
    }


class _Nvml:
    """A thin, failure-tolerant view of one NVML device. Every read returns a value or None."""

    def __init__(self, device: DeviceInfo):
        import pynvml  # ImportError: no nvidia-ml-py

        self.nv = pynvml
        pynvml.nvmlInit()  # NVMLError: no driver
        if device.uuid:
            self.h = pynvml.nvmlDeviceGetHandleByUUID(device.uuid)
        else:
            self.h = pynvml.nvmlDeviceGetHandleByIndex(device.index)
        self.unsupported: dict[str, str] = {}

    def read(self, name: str, fn):
        if name in self.unsupported:
            return None
        try:
            return fn()
        except Exception as e:  # NVMLError_NotSupported, NoPermission, missing symbol, ...
            self.unsupported[name] = str(e) or type(e).__name__
            log.info("NVML metric %s unavailable: %s", name, self.unsupported[name])
            return None

    def field(self, field_id: int) -> float | None:
        v = self.nv.nvmlDeviceGetFieldValues(self.h, [field_id])[0]
        if v.nvmlReturn != 0:
            raise self.nv.NVMLError(v.nvmlReturn)
        return float(getattr(v.value, {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal",
                                       4: "sllVal", 5: "siVal"}.get(v.valueType, "ullVal")))

    def poll(self) -> dict[str, Any]:
        nv, h = self.nv, self.h
        # Instantaneous power where the driver has it (Hopper, r535+); else the 1 s average.
        power = self.read("power_instant",
                          lambda: self.field(nv.NVML_FI_DEV_POWER_INSTANT) / 1e3)
        if power is None:
            power = self.read("power_average", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1e3)
        util = self.read("utilization", lambda: nv.nvmlDeviceGetUtilizationRates(h))
        throttle = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
            nv.nvmlDeviceGetCurrentClocksThrottleReasons
        return {
            "t": time.monotonic(),
            "power_w": power,
            "sm_clock_mhz": self.read("sm_clock", lambda: nv.nvmlDeviceGetClockInfo(
                h, nv.NVML_CLOCK_SM)),
            "mem_clock_mhz": self.read("mem_clock", lambda: nv.nvmlDeviceGetClockInfo(
                h, nv.NVML_CLOCK_MEM)),
            "temp_c": self.read("temperature", lambda: nv.nvmlDeviceGetTemperature(
                h, nv.NVML_TEMPERATURE_GPU)),
            "hbm_temp_c": self.read("hbm_temperature",
                                    lambda: self.field(nv.NVML_FI_DEV_MEMORY_TEMP)),
            "throttle_mask": self.read("throttle_reasons", lambda: throttle(h)),
            "gpu_util_pct": util.gpu if util is not None else None,
            "mem_util_pct": util.memory if util is not None else None,
        }

    def energy_mj(self) -> float | None:
        return self.read("energy", lambda: self.nv.nvmlDeviceGetTotalEnergyConsumption(self.h))

    def gpm_sample(self):
        """A GPM sample handle, or None where GPM is unsupported (pre-Hopper, vGPU, old driver)."""
        nv = self.nv

        def take():
            if "gpm_supported" not in self.__dict__:
                self.gpm_supported = bool(nv.nvmlGpmQueryDeviceSupport(self.h).isSupportedDevice)
            if not self.gpm_supported:
                raise RuntimeError("GPM not supported on this device")
            s = nv.nvmlGpmSampleAlloc()
            nv.nvmlGpmSampleGet(self.h, s)
            return s

        return self.read("gpm", take)

    def gpm_metrics(self, s1, s2) -> dict[str, float | None]:
        nv = self.nv

        def get():
            mg = nv.c_nvmlGpmMetricsGet_t()
            mg.version = nv.NVML_GPM_METRICS_GET_VERSION
            mg.numMetrics = 2
            mg.sample1, mg.sample2 = s1, s2
            mg.metrics[0].metricId = nv.NVML_GPM_METRIC_DRAM_BW_UTIL
            mg.metrics[1].metricId = nv.NVML_GPM_METRIC_ANY_TENSOR_UTIL
            nv.nvmlGpmMetricsGet(mg)
            # each metric has its own return code: an unsupported one is null, not 0.0
            return {name: (m.value if m.nvmlReturn == 0 else None)
                    for name, m in (("dram_bw_util_pct", mg.metrics[0]),
                                    ("tensor_util_pct", mg.metrics[1]))}

        out = self.read("gpm_metrics", get) or {}
        for s in (s1, s2):
            try:
                nv.nvmlGpmSampleFree(s)
            except Exception:
                pass
        return out

    def close(self) -> None:
        try:
            self.nv.nvmlShutdown()
        except Exception:
            pass


class Sampler:
    """Samples NVML while a `with` block runs; `summary()` afterwards. Never raises."""

    def __init__(self, device: DeviceInfo, interval_s: float = 0.02, enabled: bool = True):
        self.device = device
        self.interval_s = interval_s
        self._nvml: _Nvml | None = None
        self._reason: str | None = None
        self._samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._summary: dict[str, Any] | None = None
        if not enabled:
            self._reason = "telemetry disabled"
        elif device.kind != "cuda":
            self._reason = "no GPU: NVML has nothing to sample"
        else:
            try:
                self._nvml = _Nvml(device)
            except Exception as e:  # no pynvml, no driver, device not visible to NVML
                self._reason = f"NVML unavailable: {e or type(e).__name__}"
                log.warning("telemetry off: %s", self._reason)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._samples.append(self._nvml.poll())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Sampler:
        if self._nvml is None:
            return self
        self._t0 = time.monotonic()
        self._energy0 = self._nvml.energy_mj()
        self._gpm0 = self._nvml.gpm_sample()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._nvml is None:
            self._summary = empty_summary(self._reason)
            return
        self._stop.set()
        self._thread.join()
        nvml = self._nvml
        self._samples.append(nvml.poll())  # the region's end, however short it was
        energy1 = nvml.energy_mj()
        gpm: dict[str, float | None] = {}
        if self._gpm0 is not None:
            wait = GPM_MIN_INTERVAL_S - (time.monotonic() - self._t0)
            if wait > 0:  # NVML needs >= 100 ms between GPM samples; short regions are diluted
                time.sleep(wait)
            gpm1 = nvml.gpm_sample()
            if gpm1 is not None:
                gpm = nvml.gpm_metrics(self._gpm0, gpm1)
        s = empty_summary()
        s.update(summarise(self._samples))
        s["source"] = "nvml"
        s["region"] = REGION
        s["duration_s"] = time.monotonic() - self._t0
        if self._energy0 is not None and energy1 is not None:
            s["energy_j"] = (energy1 - self._energy0) / 1e3
        s.update(gpm)
        s["unsupported"] = dict(nvml.unsupported)
        nvml.close()
        self._summary = s

    def summary(self) -> dict[str, Any]:
        if self._summary is None:
            raise RuntimeError("summary() is available after the with-block has ended")
        return self._summary
