"""Triton launches lower to jaxlib's typed-FFI target (`pallas_kernels.triton_ffi`), which XLA
can capture in CUDA graphs; the legacy custom call jax-triton 0.3.1 emits cannot be."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import triton_ffi
from pallas_kernels.scaled_gemm import api as scaled_api
from pallas_kernels.scaled_gemm.cases import RECIPES, make_operands
from pallas_kernels.weight_only import testing
from pallas_kernels.weight_only.api import weight_only_matmul


def _targets(lowered) -> tuple[bool, bool]:
    """(FFI target called, legacy target called) in the StableHLO text."""
    text = lowered.as_text()
    return (re.search(rf"custom_call @{triton_ffi.FFI_TARGET}\(", text) is not None,
            re.search(rf"custom_call @{triton_ffi.LEGACY_TARGET}\(", text) is not None)


@pytest.mark.gpu
def test_weight_only_launch_is_an_ffi_call():
    assert triton_ffi.ffi_target_reason() is None
    w = testing.random_weight(jax.random.key(1), testing.CASES_BY_LABEL["int4-g128"], 512, 256, "mma")
    x = jax.random.normal(jax.random.key(2), (3, 512), jnp.bfloat16)
    f = jax.jit(lambda x: weight_only_matmul(x, **w, impl="triton", out_dtype=jnp.float32))
    assert _targets(f.lower(x)) == (True, False)
    ref = weight_only_matmul(x, **w, impl="xla", out_dtype=jnp.float32)
    np.testing.assert_allclose(np.asarray(f(x)), np.asarray(ref), rtol=1e-3,
                               atol=1e-3 * float(jnp.abs(ref).max()))


@pytest.mark.gpu
def test_scaled_gemm_launch_is_an_ffi_call():
    r = next(r for r in RECIPES if r.name == "w8a8-int8")
    xv, xs, wv, ws, kw = make_operands(jax.random.key(3), r, 64, 256, 128)
    f = jax.jit(lambda *a: scaled_api.scaled_matmul(*a, out_dtype=jnp.float32, impl="triton", **kw))
    assert _targets(f.lower(xv, xs, wv, ws)) == (True, False)
    ref = scaled_api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="xla", **kw)
    np.testing.assert_allclose(np.asarray(f(xv, xs, wv, ws)), np.asarray(ref), rtol=1e-5,
                               atol=1e-5 * float(jnp.abs(ref).max()))
