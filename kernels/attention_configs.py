"""Attention kernel configurations: plain data, with what chose each sm90 entry.

sm90 (the TMA path) uses tables that `python -m kernels.inspect` proved: every entry compiled for
sm90 (bf16, causal and not) without a register spill and within 227 KiB of shared memory. The
forward autotunes over its table; the backward runs one fixed config per head_dim unless
COLOSSUS_TUNE=1 asks for its (spill-free) table. Other GPUs prune a search space by an estimate
of shared memory and registers (`config_fits`), which counts the score tiles as well as the
accumulators.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("fwd", "dkdv", "dq")


@dataclass(frozen=True)
class BlockConfig:
    """Tile sizes and launch shape of one kernel.

    block_m: query rows per tile; block_n: key/value rows per tile. The forward and dQ kernels
    own a q block and loop over kv blocks; the dK/dV kernel owns a kv block and loops over q.
    """

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2
    why: str = field(default="", compare=False)  # what chose this entry

    def label(self) -> str:
        return f"{self.block_m}x{self.block_n} w{self.num_warps} s{self.num_stages}"


def _grid(ms, ns, warps, stages) -> list[BlockConfig]:
    return [BlockConfig(m, n, w, s) for m in ms for n in ns for w in warps for s in stages]


# Candidate spaces, searched once by the inspection to build the sm90 tables below, and by the
# autotuner on other GPUs. sm90: BLOCK_M 128 with BLOCK_N 64/128, 4-8 warps, 2-3 stages (the
# shapes of FlashAttention-2/3 and Triton tutorial 06 on Hopper) and 64-row blocks. "portable":
# smaller tiles for the smaller shared memory of sm80/sm86/sm89. The backward spaces follow
# tutorial 06 (kv block 64-128 owned, q steps of 32-64) and FlashAttention-2's sm80 backward.
CONFIGS: dict[str, dict[str, list[BlockConfig]]] = {
    "sm90": {
        "fwd": _grid((128,), (64, 128), (4, 8), (2, 3)) + _grid((64,), (64,), (4,), (2, 3)),
        "dkdv": _grid((32, 64), (64, 128), (4, 8), (2, 3)),
        "dq": _grid((64, 128), (32, 64), (4, 8), (2, 3)),
    },
    "portable": {
        "fwd": _grid((64, 128), (32, 64), (4, 8), (2, 3, 4)),
        "dkdv": _grid((16, 32), (64, 128), (4, 8), (2, 3)),
        "dq": _grid((32, 64, 128), (32, 64), (4, 8), (2, 3)),  # 32 rows: hd256 in 99 KiB
    },
}

def _c(m: int, n: int, warps: int, stages: int, regs: int, smem: int) -> BlockConfig:
    why = (f"ptxas sm90 triton 3.8: {regs} regs, 0 spill, {smem} B smem (bf16, causal and not);"
           " 0 spill with triton 3.6 too")
    return BlockConfig(m, n, warps, stages, why)


# The sm90 tables (16-bit inputs): kind -> head_dim -> spill-free configs, the fixed (default)
# one first. Chosen from the inspection of CONFIGS["sm90"] (kernels/ATTENTION_NOTES.md): 4-warp
# 128-row tiles spill from head_dim 128 on (fwd 128x64: 112-140 B; dQ 128x64: ~1 KB) and every
# 64x128 dK/dV tile spills at head_dim 128; the old estimate (accumulators only) kept them.
# The backward's first entries follow tutorial 06 (kv block 128 with q steps of 32 for dK/dV,
# q block 128 with kv steps of 32 for dQ) where that spills with neither Triton 3.6 nor 3.8,
# with 8 warps; the entries were checked with both (ATTENTION_NOTES.md).
SM90: dict[str, dict[int, tuple[BlockConfig, ...]]] = {
    "fwd": {
        64: (_c(128, 128, 8, 3, 170, 115712), _c(128, 128, 8, 2, 170, 82944),
             _c(128, 64, 4, 3, 191, 66560), _c(128, 64, 8, 3, 122, 66560)),
        128: (_c(128, 128, 8, 2, 189, 164864), _c(128, 128, 8, 3, 189, 230400),
              _c(128, 64, 8, 3, 144, 132096), _c(64, 64, 4, 3, 141, 115712)),
        256: (_c(128, 64, 8, 2, 219, 196640), _c(64, 64, 4, 3, 221, 230400),
              _c(64, 64, 4, 2, 221, 164864)),
    },
    "dkdv": {
        64: (_c(32, 128, 8, 3, 149, 57880), _c(64, 128, 8, 3, 217, 83968),
             _c(64, 64, 8, 3, 191, 67584), _c(32, 64, 4, 3, 163, 41984)),
        # hd128: 32x128 w8 s3 and 64x64 w8 s3 (242, 228 regs with 3.8) spill with 3.6 (8, 32 B)
        128: (_c(32, 64, 8, 3, 174, 82944), _c(32, 64, 8, 2, 187, 65808),
              _c(32, 128, 8, 2, 245, 98576)),
        # hd256: every 4-warp and 64-row tile spills, kv blocks of 32 lose wgmma (m64
        # minimum); 16-row q steps (searched beyond CONFIGS) do not; 32x64 w8 s3 spills
        # with 3.6 (84 B)
        256: (_c(16, 64, 8, 3, 236, 114968), _c(16, 64, 8, 2, 240, 98448)),
    },
    "dq": {
        64: (_c(128, 32, 8, 3, 90, 57368), _c(128, 64, 8, 3, 122, 82944),
             _c(64, 64, 4, 3, 122, 66560), _c(64, 32, 4, 3, 90, 41984)),
        128: (_c(128, 32, 8, 3, 133, 114712), _c(128, 64, 8, 3, 168, 164864),
              _c(64, 64, 4, 3, 161, 132096), _c(64, 32, 4, 3, 137, 82944)),
        256: (_c(64, 32, 8, 3, 177, 164864), _c(128, 32, 8, 3, 237, 229400),
              _c(64, 64, 8, 2, 210, 197632), _c(64, 32, 4, 3, 237, 164864)),
    },
}

# Used only when no config above fits: fp32 at head_dim 256 (4-byte tiles of 256 columns). One
# stage and 32-row tiles (16-row q steps in 99 KiB). Compiled here without a GPU (Triton 3.8,
# fp32, causal), shared memory: sm90 with descriptors fwd 37 KB, dkdv 98 KB, dq 66 KB; sm86 with
# pointers fwd 70 KB, dkdv 100 KB, dq 98 KB (limit 99 KiB). Not measured on a GPU yet.
FALLBACK_CONFIGS: dict[str, dict[str, BlockConfig]] = {
    "sm90": {k: BlockConfig(32, 32, 4, 1) for k in KINDS},
    "portable": {"fwd": BlockConfig(32, 32, 4, 1), "dkdv": BlockConfig(16, 32, 4, 1),
                 "dq": BlockConfig(16, 32, 4, 1)},
}

# The interpreter runs one config (autotune needs a GPU). block_m != block_n on purpose, so the
# tests exercise the causal block arithmetic with unequal tiles; small tiles keep it quick.
CPU_CONFIGS: dict[str, BlockConfig] = {
    "fwd": BlockConfig(32, 16, 4, 1),
    "dkdv": BlockConfig(16, 32, 4, 1),
    "dq": BlockConfig(32, 16, 4, 1),
}

DELTA_BLOCK_M = 64  # rows per program of the delta preprocess (memory-bound; any size works)
DELTA_WARPS = 4

# Register budget per thread for the estimate: sm90/sm80 allow 255, and addresses, indices,
# softmax statistics and loop state need the rest (assumption; the sm90 inspection found
# spills once the fp32 tiles below pass ~190 per thread, e.g. fwd 128x128 hd256 with 8 warps).
REGS_PER_THREAD = 160


def fp32_regs(kind: str, cfg: BlockConfig, head_dim: int) -> int:
    """fp32 values live per thread at the loop's peak: the accumulators plus the score tiles
    (fwd: acc m x d, S and P m x n; dkdv: dK, dV 2 n x d, S^T and dP^T 2 n x m; dq: acc m x d,
    S and dP 2 m x n), spread over the threads."""
    m, n, d = cfg.block_m, cfg.block_n, head_dim
    live = {"fwd": m * d + 2 * m * n, "dkdv": 2 * n * d + 2 * n * m, "dq": m * d + 2 * m * n}
    if kind not in live:
        raise ValueError(f"unknown kernel kind {kind!r}")
    return live[kind] // (32 * cfg.num_warps)


def config_fits(kind: str, cfg: BlockConfig, head_dim: int, elem_bytes: int,
                smem_bytes: int) -> bool:
    """Prune configs that cannot fit (estimates; the autotuner also skips compile failures).

    Shared memory: the tile held for the whole program once, plus the two streamed tiles per
    pipeline stage (fwd: q + stages*(k, v); dkdv: k, v + stages*(q, dO); dq: q, dO +
    stages*(k, v)). Registers: `fp32_regs` must stay within REGS_PER_THREAD.
    """
    m, n, d = cfg.block_m, cfg.block_n, head_dim
    if kind == "fwd":
        smem = m * d + cfg.num_stages * 2 * n * d
    elif kind == "dkdv":
        smem = 2 * n * d + cfg.num_stages * 2 * m * d
    elif kind == "dq":
        smem = 2 * m * d + cfg.num_stages * 2 * n * d
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    return (smem * elem_bytes <= smem_bytes
            and fp32_regs(kind, cfg, head_dim) <= REGS_PER_THREAD)


def gpu_configs(kind: str, arch: str, head_dim: int, elem_bytes: int, smem_bytes: int,
                tune: bool = True) -> list[BlockConfig]:
    """The configs a GPU launch may use, best guess first.

    sm90, 16-bit: the inspected table (the forward's whole table; the backward's first entry
    unless `tune`). Otherwise: the configs of CONFIGS[arch][kind] that fit, else the small
    FALLBACK_CONFIGS one (fp32 at head_dim 256), else a ValueError saying why.
    """
    if arch == "sm90" and elem_bytes == 2:
        table = list(SM90[kind][head_dim])  # inspected: fits 227 KiB, no spill
        return table if tune or kind == "fwd" else table[:1]
    space = CONFIGS[arch][kind]
    fits = [c for c in space if config_fits(kind, c, head_dim, elem_bytes, smem_bytes)]
    if fits:
        return fits if tune or arch != "sm90" else fits[:1]
    fallback = FALLBACK_CONFIGS[arch][kind]
    if config_fits(kind, fallback, head_dim, elem_bytes, smem_bytes):
        return [fallback]
    raise ValueError(f"attention: no {kind} tile fits head_dim {head_dim} with {elem_bytes}-byte "
                     f"elements in {smem_bytes} bytes of shared memory; use bf16/fp16 or a "
                     "smaller head_dim")
