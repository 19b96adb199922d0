"""Weight-only block-scaled matmul, plain jnp: the test oracle and the XLA fallback.

`x @ dequantize(W)` with W described by the storage contract of `pallas_kernels.blocks`:
dequantize the whole weight to f32 with `blocks.dequantize_blocks`, contract in f32, cast.
XLA fuses the dequantization into the dot's operand at small M and materializes the f32
(or bf16) weight at large M; that is exactly what the kernels avoid, so this function is
also the "XLA convert-and-dot" baseline of `scripts/bench_kernels.py`.
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
) -> jax.Array:
    """x (..., M, k) float -> (..., M, n) `out_dtype` (default x.dtype); f32 accumulation."""
    w = blocks.dequantize_blocks(
        values, scales, zeros, global_scale,
        element_dtype=element_dtype, block_k=block_k, block_n=block_n,
        layout=layout, k=k, n=n,
    )
    out = jnp.matmul(x.astype(jnp.float32), w, precision=jax.lax.Precision.HIGHEST)
    return out.astype(out_dtype or x.dtype)
