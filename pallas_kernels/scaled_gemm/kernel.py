"""Block-scaled GEMM as a Pallas kernel (BlockSpec grid): the interpretable twin.

Same algorithm and arguments as `triton_kernel.py`, written once in Pallas so that it runs
interpreted on CPU for CI (`interpret=True`) and, through Pallas-Triton, natively on GPU
where the shapes tile evenly. The Triton kernel is the fast GPU path (see api.py).

Grid (cdiv(M, block_m), cdiv(N, block_n)); each program holds a full-K strip of x (and its
scales) and of w, and walks K in scale groups of G = min(x_block_k, w_block_k):
    partial = sum over the G-wide slice of dot(x, w)       (int32 for int8, else f32)
    acc    += partial * sx[:, g] * sw[g, :]                 (promotion, f32)
With per-token x and per-channel w, G = Kp: one group, i.e. scales in the epilogue.
4-bit weights are unpacked and decoded in the kernel (exact in f32).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels import blocks

E8M0 = jnp.dtype(jnp.float8_e8m0fnu)


def _decode_scale(s):
    return s.astype(jnp.float32)


def _decode_fp4(packed, element_dtype, k_axis):
    """(.., BK/2 along k_axis) uint8 -> f32 values (.., BK), low nibble = even k."""
    lo = (packed & 0xF).astype(jnp.int32)
    hi = (packed >> 4).astype(jnp.int32)
    codes = jnp.stack([lo, hi], axis=k_axis + 1)
    shape = list(packed.shape)
    shape[k_axis] *= 2
    codes = codes.reshape(shape)
    dt = jnp.dtype(element_dtype)
    if dt == jnp.float4_e2m1fn:
        e2 = (codes >> 1) & 3
        m1 = (codes & 1).astype(jnp.float32)
        mag = jnp.where(e2 == 0, 0.5 * m1, (1.0 + 0.5 * m1) * jnp.exp2((e2 - 1).astype(jnp.float32)))
        return jnp.where(codes >= 8, -mag, mag)
    return blocks.codes_to_float(codes, dt)


def _kernel(x_ref, xs_ref, w_ref, ws_ref, y_ref, *, kp, g, bk, gx, gw, bnw, bn, nk,
            w_element_dtype, acc_int):
    four_bit = blocks.is_four_bit(w_element_dtype)
    acc_dtype = jnp.int32 if acc_int else jnp.float32
    bm = x_ref.shape[0]

    def sw_row(k0):
        # (1, bn) weight scales of this program's columns at K offset k0.
        if bnw >= bn:
            s = ws_ref[0, k0 // gw] if nk else ws_ref[k0 // gw, 0]
            return jnp.full((1, bn), _decode_scale(s))
        col = ws_ref[:, pl.ds(k0 // gw, 1)][:, 0] if nk else ws_ref[pl.ds(k0 // gw, 1), :][0]
        return jnp.repeat(_decode_scale(col), bnw)[None, :]

    def group(gi, acc):
        part = jnp.zeros((bm, bn), acc_dtype)
        for t in range(g // bk):
            k0 = gi * g + t * bk
            a = x_ref[:, pl.ds(k0, bk)]
            if four_bit:
                kw = pl.ds(k0 // 2, bk // 2)
                b = w_ref[:, kw] if nk else w_ref[kw, :]
                b = _decode_fp4(b, w_element_dtype, 1 if nk else 0)
                a = a.astype(jnp.float32)
            else:
                b = w_ref[:, pl.ds(k0, bk)] if nk else w_ref[pl.ds(k0, bk), :]
                if not acc_int:
                    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
            dims = (((1,), (1,)), ((), ())) if nk else (((1,), (0,)), ((), ()))
            part += jax.lax.dot_general(a, b, dims, preferred_element_type=acc_dtype)
        k0 = gi * g
        sx = _decode_scale(xs_ref[:, pl.ds(k0 // gx, 1)])
        return acc + part.astype(jnp.float32) * sx * sw_row(k0)

    acc = jax.lax.fori_loop(0, kp // g, group, jnp.zeros((bm, bn), jnp.float32))
    y_ref[...] = acc.astype(y_ref.dtype)


def native_unsupported_reason(m, n, np_, *, block_m, block_n, w_block_n, four_bit,
                              e8m0=False) -> str | None:
    """Why the kernel cannot run natively (Pallas-Triton on GPU); None if it can."""
    if e8m0:
        return "native Pallas-Triton has no float8_e8m0fnu type (interpret mode only)"
    if m % block_m or n % block_n or np_ != n:
        return (f"native Pallas needs whole tiles (no masks): M={m}, n={n} (Np={np_}) must be "
                f"multiples of {block_m=}, {block_n=}")
    if four_bit:
        return "native Pallas has no in-kernel 4-bit unpack (interpret mode only); use triton"
    if 1 < w_block_n < block_n:
        return f"native Pallas cannot expand {w_block_n=} < {block_n=} weight scales"
    return None


@functools.partial(
    jax.jit,
    static_argnames=("x_block_k", "w_block_k", "w_block_n", "layout", "w_element_dtype", "n",
                     "out_dtype", "block_m", "block_n", "block_k", "num_warps", "num_stages",
                     "interpret"),
)
def scaled_matmul_pallas(
    xv, xs, wv, ws, *, x_block_k, w_block_k, w_block_n, layout, w_element_dtype, n,
    out_dtype, block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=3,
    interpret=False,
):
    """Pallas scaled GEMM; arguments as `api.scaled_matmul` (validated there)."""
    m, kp = xv.shape
    nk = layout == "nk"
    four_bit = blocks.is_four_bit(w_element_dtype)
    np_ = wv.shape[0] if nk else wv.shape[1]
    gx, gw = x_block_k, w_block_k
    g = min(gx, gw)
    bk = min(block_k, g)
    acc_int = jnp.dtype(xv.dtype) == jnp.int8
    bnw = w_block_n
    kw = kp // 2 if four_bit else kp
    if bnw >= block_n:
        ws_block = (1, kp // gw) if nk else (kp // gw, 1)
        ws_map = (lambda i, j: (j * block_n // bnw, 0)) if nk else (lambda i, j: (0, j * block_n // bnw))
    else:
        ws_block = (block_n // bnw, kp // gw) if nk else (kp // gw, block_n // bnw)
        ws_map = (lambda i, j: (j, 0)) if nk else (lambda i, j: (0, j))
    body = functools.partial(_kernel, kp=kp, g=g, bk=bk, gx=gx, gw=gw, bnw=bnw, bn=block_n,
                             nk=nk, w_element_dtype=w_element_dtype, acc_int=acc_int)
    return pl.pallas_call(
        body,
        grid=(pl.cdiv(m, block_m), pl.cdiv(n, block_n)),
        in_specs=[
            pl.BlockSpec((block_m, kp), lambda i, j: (i, 0)),
            pl.BlockSpec((block_m, kp // gx), lambda i, j: (i, 0)),
            pl.BlockSpec((block_n, kw), lambda i, j: (j, 0)) if nk
            else pl.BlockSpec((kw, block_n), lambda i, j: (0, j)),
            pl.BlockSpec(ws_block, ws_map),
        ],
        out_specs=pl.BlockSpec((block_m, block_n), lambda i, j: (i, j)),
        out_shape=jax.ShapeDtypeStruct((m, n), out_dtype),
        compiler_params=None if interpret else plgpu.CompilerParams(num_warps=num_warps,
                                                                     num_stages=num_stages),
        interpret=interpret,
        name="scaled_matmul",
    )(xv, xs, wv, ws)
