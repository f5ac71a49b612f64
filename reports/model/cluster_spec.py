"""A cluster from a scenario file's dict: {"gpu", "gpus"} or {"pools": [...]}, with the fabric
and node shape optional, every key checked (wrong types raise TypeError, bad values ValueError,
each naming the key). Presets live in reports/model/hardware.py."""

from __future__ import annotations

import math

from reports.model.hardware import (
    _A100_POWER,
    _A100_POWER_SRC,
    _COLOSSUS_SRC,
    _HGX_POWER,
    _HGX_POWER_SRC,
    FABRICS,
    Cluster,
    Fabric,
    Pool,
    gpu,
)

# (no "power": a cluster's power overheads follow its GPU type, see Power)
_CLUSTER_KEYS = {"name", "gpu", "gpus", "pools", "gpus_per_node", "scale_out_gbps_per_gpu",
                 "fabric", "fabric_efficiency"}


def cluster_from_dict(d: dict) -> Cluster:
    """A cluster from a scenario dict: {"gpu", "gpus"} or {"pools": [{"gpu", "gpus"}, ...]}.

    Optional: gpus_per_node (8), scale_out_gbps_per_gpu (400), fabric (a FABRICS name,
    default spectrum-x-400g), fabric_efficiency (that fabric's). Wrong types raise TypeError and
    bad values ValueError, each naming the key.
    """
    if not isinstance(d, dict):
        raise TypeError(f"cluster must be a preset name or a dict, not {type(d).__name__}")
    unknown = set(d) - _CLUSTER_KEYS
    if unknown:
        raise ValueError(f"unknown cluster keys: {', '.join(sorted(map(str, unknown)))}; "
                         f"allowed: {', '.join(sorted(_CLUSTER_KEYS))}")
    if "pools" in d:
        if "gpu" in d or "gpus" in d:
            raise ValueError("give either gpu/gpus or pools, not both")
        if not isinstance(d["pools"], list):
            raise TypeError(f"pools must be a list of {{gpu, gpus}} mappings, got {d['pools']!r}")
        pools = tuple(_pool(p, f"pools[{i}]") for i, p in enumerate(d["pools"]))
    else:
        if "gpu" not in d or "gpus" not in d:
            raise ValueError("cluster needs 'gpu' and 'gpus' (or 'pools')")
        pools = (_pool({"gpu": d["gpu"], "gpus": d["gpus"]}, ""),)
    if not pools:
        raise ValueError("cluster has no GPU pools")
    fabric_name = _string(d.get("fabric", "spectrum-x-400g"), "fabric")
    if fabric_name not in FABRICS:
        raise ValueError(f"unknown fabric {fabric_name!r}; known: {', '.join(sorted(FABRICS))}")
    base = FABRICS[fabric_name]
    gbps = _number(d.get("scale_out_gbps_per_gpu", base.gbps_per_gpu), "scale_out_gbps_per_gpu")
    eff = _number(d.get("fabric_efficiency", base.efficiency), "fabric_efficiency")
    if gbps <= 0:
        raise ValueError(f"scale_out_gbps_per_gpu must be > 0, got {gbps!r}")
    if not 0 < eff <= 1:
        raise ValueError(f"fabric_efficiency must be in (0, 1] (a fraction of the line rate), "
                         f"got {eff!r}")
    fabric = Fabric(base.name, gbps, eff, base.alpha_s,
                    {**base.sources, "gbps_per_gpu": "scenario file"} if "scale_out_gbps_per_gpu"
                    in d else base.sources)
    gpn = _positive_int(d.get("gpus_per_node", 8), "gpus_per_node")
    ampere = all(gpu(p.gpu).arch == "ampere" for p in pools)
    power = _A100_POWER if ampere else _HGX_POWER
    return Cluster(_string(d.get("name", "custom"), "name"), pools, gpn, fabric, power,
                   sources={"pools": "scenario file", "gpus_per_node": "scenario file",
                            "power": _A100_POWER_SRC if ampere else _HGX_POWER_SRC,
                            "nvlink_alpha_s": _COLOSSUS_SRC["nvlink_alpha_s"]})


def _pool(p, where: str) -> Pool:
    """One {gpu, gpus} entry of a scenario's cluster, checked (`where`: "pools[i]" or "")."""
    if not isinstance(p, dict):
        raise TypeError(f"{where} must be a mapping with 'gpu' and 'gpus', got {p!r}")
    if set(p) != {"gpu", "gpus"}:
        raise ValueError(f"{where} needs exactly the keys 'gpu' and 'gpus', got "
                         f"{', '.join(sorted(map(str, p)))}")
    prefix = f"{where}." if where else ""
    name = _string(p["gpu"], prefix + "gpu")
    gpu(name)  # raises on unknown GPUs
    return Pool(name, _positive_int(p["gpus"], prefix + "gpus"))


def _string(v, what: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what} must be a string, got {v!r} ({type(v).__name__})")
    return v


def _number(v, what: str) -> float:
    """A real number (int or float; bools and numeric strings refused)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise TypeError(f"{what} must be a number, got {v!r} ({type(v).__name__})")
    return float(v)


def _positive_int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ValueError(f"{what} must be a positive integer, got {v!r}")
    return v
