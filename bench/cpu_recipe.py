"""What the CPU recipe holds fixed while it samples, and the guest's yardstick.

bench/timing.py's `measure` and `measure_rounds` sample CPU cases under `cpu_timing` and time the
`yardstick` among them; each timed CPU row records `timing_settings` and the yardstick's median
in software["timing"], so two CPU runs can be compared for what they held and how fast the
guest was (results/compare.py).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.device import DeviceInfo

# What the CPU recipe holds fixed while sampling (stored in each timed CPU row's
# software["timing"]): one torch thread (two threads on two busy cores made runs differ ~100x)
# and the garbage collector off (as timeit: no collection inside a sample). Measured, not
# needed (docs/USAGE.md "CPU rows"): no other thread (OpenMP, OpenBLAS) ran while a case was
# sampled, and pinning to one core changed nothing.
CPU_TIMING: dict[str, int | bool] = {"torch_threads": 1, "gc": False}
CPU_TIMING_THREADS = CPU_TIMING["torch_threads"]


@contextmanager
def cpu_timing(device: DeviceInfo) -> Iterator[None]:
    """Hold the CPU_TIMING settings while a CPU case is sampled; restore torch's thread count
    and the garbage collector after (also on error). A no-op on a GPU."""
    if device.kind == "cuda":
        yield
        return
    import torch

    threads, gc_was_on = torch.get_num_threads(), gc.isenabled()
    torch.set_num_threads(CPU_TIMING_THREADS)
    if not CPU_TIMING["gc"]:
        gc.disable()
    try:
        yield
    finally:
        if gc_was_on:
            gc.enable()
        torch.set_num_threads(threads)


# The guest's speed, timed among the cases: a VM's speed drifts between processes, and the
# Triton interpreter and torch's small CPU kernels both tracked a pure-Python loop (ratios to
# it within ~8% while medians moved ~40%: docs/USAGE.md "CPU rows"). Pure Python: fixed work,
# ~1.5 ms there. Two runs' yardstick ratio is the guest's speed, not the code's.
YARDSTICK_N = 20000


def yardstick() -> float:
    """The seconds of YARDSTICK_N pure-Python multiply-adds."""
    t0, s = time.perf_counter(), 0
    for i in range(YARDSTICK_N):
        s += i * i
    return time.perf_counter() - t0


def timing_settings(device: DeviceInfo) -> dict[str, int | bool]:
    """The settings `cpu_timing` holds on this device, for `Timing.settings`."""
    return {} if device.kind == "cuda" else dict(CPU_TIMING)
