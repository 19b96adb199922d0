"""JAX wrapper of the Triton scaled GEMM (`jax_triton.triton_call`); GPU machines only.

`triton_launch` builds one launch (kernel, arrays, out_shape, grid, constexprs) from the
plain arrays; `scaled_matmul_triton` hands it to jax-triton, and
`pallas_kernels.triton_interpret` runs the same launch in Triton's CPU interpreter (CI).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from pallas_kernels.scaled_gemm import triton_kernel as tk
from pallas_kernels.scaled_gemm.config import GemmConfig

E8M0 = jnp.dtype(jnp.float8_e8m0fnu)
_MODES = {"epilogue": tk.MODE_EPILOGUE, "promote": tk.MODE_PROMOTE,
          "dot_scaled": tk.MODE_DOT_SCALED}


def _as_bits(s):
    """E8M0 scales travel as their uint8 bits (Triton has no e8m0 pointer type)."""
    if jnp.dtype(s.dtype) == E8M0:
        return jax.lax.bitcast_convert_type(s, jnp.uint8), True
    return s, False


def kernel_mode(config: GemmConfig, x_block_k: int, w_block_k: int, kp: int) -> str:
    """The config's mode, "auto" resolved from the block shapes."""
    if config.mode != "auto":
        return config.mode
    return "epilogue" if min(x_block_k, w_block_k) >= kp else "promote"


def triton_launch(xv, xs, wv, ws, *, x_block_k, w_block_k, w_block_n, layout, four_bit, n,
                  out_dtype, config: GemmConfig):
    """(kernel, input arrays, out_shape, grid, constexprs) of one scaled-GEMM launch."""
    m, kp = xv.shape
    np_ = wv.shape[0] if layout == "nk" else wv.shape[1]
    xs, x_e8m0 = _as_bits(xs)
    ws, w_e8m0 = _as_bits(ws)
    mode = kernel_mode(config, x_block_k, w_block_k, kp)
    grid = (pl_cdiv(m, config.block_m) * pl_cdiv(n, config.block_n),)
    params = dict(
        M=m, N=n, KP=kp, NP=np_, GX=x_block_k, GW=w_block_k, BNW=w_block_n,
        W_NK=layout == "nk", W_FP4=four_bit, X_E8M0=x_e8m0, W_E8M0=w_e8m0,
        ACC_INT=jnp.dtype(xv.dtype) == jnp.int8, MODE=_MODES[mode], GPS=config.groups_per_step,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, BLOCK_K=config.block_k,
        GROUP_M=config.group_m)
    return (tk.scaled_gemm_kernel, (xv, xs, wv, ws), jax.ShapeDtypeStruct((m, n), out_dtype), grid,
            params)


@functools.partial(
    jax.jit,
    static_argnames=("x_block_k", "w_block_k", "w_block_n", "layout", "four_bit", "n",
                     "out_dtype", "config"),
)
def scaled_matmul_triton(xv, xs, wv, ws, *, x_block_k, w_block_k, w_block_n, layout,
                         four_bit, n, out_dtype, config: GemmConfig):
    from pallas_kernels.triton_ffi import triton_call

    kernel, arrays, out_shape, grid, params = triton_launch(
        xv, xs, wv, ws, x_block_k=x_block_k, w_block_k=w_block_k, w_block_n=w_block_n,
        layout=layout, four_bit=four_bit, n=n, out_dtype=out_dtype, config=config)
    return triton_call(*arrays, kernel=kernel, out_shape=out_shape, grid=grid, name="scaled_gemm",
                       num_warps=config.num_warps, num_stages=config.num_stages, **params)


def pl_cdiv(a: int, b: int) -> int:
    return -(-a // b)
