"""Tile configs for the scaled GEMM and the heuristic that picks one.

A config is a frozen dataclass validated on construction. The heuristic below encodes what
the H100 runs of `scripts/bench_scaled.py` showed (see BENCHMARKS.md); sweeps live in that
script, never here.
"""

from __future__ import annotations

import dataclasses


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
