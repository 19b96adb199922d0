"""Weight-only block-scaled matmul kernels vs their reference, on the same stored arrays.

Every arrangement of `testing.WEIGHT_CASES` (int8 per channel, int4/uint4 groups, fp8,
fp8 128x128 blocks, mxfp8, mxfp4, nvfp4), both layouts, odd M and K not a multiple of the
tile. On CPU the Pallas kernel runs in interpret mode (`interpret` fixture); the same class
runs natively under `-m gpu`, where the Triton kernel is tested too.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import blocks
from pallas_kernels.weight_only import TileConfig, unsupported_reason, weight_only_matmul
from pallas_kernels.weight_only import testing

CASES = testing.WEIGHT_CASES
# (m, k, n): odd M; K off the tile (and, per channel, odd); N off the 128 tile.
SMALL_SHAPES = ((5, 320, 96), (1, 192, 64), (17, 301, 48))


def _check(case, m, k, n, layout, impl, interpret, out_dtype=jnp.bfloat16, seed=0, config=None):
    w = testing.random_weight(jax.random.key(seed), case, k, n, layout)
    if impl == "pallas" and not interpret:
        # Natively the Pallas kernel lowers through Triton (power-of-2 tiles >= 16 only);
        # what it cannot take is covered in interpret mode on CPU.
        why = unsupported_reason((m, k), jnp.bfloat16, scale_dtype=w["scales"].dtype,
                                 impl="pallas", config=config,
                                 **{a: w[a] for a in ("element_dtype", "block_k", "block_n", "layout", "k", "n")})
        if why is not None:
            return
    x = jax.random.normal(jax.random.key(seed + 1), (m, k), jnp.float32).astype(jnp.bfloat16)
    ref = weight_only_matmul(x, **w, impl="xla", out_dtype=jnp.float32)
    out = weight_only_matmul(x, **w, impl=impl, interpret=interpret, out_dtype=out_dtype,
                             config=config)
    assert out.shape == (m, n) and out.dtype == jnp.dtype(out_dtype)
    rel, abs_ = testing.tolerance(x, w, out_dtype)
    out32 = np.asarray(out.astype(jnp.float32))
    ref = np.asarray(ref)
    assert np.all(np.isfinite(out32))
    np.testing.assert_array_less(np.abs(out32 - ref), rel * np.abs(ref) + abs_)


def _impls(interpret):
    return ("pallas",) if interpret else ("pallas", "triton")


class TestWeightOnlyKernels:
    """Kernel == reference for every stored arrangement (interpret on CPU, native on GPU)."""

    @pytest.mark.parametrize("layout", ["kn", "nk", "mma"])
    @pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
    def test_matches_reference(self, case, layout, interpret):
        if layout == "mma" and (why := blocks.mma_format_reason(case.element_dtype, case.block_k, case.scale_dtype, case.block_n)):
            pytest.skip(why)
        for impl in _impls(interpret):
            for m, k, n in SMALL_SHAPES:
                if case.block_n > 1:
                    n = 256
                if case.block_k and case.block_k > 64 and k == 301:
                    continue
                _check(case, m, k, n, layout, impl, interpret)

    @pytest.mark.parametrize("out_dtype", [jnp.float32, jnp.float16])
    def test_out_dtypes(self, out_dtype, interpret):
        for impl in _impls(interpret):
            _check(testing.CASES_BY_LABEL["int4-g128"], 3, 256, 64, "kn", impl, interpret,
                   out_dtype=out_dtype)

    def test_split_k(self, interpret):
        cfg = TileConfig(block_m=16, block_n=32, block_k=64, split_k=4)
        for impl in _impls(interpret):
            for label in ("int4-g128", "uint4-g32", "fp8"):
                _check(testing.CASES_BY_LABEL[label], 2, 512, 64, "kn", impl, interpret,
                       config=cfg)

    def test_batched_x(self, interpret):
        case = testing.CASES_BY_LABEL["mxfp4"]
        w = testing.random_weight(jax.random.key(3), case, 128, 64)
        x = jax.random.normal(jax.random.key(4), (2, 3, 128), jnp.bfloat16)
        impl = _impls(interpret)[-1]
        out = weight_only_matmul(x, **w, impl=impl, interpret=interpret)
        ref = weight_only_matmul(x, **w, impl="xla")
        assert out.shape == (2, 3, 64)
        np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                                   rtol=2e-2, atol=2e-2 * float(jnp.abs(ref).max()))


    def test_vmap(self, interpret):
        """vmap over x (folded into M) and over stacked weights (mapped)."""
        case = testing.CASES_BY_LABEL["int4-g128"]
        impl = _impls(interpret)[-1]
        ws = [testing.random_weight(jax.random.key(10 + i), case, 256, 64) for i in range(2)]
        static = {a: b for a, b in ws[0].items() if a not in ("values", "scales", "zeros", "global_scale")}
        x = jax.random.normal(jax.random.key(6), (2, 3, 256), jnp.bfloat16)
        f = jax.jit(lambda x, v, s: weight_only_matmul(x, v, s, **static, impl=impl, interpret=interpret))
        out = jax.vmap(f, in_axes=(0, None, None))(x, ws[0]["values"], ws[0]["scales"])
        ref = weight_only_matmul(x, **ws[0], impl="xla")
        np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                                   rtol=2e-2, atol=2e-2 * float(jnp.abs(ref).max()))
        v = jnp.stack([w["values"] for w in ws])
        s = jnp.stack([w["scales"] for w in ws])
        out = jax.vmap(f, in_axes=(0, 0, 0))(x, v, s)
        for i in range(2):
            ref = weight_only_matmul(x[i], **ws[i], impl="xla")
            np.testing.assert_allclose(np.asarray(out[i], np.float32), np.asarray(ref, np.float32),
                                       rtol=2e-2, atol=2e-2 * float(jnp.abs(ref).max()))


class TestErrors:
    def test_reason_names_values(self):
        why = unsupported_reason((4, 100), jnp.bfloat16, element_dtype=jnp.int4,
                                 scale_dtype=jnp.bfloat16, block_k=128, block_n=1, layout="kn",
                                 k=100, n=64, impl="pallas", interpret=True,
                                 config=TileConfig(block_m=16, block_n=64, block_k=48))
        assert why is not None and "block_k" in why

    def test_bad_layout(self):
        assert "layout" in unsupported_reason(
            (4, 64), jnp.bfloat16, element_dtype=jnp.int8, scale_dtype=jnp.float32,
            block_k=64, block_n=1, layout="xy", k=64, n=8, impl="xla", interpret=True)

    def test_explicit_impl_raises(self):
        case = testing.CASES_BY_LABEL["int8"]
        w = testing.random_weight(jax.random.key(0), case, 64, 32)
        x = jnp.ones((2, 64), jnp.float32)  # kernels take bf16/f16 activations only
        with pytest.raises((ValueError, NotImplementedError), match="x_dtype"):
            weight_only_matmul(x, **w, impl="pallas", interpret=True)

    def test_scale_shape_checked(self):
        case = testing.CASES_BY_LABEL["int4-g128"]
        w = testing.random_weight(jax.random.key(0), case, 256, 32)
        w["scales"] = w["scales"][:1]
        with pytest.raises(ValueError, match="scales.shape"):
            weight_only_matmul(jnp.ones((1, 256), jnp.bfloat16), **w, impl="xla")

    def test_auto_falls_back_off_gpu(self, interpret, caplog):
        if not interpret:
            pytest.skip("GPU present: auto runs a kernel")
        case = testing.CASES_BY_LABEL["int8"]
        w = testing.random_weight(jax.random.key(0), case, 64, 32)
        x = jax.random.normal(jax.random.key(1), (2, 64), jnp.bfloat16)
        out = weight_only_matmul(x, **w)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(weight_only_matmul(x, **w, impl="xla")))


REAL_SHAPES = ((576, 1536), (4096, 14336), (8192, 28672))


@pytest.mark.gpu
class TestWeightOnlyGPU(TestWeightOnlyKernels):
    """The same checks natively, plus real widths, jit, vmap and memory."""

    @pytest.mark.parametrize("kn", REAL_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
    @pytest.mark.parametrize("label", ["int8", "int4-g128", "uint4-g128", "fp8", "mxfp8", "mxfp4", "nvfp4"])
    def test_real_widths(self, label, kn, interpret):
        """The recipes' layouts ("mma" where the tensor-core GEMV serves the format: it runs for
        M <= 32, an "nk" copy for prefill; else "nk") with the chooser's configs (tuned table
        included)."""
        case = testing.CASES_BY_LABEL[label]
        layout = "nk" if blocks.mma_format_reason(case.element_dtype, case.block_k, case.scale_dtype, case.block_n) else "mma"
        for m in (1, 16, 1024):
            _check(case, m, kn[0], kn[1], layout, "triton", interpret)

    @pytest.mark.parametrize("label", ["int8", "int4-g128", "uint4-g128", "fp8", "mxfp8", "mxfp4", "nvfp4"])
    @pytest.mark.parametrize("m,warps,unroll,tiles,split", [(1, 4, 1, 2, 1), (3, 2, 2, 1, 2), (8, 4, 4, 1, 1),
                                                            (13, 2, 2, 2, 2), (16, 8, 1, 1, 4), (40, 4, 2, 2, 1)])
    @pytest.mark.parametrize("x_mode", [1, 2])
    def test_mma_kernel(self, label, m, warps, unroll, tiles, split, x_mode, interpret):
        """The tensor-core GEMV (triton_mma) with explicit tiles: odd M over one or two n8
        blocks (and M > 16 over programs), K and N off the tile (padded), split K, x as it is
        or in fragment order."""
        case = testing.CASES_BY_LABEL[label]
        cfg = TileConfig(kernel="mma", block_m=8 if m <= 8 else 16, block_n=16 * warps * tiles,
                         block_k=blocks.mma_chunk_k(case.element_dtype), num_warps=warps, num_stages=1,
                         unroll=unroll, split_k=split, x_mode=x_mode)
        _check(case, m, 1000, 376, "mma", "triton", interpret, config=cfg)

    @pytest.mark.parametrize("label", ["int4-g128", "int8", "nvfp4"])
    @pytest.mark.parametrize("x_mode", [1, 2])
    def test_mma_kernel_one_n8_block_over_more_rows(self, label, x_mode, interpret):
        """An explicit block_m=8 (one n8 block per pass) with 21 rows of x: three passes."""
        case = testing.CASES_BY_LABEL[label]
        cfg = TileConfig(kernel="mma", block_m=8, block_n=128, block_k=blocks.mma_chunk_k(case.element_dtype),
                         num_warps=4, num_stages=1, split_k=2, x_mode=x_mode)
        _check(case, 21, 1000, 376, "mma", "triton", interpret, config=cfg)

    @pytest.mark.parametrize("label", ["int8", "int4-g128", "uint4-g128"])
    def test_mma_kernel_f16_x(self, label, interpret):
        """f16 activations: the f16 magic (1024) and f16 MMAs."""
        case = testing.CASES_BY_LABEL[label]
        w = testing.random_weight(jax.random.key(3), case, 512, 256, "mma")
        x = jax.random.normal(jax.random.key(4), (5, 512), jnp.float16)
        ref = weight_only_matmul(x, **w, impl="xla", out_dtype=jnp.float32)
        out = weight_only_matmul(x, **w, impl="triton", out_dtype=jnp.float32)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4 * float(jnp.abs(ref).max()))

    @pytest.mark.parametrize("layout", ["kn", "nk"])
    @pytest.mark.parametrize("label", ["int8", "int4-g128", "uint4-g128", "fp8", "mxfp4", "nvfp4"])
    @pytest.mark.parametrize("kernel,m,bm", [("gemv", 1, 1), ("gemv", 2, 1), ("fma", 3, 4),
                                             ("swapab", 13, 16), ("swapab", 40, 64),
                                             ("kgemv", 1, 1), ("kgemv", 3, 4)])
    def test_decode_kernels(self, label, kernel, m, bm, layout, interpret):
        """The decode kernels of triton_decode with explicit tiles (the tuned table picks
        them per device), odd M, split K, K not a multiple of the tile (kgemv: per-channel
        tiles of 8 dividing K, grouped tiles one group long, masked last loop step)."""
        case = testing.CASES_BY_LABEL[label]
        group = case.block_k or 1 << 30
        bk = min(64, group) if kernel != "swapab" else max(32, min(64, group))
        if kernel == "kgemv" and group > 1000:
            bk = 8
        if bk > group:
            pytest.skip(f"{kernel} needs a K tile inside one {group}-block and >= 32 for its dot")
        if kernel == "swapab" and bm > 16 and label == "fp8":
            pytest.skip("swapab refuses e4m3 codes with block_m > 16 (wrong on triton 3.6; config.py)")
        cfg = TileConfig(kernel=kernel, block_m=bm, block_n=128, block_k=bk, split_k=2,
                         unroll=3 if kernel == "kgemv" else 1)
        _check(case, m, 1000, 384, layout, "triton", interpret, config=cfg)

    def test_jit_and_vmap(self, interpret):
        case = testing.CASES_BY_LABEL["int4-g128"]
        w = testing.random_weight(jax.random.key(5), case, 1024, 512)
        x = jax.random.normal(jax.random.key(6), (3, 4, 1024), jnp.bfloat16)
        static = {k: v for k, v in w.items() if k not in ("values", "scales", "zeros", "global_scale")}
        f = jax.jit(lambda x, v, s: weight_only_matmul(x, v, s, **static, impl="triton"))
        out = jax.vmap(f, in_axes=(0, None, None))(x, w["values"], w["scales"])
        ref = weight_only_matmul(x, **w, impl="xla")
        np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(ref, np.float32),
                                   rtol=2e-2, atol=2e-2 * float(jnp.abs(ref).max()))

    @pytest.mark.parametrize("impl", ["pallas", "triton"])
    def test_no_dequantized_weight_in_memory(self, impl, interpret):
        k, n = 4096, 14336
        case = testing.CASES_BY_LABEL["int4-g128"]
        w = testing.random_weight(jax.random.key(7), case, k, n)
        x = jax.ShapeDtypeStruct((1024, k), jnp.bfloat16)
        static = {a: b for a, b in w.items() if a not in ("values", "scales", "zeros", "global_scale")}
        f = jax.jit(lambda x, v, s: weight_only_matmul(x, v, s, **static, impl=impl))
        mem = f.lower(x, w["values"], w["scales"]).compile().memory_analysis()
        assert mem.temp_size_in_bytes < k * n * 2, mem


@pytest.mark.parametrize("label,layout", [("int4-g128", "mma"), ("mxfp4", "mma"), ("nvfp4", "nk"),
                                          ("uint4-g128", "nk"), ("int8", "kn")])
def test_auto_sends_prefill_to_dequantize_then_xla_dot(label, layout, monkeypatch):
    """On a GPU (simulated: kernel launch replaced by a recorder), impl="auto" computes a
    prefill the register-operand kernel does not take ("kn" weights; 4-bit codes above
    REGISTER_LHS_MAX_M_4BIT rows) with XLA -- the weight dequantized to x's dtype and written
    out, then XLA's GEMM; within bf16 rounding of the f32 oracle -- and smaller M, or an
    explicit kernel, with a kernel."""
    from pallas_kernels.weight_only.reference import weight_only_matmul_reference
    from pallas_kernels.weight_only import api, mosaic_kernel, triton_kernel
    monkeypatch.setattr(api, "_on_gpu", lambda: True)
    monkeypatch.setattr(triton_kernel, "available", lambda: None)
    seen = []

    def record(x, values, scales, zeros, g, **kw):
        seen.append(x.shape[0])
        return jnp.zeros((x.shape[0], kw["spec"].n), kw["out_dtype"])
    monkeypatch.setattr(api, "_batched_kernel_call", record)
    case = testing.CASES_BY_LABEL[label]
    w = testing.random_weight(jax.random.key(5), case, 256, 96, layout=layout)
    m = mosaic_kernel.REGISTER_LHS_MAX_M_4BIT + 2
    x = jax.random.normal(jax.random.key(6), (2, m // 2, 256), jnp.bfloat16)
    out = weight_only_matmul(x, **w, out_dtype=jnp.float32)
    assert seen == [] and out.shape == (2, m // 2, 96)
    ref = weight_only_matmul(x, **w, impl="xla", out_dtype=jnp.float32)
    err = float(jnp.linalg.norm(out - ref) / jnp.linalg.norm(ref))
    assert 0 < err < 5e-3       # the weight rounded to bf16 once: not the oracle, close to it
    facts = {a: w[a] for a in ("element_dtype", "block_k", "block_n", "layout", "k", "n")}
    route = weight_only_matmul_reference(x, w["values"], w["scales"], w["zeros"], w["global_scale"],
                                         **facts, convert=True, materialize=True, out_dtype=jnp.float32)
    np.testing.assert_array_equal(out, route)
    hlo = jax.jit(lambda x: weight_only_matmul(x, **w)).lower(x).as_text()
    assert "optimization_barrier" in hlo  # the dequantized weight is written before the GEMM
    weight_only_matmul(x[:, :16], **w)
    weight_only_matmul(x, **w, impl="triton")
    assert seen == [32, m]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16, jnp.float32])
@pytest.mark.parametrize("layout", ["kn", "nk", "mma"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.label)
def test_dequantize_as_is_the_rounded_dequantized_weight(case, layout, dtype):
    """The prefill route's weight (`blocks.dequantize_as`, in stored order; 32-bit words of
    K-adjacent pairs for "nk"/"mma" in a 16-bit dtype) equals the f32 contract's weight
    rounded once to `dtype`, bit for bit: odd K, N off the tiles, two stacked matrices."""
    k, n = (301, 48) if layout != "mma" else (200, 40)
    ws = [testing.random_weight(jax.random.key(s), case, k, n, layout=layout) for s in (11, 12)]
    arrays = [jnp.stack([w[a] for w in ws]) if ws[0][a] is not None else None
              for a in ("values", "scales", "zeros", "global_scale")]
    facts = {a: ws[0][a] for a in ("element_dtype", "block_k", "block_n", "layout", "k", "n")}
    want = blocks.dequantize_blocks(*arrays, **facts).astype(dtype)
    if layout != "kn":
        want = jnp.swapaxes(want, -1, -2)
    got = blocks.dequantize_as(*arrays, dtype=dtype, **facts)
    assert got.dtype == jnp.dtype(dtype) and got.shape == want.shape
    bits = jnp.uint32 if jnp.dtype(dtype).itemsize == 4 else jnp.uint16
    np.testing.assert_array_equal(jax.lax.bitcast_convert_type(got, bits),
                                  jax.lax.bitcast_convert_type(want, bits))
    assert bool(jnp.all(jnp.isfinite(got))) and float(jnp.abs(got.astype(jnp.float32)).max()) > 0
