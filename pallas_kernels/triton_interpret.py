"""The Triton kernels run by Triton's CPU interpreter, against their references.

jax-triton needs a GPU, but Triton itself ships an interpreter (`TRITON_INTERPRET=1`) that
executes a kernel's body with numpy, one program at a time. This module feeds it the very
launch the GPU path builds (`weight_only.triton_kernel.triton_launch`,
`scaled_gemm.triton_call.triton_launch`: the same kernel, arrays, grid and constexprs) and
compares the result with the jnp reference on the same stored operands, so CI checks the
kernels' indexing, masking, split-K, scale modes and layouts on every arrangement without a
GPU. What the interpreter cannot run: inline PTX (weight-only launches here use the portable
decode, `fast_decode=False`; the PTX upcasts are checked by
`tests/pallas_kernels/test_weight_only_kgemv.py` and compiled for sm_90a by `ptx_report`)
and `tl.dot_scaled` (the scaled GEMM's MX mode: its MX recipes run here in promote mode,
the same math through plain dots).

Two adaptations, both local to this module:
    * the interpreter reads tensors through a slice of torch.Tensor's API (data_ptr,
      untyped_storage, ...); `_HostArray` provides it over a numpy array (no torch needed);
    * its `tl.dot` and float multiply use bf16 operands as their raw uint16 bits (triton
      3.6.0); the operands are widened to f32 first (exact), which is what a bf16 dot
      computes, and a bf16 product is rounded back to bf16 (`_patch_bf16`).

`TRITON_INTERPRET=1` must be set before the kernels are defined (`triton.jit` reads it at
decoration time), so the checks run in their own process:

    TRITON_INTERPRET=1 python -m pallas_kernels.triton_interpret [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from pallas_kernels.weight_only.config import TileConfig

# Weight-only: (case label, name, TileConfig fields); every kernel and x/scale mode.
_T = dict(block_m=16, block_n=32, split_k=2)
WEIGHT_ONLY_CASES = tuple(
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
        ("kgemv-even", dict(_T, kernel="kgemv", block_m=1, block_k=16, split_k=1)),  # no masks (EVEN)
    )
)
M, K, N = 5, 300, 96  # weight-only: odd M, K off every tile, N off the tile

# Scaled GEMM: (recipe name, GemmConfig fields); per-channel recipes in the epilogue mode,
# block recipes promoting per K group (one or two groups per step), MX through promote.
_K32 = dict(block_m=16, block_n=32, block_k=32, group_m=2)
SCALED_CASES = tuple((recipe, "k32", _K32) for recipe in (
    "w8a8-int8", "w8a8-fp8", "fp8-block", "int8-block", "mxfp8", "mxfp4-a8")) + (
    ("fp8-block", "gps2-k128", dict(block_m=16, block_n=64, block_k=128, group_m=2, groups_per_step=2)),
    ("int8-block", "gps2-k32", dict(_K32, block_m=32, block_n=16, groups_per_step=2)),
    ("mxfp8", "gps2-k32", dict(_K32, groups_per_step=2)),
)
SM, SK, SN = 5, 256, 256  # scaled GEMM: odd M (rows wrap), several N tiles, 2..8 K groups


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


def _patch_bf16():
    """bf16 tensors are stored as uint16 bits in the interpreter, and its `tl.dot` and float
    multiply use those integers as numbers (triton 3.6.0): both widen bf16 operands to f32
    first (exact); the multiply rounds its product back to bf16 (round to nearest even, as
    the GPU's `mul.rn.bf16`)."""
    import ml_dtypes
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder.create_dot, "_widens_bf16", False):
        return
    dot, fmul = builder.create_dot, builder.create_fmul

    def widen(h):
        if h.dtype.scalar == tl.bfloat16:  # stored as uint16 bits: the f32 with those top bits
            return interpreter.TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)
        return h

    def create_dot(self, a, b, d, *args):
        return dot(self, widen(a), widen(b), d, *args)

    def create_fmul(self, lhs, rhs):
        if lhs.dtype.scalar != tl.bfloat16:
            return fmul(self, lhs, rhs)
        prod = widen(lhs).data * widen(rhs).data
        return interpreter.TensorHandle(prod.astype(ml_dtypes.bfloat16).view(np.uint16), lhs.dtype.scalar)

    create_dot._widens_bf16 = True
    builder.create_dot, builder.create_fmul = create_dot, create_fmul


def run_launch(kernel, arrays, out_shape, grid, params) -> np.ndarray:
    """One jax-triton launch (see `triton_kernel.triton_launch`) in the interpreter."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("set TRITON_INTERPRET=1 before importing the kernels (triton.jit reads it)")
    _patch_bf16()
    args = [_HostArray(np.ascontiguousarray(np.asarray(a))) for a in arrays]
    out = _HostArray(np.zeros(out_shape.shape, out_shape.dtype))
    kernel[grid](*args, out, **params)
    return out.arr


def check_weight_only(label: str, fields: dict, layout: str, seed: int = 0) -> dict:
    """Kernel vs reference on one case: {'excess': max(|out - ref| - bound) (<= 0 passes), ...}."""
    import jax
    import jax.numpy as jnp

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
    rel, abs_ = testing.tolerance(x, w, jnp.float32)
    excess = float(np.max(np.abs(out - ref) - (rel * np.abs(ref) + abs_)))
    return dict(kernel=cfg.kernel, excess=excess, finite=bool(np.all(np.isfinite(out))),
                seconds=time.perf_counter() - t0)


def check_scaled(recipe_name: str, fields: dict, layout: str, seed: int = 0) -> dict:
    """Scaled GEMM vs reference: {'excess': max |out - ref| - 1e-4 max |ref| (<= 0 passes)}."""
    import jax
    import jax.numpy as jnp

    from pallas_kernels.scaled_gemm import api, cases, triton_call
    from pallas_kernels.scaled_gemm.config import GemmConfig

    recipe = next(r for r in cases.RECIPES if r.name == recipe_name)
    xv, xs, wv, ws, kw = cases.make_operands(jax.random.key(seed), recipe, SM, SK, SN, layout)
    cfg = GemmConfig(**fields, mode="promote" if recipe.x_block_k is not None else "auto")
    if (why := api.triton_config_reason(xv, xs, wv, ws, config=cfg, **kw)) is not None:
        return dict(skipped=why)
    t0 = time.perf_counter()
    kernel, arrays, out_shape, grid, params = triton_call.triton_launch(
        xv, xs, wv, ws, x_block_k=recipe.x_block_k or SK, w_block_k=kw["w_block_k"],
        w_block_n=kw["w_block_n"], layout=layout, four_bit=recipe.w_dtype == cases.F4, n=SN,
        out_dtype=jnp.float32, config=cfg)
    out = run_launch(kernel, arrays, out_shape, grid, params)
    ref = np.asarray(api.scaled_matmul(xv, xs, wv, ws, impl="xla", out_dtype=jnp.float32, **kw))
    excess = float(np.max(np.abs(out - ref)) - 1e-4 * np.max(np.abs(ref)))
    return dict(kernel=f"scaled/{triton_call.kernel_mode(cfg, recipe.x_block_k or SK, kw['w_block_k'], SK)}",
                excess=excess, finite=bool(np.all(np.isfinite(out))), seconds=time.perf_counter() - t0)


def all_cases():
    """(case id, check function, args) for every case of both kernel families."""
    for label, name, fields in WEIGHT_ONLY_CASES:
        for layout in ("kn", "nk"):
            yield f"{label}-{name}-{layout}", check_weight_only, (label, fields, layout)
    for recipe, name, fields in SCALED_CASES:
        for layout in ("kn", "nk"):
            yield f"scaled-{recipe}-{name}-{layout}", check_scaled, (recipe, fields, layout)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON object {case id: result} on stdout")
    a = p.parse_args(argv)
    results = {}
    for cid, check, args in all_cases():
        try:
            results[cid] = check(*args)
        except Exception as e:  # noqa: BLE001 - reported per case, the test fails it
            results[cid] = dict(error=f"{type(e).__name__}: {e}"[:500])
        if not a.json:
            print(cid, results[cid], flush=True)
    if a.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
