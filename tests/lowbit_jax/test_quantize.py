"""quantize/dequantize numerics: error bounds, MX exponents, zero blocks, padding, packing."""

import math
import zlib

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lowbit_jax as lj
from pallas_kernels import blocks

WEIGHT_FORMATS = sorted(n for n, f in lj.FORMATS.items() if f.kind == "weight")
ACT_FORMATS = sorted(n for n, f in lj.FORMATS.items() if f.kind == "activation")


def element_scales(q: lj.QTensor) -> np.ndarray:
    """The scale (times the global scale) that applies to each logical element, as f32."""
    bk, bn = q.block_kn
    blk = (bk, bn) if q.layout == "kn" else (bn, bk)
    s = blocks.expand_blocks(q.scales.astype(jnp.float32), blk, (-2, -1))
    if q.global_scale is not None:
        s = s * q.global_scale[..., None, None]
    if q.layout == "nk":
        s = jnp.swapaxes(s, -1, -2)
    k, n = q.kn_shape
    s = s[..., :k, :n]
    if q.axis == -1:
        s = jnp.swapaxes(s, -1, -2)
    return np.asarray(s)


def error_bound(w: np.ndarray, q: lj.QTensor) -> np.ndarray:
    """Half a step of the element grid at each element's magnitude, plus any saturation."""
    s = element_scales(q)
    ed = q.fmt.element_dtype
    emax = blocks.ELEMENT_MAX[ed]
    if q.zeros is not None:  # asymmetric: half a step anywhere in [min, max]
        return 0.5 * s * (1 + 1e-5) + 1e-6 * np.abs(w)
    y = np.divide(np.abs(w), s, out=np.zeros_like(w), where=s > 0)  # s == 0 only for zero blocks
    if jnp.issubdtype(ed, jnp.integer):
        half = 0.5 * np.ones_like(y)
    elif ed == jnp.float8_e4m3fn:
        half = 0.5 * np.exp2(np.floor(np.log2(np.maximum(y, 2.0**-6))) - 3)
    else:  # e2m1: spacing .5 below 2, 1 below 4, 2 above
        half = np.where(y < 2, 0.25, np.where(y < 4, 0.5, 1.0))
    clip = np.maximum(y - emax, 0)
    # f32 rounding of y = |w| / s (and of the scale itself) can move y by a few ulps, i.e.
    # by ~y * 2**-23 of a step: at int8's y ~ 127 that is ~1.5e-5 of a step.
    half = half + y * 2.0**-21
    floor = 0.0
    if q.global_scale is not None:
        # NVFP4: a block whose scale (amax_b / 6 / g) is below half the smallest E4M3
        # subnormal (2**-10) stores scale 0 and flushes to zero: |w| < 6 * 2**-10 * g.
        floor = 6 * 2.0**-10 * float(np.max(np.asarray(q.global_scale)))
    return np.maximum(s * (half + clip) * (1 + 1e-5), floor) + 1e-30


def check_roundtrip(w, fmt, axis=-2, layout=None):
    q = lj.quantize(w, fmt, axis=axis, layout=layout).validate()
    d = np.asarray(lj.dequantize(q))
    assert d.shape == w.shape
    err = np.abs(d - np.asarray(w, np.float32))
    bound = error_bound(np.asarray(w, np.float32), q)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), f"{fmt}: |err|={err[worst]} > bound={bound[worst]} at {worst}"
    return q, d


@pytest.mark.parametrize("fmt", WEIGHT_FORMATS)
@pytest.mark.parametrize("layout", ["kn", "nk"])
def test_weight_roundtrip_within_half_a_step(fmt, layout):
    rng = np.random.default_rng(zlib.crc32(f"{fmt}/{layout}".encode()))
    w = (rng.standard_normal((2, 192, 136)) * rng.uniform(0.01, 10)).astype(np.float32)
    w[0, :, 3] *= 50  # an outlier channel
    check_roundtrip(jnp.asarray(w), fmt, layout=layout)


@pytest.mark.parametrize("fmt", ACT_FORMATS)
def test_activation_roundtrip(fmt):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 200)).astype(np.float32) * np.exp(rng.standard_normal((5, 1)))
    q, _ = check_roundtrip(jnp.asarray(x), fmt, axis=-1)
    assert q.layout == "nk" and q.values.shape[0] == 5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fmt=st.sampled_from(WEIGHT_FORMATS),
    k=st.integers(1, 300),
    n=st.integers(1, 40),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_roundtrip_any_shape(fmt, k, n, scale, seed):
    w = np.random.default_rng(seed).standard_normal((k, n)).astype(np.float32) * scale
    check_roundtrip(jnp.asarray(w), fmt)


@settings(max_examples=25, deadline=None)
@given(w=hnp.arrays(np.float32, (64, 8), elements=st.floats(-1e4, 1e4, width=32)))
def test_property_arbitrary_values(w):
    for fmt in ("int8", "int4-g32", "uint4-g32", "nvfp4", "mxfp4-up", "fp8"):
        check_roundtrip(jnp.asarray(w), fmt)


@pytest.mark.parametrize("fmt", WEIGHT_FORMATS + ACT_FORMATS)
def test_zero_blocks_give_finite_scales_and_exact_zeros(fmt):
    w = np.random.default_rng(2).standard_normal((256, 64)).astype(np.float32)
    w[:128] = 0.0
    w[:, :32] = 0.0
    f = lj.get_format(fmt)
    axis = -1 if f.kind == "activation" else -2
    q = lj.quantize(jnp.asarray(w if axis == -2 else w.T), f, axis=axis)
    assert np.all(np.isfinite(np.asarray(q.scales, np.float32)))
    d = np.asarray(lj.dequantize(q))
    d = d if axis == -2 else d.T
    assert np.all(d[:128] == 0) and np.all(d[:, :32] == 0)
    z = lj.dequantize(lj.quantize(jnp.zeros((64, 32)), f, axis=axis))
    assert np.all(np.asarray(z) == 0)


# Hand-computed OCP MX shared exponents: floor(log2(amax)) - emax_elem (E4M3: 8, E2M1: 2),
# and the round-up variant ceil(log2(amax / max_elem)).
MX_TABLE = [
    ("mxfp8", 1.0, -8), ("mxfp8", 448.0, 0), ("mxfp8", 511.0, 0), ("mxfp8", 512.0, 1),
    ("mxfp8", 0.75, -9), ("mxfp8", 2.0**-120, -127), ("mxfp8", 2.0**120, 112),
    ("mxfp4", 6.0, 0), ("mxfp4", 1.0, -2), ("mxfp4", 3.9, -1), ("mxfp4", 8.0, 1),
    ("mxfp8-up", 448.0, 0), ("mxfp8-up", 449.0, 1), ("mxfp8-up", 1.0, -8),
    ("mxfp4-up", 6.0, 0), ("mxfp4-up", 6.1, 1), ("mxfp4-up", 1.0, -2), ("mxfp4-up", 1.6, -1),
]


@pytest.mark.parametrize("fmt,amax,exp", MX_TABLE)
def test_mx_shared_exponent_table(fmt, amax, exp):
    w = np.zeros((32, 2), np.float32)
    w[5, 0] = amax
    w[7, 0] = -amax / 3
    q = lj.quantize(jnp.asarray(w), fmt, layout="kn")
    bits = np.asarray(jax.lax.bitcast_convert_type(q.scales, jnp.uint8)).astype(int) - 127
    assert bits[0, 0] == exp and bits[0, 1] == 0  # the all-zero column: scale 1


def test_mx_floor_clips_and_up_does_not():
    w = np.zeros((32, 1), np.float32)
    w[0] = 7.5  # E2M1 grid with floor rule: exp 0 -> 7.5 saturates to 6
    d_floor = np.asarray(lj.dequantize(lj.quantize(jnp.asarray(w), "mxfp4")))
    d_up = np.asarray(lj.dequantize(lj.quantize(jnp.asarray(w), "mxfp4-up")))
    assert d_floor[0, 0] == 6.0 and d_up[0, 0] == 8.0


def test_nvfp4_two_level_scales():
    w = np.random.default_rng(3).standard_normal((64, 16)).astype(np.float32)
    q = lj.quantize(jnp.asarray(w), "nvfp4", layout="kn")
    g = float(q.global_scale)
    assert math.isclose(g, np.abs(w).max() / (6 * 448), rel_tol=1e-6)
    amax_b = np.abs(w.reshape(4, 16, 16)).max(axis=1)
    want = (amax_b / 6 / g).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(q.scales, np.float32), want)


def test_integer_rounding_is_half_to_even():
    w = np.array([[2.5], [1.5], [-0.5], [127.0]], np.float32)  # absmax 127 -> scale 1
    q = lj.quantize(jnp.asarray(w), "int8", layout="kn")
    np.testing.assert_array_equal(np.asarray(q.values)[:, 0], [2, 2, 0, 127])


def test_fp8_saturates_instead_of_overflowing():
    w = np.array([[1e30], [-3.0]], np.float32)
    q = lj.quantize(jnp.asarray(w), "fp8-tensor", layout="kn")
    assert np.all(np.isfinite(np.asarray(q.values, np.float32)))
    assert np.asarray(q.values, np.float32)[0, 0] == 448.0


@pytest.mark.parametrize("fmt,k,n", [("int4-g128", 576, 192), ("fp8-block128", 192, 576),
                                     ("int8-block32", 100, 33), ("nvfp4", 30, 7), ("uint4-g64", 577, 3)])
def test_padding_keeps_logical_shape(fmt, k, n):
    w = np.random.default_rng(4).standard_normal((k, n)).astype(np.float32)
    q, d = check_roundtrip(jnp.asarray(w), fmt)
    kp, np_ = q.padded_kn
    bk, bn = q.block_kn
    assert kp % bk == 0 and np_ % bn == 0 and kp >= k and np_ >= n
    assert d.shape == (k, n)


def test_nbytes_counts_half_a_byte_per_4bit_element():
    w = jnp.ones((4096, 4096), jnp.float32)
    q = lj.quantize(w, "int4-g128", layout="kn")
    assert q.values.dtype == jnp.uint8 and q.values.shape == (2048, 4096)
    assert q.nbytes == 4096 * 4096 // 2 + 32 * 4096 * 4
    assert lj.quantize(w, "mxfp4").nbytes == 4096 * 4096 // 2 + 128 * 4096
    assert lj.quantize(w, "int8").nbytes == 4096 * 4096 + 4096 * 4


def test_packing_matches_ml_dtypes_int4_and_e2m1():
    rng = np.random.default_rng(5)
    codes = rng.integers(-8, 8, size=(64, 6)).astype(np.int8)
    packed = blocks.pack_nibbles(jnp.asarray(codes.astype(ml_dtypes.int4).view(np.uint8) & 0xF), axis=0)
    assert packed.shape == (32, 6)
    p = np.asarray(packed)
    np.testing.assert_array_equal(p & 0xF, (codes[0::2].astype(np.uint8) & 0xF))
    np.testing.assert_array_equal(p >> 4, (codes[1::2].astype(np.uint8) & 0xF))
    np.testing.assert_array_equal(
        np.asarray(blocks.codes_to_float(blocks.unpack_nibbles(packed, 0), jnp.int4)),
        codes.astype(ml_dtypes.int4).astype(np.float32))
    # Every E2M1 code: our encoder agrees with ml_dtypes' bit pattern, the LUT with its value.
    all_fp4 = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn)
    vals = all_fp4.astype(np.float32)
    mine = np.asarray(blocks.float_to_codes(jnp.asarray(vals), jnp.float4_e2m1fn))
    nonneg_zero = ~((vals == 0) & np.signbit(vals))  # -0.0 encodes as +0.0 (same value)
    np.testing.assert_array_equal(mine[nonneg_zero], np.arange(16)[nonneg_zero])
    np.testing.assert_array_equal(blocks.E2M1_LUT, vals)


def test_quantize_of_stored_int4_matches_jnp_int4():
    w = np.random.default_rng(6).standard_normal((64, 8)).astype(np.float32)
    q = lj.quantize(jnp.asarray(w), "int4-g32", layout="kn")
    s = element_scales(q)
    want = np.clip(np.round(w / s), -7, 7).astype(ml_dtypes.int4)
    got = lj.qtensor.numpy_codes(q)
    np.testing.assert_array_equal(got.astype(np.int8), want.astype(np.int8))
    np.testing.assert_array_equal(np.asarray(jnp.asarray(want, jnp.int4)).astype(np.int8), got.astype(np.int8))


def test_quantize_is_jittable_and_batched():
    w = jnp.asarray(np.random.default_rng(7).standard_normal((3, 128, 32)), jnp.float32)
    q = jax.jit(lambda w: lj.quantize(w, "mxfp4", layout="kn"))(w)
    assert isinstance(q, lj.QTensor) and q.shape == (3, 128, 32)
    d = jax.jit(lj.dequantize)(q)
    np.testing.assert_array_equal(np.asarray(d[1]), np.asarray(lj.dequantize(lj.quantize(w[1], "mxfp4"))))
    qv = jax.vmap(lambda w: lj.quantize(w, "int8", layout="kn"))(w)
    assert qv.values.shape == (3, 128, 32)


def test_bf16_scales_variant():
    f = lj.QuantFormat(name="int4-g64-bf16", element_dtype=jnp.int4, scale_dtype=jnp.bfloat16, block=(64, 1))
    check_roundtrip(jnp.asarray(np.random.default_rng(8).standard_normal((128, 16)), jnp.float32), f)
    fu = lj.QuantFormat(name="uint4-g64-bf16", element_dtype=jnp.uint4, scale_dtype=jnp.bfloat16,
                        block=(64, 1), scale_rule="minmax")
    q = lj.quantize(jnp.ones((64, 4)) * jnp.arange(64.0)[:, None], fu)
    assert q.zeros.dtype == jnp.bfloat16


@pytest.mark.parametrize("bad,exc,msg", [
    (lambda: lj.quantize(jnp.ones((4, 4), jnp.int32), "int8"), TypeError, "floating-point.*int32"),
    (lambda: lj.quantize(jnp.ones((4, 4), jnp.complex64), "int8"), TypeError, "complex64"),
    (lambda: lj.quantize(jnp.ones((4, 4)), "int8", axis=2), ValueError, "axis=2 is out of range"),
    (lambda: lj.quantize(jnp.ones((4, 4)), "int8", axis=-3), ValueError, "axis=-3 is out of range"),
    (lambda: lj.quantize(jnp.ones((2, 4, 4)), "int8", axis=0), ValueError, "last two"),
    (lambda: lj.quantize(jnp.ones((0, 4)), "int8"), ValueError, "zero-sized"),
    (lambda: lj.quantize(jnp.ones((4,)), "int8"), ValueError, "rank >= 2"),
    (lambda: lj.quantize(jnp.ones((4, 4)), "nope"), lj.UnknownFormatError, "valid formats"),
    (lambda: lj.quantize(jnp.ones((4, 4)), "int8", layout="mk"), ValueError, "layout='mk'"),
    (lambda: lj.dequantize(jnp.ones(3)), TypeError, "QTensor"),
])
def test_bad_input(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        bad()


def test_validate_catches_inconsistent_tensors():
    q = lj.quantize(jnp.ones((64, 8)), "int4-g32")
    import dataclasses
    with pytest.raises(ValueError, match="scales.dtype"):
        dataclasses.replace(q, scales=q.scales.astype(jnp.bfloat16)).validate()
    with pytest.raises(ValueError, match="scales.shape"):
        dataclasses.replace(q, scales=q.scales[:1]).validate()
    with pytest.raises(ValueError, match="values.dtype"):
        dataclasses.replace(q, values=q.values.astype(jnp.int8)).validate()


@pytest.mark.parametrize("fmt", WEIGHT_FORMATS)
def test_tiny_tensors_stay_finite(fmt):
    """Found by hypothesis: an NVFP4 tensor scale below the smallest normal f32 gave NaN."""
    w = np.zeros((64, 8), np.float32)
    w[0, 0] = np.finfo(np.float32).tiny
    w[5, 3] = -3 * np.finfo(np.float32).tiny
    check_roundtrip(jnp.asarray(w), fmt)
    assert np.all(np.isfinite(np.asarray(lj.dequantize(lj.quantize(jnp.asarray(w), fmt)))))


def test_weights_are_stored_k_major_by_default():
    """The GPU kernels' fast layouts (BENCHMARKS.md) are the defaults: "nk" for arrays and
    recipes, "mma" for the weight-only recipes the tensor-core decode GEMV serves."""
    w = jnp.ones((64, 8))
    q = lj.quantize(w, "int4-g32")
    assert q.layout == "nk" and q.values.shape == (8, 32)
    mma = {r.name for r in lj.RECIPES.values() if r.layout == "mma"}
    assert mma == {"w8a16", "w4a16", "w4a16-uint4", "w8a16-fp8", "mxfp4", "nvfp4"}
    assert all(r.layout == "nk" for r in lj.RECIPES.values() if r.name not in mma)
    with pytest.raises(ValueError, match="layout 'mma'"):  # weight-only only
        lj.quantize(w, "int8", layout="mma", act="act-int8-token")
    with pytest.raises(ValueError, match="layout 'mma'"):
        lj.Recipe(name="x", weight=lj.get_format("int8"), act=lj.get_format("act-int8-token"), layout="mma")
    with pytest.raises(ValueError, match="layout 'mma' needs int4 scale blocks of whole 128-long chunks"):
        lj.quantize(w, "int4-g32", layout="mma")
    np.testing.assert_array_equal(np.asarray(lj.dequantize(q)), np.asarray(lj.dequantize(lj.quantize(w, "int4-g32", layout="kn"))))


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("layout,axis", [("kn", -2), ("nk", -2), ("nk", -1), ("mma", -2)])
@pytest.mark.parametrize("fmt", WEIGHT_FORMATS)
def test_dequantize_to_16_bits_is_the_f32_weight_rounded_once(fmt, layout, axis, dtype):
    """`dequantize(q, bf16/f16)` (the word-wise pass of `blocks.dequantize_as` for "nk" and
    "mma") equals the f32 dequantization rounded to that dtype, bit for bit."""
    if layout == "mma" and blocks.mma_format_reason(
            lj.FORMATS[fmt].element_dtype, lj.FORMATS[fmt].block[0], lj.FORMATS[fmt].scale_dtype,
            lj.FORMATS[fmt].block[1]) is not None:
        pytest.skip(f"{fmt} has no 'mma' layout")
    rng = np.random.default_rng(zlib.crc32(f"{fmt}/{layout}/{axis}".encode()))
    w = jnp.asarray(rng.standard_normal((2, 256, 72)).astype(np.float32) * 3)
    q = lj.quantize(w, fmt, axis=axis, layout=layout)
    got = lj.dequantize(q, dtype)
    want = lj.dequantize(q, jnp.float32).astype(dtype)
    assert got.shape == w.shape and got.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(jax.lax.bitcast_convert_type(got, jnp.uint16),
                                  jax.lax.bitcast_convert_type(want, jnp.uint16))
