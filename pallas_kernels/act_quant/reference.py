"""Dynamic activation quantization along K in plain jnp: the canonical definition.

What: `quantize_rows(x)` turns activations x (..., K) into `values` (..., Kp) of a low-bit
element dtype and `scales` (..., Kp / block_k), one scale per `block_k` consecutive
elements of a row (a "1 x block_k block"; `block_k=None` = one scale per row, "per-token").
Why here: `lowbit_jax.quantize` calls this for activation formats, the Pallas kernel in
`kernel.py` is tested against it bit for bit, and the scaled GEMMs take its output.

Invariant:  dequant(values, scales)[..., k] == values[..., k] * scales[..., k // block_k]
            (a multiply; K is zero-padded to Kp, a multiple of block_k).

Rules (absmax scaling; `amax` is the max |x| over a block):
    int8              scale = amax / 127; values = round_half_even(x / scale) clipped to
                      [-127, 127] (symmetric: -128 is never produced).
    float8_e4m3fn     scale = amax / 448; values = cast_rne(clip(x / scale, -448, 448)).
                      The clip matters: jnp's cast of |v| > 448 gives NaN, not 448.
    float8_e5m2       as e4m3 with 57344.
    scale f32/bf16    the scale is rounded to `scale_dtype` *first* and the values are
                      computed from the rounded scale, so the invariant holds for what is
                      stored. An all-zero block stores scale 0 and values 0.
    scale float8_e8m0fnu (MX, OCP Microscaling v1.0): the scale is 2**e with
                      mx_round="floor":  e = floor(log2(amax)) - emax_elem   (OCP rule;
                                         emax_elem = 8 for e4m3, 15 for e5m2; the largest
                                         elements may saturate to 448)
                      mx_round="up":     e = the smallest e with amax / 2**e <= max_elem
                                         (never saturates; one step coarser at times)
                      e is clamped to E8M0's range [-127, 127]; an all-zero block gets
                      e = -127 (finite) and zero values. values = cast_rne(clip(x * 2**-e)).
                      floor(log2(amax)) is read off the f32 exponent bits, which is exact
                      and matches the kernel.
NaN/Inf in x are not supported (they propagate into the block's scale).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

INT8 = jnp.dtype(jnp.int8)
E4M3 = jnp.dtype(jnp.float8_e4m3fn)
E5M2 = jnp.dtype(jnp.float8_e5m2)
E8M0 = jnp.dtype(jnp.float8_e8m0fnu)

ELEMENT_MAX = {INT8: 127.0, E4M3: 448.0, E5M2: 57344.0}
# Exponent of the largest element (448 = 1.75 * 2**8, 57344 = 1.75 * 2**15).
ELEMENT_EMAX = {E4M3: 8, E5M2: 15}
# Mantissa bits (of 23) of the largest element's significand 1.75.
_SIG_175 = 0x600000


def check_args(element_dtype, scale_dtype, block_k, mx_round) -> tuple[jnp.dtype, jnp.dtype]:
    """Validates the static facts; returns (element_dtype, scale_dtype) as dtypes."""
    e, s = jnp.dtype(element_dtype), jnp.dtype(scale_dtype)
    if e not in ELEMENT_MAX:
        raise ValueError(f"element_dtype={e} must be one of {sorted(map(str, ELEMENT_MAX))}")
    if s not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), E8M0):
        raise ValueError(f"scale_dtype={s} must be float32, bfloat16 or float8_e8m0fnu")
    if s == E8M0 and e not in ELEMENT_EMAX:
        raise ValueError(f"E8M0 (MX) scales need a float8 element dtype, got element_dtype={e}")
    if block_k is not None and block_k < 1:
        raise ValueError(f"{block_k=} must be >= 1 or None (per row)")
    if mx_round not in ("floor", "up"):
        raise ValueError(f"{mx_round=} must be 'floor' or 'up'")
    return e, s


def padded_k(k: int, block_k: int | None) -> int:
    """Kp: K rounded up to a multiple of block_k (K itself for per-row scales)."""
    if block_k is None:
        return k
    return -(-k // block_k) * block_k


def mx_exponent(amax: jax.Array, element_dtype, mx_round: str) -> jax.Array:
    """int32 shared exponent e (scale = 2**e) of MX blocks with f32 absmax `amax`."""
    bits = jax.lax.bitcast_convert_type(amax.astype(jnp.float32), jnp.int32)
    e_amax = ((bits >> 23) & 0xFF) - 127           # floor(log2(amax)) for normal amax
    e = e_amax - ELEMENT_EMAX[jnp.dtype(element_dtype)]
    if mx_round == "up":
        e = e + ((bits & 0x7FFFFF) > _SIG_175).astype(jnp.int32)
    # amax == 0 (and subnormal amax) land at or below -127 here: clamp keeps it finite.
    return jnp.clip(e, -127, 127)


def pow2(e: jax.Array) -> jax.Array:
    """2.0**e in f32 for integer e in [-126, 127], exactly (built from exponent bits)."""
    return jax.lax.bitcast_convert_type((e + 127).astype(jnp.int32) << 23, jnp.float32)


def e8m0_from_exponent(e: jax.Array) -> jax.Array:
    return jax.lax.bitcast_convert_type((e + 127).astype(jnp.uint8), E8M0)


def quantize_block(xb: jax.Array, amax: jax.Array, *, element_dtype, scale_dtype, mx_round,
                   e8m0_as_bits: bool = False):
    """Quantizes `xb` (f32, any shape) whose blocks have absmax `amax` (broadcastable).

    Returns (values, scale) with `scale` shaped like `amax`. Shared by the reference and
    the Pallas kernel so that both compute the same function op for op. With
    `e8m0_as_bits`, E8M0 scales come back as their uint8 bits (Triton has no E8M0 type).
    """
    e, s = jnp.dtype(element_dtype), jnp.dtype(scale_dtype)
    qmax = ELEMENT_MAX[e]
    if s == E8M0:
        ex = mx_exponent(amax, e, mx_round)
        v = xb * pow2(-ex)                          # exact: a power-of-two multiply
        bits = (ex + 127).astype(jnp.uint8)
        scale = bits if e8m0_as_bits else jax.lax.bitcast_convert_type(bits, E8M0)
        return jnp.clip(v, -qmax, qmax).astype(e), scale
    scale = (amax / qmax).astype(s)
    sf = scale.astype(jnp.float32)
    v = xb / jnp.where(sf == 0, 1.0, sf)
    if e == INT8:
        # round-half-even without lax.round (which Pallas-Triton lacks): adding 1.5 * 2**23
        # to |v| <= 2**22 leaves round_half_even(v) in the low mantissa bits. Reading the
        # bits (not subtracting the constant again) keeps compilers from folding it away.
        v = jnp.clip(v, -qmax - 1, qmax + 1) + np.float32(1.5 * 2**23)
        r = jax.lax.bitcast_convert_type(v, jnp.int32) - np.int32(0x4B400000)
        return jnp.clip(r, -127, 127).astype(e), scale
    return jnp.clip(v, -qmax, qmax).astype(e), scale


def quantize_rows(
    x: jax.Array,
    *,
    element_dtype,
    block_k: int | None = None,
    scale_dtype=jnp.float32,
    mx_round: str = "floor",
) -> tuple[jax.Array, jax.Array]:
    """Quantizes x (..., K) along its last axis.

    Args:
      x: activations, any float dtype; computed in f32.
      element_dtype: int8, float8_e4m3fn or float8_e5m2.
      block_k: elements per scale along K; None = the whole row (per-token).
      scale_dtype: float32, bfloat16, or float8_e8m0fnu (MX; power-of-two scales).
      mx_round: "floor" (OCP) or "up" (never saturates); MX scales only.

    Returns:
      values (..., Kp) element_dtype and scales (..., Kp // block_k) scale_dtype, where Kp
      is K rounded up to a multiple of block_k (zero-padded); per-token scales are (..., 1).
    """
    e, s = check_args(element_dtype, scale_dtype, block_k, mx_round)
    k = x.shape[-1]
    bk = k if block_k is None else block_k
    kp = padded_k(k, block_k)
    xf = x.astype(jnp.float32)
    if kp != k:
        xf = jnp.pad(xf, [(0, 0)] * (x.ndim - 1) + [(0, kp - k)])
    xb = xf.reshape(*x.shape[:-1], kp // bk, bk)
    amax = jnp.max(jnp.abs(xb), axis=-1, keepdims=True)
    v, sc = quantize_block(xb, amax, element_dtype=e, scale_dtype=s, mx_round=mx_round)
    return v.reshape(*x.shape[:-1], kp), sc[..., 0]


def dequantize_rows(values: jax.Array, scales: jax.Array, *, k: int | None = None) -> jax.Array:
    """f32 (..., k) from `quantize_rows` output: values * scales (block size inferred)."""
    kp = values.shape[-1]
    bk = kp // scales.shape[-1]
    out = values.astype(jnp.float32) * jnp.repeat(scales.astype(jnp.float32), bk, axis=-1)
    return out[..., : (k or kp)]
