"""`qmatmul`: `x @ w` for a float or quantized `w`, dispatched to a kernel or to XLA.

This is where formats meet kernels: a QTensor's format becomes the static facts a kernel
takes (element dtype, scale dtype, block shape, layout), and nothing below this floor
sees a format name.

Paths
    weight-only   w is a QTensor with no activation format: `x @ dequantize(w)` with x in
                  bf16/f16/f32 (`pallas_kernels.weight_only`).
    scaled        w carries (or the call passes) an activation format: x is quantized on the
                  fly along K, then `dequantize(xq) @ dequantize(w)`
                  (`pallas_kernels.scaled_gemm`, with `pallas_kernels.act_quant`).
    float         w is a plain array: `x @ w`.

impl
    "xla"     the kernels' plain-jnp references (dequantize, then dot in f32): the
              semantics `dequantize(quantize(x, act, axis=-1)) @ dequantize(w)`, the test
              oracle and the fallback.
    "pallas"  the Pallas kernel; raises `KernelUnavailableError` with the reason when it
              cannot run (never a silent fallback).
    "triton"  the Triton kernel (through jax-triton), GPU only; raises likewise.
    "mosaic"  the Mosaic GPU (wgmma) kernels: weight-only (int8/int4/uint4/e4m3/e2m1
              codes; MX and NVFP4 blocks, g32/g64 groups) and the warp-specialized 8-bit
              scaled GEMM (W8A8, fp8 / int8 blocks).
    "auto"    the fastest path that can run, logging its reason once when that is not a
              kernel: on GPU, weight-only products with M >= 512 (prefill) go to the Mosaic
              GPU register-operand kernel for the weights it takes (int8, e4m3, int4,
              uint4, e2m1 codes; scales over K, whole K steps or 16-64 columns; 4-bit up to
              M=2048), else to XLA (the weight dequantized to x's dtype in one pass, then
              XLA's GEMM), and scaled products to the Mosaic GPU GEMM where it runs, else
              Triton; otherwise the kernel, else "xla".
`interpret=True` runs Pallas kernels in interpret mode (CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lowbit_jax.formats import QuantFormat, check_pair, get_format
from lowbit_jax.qtensor import QTensor

IMPLS = ("auto", "pallas", "triton", "mosaic", "xla")


class KernelUnavailableError(ValueError):
    """An explicitly requested kernel cannot run for these inputs on this machine."""


def _flatten(x: jax.Array, k: int) -> tuple[jax.Array, tuple[int, ...]]:
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"x.shape={x.shape}: last axis must equal the weight's K={k}")
    lead = x.shape[:-1]
    return x.reshape(-1, k), lead


def qmatmul(
    x: jax.Array,
    w: jax.Array | QTensor,
    *,
    act: QuantFormat | str | None = None,
    impl: str = "auto",
    out_dtype=None,
    interpret: bool = False,
) -> jax.Array:
    """Returns `x @ w` with `w` (K, N) float or quantized; x is (..., K), result (..., N).

    Args:
      act: activation format for x (default: the one recorded in `w.act`, if any).
      impl: "auto" | "pallas" | "triton" | "mosaic" | "xla" (see the module docstring).
      out_dtype: result dtype (default x.dtype).
      interpret: run Pallas kernels in interpret mode (for CPU).
    """
    if impl not in IMPLS:
        raise ValueError(f"{impl=} must be one of {IMPLS}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"qmatmul needs floating-point x, got dtype={x.dtype}")
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    if not isinstance(w, QTensor):
        if act is not None:
            raise ValueError(f"act={act!r} given for a float weight: activation quantization needs a QTensor weight")
        return jnp.matmul(x, w, preferred_element_type=jnp.float32).astype(out_dtype)
    if w.ndim != 2 or w.axis != -2:
        raise ValueError(f"qmatmul needs a (K, N) weight quantized along axis -2, got shape={w.shape}, axis={w.axis}")
    act = w.act if act is None else get_format(act)
    if act is not None:
        check_pair(w.fmt, act)
    k, n = w.kn_shape
    x2, lead = _flatten(x, k)
    y = _dispatch(x2, w, act, impl, out_dtype, interpret)
    return y.reshape(*lead, n)


def _kernel_call(x2, w: QTensor, act, impl, out_dtype, interpret):
    k, n = w.kn_shape
    bk, bn = w.block_kn
    if act is None:
        from pallas_kernels.weight_only import api as wo
        return wo.weight_only_matmul(
            x2, w.values, w.scales, w.zeros, w.global_scale, element_dtype=w.fmt.element_dtype,
            block_k=bk, block_n=bn, layout=w.layout, k=k, n=n, out_dtype=out_dtype, impl=impl,
            interpret=interpret)
    from pallas_kernels.scaled_gemm import api as sg
    xv, xs = sg.quantize_activations(
        x2, element_dtype=act.element_dtype, block_k=act.block[0], scale_dtype=act.scale_dtype,
        mx_round="up" if act.scale_rule == "mx-up" else "floor",
        impl=impl if impl in ("xla", "pallas") else "auto", interpret=interpret)
    return sg.scaled_matmul(
        xv, xs, w.values, w.scales, x_block_k=act.block[0] or xv.shape[-1], w_block_k=bk,
        w_block_n=bn, layout=w.layout, w_element_dtype=w.fmt.element_dtype, k=k, n=n,
        out_dtype=out_dtype, impl=impl, interpret=interpret)


def _dispatch(x2, w: QTensor, act, impl, out_dtype, interpret):
    try:
        return _kernel_call(x2, w, act, impl, out_dtype, interpret)
    except (ValueError, NotImplementedError, ImportError) as e:
        if impl in ("pallas", "triton", "mosaic"):
            raise KernelUnavailableError(f"impl={impl!r} cannot run for {w.fmt.name}"
                                         f"{'' if act is None else ' x ' + act.name}: {e}") from e
        raise
