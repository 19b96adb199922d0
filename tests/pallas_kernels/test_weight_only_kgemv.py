"""The arithmetic of the `kgemv` Triton kernel, modelled on CPU (Triton has no CPU path here).

The kernel itself runs only on GPUs (`pytest -m gpu` covers it against the reference). What
can be checked everywhere is the math it relies on: the nibble upcasts' inline PTX (the very
strings the kernels assemble, executed by a small interpreter of their opcodes), the x
prologue `triton_decode.kgemv_x` (pre-scaled even/odd halves, the offset share `cb`, the chunk
sums `xs`) and the per-chunk correction `(sum - cb - z * xs) * s`. Together they must give the
reference product on fresh random stored weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import blocks
from pallas_kernels.weight_only import config as wcfg, testing, triton_kernel
from pallas_kernels.weight_only.testing import run_ptx
from pallas_kernels.weight_only.reference import weight_only_matmul_reference
from pallas_kernels.weight_only.triton_decode import kgemv_x


def nibbles_to_f32(words: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """The kernel's f32 upcast (its PTX, executed): words (..., W) -> lo, hi (..., 4W)."""
    outs = run_ptx(triton_kernel.nibbles_to_f32_asm(signed), words.reshape(-1), 8)
    as_f32 = lambda parts: np.stack(parts, -1).reshape(*words.shape[:-1], -1).view(np.float32)  # noqa: E731
    return as_f32(outs[:4]), as_f32(outs[4:])


@pytest.mark.parametrize("signed", [False, True])
def test_f32_upcast_gives_code_plus_offsets(signed):
    codes = np.arange(256, dtype=np.uint8)
    lo, hi = nibbles_to_f32(codes.view(np.uint32).reshape(1, -1), signed)
    u_lo, u_hi = (codes & 15), (codes >> 4)
    if signed:
        u_lo, u_hi = u_lo ^ 8, u_hi ^ 8
    np.testing.assert_array_equal(lo[0], 128 + u_lo / 2)
    np.testing.assert_array_equal(hi[0], 128 + 8 * u_hi)


@pytest.mark.parametrize("signed", [False, True])
def test_bf16_upcast_gives_128_plus_code(signed):
    """`_upcast_nibbles` to bf16 (the tensor-core kernels' upcast): 128 + code (SIGNED: code ^ 8)."""
    codes = np.arange(256, dtype=np.uint8)
    outs = run_ptx(triton_kernel.nibbles_to_bf16_asm(signed), codes.view(np.uint32), 4)
    as_bf16 = lambda parts: np.stack(parts, -1).reshape(-1).view(jnp.bfloat16).astype(np.float32)  # noqa: E731
    lo, hi = as_bf16(outs[:2]), as_bf16(outs[2:])
    u_lo, u_hi = (codes & 15), (codes >> 4)
    if signed:
        u_lo, u_hi = u_lo ^ 8, u_hi ^ 8
    np.testing.assert_array_equal(lo, 128 + u_lo)
    np.testing.assert_array_equal(hi, 128 + u_hi)


def e2m1_values(nibbles: np.ndarray) -> np.ndarray:
    """The e2m1 value of each 4-bit code (ml_dtypes' float4_e2m1fn)."""
    return nibbles.astype(np.uint8).view(jnp.float4_e2m1fn).astype(np.float32)


def test_e2m1_f32_upcast_gives_value_times_2_pow_minus_126():
    """`kgemv`'s e2m1 upcast on every byte: value * 2**-126 exactly, 0.5 (f32 subnormal) too."""
    codes = np.arange(256, dtype=np.uint8)
    outs = run_ptx(triton_kernel.e2m1_to_f32_asm(), codes.view(np.uint32), 8)
    as_f32 = lambda parts: np.stack(parts, -1).reshape(-1).view(np.float32)  # noqa: E731
    lo, hi = as_f32(outs[:4]), as_f32(outs[4:])
    np.testing.assert_array_equal(lo, e2m1_values(codes & 15) * np.float32(2.0**-126))
    np.testing.assert_array_equal(hi, e2m1_values(codes >> 4) * np.float32(2.0**-126))
    assert np.signbit(lo[8]) and lo[8] == 0  # -0 stays -0


def test_e2m1_bf16_upcast_gives_value_times_2_pow_minus_6():
    """The tensor-core kernels' e2m1 upcast on every byte: value * 2**-6 (`_factor`)."""
    codes = np.arange(256, dtype=np.uint8)
    outs = run_ptx(triton_kernel.e2m1_to_bf16_asm(), codes.view(np.uint32), 4)
    as_bf16 = lambda parts: np.stack(parts, -1).reshape(-1).view(jnp.bfloat16).astype(np.float32)  # noqa: E731
    lo, hi = as_bf16(outs[:2]), as_bf16(outs[2:])
    np.testing.assert_array_equal(lo, e2m1_values(codes & 15) / 64)
    np.testing.assert_array_equal(hi, e2m1_values(codes >> 4) / 64)


@pytest.mark.parametrize("label,k", [("int4-g128", 1000), ("uint4-g128", 512), ("int4-g32", 192),
                                     ("uint4-g32", 160), ("uint4-g32", 256)])
@pytest.mark.parametrize("m", [1, 3])
def test_kgemv_math_matches_reference(label, k, m):
    case = testing.CASES_BY_LABEL[label]
    n = 48
    w = testing.random_weight(jax.random.key(k + m), case, k, n, layout="nk")
    x = jax.random.normal(jax.random.key(7 * m), (m, k), jnp.float32).astype(jnp.bfloat16)
    spec = testing.weight_spec(w)
    kp = spec.kp
    bk = next(b for b in (128, 64, 32) if kp % b == 0)  # g32: tiles across 4 or 2 scale blocks
    cfg = wcfg.TileConfig(kernel="kgemv", block_m=1, block_n=64, block_k=bk)
    assert cfg.check(spec) is None
    xp, cb, xs, r = (np.asarray(a) for a in kgemv_x(x, spec, cfg, fast4=True))
    np.testing.assert_array_equal(r, 1.0)  # the row pre-scale is for e2m1 codes only
    ck = wcfg.kgemv_chunk(spec, cfg)
    assert cb.shape == xs.shape == (m, kp // ck)
    signed = jnp.dtype(case.element_dtype) == jnp.int4
    # Stored rows (N, kp/2) bytes; each K tile of one row is bk/2 bytes = bk/8 words.
    vals = np.ascontiguousarray(np.asarray(w["values"]))
    lo, hi = nibbles_to_f32(vals.view(np.uint32), signed)  # (N, kp/2) each
    s = np.asarray(w["scales"], np.float32)  # (N, groups)
    z = np.asarray(w["zeros"], np.float32) if w["zeros"] is not None else np.full_like(s, 8.0 if signed else 0.0)
    out = np.zeros((m, n), np.float64)
    half, chalf = bk // 2, ck // 2
    for t in range(kp // bk):
        for c in range(bk // ck):  # chunk c: bytes [c * chalf, (c + 1) * chalf) of the tile
            g, j = (t * bk + c * ck) // w["block_k"], t * (bk // ck) + c
            b0 = t * half + c * chalf
            lo_c, hi_c = lo[:, b0:b0 + chalf], hi[:, b0:b0 + chalf]
            xe = xp[:, t * bk + c * chalf:t * bk + (c + 1) * chalf]
            xo = xp[:, t * bk + half + c * chalf:t * bk + half + (c + 1) * chalf]
            d = xe @ lo_c.T.astype(np.float64) + xo @ hi_c.T.astype(np.float64)  # (m, n)
            out += (d - cb[:, j:j + 1] - z[None, :, g] * xs[:, j:j + 1]) * s[None, :, g]
    ref = np.asarray(weight_only_matmul_reference(
        x, w["values"], w["scales"], w["zeros"], None, element_dtype=case.element_dtype,
        block_k=w["block_k"], block_n=1, layout="nk", k=k, n=n, out_dtype=jnp.float32))
    assert blocks.is_four_bit(case.element_dtype)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("label", ["mxfp4", "nvfp4"])
def test_kgemv_e2m1_math_matches_reference_at_any_scale_of_x(label):
    """e2m1 codes: x pre-scaled per row by a power of two (`kgemv_x`), products with
    value * 2**-126 (the PTX upcast, executed), chunk sums times the scale, then the row
    factor r: the reference product for rows of x near 1e30, 1 and 1e-30 (every product a
    normal f32; no overflow, no flush)."""
    case = testing.CASES_BY_LABEL[label]
    k, n, m = 256, 48, 3
    w = testing.random_weight(jax.random.key(3), case, k, n, layout="nk")
    row = jnp.array([1e30, 1.0, 1e-30], jnp.float32)[:, None]
    x = (jax.random.normal(jax.random.key(5), (m, k), jnp.float32) * row).astype(jnp.bfloat16)
    spec = testing.weight_spec(w)
    cfg = wcfg.TileConfig(kernel="kgemv", block_m=1, block_n=64, block_k=128)
    assert cfg.check(spec) is None
    xp, _, _, r = (np.asarray(a, np.float64) for a in kgemv_x(x, spec, cfg, fast4=False))
    assert np.abs(xp).max() < 2.0**127  # and the small row is scaled by 2**127, the most an f32 holds
    words = np.ascontiguousarray(np.asarray(w["values"])).view(np.uint32)  # (N, kp/8)
    outs = run_ptx(triton_kernel.e2m1_to_f32_asm(), words.reshape(-1), 8)
    as_f32 = lambda parts: np.stack(parts, -1).reshape(words.shape[0], -1).view(np.float32)  # noqa: E731
    lo, hi = as_f32(outs[:4]).astype(np.float64), as_f32(outs[4:]).astype(np.float64)
    s = np.asarray(w["scales"].astype(jnp.float32), np.float64)  # (N, groups)
    out = np.zeros((m, words.shape[0]))
    half = cfg.block_k // 2
    for t in range(spec.kp // cfg.block_k):
        for b in range(half):  # byte b of the tile: codes k = t*bk + 2b (lo), + 1 (hi)
            kk = t * cfg.block_k + 2 * b
            p = (np.outer(xp[:, t * cfg.block_k + b], lo[:, t * half + b])
                 + np.outer(xp[:, t * cfg.block_k + half + b], hi[:, t * half + b]))
            out += p * s[None, :, kk // w["block_k"]]
    out = out[:, :n] * r[:, None] * (0.75 if case.global_scale else 1.0)
    ref = np.asarray(weight_only_matmul_reference(
        x, w["values"], w["scales"], w["zeros"], w["global_scale"], element_dtype=case.element_dtype,
        block_k=w["block_k"], block_n=1, layout="nk", k=k, n=n, out_dtype=jnp.float32), np.float64)
    for i in range(m):
        np.testing.assert_allclose(out[i], ref[i], rtol=1e-5, atol=1e-5 * np.abs(ref[i]).max())


def test_int8_upcast_is_exact():
    """The int8 -> bf16 upcast of the tensor-core kernels, on all 256 codes."""
    codes = np.arange(-128, 128, dtype=np.int8)
    outs = run_ptx(triton_kernel.int8_to_bf16_asm(), codes.view(np.uint32), 2)
    got = np.stack(outs, -1).reshape(-1).view(jnp.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(got, codes.astype(np.float32))
