"""Weight-only block-scaled matmul, plain jnp: the test oracle and the XLA fallback.

`x @ dequantize(W)` with W described by the storage contract of `pallas_kernels.blocks`:
dequantize the whole weight to f32 with `blocks.dequantize_blocks`, contract in f32, cast.

With `convert=True` it is XLA's own path in x's precision, as a JAX user writes it: the
weight dequantized to x's dtype, then `x @ w` with f32 accumulation. XLA fuses the
convert into its GEMM at small M and writes the converted weight before a cuBLAS GEMM at
large M. It is the "XLA convert-and-dot" baseline of `scripts/bench_kernels.py` and the
prefill route of `impl="auto"` on GPU (`config.XLA_PREFILL_MIN_M`); not the oracle.
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
) -> jax.Array:
    """x (..., M, k) float -> (..., M, n) `out_dtype` (default x.dtype); f32 accumulation.

    convert=False: the oracle (f32 weight, f32 contraction at HIGHEST precision).
    convert=True: XLA's convert-and-dot, each dequantized weight rounded once to x's dtype
    (as the prefill kernels' pre-scaled tiles are), then x @ w at x's precision.
    """
    w = blocks.dequantize_blocks(
        values, scales, zeros, global_scale,
        element_dtype=element_dtype, block_k=block_k, block_n=block_n,
        layout=layout, k=k, n=n,
    )
    if convert:
        out = jnp.matmul(x, w.astype(x.dtype), preferred_element_type=jnp.float32)
    else:
        out = jnp.matmul(x.astype(jnp.float32), w, precision=jax.lax.Precision.HIGHEST)
    return out.astype(out_dtype or x.dtype)
