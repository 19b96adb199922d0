"""Scaled GEMM for Hopper on the Mosaic GPU Pallas backend (`plgpu`): fp8 or int8 tensor
cores, per-token x per-channel scales in the epilogue or per-K-group promotion; and the mixed
product of int8/int4/uint4/e4m3 codes with bf16/f16 values that weight-only prefill
computes as y^T = W x^T.

    y[m, j] = sum_g sa[g, m] * sb[g, j] * sum_{k in group g} a[m, k] * b[j, k]

a (M, K) and b (N, K) hold 8-bit codes (float8_e4m3fn or int8, both K-major, the
weight in the "nk" layout); sa (S, M) and sb (S, N) are f32 with S scale groups along K:
S == 1 is per-token x per-channel (W8A8), S == K / tile_k is DeepSeek-V3-style promotion
(activation tiles 1 x G, weight blocks G x block_n, G = tile_k; the weight's per-block scale
is repeated along its block_n columns by the caller, `api`).

The mixed product (b bf16/f16; `a_codes` int8, int4, uint4, float4_e2m1fn or float8_e4m3fn,
held as int8 / jnp.int4 (the 4-bit ones) / float8_e4m3fn)
    Each compute warpgroup loads its a tile from shared memory into registers, upcasts it
    (Mosaic GPU's int8 and CUTLASS-style int4 -> bf16 conversions; uint4 codes u as the
    int4 u ^ 8 = u - 8, the 8 carried by the zeros; e4m3 by Hopper's e4m3x2 -> f16x2
    `cvt`, then to bf16 through f32, exact both ways; e2m1, which Hopper cannot convert,
    by integer ops into bf16 bits, `_decode`) and issues wgmma with it as the register
    operand, as JAX's `hopper_mixed_type_matmul_mgpu` does. Scales: once in the epilogue
    (S == 1, no zeros), or per K step on the upcast tile, (code - za) * sa, for S groups
    of whole steps, 2-8 groups per step (MX's 32 and NVFP4's 16 columns: each group's
    8-column register tiles are sliced off, scaled and concatenated back), or with zeros
    (in b's dtype; in f32 with zeros). a may be
    stored "mma" (`pallas_kernels.blocks`: 16-row x 64-byte tiles, the fields of each
    32-bit word reordered): a 4-d view lets TMA box one chunk of 16-row tiles per K step,
    a 3-d tiling folds it back into the 2-d swizzled tile, and b's columns are permuted
    once by XLA to match the fields. `transpose_out` stores y^T (16-bit outputs).

Structure (JAX's `hopper_matmul_mgpu` example, plus the scales)
    A persistent kernel: one CTA per SM walks the output tiles in a planar snake (L2 reuse).
    Each CTA has three warpgroups: one memory warpgroup that TMA-loads, per K step, the a and
    b tiles (and, when promoting, the step's rows of sa and sb) into a ring of
    `max_concurrent_steps` shared-memory slots; two compute warpgroups that each own half
    of the CTA tile (split along M or N, `wg_dim`) and issue `wgmma` from shared memory.
Epilogue mode (S == 1)
    The accumulator chains across all of K on the tensor cores; after the loop each compute
    warpgroup loads its rows of sa and columns of sb and scales the tile once.
Promotion mode (S == K / tile_k)
    fp8 tensor cores accumulate with reduced precision (DeepSeek-V3 measured ~14 bits), and
    block scales change along K anyway, so each step's product goes into a fresh
    accumulator (zeroed right before its wgmma: a zero carried from the previous step made
    ptxas fence every wgmma again and cost 25%), which the compute warpgroup waits for and
    adds, scaled by sa x sb, into an f32 sum held in registers (one FMA per output when a
    warpgroup tile lies in one weight block, `uniform_n`). While one compute warpgroup waits
    and promotes, the other's `wgmma` keeps the tensor cores busy: this overlap is what
    Triton 3.6 could not express (it waits on every wgmma; BENCHMARKS.md session 7), and what
    DeepGEMM does in CUDA.

The output tile is written through shared memory by TMA in epi_tile_m x epi_tile_n pieces.
int8 x int8 accumulates exactly in int32 (converted to f32 only for the scaling).

Limits: M is padded here to whole CTA tiles; N and K must be multiples of the CTA tile's N
and of tile_k (`unsupported_reason`). GPU interpret mode (`interpret=True`, any host) runs
the epilogue mode of the 8-bit product, which is how CI tests it; jax 0.11.2's interpreter
can neither store into a WGMMA accumulator (promotion) nor take a register operand (mixed),
so CI lowers those natively for CUDA and the GPU tests run them. Not kept: holding a slot
one step longer to overlap a warpgroup's next upcast with its wgmma (BlockSpec
delay_release=1 with wgmma_wait(1)) gave NaN outputs on an H100 (session 10): the next
step's upcast rewrites the registers of a wgmma still in flight (the same PTX registers
each loop trip; triton-lang/triton#9433 is that hazard). `split_upcast` overlaps within a
step instead: two halves, two register tiles, the second upcast while the first half's
wgmma runs, one wait per step (session 14, H100: correct; 1-2% faster for e2m1 codes,
about even for int4/uint4, 3-10% slower for 8-bit codes).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from pallas_kernels import blocks

ELEMENT_DTYPES = (jnp.dtype(jnp.float8_e4m3fn), jnp.dtype(jnp.int8))
MIXED_B_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# held by `a` as jnp.int4 (the packed bytes bitcast)
MIXED_4BIT = (jnp.dtype(jnp.int4), jnp.dtype(jnp.uint4), jnp.dtype(jnp.float4_e2m1fn))
# Codes of `a` that the mixed product converts in registers (against b in MIXED_B_DTYPES).
MIXED_CODES = (jnp.dtype(jnp.int8), *MIXED_4BIT, jnp.dtype(jnp.float8_e4m3fn))
_F32 = jnp.float32
_DIMS = ("m", "n")
_NUM_SMS = 132  # H100 SXM / H200: the persistent grid where the device does not say


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MosaicGemmConfig:
    """tile_m x tile_n: one compute warpgroup's output tile (the CTA's is twice that along
    `wg_dim`); tile_k: K per pipeline step (= the promotion group); max_concurrent_steps:
    pipeline depth; grid_minor_dim / grid_tile_width: the planar snake over output tiles;
    epi_tile_m x epi_tile_n: the pieces the output is stored in. split_upcast (the mixed
    product, epilogue scales or per-step scaling): each K step upcast and multiplied in two
    halves, two register tiles in flight (the kernel's `partial_product`)."""
    tile_m: int = 128
    tile_n: int = 128
    tile_k: int = 128
    wg_dim: str = "n"
    max_concurrent_steps: int = 4
    grid_minor_dim: str = "n"
    grid_tile_width: int = 8
    epi_tile_m: int = 64
    epi_tile_n: int = 64
    split_upcast: bool = False

    def __post_init__(self):
        if self.tile_m % 64 or not 64 <= self.tile_m <= 256:
            raise ValueError(f"tile_m={self.tile_m} must be a multiple of 64 in [64, 256]")
        if self.tile_n % 32 or not 32 <= self.tile_n <= 256:
            raise ValueError(f"tile_n={self.tile_n} must be a multiple of 32 in [32, 256]")
        if self.tile_k not in (32, 64, 128, 256):
            raise ValueError(f"tile_k={self.tile_k} must be 32, 64, 128 or 256")
        if self.wg_dim not in _DIMS or self.grid_minor_dim not in _DIMS:
            raise ValueError(f"wg_dim={self.wg_dim!r} and grid_minor_dim="
                             f"{self.grid_minor_dim!r} must be 'm' or 'n'")
        if self.max_concurrent_steps < 2 or self.grid_tile_width < 1:
            raise ValueError(f"max_concurrent_steps={self.max_concurrent_steps} must be >= 2 "
                             f"and grid_tile_width={self.grid_tile_width} >= 1")
        if self.tile_m % self.epi_tile_m or self.tile_n % self.epi_tile_n:
            raise ValueError(f"epi_tile ({self.epi_tile_m}, {self.epi_tile_n}) must divide "
                             f"the tile ({self.tile_m}, {self.tile_n})")

    @property
    def cta_m(self) -> int:
        return self.tile_m * (2 if self.wg_dim == "m" else 1)

    @property
    def cta_n(self) -> int:
        return self.tile_n * (2 if self.wg_dim == "n" else 1)


def device_reason() -> str | None:
    """Why this process's GPU cannot run the kernel (None on Hopper, or off GPU, where only
    interpret mode and lowering run)."""
    if jax.default_backend() != "gpu":
        return None
    cc = getattr(jax.devices()[0], "compute_capability", "9.0")
    if cc != "9.0":
        return f"the Mosaic GPU kernel issues Hopper's wgmma (sm_90a); this GPU is sm_{cc}"
    return None


def code_bits(codes) -> int:
    """Bits of one code of `a` (4 for 4-bit codes packed two per byte)."""
    return 4 if jnp.dtype(codes) in MIXED_4BIT else 8 * jnp.dtype(codes).itemsize


def carries_zeros(codes, has_zeros: bool) -> bool:
    """Whether the mixed product runs with zeros: given ones, or uint4 codes (decoded as
    u - 8, `_decode`; the zeros carry the 8)."""
    return has_zeros or jnp.dtype(codes) == jnp.uint4


def unsupported_reason(*, element_dtype, kp: int, np_: int, groups: int,
                       config: MosaicGemmConfig, b_dtype=None, out_dtype=jnp.bfloat16,
                       a_layout: str = "nk", has_zeros: bool = False,
                       interpret: bool = False) -> str | None:
    """Why the kernel cannot take these operands (None when it can). element_dtype: the
    codes of `a`; groups: S, the number of scale groups along K (1; kp // tile_k when
    promoting; for the mixed product any S whose groups are whole K steps); b_dtype: b's
    dtype when it differs from the codes (the mixed product)."""
    edt = jnp.dtype(element_dtype)
    c = config
    mixed = b_dtype is not None and jnp.dtype(b_dtype) != edt
    if mixed:
        if edt not in MIXED_CODES or jnp.dtype(b_dtype) not in MIXED_B_DTYPES:
            return (f"the mixed product takes codes in {MIXED_CODES} against b in "
                    f"{MIXED_B_DTYPES}; got {edt} x {jnp.dtype(b_dtype)}")
        if interpret:
            return ("the mixed product's register-operand wgmma does not run in Mosaic GPU "
                    "interpret mode (jax 0.11.2); it lowers natively")
    elif edt not in ELEMENT_DTYPES:
        return f"element dtype {edt} not in {ELEMENT_DTYPES} for the Mosaic GPU scaled GEMM"
    if a_layout not in ("nk", "mma") or (a_layout == "mma" and not mixed):
        return f"a_layout={a_layout!r}: 'nk', or 'mma' for the mixed product"
    if kp % c.tile_k:
        return f"Kp={kp} must be a multiple of tile_k={c.tile_k}"
    if np_ % c.cta_n:
        return f"Np={np_} must be a multiple of the CTA tile's N={c.cta_n}"
    k_iters = kp // c.tile_k
    if mixed:
        per_step = groups // k_iters
        if groups < 1 or (k_iters % groups and (groups % k_iters or per_step > 8
                                                 or (c.tile_k // per_step) % 8)):
            return (f"{groups} weight-scale groups along Kp={kp}: the mixed product scales "
                    f"whole tile_k={c.tile_k} steps ({k_iters} of them), once (1), or 2-8 "
                    f"groups of a multiple of 8 columns per step")
    elif groups not in (1, k_iters):
        return (f"{groups} scale groups along Kp={kp}: the kernel promotes once per "
                f"tile_k={c.tile_k} step (groups = {k_iters}) or scales once (1)")
    if has_zeros and not mixed:
        return "zeros are taken by the mixed product only"
    step_bytes = c.tile_k * code_bits(edt) // 8
    if a_layout == "mma" and step_bytes != 64:
        return (f"layout 'mma' keeps 64-byte chunks of 16 rows, one per K step (part of one "
                f"takes a TMA box of more than 5 dims): tile_k={c.tile_k} {edt} codes are "
                f"{step_bytes} bytes")
    if code_bits(edt) == 4 and (jnp.dtype(b_dtype) != jnp.bfloat16 or c.tile_k < 64):
        return (f"4-bit codes take bf16 b (the native int4 -> bf16 upcast) and tile_k >= 64 "
                f"(32-byte rows); got {jnp.dtype(b_dtype)}, tile_k={c.tile_k}")
    if c.split_upcast and not mixed:
        return "split_upcast is for the mixed product (a register operand)"
    if c.split_upcast and c.tile_k // 2 * code_bits(edt) % 128:
        return (f"split_upcast slices each step's code rows in two whole 16-byte pieces: "
                f"tile_k={c.tile_k} {edt} codes")
    zeros = carries_zeros(edt, has_zeros)
    need = smem_bytes(config, edt, jnp.dtype(out_dtype).itemsize, b_dtype,
                      promote=groups > 1 or zeros, zeros=zeros)
    if need > SMEM_LIMIT:
        return f"the tiles need ~{need} bytes of shared memory > {SMEM_LIMIT}"
    return None


SMEM_LIMIT = 232448  # Hopper's per-block maximum (opt-in), as Mosaic GPU reports it


def smem_bytes(config: MosaicGemmConfig, element_dtype, out_itemsize: int = 2,
               b_dtype=None, promote: bool = False, zeros: bool = False) -> int:
    """Estimated shared memory of one CTA (Mosaic GPU's own check at lowering is final): the
    pipeline ring, the output pieces, the epilogue scales. promote: per-step scale rows (of
    a and b; the mixed product: of a, and of its zeros)."""
    c = config
    b_dtype = jnp.dtype(b_dtype or element_dtype)
    step = (c.cta_m * code_bits(element_dtype) // 8 + c.cta_n * b_dtype.itemsize) * c.tile_k
    if promote:  # one row of each per-step scale array, stored as an 8-row tile
        mixed = b_dtype != jnp.dtype(element_dtype)
        step += 8 * ((2 if zeros else 1) * c.cta_m if mixed else c.cta_m + c.cta_n) * 4
    out = 2 * 2 * c.epi_tile_m * c.epi_tile_n * out_itemsize
    return c.max_concurrent_steps * step + out + 2 * (c.tile_m + c.tile_n) * 4 + 1024


def smem_transforms(minor_elems: int, dtype, what: str):
    """TMA/wgmma shared-memory tiling and swizzle for a tile whose minor dimension holds
    `minor_elems` elements of `dtype` (what: "lhs", "rhs" or "out")."""
    bits = code_bits(dtype)
    swizzle = plgpu.find_swizzle(minor_elems * bits, what)
    return (plgpu.TilingTransform((8, swizzle * 8 // bits)), plgpu.SwizzleTransform(swizzle))


def _planar_snake(lin, m_iters: int, n_iters: int, minor: str, width: int):
    dim = 0 if minor == "m" else 1
    return plgpu.planar_snake(lin, (m_iters, n_iters), dim, width)


E2M1_BITS_SCALE = 2.0**126  # what `_e2m1_bits` read as bf16 are multiplied by


def _e2m1_bits(codes: jax.Array) -> jax.Array:
    """e2m1 codes held as int4 -> int16 bf16 bits that read value * 2**-126: the nibble
    s|em, sign-extended to 16 bits, becomes s << 15 | em << 6 (0.5, em = 1, a subnormal)."""
    c = codes.astype(jnp.int8).astype(jnp.int16)
    return ((c & 7) << 6) | (c & jnp.int16(-0x8000))


def _decode(codes: jax.Array, code_dtype, dtype) -> jax.Array:
    """A register tile of codes (int8, e4m3, or 4-bit codes held as int4) -> `dtype` values.
    uint4 codes u become u - 8 (the sign bit flipped, read as int4: the native int4 -> bf16
    upcast); the caller's zeros carry the 8. e4m3 goes through f16, the one 16-bit type
    Hopper converts it to (every e4m3 value is exact in f16 and in bf16). e2m1 (no upcast
    on Hopper) by integer ops (`_e2m1_bits`), then one exact bf16 multiply by 2**126, no
    conversion on the way to a bf16 operand. Pure jnp: the same function runs outside a
    kernel, except that XLA on CPU flushes e2m1's 0.5 (a bf16 subnormal) to zero."""
    if jnp.dtype(code_dtype) == jnp.float4_e2m1fn:
        v = lax.bitcast_convert_type(_e2m1_bits(codes), jnp.bfloat16)
        v = v * jnp.bfloat16(E2M1_BITS_SCALE)
        return v.astype(dtype)
    if jnp.dtype(code_dtype) == jnp.uint4:
        codes = codes ^ jnp.asarray(-8, jnp.int4)
    if jnp.dtype(code_dtype) in MIXED_4BIT:
        return codes.astype(jnp.bfloat16).astype(dtype)
    if jnp.dtype(code_dtype) == jnp.float8_e4m3fn:
        codes = codes.astype(jnp.float16)
    return codes.astype(dtype)


@functools.partial(jax.jit, static_argnames=("out_dtype", "config", "uniform_n", "num_ctas",
                                             "a_codes", "a_layout", "transpose_out", "interpret"))
def scaled_matmul_mosaic(a, b, sa, sb, za=None, *, out_dtype=jnp.bfloat16,
                         config: MosaicGemmConfig = MosaicGemmConfig(), uniform_n: bool = False,
                         num_ctas: int | None = None, a_codes=None, a_layout: str = "nk",
                         transpose_out: bool = False, interpret: bool = False) -> jax.Array:
    """a (M, Kp), b (Np, Kp) 8-bit codes (or codes a and bf16/f16 b: the mixed product);
    sa (S, M), sb (S, Np) f32 -> y (M, Np) out_dtype.

    uniform_n: sb is constant over each warpgroup tile's tile_n columns (weight blocks of a
    multiple of tile_n columns, aligned): the promotion reads one weight scale per step.
    num_ctas: persistent CTAs (default: the device's SM count; interpret mode: 2).
    Mixed product only: a_codes, the codes `a` holds (default a.dtype; int4/uint4/e2m1: a
    is a jnp.int4 (M, Kp) array, e.g. packed bytes bitcast, low nibble first along K);
    a_layout "nk" or "mma" (`pallas_kernels.blocks`: 16-row x 64-byte tiles); with S > 1
    or zeros (za (S, M)) the upcast rows of a are scaled per K step (per group of columns
    when S is a multiple of the steps), (code - za) * sa, before the wgmma, and sb is
    (1, Np), applied in the epilogue.
    transpose_out: return y^T (Np, M): each output piece is stored transposed into shared
    memory (16-bit outputs only).
    `interpret=True` runs GPU interpret mode (any host; 8-bit x 8-bit with epilogue scales).
    """
    c = config
    m = a.shape[0]
    np_, kp = b.shape
    groups = sa.shape[0]
    codes = jnp.dtype(a_codes or a.dtype)
    mixed = jnp.dtype(b.dtype) in MIXED_B_DTYPES
    if codes == jnp.uint4:  # decoded as u - 8: the zeros carry the 8
        za = (0.0 if za is None else za.astype(_F32)) - 8.0 + jnp.zeros_like(sa, _F32)
    prescale = mixed and (groups > 1 or za is not None)
    if a.shape != (m, kp) or (codes in MIXED_4BIT and a.dtype != jnp.int4):
        raise ValueError(f"a {a.shape} {a.dtype} must be (M, Kp={kp}) codes (int4 for 4-bit)")
    if a_layout == "mma" and m % 16:
        raise ValueError(f"layout 'mma' stores whole 16-row tiles: {m=}")
    if sa.shape != (groups, m) or sb.shape != (1 if prescale else groups, np_):
        raise ValueError(f"scales sa {sa.shape}, sb {sb.shape} must be (S, {m}) and "
                         f"({1 if prescale else 'S'}, {np_})")
    if za is not None and za.shape != sa.shape:
        raise ValueError(f"zeros za {za.shape} must match sa {sa.shape}")
    if transpose_out and jnp.dtype(out_dtype).itemsize != 2:
        raise NotImplementedError(
            f"transpose_out stores 16-bit outputs only, not {jnp.dtype(out_dtype)} (jax 0.11.2's "
            f"Mosaic GPU finds no layout for a transposed 32-bit store)")
    if (why := unsupported_reason(element_dtype=codes, kp=kp, np_=np_, groups=groups,
                                  config=c, b_dtype=b.dtype, out_dtype=out_dtype,
                                  a_layout=a_layout, has_zeros=za is not None,
                                  interpret=interpret)) is not None:
        raise NotImplementedError(why)
    out_dtype = jnp.dtype(out_dtype)
    promote = groups > 1 and not mixed
    has_zeros = za is not None
    acc_dtype = jnp.int32 if jnp.dtype(b.dtype) == jnp.int8 else _F32
    mp = -(-m // c.cta_m) * c.cta_m
    a = jnp.pad(a, ((0, mp - m), (0, 0)))
    sa = jnp.pad(sa.astype(_F32), ((0, 0), (0, mp - m)))
    za = None if za is None else jnp.pad(za.astype(_F32), ((0, 0), (0, mp - m)))
    sb = sb.astype(_F32)
    # The per-step scaling runs in b's dtype (bf16: 8% faster than f32 for 4-bit codes at
    # M=1024, H100; the scale is rounded to bf16), in f32 with zeros (a fractional zero
    # taken from an int8 code in bf16 loses up to half a unit: measured beyond tolerance).
    math_dtype = _F32 if has_zeros else b.dtype
    m_iters, n_iters, k_iters = mp // c.cta_m, np_ // c.cta_n, kp // c.tile_k
    steps_per_group = max(1, k_iters // groups)
    groups_per_step = max(1, groups // k_iters)  # > 1: scale groups shorter than a step
    if a_layout == "mma":
        # Each 16-row x 64-byte tile is contiguous: a 4-d view whose K steps TMA can box.
        chunk_k = blocks.mma_chunk_k(codes)
        a = a.reshape(mp // 16, kp // chunk_k, 16, chunk_k)
        # The fields of each 32-bit word are reordered: b's columns follow them.
        order = blocks.stored_k_order(codes, "mma", c.tile_k)
        b = b.reshape(np_, k_iters, c.tile_k)[:, :, order].reshape(np_, kp)
    if num_ctas is None:
        num_ctas = 2 if interpret else getattr(jax.devices()[0], "core_count", _NUM_SMS)
    num_ctas = max(1, min(num_ctas, m_iters * n_iters))
    tr_a = smem_transforms(c.tile_k, a.dtype, "lhs")
    # split_upcast: b swizzled by its half steps, so that each half is whole swizzle tiles.
    tr_b = smem_transforms(c.tile_k // (2 if c.split_upcast else 1), b.dtype, "rhs")
    epi_shape = (c.epi_tile_n, c.epi_tile_m) if transpose_out else (c.epi_tile_m, c.epi_tile_n)
    tr_o = smem_transforms(epi_shape[1], out_dtype, "out")
    n_epi = (c.tile_m // c.epi_tile_m) * (c.tile_n // c.epi_tile_n)
    out_slots = min(2, n_epi)

    def kernel(a_gmem, b_gmem, sa_gmem, sb_gmem, *rest):
        za_gmem = rest[0] if has_zeros else None
        o_gmem, o_smem, sa_smem, sb_smem, s_bar = rest[1:] if has_zeros else rest

        def get_pipeline(body, context):
            if a_layout == "mma":
                per_chunk = chunk_k // c.tile_k
                tiling, swizzle = tr_a  # a 3-d tiling that folds into the 2-d one
                a_spec = plgpu.BlockSpec(
                    (c.cta_m // 16, None, 16, c.tile_k),
                    lambda k: (0, k // per_chunk, 0, k % per_chunk),
                    transforms=(plgpu.TilingTransform((1, *tiling.tiling)), swizzle))
            else:
                a_spec = plgpu.BlockSpec((c.cta_m, c.tile_k), lambda k: (0, k),
                                         transforms=tr_a)
            specs = [a_spec, plgpu.BlockSpec((c.cta_n, c.tile_k), lambda k: (0, k),
                                             transforms=tr_b)]
            if promote:
                specs += [plgpu.BlockSpec((1, c.cta_m), lambda k: (k, 0)),
                          plgpu.BlockSpec((1, c.cta_n), lambda k: (k, 0))]
            elif prescale:
                row = plgpu.BlockSpec((groups_per_step, c.cta_m),
                                      lambda k: (k // steps_per_group, 0))
                specs += [row] * (2 if has_zeros else 1)
            return plgpu.emit_pipeline_warp_specialized(
                body, grid=(k_iters,), memory_registers=40, in_specs=specs, wg_axis="wg",
                num_compute_wgs=2, max_concurrent_steps=c.max_concurrent_steps,
                compute_context=context)

        ignore = lambda *_, **__: None  # noqa: E731 (allocations do not depend on the body)
        step_gmem = (sa_gmem, sb_gmem) if promote else ()
        if prescale:
            step_gmem = (sa_gmem, za_gmem) if has_zeros else (sa_gmem,)
        pipe_args = (a_gmem, b_gmem) + step_gmem

        @functools.partial(pl.run_scoped,
                           allocs=get_pipeline(ignore, ignore).get_allocations(*pipe_args),
                           collective_axes="wg")
        def _scope(allocs):
            wg = lax.axis_index("wg")

            @plgpu.nd_loop((m_iters * n_iters,), collective_axes="tiles")
            def _tile_loop(info):
                (lin,) = info.index
                mi, ni = _planar_snake(lin, m_iters, n_iters, c.grid_minor_dim,
                                       c.grid_tile_width)
                cta_m_sl = pl.ds(mi * c.cta_m, c.cta_m)
                cta_n_sl = pl.ds(ni * c.cta_n, c.cta_n)
                if c.wg_dim == "m":
                    wg_m_sl, wg_n_sl = pl.ds(wg * c.tile_m, c.tile_m), slice(None)
                else:
                    wg_m_sl, wg_n_sl = slice(None), pl.ds(wg * c.tile_n, c.tile_n)

                def a_rows(a_smem):
                    """This warpgroup's rows of the step's a tile."""
                    if a_layout != "mma":
                        return a_smem.at[wg_m_sl]
                    if c.wg_dim == "m":
                        a_smem = a_smem.at[pl.ds(wg * (c.tile_m // 16), c.tile_m // 16)]
                    return a_smem.reshape(c.tile_m, c.tile_k)

                def partial_product(a_smem, b_smem, acc_ref, s_rows=()):
                    if not mixed:
                        plgpu.wgmma(acc_ref, a_smem.at[wg_m_sl],
                                    b_smem.at[wg_n_sl].transpose((1, 0)))
                        return
                    # The decoded tile is wgmma's register operand. split_upcast: two halves,
                    # the second upcast while the first half's wgmma runs.
                    codes_tile, b_rows = a_rows(a_smem)[...], b_smem.at[wg_n_sl]
                    width = c.tile_k // 2 if c.split_upcast else c.tile_k
                    for col0 in range(0, c.tile_k, width):
                        part = codes_tile
                        b_part = b_rows
                        if width < c.tile_k:
                            part = codes_tile[:, col0:col0 + width]
                            b_part = b_rows.at[:, pl.ds(col0, width)]
                        w = _upcast(part, col0, s_rows)
                        plgpu.wgmma(acc_ref, w, b_part.transpose((1, 0)))

                def _upcast(codes_part, col0, s_rows):
                    """Codes of the step's columns [col0, col0 + width) -> the register operand:
                    decoded, then each scale group's columns (whole 8-column register tiles)
                    scaled, (code - z) * s."""
                    w = _decode(codes_part, codes, math_dtype)
                    if not prescale:
                        return w
                    width = w.shape[1]
                    cols = c.tile_k // groups_per_step  # columns per scale group
                    parts = []
                    for j0 in range(0, width, min(cols, width)):
                        g = (col0 + j0) // cols
                        p = w if cols >= width else w[:, j0:j0 + cols]
                        if has_zeros:
                            p = p - s_rows[1][g, wg_m_sl][:, None]
                        parts.append(p * s_rows[0][g, wg_m_sl].astype(math_dtype)[:, None])
                    w = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=1)
                    return w.astype(b.dtype)

                def epilogue(y):
                    plgpu.wait_smem_to_gmem(0, wait_read_only=True)
                    for ei in range(c.tile_m // c.epi_tile_m):
                        for ej in range(c.tile_n // c.epi_tile_n):
                            e_m = slice(ei * c.epi_tile_m, (ei + 1) * c.epi_tile_m)
                            e_n = slice(ej * c.epi_tile_n, (ej + 1) * c.epi_tile_n)
                            slot = (ei * (c.tile_n // c.epi_tile_n) + ej) % out_slots
                            plgpu.wait_smem_to_gmem(1, wait_read_only=True)
                            if transpose_out:
                                o_smem.at[wg, slot].transpose((1, 0))[...] = y[e_m, e_n]
                                dst = o_gmem.at[cta_n_sl, cta_m_sl].at[wg_n_sl, wg_m_sl]
                                dst = dst.at[e_n, e_m]
                            else:
                                o_smem[wg, slot] = y[e_m, e_n]
                                dst = o_gmem.at[cta_m_sl, cta_n_sl].at[wg_m_sl, wg_n_sl]
                                dst = dst.at[e_m, e_n]
                            plgpu.commit_smem()
                            plgpu.copy_smem_to_gmem(o_smem.at[wg, slot], dst)

                if promote:
                    def context(run):
                        def acc_scope(acc_ref):
                            total = run((acc_ref, jnp.zeros((c.tile_m, c.tile_n), _F32)))[1]
                            epilogue(total.astype(out_dtype))
                        pl.run_scoped(acc_scope, plgpu.ACC((c.tile_m, c.tile_n), acc_dtype))

                    def body(_, a_smem, b_smem, sa_step, sb_step, carry):
                        acc_ref, total = carry
                        # A fresh accumulator per step, zeroed right before its wgmma: zeroing
                        # it after the read instead (a loop-carried zero) cost 25% (H200).
                        acc_ref[...] = jnp.zeros((c.tile_m, c.tile_n), acc_dtype)
                        partial_product(a_smem, b_smem, acc_ref)
                        plgpu.wgmma_wait(0)
                        part = acc_ref[...]
                        s_m = sa_step[0, wg_m_sl]
                        if uniform_n:  # one weight scale per warpgroup tile: one FMA per output
                            s_n = sb_step[0, 0 if c.wg_dim == "m" else wg * c.tile_n]
                            return acc_ref, total + part.astype(_F32) * (s_m * s_n)[:, None]
                        s_n = sb_step[0, wg_n_sl]
                        return acc_ref, total + part.astype(_F32) * s_m[:, None] * s_n[None, :]
                else:
                    def context(run):
                        def acc_scope(acc_ref):
                            # The scales' copies overlap the K loop.
                            if not prescale:
                                plgpu.copy_gmem_to_smem(sa_gmem.at[0, cta_m_sl].at[wg_m_sl],
                                                        sa_smem.at[wg], s_bar.at[wg])
                            plgpu.copy_gmem_to_smem(
                                sb_gmem.at[0, cta_n_sl].at[wg_n_sl], sb_smem.at[wg], s_bar.at[wg])
                            run(acc_ref)
                            acc = acc_ref[...].astype(_F32)
                            plgpu.barrier_wait(s_bar.at[wg])
                            if not prescale:
                                acc = acc * sa_smem[wg][:, None]
                            epilogue((acc * sb_smem[wg][None, :]).astype(out_dtype))
                        pl.run_scoped(acc_scope, plgpu.ACC((c.tile_m, c.tile_n), acc_dtype))

                    def body(_, a_smem, b_smem, *rest):
                        *s_rows, acc_ref = rest
                        partial_product(a_smem, b_smem, acc_ref, s_rows)
                        plgpu.wgmma_wait(0)
                        return acc_ref

                a_sl = cta_m_sl  # "mma": the CTA's 16-row tiles of the 4-d view
                if a_layout == "mma":
                    a_sl = pl.ds(mi * (c.cta_m // 16), c.cta_m // 16)
                ops = (a_gmem.at[a_sl], b_gmem.at[cta_n_sl])
                if promote:
                    ops += (sa_gmem.at[:, cta_m_sl], sb_gmem.at[:, cta_n_sl])
                elif prescale:
                    ops += tuple(g.at[:, cta_m_sl] for g in step_gmem)
                get_pipeline(body, context)(*ops, allocations=allocs)

        plgpu.wait_smem_to_gmem(0, wait_read_only=True)

    s_arrivals = 1 if prescale else 2
    call = plgpu.kernel(
        kernel,
        out_type=jax.ShapeDtypeStruct((np_, mp) if transpose_out else (mp, np_), out_dtype),
        grid=(num_ctas,),
        grid_names=("tiles",),
        num_threads=3,
        thread_name="wg",
        scratch_types=[
            plgpu.SMEM((2, out_slots, *epi_shape), out_dtype, transforms=tr_o),
            plgpu.SMEM((2, c.tile_m), _F32),
            plgpu.SMEM((2, c.tile_n), _F32),
            plgpu.Barrier(num_arrivals=s_arrivals, num_barriers=2),
        ],
        compiler_params=plgpu.CompilerParams(
            lowering_semantics=plgpu.LoweringSemantics.Warpgroup),
        interpret=plgpu.InterpretGPUParams() if interpret else None,
        kernel_name="scaled_matmul_mosaic",
    )
    args = (a, b, sa, sb) + ((za,) if has_zeros else ())
    return call(*args)[:, :m] if transpose_out else call(*args)[:m]
