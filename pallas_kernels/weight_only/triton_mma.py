"""Decode on tensor cores: the weight as the 16-row operand of `mma.sync` m16n8k16 (Marlin's
idea, in Triton through inline PTX), reading the "mma" storage layout (`blocks.nk_to_mma`).

Why: `kgemv` (FMA GEMV in f32) spends ~3.1 instructions per int4 weight (BENCHMARKS.md, SASS
count) and at M=1 that, not HBM, was its limit. On tensor cores the products cost one `mma`
per 8 weights a thread holds; what is left per weight is its upcast, under one instruction:

    4-bit codes  one LOP3 per pair of codes puts each nibble in the low mantissa bits of
                 bf16 128 (f16 1024 for f16 x): 128 + n exactly (n ^ 8 in the same LOP3 for
                 int4: 136 + code). The word shifted by 4j gives pair j: 7 instructions per
                 8 codes.
    int8         the same on the two nibble planes: code = 16 * hi + lo, hi signed (136 + hi)
                 and lo unsigned (128 + lo), two MMAs (the hi plane's sum is scaled by 16).

    e2m1, e4m3   the sign to bit 15 and the other bits to bf16's exponent and mantissa
                 (e2m1: bits 8-6, e4m3: bits 10-4): value * 2**-126 / 2**-120, subnormals
                 included, then one bf16x2 multiply per pair by a factor that restores
                 2**126 / 2**120 and, for scale blocks shorter than a chunk (mxfp4 32,
                 nvfp4 16, mxfp8 32), carries the lane's block scale (times 2**-SCALE_SHIFT,
                 undone in f32 after the loop): the products are then those of the
                 dequantized bf16 weight (e2m1 * e8m0 or e4m3 is exact in bf16). 4-bit: per
                 pair a shift and AND for the magnitude, a shift for the sign, one LOP3;
                 e4m3: 7 instructions per 4 codes. No offsets. A lane's scale bytes are
                 loaded one chunk ahead (NVFP4's two blocks per lane run as one 16-bit word
                 per row) and become factors where the chunk is used (`_lane_factors`):
                 e8m0 in one IMAD, e4m3 through Hopper's e4m3x2 -> f16x2 `cvt`
                 (`lane_e4m3_factor_asm`: 420 -> 397 loop instructions per two tile-chunks,
                 nvfp4 decode 3-6% faster on H100).

The offsets are not subtracted per weight: one more MMA per K step with an all-ones A
operand gives S = sum of x over the chunk (per row of x), and `offset * S` is taken off the
chunk's sum (zero points likewise: (offset + z) * S). Products and sums are f32.

Layout and fragments (out^T = W x^T; a warp owns TN tiles of 16 weight rows):
    A  the weight tile, upcast in registers. Lane 4g + t holds rows g and g + 8; per chunk
       (64 stored bytes of a row: 128 4-bit codes or 64 int8) a 16-byte vector of each row,
       K values t*32 .. t*32 + 31 (4-bit) or t*16 .. t*16 + 15 (int8). "mma" stores each
       tile's chunk as 1 KB in exactly that lane order, so a warp's load is two contiguous
       512-byte runs (measured: +10-25% bandwidth over the "nk" rows; probe in
       BENCHMARKS.md), and orders the codes inside each word so that the upcast's pairs are
       consecutive K values.
    B  x^T: lane (g, t) loads 16-byte vectors of x row 8b + g (row M - 1 past M; those
       columns are dropped) at the same K values, so its registers already hold the K pairs
       the A pairs meet. x_mode 1 reads x as it is (no prologue); then each vector load of
       a warp touches 8 rows, 16 cache lines, which at 16 rows of x costs more than the
       weight's own loads. x_mode 2 has XLA put x in the lanes' load order first
       (`fragment_order_x`, a transpose that XLA may fuse into x's producer), 512 contiguous
       bytes per load.
    C  f32 accumulators: lane (g, t) holds out[8b + 2t (+1)] of weight rows g and g + 8.
       A scale block's sum starts from zero, loses the offsets' share, is multiplied by its
       scales and added to the total; per-channel scales apply once after the loop.

Triton gives each (R, 4) int32 tensor (R = 32 * num_warps) one row per thread and its 4
elements to that thread's registers (TN * R rows: TN rows per thread), so the loads are the
fragments and every inline-asm operand is in that one layout; scales are loaded by PTX
(`_ld_nc`), which anchors no other layout. `scripts/ptx_report.py` checks the result offline
(no shared memory, 16-byte loads). The kernel runs on NVIDIA GPUs (sm_80+; the float
codes' bf16x2 multiply needs sm_90) only;
tests/pallas_kernels/test_weight_only_mma.py runs its PTX on CPU, lanes and MMA included.
"""

from __future__ import annotations

import jax.numpy as jnp

from pallas_kernels import blocks

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the Triton path reports itself unavailable.
    triton = None

# Magic numbers per x dtype: the float whose low mantissa bits take a nibble (128 in bf16,
# 1024 in f16, both with ulp 1), and 1.0 (the all-ones A operand).
MAGIC = {"bf16": (0x4300, 128.0, 0x3F80), "f16": (0x6400, 1024.0, 0x3C00)}


def offset(element_dtype, xt: str) -> float:
    """What the upcast adds to each code: the chunk's product holds code * x plus offset * S
    (S = the chunk's sum of x). int8's product is 16 * hi plane + lo plane."""
    base = MAGIC[xt][1]
    dt = jnp.dtype(element_dtype)
    if dt == jnp.int4:
        return base + 8
    if dt == jnp.uint4:
        return base
    return 16 * (base + 8) + base  # int8: 16 * (hi + base + 8) + (lo + base)


def upcast_asm(element_dtype, xt: str) -> str:
    """8 words ($32-$35: row g, $36-$39: row g + 8) -> 8 A fragments of m16n8k16 ($4f ..
    $4f+3: rows g, g+8 x K pair (2t, 2t+1), then (2t+8, 2t+9)). Pair j of a word is its
    nibbles j and j + 4 (the word shifted by 4j, masked by LOP3 into the magic's mantissa).
    4-bit: word i gives fragments 2i (pairs 0, 1) and 2i + 1 (pairs 2, 3). int8: word i gives
    fragment i (lo plane: pairs 0, 2) and 4 + i (hi plane, signed: pairs 1, 3)."""
    magic = MAGIC[xt][0]
    dt = jnp.dtype(element_dtype)
    lines = [".reg .b32 v1, v2, v3;"]
    for i in range(4):
        for row in range(2):
            src = f"${32 + 4 * row + i}"
            lines += [f"shr.b32 v1, {src}, 4;", f"shr.b32 v2, {src}, 8;", f"shr.b32 v3, {src}, 12;"]
            for j, v in enumerate((src, "v1", "v2", "v3")):
                signed = dt == jnp.int4 or (dt == jnp.int8 and j % 2 == 1)
                const = (magic | 8) * 0x10001 if signed else magic * 0x10001
                if dt == jnp.int8:
                    frag, slot = (i if j % 2 == 0 else 4 + i), j // 2
                else:
                    frag, slot = 2 * i + j // 2, j % 2
                out = 4 * frag + 2 * slot + row
                lines.append(f"lop3.b32 ${out}, {v}, 0x000f000f, {const:#010x}, {'0x6a' if signed else '0xea'};")
    return "{\n" + "\n".join(lines) + "\n}"


# e2m1 / e4m3 codes placed in bf16 bits are value * 2**-FLOAT_BIAS (bf16 subnormals included).
FLOAT_BIAS = {jnp.dtype(jnp.float4_e2m1fn): 126, jnp.dtype(jnp.float8_e4m3fn): 120}
SCALE_SHIFT = 32  # lane scales enter bf16 as scale * 2**(bias - 32): e8m0 scales up to 2**33
#                   (e2m1; 2**39 for e4m3) stay finite, larger ones give inf (never a wrong
#                   finite number); blocks of weights below ~2**-90 flush towards zero


def float_upcast_asm(element_dtype, nf: int) -> str:
    """Float codes -> bf16 A fragments times their factors. 8 words (row g, then row g + 8)
    follow the outputs (e2m1: 32 registers, 8 fragments as `upcast_asm`'s 4-bit ones; e4m3:
    16, 4 fragments: word i gives fragment i, bytes 0 and 2 its K pair 2t, bytes 1 and 3 pair
    2t + 8), then 4 bf16x2 factors: row g, row g + 8, and (nf == 2: words 2-3 use a second
    block) row g, row g + 8 of the lane's second scale block."""
    four = blocks.is_four_bit(element_dtype)
    n_out = 32 if four else 16
    lines = [".reg .b32 s, m, p;"]
    for i in range(4):
        for row in range(2):
            src = f"${n_out + 4 * row + i}"
            fac = f"${n_out + 8 + row + (2 * (i // 2) if nf == 2 else 0)}"
            if four:  # pair j: nibbles j, j + 4 at bits 4j, 16 + 4j; sign bit 4j + 3
                pairs = [(f"shl.b32 s, {src}, {12 - 4 * j};" if j < 3 else None,
                          f"shl.b32 m, {src}, {6 - 4 * j};" if j < 2 else f"shr.b32 m, {src}, {4 * j - 6};",
                          "0x01C001C0", 4 * (2 * i + j // 2) + 2 * (j % 2) + row) for j in range(4)]
            else:  # slot 0: bytes 0, 2 (sign bit 7); slot 1: bytes 1, 3 (sign in place)
                pairs = [(f"shl.b32 s, {src}, 8;", f"shl.b32 m, {src}, 4;", "0x07F007F0", 4 * i + row),
                         (None, f"shr.b32 m, {src}, 4;", "0x07F007F0", 4 * i + 2 + row)]
            for sign, mag, mask, out in pairs:
                lines += ([sign] if sign else []) + [
                    mag, f"and.b32 m, m, {mask};",
                    f"lop3.b32 p, {'s' if sign else src}, m, 0x80008000, 0xec;",  # (sign & 0x8000) | m
                    f"mul.rn.bf16x2 ${out}, p, {fac};"]
    return "{\n" + "\n".join(lines) + "\n}"


def lane_load_asm(nf: int, split: bool = True) -> str:
    """A lane's scale bytes, zero-extended, from the pointers $4, $5 (rows g, g + 8): $0, $1
    the rows' first block, $2, $3 their second (nf == 2; else the first again). nf == 2 loads
    the row's two adjacent blocks as one 16-bit word (a warp's load touches 8 rows' lines:
    two loads instead of four), split into bytes, or (split=False) left whole in $0, $1 (and
    repeated) for `lane_e4m3_factor_asm`."""
    if nf == 1:
        lines = ["ld.global.nc.u8 $0, [$4];", "ld.global.nc.u8 $1, [$5];"]
    else:
        lines = ["ld.global.nc.u16 $0, [$4];", "ld.global.nc.u16 $1, [$5];"]
    if nf == 2 and split:
        lines += ["shr.b32 $2, $0, 8;", "shr.b32 $3, $1, 8;", "and.b32 $0, $0, 255;",
                  "and.b32 $1, $1, 255;"]
    else:
        lines += ["mov.b32 $2, $0;", "mov.b32 $3, $1;"]
    return "{\n" + "\n".join(lines) + "\n}"


def lane_e4m3_factor_asm(nf: int, fx: int) -> str:
    """A lane's e4m3 scale words (`lane_load_asm(nf, split=False)`: $4, $5 rows g, g + 8) ->
    its 4 factors, bf16x2 bits of scale * 2**fx in both halves: $0, $1 rows g, g + 8; $2, $3
    the same rows' second block (nf == 2; else the first again). Both bytes of a word go
    through Hopper's e4m3x2 -> f16x2 and f32 into one bf16x2, times 2**fx (all exact: sign,
    zero and NaN kept), then each half is repeated."""
    factor = ((fx + 127) << 7) * 0x10001
    lines = [".reg .b16 w, x, lo, hi;", ".reg .b32 h, p, k;", ".reg .f32 f0, f1;",
             f"mov.b32 k, {factor:#010x};"]
    for row in range(2):
        lines += [f"mov.b32 {{w, x}}, ${4 + row};",
                  "cvt.rn.f16x2.e4m3x2 h, w;",  # byte 1 -> upper half (0 for nf == 1)
                  "mov.b32 {lo, hi}, h;",
                  "cvt.f32.f16 f0, lo;", "cvt.f32.f16 f1, hi;",
                  "cvt.rn.bf16x2.f32 p, f1, f0;",
                  "mul.rn.bf16x2 p, p, k;",
                  "mov.b32 {lo, hi}, p;",
                  f"mov.b32 ${row}, {{lo, lo}};",
                  f"mov.b32 ${2 + row}, {{{'hi, hi' if nf == 2 else 'lo, lo'}}};"]
    return "{\n" + "\n".join(lines) + "\n}"


def mma2_asm(xt: str) -> str:
    """Two chained m16n8k16 MMAs, f32 accumulation: D ($0-$3) = A0 ($4-$7) B0 + A1 ($8-$11)
    B1 + C ($16-$19), B0 = ($12, $13), B1 = ($14, $15)."""
    mma = f"mma.sync.aligned.m16n8k16.row.col.f32.{xt}.{xt}.f32"
    return ("{\n.reg .f32 d0, d1, d2, d3;\n"
            f"{mma} {{d0, d1, d2, d3}}, {{$4, $5, $6, $7}}, {{$12, $13}}, {{$16, $17, $18, $19}};\n"
            f"{mma} {{$0, $1, $2, $3}}, {{$8, $9, $10, $11}}, {{$14, $15}}, {{d0, d1, d2, d3}};\n}}")


if triton is not None:
    from pallas_kernels.weight_only.triton_decode import _ld_nc
    from pallas_kernels.weight_only.triton_kernel import _decode_scale

    _UP_I8_BF16, _UP_I8_F16 = (tl.constexpr(upcast_asm(jnp.int8, xt)) for xt in ("bf16", "f16"))
    _UP_S4_BF16, _UP_S4_F16 = (tl.constexpr(upcast_asm(jnp.int4, xt)) for xt in ("bf16", "f16"))
    _UP_U4_BF16, _UP_U4_F16 = (tl.constexpr(upcast_asm(jnp.uint4, xt)) for xt in ("bf16", "f16"))
    _UP_CONS = tl.constexpr(",".join(["=r"] * 32 + ["r"] * 8))
    _UP_E2M1_1, _UP_E2M1_2 = (tl.constexpr(float_upcast_asm(jnp.float4_e2m1fn, nf)) for nf in (1, 2))
    _UP_E4M3_1, _UP_E4M3_2 = (tl.constexpr(float_upcast_asm(jnp.float8_e4m3fn, nf)) for nf in (1, 2))
    _LD_LANE_1, _LD_LANE_2 = (tl.constexpr(lane_load_asm(nf)) for nf in (1, 2))
    _LD_WORD_2 = tl.constexpr(lane_load_asm(2, split=False))
    # e4m3 scales' factors, by codes (e2m1, e4m3) and scale blocks per lane run
    _FAC_E2M1_1, _FAC_E2M1_2, _FAC_E4M3_1, _FAC_E4M3_2 = (
        tl.constexpr(lane_e4m3_factor_asm(nf, FLOAT_BIAS[jnp.dtype(d)] - SCALE_SHIFT))
        for d in (jnp.float4_e2m1fn, jnp.float8_e4m3fn) for nf in (1, 2))
    _UP_E2M1_CONS = tl.constexpr(",".join(["=r"] * 32 + ["r"] * 12))
    _UP_E4M3_CONS = tl.constexpr(",".join(["=r"] * 16 + ["r"] * 12))
    _MMA_BF16 = tl.constexpr(mma2_asm("bf16"))
    _MMA_F16 = tl.constexpr(mma2_asm("f16"))
    _MMA_CONS = tl.constexpr(",".join(["=r"] * 4 + ["r"] * 16))
    _ONES_BF16 = tl.constexpr(MAGIC["bf16"][2] * 0x10001)  # 1.0 in both halves
    _ONES_F16 = tl.constexpr(MAGIC["f16"][2] * 0x10001)
    _UNSHIFT = tl.constexpr(float(2 ** SCALE_SHIFT))

    @triton.jit
    def _mma2(a0, a1, xw, acc, BF16: tl.constexpr):
        if BF16:
            asm: tl.constexpr = _MMA_BF16
        else:
            asm: tl.constexpr = _MMA_F16
        return tl.inline_asm_elementwise(asm, _MMA_CONS, [a0, a1, xw, acc.to(tl.int32, bitcast=True)],
                                         dtype=tl.int32, is_pure=True, pack=4).to(tl.float32, bitcast=True)

    @triton.jit
    def _upcast(wg, wh, ELEM: tl.constexpr, BF16: tl.constexpr):
        """Row-g and row-(g+8) words -> 8 A fragments (`upcast_asm`)."""
        if ELEM == 0 and BF16:
            asm: tl.constexpr = _UP_I8_BF16
        elif ELEM == 0:
            asm: tl.constexpr = _UP_I8_F16
        elif ELEM == 1 and BF16:
            asm: tl.constexpr = _UP_S4_BF16
        elif ELEM == 1:
            asm: tl.constexpr = _UP_S4_F16
        elif BF16:
            asm: tl.constexpr = _UP_U4_BF16
        else:
            asm: tl.constexpr = _UP_U4_F16
        return tl.inline_asm_elementwise(
            asm, _UP_CONS, [wg, wh],
            dtype=(tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32),
            is_pure=True, pack=4)

    @triton.jit
    def _upcast_float(wg, wh, fac, ELEM: tl.constexpr, NF: tl.constexpr):
        """Row-g and row-(g+8) words and the lane's factors -> 8 (e2m1) or 4 (e4m3) A
        fragments (`float_upcast_asm`)."""
        if ELEM == 4 and NF == 2:
            asm: tl.constexpr = _UP_E2M1_2
        elif ELEM == 4:
            asm: tl.constexpr = _UP_E2M1_1
        elif NF == 2:
            asm: tl.constexpr = _UP_E4M3_2
        else:
            asm: tl.constexpr = _UP_E4M3_1
        if ELEM == 4:
            a = tl.inline_asm_elementwise(
                asm, _UP_E2M1_CONS, [wg, wh, fac],
                dtype=(tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32, tl.int32),
                is_pure=True, pack=4)
        else:
            a = tl.inline_asm_elementwise(asm, _UP_E4M3_CONS, [wg, wh, fac],
                                          dtype=(tl.int32, tl.int32, tl.int32, tl.int32), is_pure=True, pack=4)
        return a

    @triton.jit
    def _lane_scales(ptrs, SCALE: tl.constexpr, NF: tl.constexpr):
        """The lane's scales as loaded (`lane_load_asm`), one chunk ahead: e8m0 bytes, e4m3
        words; `_lane_factors` turns them into factors where the chunk is used."""
        if NF == 1:
            asm: tl.constexpr = _LD_LANE_1
        elif SCALE == 2:
            asm: tl.constexpr = _LD_WORD_2
        else:
            asm: tl.constexpr = _LD_LANE_2
        return tl.inline_asm_elementwise(asm, "=r,=r,=r,=r,l,l,l,l", [ptrs], dtype=tl.int32, is_pure=True, pack=4)

    @triton.jit
    def _lane_factors(raw, ELEM: tl.constexpr, NF: tl.constexpr, SCALE: tl.constexpr, FX: tl.constexpr,
                      FC: tl.constexpr):
        """The lane's scales (`_lane_scales`) -> its factors, bf16x2 bits of scale * 2**FX in
        both halves (FX = bias - SCALE_SHIFT, FC = (FX << 7) * 0x10001; exact): e4m3 by
        `_e4m3_factors`; e8m0 byte e = 2**(e - 127) as the exponent field e + FX in both
        halves, one IMAD, e clamped so that too large a scale gives inf (field 255), not a
        carry into the sign."""
        if SCALE == 2:
            return _e4m3_factors(raw, ELEM, NF)
        e = tl.minimum(raw, 255 - FX).to(tl.uint32, bitcast=True)
        return (e * 0x00800080 + FC).to(tl.int32, bitcast=True)

    @triton.jit
    def _e4m3_factors(raw, ELEM: tl.constexpr, NF: tl.constexpr):
        """The lane's e4m3 scale words -> its factors (`lane_e4m3_factor_asm`)."""
        if ELEM == 4 and NF == 1:
            fasm: tl.constexpr = _FAC_E2M1_1
        elif ELEM == 4:
            fasm: tl.constexpr = _FAC_E2M1_2
        elif NF == 1:
            fasm: tl.constexpr = _FAC_E4M3_1
        else:
            fasm: tl.constexpr = _FAC_E4M3_2
        return tl.inline_asm_elementwise(fasm, "=r,=r,=r,=r,r,r,r,r", [raw], dtype=tl.int32,
                                         is_pure=True, pack=4)

    @triton.jit
    def _rep(v, TN: tl.constexpr):
        """A lane tensor (32 NW, 4) repeated for the TN tiles of each warp (TN * 32 NW, 4)."""
        if TN == 1:
            return v
        return tl.reshape(tl.broadcast_to(v[None, :, :], (TN, v.shape[0], 4)), (TN * v.shape[0], 4))

    @triton.jit
    def _fetch(c, w_g, w_h, s_ptr, z_ptr, n_out, ssk, ssn, SCALE: tl.constexpr, SBK: tl.constexpr,
               CK: tl.constexpr, HAS_Z: tl.constexpr, MODE: tl.constexpr, sf, NF: tl.constexpr):
        """Chunk c's weight words (rows g and g + 8: two 512-byte runs per warp) and, per
        scale block (MODE 1), its scales and zero points; MODE 2: the lane's scales as loaded
        (`_lane_scales`; sf: the offsets of its scales, (R, 4): rows g, g + 8, then those of
        its second block)."""
        wg = tl.load(w_g + c * 256, eviction_policy="evict_first")  # 1 KB per tile and chunk
        wh = tl.load(w_h + c * 256, eviction_policy="evict_first")
        if MODE == 2:
            s = _lane_scales(s_ptr + sf + ((c * CK) // SBK) * ssk, SCALE, NF)
            z = s
        elif MODE == 1:
            off = ((c * CK) // SBK) * ssk + n_out * ssn
            s = _decode_scale(_ld_nc(s_ptr + off), SCALE)
            z = _decode_scale(_ld_nc(z_ptr + off), SCALE) if HAS_Z else s
        else:
            s = tl.zeros_like(n_out).to(tl.float32)
            z = s
        return wg, wh, s, z

    @triton.jit
    def _block(a, xp, ELEM: tl.constexpr, BF16: tl.constexpr, TN: tl.constexpr, XV: tl.constexpr):
        """One n8 block of x rows, one chunk: (the tiles' sums (TN * R, 4), the lane's sums
        of x (R, 4)); int8: the hi plane's sums * 16 + the lo plane's."""
        if BF16:
            ONES: tl.constexpr = _ONES_BF16
        else:
            ONES: tl.constexpr = _ONES_F16
        x0 = tl.load(xp)
        x1 = tl.load(xp + XV)
        ones = tl.full(x0.shape, ONES, tl.int32)
        zl = tl.zeros(x0.shape, tl.float32)
        zt = tl.zeros((TN * x0.shape[0], 4), tl.float32)
        xs = _mma2(ones, ones, x0, zl, BF16)
        xs = _mma2(ones, ones, x1, xs, BF16)
        acc = _mma2(a[0], a[1], _rep(x0, TN), zt, BF16)
        if ELEM == 0:  # lo plane: fragments 0-3, hi plane: 4-7, K pairs of 2 words per x vector
            acc = _mma2(a[2], a[3], _rep(x1, TN), acc, BF16)
            hi = _mma2(a[4], a[5], _rep(x0, TN), zt, BF16)
            hi = _mma2(a[6], a[7], _rep(x1, TN), hi, BF16)
            acc = acc + 16.0 * hi
        else:  # 4-bit: 4 x vectors, 2 K steps each
            x2 = tl.load(xp + 2 * XV)
            x3 = tl.load(xp + 3 * XV)
            xs = _mma2(ones, ones, x2, xs, BF16)
            xs = _mma2(ones, ones, x3, xs, BF16)
            acc = _mma2(a[2], a[3], _rep(x1, TN), acc, BF16)
            acc = _mma2(a[4], a[5], _rep(x2, TN), acc, BF16)
            acc = _mma2(a[6], a[7], _rep(x3, TN), acc, BF16)
        return acc, xs

    @triton.jit
    def _block_float(a, xp, acc, ELEM: tl.constexpr, TN: tl.constexpr, XV: tl.constexpr):
        """acc + one n8 block of x rows times one chunk of float codes (bf16 x; no offsets)."""
        x0 = tl.load(xp)
        x1 = tl.load(xp + XV)
        acc = _mma2(a[0], a[1], _rep(x0, TN), acc, True)
        acc = _mma2(a[2], a[3], _rep(x1, TN), acc, True)
        if ELEM == 4:
            x2 = tl.load(xp + 2 * XV)
            x3 = tl.load(xp + 3 * XV)
            acc = _mma2(a[4], a[5], _rep(x2, TN), acc, True)
            acc = _mma2(a[6], a[7], _rep(x3, TN), acc, True)
        return acc

    @triton.jit
    def _consume_float(f, c, x0, x1, tot0, tot1, ELEM: tl.constexpr, XC: tl.constexpr, XV: tl.constexpr,
                       MODE: tl.constexpr, NB: tl.constexpr, TN: tl.constexpr, NF: tl.constexpr, FAC: tl.constexpr,
                       SCALE: tl.constexpr, FX: tl.constexpr, FC: tl.constexpr):
        """tot += chunk c's product: MODE 2 with the scales in the factors, MODE 0 (scales after
        the loop) straight into tot, MODE 1 from zero, times its scales."""
        wg, wh, s, z = f
        if MODE == 2:
            fac = _lane_factors(s, ELEM, NF, SCALE, FX, FC)
        else:
            fac = tl.full(wg.shape, FAC, tl.int32)  # 2**bias in both halves
        a = _upcast_float(wg, wh, fac, ELEM, NF)
        if MODE == 1:
            zt = tl.zeros(tot0.shape, tl.float32)
            tot0 += _block_float(a, x0 + c * XC, zt, ELEM, TN, XV) * s
            if NB == 2:
                tot1 += _block_float(a, x1 + c * XC, zt, ELEM, TN, XV) * s
        else:
            tot0 = _block_float(a, x0 + c * XC, tot0, ELEM, TN, XV)
            if NB == 2:
                tot1 = _block_float(a, x1 + c * XC, tot1, ELEM, TN, XV)
        return tot0, tot1

    @triton.jit
    def _use(f, c, x0, x1, tot0, tot1, ELEM: tl.constexpr, BF16: tl.constexpr, XC: tl.constexpr, XV: tl.constexpr,
             MODE: tl.constexpr, NB: tl.constexpr, TN: tl.constexpr, HAS_Z: tl.constexpr, OFF: tl.constexpr,
             NF: tl.constexpr, FAC: tl.constexpr, SCALE: tl.constexpr, FX: tl.constexpr, FC: tl.constexpr):
        if ELEM >= 3:
            return _consume_float(f, c, x0, x1, tot0, tot1, ELEM, XC, XV, MODE, NB, TN, NF, FAC, SCALE, FX, FC)
        return _consume(f, c, x0, x1, tot0, tot1, ELEM, BF16, XC, XV, MODE, NB, TN, HAS_Z, OFF)

    @triton.jit
    def _consume(f, c, x0, x1, tot0, tot1, ELEM: tl.constexpr, BF16: tl.constexpr, XC: tl.constexpr, XV: tl.constexpr,
                 MODE: tl.constexpr, NB: tl.constexpr, TN: tl.constexpr, HAS_Z: tl.constexpr,
                 OFF: tl.constexpr):
        """tot += chunk c's product (fetched: f) less the offsets' (and zero points') share,
        times its scales (MODE 1)."""
        wg, wh, s, z = f
        a = _upcast(wg, wh, ELEM, BF16)
        acc, xs = _block(a, x0 + c * XC, ELEM, BF16, TN, XV)
        cz = z + OFF if HAS_Z else OFF
        d0 = acc - cz * _rep(xs, TN)
        if MODE == 1:
            tot0 += d0 * s
        else:
            tot0 += d0
        if NB == 2:
            acc, xs = _block(a, x1 + c * XC, ELEM, BF16, TN, XV)
            d1 = acc - cz * _rep(xs, TN)
            if MODE == 1:
                tot1 += d1 * s
            else:
                tot1 += d1
        return tot0, tot1

    @triton.jit
    def _mma_kernel(
        x_ptr, w_ptr, s_ptr, z_ptr, g_ptr, o_ptr,
        M: tl.constexpr, N: tl.constexpr, NT: tl.constexpr, CT: tl.constexpr, CS: tl.constexpr,
        sxm: tl.constexpr, ssk: tl.constexpr, ssn: tl.constexpr, sos: tl.constexpr, som: tl.constexpr,
        ELEM: tl.constexpr, SCALE: tl.constexpr, SBK: tl.constexpr, HAS_Z: tl.constexpr,
        HAS_G: tl.constexpr, MODE: tl.constexpr, NB: tl.constexpr, NW: tl.constexpr,
        CK: tl.constexpr, U: tl.constexpr, TN: tl.constexpr, OFF: tl.constexpr, MB: tl.constexpr,
        NF: tl.constexpr, FX: tl.constexpr, FC: tl.constexpr, FAC: tl.constexpr,
        XF: tl.constexpr,
    ):
        """Program (n, 0, s): NW warps, TN 16-row tiles of W each; x rows 8 NB mb .. 8 NB (mb + 1) for mb < MB;
        chunks [s * CS, (s + 1) * CS) of the CT in K, U per loop step, loaded one step ahead
        (registers carried across the loop; the last step re-reads its own chunks, cache
        hits), so a warp has U chunks of each tile in flight while it computes.

        x: XF == 0 read as it is (a warp's 16-byte vector load spans 8 rows of x: 16 cache
        lines); XF == 1 in fragment order (`fragment_order_x`: each vector load is 512
        contiguous bytes)."""
        BF16: tl.constexpr = x_ptr.dtype.element_ty == tl.bfloat16
        R0: tl.constexpr = 32 * NW  # threads: lane tensors (x, its sums, output rows) are (R0, 4)
        R: tl.constexpr = TN * R0  # tile tensors (weights, scales, sums): thread r % R0 holds row r
        r0 = tl.arange(0, R0)
        g = (r0 % 32) // 4
        t = r0 % 4
        j = tl.arange(0, 4)[None, :]  # register j of a thread's 4
        rr = tl.arange(0, R)
        tile_raw = tl.program_id(0) * (NW * TN) + rr // 32  # tile of warp w, rep i: row i * R0 + 32w + lane
        tile = tl.minimum(tile_raw, NT - 1)
        n_out = (tile * 16 + (rr % 32) // 4)[:, None] + 8 * (j // 2)  # accumulator j: rows g (+8)
        wq = w_ptr.to(tl.pointer_type(tl.int32))
        w_g = wq + (tile * (CT * 256) + (rr % 32) * 4)[:, None] + j
        w_h = w_g + 128
        xq = x_ptr.to(tl.pointer_type(tl.int32))
        ok = (tile_raw < NT)[:, None] & (n_out < N)
        base = tl.program_id(2) * CS
        # MODE 2: lane (g, t)'s scales: rows g, g + 8 (j % 2) of the block of its K run t (and,
        # NF == 2, of the run's second half: j // 2), offsets without the chunk's block.
        KL: tl.constexpr = CK // 4
        sf = ((tile * 16 + (rr % 32) // 4)[:, None] + 8 * (j % 2)) * ssn
        sf += (((rr % 4) * KL)[:, None] + (j // 2) * (KL // 2) * (NF - 1)) // SBK * ssk
        # x words per chunk (XC) and between a lane's vectors of one chunk (XV)
        XC: tl.constexpr = NB * (CK // 32) * 128 if XF else CK // 2
        XV: tl.constexpr = 128 if XF else 4
        # Rows of x in passes of 8 NB (MB > 1: M > 8 NB; unrolled, so M <= 8 NB compiles to one
        # pass): the program's weight slice is read from HBM once, again from L2 for the next
        # pass (and upcast again).
        for mb in tl.static_range(MB):
            m0 = mb * 8 * NB
            if XF:  # (MB, CT, NB, CK / 32, 32 lanes, 4) words
                x0 = xq + (mb * CT * XC + (r0 % 32) * 4)[:, None] + j
                x1 = x0 + (CK // 32) * 128
            else:  # rows of x by lane, K runs by t
                x0 = xq + (tl.minimum(m0 + g, M - 1) * sxm + t * (CK // 8))[:, None] + j
                x1 = xq + (tl.minimum(m0 + 8 + g, M - 1) * sxm + t * (CK // 8))[:, None] + j
            tot0 = tl.zeros((R, 4), tl.float32)
            tot1 = tl.zeros((R, 4), tl.float32)
            p0 = _fetch(base, w_g, w_h, s_ptr, z_ptr, n_out, ssk, ssn, SCALE, SBK, CK, HAS_Z, MODE, sf, NF)
            p1 = p0
            p2 = p0
            p3 = p0
            if U >= 2:
                p1 = _fetch(base + 1, w_g, w_h, s_ptr, z_ptr, n_out, ssk, ssn, SCALE, SBK, CK, HAS_Z, MODE, sf, NF)
            if U == 4:
                p2 = _fetch(base + 2, w_g, w_h, s_ptr, z_ptr, n_out, ssk, ssn, SCALE, SBK, CK, HAS_Z, MODE, sf, NF)
                p3 = _fetch(base + 3, w_g, w_h, s_ptr, z_ptr, n_out, ssk, ssn, SCALE, SBK, CK, HAS_Z, MODE, sf, NF)
            for c0 in tl.range(0, CS, U):
                q0 = p0
                q1 = p1
                q2 = p2
                q3 = p3
                nx = base + tl.minimum(c0 + U, CS - U)
                p0 = _fetch(nx, w_g, w_h, s_ptr, z_ptr, n_out, ssk, ssn, SCALE, SBK, CK, HAS_Z, MODE, sf, NF)
                if U >= 2:
                    p1 = _fetch(nx + 1, w_g, w_h, s_ptr, z_ptr, n_out, ssk, ssn, SCALE, SBK, CK, HAS_Z, MODE, sf, NF)
                if U == 4:
                    p2 = _fetch(nx + 2, w_g, w_h, s_ptr, z_ptr, n_out, ssk, ssn, SCALE, SBK, CK, HAS_Z, MODE, sf, NF)
                    p3 = _fetch(nx + 3, w_g, w_h, s_ptr, z_ptr, n_out, ssk, ssn, SCALE, SBK, CK, HAS_Z, MODE, sf, NF)
                tot0, tot1 = _use(q0, base + c0, x0, x1, tot0, tot1, ELEM, BF16, XC, XV, MODE, NB, TN, HAS_Z, OFF,
                                  NF, FAC, SCALE, FX, FC)
                if U >= 2:
                    tot0, tot1 = _use(q1, base + c0 + 1, x0, x1, tot0, tot1, ELEM, BF16, XC, XV, MODE, NB, TN,
                                      HAS_Z, OFF, NF, FAC, SCALE, FX, FC)
                if U == 4:
                    tot0, tot1 = _use(q2, base + c0 + 2, x0, x1, tot0, tot1, ELEM, BF16, XC, XV, MODE, NB, TN,
                                      HAS_Z, OFF, NF, FAC, SCALE, FX, FC)
                    tot0, tot1 = _use(q3, base + c0 + 3, x0, x1, tot0, tot1, ELEM, BF16, XC, XV, MODE, NB, TN,
                                      HAS_Z, OFF, NF, FAC, SCALE, FX, FC)
            if MODE == 0:
                s = _decode_scale(_ld_nc(s_ptr + n_out * ssn), SCALE)
                tot0 = tot0 * s
                tot1 = tot1 * s
            if MODE == 2:
                tot0 = tot0 * _UNSHIFT
                tot1 = tot1 * _UNSHIFT
            if HAS_G:
                tot0 = tot0 * tl.load(g_ptr)
                tot1 = tot1 * tl.load(g_ptr)
            o_ptrs = o_ptr + tl.program_id(2) * sos + n_out
            mo = _rep(m0 + 2 * t[:, None] + j % 2, TN)  # accumulator j: x row 2t (+1) of the block
            tl.store(o_ptrs + mo * som, tot0.to(o_ptr.dtype.element_ty), mask=ok & (mo < M))
            if NB == 2:
                tl.store(o_ptrs + (mo + 8) * som, tot1.to(o_ptr.dtype.element_ty), mask=ok & (mo + 8 < M))


def _float_factors(bias: int) -> dict:
    """The float codes' factor constants: FAC, 2**bias as bf16x2 bits (scales after the
    MMAs); with FX = bias - SCALE_SHIFT (scales folded into the factors), FC = FX in both
    halves' exponent fields (e8m0 scales)."""
    fx = bias - SCALE_SHIFT
    return dict(FAC=((bias + 127) << 7) * 0x10001 if bias else 0, FX=fx, FC=((fx << 7) * 0x10001) % (1 << 32))


def fragment_order_x(x, kp: int, ck: int, nb: int):
    """x (M, K) -> the words each lane of `_mma_kernel` loads, in load order (x_mode 2): x
    padded with zero rows to whole 16-row passes (8 rows when nb == 1) and to kp columns, as
    (passes, chunks, nb n8 blocks, ck / 32 vectors, 8 rows g, 4 runs t, 4 words, 2 halves): each
    vector load of a warp then reads 512 contiguous bytes instead of 64 bytes of 8 rows."""
    m, k = x.shape
    rows = 8 * nb
    mp = -(-m // rows) * rows
    xp = jnp.pad(x, ((0, mp - m), (0, kp - k)))
    nv = ck // 32
    v = xp.reshape(mp // rows, nb, 8, kp // ck, 4, nv, 4, 2)
    return v.transpose(0, 3, 1, 5, 2, 4, 6, 7).reshape(mp, kp)


def mma_args(x, arrays, ints, consts, *, spec, cfg):
    """`mma`'s inputs, constexprs and grid from the shared launch arguments
    (`triton_kernel.triton_launch`; `TileConfig.check` has vetted spec and cfg). x_mode 1
    reads x as it is, zero-padded along K only when K is not the stored kp; x_mode 2 in
    fragment order."""
    _, w, s, z, g = arrays
    m = x.shape[0]
    edt = jnp.dtype(spec.element_dtype)
    ck = blocks.mma_chunk_k(edt)
    if cfg.x_mode == 2:
        x = fragment_order_x(x, spec.kp, ck, cfg.block_m // 8)
    elif x.shape[1] != spec.kp:
        x = jnp.pad(x, ((0, 0), (0, spec.kp - x.shape[1])))
    chunks = spec.kp // ck
    if spec.block_k >= spec.kp:
        mode = 0  # per channel: scales after the loop
    elif spec.block_k % ck == 0:
        mode = 1  # whole chunks per block: scales times each chunk's sums
    else:
        mode = 2  # float codes, shorter blocks: scales in the upcast's factors
    # Two blocks per lane run: half a run each (`blocks.mma_format_reason`), adjacent bytes.
    nf = 2 if mode == 2 and spec.block_k < blocks.mma_lane_k(edt) else 1
    nt = spec.np_ // 16
    xt = "bf16" if x.dtype == jnp.bfloat16 else "f16"
    params = dict(
        M=m, N=spec.n, NT=nt, CT=chunks, CS=chunks // cfg.split_k, sxm=spec.kp // 2,
        sos=m * spec.n if cfg.split_k > 1 else 0, som=spec.n,
        **{k: ints[k] for k in ("ssk", "ssn")},
        **{k: consts[k] for k in ("ELEM", "SCALE", "SBK", "HAS_Z", "HAS_G")},
        MODE=mode, NB=cfg.block_m // 8, NW=cfg.num_warps, CK=ck, U=cfg.unroll,
        TN=cfg.block_n // (16 * cfg.num_warps), OFF=0.0 if edt in FLOAT_BIAS else offset(edt, xt),
        MB=-(-m // cfg.block_m), NF=nf, XF=int(cfg.x_mode == 2), **_float_factors(FLOAT_BIAS.get(edt, 0)))
    grid = (-(-nt // (cfg.block_n // 16)), 1, cfg.split_k)
    return (x, w, s, z, g), params, grid
