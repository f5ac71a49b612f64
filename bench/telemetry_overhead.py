"""How much does the NVML sampler slow the kernels it watches?

`python -m bench.telemetry_overhead` times the same kernel with the sampler on and off,
alternating rounds in one process (so clocks and temperature drift hit both alike), and prints
the medians and their ratio as JSON. On a GPU the kernel is a bf16 8192^3 matmul (a device copy
with --kernel copy); on CPU a small matmul, which only proves the script runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable

import torch

from bench.device import detect
from bench.telemetry import Sampler
from bench.timing import PRESETS, default_config, measure


def kernel(name: str, device) -> Callable[[], object]:
    dev = device.torch_device
    if name == "copy":
        n = (1 << 30) // 4 if device.kind == "cuda" else 1 << 20
        src, dst = torch.randn(n, device=dev), torch.empty(n, device=dev)
        return lambda: dst.copy_(src)
    size, dtype = (8192, torch.bfloat16) if device.kind == "cuda" else (256, torch.float32)
    a = torch.randn(size, size, device=dev, dtype=dtype)
    b = torch.randn(size, size, device=dev, dtype=dtype)
    return lambda: a @ b


def overhead(name: str = "matmul", rounds: int = 6) -> dict:
    device = detect()
    cfg = default_config(device) if device.kind == "cuda" else PRESETS["smoke"]
    fn = kernel(name, device)
    on, off = [], []
    for i in range(rounds):
        for enabled in ((True, False) if i % 2 == 0 else (False, True)):
            with Sampler(device, enabled=enabled) as s:
                t = measure(fn, device, cfg)
            (on if enabled else off).append(t.median_s)
    m_on, m_off = statistics.median(on), statistics.median(off)
    return {"device": device.name, "kernel": name, "rounds": rounds,
            "median_s_sampler_on": m_on, "median_s_sampler_off": m_off,
            "overhead_pct": (m_on / m_off - 1) * 100, "telemetry_source": s.summary()["source"]}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kernel", choices=("matmul", "copy"), default="matmul")
    p.add_argument("--rounds", type=int, default=6)
    a = p.parse_args()
    print(json.dumps(overhead(a.kernel, a.rounds), indent=1))
