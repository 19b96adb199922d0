"""The Mosaic GPU scaled GEMM (`scaled_gemm/mosaic_kernel.py`) vs the jnp reference on the
*same* quantized operands.

CPU: the per-token x per-channel recipes run in Mosaic GPU interpret mode (odd M, several
CTA tiles along M and N, a persistent grid smaller than the tile count, bf16 and f32 out);
the promotion kernels (fp8 1x128 x 128x128, int8 1x32 x 32x32, MXFP8) are lowered natively
for CUDA here, which runs Mosaic GPU's layout inference and wgmma operand checks (jax
0.11.2's interpreter cannot store into a WGMMA accumulator, which the promotion does every
step). GPU (`-m gpu`): every 8-bit recipe natively, real widths, and `impl="auto"` picking it beyond
decode sizes.

Tolerances (relative Frobenius error vs the f32 reference): as `test_scaled_gemm.py`
(interpret f32: 2e-7 * sqrt(K); bf16 out 4e-3; GPU int8 1e-5, exact int32 partial sums;
GPU fp8 2e-3, Hopper's reduced-precision fp8 accumulator).
"""

from __future__ import annotations

import math
import unittest.mock
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.scaled_gemm import api
from pallas_kernels.scaled_gemm.cases import RECIPES, make_operands
from pallas_kernels.scaled_gemm.config import choose_mosaic_config
from pallas_kernels.scaled_gemm.mosaic_kernel import MosaicGemmConfig, unsupported_reason

BY_NAME = {r.name: r for r in RECIPES}
EIGHT_BIT = [r for r in RECIPES if r.name != "mxfp4-a8"]
SMALL = MosaicGemmConfig(tile_m=64, tile_n=64, tile_k=64, wg_dim="n", max_concurrent_steps=2)


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.all(np.isfinite(a)), "non-finite output"
    return np.linalg.norm(a - b) / np.linalg.norm(b)


def _operands(name, m, k, n, seed=0):
    key = jax.random.PRNGKey(zlib.crc32(f"{name}/{m}/{k}/{n}/{seed}".encode()))
    return make_operands(key, BY_NAME[name], m, k, n, "nk")


@pytest.mark.parametrize("config", [
    SMALL,
    MosaicGemmConfig(tile_m=64, tile_n=64, tile_k=128, wg_dim="m", max_concurrent_steps=3,
                     grid_minor_dim="m", grid_tile_width=2, epi_tile_n=32),
], ids=["wg-n", "wg-m"])
@pytest.mark.parametrize("name", ["w8a8-int8", "w8a8-fp8"])
def test_epilogue_matches_reference(name, config, interpret):
    # 200 rows: 2-4 CTA tiles along M, the last one padded; 256 columns: 2-4 along N; the
    # persistent grid (2 CTAs in interpret mode) walks several tiles each.
    m, k, n = 200, 256, 256
    xv, xs, wv, ws, kw = _operands(name, m, k, n)
    ref = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="xla", **kw)
    out = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="mosaic",
                            interpret=interpret, config=config, **kw)
    assert out.shape == (m, n) and out.dtype == jnp.float32
    assert rel(out, ref) <= 2e-7 * math.sqrt(k)
    out16 = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.bfloat16, impl="mosaic",
                              interpret=interpret, config=config, **kw)
    assert out16.dtype == jnp.bfloat16 and rel(out16.astype(jnp.float32), ref) <= 4e-3


@pytest.mark.parametrize("name", ["fp8-block", "int8-block", "mxfp8", "w8a8-fp8"])
def test_lowers_for_cuda_without_a_gpu(name):
    """Native Pallas -> Mosaic GPU lowering for CUDA on this machine, with the default
    (chosen) tiles: what is left for the GPU is the PTX compile."""
    xv, xs, wv, ws, kw = _operands(name, 300, 1024, 512)
    with unittest.mock.patch.object(api, "_on_gpu", lambda: True):
        assert api.unsupported_reason(xv, xs, wv, ws, impl="mosaic", **kw) is None
        f = jax.jit(lambda *a: api.scaled_matmul(*a, impl="mosaic", **kw))
        text = f.trace(xv, xs, wv, ws).lower(lowering_platforms=("cuda",)).as_text()
    assert "mosaic_gpu" in text


def test_unsupported_reasons():
    xv, xs, wv, ws, kw = _operands("fp8-block", 64, 256, 256)
    why = api.unsupported_reason(xv, xs, wv, ws, impl="mosaic", interpret=True, **kw)
    assert "interpret mode" in why  # promotion is native only
    why = api.unsupported_reason(xv, xs, wv, ws, impl="mosaic", interpret=True, config=SMALL, **kw)
    assert "G=128 must equal tile_k=64" in why
    why = api.unsupported_reason(xv, xs, wv, ws, impl="mosaic", interpret=False, **kw)
    if jax.default_backend() != "gpu":
        assert "needs a GPU" in why
    r = BY_NAME["mxfp4-a8"]
    xv, xs, wv, ws, kw = make_operands(jax.random.PRNGKey(0), r, 64, 256, 256)
    assert "8-bit weights" in api.unsupported_reason(xv, xs, wv, ws, impl="mosaic",
                                                     interpret=True, **kw)
    xv, xs, wv, ws, kw = make_operands(jax.random.PRNGKey(0), BY_NAME["w8a8-int8"], 64, 256,
                                       256, "kn")
    assert "'nk' layout" in api.unsupported_reason(xv, xs, wv, ws, impl="mosaic",
                                                   interpret=True, **kw)
    with pytest.raises(ValueError, match="takes a MosaicGemmConfig"):
        xv, xs, wv, ws, kw = _operands("w8a8-int8", 64, 256, 256)
        api.scaled_matmul(xv, xs, wv, ws, impl="mosaic", interpret=True,
                          config=api.GemmConfig(), **kw)
    # Kernel-level facts.
    big = MosaicGemmConfig(tile_m=128, tile_n=128, wg_dim="n", max_concurrent_steps=5)
    assert "shared memory" in unsupported_reason(element_dtype=jnp.int8, kp=1024, np_=1024,
                                                 groups=1, config=big)
    assert "multiple of the CTA tile's N=256" in unsupported_reason(
        element_dtype=jnp.int8, kp=1024, np_=384, groups=1, config=SMALL.__class__(
            tile_m=64, tile_n=128, wg_dim="n"))
    assert "scale groups" in unsupported_reason(element_dtype=jnp.int8, kp=1024, np_=256,
                                                groups=4, config=SMALL)
    assert "element dtype" in unsupported_reason(element_dtype=jnp.bfloat16, kp=1024,
                                                 np_=256, groups=1, config=SMALL)
    with pytest.raises(ValueError, match="tile_k=48"):
        MosaicGemmConfig(tile_k=48)
    with pytest.raises(ValueError, match="wg_dim='k'"):
        MosaicGemmConfig(wg_dim="k")


@pytest.mark.parametrize("kp,np_,group_k,want", [
    (8192, 8192, 8192, (128, 128, 128, "n")),   # epilogue: 128x256 CTA tiles
    (7168, 2112, 7168, (128, 64, 128, "m")),    # N = 33 x 64: narrower tiles, stacked along M
    (7168, 7168, 128, (64, 128, 128, "m")),     # 1x128 x 128x128 promotion
    (4096, 4096, 32, (64, 128, 32, "n")),       # 1x32 groups
    (4096, 384, 32, (64, 128, 32, "m")),        # 384 = 3 x 128
])
def test_chosen_tiles_fit_the_shape(kp, np_, group_k, want):
    c = choose_mosaic_config(kp=kp, np_=np_, group_k=group_k)
    assert (c.tile_m, c.tile_n, c.tile_k, c.wg_dim) == want
    assert unsupported_reason(element_dtype=jnp.float8_e4m3fn, kp=kp, np_=np_,
                              groups=max(1, kp // group_k) if group_k < kp else 1,
                              config=c) is None


# ---------------------------------------------------------------------------------------
# GPU: natively, real widths, odd M, jit; auto picks it.

GPU_TOL = {"int8": 1e-5, "fp8": 2e-3}


@pytest.mark.gpu
@pytest.mark.parametrize("m,k,n", [(257, 2048, 1024), (77, 4096, 14336), (1000, 7168, 2112)])
@pytest.mark.parametrize("recipe", EIGHT_BIT, ids=[r.name for r in EIGHT_BIT])
def test_mosaic_matches_reference_gpu(recipe, m, k, n):
    np_ = -(-n // recipe.w_block_n) * recipe.w_block_n
    xv, xs, wv, ws, kw = _operands(recipe.name, m, k, np_)
    kw["n"] = n
    ref = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="xla", **kw)
    why = api.unsupported_reason(xv, xs, wv, ws, impl="mosaic", **kw)
    assert why is None, why
    f = jax.jit(lambda *a: api.scaled_matmul(*a, out_dtype=jnp.float32, impl="mosaic", **kw))
    tol = GPU_TOL["int8" if recipe.x_dtype == jnp.int8 else "fp8"]
    assert rel(f(xv, xs, wv, ws), ref) <= tol


@pytest.mark.gpu
@pytest.mark.parametrize("m", [16, 512])
@pytest.mark.parametrize("name", ["w8a8-int8", "w8a8-fp8", "fp8-block", "int8-block"])
def test_auto_picks_mosaic_on_hopper_gpu_beyond_decode(name, m):
    xv, xs, wv, ws, kw = _operands(name, m, 1024, 1024)
    f = jax.jit(lambda *a: api.scaled_matmul(*a, impl="auto", **kw))
    text = f.lower(xv, xs, wv, ws).as_text()
    if m <= api.TRITON_MAX_M:  # decode sizes: Triton's small-M tiles
        assert "triton" in text and "mosaic_gpu" not in text
    else:
        assert "mosaic_gpu" in text and "triton" not in text
    ref = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="xla", **kw)
    assert rel(f(xv, xs, wv, ws).astype(jnp.float32), ref) <= 4e-3
