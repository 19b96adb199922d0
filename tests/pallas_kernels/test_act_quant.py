"""Activation quantizer: Pallas kernel (interpreted on CPU, native on GPU) vs the jnp
reference, plus properties of the reference rules (hypothesis)."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pallas_kernels.act_quant import kernel as aq_kernel
from pallas_kernels.act_quant import reference as ref
from pallas_kernels.scaled_gemm import api

_HERE = pathlib.Path(__file__).resolve()
if not any((p / "conftest.py").exists() for p in (_HERE.parent, _HERE.parents[1])):
    @pytest.fixture
    def interpret():
        """Fallback until tests/conftest.py provides it: interpret off-GPU."""
        return jax.default_backend() != "gpu"

E4M3, E8M0, I8 = jnp.float8_e4m3fn, jnp.float8_e8m0fnu, jnp.int8
F32, BF16 = jnp.float32, jnp.bfloat16
# (element, block_k, scale dtype, mx_round): per-token int8/fp8, DeepSeek 1x128, JetFire
# 1x32 (f32 and bf16 scales), MXFP8 with both rounding rules.
CASES = [
    (I8, None, F32, "floor"), (E4M3, None, F32, "floor"), (E4M3, 128, F32, "floor"),
    (I8, 32, F32, "floor"), (I8, 32, BF16, "floor"), (E4M3, 32, E8M0, "floor"),
    (E4M3, 32, E8M0, "up"),
]
IDS = [f"{jnp.dtype(e).name}-{bk}-{jnp.dtype(s).name}-{r}" for e, bk, s, r in CASES]


def _f32(a):
    return np.asarray(a.astype(jnp.float32))


def _x(seed, shape, scale=3.0, dtype=BF16):
    x = jax.random.normal(jax.random.PRNGKey(seed), shape, F32) * scale
    # a few large outliers so blocks differ in range
    x = x.at[..., 5].mul(50.0)
    return x.astype(dtype)


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("m,k", [(13, 200), (6, 384)])
def test_kernel_matches_reference(case, m, k, interpret):
    e, bk, s, r = case
    x = _x(m * k, (m, k))
    x = x.at[1].set(0)                                  # an all-zero row
    v1, s1 = ref.quantize_rows(x, element_dtype=e, block_k=bk, scale_dtype=s, mx_round=r)
    v2, s2 = aq_kernel.quantize_rows_pallas(x, element_dtype=e, block_k=bk, scale_dtype=s,
                                            mx_round=r, block_m=4, chunk_k=128,
                                            interpret=interpret)
    assert v2.dtype == v1.dtype and s2.dtype == s1.dtype
    assert v1.shape == v2.shape == (m, ref.padded_k(k, bk))
    assert s1.shape == s2.shape == (m, 1 if bk is None else v1.shape[1] // bk)
    np.testing.assert_array_equal(_f32(v1), _f32(v2))
    np.testing.assert_array_equal(_f32(s1), _f32(s2))


@pytest.mark.parametrize("case", CASES[:1] + CASES[5:6], ids=IDS[:1] + IDS[5:6])
def test_public_api_batch_dims(case, interpret):
    e, bk, s, r = case
    x = _x(1, (2, 3, 96))
    v, sc = api.quantize_activations(x, element_dtype=e, block_k=bk, scale_dtype=s,
                                     mx_round=r, impl="pallas" if interpret or
                                     jax.default_backend() == "gpu" else "xla",
                                     interpret=interpret)
    v0, s0 = ref.quantize_rows(x, element_dtype=e, block_k=bk, scale_dtype=s, mx_round=r)
    np.testing.assert_array_equal(_f32(v), _f32(v0))
    np.testing.assert_array_equal(_f32(sc), _f32(s0))


def test_pallas_impl_off_gpu_without_interpret_raises():
    if jax.default_backend() == "gpu":
        pytest.skip("on GPU the native kernel runs")
    with pytest.raises(ValueError, match="interpret=False"):
        api.quantize_activations(jnp.ones((2, 64)), element_dtype=I8, block_k=None,
                                 scale_dtype=F32, impl="pallas")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_zero_block_is_finite(case):
    e, bk, s, r = case
    v, sc = ref.quantize_rows(jnp.zeros((2, 64)), element_dtype=e, block_k=bk,
                              scale_dtype=s, mx_round=r)
    assert np.all(np.isfinite(_f32(sc))) and np.all(_f32(v) == 0)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_max_magnitude_hits_the_grid_edge(case):
    e, bk, s, r = case
    x = _x(7, (4, 128), dtype=F32)
    v, sc = ref.quantize_rows(x, element_dtype=e, block_k=bk, scale_dtype=s, mx_round=r)
    vmax = np.abs(_f32(v)).max(axis=-1)
    if s == E8M0:
        assert np.all(vmax <= 448) and np.all(vmax >= 224)   # within one binade of the top
    elif s == BF16:
        assert np.all(np.abs(vmax - 127) <= 1)               # rounded scale moves it <= 1
    else:
        assert np.all(vmax == ref.ELEMENT_MAX[jnp.dtype(e)])


finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=40, deadline=None)
@given(st.lists(finite, min_size=32, max_size=32), st.sampled_from(range(len(CASES))))
def test_round_trip_within_half_a_step(vals, ci):
    e, bk, s, r = CASES[ci]
    x = jnp.asarray(vals, F32)[None]
    v, sc = ref.quantize_rows(x, element_dtype=e, block_k=bk, scale_dtype=s, mx_round=r)
    d = _f32(ref.dequantize_rows(v, sc, k=32))[0]
    xs = np.asarray(x)[0]
    scale = np.repeat(_f32(sc)[0], 32 if bk is None else bk)[:32]
    if jnp.dtype(e) == jnp.int8:
        bound = 0.5 * scale * (1 + 1e-6) + (scale if s == BF16 else 0)  # bf16 scale may clip
    elif s == E8M0 and r == "floor":
        bound = np.maximum(np.abs(xs) * 2.0**-4, scale * 2.0**-10) + np.maximum(
            np.abs(xs) - 448 * scale, 0)                                 # saturation allowed
    else:
        bound = np.maximum(np.abs(xs) * 2.0**-4, scale * 2.0**-10) * (1 + 1e-6)
    assert np.all(np.abs(d - xs) <= bound + 1e-30)


@settings(max_examples=30, deadline=None)
@given(st.lists(finite, min_size=64, max_size=64))
def test_int8_is_round_half_even_of_x_over_scale(vals):
    x = jnp.asarray(vals, F32)[None]
    v, sc = ref.quantize_rows(x, element_dtype=I8, block_k=32, scale_dtype=F32)
    s = jnp.repeat(sc, 32, axis=-1)
    want = jnp.clip(jnp.round(x / jnp.where(s == 0, 1, s)), -127, 127)
    np.testing.assert_array_equal(_f32(v), np.asarray(want))


def test_mx_exponent_rules():
    amax = jnp.asarray([1.0, 448.0, 449.0, 1e-30, 0.0, 3.5, 3.51], F32)
    floor = np.asarray(ref.mx_exponent(amax, E4M3, "floor"))
    up = np.asarray(ref.mx_exponent(amax, E4M3, "up"))
    np.testing.assert_array_equal(floor, [-8, 0, 0, -108, -127, -7, -7])
    np.testing.assert_array_equal(up, [-8, 0, 1, -108, -127, -7, -6])


def test_fp8_saturates_instead_of_nan():
    x = jnp.asarray([[1e30, -1e30, 1.0, 0.5]], F32)
    v, _ = ref.quantize_rows(x, element_dtype=E4M3, block_k=None, scale_dtype=BF16)
    assert np.all(np.isfinite(_f32(v)))
