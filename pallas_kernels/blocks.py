"""Block-scaled storage on plain arrays: packing, element decoding, dequantization.

This is the one place that knows how low-bit *codes* become numbers. Kernels, their
references and `lowbit_jax.dequantize` all call it, so there is one definition of the
storage contract:

Glossary
    element   one stored code (int8, int4, uint4, float8_e4m3fn, float4_e2m1fn, ...).
    block     the set of elements that share one scale: `block_k` consecutive elements
              along the contraction axis K times `block_n` along N (the other axis).
    tile      what one kernel program loads at a time (a multiple of blocks; kernels only).
    layout    "kn": values are (K, N) (contraction axis first, as in `x @ w`).
              "nk": values are (N, K) (K-major; what fp8 tensor cores and cuBLASLt want).
              "mma": "nk"'s bytes rearranged for the tensor-core GEMV (`nk_to_mma`): same
              shape, scales and zeros as "nk"; the formats `mma_format_reason` admits.

Storage contract for a logical (K, N) weight, K padded to Kp (a multiple of block_k and of
2 for 4-bit), N padded to Np (a multiple of block_n):
    values  "kn": (Kp, Np) or, for 4-bit elements, uint8 (Kp/2, Np);
            "nk": (Np, Kp) or uint8 (Np, Kp/2).
            4-bit elements are packed two per byte along K: byte j holds element 2j in its
            low nibble and element 2j+1 in its high nibble.
    scales  "kn": (Kp/block_k, Np/block_n); "nk": (Np/block_n, Kp/block_k).
    zeros   optional, same shape and dtype as scales (asymmetric formats).
    global_scale  optional f32, one per matrix (shape = the batch axes; a scalar for a
            single matrix), for two-level formats such as NVFP4.
Invariant:  w[k, n] = (decode(values)[k, n] - zeros[k//bk, n//bn]) * scales[k//bk, n//bn]
                      * global_scale
Leading batch axes (stacked layers, experts) are allowed in front of all of these.

4-bit codes: int4 is two's complement (-8..7), uint4 is 0..15, float4_e2m1fn is the OCP
bit pattern (sign, 2 exponent bits, 1 mantissa bit: magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

FOUR_BIT = (jnp.dtype(jnp.int4), jnp.dtype(jnp.uint4), jnp.dtype(jnp.float4_e2m1fn))

# Magnitudes of the 8 non-negative float4_e2m1fn codes; codes 8..15 are their negatives.
E2M1_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0], np.float32)
E2M1_LUT = np.concatenate([E2M1_VALUES, -E2M1_VALUES]).astype(np.float32)


def is_four_bit(element_dtype) -> bool:
    return jnp.dtype(element_dtype) in FOUR_BIT


def stored_kp(values, element_dtype, layout: str) -> int:
    """Kp, the padded K of a stored weight: the K axis of `values` (0 for "kn", else 1),
    two codes per byte for 4-bit elements."""
    return values.shape[0 if layout == "kn" else 1] * (2 if is_four_bit(element_dtype) else 1)


def storage_dtype(element_dtype) -> jnp.dtype:
    """dtype of the `values` array: uint8 for packed 4-bit elements, else the element."""
    return jnp.dtype(jnp.uint8) if is_four_bit(element_dtype) else jnp.dtype(element_dtype)


def pack_nibbles(codes: jax.Array, axis: int) -> jax.Array:
    """Packs 4-bit codes (uint8 in 0..15) two per byte along `axis` (even size)."""
    axis = axis % codes.ndim
    if codes.shape[axis] % 2:
        raise ValueError(f"cannot pack an odd length {codes.shape[axis]} along {axis=}")
    lo = jax.lax.slice_in_dim(codes, 0, None, 2, axis).astype(jnp.uint8)
    hi = jax.lax.slice_in_dim(codes, 1, None, 2, axis).astype(jnp.uint8)
    return (lo & 0xF) | ((hi & 0xF) << 4)


def unpack_nibbles(packed: jax.Array, axis: int) -> jax.Array:
    """Inverse of `pack_nibbles`: uint8 codes, `axis` twice as long."""
    axis = axis % packed.ndim
    lo = packed & 0xF
    hi = packed >> 4
    both = jnp.stack([lo, hi], axis=axis + 1)
    shape = list(packed.shape)
    shape[axis] *= 2
    return both.reshape(shape)


def codes_to_float(codes: jax.Array, element_dtype) -> jax.Array:
    """Decodes unpacked 4-bit codes (uint8 0..15) of `element_dtype` to f32."""
    dt = jnp.dtype(element_dtype)
    codes = codes.astype(jnp.int32)
    if dt == jnp.int4:
        return jnp.where(codes >= 8, codes - 16, codes).astype(jnp.float32)
    if dt == jnp.uint4:
        return codes.astype(jnp.float32)
    if dt == jnp.float4_e2m1fn:
        return jnp.asarray(E2M1_LUT)[codes]
    raise ValueError(f"{dt} is not a 4-bit element dtype")


def float_to_codes(x: jax.Array, element_dtype) -> jax.Array:
    """Encodes f32 values already on the element grid (rounded, in range) as 4-bit codes."""
    dt = jnp.dtype(element_dtype)
    if dt == jnp.int4:
        return (x.astype(jnp.int32) & 0xF).astype(jnp.uint8)
    if dt == jnp.uint4:
        return x.astype(jnp.uint8)
    if dt == jnp.float4_e2m1fn:
        mag = jnp.abs(x)
        idx = jnp.sum(mag[..., None] >= jnp.asarray(E2M1_VALUES[1:]), axis=-1)
        sign = jnp.signbit(x) & (mag > 0)
        return (idx + 8 * sign).astype(jnp.uint8)
    raise ValueError(f"{dt} is not a 4-bit element dtype")


LAYOUTS = ("kn", "nk", "mma")
MMA_ELEMENTS = tuple(jnp.dtype(d) for d in (jnp.int8, jnp.int4, jnp.uint4, jnp.float8_e4m3fn, jnp.float4_e2m1fn))
# Scale dtypes the tensor-core GEMV folds into the upcast bf16 weights (blocks shorter than its
# chunk): exact in bf16, so the products are those of the dequantized weight.
MMA_LANE_SCALES = (jnp.dtype(jnp.float8_e8m0fnu), jnp.dtype(jnp.float8_e4m3fn))
# Within each run of K values held by one 32-bit word: the stored order of "mma" (4-bit: 8
# codes, a word's nibble j holds K value 2j and nibble j + 4 holds 2j + 1, so that masking
# the word shifted by 4j yields the K pair (2j, 2j + 1); int8: 4 codes, bytes 0 and 2 hold
# K values 0, 1 and bytes 1, 3 hold 2, 3, the nibble planes' pairs likewise).
_MMA_RUN = {True: np.array([0, 2, 4, 6, 1, 3, 5, 7]), False: np.array([0, 2, 1, 3])}


def mma_chunk_k(element_dtype) -> int:
    """K values of one "mma" chunk: 64 stored bytes of a row (128 4-bit codes, 64 int8)."""
    return 128 if is_four_bit(element_dtype) else 64


def mma_lane_k(element_dtype) -> int:
    """K values of one "mma" chunk held by one lane (16 bytes of a row): 32 4-bit, 16 8-bit."""
    return mma_chunk_k(element_dtype) // 4


def mma_format_reason(element_dtype, block_k: int | None, scale_dtype, block_n: int | None = 1) -> str | None:
    """Why weights of this element dtype, scale block (block_k None: per channel) and scale
    dtype are not what "mma" is for (None when they are). Scales are per output row
    (block_n 1). The tensor-core GEMV reads int8, int4, uint4,
    e4m3 and e2m1 codes; scale blocks are whole chunks (scales multiply a chunk's sums) or,
    for the float codes, blocks dividing the chunk, of half a lane's K run or more, with e8m0
    or e4m3 scales (exact in bf16: folded into the upcast weights; mxfp4, nvfp4 and mxfp8):
    a lane's run then lies in one block or, for half-run blocks, in two adjacent ones."""
    edt = jnp.dtype(element_dtype)
    if edt not in MMA_ELEMENTS:
        return f"layout 'mma' stores {', '.join(map(str, MMA_ELEMENTS))} codes, not {edt}"
    if block_n != 1:
        return f"layout 'mma' needs one scale per output row (block_n=1, got {block_n})"
    ck, kl = mma_chunk_k(edt), mma_lane_k(edt)
    if block_k is None or block_k % ck == 0:
        return None
    if jnp.issubdtype(edt, jnp.integer):
        return f"layout 'mma' needs {edt} scale blocks of whole {ck}-long chunks (block_k={block_k})"
    if block_k < kl // 2 or ck % block_k:
        return (f"layout 'mma' needs {edt} scale blocks of >= {kl // 2} that divide its "
                f"{ck}-long chunk (block_k={block_k})")
    if jnp.dtype(scale_dtype) not in MMA_LANE_SCALES:
        return (f"layout 'mma' folds scales of blocks shorter than its {ck}-long chunk into bf16 weights: "
                f"scale_dtype must be one of {', '.join(map(str, MMA_LANE_SCALES))} (got {jnp.dtype(scale_dtype)})")
    return None


def mma_padded(k: int, n: int, element_dtype, block_k: int | None, block_n: int | None) -> tuple[int, int]:
    """(kp, np_) of a (k, n) weight stored "mma": whole chunks (and blocks) along K, whole
    16-row tiles (and blocks) along N."""
    ck = mma_chunk_k(element_dtype)
    return (padded_size(k, math.lcm(ck, block_k or ck), element_dtype),
            padded_size(n, math.lcm(16, block_n or 1), jnp.int8))


def mma_layout_reason(element_dtype, kp: int, np_: int) -> str | None:
    """Why a (kp, np_) padded weight cannot be stored "mma" (None when it can)."""
    if jnp.dtype(element_dtype) not in MMA_ELEMENTS:
        return mma_format_reason(element_dtype, None, None)
    ck = mma_chunk_k(element_dtype)
    if kp % ck or np_ % 16:
        return (f"layout 'mma' needs padded K={kp} to be a multiple of {ck} and N={np_} a multiple of 16 "
                f"(tiles of 16 rows x 64 bytes)")
    return None


def _words(values: jax.Array) -> jax.Array:
    """(..., B) bytes (uint8 or int8) -> (..., B/4) uint32 words (byte 0 in bits 0-7)."""
    b = jax.lax.bitcast_convert_type(values, jnp.uint8) if values.dtype != jnp.uint8 else values
    return jax.lax.bitcast_convert_type(b.reshape(*b.shape[:-1], -1, 4), jnp.uint32)


def _bytes(words: jax.Array, dtype) -> jax.Array:
    """Inverse of `_words`, as `dtype` bytes."""
    b = jax.lax.bitcast_convert_type(words, jnp.uint8).reshape(*words.shape[:-1], -1)
    return b if jnp.dtype(dtype) == jnp.uint8 else jax.lax.bitcast_convert_type(b, dtype)


def _move_fields(w: jax.Array, four: bool, to_mma: bool) -> jax.Array:
    """Reorders the codes inside each word by `_MMA_RUN` (nibbles or bytes; bit operations
    that XLA fuses into one elementwise pass, no gather)."""
    bits = 4 if four else 8
    mask = np.uint32((1 << bits) - 1)
    out = jnp.zeros_like(w)
    for i, src in enumerate(_MMA_RUN[four]):  # "mma" field i holds "nk" field src
        a, b = (int(src), i) if to_mma else (i, int(src))
        out = out | (((w >> np.uint32(bits * a)) & mask) << np.uint32(bits * b))
    return out


def nk_to_mma(values: jax.Array, element_dtype) -> jax.Array:
    """"nk" values (..., Np, B) -> "mma" values of the same shape. Each 16-row x 64-byte
    tile (rows T*16 .. +16, bytes c*64 .. +64) becomes 1 KB in a row: rows 0-7 then 8-15,
    each as 32 lanes (lane 4g + t: row g's bytes t*16 .. +16), the K runs inside a word
    reordered by `_MMA_RUN`. A warp of the tensor-core GEMV loads a tile per chunk as two
    fully contiguous 512-byte rows of 16-byte vectors (triton_mma.py). Works on 32-bit words
    throughout (16-byte groups move as 4 words)."""
    *lead, n, nb = values.shape
    w = _move_fields(_words(values), is_four_bit(element_dtype), True)
    w = w.reshape(*lead, n // 16, 2, 8, nb // 64, 4, 4)
    k = len(lead)
    w = jnp.transpose(w, (*range(k), k, k + 3, k + 1, k + 2, k + 4, k + 5))
    return _bytes(w.reshape(*lead, n, nb // 4), values.dtype)


def mma_to_nk(values: jax.Array, element_dtype) -> jax.Array:
    """Inverse of `nk_to_mma` (what every path but the tensor-core GEMV reads)."""
    *lead, n, nb = values.shape
    k = len(lead)
    w = _words(values).reshape(*lead, n // 16, nb // 64, 2, 8, 4, 4)
    w = jnp.transpose(w, (*range(k), k, k + 2, k + 3, k + 1, k + 4, k + 5)).reshape(*lead, n, nb // 4)
    return _bytes(_move_fields(w, is_four_bit(element_dtype), False), values.dtype)


def stored_k_order(element_dtype, layout: str, count: int) -> np.ndarray:
    """The K offset held by each of `count` consecutive code fields of a stored row, counted
    from a 32-bit word boundary (field q: nibble q for 4-bit codes, byte q for 8-bit).
    "kn"/"nk": q itself. "mma": the fields of each word are reordered by `_MMA_RUN`; its
    16-row tiles move whole 64-byte chunks, never codes within a row's chunk, so within a
    chunk this is the whole story."""
    q = np.arange(count)
    if layout != "mma":
        return q
    run = _MMA_RUN[is_four_bit(element_dtype)]
    return q - q % len(run) + run[q % len(run)]


def decode_values(values: jax.Array, element_dtype, *, k_axis: int) -> jax.Array:
    """Stored values -> f32 elements (unpacking 4-bit ones along `k_axis`)."""
    if is_four_bit(element_dtype):
        return codes_to_float(unpack_nibbles(values, k_axis), element_dtype)
    return values.astype(jnp.float32)


def expand_blocks(s: jax.Array, block: tuple[int, int], axes: tuple[int, int]) -> jax.Array:
    """Repeats a per-block array `block[i]` times along `axes[i]`."""
    for b, ax in zip(block, axes):
        if b > 1:
            s = jnp.repeat(s, b, axis=ax)
    return s


def _apply_blocks(w, scales, zeros, global_scale, block: tuple[int, int]) -> jax.Array:
    """(w - zeros) * scales * global_scale in f32, per-block arrays broadcast over blocks of
    `block` elements of w's last two axes (a reshape, no repeated copy)."""
    *lead, r, c = w.shape
    br, bc = block
    w = w.reshape(*lead, r // br, br, c // bc, bc)

    def per_block(a):
        return a.astype(jnp.float32)[..., :, None, :, None]
    if zeros is not None:
        w = w - per_block(zeros)
    w = w * per_block(scales)
    if global_scale is not None:
        w = w * global_scale.astype(jnp.float32)[..., None, None, None, None]
    return w.reshape(*lead, r, c)


def dequantize_blocks(
    values: jax.Array,
    scales: jax.Array,
    zeros: jax.Array | None = None,
    global_scale: jax.Array | None = None,
    *,
    element_dtype,
    block_k: int,
    block_n: int,
    layout: str = "kn",
    k: int | None = None,
    n: int | None = None,
) -> jax.Array:
    """Returns the f32 (..., k, n) weight (always "kn" order) described by the contract."""
    w = dequantize_as(values, scales, zeros, global_scale, dtype=jnp.float32,
                      element_dtype=element_dtype, block_k=block_k, block_n=block_n,
                      layout=layout, k=k, n=n)
    return w if layout == "kn" else jnp.swapaxes(w, -1, -2)


def dequantize_as(
    values: jax.Array,
    scales: jax.Array,
    zeros: jax.Array | None = None,
    global_scale: jax.Array | None = None,
    *,
    dtype,
    element_dtype,
    block_k: int,
    block_n: int,
    layout: str = "kn",
    k: int | None = None,
    n: int | None = None,
) -> jax.Array:
    """The weight of the contract, computed in f32 and rounded once to `dtype`, in *stored*
    order: (..., k, n) for "kn", (..., n, k) for "nk" and "mma" (no transpose: an XLA dot
    contracts either axis).

    "nk"/"mma" weights in a 16-bit `dtype` whose padded K fills whole 32-bit words of codes
    (8 4-bit or 4 8-bit ones) and whose blocks are even take a word path with the same
    values bit for bit: codes are read as 32-bit words (K value j of a word in bits b*j ..
    b*j+b-1) and the values leave as 32-bit words of two (the K pair 2i, 2i + 1). 4-bit: each
    code word yields its 4 output words; 8-bit: output word i reads code word i // 2,
    shifted by the pair's place. Each form is the faster of the two on H200 for its width
    (8192x28672, BENCHMARKS.md session 8: 4-bit 3.7 TB/s from "nk", 2.6 from "mma"; 8-bit
    3.9 and 3.6), where the element-wise form ran at 0.7 TB/s for 4-bit formats (an
    unpacked, interleaved array) and 2.5 / 1.8 for 8-bit ones. It is the weight of
    `impl="auto"`'s prefill route."""
    dtype = jnp.dtype(dtype)
    if layout not in LAYOUTS:
        raise ValueError(f"{layout=} must be one of {LAYOUTS}")
    if layout == "mma":
        values, layout = mma_to_nk(values, element_dtype), "nk"
    four = is_four_bit(element_dtype)
    kn = layout == "kn"
    kp = values.shape[-2 if kn else -1] * (2 if four else 1)
    bits = 4 if four else 8
    per_pair = 4 if four else 1  # output words per code word
    if kn or dtype.itemsize != 2 or block_k % (2 * per_pair) or kp % (32 // bits):
        w = decode_values(values, element_dtype, k_axis=-2 if kn else -1)
        w = _apply_blocks(w, scales, zeros, global_scale, (block_k, block_n) if kn else (block_n, block_k))
        return w.astype(dtype)[..., : (k if kn else n) or None, : (n if kn else k) or None]
    words = _words(values)  # (..., Np, Kp / (32 / bits))
    if not four:  # pair i: word i // 2 shifted by 16 * (i % 2)
        words = jnp.repeat(words, 2, axis=-1) >> ((jnp.arange(kp // 2, dtype=jnp.uint32) % 2) * 16)
    mask = np.uint32((1 << bits) - 1)

    def field(j):  # value j of each pair group, scaled, as the low 16 bits of a word
        c = ((words >> np.uint32(bits * j)) & mask).astype(jnp.uint8)
        v = (codes_to_float(c, element_dtype) if four else
             jax.lax.bitcast_convert_type(c, element_dtype).astype(jnp.float32))
        v = _apply_blocks(v, scales, zeros, global_scale, (block_n, block_k // (2 * per_pair)))
        return jax.lax.bitcast_convert_type(v.astype(dtype), jnp.uint16).astype(jnp.uint32)
    out = [field(2 * i) | (field(2 * i + 1) << 16) for i in range(per_pair)]
    w = jax.lax.bitcast_convert_type(jnp.stack(out, axis=-1), dtype)  # (..., Np, Kp/2/P, P, 2)
    w = w.reshape(*w.shape[:-3], kp)
    return w[..., : n or None, : k or None]


# ----------------------------------------------------------------------------------------
# Quantization: f32 -> (values, scales, zeros, global_scale) under the contract above.
# ----------------------------------------------------------------------------------------

# Largest finite element magnitude, and emax (exponent of the largest power of two <= it)
# used by the OCP MX shared-exponent rule.
ELEMENT_MAX = {
    jnp.dtype(jnp.int8): 127.0,
    jnp.dtype(jnp.int4): 7.0,
    jnp.dtype(jnp.uint4): 15.0,
    jnp.dtype(jnp.float8_e4m3fn): 448.0,
    jnp.dtype(jnp.float4_e2m1fn): 6.0,
}
ELEMENT_EMAX = {jnp.dtype(jnp.float8_e4m3fn): 8, jnp.dtype(jnp.float4_e2m1fn): 2}
SCALE_RULES = ("absmax", "minmax", "mx-floor", "mx-up", "nvfp4")
E8M0_MIN_EXP, E8M0_MAX_EXP = -127, 127


def padded_size(size: int, block: int, element_dtype) -> int:
    """Size of an axis after padding to a multiple of `block` (and of 2 for 4-bit)."""
    step = block if not is_four_bit(element_dtype) or block % 2 == 0 else 2 * block
    return -(-size // step) * step


def _block_reduce(a: jax.Array, bk: int, bn: int, fn) -> jax.Array:
    *lead, kp, np_ = a.shape
    a = a.reshape(*lead, kp // bk, bk, np_ // bn, bn)
    return fn(a, axis=(-3, -1))


def _round_to_element(y: jax.Array, element_dtype) -> jax.Array:
    """f32 in scaled units -> nearest element (round half to even, saturating), as f32."""
    dt = jnp.dtype(element_dtype)
    m = ELEMENT_MAX[dt]
    if jnp.issubdtype(dt, jnp.integer):
        lo = 0.0 if dt == jnp.uint4 else -m
        return jnp.clip(jnp.round(y), lo, m)
    return jnp.clip(y, -m, m).astype(dt).astype(jnp.float32)


def quantize_blocks(
    w: jax.Array,
    *,
    element_dtype,
    scale_dtype,
    block_k: int | None,
    block_n: int | None,
    scale_rule: str,
    layout: str = "kn",
) -> tuple[jax.Array, jax.Array, jax.Array | None, jax.Array | None]:
    """Quantizes a float (..., K, N) array along K into the storage contract.

    `block_k`/`block_n` None means the whole (padded) axis. K and N are zero-padded to
    whole blocks; padding never changes a block's scale (zeros do not raise an absmax and
    the min/max rule includes them only in blocks that are all padding).

    Scale rules (all give a finite scale and exact zeros for an all-zero block):
      absmax    s = amax / element_max; q = round_half_even(w / s), saturated.
      minmax    (asymmetric, uint4) s = (max - min) / 15, zero z = -min / s (a float, kept
                in the scale dtype); q = round(w / s + z) in 0..15; w ~ (q - z) * s.
      mx-floor  OCP MX v1.0: s = 2**(floor(log2 amax) - emax_elem), E8M0-clamped; may clip
                the block maximum (by up to 25% for E2M1).
      mx-up     s = 2**ceil(log2(amax / element_max)): never clips (jax.nn's MX quantizer).
      nvfp4     g = amax_tensor / (6 * 448) per matrix; per block s = e4m3(amax_b / 6 / g).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"{layout=} must be one of {LAYOUTS}")
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"unknown {scale_rule=}; valid: {SCALE_RULES}")
    edt, sdt = jnp.dtype(element_dtype), jnp.dtype(scale_dtype)
    w = w.astype(jnp.float32)
    *lead, k, n = w.shape
    bk = block_k or padded_size(k, 1, edt)
    bn = block_n or n
    kp, np_ = padded_size(k, bk, edt), padded_size(n, bn, jnp.int8)
    if layout == "mma":  # whole tiles: K to the chunk (and the block), N to 16 rows
        if (why := mma_format_reason(edt, block_k, sdt, block_n)) is not None:
            raise ValueError(why)
        kp, np_ = mma_padded(k, n, edt, block_k, bn)
    if block_k is None:
        bk = kp
    if block_n is None:
        bn = np_
    pad = [(0, 0)] * len(lead) + [(0, kp - k), (0, np_ - n)]
    wp = jnp.pad(w, pad)
    emax = ELEMENT_MAX[edt]
    zeros = gscale = None

    if scale_rule == "minmax":
        # Padding must not widen a block's range: fill it with the block's first real value.
        if kp != k or np_ != n:
            mask = jnp.pad(jnp.ones(w.shape, bool), pad)
            wp = jnp.where(mask, wp, jnp.pad(w, pad, mode="edge"))
        lo = _block_reduce(wp, bk, bn, jnp.min)
        hi = _block_reduce(wp, bk, bn, jnp.max)
        s = ((hi - lo) / emax).astype(sdt)
        s = jnp.where(s > 0, s, jnp.ones_like(s))  # constant block, or a range that underflows
        z = (-lo / s.astype(jnp.float32)).astype(sdt)
        zeros = z
        q = _round_to_element(
            wp / expand_blocks(s.astype(jnp.float32), (bk, bn), (-2, -1))
            + expand_blocks(z.astype(jnp.float32), (bk, bn), (-2, -1)), edt)
    else:
        amax = _block_reduce(jnp.abs(wp), bk, bn, jnp.max)
        if scale_rule == "absmax":
            s = jnp.where(amax > 0, amax / emax, 1.0).astype(sdt)
        elif scale_rule in ("mx-floor", "mx-up"):
            # Exact integer log2 through frexp (x = m * 2**e, m in [0.5, 1)); jnp.log2 can
            # land a hair below an exact power of two and flip the floor.
            if scale_rule == "mx-floor":
                _, e2 = jnp.frexp(amax)
                e = e2 - 1 - ELEMENT_EMAX[edt]
            else:
                m, e2 = jnp.frexp(amax / emax)
                e = jnp.where(m == 0.5, e2 - 1, e2)
            # All-zero block: scale 1 (exact zeros). The E8M0 bits are built directly, so
            # 2**-127 never passes through a (possibly flushed) f32 subnormal.
            e = jnp.clip(jnp.where(amax > 0, e, 0), E8M0_MIN_EXP, E8M0_MAX_EXP)
            bits = (e.astype(jnp.int32) - E8M0_MIN_EXP).astype(jnp.uint8)
            s = jax.lax.bitcast_convert_type(bits, jnp.float8_e8m0fnu).astype(sdt)
        else:  # nvfp4
            t = jnp.max(jnp.abs(wp), axis=(-2, -1))
            g = t / (emax * 448.0)
            # A tensor so small that g is not a normal f32 (it would flush to zero) gets g = 1:
            # its blocks then store scale 0 and exact zeros instead of NaN.
            gscale = jnp.where(g >= jnp.finfo(jnp.float32).tiny, g, 1.0).astype(jnp.float32)
            sb = amax / emax / gscale[..., None, None]
            s = jnp.clip(sb, 0, 448.0).astype(sdt)
        s32 = s.astype(jnp.float32)
        if gscale is not None:
            s32 = s32 * gscale[..., None, None]
        s32 = jnp.where(s32 > 0, s32, 1.0)
        q = _round_to_element(wp / expand_blocks(s32, (bk, bn), (-2, -1)), edt)

    if is_four_bit(edt):
        values = pack_nibbles(float_to_codes(q, edt), axis=-2)
    else:
        values = q.astype(edt)
    if layout in ("nk", "mma"):
        values = jnp.swapaxes(values, -1, -2)
        s = jnp.swapaxes(s, -1, -2)
        zeros = None if zeros is None else jnp.swapaxes(zeros, -1, -2)
    if layout == "mma":
        values = nk_to_mma(values, edt)
    return values, s, zeros, gscale
