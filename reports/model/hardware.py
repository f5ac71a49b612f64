"""GPU, node, fabric and cluster presets for the scaling model, every parameter with its source.

Datasheet peaks come from the one peak table, `bench.device.PEAKS`; only a what-if GPU that
table lacks (B200) carries its peaks here. Each preset holds plain values plus a `sources` dict
(parameter name -> where the number comes from, or "assumption: ..."). Presets are plain data:
add one by adding an entry to GPUS or CLUSTERS.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from results.peaks import PEAKS, Peaks

GIB = 2**30

# --- what-if GPU peaks that bench.device.PEAKS lacks ---------------------------------------------

_B200_SRC = (
    "NVIDIA HGX B200 datasheet (2024): 8-GPU figures / 8, dense = sparse/2; memory as DGX B200 "
    "(1,440 GB for 8 GPUs); what-if only"
)
WHAT_IF_PEAKS: dict[str, Peaks] = {
    "B200-SXM": Peaks(2250.0, 2250.0, 4500.0, 1125.0, None, 8.0, 180, 1000, _B200_SRC),
}


def peaks_of(gpu: str) -> Peaks:
    """Datasheet peaks of a GPU model: bench.device.PEAKS first, then the what-if table here."""
    if gpu in PEAKS:
        return PEAKS[gpu]
    if gpu in WHAT_IF_PEAKS:
        return WHAT_IF_PEAKS[gpu]
    known = sorted(set(PEAKS) | set(WHAT_IF_PEAKS))
    raise ValueError(f"unknown GPU model {gpu!r}; known: {', '.join(known)}")


# --- GPUs: what the model needs beyond the peak table --------------------------------------------


@dataclass(frozen=True)
class GPU:
    """One GPU model as the scaling model sees it.

    `nvlink_gbps` is the NVLink bandwidth per direction (GB/s); `sm_count` and `gemm_tile` feed the
    fallback GEMM model; `arch` picks the attention fallback (flash kernels exist for Hopper on).
    `memory_total_bytes` is the device memory the driver reports (binary units: the "80 GB" of an
    H100 is 80 GiB of HBM, less what the driver reserves), not the datasheet's decimal GB;
    `node_gpus` is how many of them share one NVLink domain (an HGX/DGX baseboard).
    """

    name: str  # PEAKS key
    arch: str  # "ampere", "hopper", "blackwell"
    sm_count: int
    nvlink_gbps: float
    memory_total_bytes: int
    node_gpus: int = 8
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def peaks(self) -> Peaks:
        return peaks_of(self.name)

    @property
    def bf16_tflops(self) -> float:
        return float(self.peaks.bf16_tflops)

    @property
    def memory_bytes(self) -> float:
        """Total device memory as the driver reports it (the model applies its usable fraction)."""
        return float(self.memory_total_bytes)

    @property
    def hbm_tbps(self) -> float:
        return float(self.peaks.hbm_tbps)

    @property
    def tdp_w(self) -> float:
        return float(self.peaks.tdp_w)


_NVL4 = ("NVLink 4: 900 GB/s total per GPU, 450 per direction (NVIDIA H100 Tensor Core GPU "
         "datasheet)")
MIB = 2**20
# Device memory as reported on real parts: public readings of the shipped parts, not measured by
# this project. torch's get_device_properties().total_memory is what an allocator can use; on
# the H100 it equals nvidia-smi's memory.total, on the A100 80GB it is 0.65 GiB less.
_MEM_SRC = ("nvidia-smi memory.total {mib:,} MiB = {gib:.1f} GiB on {part} (public nvidia-smi "
            "listings; assumption: every part of the model reports the same){extra}")


def _mem_source(mib: float, part: str, extra: str = "") -> str:
    return _MEM_SRC.format(mib=round(mib), gib=mib / 1024, part=part, extra=extra)


_H100_MEM = 85_520_809_984  # torch total_memory on "NVIDIA H100 80GB HBM3" (= 81,559 MiB)
_A100_MEM = round(79.35 * 2**30)  # torch's "79.35 GiB total capacity" on the A100-SXM4-80GB
_H200_MEM = 143_771 * MIB
_NODE8 = "8 GPUs per NVLink domain on an HGX/DGX baseboard (NVIDIA DGX H100 / HGX H200 datasheets)"
GPUS: dict[str, GPU] = {
    "H100-SXM": GPU("H100-SXM", "hopper", 132, 450.0, _H100_MEM, 8, {
        "peaks": PEAKS["H100-SXM"].source, "nvlink_gbps": _NVL4,
        "sm_count": "132 SMs (NVIDIA H100 Tensor Core GPU architecture whitepaper, H100 SXM5)",
        "memory_total_bytes": "torch.cuda.get_device_properties().total_memory 85,520,809,984 B "
                              "(79.6 GiB) on NVIDIA H100 80GB HBM3, = nvidia-smi 81,559 MiB "
                              "(memory.total in published nvidia-smi listings)",
        "node_gpus": _NODE8}),
    "H200-SXM": GPU("H200-SXM", "hopper", 132, 450.0, _H200_MEM, 8, {
        "peaks": PEAKS["H200-SXM"].source, "nvlink_gbps": _NVL4,
        "sm_count": "132 SMs: the H100 SXM5 die (NVIDIA H200 datasheet: same Hopper GPU, HBM3e)",
        "memory_total_bytes": _mem_source(143_771, "NVIDIA H200 (141 GB)"),
        "node_gpus": _NODE8}),
    "A100-SXM-80GB": GPU("A100-SXM-80GB", "ampere", 108, 300.0, _A100_MEM, 8, {
        "peaks": PEAKS["A100-SXM-80GB"].source,
        "nvlink_gbps": "NVLink 3: 600 GB/s total per GPU, 300 per direction (NVIDIA A100 "
                       "datasheet)",
        "sm_count": "108 SMs (NVIDIA A100 whitepaper)",
        "memory_total_bytes": "torch total capacity 79.35 GiB on NVIDIA A100-SXM4-80GB, as "
                              "CUDA out-of-memory errors print it (public training logs); "
                              "nvidia-smi memory.total lists 81,920 MiB (80.0 GiB)",
        "node_gpus": "8 A100 per DGX A100 / HGX A100 baseboard (NVIDIA DGX A100 datasheet)"}),
    "B200-SXM": GPU("B200-SXM", "blackwell", 148, 900.0, 183_359 * MIB, 8, {
        "peaks": _B200_SRC,
        "nvlink_gbps": "NVLink 5: 1.8 TB/s total per GPU, 900 per direction (NVIDIA HGX B200 "
                       "datasheet); what-if",
        "sm_count": "148 SMs (NVIDIA Blackwell architecture technical brief); what-if",
        "memory_total_bytes": _mem_source(183_359, "NVIDIA B200 (180 GB)", "; what-if"),
        "node_gpus": "8 B200 per HGX B200 baseboard (NVIDIA HGX B200 datasheet); what-if"}),
}


def gpu(name: str) -> GPU:
    """The GPU preset for a PEAKS key (H100-SXM, H200-SXM, A100-SXM-80GB, B200-SXM)."""
    if name not in GPUS:
        raise ValueError(f"unknown GPU {name!r}; the model knows {', '.join(sorted(GPUS))} "
                         f"({', '.join(sorted(WHAT_IF_PEAKS))} as a what-if of the model alone; "
                         "`info`'s peak table lists "
                         "the GPUs that can be measured, and the model needs each one's "
                         "memory, NVLink and node too)")
    return GPUS[name]


# --- fabrics: the scale-out network ---------------------------------------------------------------


@dataclass(frozen=True)
class Fabric:
    """The scale-out network as one NIC per GPU sees it.

    `gbps_per_gpu` is the NIC line rate in Gb/s; `efficiency` the achievable fraction of it for
    large collectives at scale; `alpha_s` the per-step latency of an inter-node collective step.
    """

    name: str
    gbps_per_gpu: float
    efficiency: float
    alpha_s: float
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def busbw_gbps(self) -> float:
        """Achievable per-GPU bus bandwidth in GB/s: line rate / 8 bits x efficiency."""
        return self.gbps_per_gpu / 8 * self.efficiency


_ALPHA_NET = ("assumption: ~6 us per inter-node collective step (order of nccl-tests small-message "
              "latency across nodes)")
_NIC_MEASURED = ("one 400 Gb/s NIC measures 46-49 GB/s busbw of 50 GB/s line rate "
                 "(NVIDIA/nccl-tests issues #290, #267)")
FABRICS: dict[str, Fabric] = {
    "spectrum-x-400g": Fabric("spectrum-x-400g", 400.0, 0.95, 6e-6, {
        "gbps_per_gpu": "one 400 GbE BlueField-3 SuperNIC per GPU (NVIDIA newsroom, Oct 2024: "
                        "xAI Colossus on Spectrum-X)",
        "efficiency": "NVIDIA claims 95% data throughput on Spectrum-X at scale (NVIDIA "
                      "newsroom, Oct 2024), "
                      "consistent with " + _NIC_MEASURED,
        "alpha_s": _ALPHA_NET}),
    "ethernet-400g": Fabric("ethernet-400g", 400.0, 0.60, 6e-6, {
        "gbps_per_gpu": "one 400 GbE NIC per GPU (what-if)",
        "efficiency": "NVIDIA's figure for standard Ethernet at scale: 60% (NVIDIA newsroom, "
                      "Oct 2024); what-if",
        "alpha_s": _ALPHA_NET}),
    "hdr-ib-200g": Fabric("hdr-ib-200g", 200.0, 0.94, 6e-6, {
        "gbps_per_gpu": "8x 200 Gb/s HDR InfiniBand per DGX A100 node, one per GPU (NVIDIA DGX "
                        "A100 datasheet; Selene is a DGX A100 SuperPOD)",
        "efficiency": "assumption: the 47/50 measured on a 400G NIC (" + _NIC_MEASURED + ") "
                      "carries over to HDR InfiniBand",
        "alpha_s": _ALPHA_NET}),
    "omni-path-4x100g": Fabric("omni-path-4x100g", 50.0, 0.94, 6e-6, {
        "gbps_per_gpu": "4x 100 Gb/s Omni-Path links per 8-GPU node (BigScience 2022, BLOOM, "
                        "sec. 3.4.1: Jean Zay): 50 Gb/s per GPU",
        "efficiency": "assumption: as HDR InfiniBand",
        "alpha_s": _ALPHA_NET}),
}

# Eos's fabric (validation only, so not a what-if choice in FABRICS): NDR InfiniBand, 400 Gb/s
# per GPU, with the efficiency measured on a 400G NIC.
NDR_IB_400G = Fabric("ndr-ib-400g", 400.0, 0.94, 6e-6, {
    "gbps_per_gpu": "8x 400 Gb/s NDR InfiniBand per DGX H100 node, one per GPU (NVIDIA DGX H100 "
                    "datasheet)",
    "efficiency": "assumption: the 47/50 measured on a 400G NIC (" + _NIC_MEASURED + ") "
                  "carries over to NDR InfiniBand",
    "alpha_s": _ALPHA_NET})


# --- clusters -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """GPUs of one type in a cluster."""

    gpu: str  # GPUS key
    gpus: int


@dataclass(frozen=True)
class Power:
    """What a cluster draws beyond its GPUs (all assumptions, labelled in `sources`)."""

    node_overhead_w: float  # CPUs, NICs, fans, memory, storage per node under load
    network_fraction: float  # switches and optics, as a fraction of IT power
    pue: float  # facility power / IT power


@dataclass(frozen=True)
class Cluster:
    """A cluster: GPU pools, node shape, NVLink collectives inside a node, scale-out fabric."""

    name: str
    pools: tuple[Pool, ...]
    gpus_per_node: int
    fabric: Fabric
    power: Power
    reported_power_mw: float | None = None
    nvlink_alpha_s: float = 1.5e-6
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def gpus(self) -> int:
        return sum(p.gpus for p in self.pools)

    @property
    def gpu_types(self) -> list[str]:
        return [p.gpu for p in self.pools]

    @property
    def nodes(self) -> int:
        return -(-self.gpus // self.gpus_per_node)

    def with_pools(self, pools: tuple[Pool, ...], name: str | None = None) -> Cluster:
        """The same cluster with other GPU pools (e.g. all-H100 for a comparison)."""
        return Cluster(name or self.name, pools, self.gpus_per_node, self.fabric, self.power,
                       self.reported_power_mw, self.nvlink_alpha_s, self.sources)


_HGX_POWER = Power(node_overhead_w=4600.0, network_fraction=0.05, pue=1.1)
_HGX_POWER_SRC = (
    "node overhead 4.6 kW: DGX H100 system max 10.2 kW minus 8x700 W GPUs (NVIDIA DGX H100 "
    "datasheet; assumption: Colossus' Supermicro HGX servers draw alike); assumption: switches "
    "and optics 5% of IT power; assumption: PUE 1.1 for a liquid-cooled site")
_COLOSSUS_SRC = {
    "gpus_per_node": "8 GPUs per Supermicro liquid-cooled server (ServeTheHome Colossus tour, "
                     "Oct 2024)",
    "fabric": "Spectrum-X SN5600 switches, one 400 GbE SuperNIC per GPU (NVIDIA newsroom, "
              "Oct 2024)",
    "power": _HGX_POWER_SRC,
    "reported_power_mw": "about 150 MW for the site (public reports of the Memphis site, 2024)",
    "nvlink_alpha_s": "assumption: ~1.5 us per NVLink collective step (small-message latency)",
}
_A100_POWER = Power(node_overhead_w=3300.0, network_fraction=0.05, pue=1.2)
_A100_POWER_SRC = ("node overhead 3.3 kW: DGX A100 system max 6.5 kW minus 8x400 W GPUs (NVIDIA "
                   "DGX A100 datasheet); assumption: network 5% of IT power; assumption: PUE 1.2")

CLUSTERS: dict[str, Cluster] = {
    "colossus-100k": Cluster(
        "colossus-100k", (Pool("H100-SXM", 100_000),), 8, FABRICS["spectrum-x-400g"],
        _HGX_POWER, 150.0, sources={**_COLOSSUS_SRC,
                                    "pools": "100,000 H100 in the first phase (NVIDIA "
                                             "newsroom, Oct 2024)"}),
    "colossus-200k": Cluster(
        "colossus-200k", (Pool("H100-SXM", 150_000), Pool("H200-SXM", 50_000)), 8,
        FABRICS["spectrum-x-400g"], _HGX_POWER, None,
        sources={**_COLOSSUS_SRC, "pools": "plan: double to 200k Hopper GPUs, 50k of the "
                                           "additions H200 (xAI announcement, Oct 2024)",
                 "reported_power_mw": "none reported for 200k"}),
    "colossus-200k-h200": Cluster(
        "colossus-200k-h200", (Pool("H100-SXM", 100_000), Pool("H200-SXM", 100_000)), 8,
        FABRICS["spectrum-x-400g"], _HGX_POWER, None,
        sources={**_COLOSSUS_SRC, "pools": "what-if: all 100,000 additions H200",
                 "reported_power_mw": "none reported"}),
    "colossus-100k-b200": Cluster(
        "colossus-100k-b200", (Pool("B200-SXM", 100_000),), 8, FABRICS["spectrum-x-400g"],
        Power(node_overhead_w=6300.0, network_fraction=0.05, pue=1.1), None,
        sources={**_COLOSSUS_SRC, "pools": "what-if: 100,000 B200 on the same fabric",
                 "power": "node overhead 6.3 kW: DGX B200 system max ~14.3 kW minus 8x1000 W "
                          "GPUs (NVIDIA DGX B200 datasheet); network 5% and PUE 1.1 assumed",
                 "reported_power_mw": "none reported"}),
    "selene-a100": Cluster(
        "selene-a100", (Pool("A100-SXM-80GB", 3072),), 8, FABRICS["hdr-ib-200g"], _A100_POWER,
        None, sources={
            "pools": "up to 3,072 80-GB A100 GPUs used (Narayanan et al. 2021, Table 1)",
            "gpus_per_node": "8 A100 per DGX A100 node (Narayanan et al. 2021, section 5)",
            "fabric": "8x 200 Gb/s HDR InfiniBand per node (NVIDIA DGX A100 datasheet)",
            "power": _A100_POWER_SRC, "nvlink_alpha_s": _COLOSSUS_SRC["nvlink_alpha_s"]}),
    "meta-opt-a100": Cluster(
        "meta-opt-a100", (Pool("A100-SXM-80GB", 992),), 8, FABRICS["hdr-ib-200g"], _A100_POWER,
        None, sources={
            "pools": "992 80GB A100 GPUs (Zhang et al. 2022, OPT, section 2.4)",
            "gpus_per_node": "assumption: 8-GPU A100 nodes",
            "fabric": "assumption: one 200 Gb/s HDR InfiniBand NIC per GPU (cloud A100 nodes of "
                      "the time, e.g. Azure NDm A100 v4); not stated in the OPT paper",
            "power": _A100_POWER_SRC, "nvlink_alpha_s": _COLOSSUS_SRC["nvlink_alpha_s"]}),
    # the clusters of published H100 and A100 runs (validation); pools sized per run
    "meta-h100-roce": Cluster(
        "meta-h100-roce", (Pool("H100-SXM", 16384),), 8, FABRICS["spectrum-x-400g"],
        _HGX_POWER, None, sources={
            "pools": "16,384 H100 SXM of a 24k-GPU cluster (Dubey et al. 2024, sec. 3.3.1)",
            "fabric": "400 Gb/s RoCE per GPU (Dubey et al. 2024, sec. 3.3.1); assumption: the "
                      "95% efficiency of Spectrum-X",
            "power": _HGX_POWER_SRC, "nvlink_alpha_s": _COLOSSUS_SRC["nvlink_alpha_s"]}),
    "eos-h100": Cluster(
        "eos-h100", (Pool("H100-SXM", 6144),), 8, NDR_IB_400G, _HGX_POWER, None,
        sources={"pools": "up to 6,144 H100 in 768 DGX H100 nodes (Nemotron-4 340B report, "
                          "sec. 2.3)",
                 "fabric": "8x 400 Gb/s NDR InfiniBand per DGX H100 (NVIDIA DGX H100 "
                           "datasheet); assumption: 94% efficiency as a measured 400G NIC",
                 "power": _HGX_POWER_SRC, "nvlink_alpha_s": _COLOSSUS_SRC["nvlink_alpha_s"]}),
    "dgx-cloud-h100": Cluster(
        "dgx-cloud-h100", (Pool("H100-SXM", 2304),), 8, NDR_IB_400G, _HGX_POWER, None,
        sources={"pools": "up to 2,304 H100 (NVIDIA/dgxc-benchmarking recipes' largest scale)",
                 "fabric": "assumption: DGX H100 nodes, 8x 400 Gb/s NDR InfiniBand (NVIDIA DGX "
                           "H100 datasheet) at 94% efficiency as a measured 400G NIC",
                 "power": _HGX_POWER_SRC, "nvlink_alpha_s": _COLOSSUS_SRC["nvlink_alpha_s"]}),
    "jean-zay-a100": Cluster(
        "jean-zay-a100", (Pool("A100-SXM-80GB", 384),), 8, FABRICS["omni-path-4x100g"],
        _A100_POWER, None, sources={
            "pools": "384 A100 80GB in 48 nodes (BigScience 2022, BLOOM, sec. 3.4)",
            "fabric": "4 Omni-Path 100 Gb/s links per node (BigScience 2022, BLOOM, sec. 3.4.1)",
            "power": _A100_POWER_SRC, "nvlink_alpha_s": _COLOSSUS_SRC["nvlink_alpha_s"]}),
}


def cluster(name: str) -> Cluster:
    """A cluster preset by name."""
    if name not in CLUSTERS:
        raise ValueError(f"unknown cluster preset {name!r}; known: {', '.join(sorted(CLUSTERS))}")
    return CLUSTERS[name]
