"""Weight-only block-scaled matmul, plain jnp: the test oracle and the XLA fallback.

`x @ dequantize(W)` with W described by the storage contract of `pallas_kernels.blocks`:
dequantize the whole weight to f32 with `blocks.dequantize_blocks`, contract in f32, cast.

With `convert=True` it is XLA's own path in x's precision, as a JAX user writes it: the
weight dequantized to x's dtype, then `x @ w` with f32 accumulation; XLA decides whether to
fuse the dequantization into its GEMM. It is the "XLA convert-and-dot" baseline of
`scripts/bench_kernels.py`; not the oracle.

With `materialize=True` as well, an optimization barrier makes XLA write the dequantized
weight to HBM in one memory-bound pass and run its plain GEMM on it: the prefill route of
`impl="auto"` on GPU (`config.XLA_PREFILL_MIN_M`). (On H200 XLA made that choice by itself
at M >= 128 in every measured case, BENCHMARKS.md session 8; the barrier rules out a
dequantizing GEMM. What made the route fast is `blocks.dequantize_as`'s pass.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels import blocks


def weight_only_matmul_reference(
    x: jax.Array,
    values: jax.Array,
    scales: jax.Array,
    zeros: jax.Array | None = None,
    global_scale: jax.Array | None = None,
    *,
    element_dtype,
    block_k: int,
    block_n: int,
    layout: str = "kn",
    k: int,
    n: int,
    out_dtype=None,
    convert: bool = False,
    materialize: bool = False,
) -> jax.Array:
    """x (..., M, k) float -> (..., M, n) `out_dtype` (default x.dtype); f32 accumulation.

    convert=False: the oracle (f32 weight, f32 contraction at HIGHEST precision).
    convert=True: XLA's convert-and-dot, each dequantized weight rounded once to x's dtype
    (as the prefill kernels' pre-scaled tiles are), then x @ w at x's precision.
    materialize=True (with convert): that weight is written out before the GEMM.
    """
    if materialize and not convert:
        raise ValueError("materialize=True needs convert=True")
    facts = dict(element_dtype=element_dtype, block_k=block_k, block_n=block_n, layout=layout,
                 k=k, n=n)
    if convert:
        w = blocks.dequantize_as(values, scales, zeros, global_scale, dtype=x.dtype, **facts)
        if materialize:
            w = jax.lax.optimization_barrier(w)
        if layout != "kn":  # (n, k): XLA folds this transpose into the dot's dimensions
            w = jnp.swapaxes(w, -1, -2)
        out = jnp.matmul(x, w, preferred_element_type=jnp.float32)
    else:
        w = blocks.dequantize_blocks(values, scales, zeros, global_scale, **facts)
        out = jnp.matmul(x.astype(jnp.float32), w, precision=jax.lax.Precision.HIGHEST)
    return out.astype(out_dtype or x.dtype)
