"""Tile configs for the scaled GEMM and the heuristic that picks one.

A config is a frozen dataclass validated on construction. The heuristic below encodes what
the H100 runs of `scripts/bench_scaled.py` showed (see BENCHMARKS.md); sweeps live in that
script, never here.
"""

from __future__ import annotations

import dataclasses

from pallas_kernels.scaled_gemm.mosaic_kernel import MosaicGemmConfig


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class GemmConfig:
    """One program computes block_m x block_n outputs, stepping block_k along K.

    mode: "epilogue" (scales constant along K), "promote" (per-K-group promotion of a
    fresh partial accumulator) or "dot_scaled" (Triton's tl.dot_scaled; MX only), or
    "auto" to let the kernel pick from the block shapes.
    """
    block_m: int = 128
    block_n: int = 128
    block_k: int = 128
    group_m: int = 8
    num_warps: int = 8
    num_stages: int = 4
    mode: str = "auto"
    groups_per_step: int = 1     # promote mode: 2 = two groups' dots per loop step (triton 3.6
                                 # waits on each before its promotion: no overlap gained)

    def __post_init__(self):
        if self.groups_per_step not in (1, 2):
            raise ValueError(f"groups_per_step={self.groups_per_step} must be 1 or 2")
        for name in ("block_m", "block_n", "block_k"):
            v = getattr(self, name)
            if v < 16 or v & (v - 1):
                raise ValueError(f"{name}={v} must be a power of two >= 16")
        if self.mode not in ("auto", "epilogue", "promote", "dot_scaled"):
            raise ValueError(f"mode={self.mode!r} must be auto, epilogue, promote or dot_scaled")
        if self.num_warps not in (4, 8):
            raise ValueError(f"num_warps={self.num_warps} must be 4 or 8")
        if not 1 <= self.num_stages <= 6:
            raise ValueError(f"num_stages={self.num_stages} must be in 1..6")


def choose_config(*, m: int, n: int, kp: int, group_k: int, mx: bool, four_bit: bool) -> GemmConfig:
    """Heuristic tile choice from the problem's static facts.

    group_k: K elements per scale group (min of the two blocks; = Kp for per-row scales).
    """
    small_m = m <= 64
    bm = 64 if small_m else 128
    if group_k >= kp:                                   # per-token x per-channel
        return GemmConfig(block_m=bm, block_n=256 if not small_m else 128, block_k=128,
                          num_warps=8, num_stages=4 if not small_m else 5, mode="epilogue")
    if mx and group_k == 32:
        return GemmConfig(block_m=bm, block_n=128, block_k=128, num_warps=8, num_stages=3,
                          mode="dot_scaled")
    bk = min(128, group_k)
    return GemmConfig(block_m=bm, block_n=128, block_k=bk, num_warps=8,
                      num_stages=4 if bk >= 128 else 5, mode="promote")


# impl="auto" on GPU sends scaled products with M <= TRITON_MAX_M to the Triton kernel's
# small-M tiles, larger ones to the Mosaic GPU kernel. Measured on H100 (BENCHMARKS.md session
# 9, `h100_scaled_small_m.txt`): at M = 16 and 64 Triton beat the Mosaic kernel's prefill
# tiles on 8 of 9 recipe x shape pairs (at M = 1 each won some); from M = 512 (Llama-3-8B
# prefill, the 4096-row GEMMs) the Mosaic kernel won everywhere. M between 65 and 511 is
# untimed.
TRITON_MAX_M = 64


def choose_mosaic_config(*, kp: int, np_: int, group_k: int) -> MosaicGemmConfig:
    """Tiles of the Mosaic GPU kernel: the fastest measured on H200 (BENCHMARKS.md session 9;
    8192^3, 4096x7168x16384, 4096x14336x4096), narrowed along N where Np needs it.

    Epilogue (scales constant along K): 128x128 per warpgroup, a 128x256 CTA tile, 3 stages
    (4 do not fit in shared memory). Promotion per 128-deep group: 64-row warpgroup tiles (the
    fresh accumulator and the f32 sum both live in registers, 2 x 64 per thread), the two
    warpgroups stacked along M. Promotion per 32-deep group: 64x128 tiles side by side along
    N, 8 stages."""
    # A group the kernel cannot step by gets tile_k 128; `mosaic_kernel.unsupported_reason`
    # then names the mismatch.
    tk = group_k if group_k in (32, 64, 128, 256) else 128
    if group_k >= kp:
        tm, tn, tk, wg, steps = 128, 128, 128, "n", 3
    elif tk >= 128:
        tm, tn, wg, steps = 64, 128, "m", 4
    else:
        tm, tn, wg, steps = 64, 128, "n", 8
    if wg == "n" and np_ % (2 * tn):
        wg = "m"
    while tn > 32 and np_ % tn:
        tn //= 2
    return MosaicGemmConfig(tile_m=tm, tile_n=tn, tile_k=tk, wg_dim=wg,
                            max_concurrent_steps=steps, grid_minor_dim="m",
                            epi_tile_n=min(64, tn))
