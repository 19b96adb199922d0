"""The weight-only Triton kernels run by Triton's CPU interpreter, against the reference.

jax-triton needs a GPU, but Triton itself ships an interpreter (`TRITON_INTERPRET=1`) that
executes a kernel's body with numpy, one program at a time. This module feeds it the very
launch the GPU path builds (`triton_kernel.triton_launch`: the same kernel, arrays, grid and
constexprs) and compares the result with the jnp reference on the same stored weights, so CI
checks the kernels' indexing, masking, split-K, scale modes and x layouts on every
arrangement without a GPU. What the interpreter cannot run is inline PTX: the launches here
use the portable decode (`fast_decode=False`); the PTX upcasts are checked by
`tests/pallas_kernels/test_weight_only_kgemv.py` and compiled for sm_90a by `ptx_report`.

Two adaptations, both local to this module:
    * the interpreter reads tensors through a slice of torch.Tensor's API (data_ptr,
      untyped_storage, ...); `_HostArray` provides it over a numpy array (no torch needed);
    * its `tl.dot` multiplies bf16 operands as their raw uint16 bits (triton 3.6.0); the
      operands are widened to f32 first (exact), which is what a bf16 dot computes.

`TRITON_INTERPRET=1` must be set before the kernels are defined (`triton.jit` reads it at
decoration time), so the checks run in their own process:

    TRITON_INTERPRET=1 python -m pallas_kernels.weight_only.triton_interpret [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

from pallas_kernels.weight_only.config import TileConfig

# (label of the case, TileConfig fields); every kernel and x/scale mode of the Triton path.
_T = dict(block_m=16, block_n=32, split_k=2)
CASES = tuple(
    (label, name, fields)
    for label in ("int8", "int4-g32", "int4-g128", "uint4-g128", "fp8", "mxfp4", "nvfp4")
    for name, fields in (
        ("dot-x0", dict(_T, block_k=16, x_mode=0)),
        ("dot-x1", dict(_T, block_k=16, x_mode=1)),
        ("dot-x2-pre", dict(_T, block_k=64, x_mode=2, pre_scale=True)),
        ("swapab-x1", dict(_T, kernel="swapab", block_k=16, x_mode=1)),
        ("swapab-x3", dict(_T, kernel="swapab", block_k=16, x_mode=3)),
        ("swapab-x2-pre", dict(_T, kernel="swapab", block_k=64, x_mode=2, pre_scale=True, split_k=1)),
        ("swapab-x3-pre", dict(_T, kernel="swapab", block_k=64, x_mode=3, pre_scale=True, split_k=1)),
        ("gemv", dict(_T, kernel="gemv", block_m=1, block_k=16)),
        ("fma", dict(_T, kernel="fma", block_m=4, block_k=16)),
        ("kgemv", dict(_T, kernel="kgemv", block_m=4, block_k=16, unroll=3)),
        ("kgemv-span", dict(_T, kernel="kgemv", block_m=1, block_k=64)),  # tiles across g16/g32 blocks
    )
)
M, K, N = 5, 300, 96  # odd M, K off every tile, N off the tile


class _Storage:
    def __init__(self, t):
        self.t = t

    def data_ptr(self):
        return self.t.arr.ctypes.data

    def cpu(self):
        return self

    def copy_(self, other):  # host and "device" memory are the same
        pass


class _HostArray:
    """What the interpreter calls on a tensor argument, over a numpy array."""

    def __init__(self, arr=None):
        self.arr = arr

    dtype = property(lambda self: self.arr.dtype)

    def data_ptr(self):
        return self.arr.ctypes.data

    def untyped_storage(self):
        return _Storage(self)

    def storage_offset(self):
        return 0

    def size(self):
        return self.arr.shape

    def stride(self):
        return tuple(s // self.arr.itemsize for s in self.arr.strides)

    def new_empty(self, *args, **kwargs):
        return _HostArray()

    def set_(self, storage, offset, size, stride):
        self.arr = storage.t.arr
        return self


def _patch_bf16_dot():
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_dot, "_widens_bf16", False):
        return
    dot = builder.create_dot

    def create_dot(self, a, b, d, *args):
        def widen(h):
            if h.dtype.scalar == tl.bfloat16:  # stored as uint16 bits: the f32 with those top bits
                return interpreter.TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)
            return h
        return dot(self, widen(a), widen(b), d, *args)

    create_dot._widens_bf16 = True
    builder.create_dot = create_dot


def run_launch(kernel, arrays, out_shape, grid, params) -> np.ndarray:
    """One jax-triton launch (see `triton_kernel.triton_launch`) in the interpreter."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("set TRITON_INTERPRET=1 before importing the kernels (triton.jit reads it)")
    _patch_bf16_dot()
    args = [_HostArray(np.ascontiguousarray(np.asarray(a))) for a in arrays]
    out = _HostArray(np.zeros(out_shape.shape, out_shape.dtype))
    kernel[grid](*args, out, **params)
    return out.arr


def check(label: str, fields: dict, layout: str, seed: int = 0) -> dict:
    """Kernel vs reference on one case: {'excess': max(|out - ref| - bound) (<= 0 passes), ...}."""
    import jax
    import jax.numpy as jnp

    from pallas_kernels import blocks
    from pallas_kernels.weight_only import testing, triton_kernel
    from pallas_kernels.weight_only.reference import weight_only_matmul_reference

    case = testing.CASES_BY_LABEL[label]
    w = testing.random_weight(jax.random.key(seed), case, K, N, layout=layout)
    spec = testing.weight_spec(w)
    cfg = TileConfig(**fields, fast_decode=False)
    if (why := cfg.check(spec)) is not None:
        return dict(skipped=why)
    x = jax.random.normal(jax.random.key(seed + 1), (M, K), jnp.float32).astype(jnp.bfloat16)
    t0 = time.perf_counter()
    kernel, arrays, out_shape, grid, params = triton_kernel.triton_launch(
        x, w["values"], w["scales"], w["zeros"], w["global_scale"], spec, cfg, jnp.float32)
    out = run_launch(kernel, arrays, out_shape, grid, params)
    if cfg.split_k > 1:
        out = out.sum(axis=0)
    static = {a: w[a] for a in ("element_dtype", "block_k", "block_n", "layout", "k", "n")}
    ref = np.asarray(weight_only_matmul_reference(x, w["values"], w["scales"], w["zeros"], w["global_scale"],
                                                  out_dtype=jnp.float32, **static))
    wf = blocks.dequantize_blocks(w["values"], w["scales"], w["zeros"], w["global_scale"], **static)
    rel, abs_ = testing.tolerance(x, wf, jnp.float32, K)
    excess = float(np.max(np.abs(out - ref) - (rel * np.abs(ref) + abs_)))
    return dict(kernel=cfg.kernel, excess=excess, finite=bool(np.all(np.isfinite(out))),
                seconds=time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON object {case id: result} on stdout")
    a = p.parse_args(argv)
    results = {}
    for label, name, fields in CASES:
        for layout in ("kn", "nk"):
            cid = f"{label}-{name}-{layout}"
            try:
                results[cid] = check(label, fields, layout)
            except Exception as e:  # noqa: BLE001 - reported per case, the test fails it
                results[cid] = dict(error=f"{type(e).__name__}: {e}"[:500])
            if not a.json:
                print(cid, results[cid], flush=True)
    if a.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
