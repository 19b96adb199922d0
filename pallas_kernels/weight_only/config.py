"""Static facts of a weight-only matmul and the tile configs of its kernels.

Glossary (see `pallas_kernels.blocks` for block and layout)
    WeightSpec  what the kernel must know about the stored weight: element and scale dtypes,
                the scale block (block_k along K, block_n along N), layout, logical (k, n)
                and padded (kp, np_) sizes, and whether zeros / a global scale are present.
                Hashable: it is a static argument of the jitted kernels.
    TileConfig  how one kernel program covers the problem: a (block_m, block_n) output tile,
                a K step of block_k elements per loop iteration, and `split_k` programs
                sharing the K axis of one output tile (their f32 partial sums are added by
                XLA afterwards). Decode (M <= 64) is memory-bound: the chooser picks tiles
                and split_k so that enough programs stream the weight to fill 132 SMs.
                Prefill (M >= 256) is tensor-core bound: large tiles, no split.

The tile K step (block_k here, "tile") and the scale block (WeightSpec.block_k, "block")
are different things: a tile covers whole blocks (tile % block == 0, scales multiply the
decoded weight before the dot) or lies inside one block (block % tile == 0, the scale
multiplies the dot's result: fewer multiplies).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from pallas_kernels import blocks

ELEMENT_DTYPES = tuple(
    jnp.dtype(d)
    for d in (jnp.int8, jnp.int4, jnp.uint4, jnp.float8_e4m3fn, jnp.float4_e2m1fn)
)
SCALE_DTYPES = tuple(
    jnp.dtype(d)
    for d in (jnp.float32, jnp.bfloat16, jnp.float8_e8m0fnu, jnp.float8_e4m3fn)
)
KERNELS = ("dot", "gemv", "fma", "swapab", "kgemv", "mma")
NUM_SMS = 132  # H100 SXM / H200; only used to size split-K, never for correctness.
MMA_MAX_M = 32  # layout "mma": the tensor-core GEMV serves M <= 32 (measured: M=64 is faster
#                 through an "nk" copy and the prefill-style tiles, BENCHMARKS.md session 5)
# impl="auto" on GPU sends products with M >= XLA_PREFILL_MIN_M to XLA: the weight dequantized
# to x's dtype in one memory-bound pass (`blocks.dequantize_as`), then XLA's GEMM
# (`reference.weight_only_matmul_reference(..., convert=True, materialize=True)`). Measured on
# H200 with "mma" weights (BENCHMARKS.md session 8): that route beats our prefill tiles for
# every format from M=512 (0.51-0.60x XLA's bf16 dot against 0.39-0.48x at 512; 0.63-0.71x
# against 0.44-0.49x at 1024; 0.77-0.86x against 0.44-0.53x at 4096), ties them at M=256 and
# loses at M=128 (0.27-0.33x against 0.28-0.45x).
XLA_PREFILL_MIN_M = 512


def _pow2(v: int) -> bool:
    return v > 0 and v & (v - 1) == 0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WeightSpec:
    """Static description of one stored weight (see module docstring)."""

    element_dtype: np.dtype
    scale_dtype: np.dtype
    block_k: int
    block_n: int
    layout: str
    k: int
    n: int
    kp: int
    np_: int
    has_zeros: bool = False
    has_global_scale: bool = False

    def __post_init__(self):
        if self.element_dtype not in ELEMENT_DTYPES:
            raise ValueError(f"element_dtype={self.element_dtype} not in {ELEMENT_DTYPES}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype={self.scale_dtype} not in {SCALE_DTYPES}")
        if self.layout not in blocks.LAYOUTS:
            raise ValueError(f"layout={self.layout!r} must be one of {blocks.LAYOUTS}")
        if self.block_k <= 0 or self.block_n <= 0:
            raise ValueError(f"block_k={self.block_k} and block_n={self.block_n} must be > 0")
        if self.kp % self.block_k:
            raise ValueError(f"kp={self.kp} must be a multiple of block_k={self.block_k}")
        if self.np_ % self.block_n:
            raise ValueError(f"np_={self.np_} must be a multiple of block_n={self.block_n}")
        if self.four_bit and self.kp % 2:
            raise ValueError(f"kp={self.kp} must be even for 4-bit elements")
        if not (0 < self.k <= self.kp and 0 < self.n <= self.np_):
            raise ValueError(f"need 0 < k={self.k} <= kp={self.kp} and 0 < n={self.n} <= np_={self.np_}")

    @property
    def four_bit(self) -> bool:
        return blocks.is_four_bit(self.element_dtype)

    @property
    def stored_bytes(self) -> int:
        """Bytes of values + scales (+ zeros) read by one matmul."""
        vbytes = self.kp * self.np_ // (2 if self.four_bit else 1)
        nscales = (self.kp // self.block_k) * (self.np_ // self.block_n)
        sbytes = nscales * self.scale_dtype.itemsize * (2 if self.has_zeros else 1)
        return vbytes + sbytes


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class TileConfig:
    """One kernel program's tile (see module docstring). `num_warps`/`num_stages` are
    Triton's (ignored in interpret mode); `fast_decode` selects the GPU bit-trick upcast
    of the Triton kernel (inline PTX) instead of its portable arithmetic decode."""

    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    fast_decode: bool = True
    pre_scale: bool = False  # scale the tile before the dot even inside one block (prefill)
    x_mode: int = 1  # 4-bit, Triton: 0 split a loaded x tile, 1 load even/odd k, 2 interleave w,
    #                  3 (swapab) x reordered per K tile into [even k; odd k] by XLA, two dots;
    #                  mma (any codes): 1 x as it is, 2 x in the lanes' load order (XLA)
    kernel: str = "dot"  # Triton: "dot" (x @ W tiles), "gemv" (one x row per program),
    #                      "fma" (GEMV over <= 8 rows), "swapab" (W^T x^T on tensor cores),
    #                      "kgemv" (K-contiguous FMA GEMV over <= 8 rows, f32 upcast)
    unroll: int = 1  # kgemv: K tiles loaded per loop step (independent loads in flight)

    def __post_init__(self):
        for name in ("block_m", "block_n", "block_k", "split_k", "num_warps", "num_stages", "unroll"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"{name}={v!r} must be a positive int")
        for name in ("block_m", "block_n"):
            if not _pow2(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)} must be a power of 2")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel={self.kernel!r} must be one of {KERNELS}")
        if self.kernel == "gemv" and self.block_m != 1:
            raise ValueError(f"kernel='gemv' handles one row of x per program: block_m={self.block_m} must be 1")
        if self.kernel in ("fma", "kgemv") and self.block_m > 8:
            raise ValueError(f"kernel={self.kernel!r} unrolls over rows: block_m={self.block_m} must be <= 8")
        if self.x_mode not in (0, 1, 2, 3):
            raise ValueError(f"x_mode={self.x_mode} must be 0, 1, 2 or 3")
        if self.x_mode == 3 and self.kernel != "swapab":
            raise ValueError(f"x_mode=3 (x reordered into even/odd k) is a 'swapab' mode, not {self.kernel!r}'s")
        if self.kernel == "mma" and self.x_mode not in (1, 2):
            raise ValueError(f"kernel='mma' reads x as it is (x_mode=1) or in fragment order (x_mode=2), "
                             f"got x_mode={self.x_mode}")
        if self.kernel == "mma" and self.unroll not in (1, 2, 4):
            raise ValueError(f"kernel='mma' prefetches unroll = 1, 2 or 4 chunks per loop step (got {self.unroll})")
        if self.kernel == "mma" and (self.block_m not in (8, 16)
                                     or self.block_n not in (16 * self.num_warps * tn for tn in (1, 2, 4))):
            raise ValueError(f"kernel='mma' needs block_m in (8, 16) (n8 blocks of x rows) and block_n = 16 * "
                             f"num_warps * (1, 2 or 4) (16-row tiles per warp): got {self.block_m}, "
                             f"{self.block_n}, {self.num_warps}")
        if self.kernel == "swapab" and self.block_m < 16:
            raise ValueError(f"kernel='swapab' needs block_m={self.block_m} >= 16 (tensor-core tile)")

    def check(self, spec: WeightSpec) -> str | None:
        """Why this tile cannot cover `spec` (None when it can)."""
        if (spec.layout == "mma") != (self.kernel == "mma"):
            return (f"layout {spec.layout!r} is read by {'only' if spec.layout == 'mma' else 'every kernel but'} "
                    f"the tensor-core GEMV kernel='mma' (got kernel={self.kernel!r})")
        if self.kernel == "mma":
            return _mma_check(spec, self)
        bk, tk = spec.block_k, self.block_k
        if spec.four_bit and tk % 2:
            return f"tile block_k={tk} must be even for 4-bit elements"
        if bk < spec.kp and not (tk % bk == 0 or bk % tk == 0):
            return f"tile block_k={tk} and scale block_k={bk} must divide one another"
        if (self.kernel == "swapab" and self.block_m > 16
                and spec.element_dtype == jnp.dtype(jnp.float8_e4m3fn)):
            # Seen on an H200 (triton 3.6.0, GPU test): wrong results for e4m3 codes as the
            # register operand of a warpgroup dot with 64 rows of x; 16 rows are right.
            return f"kernel='swapab' with e4m3 codes needs block_m <= 16 (got {self.block_m})"
        if self.kernel == "swapab" and self.block_m > 128 and spec.element_dtype == jnp.dtype(jnp.int8):
            # Seen on an H200 (triton 3.6.0, bench sweep at K=8192): int8 codes as the register
            # operand with 256 rows of x give wrong results (norm error 1.8e-2 with Triton's
            # conversion, 3e3 with the PTX upcast); 128 rows are right.
            return f"kernel='swapab' with int8 codes needs block_m <= 128 (got {self.block_m})"
        spans = not (bk >= spec.kp or bk % tk == 0)  # the tile covers several scale blocks
        ck = kgemv_chunk(spec, self)
        kgemv_ok = self.kernel == "kgemv" and tk % ck == 0 and bk % ck == 0
        if spans and not (self.kernel == "dot" or (self.kernel == "swapab" and self.pre_scale) or kgemv_ok):
            return f"kernel={self.kernel!r} needs the tile K={tk} inside one scale block (block_k={bk})"
        if self.kernel == "kgemv" and spec.kp % tk:
            return f"kernel='kgemv' needs padded kp={spec.kp} to be a multiple of the tile K={tk}"
        bn, tn = spec.block_n, self.block_n
        if not (bn == 1 or bn % tn == 0):
            return f"scale block_n={bn} must be 1 or a multiple of tile block_n={tn}"
        return None


def mma_block_m(m: int) -> int:
    """The `mma` kernel's block_m for M rows of x: one or two n8 blocks per 16-row pass."""
    return 8 if m <= 8 else 16


def mma_x_mode(m: int, spec: WeightSpec) -> int:
    """How the `mma` kernel reads x for M rows: in fragment order (2) for 4-bit codes over two
    n8 blocks, else as it is (1). Read as it is, each of a warp's x loads touches 2 cache
    lines per distinct row of x, 16 at M >= 8, against 4 in fragment order, which costs an
    XLA transpose of x (~2 us where it does not fuse into x's producer). A 4-bit chunk of
    weights meets twice the x of an 8-bit one. H100, session 11
    (`benchmarks/session11/h100_mma_split_xmode.json`): at M=16 fragment order is 1.08-1.69x
    faster for 4-bit codes and 0.93-0.99x for int8; at M=4 and 8 x as it is wins on 25 of 30
    format x shape x M triples."""
    return 2 if m > 8 and spec.four_bit else 1


def mma_weight_reason(element_dtype, scale_dtype, block_k: int, block_n: int, kp: int) -> str | None:
    """`blocks.mma_format_reason` of a stored weight (block_k >= kp: per channel)."""
    return blocks.mma_format_reason(element_dtype, None if block_k >= kp else block_k, scale_dtype, block_n)


def _mma_check(spec: WeightSpec, cfg: TileConfig) -> str | None:
    """Why the `mma` kernel (triton_mma.py) cannot cover `spec` with `cfg`."""
    ck = blocks.mma_chunk_k(spec.element_dtype)
    if (why := mma_weight_reason(spec.element_dtype, spec.scale_dtype, spec.block_k, spec.block_n, spec.kp)
            or blocks.mma_layout_reason(spec.element_dtype, spec.kp, spec.np_)):
        return why
    if cfg.block_k != ck:
        return f"kernel='mma' has a fixed chunk block_k={ck} for {spec.element_dtype} (got {cfg.block_k})"
    if (spec.kp // ck) % (cfg.split_k * cfg.unroll):
        return f"kernel='mma' needs split_k * unroll = {cfg.split_k * cfg.unroll} to divide the {spec.kp // ck} chunks"
    return None


def mma_x_reason(element_dtype, x_dtype) -> str | None:
    """Why the `mma` kernel cannot take x of `x_dtype` with these codes (None when it can):
    float codes are upcast into bf16 and meet x in bf16 MMAs."""
    float_codes = not jnp.issubdtype(jnp.dtype(element_dtype), jnp.integer)
    if float_codes and jnp.dtype(x_dtype) != jnp.bfloat16:
        return f"kernel='mma' multiplies {jnp.dtype(element_dtype)} codes with bfloat16 x only (got {jnp.dtype(x_dtype)})"
    return None


def kgemv_chunk(spec: WeightSpec, cfg: TileConfig) -> int:
    """K values per `kgemv` chunk: inside one scale block and one 16-byte load of a thread."""
    return min(cfg.block_k, 32 if spec.four_bit else 16, spec.block_k)


def split_for(spec: WeightSpec, cfg: TileConfig, m: int, target: int = 4 * NUM_SMS, *,
              mma_tiles: bool | None = None) -> int:
    """split_k for a decode tile: enough programs to fill the SMs. kgemv masks its K tiles,
    so the split need not be a power of two: the smallest divisor of its loop steps
    (`unroll` K tiles each) that gives `target` programs, so every program gets the same
    whole number of steps; the other kernels use `_split_k`.

    `mma` over two n8 blocks of x, or over 3-8 rows of x with 4-bit codes, counts 16-row
    weight tiles instead of programs, 4 * target of them (16 per SM): with 128-row programs
    that is half the programs, half the split and half the f32 partial sums. Measured on an
    H100 (session 11, `benchmarks/session11/h100_mma_split_xmode.json`): 4-bit codes 1.03-1.17x
    faster at M=4, 8 and 16 (mxfp4's 64-row programs keep their split either way); int8
    1.04-1.05x at M=16 on the 4096x14336 layers, 0.99x on 8192x28672, but 0.92-0.96x at M=4
    and 8; at M=1 the program target was up to 7% faster (int4), so those keep it.
    `mma_tiles` overrides that choice (True: count tiles; False: programs)."""
    n_tiles, m_tiles = -(-spec.np_ // cfg.block_n), -(-m // cfg.block_m)
    if cfg.kernel == "mma":
        m_tiles = 1  # rows of x by 16 inside the program
        if mma_tiles is None:
            mma_tiles = cfg.block_m == 16 or (m > 2 and spec.four_bit)
        if mma_tiles:
            n_tiles, target = -(-spec.np_ // 16), 4 * target
    elif cfg.kernel != "kgemv":
        return _split_k(spec, cfg.block_k, n_tiles, m_tiles, target)
    steps = -(-(spec.kp // cfg.block_k) // cfg.unroll)
    return next((s for s in range(1, steps + 1) if steps % s == 0 and n_tiles * m_tiles * s >= target),
                steps)


def _split_k(spec: WeightSpec, cfg_k: int, n_tiles: int, m_tiles: int, target: int) -> int:
    """Largest-useful power-of-2 split of the K tiles so that programs >= target."""
    k_tiles = -(-spec.kp // cfg_k)
    split = 1
    while (n_tiles * m_tiles * split < target and split * 2 <= k_tiles // 2
           and k_tiles % (split * 2) == 0):
        split *= 2
    return split


TUNED_DIR = Path(__file__).parent / "tuned"
TUNED_FIELDS = ("kernel", "block_m", "block_n", "block_k", "num_warps", "num_stages", "x_mode", "pre_scale",
                "unroll")


def table_key(element_dtype, block_k: int | None, block_n: int, layout: str) -> str:
    """Tuned-table key: element dtype, scale block (None = per channel) and layout. The scale
    dtype is left out: it costs one load per block and does not move the best tile."""
    bk = "channel" if block_k is None else str(block_k)
    return f"{jnp.dtype(element_dtype).name}/{bk}x{block_n}/{layout}"


def spec_key(spec: WeightSpec) -> str:
    return table_key(spec.element_dtype, None if spec.block_k >= spec.kp else spec.block_k,
                     spec.block_n, spec.layout)


def m_bucket(m: int) -> str:
    """M buckets of the tuned table: decode tuned at M=1, 16 and 64 (a one-row GEMV re-reads
    the weight per row, so the M=1 entry serves M <= 2 only; without an m64 entry the m16
    one serves M <= 64), prefill at M=1024."""
    return "m1" if m <= 2 else ("m16" if m <= 16 else ("m64" if m <= 64 else "prefill"))


def device_slug(device_kind: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-")


@functools.cache
def tuned_table(device_kind: str) -> dict:
    """{spec_key: {m_bucket: TileConfig fields}} for one device kind, written by
    `scripts/bench_kernels.py --sweep --write-table` (never by hand); {} if none exists."""
    path = TUNED_DIR / f"{device_slug(device_kind)}.json"
    return json.loads(path.read_text())["table"] if path.exists() else {}


def tuned_config(m: int, spec: WeightSpec, device_kind: str) -> TileConfig | None:
    """The tuned decode config for (spec, M) on `device_kind`, adapted to M, or None."""
    bucket = m_bucket(m)
    entries = tuned_table(device_kind).get(spec_key(spec), {})
    fields = entries.get(bucket) or (entries.get("m16") if bucket == "m64" else None)
    if not fields:
        return None
    fields = dict(fields)
    if fields["kernel"] == "gemv":
        fields["block_m"] = 1
    elif fields["kernel"] == "mma":
        fields["block_m"], fields["x_mode"] = mma_block_m(m), mma_x_mode(m, spec)
    elif fields["kernel"] in ("fma", "kgemv"):
        if m > 8:
            return None
        fields["block_m"] = 1 << max(0, (m - 1).bit_length())
    elif fields["kernel"] in ("swapab", "dot") and bucket != "prefill":
        # One M tile covers all rows (an m16 entry may serve M <= 64): a tile of 16 rows at
        # M=64 streams the weight 4 times (seen: mxfp4 at 0.29x XLA bf16, H200).
        fields["block_m"] = 16 if m <= 16 else (32 if m <= 32 else 64)
    cfg = TileConfig(**fields)
    if bucket != "prefill":  # prefill: f32 partial sums of an (M, N) output cost more than they fill
        cfg = dataclasses.replace(cfg, split_k=split_for(spec, cfg, m))
    return None if cfg.check(spec) else cfg


def choose_config(m: int, spec: WeightSpec, *, backend: str = "triton",
                  device_kind: str | None = None) -> TileConfig:
    """Heuristic tile choice by M, K, N (no tuned table yet; `scripts/bench_kernels.py
    --sweep` times the candidates, see BENCHMARKS.md).

    backend "triton" (raw Triton kernel) or "pallas" (BlockSpec Pallas kernel: its K tiles
    must divide kp exactly, since its blocks cannot be masked in interpret mode).
    """
    if backend == "triton" and device_kind is not None:
        if (cfg := tuned_config(m, spec, device_kind)) is not None:
            return cfg
    if spec.layout == "mma":  # the tensor-core GEMV is the one kernel that reads "mma"
        cfg = TileConfig(block_m=mma_block_m(m), block_n=128, block_k=blocks.mma_chunk_k(spec.element_dtype),
                         num_warps=4, num_stages=1, unroll=1, kernel="mma", x_mode=mma_x_mode(m, spec))
        return dataclasses.replace(cfg, split_k=split_for(spec, cfg, m))
    bk_scale = spec.block_k
    if m <= 64:  # decode: memory-bound GEMV-like
        block_m = 16 if m <= 16 else (32 if m <= 32 else 64)
        block_n = 128
        tk = 256 if spec.four_bit else 128
        num_warps, stages = 4, 4
    elif m <= 128:
        block_m, block_n, tk, num_warps, stages = 64, 128, 64, 4, 4
    else:  # prefill: tensor-core bound (128x256x64, 8 warps, 3 stages: best of the sweep)
        block_m, block_n, tk, num_warps, stages = 128, 256, 64, 8, 3
    kernel, x_mode = "dot", 2
    if m > 128 and backend == "triton" and spec.element_dtype != jnp.dtype(jnp.float8_e4m3fn):
        # Swap-AB: the pre-scaled weight tile is the warpgroup dot's register operand, so it
        # never goes through shared memory (1.5-1.8x the `dot` tile on 4-bit codes at
        # M=1024, H200, BENCHMARKS.md); e4m3 codes give wrong results there (`check`).
        kernel, block_m, block_n, tk, num_warps, stages = "swapab", 128, 128, 64, 8, 4
        x_mode = 3 if spec.four_bit else 1
        if not spec.four_bit:  # int8: a 128-long K step, 3 stages (1.1x the 64-long one)
            tk, stages = 128, 3
    if spec.block_n > 1:
        block_n = min(block_n, 1 << (spec.block_n.bit_length() - 1))
        while spec.block_n % block_n:
            block_n //= 2
    # Tile K vs scale block: a tile inside one block (post-dot scaling) when the block is
    # at least 64 long, else a tile of whole blocks.
    if bk_scale % tk == 0 or bk_scale >= spec.kp:
        pass  # inside one block, or per channel
    elif _pow2(bk_scale) and bk_scale >= 64:
        tk = min(tk, bk_scale)
    elif _pow2(bk_scale) and tk % bk_scale == 0:
        pass
    else:  # e.g. per-channel with kp not a power of 2: tiles of a power of 2 dividing kp
        tk = math.gcd(tk, spec.kp & -spec.kp) if spec.kp % tk else tk
        tk = max(tk, 2)
    if backend == "pallas":
        while spec.np_ % block_n and block_n > 1:
            block_n //= 2
        while spec.kp % tk and tk > 2:
            tk //= 2
        if spec.kp % tk:
            tk = spec.kp  # one step over all of K (interpret mode only for odd sizes)
    n_tiles = -(-spec.np_ // block_n)
    m_tiles = -(-m // block_m)
    split = 1
    if m <= 64:
        split = _split_k(spec, tk, n_tiles, m_tiles, target=4 * NUM_SMS)
        if backend == "pallas":
            # Pallas splits must cover whole scale blocks or lie inside one.
            while split > 1:
                ks = spec.kp // split
                if spec.kp % split == 0 and ks % tk == 0 and (ks % bk_scale == 0 or bk_scale % ks == 0):
                    break
                split //= 2
    return TileConfig(block_m=block_m, block_n=block_n, block_k=tk, split_k=split,
                      num_warps=num_warps, num_stages=stages, pre_scale=m > 64,
                      x_mode=x_mode, kernel=kernel)
