"""Weight-only prefill GEMMs for Hopper on the Mosaic GPU Pallas backend (`plgpu`).

`y = x @ dequantize(W)` for x (M, K) bf16/f16 and W stored by `pallas_kernels.blocks` with
int8, int4/uint4 or (register operand only) e4m3 and e2m1 elements. Prefill (M >= 256) is
tensor-core bound, so both paths feed `wgmma` rather than a CUDA-core dot. Two paths:

    register operand (the fast one; end of the module): "nk" or "mma" weights, y^T = W x^T
        on the warp-specialized kernel of `pallas_kernels.scaled_gemm.mosaic_kernel`, each
        weight tile upcast in registers as wgmma's register operand, y stored transposed.
        Native only. `impl="auto"` takes it for prefill where it was measured faster than
        the XLA route (`auto_register_lhs_reason`: not for grids of too few CTA tiles).
    one warpgroup (first; explicit only): "kn" weights, dequantized into shared memory;
        runs in GPU interpret mode, which is how CI tests a weight-only Mosaic kernel.

How one CTA (one warpgroup) computes a (tile_m, tile_n) output tile
    `plgpu.emit_pipeline` streams, per K step of `tile_k` elements, the x tile (TMA into
    swizzled SMEM, the wgmma LHS), the stored code tile (int8, or uint8 with two 4-bit
    codes per byte) and, for grouped scales, the scale/zero rows of that step. The body
    loads the codes into registers, upcasts them to x.dtype (4-bit: unpacks both nibbles
    with integer ops), applies scales/zeros where needed, stores the bf16 tile into a
    swizzled SMEM buffer and issues `wgmma(acc, x_smem, w_smem)` into an f32 accumulator.

Why the upcast tile goes through SMEM (not registers)
    Hopper's wgmma takes only its *LHS* from registers; W is our RHS. JAX's
    `hopper_mixed_type_matmul_mgpu` keeps the int8 operand as a register LHS, which for us
    would mean computing y^T = W^T x^T. That form cannot run in GPU interpret mode in
    jax 0.11.2 (its wgmma callback expects SMEM refs for both operands), so this first
    version keeps both operands in SMEM and stays testable on CPU. The register-LHS variant
    is the obvious next step on a GPU (see the module's limits).

4-bit packing without an interleave
    Byte j of a packed column holds k = 2j (low nibble) and k = 2j + 1 (high nibble).
    Interleaving rows in registers is costly, so the decoded tile is stored as
    [all low nibbles; all high nibbles] and the *activation* columns of each K step are
    permuted to match ([even k; odd k]) once, by XLA, before the kernel (`_permute_x`).

Scales (glossary: group = `block_k` elements of K sharing one scale; step = `tile_k`)
    "accumulator" mode, when one group spans all of K (per channel): the tile holds the
    integer codes exactly in bf16 (|code| <= 128), and the epilogue computes
    y = s * (acc - z * sum_k x), one multiply per output instead of per weight.
    "tile" mode otherwise (g32/g64/g128): each group's rows of the tile are
    (code - z) * s, rounded to x.dtype before the wgmma; a step either covers whole
    groups (tile_k % block_k == 0) or lies inside one (block_k % tile_k == 0).

Limits of the one-warpgroup kernel: element dtypes int8/int4/uint4, block_n == 1, no global scale, "kn" layout;
padded K and N must be multiples of tile_k and tile_n (M is padded here); a step's decoded
rows and each scale group's rows must be multiples of 64 (4-bit: tile_k=128 and groups of
>= 128; int8: groups of >= 64), which is what the native lowering accepts. Tested in GPU
interpret mode and lowered for CUDA (Pallas -> Mosaic GPU, layout inference included) on
CPU. On an H200 (session 8, `scripts/bench_mosaic.py`) it compiles, matches the reference
and runs at 0.65x XLA's bf16 dot for int8 and 0.36x for int4-g128 (M=1024, 8192x28672),
against 0.79x for JAX's warp-specialized register-LHS example on int8 without scales.
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
from pallas_kernels.scaled_gemm import mosaic_kernel as scaled_mosaic

ELEMENT_DTYPES = (jnp.dtype(jnp.int8), jnp.dtype(jnp.int4), jnp.dtype(jnp.uint4))
_F32 = jnp.float32


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MosaicConfig:
    """Tiles of the Mosaic GPU kernel. tile_m: rows of x per CTA (wgmma M is 64 per
    instruction); tile_n: output columns (wgmma N <= 256); tile_k: K elements per
    pipeline step; max_concurrent_steps: TMA pipeline depth."""
    tile_m: int = 128
    tile_n: int = 128
    tile_k: int = 128
    max_concurrent_steps: int = 2

    def __post_init__(self):
        if self.tile_m % 64 or not 64 <= self.tile_m <= 256:
            raise ValueError(f"tile_m={self.tile_m} must be 64, 128, 192 or 256")
        if self.tile_n % 64 or not 64 <= self.tile_n <= 256:
            raise ValueError(f"tile_n={self.tile_n} must be a multiple of 64 in [64, 256]")
        if self.tile_k not in (32, 64, 128):
            raise ValueError(f"tile_k={self.tile_k} must be 32, 64 or 128")
        if self.max_concurrent_steps < 1:
            raise ValueError(f"max_concurrent_steps={self.max_concurrent_steps} must be >= 1")


def default_config(element_dtype) -> MosaicConfig:
    """The fastest measured tiles (H200, 8192x28672, M=1024 / 4096, BENCHMARKS.md session 8):
    int8 128x128 with 64-deep steps (884 / 4003 us against 1209 / 4721 with 128-deep ones);
    4-bit 128x128x128 (the only depth its decoded rows allow)."""
    return MosaicConfig(tile_k=64 if jnp.dtype(element_dtype) == jnp.int8 else 128)


def unsupported_reason(*, element_dtype, block_k: int, block_n: int = 1, layout: str = "kn",
                       kp: int, np_: int, has_global_scale: bool = False,
                       config: MosaicConfig) -> str | None:
    """Why the Mosaic kernel cannot take this weight (None when it can)."""
    edt = jnp.dtype(element_dtype)
    if edt not in ELEMENT_DTYPES:
        return f"element_dtype={edt} not in {ELEMENT_DTYPES} for the Mosaic GPU kernel"
    if block_n != 1 or layout != "kn" or has_global_scale:
        return f"the Mosaic GPU kernel needs block_n == 1, layout 'kn', no global scale: {block_n=}, {layout=}"
    tk, tn = config.tile_k, config.tile_n
    if kp % tk:
        return f"padded {kp=} must be a multiple of tile_k={tk}"
    if np_ % tn:
        return f"padded {np_=} must be a multiple of tile_n={tn}"
    if block_k < kp and tk % block_k and block_k % tk:
        return f"{block_k=} and tile_k={tk} must divide one another"
    halves = 2 if blocks.is_four_bit(edt) else 1
    # The native lowering (checked on CPU: tests lower for CUDA) keeps a step's decoded rows
    # in WGMMA-layout register tiles of 64 rows; smaller row slices find no layout.
    if (tk // halves) % 64:
        return (f"tile_k={tk} gives {tk // halves} decoded rows per step: the Mosaic GPU kernel "
                f"needs a multiple of 64 ({'tile_k=128 for 4-bit codes' if halves == 2 else 'tile_k >= 64'})")
    if block_k < kp and (min(block_k, tk) // halves) % 64:
        return (f"{block_k=}: a scale group must cover whole 64-row register tiles of the "
                f"decoded weight (group >= {64 * halves} here)")
    if (need := _smem_bytes(config, halves)) > scaled_mosaic.SMEM_LIMIT:
        return f"the tiles need ~{need} bytes of shared memory > {scaled_mosaic.SMEM_LIMIT}: use smaller tiles"
    return None




def _smem_bytes(config: MosaicConfig, halves: int) -> int:
    """Shared memory of one CTA (bf16 output; Mosaic GPU itself refuses an f32 output that
    does not fit): pipelined x, code and scale/zero tiles, the decoded tile, the output."""
    tm, tn, tk, steps = config.tile_m, config.tile_n, config.tile_k, config.max_concurrent_steps
    return steps * (tm * tk * 2 + tk // halves * tn + 2 * tn * 4) + tk * tn * 2 + tm * tn * 2 + 1024


def _decode(codes: jax.Array, element_dtype) -> jax.Array:
    """Stored codes -> (lo, hi) f32 halves for 4-bit (lo: even k, hi: odd k); (codes,) else."""
    dt = jnp.dtype(element_dtype)
    if dt == jnp.int8:
        return (codes.astype(_F32),)
    c = codes.astype(jnp.int32)
    lo, hi = c & 0xF, c >> 4
    if dt == jnp.int4:  # two's complement nibble -> -8..7
        lo, hi = (lo ^ 8) - 8, (hi ^ 8) - 8
    return lo.astype(_F32), hi.astype(_F32)


def _permute_x(x: jax.Array, tile_k: int) -> jax.Array:
    """Reorders each K step of x to [even k; odd k], matching the decoded 4-bit tile."""
    m, kp = x.shape
    x = x.reshape(m, kp // tile_k, tile_k // 2, 2)
    return x.swapaxes(-1, -2).reshape(m, kp)


@functools.partial(jax.jit, static_argnames=(
    "element_dtype", "block_k", "k", "n", "out_dtype", "config", "interpret"))
def weight_only_matmul_mosaic(x, values, scales, zeros=None, *, element_dtype, block_k: int,
                              k: int, n: int, out_dtype=None,
                              config: MosaicConfig = MosaicConfig(),
                              interpret: bool = False) -> jax.Array:
    """x (M, k) bf16/f16 @ stored W (k, n) -> (M, n) `out_dtype` (default x.dtype).

    values: int8 (Kp, Np) or uint8 (Kp/2, Np) packed 4-bit; scales (Kp/block_k, Np) f32 or
    bf16; zeros: None or like scales. `interpret=True` runs GPU interpret mode (any host).
    """
    edt = jnp.dtype(element_dtype)
    four = blocks.is_four_bit(edt)
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    m = x.shape[0]
    kp = blocks.stored_kp(values, edt, "kn")
    np_ = values.shape[1]
    if x.dtype not in (jnp.bfloat16, jnp.float16) or x.shape != (m, k):
        raise ValueError(f"x {x.shape} {x.dtype} must be (M, {k=}) bfloat16 or float16")
    if (why := unsupported_reason(element_dtype=edt, block_k=block_k, kp=kp, np_=np_,
                                  config=config)) is not None:
        raise NotImplementedError(why)
    tm, tn, tk = config.tile_m, config.tile_n, config.tile_k
    wdt = x.dtype
    per_channel = block_k >= kp  # one group spans K: scales go on the accumulator
    has_zeros = zeros is not None
    mp = -(-m // tm) * tm
    xp = jnp.pad(x, ((0, mp - m), (0, kp - k)))
    if four:
        xp = _permute_x(xp, tk)
    rows = tk // 2 if four else tk  # stored rows of values per K step
    halves = 2 if four else 1
    # Scale rows per step (grouped), and decoded rows per group within one half.
    g_step = max(1, tk // block_k)
    g_rows = min(block_k, tk) // halves
    k_iters = kp // tk

    x_tr = scaled_mosaic.smem_transforms(tk, wdt, "lhs")
    w_tr = scaled_mosaic.smem_transforms(tn, wdt, "rhs")
    o_tr = scaled_mosaic.smem_transforms(tn, out_dtype, "out")

    def kernel(*refs):
        x_gmem, v_gmem, s_gmem, *rest = refs
        z_gmem = rest.pop(0) if has_zeros else None
        xs_gmem = rest.pop(0) if has_zeros and per_channel else None
        o_gmem, w_smem, o_smem, s_sm, z_sm, xs_sm, ep_bar = rest
        mi, ni = lax.axis_index("m"), lax.axis_index("n")
        m_sl, n_sl = pl.ds(mi * tm, tm), pl.ds(ni * tn, tn)

        def step(acc_ref, _, x_smem, v_smem, *sz_smem):
            # Static loops: the halves of a 4-bit tile (lo = even k, hi = odd k), then the
            # groups of rows sharing one scale row (one group per channel, or per step).
            for h, part in enumerate(_decode(v_smem[...], edt)):
                for g in range(rows // g_rows):
                    w = part[g * g_rows:(g + 1) * g_rows]
                    if not per_channel:
                        row = g if tk >= block_k else 0
                        if has_zeros:
                            w = w - sz_smem[1][row].astype(_F32)[None, :]
                        w = w * sz_smem[0][row].astype(_F32)[None, :]
                    start = h * rows + g * g_rows
                    w_smem[start:start + g_rows] = w.astype(wdt)
            plgpu.commit_smem()  # make the generic-proxy stores visible to wgmma
            plgpu.wgmma(acc_ref, x_smem, w_smem)
            plgpu.wgmma_wait(0)  # w_smem is single-buffered: finish before the next store

        in_specs = [
            plgpu.BlockSpec((tm, tk), lambda kk: (0, kk), transforms=x_tr),
            plgpu.BlockSpec((rows, tn), lambda kk: (kk, 0)),
        ]
        operands = [x_gmem.at[m_sl], v_gmem.at[:, n_sl]]
        if not per_channel:
            if tk >= block_k:
                sz_spec = plgpu.BlockSpec((g_step, tn), lambda kk: (kk, 0))
            else:
                sz_spec = plgpu.BlockSpec((1, tn), lambda kk: (kk * tk // block_k, 0))
            in_specs.append(sz_spec)
            operands.append(s_gmem.at[:, n_sl])
            if has_zeros:
                in_specs.append(sz_spec)
                operands.append(z_gmem.at[:, n_sl])

        def acc_scope(acc_ref):
            plgpu.emit_pipeline(functools.partial(step, acc_ref), grid=(k_iters,), in_specs=in_specs,
                                max_concurrent_steps=config.max_concurrent_steps)(*operands)
            return acc_ref[...]

        acc = pl.run_scoped(acc_scope, plgpu.ACC((tm, tn), _F32))
        if per_channel:
            plgpu.copy_gmem_to_smem(s_gmem.at[0, n_sl], s_sm, ep_bar)
            if has_zeros:
                plgpu.copy_gmem_to_smem(z_gmem.at[0, n_sl], z_sm, ep_bar)
                plgpu.copy_gmem_to_smem(xs_gmem.at[m_sl], xs_sm, ep_bar)
            plgpu.barrier_wait(ep_bar)
            s = plgpu.load(s_sm, layout=plgpu.Layout.WGMMA.reduce(0)).astype(_F32)
            if has_zeros:
                z = plgpu.load(z_sm, layout=plgpu.Layout.WGMMA.reduce(0)).astype(_F32)
                xs = plgpu.load(xs_sm, layout=plgpu.Layout.WGMMA.reduce(1))
                acc = acc - xs[:, None] * z[None, :]
            acc = acc * s[None, :]
        o_smem[...] = acc.astype(out_dtype)
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(o_smem, o_gmem.at[m_sl, n_sl])
        plgpu.wait_smem_to_gmem(0)

    args = [xp, values, scales]
    if has_zeros:
        args.append(zeros)
        if per_channel:
            args.append(jnp.sum(xp.astype(_F32), axis=1))  # the z * sum_k x correction
    sdt = scales.dtype
    ep_smem = (plgpu.SMEM((tn,), sdt), plgpu.SMEM((tn,), sdt), plgpu.SMEM((tm,), _F32))
    n_copies = (3 if has_zeros else 1) if per_channel else 1
    call = plgpu.kernel(
        kernel,
        out_type=jax.ShapeDtypeStruct((mp, np_), out_dtype),
        grid=(mp // tm, np_ // tn),
        grid_names=("m", "n"),
        scratch_types=[
            plgpu.SMEM((tk, tn), wdt, transforms=w_tr),
            plgpu.SMEM((tm, tn), out_dtype, transforms=o_tr),
            *ep_smem,
            plgpu.Barrier(num_arrivals=n_copies),
        ],
        interpret=plgpu.InterpretGPUParams() if interpret else None,
        kernel_name="weight_only_matmul_mosaic",
    )
    return call(*args)[:m, :n]


# ---------------------------------------------------------------------------------------
# int8, e4m3 and 4-bit weights stored "nk" or "mma": y^T = W x^T on the warp-specialized
# scaled GEMM, the weight tile upcast in registers and fed to wgmma as its register operand (no
# dequantized tile in shared memory, no dequantized weight in HBM), y stored transposed.

# Measured on H100 (BENCHMARKS.md session 10, "mma" weights, M=1024): 64 weight rows per
# compute warpgroup, the two stacked (128-row CTA tile), 256 rows of x, 64-deep K steps, 4
# stages; x rows minor in the tile walk: int8 0.92x / 0.83x XLA's bf16 dot on 8192x28672 /
# 14336x4096 (the route: 0.66x / 0.67x). 128 rows of x or 128 weight rows per warpgroup
# were 20-30% slower; 128 x 256 per warpgroup spills (5-9x slower). e4m3 codes take the same
# tiles (session 12, H100): fp8 per channel 0.87-0.96x at M=1024 (the route: 0.65-0.67x),
# fp8 128x128 blocks 0.86-0.94x.
REGISTER_LHS_TILES = scaled_mosaic.MosaicGemmConfig(
    tile_m=64, tile_n=256, tile_k=64, wg_dim="m", max_concurrent_steps=4, grid_minor_dim="n")
# 4-bit codes: 128-deep steps (one "mma" chunk of 64 bytes per row), so only 2 stages fit;
# still faster than 128 rows of x with 4 stages (int4-g128: 0.93x / 0.81x against 0.59x /
# 0.65x for the route; 128 rows of x, 4 stages: 0.65x / 0.59x with the scaling in f32).
REGISTER_LHS_TILES_4BIT = dataclasses.replace(REGISTER_LHS_TILES, tile_k=128,
                                              max_concurrent_steps=2)
# e2m1 codes (mxfp4, nvfp4): each step upcast in two halves, the second while the first
# half's wgmma runs (`split_upcast`): 0.7-1.8% faster at M=1024 on the three shapes (H100,
# session 14); int4/uint4 -0.3% to +1.8% (not taken), int8/e4m3 3-10% slower.
REGISTER_LHS_TILES_E2M1 = dataclasses.replace(REGISTER_LHS_TILES_4BIT, split_upcast=True)
# Above this M, `impl="auto"` sends 4-bit weights to the dequantize-then-XLA route: at M=4096
# that route won on 3 of 6 (shape, 4-bit format) pairs, at M=1024 on none (H100, session 10);
# mxfp4 / nvfp4 at M=4096 on all 3 shapes, int4-g32 on none of 1 (session 14).
REGISTER_LHS_MAX_M_4BIT = 2048
# Below this many CTA tiles (128 weight rows x 256 rows of x) `impl="auto"` takes the XLA route:
# each CTA walks all of K alone, so a grid that leaves SMs idle loses to XLA's GEMM (H100,
# session 17, M=1024, int8 / int4-g128 / mxfp4, us): 128 tiles won (4096x4096: 55-63 against
# 68-70 for the route; 14336x4096: 176-206 against 219-226), 48 and fewer lost (576x1536 13-14
# against 10-12; 1536x576 27-30 against 10-13; 4096x1024 50-59 against 23-25; 576x576 and
# 576x192 15-21 against 6-13, at M=1024 and 2048).
REGISTER_LHS_MIN_TILES = 128
REGISTER_LHS_CODES = scaled_mosaic.MIXED_CODES
RegisterLhsConfig = scaled_mosaic.MosaicGemmConfig  # what impl="mosaic" takes as `config`
REGISTER_LHS_LAYOUTS = ("nk", "mma")


def _tiles(element_dtype) -> scaled_mosaic.MosaicGemmConfig:
    if jnp.dtype(element_dtype) == jnp.float4_e2m1fn:
        return REGISTER_LHS_TILES_E2M1
    return REGISTER_LHS_TILES_4BIT if blocks.is_four_bit(element_dtype) else REGISTER_LHS_TILES


def register_lhs_config(element_dtype, out_dtype, *, block_k: int, kp: int,
                        has_zeros: bool = False) -> scaled_mosaic.MosaicGemmConfig:
    """The measured tiles for these codes, made to fit shared memory with this output dtype
    and, when the kernel scales per K step (groups shorter than Kp, or zeros), the step's
    scale and zero rows: fewer stages first, then half the rows of x."""
    base = c = _tiles(element_dtype)
    zeros = scaled_mosaic.carries_zeros(element_dtype, has_zeros)
    for tile_n in (base.tile_n, base.tile_n // 2):
        for steps in range(base.max_concurrent_steps, 1, -1):
            c = dataclasses.replace(base, tile_n=tile_n, max_concurrent_steps=steps)
            need = scaled_mosaic.smem_bytes(c, element_dtype, jnp.dtype(out_dtype).itemsize,
                                            jnp.bfloat16, promote=block_k < kp or zeros,
                                            zeros=zeros)
            if need <= scaled_mosaic.SMEM_LIMIT:
                return c
    return c


def takes_register_lhs(element_dtype, block_k: int, layout: str, kp: int) -> bool:
    """Whether the weight is one the register-operand kernel is for: int8/int4/uint4/e4m3/
    e2m1 codes stored "nk" or "mma", scales over all of K, over groups of whole K steps, or
    over 2-8 groups per step (MX's 32, NVFP4's 16, g32/g64) of whole 8-column register
    tiles (blocks of block_n > 1 output rows, e.g. fp8's 128x128, are repeated per row by
    XLA first)."""
    tk = _tiles(element_dtype).tile_k
    whole_steps = block_k >= kp or block_k % tk == 0
    return (jnp.dtype(element_dtype) in REGISTER_LHS_CODES and layout in REGISTER_LHS_LAYOUTS
            and (whole_steps or (tk % block_k == 0 and block_k % 8 == 0 and tk // block_k <= 8)))


def register_lhs_tiles(element_dtype, np_: int, m: int) -> int:
    """CTA tiles of the register-operand kernel's default tiles for np_ weight rows and m
    rows of x (the rows padded up to whole tiles)."""
    c = _tiles(element_dtype)
    return -(-np_ // c.cta_m) * -(-m // c.cta_n)


def auto_register_lhs_reason(element_dtype, block_k: int, layout: str, kp: int, m: int,
                             np_: int) -> str | None:
    """Why `impl="auto"` does not send this prefill to the register-operand kernel (None when
    it does): it takes every weight the kernel takes, 4-bit codes up to
    `REGISTER_LHS_MAX_M_4BIT` rows of x, grids of at least `REGISTER_LHS_MIN_TILES` CTA tiles.
    Measured faster than the XLA route on H100 at M=1024 and 2048 for every format it takes
    (BENCHMARKS.md sessions 10-14; MX, NVFP4 and g32/g64 from session 14), 8-bit codes at
    M=4096 too, where the grid fills the SMs (session 17)."""
    edt = jnp.dtype(element_dtype)
    if not takes_register_lhs(edt, block_k, layout, kp):
        return (f"the register-operand kernel does not take {edt} {layout!r} weights with "
                f"{block_k=}, and the route beat the other prefill kernels from M=512 (H200, "
                f"BENCHMARKS.md session 8)")
    if m > REGISTER_LHS_MAX_M_4BIT and blocks.is_four_bit(edt):
        return (f"{m} rows of x > REGISTER_LHS_MAX_M_4BIT={REGISTER_LHS_MAX_M_4BIT} for 4-bit "
                f"codes (the route was faster: H100, BENCHMARKS.md sessions 10 and 14)")
    if (tiles := register_lhs_tiles(edt, np_, m)) < REGISTER_LHS_MIN_TILES:
        return (f"{np_} weight rows x {m} rows of x make {tiles} CTA tiles < "
                f"REGISTER_LHS_MIN_TILES={REGISTER_LHS_MIN_TILES} (narrow layers ran faster on "
                f"the route: H100, BENCHMARKS.md session 17)")
    return None


def auto_takes_register_lhs(element_dtype, block_k: int, layout: str, kp: int, m: int,
                            np_: int) -> bool:
    """Whether `impl="auto"` sends this prefill to the register-operand kernel
    (`auto_register_lhs_reason`)."""
    return auto_register_lhs_reason(element_dtype, block_k, layout, kp, m, np_) is None


def _run_kp(kp: int, layout: str, config: scaled_mosaic.MosaicGemmConfig) -> int:
    """The K the kernel runs: an "nk" weight's Kp up to whole steps (e.g. SmolLM2's 576 with
    4-bit codes' 128-deep steps; "mma" storage is padded to its chunks already)."""
    return kp + (-kp % config.tile_k if layout == "nk" else 0)


def register_lhs_reason(*, element_dtype, x_dtype, block_k: int, layout: str,
                        kp: int, out_dtype=None, has_zeros: bool = False,
                        interpret: bool = False,
                        config: scaled_mosaic.MosaicGemmConfig | None = None) -> str | None:
    """Why `weight_only_matmul_register_lhs` cannot take this weight (None when it can)."""
    out_dtype = jnp.dtype(out_dtype or x_dtype)
    config = config or register_lhs_config(element_dtype, out_dtype, block_k=block_k, kp=kp,
                                           has_zeros=has_zeros)
    if not takes_register_lhs(element_dtype, block_k, layout, kp):
        return (f"the register-operand kernel takes {', '.join(map(str, REGISTER_LHS_CODES))} "
                f"codes stored {' or '.join(REGISTER_LHS_LAYOUTS)}, scales over K, over groups "
                f"of whole {config.tile_k}-deep steps or over 2-8 groups of a multiple of 8 "
                f"per step; got {jnp.dtype(element_dtype)}, "
                f"{block_k=} (Kp={kp}), {layout=}")
    if (why := scaled_mosaic.device_reason()) is not None:
        return why
    run_kp = _run_kp(kp, layout, config)
    return scaled_mosaic.unsupported_reason(
        element_dtype=element_dtype, kp=run_kp, np_=config.cta_n,
        groups=run_kp // block_k if block_k < kp else 1,
        config=config, b_dtype=x_dtype, out_dtype=out_dtype, a_layout=layout,
        has_zeros=has_zeros, interpret=interpret)


@functools.partial(jax.jit, static_argnames=("element_dtype", "layout", "block_k", "n",
                                             "out_dtype", "config", "block_n"))
def weight_only_matmul_register_lhs(x, values, scales, zeros=None, global_scale=None, *,
                                    element_dtype, layout: str, block_k: int, n: int,
                                    out_dtype, config: scaled_mosaic.MosaicGemmConfig | None = None,
                                    block_n: int = 1):
    """x (M, k) bf16/f16 @ W stored "nk" or "mma" (values (Np, Kp) int8 / e4m3 or (Np, Kp/2)
    packed 4-bit, scales and zeros (Np/block_n, Kp/block_k), global_scale None or a scalar
    folded into the f32 scales) -> (M, n). Computes y^T = W x^T (weight rows as wgmma's M);
    a 16-bit y is stored transposed by the kernel, an f32 one by XLA."""
    m, k = x.shape
    np_ = values.shape[0]
    # one scale (and zero) row per weight row
    scales = blocks.expand_blocks(scales.astype(_F32), (block_n,), (0,))[:np_]
    if global_scale is not None:
        scales = scales * jnp.asarray(global_scale, _F32)
    zeros = None if zeros is None else blocks.expand_blocks(zeros, (block_n,), (0,))[:np_]
    kp = blocks.stored_kp(values, element_dtype, layout)
    config = config or register_lhs_config(element_dtype, out_dtype, block_k=block_k, kp=kp,
                                           has_zeros=zeros is not None)
    # Weight rows up to whole CTAs (e.g. SmolLM2's 576 and 192; an "mma" band of 16 rows is
    # contiguous, so the rows added are whole tiles) and "nk" K up to whole steps (`_run_kp`;
    # x's padding is zero, and so are the codes, scales and zeros appended, in whole scale
    # groups; one scale per row stays one): one XLA copy of the weight per call, only for
    # such shapes.
    pad_n, pad_k = -np_ % config.cta_m, _run_kp(kp, layout, config) - kp
    if pad_n or pad_k:
        pad_g = 0 if block_k >= kp else pad_k // block_k
        values = jnp.pad(values, ((0, pad_n), (0, pad_k * scaled_mosaic.code_bits(element_dtype) // 8)))
        scales = jnp.pad(scales, ((0, pad_n), (0, pad_g)))
        zeros = None if zeros is None else jnp.pad(zeros, ((0, pad_n), (0, pad_g)))
        np_, kp = np_ + pad_n, kp + pad_k
    if blocks.is_four_bit(element_dtype):  # the same bytes, two int4 codes each (low first)
        values = lax.bitcast_convert_type(values, jnp.int4).reshape(np_, kp)
    mp = -(-m // config.cta_n) * config.cta_n
    xp = jnp.pad(x, ((0, mp - m), (0, kp - k)))
    # Each output tile is stored transposed (y, not y^T: 5-7% faster than XLA's transpose
    # after the kernel); Mosaic GPU stores only 16-bit outputs that way.
    transpose = jnp.dtype(out_dtype).itemsize == 2
    y = scaled_mosaic.scaled_matmul_mosaic(
        values, xp, scales.T, jnp.ones((1, mp), _F32),
        None if zeros is None else zeros.astype(_F32).T, out_dtype=out_dtype, config=config,
        a_codes=jnp.dtype(element_dtype), a_layout=layout, transpose_out=transpose)
    return (y if transpose else y.T)[:m, :n]
