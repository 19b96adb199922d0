"""Weight-only block-scaled matmul as a BlockSpec Pallas kernel (portable; CI's kernel).

One program computes a (block_m, block_n) tile of `x @ dequantize(W)` over a contiguous
K range (the whole K, or one of `split_k` parts whose f32 partial sums XLA adds). Its body
loops over K tiles of `block_k` elements: it loads the stored codes of the tile, decodes
them with integer arithmetic (`decode_codes`: no table lookup, so the same body lowers on
GPU), applies the block scales and contracts with `jnp.dot` in f32. The dequantized
weight only ever exists one tile at a time, in the program's registers.

4-bit elements are packed two per byte along K (low nibble = even k). Instead of
interleaving the two nibbles back into K order, the activation is viewed as (M, K/2, 2)
(a free reshape) and the tile contributes `x_even @ lo + x_odd @ hi`.

Scales: when the K tile lies inside one scale block (block_k % tile == 0) the scale
multiplies the dot's result, `acc += s * (x @ codes - z * sum(x))` (one multiply per
output, not per weight); when a tile covers several blocks they multiply the decoded
tile before the dot.

Backends: `interpret=True` runs the body with jnp on any backend (CPU CI covers every
element dtype this way). Natively on GPU the `pallas_call` lowers through Pallas's Triton
backend, which jax 0.11 deprecates (it warns); `triton_kernel.py` is the fast GPU path.
Limits: blocks along K must divide the padded K exactly (no masking), and a scale block
along N must be 1 or a multiple of the N tile.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from pallas_kernels.weight_only.config import TileConfig, WeightSpec

_F32 = jnp.float32


def decode_codes(codes: jax.Array, element_dtype) -> jax.Array:
    """Stored codes -> f32 values, arithmetic only (lowers in Pallas on GPU and CPU).

    `codes`: uint8 nibbles 0..15 for 4-bit dtypes; the stored int8 / float8 otherwise.
    """
    dt = jnp.dtype(element_dtype)
    if dt == jnp.int4:
        c = codes.astype(jnp.int32)
        return ((c ^ 8) - 8).astype(_F32)
    if dt == jnp.uint4:
        return codes.astype(jnp.int32).astype(_F32)
    if dt == jnp.float4_e2m1fn:
        c = codes.astype(jnp.int32)
        e = (c >> 1) & 3
        m = c & 1
        # 2 * |value| is an integer: m for e == 0, (2 + m) << (e - 1) otherwise.
        twice = jnp.where(e == 0, m, (2 + m) << jnp.maximum(e - 1, 0))
        mag = twice.astype(_F32) * 0.5
        return jnp.where((c & 8) != 0, -mag, mag)
    return codes.astype(_F32)  # int8, float8_e4m3fn


def decode_scales(s: jax.Array, scale_dtype) -> jax.Array:
    """Scales as passed to the kernel -> f32. float8_e8m0fnu arrives as its uint8 bits."""
    if jnp.dtype(scale_dtype) == jnp.float8_e8m0fnu:
        e = s.astype(jnp.int32)
        bits = jnp.where(e == 0, 1 << 22, e << 23)  # e == 0 is 2**-127, a subnormal
        return jax.lax.bitcast_convert_type(bits, _F32)
    return s.astype(_F32)


def _kernel(*refs, spec: WeightSpec, cfg: TileConfig, ks: int, x_dtype):
    refs = list(refs)
    x_ref, w_ref, s_ref = refs[:3]
    i = 3
    z_ref = g_ref = None
    if spec.has_zeros:
        z_ref = refs[i]
        i += 1
    if spec.has_global_scale:
        g_ref = refs[i]
        i += 1
    o_ref = refs[i]

    tk, bk, kn = cfg.block_k, spec.block_k, spec.layout == "kn"
    post_dot = bk % tk == 0 or bk >= spec.kp
    scale_rows_in_block = ks // bk if ks % bk == 0 else 1
    n_chunks = ks // tk

    def load_w(start, size):
        w = w_ref[pl.ds(start, size), :] if kn else w_ref[:, pl.ds(start, size)]
        return w

    def orient(w):  # decoded tile -> (K, N)
        return w if kn else w.T

    def load_s(ref, start, size):
        s = ref[pl.ds(start, size), :] if kn else ref[:, pl.ds(start, size)].T
        return decode_scales(s, spec.scale_dtype)  # (size, BN or 1)

    def body(c, acc):
        if spec.four_bit:
            hk = tk // 2
            xe = x_ref[:, pl.ds(c * hk, hk), 0]
            xo = x_ref[:, pl.ds(c * hk, hk), 1]
            wp = load_w(c * hk, hk)
            parts = [(xe, orient(decode_codes(wp & 0xF, spec.element_dtype))),
                     (xo, orient(decode_codes(wp >> 4, spec.element_dtype)))]
            rows_per_block = bk // 2
        else:
            xt = x_ref[:, pl.ds(c * tk, tk)]
            parts = [(xt, orient(decode_codes(load_w(c * tk, tk), spec.element_dtype)))]
            rows_per_block = bk
        if post_dot:
            r = (c * tk) // bk if scale_rows_in_block > 1 else 0
            s = load_s(s_ref, r, 1)
            dot = sum(jnp.dot(xp, wp.astype(x_dtype), preferred_element_type=_F32)
                      for xp, wp in parts)
            if z_ref is not None:
                z = load_s(z_ref, r, 1)
                xsum = sum(jnp.sum(xp.astype(_F32), axis=1, keepdims=True) for xp, _ in parts)
                dot = dot - xsum * z
            return acc + dot * s
        g = tk // bk
        s = load_s(s_ref, c * g, g)
        z = load_s(z_ref, c * g, g) if z_ref is not None else None

        def expand(a):  # (g, BN or 1) -> (rows of the tile, BN or 1), repeating each block row
            rep = jnp.broadcast_to(a[:, None, :], (g, rows_per_block, a.shape[-1]))
            return rep.reshape(g * rows_per_block, a.shape[-1])

        for xp, wp in parts:
            wq = wp - expand(z) if z is not None else wp
            wq = (wq * expand(s)).astype(x_dtype)
            acc = acc + jnp.dot(xp, wq, preferred_element_type=_F32)
        return acc

    acc = jax.lax.fori_loop(0, n_chunks, body, jnp.zeros((cfg.block_m, cfg.block_n), _F32))
    if g_ref is not None:
        acc = acc * g_ref[...].astype(_F32)
    o_ref[...] = acc.astype(o_ref.dtype)


@functools.partial(jax.jit, static_argnames=("spec", "cfg", "out_dtype", "interpret"))
def weight_only_matmul_pallas(x, values, scales, zeros, global_scale, *, spec: WeightSpec,
                              cfg: TileConfig, out_dtype, interpret: bool):
    """x (M, k) bf16/f16 -> (M, n) out_dtype; see the module docstring. Caller validates."""
    m = x.shape[0]
    bm, bn, tk, split = cfg.block_m, cfg.block_n, cfg.block_k, cfg.split_k
    mp = -(-m // bm) * bm
    ks = spec.kp // split
    # Padding x (small) is fine; the weight is never copied.
    xp = jnp.pad(x, ((0, mp - m), (0, spec.kp - spec.k)))
    kn = spec.layout == "kn"
    if spec.four_bit:
        xp = xp.reshape(mp, spec.kp // 2, 2)
        x_spec = pl.BlockSpec((bm, ks // 2, 2), lambda i, j, s: (i, s, 0))
        wk = ks // 2
    else:
        x_spec = pl.BlockSpec((bm, ks), lambda i, j, s: (i, s))
        wk = ks
    w_spec = (pl.BlockSpec((wk, bn), lambda i, j, s: (s, j)) if kn
              else pl.BlockSpec((bn, wk), lambda i, j, s: (j, s)))
    bk, sbn = spec.block_k, spec.block_n
    srows = ks // bk if ks % bk == 0 else 1
    if ks % bk == 0:
        srow_idx = lambda s: s  # noqa: E731
    else:  # the split lies inside one scale block
        srow_idx = lambda s: (s * ks) // bk  # noqa: E731
    scols = bn if sbn == 1 else 1
    scol_idx = (lambda j: j) if sbn == 1 else (lambda j: (j * bn) // sbn)
    s_spec = (pl.BlockSpec((srows, scols), lambda i, j, s: (srow_idx(s), scol_idx(j))) if kn
              else pl.BlockSpec((scols, srows), lambda i, j, s: (scol_idx(j), srow_idx(s))))
    if jnp.dtype(spec.scale_dtype) == jnp.float8_e8m0fnu:
        scales = jax.lax.bitcast_convert_type(scales, jnp.uint8)
        if zeros is not None:
            zeros = jax.lax.bitcast_convert_type(zeros, jnp.uint8)
    args = [xp, values, scales]
    in_specs = [x_spec, w_spec, s_spec]
    if spec.has_zeros:
        args.append(zeros)
        in_specs.append(s_spec)
    if spec.has_global_scale:
        args.append(jnp.asarray(global_scale, jnp.float32).reshape(1, 1))
        in_specs.append(pl.BlockSpec((1, 1), lambda i, j, s: (0, 0)))
    grid = (mp // bm, spec.np_ // bn, split)
    if split == 1:
        out_shape = jax.ShapeDtypeStruct((mp, spec.np_), out_dtype)
        out_spec = pl.BlockSpec((bm, bn), lambda i, j, s: (i, j))
    else:
        out_shape = jax.ShapeDtypeStruct((split, mp, spec.np_), jnp.float32)
        out_spec = pl.BlockSpec((None, bm, bn), lambda i, j, s: (s, i, j))
    kernel = functools.partial(_kernel, spec=spec, cfg=cfg, ks=ks, x_dtype=x.dtype)
    compiler_params = None
    if not interpret:
        from jax.experimental.pallas import triton as plt  # GPU-only lowering
        compiler_params = plt.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    out = pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=out_spec,
        out_shape=out_shape,
        interpret=interpret,
        compiler_params=compiler_params,
        name="weight_only_matmul_pallas",
    )(*args)
    if split > 1:
        out = out.sum(axis=0).astype(out_dtype)
    return out[:m, : spec.n]
