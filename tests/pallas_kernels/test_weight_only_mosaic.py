"""The Mosaic GPU weight-only kernel vs the reference, on the same stored arrays.

On CPU the kernel runs in Mosaic GPU interpret mode (`interpret` fixture); the same tests
run natively on a Hopper GPU. Shapes are small but cover: M not a multiple of tile_m
(padding), several CTAs along M and N, per-channel scales (accumulator mode, with and
without zeros), groups smaller than, equal to and larger than the K step (tile mode), and
bf16 / f32 outputs.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import blocks
from pallas_kernels.weight_only import testing
from pallas_kernels.weight_only.mosaic_kernel import (
    MosaicConfig, unsupported_reason, weight_only_matmul_mosaic)
from pallas_kernels.weight_only.reference import weight_only_matmul_reference

INT8_ZEROS = dataclasses.replace(testing.CASES_BY_LABEL["int8"], label="int8-zeros", zeros=True)
INT8_G64 = dataclasses.replace(testing.CASES_BY_LABEL["int8"], label="int8-g64", block_k=64)
INT8_G128 = dataclasses.replace(testing.CASES_BY_LABEL["int8"], label="int8-g128", block_k=128)
CASES = [testing.CASES_BY_LABEL[c] for c in ("int8", "int4-g128", "uint4-g128")] + [
    INT8_ZEROS, INT8_G64]
SMALL = MosaicConfig(tile_m=64, tile_n=64, tile_k=64)
SMALL4 = MosaicConfig(tile_m=64, tile_n=64, tile_k=128)  # 4-bit: 64 decoded rows per step


def small(case):
    return SMALL4 if blocks.is_four_bit(case.element_dtype) else SMALL


def _tolerance(x, w_f32, out_dtype, k, case):
    """(rel, abs) bound on |kernel - reference| elementwise.

    rel: output rounding, half an ulp of out_dtype (doubled for margin).
    abs: in tile mode each dequantized weight is rounded to bf16 before the wgmma (relative
    error <= 2**-9 per term); per-term errors have random signs, so their sum has a standard
    deviation <= 2**-9 * sqrt(K) * rms(x) * rms(w). We allow 6 of those (the max over a few
    thousand outputs is ~4 sigma). Per channel the codes are exact in bf16 and the scale is
    applied in f32, so only f32 summation order remains (2**-20 relative per term).
    """
    eps_out = {jnp.dtype(jnp.bfloat16): 2.0**-8, jnp.dtype(jnp.float32): 2.0**-20}[jnp.dtype(out_dtype)]
    xr = float(jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)))))
    wr = float(jnp.sqrt(jnp.mean(jnp.square(w_f32))))
    per_term = 2.0**-20 if case.block_k is None else 2.0**-9
    return eps_out, 6 * per_term * math.sqrt(k) * xr * wr


def _check(case, m, k, n, config, interpret, out_dtype=jnp.bfloat16, seed=0):
    w = testing.random_weight(jax.random.key(seed), case, k, n)
    x = jax.random.normal(jax.random.key(seed + 1), (m, k), jnp.float32).astype(jnp.bfloat16)
    static = dict(element_dtype=w["element_dtype"], block_k=w["block_k"], k=k, n=n)
    ref = weight_only_matmul_reference(x, w["values"], w["scales"], w["zeros"], block_n=1,
                                       out_dtype=jnp.float32, **static)
    out = weight_only_matmul_mosaic(x, w["values"], w["scales"], w["zeros"], out_dtype=out_dtype,
                                    config=config, interpret=interpret, **static)
    assert out.shape == (m, n) and out.dtype == jnp.dtype(out_dtype)
    wf = blocks.dequantize_blocks(w["values"], w["scales"], w["zeros"], None, block_n=1,
                                  layout="kn", **static)
    rel, abs_ = _tolerance(x, wf, out_dtype, k, case)
    err = np.abs(np.asarray(out, np.float32) - np.asarray(ref))
    bound = rel * np.abs(np.asarray(ref)) + abs_
    assert np.all(err <= bound), f"{case.label}: max excess {np.max(err - bound)} (abs tol {abs_})"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label)
def test_matches_reference(case, interpret):
    # M = 70: two M tiles, the second mostly padding; N = 128: two N tiles.
    _check(case, 70, 256, 128, small(case), interpret)


@pytest.mark.parametrize("case,tile_k", [(INT8_G64, 128), (INT8_G128, 64), (INT8_G128, 128)],
                         ids=lambda v: getattr(v, "label", v))
def test_step_vs_group(case, tile_k, interpret):
    """Steps covering several groups (tile_k > block_k), lying inside one (tile_k < block_k)
    and equal to one."""
    cfg = MosaicConfig(tile_m=64, tile_n=64, tile_k=tile_k)
    _check(case, 64, 256, 64, cfg, interpret, seed=3)


@pytest.mark.parametrize("label", ["int8", "uint4-g128"])
def test_f32_out_and_larger_tiles(label, interpret):
    cfg = MosaicConfig(tile_m=128, tile_n=128, tile_k=128, max_concurrent_steps=3)
    _check(testing.CASES_BY_LABEL[label], 130, 384, 128, cfg, interpret, out_dtype=jnp.float32,
           seed=5)


def test_unsupported_reasons():
    kw = dict(block_k=128, kp=256, np_=128, config=SMALL4)
    assert unsupported_reason(element_dtype=jnp.int4, **kw) is None
    # Natively a step's decoded rows and a group's rows come in 64-row register tiles.
    assert "multiple of 64" in unsupported_reason(element_dtype=jnp.int4, block_k=128, kp=256,
                                                  np_=128, config=SMALL)
    assert "64-row" in unsupported_reason(element_dtype=jnp.uint4, block_k=32, kp=256, np_=128,
                                          config=SMALL4)
    assert "64-row" in unsupported_reason(element_dtype=jnp.int8, block_k=32, kp=256, np_=128,
                                          config=SMALL)
    assert "shared memory" in unsupported_reason(
        element_dtype=jnp.int8, block_k=1024, kp=1024, np_=512,
        config=MosaicConfig(tile_m=256, tile_n=256, tile_k=128, max_concurrent_steps=3))
    assert "element_dtype" in unsupported_reason(element_dtype=jnp.float8_e4m3fn, **kw)
    assert "tile_k" in unsupported_reason(element_dtype=jnp.int8, block_k=300, kp=300,
                                          np_=128, config=SMALL)
    assert "tile_n" in unsupported_reason(element_dtype=jnp.int8, block_k=256, kp=256,
                                          np_=96, config=SMALL)
    assert "block_n" in unsupported_reason(element_dtype=jnp.int8, block_n=128, **kw)
    with pytest.raises(ValueError, match="tile_k"):
        MosaicConfig(tile_k=48)


@pytest.mark.parametrize("case,config", [
    (testing.CASES_BY_LABEL["int8"], SMALL),
    (INT8_ZEROS, MosaicConfig()),
    (INT8_G64, MosaicConfig(tile_m=128, tile_n=256, tile_k=64)),
    (testing.CASES_BY_LABEL["int4-g128"], MosaicConfig()),
    (testing.CASES_BY_LABEL["uint4-g128"], SMALL4),
], ids=lambda v: getattr(v, "label", None) or f"{v.tile_m}x{v.tile_n}x{v.tile_k}")
def test_lowers_for_cuda_without_a_gpu(case, config):
    """The native (non-interpret) Pallas -> Mosaic GPU lowering for CUDA, run on this machine:
    layouts, transforms and wgmma operand checks are done here, so a kernel that lowers has
    only the final PTX compile left for the GPU."""
    k, n = 512, 512
    w = testing.random_weight(jax.random.key(0), case, k, n)
    static = dict(element_dtype=w["element_dtype"], block_k=w["block_k"], k=k, n=n)
    assert unsupported_reason(element_dtype=w["element_dtype"], block_k=w["block_k"], kp=k, np_=n,
                              config=config) is None
    f = jax.jit(lambda x, v, s, z: weight_only_matmul_mosaic(x, v, s, z, config=config, **static))
    x = jax.ShapeDtypeStruct((300, k), jnp.bfloat16)
    text = f.trace(x, w["values"], w["scales"], w["zeros"]).lower(lowering_platforms=("cuda",)).as_text()
    assert "mosaic_gpu" in text


# ---------------------------------------------------------------------------------------
# int8 and 4-bit weights stored "nk" or "mma": y^T = W x^T with the upcast weight tile as
# wgmma's register operand (`weight_only_matmul_register_lhs`, through the scaled GEMM's
# warp-specialized kernel). Native only: jax 0.11.2's interpreter has no register-operand
# wgmma. On CPU the native lowering is checked; on a GPU the result.

REGISTER_LHS = [  # (case, layout): per channel, grouped, with zeros, both layouts; e4m3 codes
    (testing.CASES_BY_LABEL["int8"], "nk"), (testing.CASES_BY_LABEL["int8"], "mma"),
    (INT8_ZEROS, "nk"), (INT8_G128, "mma"),
    (testing.CASES_BY_LABEL["int4-g128"], "nk"), (testing.CASES_BY_LABEL["int4-g128"], "mma"),
    (testing.CASES_BY_LABEL["uint4-g128"], "nk"), (testing.CASES_BY_LABEL["uint4-g128"], "mma"),
    (testing.CASES_BY_LABEL["fp8"], "nk"), (testing.CASES_BY_LABEL["fp8"], "mma"),
    (testing.CASES_BY_LABEL["fp8-b128x128"], "nk"),  # 128-row scale blocks, repeated per row
    # several scale groups per K step (each group's 8-column register tiles scaled apart);
    # e2m1 codes by integer ops; NVFP4's global scale folded into the scales
    (testing.CASES_BY_LABEL["int4-g32"], "nk"), (testing.CASES_BY_LABEL["uint4-g32"], "mma"),
    (testing.CASES_BY_LABEL["int4-g64"], "mma"),
    (testing.CASES_BY_LABEL["mxfp8"], "nk"), (testing.CASES_BY_LABEL["mxfp8"], "mma"),
    (testing.CASES_BY_LABEL["mxfp4"], "nk"), (testing.CASES_BY_LABEL["mxfp4"], "mma"),
    (testing.CASES_BY_LABEL["nvfp4"], "nk"), (testing.CASES_BY_LABEL["nvfp4"], "mma"),
]


def _register_lhs_id(v):
    return v.label if hasattr(v, "label") else v


def _static(w, **kw):
    return dict(element_dtype=w["element_dtype"], block_k=w["block_k"], block_n=w["block_n"],
                layout=w["layout"], k=w["k"], n=w["n"], **kw)


@pytest.mark.parametrize("case,layout", REGISTER_LHS, ids=_register_lhs_id)
def test_register_lhs_lowers_for_cuda_and_auto_takes_it_at_prefill(case, layout, monkeypatch):
    """The kernel lowers for CUDA; impl="auto" takes it at prefill where the grid has
    REGISTER_LHS_MIN_TILES CTA tiles (lowered here for a 9-tile grid, the threshold set to
    9), and not below."""
    from pallas_kernels.weight_only import api, mosaic_kernel
    monkeypatch.setattr(api, "_on_gpu", lambda: True)
    # 320 weight rows: two CTAs of 128 and one padded (rows appended by XLA)
    w = testing.random_weight(jax.random.key(0), case, 1024, 320, layout=layout)
    x = jax.ShapeDtypeStruct((600, 1024), jnp.bfloat16)  # M >= XLA_PREFILL_MIN_M: prefill
    tiles = mosaic_kernel.register_lhs_tiles(case.element_dtype, 320, 600)
    assert tiles == 9 < mosaic_kernel.REGISTER_LHS_MIN_TILES
    for impl, out_dtype, min_tiles in (("auto", None, tiles + 1), ("mosaic", jnp.bfloat16, None),
                                       ("mosaic", jnp.float32, None), ("auto", None, tiles)):
        if min_tiles is not None:
            monkeypatch.setattr(mosaic_kernel, "REGISTER_LHS_MIN_TILES", min_tiles)
        # A 16-bit y is stored transposed in the kernel; f32 takes XLA's transpose of y^T.
        f = jax.jit(lambda x, v, s, z, g: api.weight_only_matmul(
            x, v, s, z, g, impl=impl, **_static(w, out_dtype=out_dtype)))
        text = f.trace(x, w["values"], w["scales"], w["zeros"], w["global_scale"]).lower(
            lowering_platforms=("cuda",)).as_text()
        assert ("mosaic_gpu" in text) == (min_tiles != tiles + 1), (impl, min_tiles)


@pytest.mark.parametrize("label,k", [("int4-g32", 576), ("uint4-g32", 576), ("int4-g64", 576), ("int8", 200)])
def test_register_lhs_pads_nk_k_to_whole_steps(label, k, monkeypatch):
    """An "nk" K that is not a whole number of the kernel's steps (SmolLM2's 576 with 4-bit
    codes' 128-deep steps, 200 with int8's 64) is padded per call, not refused."""
    from pallas_kernels.weight_only import api
    monkeypatch.setattr(api, "_on_gpu", lambda: True)
    w = testing.random_weight(jax.random.key(0), testing.CASES_BY_LABEL[label], k, 192, layout="nk")
    x = jax.ShapeDtypeStruct((600, k), jnp.bfloat16)
    f = jax.jit(lambda x, v, s, z: api.weight_only_matmul(x, v, s, z, impl="mosaic", **_static(w)))
    text = f.trace(x, w["values"], w["scales"], w["zeros"]).lower(lowering_platforms=("cuda",)).as_text()
    assert "mosaic_gpu" in text


@pytest.mark.parametrize("edt,block_k,layout,m,np_,taken", [
    (jnp.float4_e2m1fn, 32, "mma", 2048, 4096, True), (jnp.float4_e2m1fn, 32, "mma", 2049, 4096, False),
    (jnp.int4, 128, "nk", 4096, 4096, False), (jnp.uint4, 64, "mma", 1024, 4096, True),
    (jnp.float8_e4m3fn, 32, "nk", 8192, 4096, True), (jnp.int8, 4096, "mma", 8192, 4096, True),
    (jnp.int4, 8, "nk", 1024, 4096, False),  # 16 groups per step
    (jnp.int8, 4096, "kn", 1024, 4096, False),
    # grids of CTA tiles (128 weight rows x 256 rows of x): 32 x 4, 8 x 4, 5 x 8, 8 x 16, 32 x 2
    (jnp.int8, 4096, "mma", 1024, 4001, True), (jnp.int8, 4096, "mma", 1024, 1024, False),
    (jnp.int4, 128, "mma", 2048, 576, False), (jnp.int8, 4096, "mma", 4096, 1024, True),
    (jnp.float8_e4m3fn, 14336, "mma", 512, 4096, False)], ids=str)
def test_auto_takes_register_lhs_at_prefill(edt, block_k, layout, m, np_, taken):
    """impl="auto" sends prefill to the register-operand kernel for every weight it takes,
    4-bit codes only up to REGISTER_LHS_MAX_M_4BIT rows (the route won above, H100), grids of
    at least REGISTER_LHS_MIN_TILES CTA tiles (the route won on narrower ones)."""
    from pallas_kernels.weight_only import mosaic_kernel
    assert mosaic_kernel.auto_takes_register_lhs(edt, block_k, layout, 4096, m, np_) == taken


def test_register_lhs_lowers_e4m3_with_f16_x_and_one_scale(monkeypatch):
    """e4m3 codes against f16 x (no bf16 step after the f16 upcast), and one scale for the
    whole weight (block_n = Np, repeated per row like 128x128 blocks): auto lowers to the
    Mosaic GPU kernel at prefill (its 3 x 3 grid admitted: the grid rule is tested above)."""
    from pallas_kernels.weight_only import api, mosaic_kernel
    monkeypatch.setattr(api, "_on_gpu", lambda: True)
    monkeypatch.setattr(mosaic_kernel, "REGISTER_LHS_MIN_TILES", 9)
    w = testing.random_weight(jax.random.key(0), testing.CASES_BY_LABEL["fp8"], 1024, 384, layout="nk")
    kp, np_ = w["values"].shape[1], w["values"].shape[0]
    one = dict(w, scales=w["scales"][:1, :1], block_k=kp, block_n=np_)
    x = jax.ShapeDtypeStruct((600, 1024), jnp.float16)
    for v in (w, one):
        f = jax.jit(lambda x, v_, s: api.weight_only_matmul(x, v_, s, **_static(v)))
        text = f.trace(x, v["values"], v["scales"]).lower(lowering_platforms=("cuda",)).as_text()
        assert "mosaic_gpu" in text


@pytest.mark.parametrize("edt", [jnp.int4, jnp.uint4, jnp.float4_e2m1fn], ids=str)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32], ids=str)
def test_register_lhs_decodes_every_4bit_code(edt, dtype):
    """The kernel's in-register upcast is plain jnp, so it runs here on a host array: all 16
    codes (held as int4, like the kernel's tile) against the contract's decode (uint4 as
    u - 8: its zeros carry the 8)."""
    from pallas_kernels.scaled_gemm.mosaic_kernel import E2M1_BITS_SCALE, _decode, _e2m1_bits
    codes = jnp.arange(16, dtype=jnp.uint8)
    held = jax.lax.bitcast_convert_type(blocks.pack_nibbles(codes, 0), jnp.int4).reshape(16)
    if edt == jnp.float4_e2m1fn:
        # XLA on CPU flushes bf16 subnormals (e2m1's 0.5 before the multiply): the bits in
        # numpy, whose bf16 multiply keeps them, as the GPU's does (the GPU tests check that).
        bits = np.asarray(_e2m1_bits(held)).view(jnp.bfloat16)
        got = (bits * bits.dtype.type(E2M1_BITS_SCALE)).astype(dtype).astype(np.float32)
    else:
        got = np.asarray(_decode(held, edt, dtype).astype(jnp.float32))
    want = np.asarray(blocks.codes_to_float(codes, edt)) - (8 if edt == jnp.uint4 else 0)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))  # e2m1's -0 included


@pytest.mark.parametrize("edt,block_k", [(jnp.int4, 32), (jnp.int4, 64), (jnp.uint4, 32),
                                         (jnp.float4_e2m1fn, 16), (jnp.float4_e2m1fn, 32),
                                         (jnp.float8_e4m3fn, 32)], ids=str)
def test_register_lhs_scale_groups_are_column_slices_of_a_step(edt, block_k):
    """With groups shorter than a K step the kernel scales columns [g*cols, (g+1)*cols) of
    the step's register tile by group g of the step: "mma" storage reorders the fields of
    each 32-bit word, so every slice must still hold the K offsets of exactly one group."""
    from pallas_kernels.weight_only import mosaic_kernel
    tk = mosaic_kernel.register_lhs_config(edt, jnp.bfloat16, block_k=block_k, kp=4096).tile_k
    assert mosaic_kernel.takes_register_lhs(edt, block_k, "mma", 4096) and tk > block_k
    order = blocks.stored_k_order(edt, "mma", tk)
    for g in range(tk // block_k):
        assert set(order[g * block_k:(g + 1) * block_k] // block_k) == {g}


def test_register_lhs_reasons(monkeypatch):
    from pallas_kernels.weight_only import api, mosaic_kernel
    w = testing.random_weight(jax.random.key(0), testing.CASES_BY_LABEL["uint4-g128"], 256, 256,
                              layout="mma")
    x = jnp.ones((8, 256), jnp.bfloat16)
    with pytest.raises(NotImplementedError, match="interpret mode"):
        api.weight_only_matmul(x, w["values"], w["scales"], w["zeros"], impl="mosaic",
                               interpret=True, **_static(w))
    monkeypatch.setattr(api, "_on_gpu", lambda: True)
    with pytest.raises(NotImplementedError, match="whose config is a RegisterLhsConfig"):
        api.weight_only_matmul(x, w["values"], w["scales"], w["zeros"], impl="mosaic",
                               config=SMALL4, **_static(w))
    kn = testing.random_weight(jax.random.key(0), testing.CASES_BY_LABEL["int8"], 256, 256)
    with pytest.raises(NotImplementedError, match="takes a MosaicConfig"):
        api.weight_only_matmul(x, kn["values"], kn["scales"], impl="mosaic",
                               config=mosaic_kernel.REGISTER_LHS_TILES, **_static(kn))
    kw = dict(x_dtype=jnp.bfloat16, layout="nk", kp=1024)
    assert "whole 128-deep steps" in mosaic_kernel.register_lhs_reason(
        element_dtype=jnp.int4, block_k=8, **kw)  # 16 groups per step
    assert "codes stored" in mosaic_kernel.register_lhs_reason(
        element_dtype=jnp.float4_e2m1fn, block_k=32, **dict(kw, layout="kn"))
    for edt, bk in ((jnp.uint4, 128), (jnp.int4, 64), (jnp.float4_e2m1fn, 16),
                    (jnp.float8_e4m3fn, 32)):
        assert mosaic_kernel.register_lhs_reason(element_dtype=edt, block_k=bk,
                                                 has_zeros=edt == jnp.uint4, **kw) is None


def _split_config(w, out_dtype=jnp.bfloat16):
    from pallas_kernels.weight_only import mosaic_kernel
    kp = blocks.stored_kp(w["values"], w["element_dtype"], w["layout"])
    return dataclasses.replace(mosaic_kernel.register_lhs_config(
        w["element_dtype"], out_dtype, block_k=w["block_k"], kp=kp,
        has_zeros=w["zeros"] is not None), split_upcast=True)


# Each K step upcast in two halves (the second while the first half's wgmma runs): asked for
# here; e2m1 codes (mxfp4, nvfp4) take it by default, so REGISTER_LHS covers them.
SPLIT = [(c, layout) for c, layout in REGISTER_LHS
         if c.label in ("int8", "fp8", "int4-g128", "uint4-g128")]


@pytest.mark.parametrize("case,layout", SPLIT, ids=_register_lhs_id)
def test_register_lhs_split_upcast_lowers_for_cuda(case, layout, monkeypatch):
    from pallas_kernels.weight_only import api
    monkeypatch.setattr(api, "_on_gpu", lambda: True)
    w = testing.random_weight(jax.random.key(0), case, 1024, 384, layout=layout)
    x = jax.ShapeDtypeStruct((600, 1024), jnp.bfloat16)
    f = jax.jit(lambda x, v, s, z, g: api.weight_only_matmul(
        x, v, s, z, g, impl="mosaic", config=_split_config(w), **_static(w)))
    text = f.trace(x, w["values"], w["scales"], w["zeros"], w["global_scale"]).lower(
        lowering_platforms=("cuda",)).as_text()
    assert "mosaic_gpu" in text


@pytest.mark.gpu
@pytest.mark.parametrize("case,layout", SPLIT, ids=_register_lhs_id)
def test_register_lhs_split_upcast_matches_reference_gpu(case, layout):
    w = testing.random_weight(jax.random.key(3), case, 4096, 1024, layout=layout)
    _check_register_lhs(w, 1000, ("mosaic",), config=_split_config(w, jnp.float32))


@pytest.mark.gpu
@pytest.mark.parametrize("case,layout", REGISTER_LHS, ids=_register_lhs_id)
@pytest.mark.parametrize("m,k,n", [(1000, 4096, 1024), (600, 1024, 14336), (2048, 14336, 4096),
                                   (600, 576, 320)])  # padded per call: 320 weight rows to 384, "nk" K to whole steps
def test_register_lhs_matches_reference_gpu(case, layout, m, k, n):
    w = testing.random_weight(jax.random.key(m), case, k, n, layout=layout)
    _check_register_lhs(w, m, ("mosaic", "auto"))


def _check_register_lhs(w, m, impls, config=None):
    from pallas_kernels.weight_only import api
    x = jax.random.normal(jax.random.key(m + 1), (m, w["k"]), jnp.float32).astype(jnp.bfloat16)
    args = (w["values"], w["scales"], w["zeros"], w["global_scale"])
    ref = np.asarray(weight_only_matmul_reference(x, *args, out_dtype=jnp.float32, **_static(w)))
    rel, abs_ = testing.tolerance(x, w, jnp.float32)
    exact = w["block_k"] >= w["k"] and w["zeros"] is None  # per channel, no zeros
    for impl in impls:
        f = jax.jit(lambda x, v, s, z, g: api.weight_only_matmul(
            x, v, s, z, g, impl=impl, out_dtype=jnp.float32,
            config=config if impl == "mosaic" else None, **_static(w)))
        assert "mosaic_gpu" in f.lower(x, *args).as_text(), impl
        out = np.asarray(f(x, *args))
        if exact:
            # int8 codes are exact in bf16 and the scale is applied in f32: summation order.
            assert np.linalg.norm(out - ref) / np.linalg.norm(ref) <= 1e-5, impl
        else:  # each dequantized weight is rounded to bf16 before the wgmma
            err = np.abs(out - ref)
            assert np.all(err <= rel * np.abs(ref) + abs_), (impl, float(np.max(err)))
