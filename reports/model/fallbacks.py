"""The figures the model uses when no result row was measured, each with its public source or
labelled as an assumption, and the shape-aware GEMM model that stands in for measured shapes.

One compute ceiling per architecture: H100 SXM and H200 SXM have the same 132 SMs and clocks
(NVIDIA H100 / H200 datasheets), so they share one GEMM ceiling and one attention rate; they
differ in memory capacity and bandwidth (HBM_FALLBACK, hardware.GPUS). Rows of a GPU (or of
one with the same silicon) replace its fallbacks; GEMM rows calibrate the shape model here rather
than replace it (reports/model/measurements.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from reports.model.hardware import GPU


@dataclass(frozen=True)
class Figure:
    """One number the model uses and its provenance."""

    value: float
    source: str
    kind: str  # measured | reference | assumption | calibrated | published (paper, listing)


# --- GEMM -----------------------------------------------------------------------------------------

_VM = "single-GPU VM, torch 2.11, random data, Oct-Nov 2026"
# Hopper: torch bf16 8192^3 reached 798 TFLOP/s on an H100 SXM and 788 on an H200 SXM (same
# silicon, 1.3% apart: run-to-run spread, not a chip difference); cuBLAS 795 at 8192^3
# (pranjalssh/fast.cu README). One ceiling for both: their mean, the spread kept as the range.
HOPPER_GEMM_READINGS = {"H100-SXM": 798.0, "H200-SXM": 788.0}
_HOPPER = sum(HOPPER_GEMM_READINGS.values()) / len(HOPPER_GEMM_READINGS)
_HOPPER_SRC = (f"Hopper bf16 GEMM ceiling {_HOPPER:.0f} TFLOP/s at 8192^3: mean of torch readings "
               f"798 (H100 SXM) and 788 (H200 SXM), {_VM}; same SMs and clocks, one ceiling "
               "(cuBLAS 795, pranjalssh/fast.cu README)")
GEMM_ANCHOR: dict[str, Figure] = {
    "H100-SXM": Figure(_HOPPER, _HOPPER_SRC, "assumption"),
    "H200-SXM": Figure(_HOPPER, _HOPPER_SRC, "assumption"),
    # A100 reaches a larger share of its peak than Hopper does (86.9% against 80.3%): taking
    # Hopper's fraction for it would understate it by 8%
    "A100-SXM-80GB": Figure(271.2, "A100 SXM bf16 maximum achievable matmul 271.2 TFLOP/s "
                            "(86.9% of 312; H100 SXM 794.5, 80.3%): stas00/ml-engineering, "
                            "compute/accelerator/README.md, MAMF table", "assumption"),
    "B200-SXM": Figure(2250.0 * _HOPPER / 989.4, "assumption: B200 reaches the fraction of its "
                       f"dense bf16 peak that Hopper reaches ({_HOPPER:.0f}/989.4); what-if",
                       "assumption"),
}

# Launch and ramp cost per GEMM in the fallback model (assumption, order of a kernel launch plus
# the first wave's ramp).
GEMM_LAUNCH_S = 4e-6
# Output tiles cuBLAS chooses among for bf16 (assumption: 128x256 / 256x128, the CUTLASS 3 sm90
# defaults, and the 128x128, 128x64, 64x128 tiles it falls back to for narrow shapes), each taken
# at the full rate. Nothing depends on k: a version that slowed 64-wide tiles to 75% and charged
# 64-256 k elements per tile for the k-loop's prologue made the validation worse (Megatron
# 1.7B-18.4B 13-20% low), so the shape model keeps wave quantisation and tile padding only.
TILES: tuple[tuple[int, int], ...] = ((128, 256), (256, 128), (128, 128), (128, 64), (64, 128))


def _tile_efficiency(m: int, n: int, tile_m: int, tile_n: int, sm_count: int) -> float:
    tm, tn = math.ceil(m / tile_m), math.ceil(n / tile_n)
    tiles = tm * tn
    waves = math.ceil(tiles / sm_count)
    wave = tiles / (waves * sm_count)
    pad = (m * n) / (tm * tile_m * tn * tile_n)
    return wave * pad


def shape_efficiency(m: int, n: int, k: int, sm_count: int) -> float:
    """Fraction of the ceiling a GEMM of this shape can reach, with the best of TILES: wave
    quantisation (output tiles over the SMs: the last wave runs partly empty) times tile padding
    (edges of m and n that do not fill a tile). k does not enter (see TILES); it is taken so
    that callers pass whole shapes."""
    return max(_tile_efficiency(m, n, tm, tn, sm_count) for tm, tn in TILES)


def anchor_rate(anchor_tflops: float, size: int = 8192) -> float:
    """FLOP/s of the compute term such that a size^3 GEMM takes 2 size^3 / anchor in total."""
    flops = 2.0 * size**3
    return flops / (flops / (anchor_tflops * 1e12) - GEMM_LAUNCH_S)


def gemm_time_fallback(m: int, n: int, k: int, gpu: GPU, anchor_tflops: float,
                       hbm_tbps: float) -> float:
    """Seconds for one bf16 GEMM by the shape model: the whole figure where no rows price this
    GPU, the shape that rows calibrate where they do (measurements.Measurements._calibrated).

    time = max(2mnk / (rate x shape_efficiency relative to the anchor shape), bytes / HBM) +
    launch, where rate reproduces the anchor GEMM (8192^3) exactly. Small and odd shapes lose
    to wave quantisation, tile padding, the launch cost and memory traffic (bf16 A, B and C
    moved once at `hbm_tbps`); nothing else about the shape is priced.
    """
    rel = shape_efficiency(m, n, k, gpu.sm_count) / shape_efficiency(8192, 8192, 8192,
                                                                      gpu.sm_count)
    rate = anchor_rate(anchor_tflops) * rel
    flops = 2.0 * m * n * k
    bytes_moved = 2.0 * (m * k + k * n + m * n)
    return max(flops / rate, bytes_moved / (hbm_tbps * 1e12)) + GEMM_LAUNCH_S


def gemm_ceiling(gpu: GPU) -> Figure:
    """The GEMM anchor of a GPU's architecture (or 80% of its dense peak, an assumption)."""
    if gpu.name in GEMM_ANCHOR:
        return GEMM_ANCHOR[gpu.name]
    return Figure(0.8 * gpu.bf16_tflops, "assumption: 80% of dense bf16 peak", "assumption")


# --- the calibrated constants: one per architecture --------------------------------------------

# The fraction of isolated-kernel speed (GEMM and attention, as benchmarked) that the same kernels
# reach inside a training step (launch gaps, host overhead, allocator, stragglers, clocks held
# lower under sustained load than in a benchmark, everything the model does not price). One per
# architecture, each fitted once in reports/model/validation.py (calibrate()) on that
# architecture's calibration runs; the other runs are held out; no per-case constants. H100 and
# H200 share Hopper's (same SMs and clocks); an architecture without runs takes Hopper's
# (framework_efficiency_for).
FRAMEWORK_EFFICIENCY: dict[str, Figure] = {
    "ampere": Figure(0.77, "calibrated: kernels reach 77% of their benchmarked speed inside a "
                           "training step on A100; fitted on the A100 calibration runs of "
                           "reports/model/validation_cases.py (Narayanan et al. 2021 Tables 1-2, "
                           "OPT-175B); later A100 runs held out", "calibrated"),
    "hopper": Figure(0.77, "calibrated: kernels reach 77% of their benchmarked speed inside a "
                           "training step on H100/H200; fitted on NeMo's published H100 recipes "
                           "(NVIDIA/dgxc-benchmarking, every setting stated); the papers' H100 "
                           "runs held out", "calibrated"),
}


def framework_efficiency_for(arch: str, table: dict[str, Figure] = FRAMEWORK_EFFICIENCY
                             ) -> Figure:
    """The calibrated constant of an architecture; one without calibration runs takes Hopper's,
    labelled as an assumption."""
    if arch in table:
        return table[arch]
    h = table["hopper"]
    return Figure(h.value, f"assumption: Hopper's ({h.source}); no {arch} runs to fit on",
                  "assumption")

# Share of the SMs a collective occupies while it overlaps compute, slowing that compute
# (assumption: DeepSeek-V3 dedicates 20 of 132 SMs to communication, technical report sec. 3.2.2).
COMM_SM_SHARE = Figure(20 / 132, "assumption: an overlapped collective takes 20 of 132 SMs "
                                 "(DeepSeek-V3 technical report, sec. 3.2.2)", "assumption")

# --- memory, attention, NVLink, power -------------------------------------------------------------

HBM_FALLBACK: dict[str, Figure] = {
    "H100-SXM": Figure(3.0, f"device-to-device copy ~3.0 TB/s read+write on H100 SXM ({_VM})",
                       "assumption"),
    "H200-SXM": Figure(4.3, f"device-to-device copy ~4.3 TB/s read+write on H200 SXM ({_VM})",
                       "assumption"),
    "A100-SXM-80GB": Figure(2.039 * 3.0 / 3.35, "assumption: A100 reaches the fraction of its "
                            "2.039 TB/s datasheet HBM that H100 reaches (3.0 of 3.35)",
                            "assumption"),
    "B200-SXM": Figure(8.0 * 3.0 / 3.35, "assumption: B200 reaches the fraction of its 8 TB/s "
                       "that H100 reaches (3.0 of 3.35); what-if", "assumption"),
}

# Attention (flash-style kernels), TFLOP/s under the convention of reports/model/compute.py,
# keyed (gpu, direction).
_FA3 = "FlashAttention-3 (Shah et al. 2024, sec. 4.1), H100 SXM, hd128, seq 16k"
ATTENTION_FALLBACK: dict[tuple[str, str], Figure] = {
    ("H100-SXM", "fwd"): Figure(616.0, f"{_FA3}: forward causal 616 TFLOP/s", "assumption"),
    ("H100-SXM", "bwd"): Figure(561.0, f"{_FA3}: backward 561 TFLOP/s", "assumption"),
    ("H200-SXM", "fwd"): Figure(616.0, f"{_FA3}: forward causal 616; H200 has H100's SMs and "
                                "clocks (one rate per architecture)", "assumption"),
    ("H200-SXM", "bwd"): Figure(561.0, f"{_FA3}: backward 561; same SMs and clocks as H100",
                                "assumption"),
    ("A100-SXM-80GB", "fwd"): Figure(0.6 * 312.0, "assumption: 60% of the 312 TFLOP/s peak, "
                                     "inside the 50-73% FlashAttention-2 reports on A100 "
                                     "(Dao 2023, abstract)", "assumption"),
    ("A100-SXM-80GB", "bwd"): Figure(0.55 * 312.0, "assumption: 55% of peak for the backward "
                                     "(FlashAttention-2 on A100, Dao 2023: 50-73%)", "assumption"),
    ("B200-SXM", "fwd"): Figure(2250.0 * 616.0 / 989.4, "assumption: FA3's H100 fraction of peak "
                                "(616/989.4) on B200; what-if", "assumption"),
    ("B200-SXM", "bwd"): Figure(2250.0 * 561.0 / 989.4, "assumption: FA3's H100 backward "
                                "fraction of peak (561/989.4) on B200; what-if", "assumption"),
}

# NVLink all-reduce bus bandwidth inside one 8-GPU node (GB/s), nccl-tests convention.
NVLINK_FALLBACK: dict[str, Figure] = {
    "H100-SXM": Figure(370.0, "8x H100 all-reduce busbw ~370 GB/s with ring (~480 with NVLS), "
                              "NVIDIA/nccl-tests issue #212, NVIDIA/nccl issue #1455; ring taken",
                       "assumption"),
    "H200-SXM": Figure(366.0, "8x H200 all-reduce 8 GiB busbw 366 GB/s ring (473 NVLS), "
                              "stas00/ml-engineering network README; ring taken", "assumption"),
    "A100-SXM-80GB": Figure(300.0 * 370.0 / 450.0, "assumption: NVLink 3 per-direction 300 GB/s "
                            "x the ring busbw fraction H100 reaches (370/450)", "assumption"),
    "B200-SXM": Figure(900.0 * 370.0 / 450.0, "assumption: NVLink 5 per-direction 900 GB/s x "
                       "H100's ring busbw fraction (370/450); what-if", "assumption"),
}


def power_fallback(gpu: GPU) -> Figure:
    return Figure(gpu.tdp_w, f"assumption: GPU at its {gpu.tdp_w:.0f} W TDP under training load "
                             f"({gpu.peaks.source})", "assumption")
