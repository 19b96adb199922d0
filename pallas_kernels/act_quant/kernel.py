"""Fused dynamic activation quantizer as one Pallas kernel (one pass over x per block).

What: the same function as `reference.quantize_rows` (it calls the same
`reference.quantize_block`, so the two agree bit for bit in interpret mode), as a Pallas
kernel that reads x once and writes values + scales once: the fewest bytes it can move are
M*K*itemsize(x) + M*Kp*1 + M*(Kp/block_k)*itemsize(scale).

Glossary: *block* = the elements that share one scale (1 x block_k along a row);
*chunk* = what one program loads at once (block_m rows x chunk_k columns, a power of two,
as Pallas-Triton needs); a chunk holds chunk_k / block_k blocks per row.

Two grids:
  blocked (block_k given): grid (cdiv(M, block_m), cdiv(Kp, chunk_k)); each program loads
      one chunk, reshapes it to (block_m, chunk_k / block_k, block_k), reduces absmax over
      the last axis and writes values and scales. One pass.
  per-row (block_k None): grid (cdiv(M, block_m),); each program walks its rows twice in
      chunks: absmax, then quantize. The second walk mostly hits L2 (block_m rows only).
Ragged M and K are handled with masked loads/stores (zeros beyond K, exactly like the
reference's zero padding), so x is never copied or padded.

Runs natively on GPU through the Pallas-Triton lowering and interpreted on CPU
(`interpret=True`). Limits: block_k must be a power of two (Pallas-Triton reshapes need it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from pallas_kernels.act_quant import reference as ref


def _pow2_floor(v: int) -> int:
    return 1 << (max(int(v), 1).bit_length() - 1)


def default_chunks(m: int, k: int, block_k: int | None) -> tuple[int, int]:
    """(block_m, chunk_k) heuristic: ~8K elements per chunk, power-of-two sizes."""
    if block_k is None:
        chunk_k = min(2048, pl.next_power_of_2(k))
        return 4, chunk_k
    chunk_k = max(block_k, min(512, pl.next_power_of_2(k)))
    return max(1, 8192 // chunk_k), chunk_k


def unsupported_reason(x_shape, *, block_k, block_m=None, chunk_k=None) -> str | None:
    if len(x_shape) != 2:
        return f"the kernel takes 2-D x (M, K); got shape {tuple(x_shape)}"
    if block_k is not None and block_k & (block_k - 1):
        return f"{block_k=} is not a power of two (Pallas-Triton reshapes need one)"
    for name, v in (("block_m", block_m), ("chunk_k", chunk_k)):
        if v is not None and v & (v - 1):
            return f"{name}={v} must be a power of two"
    if block_k is not None and chunk_k is not None and chunk_k % block_k:
        return f"{chunk_k=} must be a multiple of {block_k=}"
    return None


def _blocked_kernel(x_ref, v_ref, s_ref, *, m, k, kp, bm, ck, bk, e, s, mx_round):
    i, j = pl.program_id(0), pl.program_id(1)
    rows = i * bm + jax.lax.broadcasted_iota(jnp.int32, (bm, 1), 0)
    cols = j * ck + jax.lax.broadcasted_iota(jnp.int32, (1, ck), 1)
    x = plgpu.load(
        x_ref.at[pl.ds(i * bm, bm), pl.ds(j * ck, ck)],
        mask=(rows < m) & (cols < k), other=0.0,
    ).astype(jnp.float32)
    xb = x.reshape(bm, ck // bk, bk)
    amax = jnp.max(jnp.abs(xb), axis=2, keepdims=True)
    v, sc = ref.quantize_block(xb, amax, element_dtype=e, scale_dtype=s, mx_round=mx_round,
                               e8m0_as_bits=True)
    plgpu.store(v_ref.at[pl.ds(i * bm, bm), pl.ds(j * ck, ck)], v.reshape(bm, ck),
                mask=(rows < m) & (cols < kp))
    scols = j * (ck // bk) + jax.lax.broadcasted_iota(jnp.int32, (1, ck // bk), 1)
    plgpu.store(s_ref.at[pl.ds(i * bm, bm), pl.ds(j * (ck // bk), ck // bk)],
                sc.reshape(bm, ck // bk), mask=(rows < m) & (scols < kp // bk))


def _per_row_kernel(x_ref, v_ref, s_ref, *, m, k, bm, ck, e, s, mx_round):
    i = pl.program_id(0)
    rows = i * bm + jax.lax.broadcasted_iota(jnp.int32, (bm, 1), 0)
    n_chunks = pl.cdiv(k, ck)

    def load(c):
        cols = c * ck + jax.lax.broadcasted_iota(jnp.int32, (1, ck), 1)
        mask = (rows < m) & (cols < k)
        return plgpu.load(x_ref.at[pl.ds(i * bm, bm), pl.ds(c * ck, ck)],
                          mask=mask, other=0.0).astype(jnp.float32), mask

    def absmax(c, acc):
        x, _ = load(c)
        return jnp.maximum(acc, jnp.max(jnp.abs(x), axis=1, keepdims=True))

    amax = jax.lax.fori_loop(0, n_chunks, absmax, jnp.zeros((bm, 1), jnp.float32))

    def quant(c, carry):
        x, mask = load(c)
        v, _ = ref.quantize_block(x, amax, element_dtype=e, scale_dtype=s, mx_round=mx_round,
                               e8m0_as_bits=True)
        plgpu.store(v_ref.at[pl.ds(i * bm, bm), pl.ds(c * ck, ck)], v, mask=mask)
        return carry

    jax.lax.fori_loop(0, n_chunks, quant, 0)
    _, sc = ref.quantize_block(jnp.zeros((bm, 1), jnp.float32), amax,
                               element_dtype=e, scale_dtype=s, mx_round=mx_round,
                               e8m0_as_bits=True)
    plgpu.store(s_ref.at[pl.ds(i * bm, bm), pl.ds(0, 1)], sc, mask=rows < m)


@functools.partial(
    jax.jit,
    static_argnames=("element_dtype", "block_k", "scale_dtype", "mx_round", "block_m",
                     "chunk_k", "num_warps", "interpret"),
)
def quantize_rows_pallas(
    x: jax.Array,
    *,
    element_dtype,
    block_k: int | None,
    scale_dtype,
    mx_round: str = "floor",
    block_m: int | None = None,
    chunk_k: int | None = None,
    num_warps: int = 4,
    interpret: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """Pallas version of `reference.quantize_rows` for 2-D x (M, K); same outputs."""
    e, s = ref.check_args(element_dtype, scale_dtype, block_k, mx_round)
    reason = unsupported_reason(x.shape, block_k=block_k, block_m=block_m, chunk_k=chunk_k)
    if reason:
        raise ValueError(reason)
    m, k = x.shape
    kp = ref.padded_k(k, block_k)
    dbm, dck = default_chunks(m, k, block_k)
    bm, ck = block_m or dbm, chunk_k or dck
    n_scales = 1 if block_k is None else kp // block_k
    full = lambda shape: pl.BlockSpec(shape, lambda *_: (0, 0))  # noqa: E731
    if block_k is None:
        body = functools.partial(_per_row_kernel, m=m, k=k, bm=bm, ck=ck, e=e, s=s,
                                 mx_round=mx_round)
        grid = (pl.cdiv(m, bm),)
    else:
        body = functools.partial(_blocked_kernel, m=m, k=k, kp=kp, bm=bm, ck=ck, bk=block_k,
                                 e=e, s=s, mx_round=mx_round)
        grid = (pl.cdiv(m, bm), pl.cdiv(kp, ck))
    s_out = jnp.dtype(jnp.uint8) if s == ref.E8M0 else s
    v, sc = pl.pallas_call(
        body,
        grid=grid,
        in_specs=[full((m, k))],
        out_specs=[full((m, kp)), full((m, n_scales))],
        out_shape=[jax.ShapeDtypeStruct((m, kp), e), jax.ShapeDtypeStruct((m, n_scales), s_out)],
        compiler_params=None if interpret else plgpu.CompilerParams(num_warps=num_warps,
                                                                     num_stages=1),
        interpret=interpret,
        name="act_quant_rows",
    )(x)
    if s == ref.E8M0:
        sc = jax.lax.bitcast_convert_type(sc, ref.E8M0)
    return v, sc
