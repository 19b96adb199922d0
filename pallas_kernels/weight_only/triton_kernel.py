"""Weight-only block-scaled matmul as a raw Triton kernel called through jax-triton.

The fast GPU path (decode GEMV-like M <= 64 and prefill GEMM alike). Same math as
`pallas_kernel.py`; what Triton adds is control of the upcast: with `fast_decode` the
codes become 16-bit floats with bit tricks on whole 32-bit registers (inline PTX, 4 bytes
= 8 nibbles per instruction) instead of one integer conversion per element, which is what
keeps a memory-bound GEMV streaming at HBM bandwidth.

Upcast tricks (fast_decode, bf16 activations):
    int4/uint4  (nibble | 0x4300) is the bf16 128 + nibble (bf16's 7 mantissa bits hold it
                exactly); int4 flips the sign bit first (two's complement c -> c ^ 8 = c + 8
                mod 16). The constant offset (128 or 136) is not subtracted per element:
                the tile's dot is corrected by `offset * sum_k x` (one multiply per output).
    e2m1        the 3 magnitude bits (e1 e0 m) moved into bf16 bits 8-6, the sign to bit 15,
                are exactly value * 2**-126 (e2m1's encoding with the exponent bias moved;
                subnormal 0.5 included); one bf16x2 multiply by 2**120 gives value * 2**-6 and
                the scale (times 64) does the rest (`e2m1_to_bf16_asm`). The portable path
                builds the same value through an e4m3 byte (`(c & 7) << 2`, sign to bit 7).
    int8, e4m3  Triton's own conversion (e4m3 -> f16 is one instruction per 2 elements).
Portable decode (fast_decode=False) does the same with elementwise Triton ops; it is what
Triton's CPU interpreter runs (it has no inline assembly).

Scale modes (`scale_mode`): 0 per channel, scales (and the offset/zero correction) applied
once after the K loop; 1 tile inside one scale block, the tile's dot is scaled (one multiply
per output); 2 scales multiply the decoded tile before the dot, which then accumulates in
place (prefill: keeps the tensor-core accumulator chained). 4-bit x modes: 0 split a loaded x
tile into even/odd k, 1 load even/odd k from memory, 2 interleave the decoded nibbles back
into K order and do one dot.

Sizes and strides are constexpr arguments. jax-triton specializes pointers (16-byte aligned)
but not integer arguments, so a runtime stride has unknown divisibility and Triton may load
only one element per instruction: before this was found, every kernel here loaded its weight
one byte at a time (PTX `ld.global.b8`), which capped decode at ~1 TB/s (BENCHMARKS.md).
Compiling per shape costs nothing extra: jit already specializes on shapes.

Grid: (N tiles, M tiles, split_k). With split_k > 1 each program writes f32 partial sums
of its K range to (split_k, M, N); XLA adds them and casts.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the Triton path reports itself unavailable.
    triton = None

from pallas_kernels.weight_only.config import TileConfig, WeightSpec

ELEM_CODE = {jnp.dtype(jnp.int8): 0, jnp.dtype(jnp.int4): 1, jnp.dtype(jnp.uint4): 2,
             jnp.dtype(jnp.float8_e4m3fn): 3, jnp.dtype(jnp.float4_e2m1fn): 4}
SCALE_CODE = {jnp.dtype(jnp.float32): 0, jnp.dtype(jnp.bfloat16): 0,
              jnp.dtype(jnp.float8_e8m0fnu): 1, jnp.dtype(jnp.float8_e4m3fn): 2}


def available() -> str | None:
    """None when Triton and jax-triton import, else why not."""
    if triton is None:
        return "triton is not installed"
    try:
        import jax_triton  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means unavailable
        return f"jax_triton does not import ({type(e).__name__}: {e})"
    return None


def _lop3_asm(setup: str, operands, lut: str) -> str:
    """PTX for `tl.inline_asm_elementwise`: `setup`, then output register $i = LOP3(src, mask,
    const) for each (src, mask, const) of `operands` (lut 0xea: (src & mask) | const; 0x6a:
    (src & mask) ^ const)."""
    lines = [f"lop3.b32 ${i}, {src}, {mask}, {const}, {lut};" for i, (src, mask, const) in enumerate(operands)]
    return "{\n" + setup + "\n" + "\n".join(lines) + "\n}"


def nibbles_to_bf16_asm(signed: bool) -> str:
    """4 code bytes ($4) -> lo, hi bf16 pairs ($0 $1, $2 $3): bytes spread to 16-bit lanes by
    PRMT, each nibble masked into the mantissa of bf16 128.0 (SIGNED: top bit flipped)."""
    setup = (".reg .b32 t0, t1, t2, t3, z;\nmov.b32 z, 0;\nprmt.b32 t0, $4, z, 0x4140;\n"
             "prmt.b32 t1, $4, z, 0x4342;\nshr.b32 t2, t0, 4;\nshr.b32 t3, t1, 4;")
    const = "0x43084308" if signed else "0x43004300"
    return _lop3_asm(setup, [(t, "0x000f000f", const) for t in ("t0", "t1", "t2", "t3")],
                     "0x6a" if signed else "0xea")


def nibbles_to_f32_asm(signed: bool) -> str:
    """4 code bytes ($8) -> lo f32 ($0-$3), hi f32 ($4-$7): byte j shifted so its nibbles sit
    in mantissa bits 15-18 and 19-22 of f32 128.0 (see `_upcast_nibbles`)."""
    setup = (".reg .b32 t0, t1, t2, t3;\nshl.b32 t0, $8, 15;\nshl.b32 t1, $8, 7;\n"
             "shr.b32 t2, $8, 1;\nshr.b32 t3, $8, 9;")
    lo, hi = ("0x43040000", "0x43400000") if signed else ("0x43000000", "0x43000000")
    ts = ("t0", "t1", "t2", "t3")
    return _lop3_asm(setup, [(t, "0x00078000", lo) for t in ts] + [(t, "0x00780000", hi) for t in ts],
                     "0x6a" if signed else "0xea")


def int8_to_bf16_asm() -> str:
    """4 int8 codes ($2) -> 2 bf16 pairs ($0 $1): each code + 128 placed by PRMT in the
    mantissa of f32 2**23 (exactly 2**23 + 128 + c), 2**23 + 128 subtracted (exact), and two
    values rounded to bf16 per CVT (exact: |c| <= 128). 10 instructions per 4 values."""
    return ("{\n.reg .b32 u, e;\n.reg .f32 f0, f1, f2, f3;\n"
            "xor.b32 u, $2, 0x80808080;\nmov.b32 e, 0x4B000000;\n"
            + "".join(f"prmt.b32 f{i}, u, e, 0x744{i};\nsub.f32 f{i}, f{i}, 0f4B000080;\n" for i in range(4))
            + "cvt.rn.bf16x2.f32 $0, f1, f0;\ncvt.rn.bf16x2.f32 $1, f3, f2;\n}")


def e2m1_to_f32_asm() -> str:
    """4 code bytes ($8) -> lo f32 ($0-$3), hi f32 ($4-$7) = value * 2**-126, exactly and with
    no conversion instruction: the nibble shifted to the top of the word, then an arithmetic
    shift by 6 leaves its sign in bit 31 (and 25-30, masked off) and its magnitude bits
    (e1 e0 m) in bits 24-22, the low bits of the f32 exponent and the top mantissa bit. That
    is e2m1's own encoding with the exponent bias moved from 1 to 127, subnormal 0.5 included
    (f32 exponent 0). 23 instructions per 8 values (`kgemv` pre-scales x per row to match)."""
    lines = [".reg .b32 t;"]
    for j in range(4):
        for out, sh in ((j, 28 - 8 * j), (4 + j, 24 - 8 * j)):  # lo nibble, hi nibble of byte j
            if sh:
                lines.append(f"shl.b32 t, $8, {sh};")
            lines += [f"shr.s32 t, {'t' if sh else '$8'}, 6;", f"and.b32 ${out}, t, 0x81C00000;"]
    return "{\n" + "\n".join(lines) + "\n}"


def e2m1_to_bf16_asm() -> str:
    """4 code bytes ($4) -> lo bf16 pairs ($0 $1), hi pairs ($2 $3) = value * 2**-6 (`_factor`).
    Bytes spread to 16-bit lanes by PRMT (hi nibbles from the word shifted by 4); per pair,
    (t << 6 | t << 12) & 0x81C081C0 is one LOP3 that puts each nibble's magnitude bits in
    bits 8-6 (bf16 exponent's low bits, top mantissa bit) and its sign in bit 15: exactly
    value * 2**-126 (bf16 subnormal for 0.5); one bf16x2 multiply by 2**120 makes it
    value * 2**-6. 21 instructions per 8 values, no conversion instruction."""
    lines = [".reg .b32 q, z, t, a, b, f;", "mov.b32 z, 0;", "mov.b32 f, 0x7B807B80;", "shr.b32 q, $4, 4;"]
    for out, (src, sel) in enumerate((("$4", "0x4140"), ("$4", "0x4342"), ("q", "0x4140"), ("q", "0x4342"))):
        lines += [f"prmt.b32 t, {src}, z, {sel};", "shl.b32 a, t, 6;", "shl.b32 b, t, 12;",
                  "lop3.b32 t, a, b, 0x81C081C0, 0xa8;", f"mul.rn.bf16x2 ${out}, t, f;"]
    return "{\n" + "\n".join(lines) + "\n}"


if triton is not None:
    _I8_BF16 = tl.constexpr(int8_to_bf16_asm())
    _BF16_S = tl.constexpr(nibbles_to_bf16_asm(True))
    _BF16_U = tl.constexpr(nibbles_to_bf16_asm(False))
    _F32_S = tl.constexpr(nibbles_to_f32_asm(True))
    _F32_U = tl.constexpr(nibbles_to_f32_asm(False))
    _E2M1_BF16 = tl.constexpr(e2m1_to_bf16_asm())
    _E2M1_F32 = tl.constexpr(e2m1_to_f32_asm())

    @triton.jit
    def _upcast_nibbles(p, SIGNED: tl.constexpr, F32: tl.constexpr):
        """uint8 tile of packed nibbles -> (lo, hi) tiles, u the code (SIGNED: code ^ 8 =
        signed value + 8). bf16: 128 + u (the tensor-core kernels). F32: 128 + u_lo / 2 and
        128 + 8 u_hi, each byte shifted so its nibbles sit in mantissa bits 15-18 and 19-22 of
        128.0 and one LOP3 per value masks a nibble and ORs (SIGNED: XORs) the exponent in:
        12 instructions per 8 values, no conversion instruction (`kgemv`, which pre-scales x
        by 2 for even k and 1/8 for odd k)."""
        if F32:
            dt: tl.constexpr = tl.float32
            cons: tl.constexpr = "=r,=r,=r,=r,=r,=r,=r,=r,r"  # 4 code bytes -> 4 + 4 f32
            if SIGNED:
                asm: tl.constexpr = _F32_S
            else:
                asm: tl.constexpr = _F32_U
        else:
            dt: tl.constexpr = tl.bfloat16
            cons: tl.constexpr = "=r,=r,=r,=r,r"  # 4 code bytes -> 2 + 2 bf16 pairs
            if SIGNED:
                asm: tl.constexpr = _BF16_S
            else:
                asm: tl.constexpr = _BF16_U
        return tl.inline_asm_elementwise(asm=asm, constraints=cons, args=[p], dtype=(dt.value, dt.value),
                                         is_pure=True, pack=4)

    @triton.jit
    def _upcast_e2m1(p, F32: tl.constexpr):
        """uint8 tile of packed e2m1 pairs -> (lo, hi) tiles. bf16: value * 2**-6
        (`e2m1_to_bf16_asm`); F32: value * 2**-126 (`e2m1_to_f32_asm`, `kgemv` only)."""
        if F32:
            dt: tl.constexpr = tl.float32
            cons: tl.constexpr = "=r,=r,=r,=r,=r,=r,=r,=r,r"
            asm: tl.constexpr = _E2M1_F32
        else:
            dt: tl.constexpr = tl.bfloat16
            cons: tl.constexpr = "=r,=r,=r,=r,r"
            asm: tl.constexpr = _E2M1_BF16
        return tl.inline_asm_elementwise(asm=asm, constraints=cons, args=[p], dtype=(dt.value, dt.value),
                                         is_pure=True, pack=4)

    @triton.jit
    def _decode_scale(s, SCALE: tl.constexpr):
        if SCALE == 1:  # e8m0 bits: 2**(e - 127); e == 0 is the subnormal 2**-127
            e = s.to(tl.int32)
            bits = tl.where(e == 0, 1 << 22, e << 23)
            return bits.to(tl.float32, bitcast=True)
        elif SCALE == 2:  # e4m3 bits
            return s.to(tl.float8e4nv, bitcast=True).to(tl.float32)
        else:
            return s.to(tl.float32)

    @triton.jit
    def _decode_tile(w, ELEM: tl.constexpr, FAST: tl.constexpr, XT: tl.constexpr):
        """Stored tile -> (lo, hi) tiles of dtype XT (hi unused for 8-bit elements).

        Returns values + OFFSET (see `_offset`) times 2**-6 for e2m1 (see `_factor`)."""
        # Conversions go through f32 explicitly (the compiler fuses them; Triton's CPU
        # interpreter mis-converts int8 -> bf16 directly).
        if ELEM == 0:
            if FAST and XT == tl.bfloat16:
                v = tl.inline_asm_elementwise(asm=_I8_BF16, constraints="=r,=r,r", args=[w],
                                              dtype=tl.bfloat16, is_pure=True, pack=4)
            else:
                v = w.to(tl.float32).to(XT)
            return v, v
        elif ELEM == 3:
            v = w.to(tl.float8e4nv, bitcast=True).to(tl.float32).to(XT)
            return v, v
        elif ELEM == 4:
            if FAST:
                lo, hi = _upcast_e2m1(w, False)
                return lo.to(XT), hi.to(XT)
            lo8 = ((w & 7) << 2) | ((w & 8) << 4)
            hi8 = ((w >> 2) & 0x1C) | (w & 0x80)
            return (lo8.to(tl.float8e4nv, bitcast=True).to(tl.float32).to(XT),
                    hi8.to(tl.float8e4nv, bitcast=True).to(tl.float32).to(XT))
        else:
            if FAST:
                lo, hi = _upcast_nibbles(w, ELEM == 1, False)
                return lo, hi
            else:
                lo = (w & 15).to(tl.int32)
                hi = (w >> 4).to(tl.int32)
                if ELEM == 1:
                    lo = (lo ^ 8) - 8
                    hi = (hi ^ 8) - 8
                return lo.to(tl.float32).to(XT), hi.to(tl.float32).to(XT)

    @triton.jit
    def _weight_only_kernel(
        x_ptr, w_ptr, s_ptr, z_ptr, g_ptr, o_ptr,  # jax-triton: inputs, then outputs
        # Sizes and strides are constexpr: jax-triton leaves integer arguments unspecialized,
        # and a stride of unknown divisibility limits every load to one element.
        M: tl.constexpr, K: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, KS: tl.constexpr,
        sxm: tl.constexpr, sxk: tl.constexpr, swk: tl.constexpr, swn: tl.constexpr,
        ssk: tl.constexpr, ssn: tl.constexpr, sos: tl.constexpr, som: tl.constexpr,
        son: tl.constexpr,
        ELEM: tl.constexpr, SCALE: tl.constexpr, SBK: tl.constexpr, SBN: tl.constexpr,
        HAS_Z: tl.constexpr, HAS_G: tl.constexpr, FAST: tl.constexpr,
        OFFSET: tl.constexpr, FACTOR: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
        MODE: tl.constexpr, XMODE: tl.constexpr,
        SPLIT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    ):
        FOUR: tl.constexpr = ELEM == 1 or ELEM == 2 or ELEM == 4
        XT = x_ptr.dtype.element_ty
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_s = tl.program_id(2)
        offs_m = pid_m * BM + tl.arange(0, BM)
        offs_n = pid_n * BN + tl.arange(0, BN)
        m_ok = offs_m < M
        n_ok = offs_n < NP
        scol = offs_n // SBN
        k_begin = pid_s * KS
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        xs_acc = tl.zeros((BM, 1), dtype=tl.float32)
        R: tl.constexpr = BK if SBK > BK else SBK  # rows of one scale block inside a tile
        G: tl.constexpr = BK // R  # scale blocks per tile (PRE path)
        # Every split runs KS / BK steps; steps past K load nothing (masked) and add 0.
        for ki in range(0, KS, BK):
            kk = k_begin + ki
            offs_k = kk + tl.arange(0, BK)
            if FOUR:
                rows = kk // 2 + tl.arange(0, BK // 2)
            else:
                rows = offs_k
            w_ptrs = w_ptr + rows[:, None] * swk + offs_n[None, :] * swn
            if EVEN_K and EVEN_N:
                w = tl.load(w_ptrs)
            else:
                if FOUR:
                    w_mask = (rows[:, None] < (K + 1) // 2) & n_ok[None, :]
                else:
                    w_mask = (rows[:, None] < K) & n_ok[None, :]
                w = tl.load(w_ptrs, mask=w_mask, other=0)
            lo, hi = _decode_tile(w, ELEM, FAST, XT)
            if FOUR and XMODE == 1:  # even / odd k of x straight from memory
                ke = kk + 2 * tl.arange(0, BK // 2)
                xm = m_ok[:, None] if EVEN_K else m_ok[:, None] & (ke[None, :] < K)
                xe = tl.load(x_ptr + offs_m[:, None] * sxm + ke[None, :] * sxk, mask=xm, other=0.0)
                xm = m_ok[:, None] if EVEN_K else m_ok[:, None] & (ke[None, :] + 1 < K)
                xo = tl.load(x_ptr + offs_m[:, None] * sxm + (ke[None, :] + 1) * sxk, mask=xm, other=0.0)
                xsum = tl.sum(xe.to(tl.float32), axis=1)[:, None] + tl.sum(xo.to(tl.float32), axis=1)[:, None]
            else:
                x_mask = m_ok[:, None] if EVEN_K else m_ok[:, None] & (offs_k[None, :] < K)
                x = tl.load(x_ptr + offs_m[:, None] * sxm + offs_k[None, :] * sxk,
                            mask=x_mask, other=0.0)
                xsum = tl.sum(x.to(tl.float32), axis=1)[:, None]
                if FOUR and XMODE == 0:
                    xe, xo = tl.split(tl.reshape(x, (BM, BK // 2, 2)))
            if MODE == 2:
                # Scales and offsets applied to the tile before the dot; the dot accumulates.
                srows = kk // SBK + tl.arange(0, G)
                sp = srows[:, None] * ssk + scol[None, :] * ssn
                s_mask = (srows[:, None] * SBK < K) & n_ok[None, :]
                s2 = _decode_scale(tl.load(s_ptr + sp, mask=s_mask, other=0), SCALE) * FACTOR
                if HAS_Z:
                    z2 = _decode_scale(tl.load(z_ptr + sp, mask=s_mask, other=0), SCALE) + OFFSET
                else:
                    z2 = tl.zeros((G, BN), tl.float32) + OFFSET
                if ELEM == 4 and XT == tl.bfloat16:  # e2m1 (2 significant bits) * e8m0|e4m3: exact in bf16
                    sf = tl.reshape(tl.broadcast_to(s2[:, None, :], (G, R // 2, BN)), (BK // 2, BN)).to(XT)
                    lo = lo * sf
                    hi = hi * sf
                elif FOUR:
                    sf = tl.reshape(tl.broadcast_to(s2[:, None, :], (G, R // 2, BN)), (BK // 2, BN))
                    zf = tl.reshape(tl.broadcast_to(z2[:, None, :], (G, R // 2, BN)), (BK // 2, BN))
                    lo = ((lo.to(tl.float32) - zf) * sf).to(XT)
                    hi = ((hi.to(tl.float32) - zf) * sf).to(XT)
                else:
                    sf = tl.reshape(tl.broadcast_to(s2[:, None, :], (G, R, BN)), (BK, BN))
                    zf = tl.reshape(tl.broadcast_to(z2[:, None, :], (G, R, BN)), (BK, BN))
                    lo = ((lo.to(tl.float32) - zf) * sf).to(XT)
            if FOUR and XMODE == 2:
                wf = tl.reshape(tl.permute(tl.join(lo, hi), (0, 2, 1)), (BK, BN))
            if MODE == 1:
                # Tile inside one scale block: scale the tile's dot (one multiply per output).
                if FOUR and XMODE == 2:
                    d = tl.dot(x, wf, out_dtype=tl.float32)
                elif FOUR:
                    d = tl.dot(xe, lo, out_dtype=tl.float32)
                    d = tl.dot(xo, hi, acc=d, out_dtype=tl.float32)
                else:
                    d = tl.dot(x, lo, out_dtype=tl.float32)
                srow = kk // SBK
                s_ok = n_ok & (kk < K)
                s = _decode_scale(tl.load(s_ptr + srow * ssk + scol * ssn, mask=s_ok, other=0),
                                  SCALE) * FACTOR
                if HAS_Z:
                    z = _decode_scale(tl.load(z_ptr + srow * ssk + scol * ssn, mask=s_ok,
                                              other=0), SCALE)
                    d = d - xsum * (z[None, :] + OFFSET)
                elif OFFSET != 0:
                    d = d - xsum * OFFSET
                acc += d * s[None, :]
            else:
                # MODE 0 (one scale row for all of K: scaled once after the loop) or 2.
                if FOUR and XMODE == 2:
                    acc = tl.dot(x, wf, acc=acc, out_dtype=tl.float32)
                elif FOUR:
                    acc = tl.dot(xe, lo, acc=acc, out_dtype=tl.float32)
                    acc = tl.dot(xo, hi, acc=acc, out_dtype=tl.float32)
                else:
                    acc = tl.dot(x, lo, acc=acc, out_dtype=tl.float32)
                if MODE == 0 and (HAS_Z or OFFSET != 0):
                    xs_acc += xsum
        if MODE == 0:
            s = _decode_scale(tl.load(s_ptr + scol * ssn, mask=n_ok, other=0), SCALE) * FACTOR
            if HAS_Z:
                z = _decode_scale(tl.load(z_ptr + scol * ssn, mask=n_ok, other=0), SCALE)
                acc = acc - xs_acc * (z[None, :] + OFFSET)
            elif OFFSET != 0:
                acc = acc - xs_acc * OFFSET
            acc = acc * s[None, :]
        if HAS_G:
            acc = acc * tl.load(g_ptr)
        o_ptrs = o_ptr + pid_s * sos + offs_m[:, None] * som + offs_n[None, :] * son
        tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=m_ok[:, None] & (offs_n[None, :] < N))


def kernel_constants(spec: WeightSpec, cfg: TileConfig, x_dtype) -> dict:
    """The constexpr arguments of `_weight_only_kernel` (also used by the CPU interpreter test)."""
    elem = ELEM_CODE[jnp.dtype(spec.element_dtype)]
    fast = bool(cfg.fast_decode and jnp.dtype(x_dtype) == jnp.bfloat16)
    offset = 0
    if fast and elem == 1:
        offset = 136
    elif fast and elem == 2:
        offset = 128
    ks = _split_len(spec, cfg)
    return dict(
        ELEM=elem, SCALE=SCALE_CODE[jnp.dtype(spec.scale_dtype)], SBK=spec.block_k,
        SBN=spec.block_n, HAS_Z=spec.has_zeros, HAS_G=spec.has_global_scale, FAST=fast,
        OFFSET=offset, FACTOR=64.0 if elem == 4 else 1.0,
        EVEN_K=spec.k % (ks) == 0 and ks * cfg.split_k == spec.k and ks % cfg.block_k == 0,
        EVEN_N=spec.np_ % cfg.block_n == 0,
        MODE=scale_mode(spec, cfg), XMODE=cfg.x_mode,
        SPLIT=cfg.split_k, BM=cfg.block_m, BN=cfg.block_n, BK=cfg.block_k)


def scale_mode(spec: WeightSpec, cfg: TileConfig) -> int:
    """0: one scale row for all K (per channel), applied after the loop; 1: tile inside one
    block, scale multiplies the tile's dot; 2: scales multiply the tile before the dot."""
    if spec.block_k >= spec.kp:
        return 0
    if spec.block_k % cfg.block_k == 0 and not cfg.pre_scale:
        return 1
    return 2


def _split_len(spec: WeightSpec, cfg: TileConfig) -> int:
    k_tiles = -(-spec.k // cfg.block_k)
    return -(-k_tiles // cfg.split_k) * cfg.block_k


def launch_args(x, values, scales, zeros, global_scale, spec: WeightSpec, cfg: TileConfig):
    """Arrays in kernel order (before the output), the size/stride constexprs, and the grid."""
    m = x.shape[0]
    u8 = lambda a: jax.lax.bitcast_convert_type(a, jnp.uint8) if a.dtype.itemsize == 1 and a.dtype != jnp.uint8 else a  # noqa: E731
    w = values
    if jnp.dtype(spec.element_dtype) == jnp.float8_e4m3fn:
        w = jax.lax.bitcast_convert_type(values, jnp.uint8)
    s = u8(scales)
    z = u8(zeros) if zeros is not None else jnp.zeros((1,), s.dtype)
    g = (jnp.asarray(global_scale, jnp.float32).reshape(1) if global_scale is not None
         else jnp.ones((1,), jnp.float32))
    kn = spec.layout == "kn"
    wr, wc = (values.shape[0], values.shape[1]) if kn else (values.shape[1], values.shape[0])
    swk, swn = (wc, 1) if kn else (1, wr)
    sr = spec.kp // spec.block_k
    sc = spec.np_ // spec.block_n
    ssk, ssn = (sc, 1) if kn else (1, sr)
    ks = _split_len(spec, cfg)
    if cfg.split_k == 1:
        sos, som, son = 0, spec.n, 1
    else:
        sos, som, son = m * spec.n, spec.n, 1
    ints = dict(M=m, K=spec.k, N=spec.n, NP=spec.np_, KS=ks, sxm=x.shape[1], sxk=1, swk=swk,
                swn=swn, ssk=ssk, ssn=ssn, sos=sos, som=som, son=son)
    grid = (-(-spec.np_ // cfg.block_n), -(-m // cfg.block_m), cfg.split_k)
    return (x, w, s, z, g), ints, grid


def triton_launch(x, values, scales, zeros, global_scale, spec: WeightSpec, cfg: TileConfig,
                  out_dtype):
    """One launch as jax-triton receives it: (kernel, input arrays, out_shape, grid,
    constexprs). `weight_only_matmul_triton` calls it; `scripts/ptx_report.py` compiles the
    same launch offline (no GPU) to check load widths and registers."""
    from pallas_kernels.weight_only import triton_decode, triton_mma
    m = x.shape[0]
    if cfg.split_k == 1:
        out_shape = jax.ShapeDtypeStruct((m, spec.n), out_dtype)
    else:
        out_shape = jax.ShapeDtypeStruct((cfg.split_k, m, spec.n), jnp.float32)
    arrays, ints, grid = launch_args(x, values, scales, zeros, global_scale, spec, cfg)
    consts = kernel_constants(spec, cfg, x.dtype)
    if cfg.kernel == "kgemv":
        arrays, params = triton_decode.kgemv_args(x, arrays, ints, consts, spec=spec, cfg=cfg)
        return triton_decode._kgemv_kernel, arrays, out_shape, grid, params
    if cfg.kernel == "mma":
        arrays, params, grid = triton_mma.mma_args(x, arrays, ints, consts, spec=spec, cfg=cfg)
        return triton_mma._mma_kernel, arrays, out_shape, grid, params
    if cfg.kernel == "swapab" and cfg.x_mode == 3 and spec.four_bit:
        xr = triton_decode.even_odd(x, cfg.block_k)
        arrays = (xr, *arrays[1:])
        ints = dict(ints, sxm=xr.shape[1])
    kernel = {"dot": _weight_only_kernel, "fma": triton_decode._gemv_fma_kernel,
              "gemv": triton_decode._gemv_kernel, "swapab": triton_decode._swapab_kernel}[cfg.kernel]
    return kernel, arrays, out_shape, grid, {**ints, **consts}


@functools.partial(jax.jit, static_argnames=("spec", "cfg", "out_dtype"))
def weight_only_matmul_triton(x, values, scales, zeros, global_scale, *, spec: WeightSpec,
                              cfg: TileConfig, out_dtype):
    """x (M, k) bf16/f16 -> (M, n) out_dtype on an NVIDIA GPU. Caller validates."""
    from pallas_kernels.triton_ffi import triton_call

    kernel, arrays, out_shape, grid, params = triton_launch(
        x, values, scales, zeros, global_scale, spec, cfg, out_dtype)
    out = triton_call(*arrays, kernel=kernel, out_shape=out_shape, grid=grid,
                      name=f"weight_only_{cfg.kernel}", num_warps=cfg.num_warps,
                      num_stages=cfg.num_stages, **params)
    if cfg.split_k > 1:
        out = out.sum(axis=0).astype(out_dtype)
    return out
