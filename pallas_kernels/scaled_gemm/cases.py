"""Random quantized operands for the scaled-GEMM tests and benchmark (plain arrays).

Each recipe is described by static facts only; `make_operands` draws fresh random values
and scales that satisfy the storage contracts (never zeros).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from pallas_kernels import blocks


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    name: str                  # label for test ids / tables only
    x_dtype: jnp.dtype
    w_dtype: jnp.dtype         # element dtype (float4_e2m1fn = packed uint8)
    x_block_k: int | None      # None = per token
    w_block_k: int | None      # None = per channel (Kp)
    w_block_n: int
    scale_dtype: jnp.dtype     # both sides


I8, F8, F4 = jnp.dtype(jnp.int8), jnp.dtype(jnp.float8_e4m3fn), jnp.dtype(jnp.float4_e2m1fn)
F32, E8M0 = jnp.dtype(jnp.float32), jnp.dtype(jnp.float8_e8m0fnu)

RECIPES = (
    Recipe(name="w8a8-int8", x_dtype=I8, w_dtype=I8, x_block_k=None, w_block_k=None,
           w_block_n=1, scale_dtype=F32),
    Recipe(name="w8a8-fp8", x_dtype=F8, w_dtype=F8, x_block_k=None, w_block_k=None,
           w_block_n=1, scale_dtype=F32),
    Recipe(name="fp8-block", x_dtype=F8, w_dtype=F8, x_block_k=128, w_block_k=128,
           w_block_n=128, scale_dtype=F32),
    Recipe(name="int8-block", x_dtype=I8, w_dtype=I8, x_block_k=32, w_block_k=32,
           w_block_n=32, scale_dtype=F32),
    Recipe(name="mxfp8", x_dtype=F8, w_dtype=F8, x_block_k=32, w_block_k=32, w_block_n=1,
           scale_dtype=E8M0),
    Recipe(name="mxfp4-a8", x_dtype=F8, w_dtype=F4, x_block_k=32, w_block_k=32, w_block_n=1,
           scale_dtype=E8M0),
)


def _elements(key, shape, dtype):
    if dtype == I8:
        v = jax.random.randint(key, shape, -127, 128, jnp.int32).astype(jnp.int8)
        return jnp.where(v == 0, jnp.int8(1), v)
    return jnp.clip(jax.random.normal(key, shape) * 100, -448, 448).astype(dtype)


def _scales(key, shape, dtype):
    if dtype == E8M0:   # 2**e, e in [-8, 2]
        e = jax.random.randint(key, shape, -8, 3)
        return jax.lax.bitcast_convert_type((e + 127).astype(jnp.uint8), E8M0)
    return jax.random.uniform(key, shape, jnp.float32, 0.5, 2.0) * 1e-2


def make_operands(key, recipe: Recipe, m: int, k: int, n: int, layout: str = "nk"):
    """Random (xv, xs, wv, ws, kwargs for scaled_matmul); K and N are used as Kp, Np."""
    kx, ksx, kw, ksw = jax.random.split(key, 4)
    gx = k if recipe.x_block_k is None else recipe.x_block_k
    gw = k if recipe.w_block_k is None else recipe.w_block_k
    bn = recipe.w_block_n
    xv = _elements(kx, (m, k), recipe.x_dtype)
    xs = _scales(ksx, (m, k // gx), recipe.scale_dtype)
    if recipe.w_dtype == F4:
        codes = jax.random.randint(kw, (n, k), 0, 16).astype(jnp.uint8)
        wv = blocks.pack_nibbles(codes, axis=1)
        if layout == "kn":
            wv = blocks.pack_nibbles(codes.T, axis=0)
    else:
        wv = _elements(kw, (n, k), recipe.w_dtype)
        if layout == "kn":
            wv = wv.T
    ws = _scales(ksw, (n // bn, k // gw), recipe.scale_dtype)
    if layout == "kn":
        ws = ws.T
    kwargs = dict(x_block_k=recipe.x_block_k, w_block_k=gw, w_block_n=bn, layout=layout,
                  w_element_dtype=recipe.w_dtype, k=k, n=n)
    return xv, xs, wv, ws, kwargs
