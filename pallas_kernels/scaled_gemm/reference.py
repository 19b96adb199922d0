"""Scaled GEMM in plain jnp: dequantize both operands, dot in f32. Test oracle + XLA path.

y (M, n) = dequant(x) @ dequant(w)[:, :n], with
    dequant(x)[m, k] = xv[m, k] * xs[m, k // x_block_k]           (act_quant contract)
    dequant(w)       = pallas_kernels.blocks.dequantize_blocks(...) (weight contract)
Both K extents must be the same Kp (the activation quantizer pads K with zeros exactly as
the weight side does).

Power-of-two (E8M0) scales on both sides with fp8/fp4 elements: every dequantized element
is exactly a bf16 number (<= 4 significant bits, exponent well inside bf16's range for
scales >= 2**-117), so the operands are dequantized to bf16 and multiplied with f32
accumulation: the same exact products as the f32 path, at bf16 tensor-core speed. This is
also the fastest MX path on Hopper we measured (BENCHMARKS.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pallas_kernels import blocks
from pallas_kernels.act_quant.reference import dequantize_rows


def scaled_matmul_reference(
    xv, xs, wv, ws, *, w_block_k: int, w_block_n: int, layout: str, w_element_dtype,
    n: int, out_dtype,
) -> jax.Array:
    x = dequantize_rows(xv, xs)
    facts = dict(element_dtype=w_element_dtype, block_k=w_block_k, block_n=w_block_n,
                 layout=layout, n=n)
    if exact_in_bf16(xv.dtype, xs.dtype, w_element_dtype, ws.dtype):
        # The weight in bf16 in its stored order (no transposed f32 copy; XLA folds the
        # swap into the dot): `blocks.dequantize_as`.
        w = blocks.dequantize_as(wv, ws, dtype=jnp.bfloat16, **facts)
        w = w if layout == "kn" else w.T
        y = jnp.dot(x.astype(jnp.bfloat16), w, preferred_element_type=jnp.float32)
    else:
        w = blocks.dequantize_blocks(wv, ws, **facts)
        y = jnp.dot(x, w, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)
    return y.astype(out_dtype)


def exact_in_bf16(x_dtype, xs_dtype, w_element_dtype, ws_dtype) -> bool:
    """True when both dequantized operands are exactly representable in bf16."""
    e8m0 = jnp.dtype(jnp.float8_e8m0fnu)
    small = (jnp.dtype(jnp.float8_e4m3fn), jnp.dtype(jnp.float8_e5m2),
             jnp.dtype(jnp.float4_e2m1fn))
    return (jnp.dtype(xs_dtype) == e8m0 and jnp.dtype(ws_dtype) == e8m0
            and jnp.dtype(x_dtype) in small and jnp.dtype(w_element_dtype) in small)
