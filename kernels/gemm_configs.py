"""GEMM kernel configurations: plain data, with what chose each entry.

The sm90 tables hold only tiles that `python -m kernels.inspect` compiled for sm90 without a
register spill and within the 227 KiB shared-memory opt-in; each entry's `why` names that
inspection (ptxas from the Triton wheel). A table per operand family, because the same tile
spills for one and not another: fp8 with precise accumulation keeps a second fp32 accumulator
(the wgmma partial sum), so its 128 x 256 and 64 x 256 tiles need 256 accumulator registers per
thread and spill (ptxas sm90 triton 3.8: 255 regs, 160 B spill stores + 128 B loads); they stay
for fast accumulation only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import triton


@dataclass(frozen=True)
class Tile:
    """One kernel configuration: tile sizes, L2 grouping, pipeline depth, warps."""

    block_m: int
    block_n: int
    block_k: int
    group_m: int
    stages: int
    warps: int
    subtile: bool = False  # TMA kernel only: store C in two halves (less smem, deeper pipeline)
    why: str = field(default="", compare=False)  # what chose this entry

    def config(self, tma: bool) -> triton.Config:
        kw = {"BLOCK_M": self.block_m, "BLOCK_N": self.block_n, "BLOCK_K": self.block_k,
              "GROUP_M": self.group_m}
        if tma:
            kw["EPILOGUE_SUBTILE"] = self.subtile
        return triton.Config(kw, num_warps=self.warps, num_stages=self.stages)

    def label(self) -> str:
        sub = " sub" if self.subtile else ""
        return (f"{self.block_m}x{self.block_n}x{self.block_k} g{self.group_m} "
                f"s{self.stages} w{self.warps}{sub}")


def tile_of(cfg: triton.Config) -> Tile:
    kw = cfg.kwargs
    return Tile(kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"], kw["GROUP_M"], cfg.num_stages,
                cfg.num_warps, kw.get("EPILOGUE_SUBTILE", False))


def smem_bytes(tile: Tile, in_bytes: int, out_bytes: int) -> int:
    """Shared memory of the TMA kernel: `stages` buffers of an A and a B tile, plus the C tile
    (or half of it when subtiled) staged for the TMA store. Compiled sizes were within ~550
    bytes of this (barriers, layout scratch)."""
    ab = tile.stages * (tile.block_m + tile.block_n) * tile.block_k * in_bytes
    c_cols = tile.block_n // 2 if tile.subtile else tile.block_n
    return ab + tile.block_m * c_cols * out_bytes


# Operand families of the sm90 tables: "16bit" (bf16, fp16), "fp8" (e4m3/e5m2, precise
# accumulation: the default), "fp8_fast" (COLOSSUS_GEMM_FP8_FAST_ACCUM=1), "tf32" and "fp32"
# (fp32 inputs with and without TF32).
FAMILIES = ("16bit", "fp8", "fp8_fast", "tf32", "fp32")


def family(dtype_bytes: int, fp8_precise: bool, tf32: bool) -> str:
    if dtype_bytes == 1:
        return "fp8" if fp8_precise else "fp8_fast"
    if dtype_bytes == 4:
        return "tf32" if tf32 else "fp32"
    return "16bit"


def _t(m, n, k, stages, warps, subtile=False, regs=0, smem=0):
    why = f"ptxas sm90 triton 3.8: {regs} regs, 0 spill, {smem} B smem; 0 spill with 3.6 too"
    return Tile(m, n, k, 8, stages, warps, subtile, why)


# sm90, after tutorial 09's persistent configs (BLOCK_M 128, BLOCK_N 128/256, BLOCK_K 64/128,
# 3-4 stages, 4/8 warps); BLOCK_M 64 serves skinny (decode) M, and for M <= 64 only those run.
# regs/smem: the largest over the inspected variants (bf16 and fp16, both B layouts).
HOPPER_TILES: dict[str, tuple[Tile, ...]] = {
    "16bit": (
        _t(128, 256, 64, 3, 8, regs=164, smem=213016),
        _t(128, 256, 64, 4, 8, True, regs=167, smem=229408),
        _t(128, 128, 64, 4, 8, regs=103, smem=163872),
        _t(128, 128, 128, 3, 8, regs=93, smem=229400),
        _t(64, 128, 64, 4, 4, regs=91, smem=114720),
        _t(64, 256, 64, 4, 4, regs=156, smem=196640),
    ),
    # precise accumulation (the default): 128 x 128 tiles at most, see the module docstring
    "fp8": (
        _t(128, 128, 128, 3, 8, regs=152, smem=131096),
        _t(128, 128, 128, 4, 8, regs=153, smem=163872),
        _t(128, 128, 64, 4, 8, regs=153, smem=98336),
        _t(64, 128, 128, 4, 4, regs=151, smem=114720),
        _t(64, 128, 64, 4, 4, regs=151, smem=65568),
    ),
    "fp8_fast": (
        _t(128, 256, 128, 3, 8, True, regs=255, smem=180248),
        _t(128, 256, 128, 4, 8, True, regs=254, smem=229408),
        _t(128, 128, 128, 4, 8, regs=128, smem=163872),
        _t(64, 128, 128, 4, 4, regs=96, smem=114720),
        _t(64, 256, 128, 3, 4, regs=167, smem=155672),
    ),
    "tf32": (
        _t(128, 128, 32, 4, 8, regs=97, smem=196640),
        _t(128, 256, 32, 3, 8, True, regs=161, smem=213016),
        _t(64, 128, 32, 4, 4, regs=92, smem=131104),
    ),
    # IEEE fp32 (FMA, no wgmma): a test dtype, not a benchmark one; BLOCK_K 32 spilled
    # (128x64x32 w8: 896 B, 64x64x32 w4: 824 B), the FMA dot holds a K slice per thread;
    # BLOCK_K 8 does not compile with Triton 3.6
    "fp32": (
        _t(128, 64, 16, 3, 8, regs=224, smem=61456),
        _t(64, 64, 16, 3, 4, regs=222, smem=36880),
    ),
}

# Other GPUs (Ampere/Ada style), after tutorial 03's CUDA configs; configs that run out of shared
# memory on a given GPU are skipped by the autotuner. Not inspected (the inspection is sm90).
PORTABLE_TILES: tuple[Tile, ...] = (
    Tile(128, 256, 64, 8, 3, 8),
    Tile(64, 256, 32, 8, 4, 4),
    Tile(128, 128, 32, 8, 4, 4),
    Tile(128, 64, 32, 8, 4, 4),
    Tile(64, 128, 32, 8, 4, 4),
    Tile(64, 32, 32, 8, 5, 2),
    Tile(32, 64, 32, 8, 5, 2),
    Tile(128, 128, 128, 8, 3, 8),  # fp8
)

# The interpreter: one small config (autotuning needs a GPU); GROUP_M 2 and the subtiled epilogue
# so the tests walk the grouping and the split store.
INTERPRETER_TILE = Tile(32, 32, 32, 2, 1, 4, subtile=True)

SKINNY_M = 64  # M at or below this runs only the BLOCK_M = 64 tiles


def hopper_tiles(fam: str, m: int) -> tuple[Tile, ...]:
    """The sm90 tiles the autotuner tries for an operand family at M rows."""
    tiles = HOPPER_TILES[fam]
    if m <= SKINNY_M:
        smallest = min(t.block_m for t in tiles)
        return tuple(t for t in tiles if t.block_m == smallest)
    return tuple(t for t in tiles if t.block_m > SKINNY_M) or tiles
