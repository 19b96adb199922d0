"""qmatmul on the XLA path: its semantics, dispatch rules and errors (kernels: tests/pallas_kernels)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lowbit_jax as lj


def rand(*s, seed=0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(s), dtype)


@pytest.mark.parametrize("recipe", sorted(lj.RECIPES))
def test_xla_path_is_dequantize_then_dot(recipe):
    r = lj.get_recipe(recipe)
    w = rand(96, 40, seed=1)
    q = lj.quantize(w, r.weight, layout=r.layout, act=r.act)
    x = rand(2, 3, 96, seed=2)
    y = lj.qmatmul(x, q, impl="xla")
    assert y.shape == (2, 3, 40) and y.dtype == jnp.float32
    xf = x.reshape(-1, 96)
    if r.act is not None:
        xf = lj.dequantize(lj.quantize(xf, r.act, axis=-1))
    want = (xf @ lj.dequantize(q)).reshape(2, 3, 40)
    np.testing.assert_allclose(np.asarray(y), np.asarray(want), rtol=1e-5, atol=1e-4)
    # ... and close to the float product (quantization error only).
    rel = float(jnp.linalg.norm(y - x @ w) / jnp.linalg.norm(x @ w))
    assert rel < 0.2, rel


def test_float_weight_and_out_dtype():
    x, w = rand(4, 8, dtype=jnp.bfloat16), rand(8, 5, seed=1, dtype=jnp.bfloat16)
    y = lj.qmatmul(x, w)
    assert y.dtype == jnp.bfloat16
    assert lj.qmatmul(x, w, out_dtype=jnp.float32).dtype == jnp.float32
    with pytest.raises(ValueError, match="needs a QTensor weight"):
        lj.qmatmul(x, w, act="act-int8-token")


def test_act_override_and_mismatch():
    q = lj.quantize(rand(256, 16), "fp8-block128")
    with pytest.raises(ValueError, match="fp8-block128.*act-int8-token"):
        lj.qmatmul(rand(2, 256), q, act="act-int8-token", impl="xla")
    y = lj.qmatmul(rand(2, 256), q, act="act-fp8-1x128", impl="xla")
    assert y.shape == (2, 16)


def test_bad_calls():
    q = lj.quantize(rand(64, 16), "int8")
    with pytest.raises(ValueError, match="K=64"):
        lj.qmatmul(rand(2, 63), q)
    with pytest.raises(ValueError, match="impl='cuda'"):
        lj.qmatmul(rand(2, 64), q, impl="cuda")
    with pytest.raises(TypeError, match="int32"):
        lj.qmatmul(jnp.ones((2, 64), jnp.int32), q)
    qa = lj.quantize(rand(16, 64), "int8", axis=-1)
    with pytest.raises(ValueError, match="axis -2"):
        lj.qmatmul(rand(2, 64), qa)


def test_jit_and_vmap_over_x():
    q = lj.quantize(rand(128, 32), "int4-g32")
    x = rand(5, 128, seed=3)
    f = jax.jit(lambda x, q: lj.qmatmul(x, q, impl="xla"))
    np.testing.assert_allclose(np.asarray(f(x, q)), np.asarray(lj.qmatmul(x, q, impl="xla")), rtol=1e-5, atol=1e-5)
    yv = jax.vmap(lambda xi: lj.qmatmul(xi, q, impl="xla"))(x)
    np.testing.assert_allclose(np.asarray(yv), np.asarray(f(x, q)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [256, 200])  # 200: K not a multiple of any kernel K step
@pytest.mark.parametrize("recipe", sorted(lj.RECIPES))
def test_pallas_interpret_path_matches_xla_for_every_recipe(recipe, k, interpret):
    """The QTensor -> kernel mapping (not the kernels themselves: tests/pallas_kernels)."""
    r = lj.get_recipe(recipe)
    q = lj.quantize(rand(k, 96, seed=4), r.weight, layout=r.layout, act=r.act)
    x = rand(3, k, seed=5, dtype=jnp.bfloat16)
    ref = lj.qmatmul(x, q, impl="xla", out_dtype=jnp.float32)
    y = lj.qmatmul(x, q, impl="pallas", interpret=interpret, out_dtype=jnp.float32)
    # bf16 x and f32 accumulation on both sides; kernels may round dequantized weights to
    # bf16 before the dot (2**-8 relative per element, ~1e-3 over the sum).
    rel = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
    assert rel < 4e-3, rel


def test_explicit_pallas_without_gpu_or_interpret_raises_with_reason():
    if jax.default_backend() == "gpu":
        pytest.skip("on a GPU the kernel runs")
    q = lj.quantize(rand(128, 32), "int4-g128")
    with pytest.raises(lj.KernelUnavailableError, match="int4-g128.*interpret"):
        lj.qmatmul(rand(2, 128, dtype=jnp.bfloat16), q, impl="pallas")


@pytest.mark.parametrize("recipe", ["w8a16", "w4a16", "w4a16-uint4"])
def test_mosaic_weight_only_path(recipe, interpret):
    """impl="mosaic" (Mosaic GPU wgmma kernel) through qmatmul, in GPU interpret mode on CPU."""
    r = lj.get_recipe(recipe)
    q = lj.quantize(rand(256, 128, seed=6), r.weight, layout="kn")  # the kernel's layout
    x = rand(70, 256, seed=7, dtype=jnp.bfloat16)
    ref = lj.qmatmul(x, q, impl="xla", out_dtype=jnp.float32)
    y = lj.qmatmul(x, q, impl="mosaic", interpret=interpret, out_dtype=jnp.float32)
    rel = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
    assert rel < 4e-3, rel  # group-scaled tiles are rounded to bf16 before the wgmma
    # The recipe's own layout ("mma") takes the register-operand kernel: native only.
    q = lj.quantize(rand(256, 128, seed=6), r.weight, layout=r.layout)
    if interpret:
        with pytest.raises(lj.KernelUnavailableError, match="interpret mode"):
            lj.qmatmul(x, q, impl="mosaic", interpret=True)
        return
    ref = lj.qmatmul(x, q, impl="xla", out_dtype=jnp.float32)
    y = lj.qmatmul(x, q, impl="mosaic", out_dtype=jnp.float32)
    rel = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
    assert rel < 4e-3, rel


@pytest.mark.parametrize("recipe", ["w8a8-int8", "w8a8-fp8"])
def test_mosaic_scaled_path(recipe, interpret):
    """impl="mosaic" with an activation format: x quantized on the fly, then the
    warp-specialized Mosaic GPU GEMM (GPU interpret mode on CPU)."""
    r = lj.get_recipe(recipe)
    q = lj.quantize(rand(256, 256, seed=8), r.weight, layout=r.layout, act=r.act)
    x = rand(70, 256, seed=9, dtype=jnp.bfloat16)
    ref = lj.qmatmul(x, q, impl="xla", out_dtype=jnp.float32)
    y = lj.qmatmul(x, q, impl="mosaic", interpret=interpret, out_dtype=jnp.float32)
    rel = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
    assert rel < 1e-5, rel  # same quantized operands; f32 summation order only
    if interpret:
        blocks = lj.quantize(rand(256, 256), "fp8-block128", layout="nk", act="act-fp8-1x128")
        with pytest.raises(lj.KernelUnavailableError, match="interpret mode"):
            lj.qmatmul(x, blocks, impl="mosaic", interpret=True)


@pytest.mark.parametrize("w_fmt", ["nvfp4", "uint4-g32"])
def test_two_level_and_asymmetric_weights_do_not_pair_with_activations(w_fmt):
    with pytest.raises(ValueError, match=f"{w_fmt}.*single-level symmetric"):
        lj.quantize(rand(64, 16), w_fmt, act="act-mxfp8")
    with pytest.raises(ValueError, match="does not line up"):
        lj.quantize(rand(64, 16), "int4-g32", act="act-fp8-token")


# (K, N) of real layers the other GPU tests do not cover (they run 576x1536, 4096x14336,
# 14336x4096 and 8192x28672): SmolLM2-135M's q/o, k/v, MLP down and LM head, Llama-3-8B's
# q/o and k/v, Llama-3-70B's MLP down; and Llama-3-8B's vocabulary (128256) at SmolLM2's K
# (its 4096x128256 head in f32, 2 GB, ran 8 xdist workers out of an H100's memory).
MODEL_LAYERS = ((576, 576), (576, 192), (1536, 576), (576, 49152), (4096, 4096), (4096, 1024),
                (576, 128256), (28672, 8192))
WEIGHT_ONLY = sorted(r for r in lj.RECIPES if lj.get_recipe(r).act is None)


@pytest.mark.gpu
@pytest.mark.parametrize("kn", MODEL_LAYERS, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("recipe", WEIGHT_ONLY)
def test_weight_only_recipes_at_model_widths_gpu(recipe, kn):
    """Each weight-only recipe's stored weight at a real layer's widths, through qmatmul:
    decode (x (1, K), and (2, 3, K) with batch axes) on the Triton GEMV, prefill ((2, 512, K))
    on the Mosaic GPU register-operand kernel; "auto" takes the same kernel (bit-identical),
    except at prefill on grids of too few CTA tiles, where it takes the XLA route (the weight
    dequantized to bf16, then XLA's GEMM: bit-identical to that)."""
    from pallas_kernels.weight_only import mosaic_kernel
    from pallas_kernels.weight_only.reference import weight_only_matmul_reference
    r = lj.get_recipe(recipe)
    k, n = kn
    key = jax.random.key(k + n)
    q = lj.quantize(jax.random.normal(key, (k, n), jnp.float32), r.weight, layout=r.layout)
    for lead, impl in (((1,), "triton"), ((2, 3), "triton"), ((2, 512), "mosaic")):
        x = jax.random.normal(jax.random.fold_in(key, len(lead)), (*lead, k), jnp.float32)
        x = x.astype(jnp.bfloat16)
        ref = lj.qmatmul(x, q, impl="xla", out_dtype=jnp.float32)
        y = lj.qmatmul(x, q, impl=impl, out_dtype=jnp.float32)
        assert y.shape == (*lead, n) and bool(jnp.all(jnp.isfinite(y)))
        rel = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
        assert rel < 4e-3, (lead, impl, rel)
        auto = lj.qmatmul(x, q, out_dtype=jnp.float32)
        x2 = x.reshape(-1, k)
        tiles = mosaic_kernel.register_lhs_tiles(q.fmt.element_dtype, n, x2.shape[0])
        if impl == "mosaic" and tiles < mosaic_kernel.REGISTER_LHS_MIN_TILES:
            bk, bn = q.block_kn
            y = weight_only_matmul_reference(
                x2, q.values, q.scales, q.zeros, q.global_scale, element_dtype=q.fmt.element_dtype,
                block_k=bk, block_n=bn, layout=q.layout, k=k, n=n, out_dtype=jnp.float32,
                convert=True, materialize=True).reshape(*lead, n)
        np.testing.assert_array_equal(np.asarray(auto), np.asarray(y), err_msg=f"{lead} auto")
