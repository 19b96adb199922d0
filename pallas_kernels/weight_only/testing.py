"""Random stored weights in every supported arrangement, for tests and benchmarks.

`WEIGHT_CASES` lists the block-scaled arrangements the kernels must serve, as static facts
(the names are labels for test ids and benchmark rows only). `random_weight` draws codes
and scales directly (never zeros, never a quantizer: kernels are tested against the
reference on the *same* stored arrays, which isolates kernel error from quantization error).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import blocks
from pallas_kernels.weight_only.config import WeightSpec


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class WeightCase:
    label: str
    element_dtype: jnp.dtype
    scale_dtype: jnp.dtype
    block_k: int | None  # None: per channel (block_k = padded K)
    block_n: int = 1
    zeros: bool = False
    global_scale: bool = False


WEIGHT_CASES = (
    WeightCase(label="int8", element_dtype=jnp.int8, scale_dtype=jnp.bfloat16, block_k=None),
    WeightCase(label="int4-g32", element_dtype=jnp.int4, scale_dtype=jnp.bfloat16, block_k=32),
    WeightCase(label="int4-g64", element_dtype=jnp.int4, scale_dtype=jnp.float32, block_k=64),
    WeightCase(label="int4-g128", element_dtype=jnp.int4, scale_dtype=jnp.bfloat16, block_k=128),
    WeightCase(label="uint4-g128", element_dtype=jnp.uint4, scale_dtype=jnp.bfloat16, block_k=128, zeros=True),
    WeightCase(label="uint4-g32", element_dtype=jnp.uint4, scale_dtype=jnp.float32, block_k=32, zeros=True),
    WeightCase(label="fp8", element_dtype=jnp.float8_e4m3fn, scale_dtype=jnp.float32, block_k=None),
    WeightCase(label="fp8-b128x128", element_dtype=jnp.float8_e4m3fn, scale_dtype=jnp.float32, block_k=128, block_n=128),
    WeightCase(label="mxfp8", element_dtype=jnp.float8_e4m3fn, scale_dtype=jnp.float8_e8m0fnu, block_k=32),
    WeightCase(label="mxfp4", element_dtype=jnp.float4_e2m1fn, scale_dtype=jnp.float8_e8m0fnu, block_k=32),
    WeightCase(label="nvfp4", element_dtype=jnp.float4_e2m1fn, scale_dtype=jnp.float8_e4m3fn, block_k=16, global_scale=True),
)
CASES_BY_LABEL = {c.label: c for c in WEIGHT_CASES}


def padded_k(case: WeightCase, k: int) -> tuple[int, int]:
    """(kp, block_k) for a logical K."""
    if case.block_k is None:
        kp = k + (k % 2 if blocks.is_four_bit(case.element_dtype) else 0)
        return kp, kp
    kp = -(-k // case.block_k) * case.block_k
    return kp, case.block_k


def random_weight(key, case: WeightCase, k: int, n: int, layout: str = "kn") -> dict:
    """Stored arrays + static kwargs for `weight_only_matmul` of a logical (k, n) weight."""
    kp, bk = padded_k(case, k)
    bn = case.block_n
    np_ = -(-n // bn) * bn
    kv, ks, kz = jax.random.split(key, 3)
    edt = jnp.dtype(case.element_dtype)
    if blocks.is_four_bit(edt):
        codes = jax.random.randint(kv, (kp, np_), 0, 16, jnp.int32).astype(jnp.uint8)
        values = blocks.pack_nibbles(codes, axis=0)
    elif edt == jnp.int8:
        values = jax.random.randint(kv, (kp, np_), -128, 128, jnp.int32).astype(jnp.int8)
    else:  # float8_e4m3fn: normal draws spanning most of the range
        values = (jax.random.normal(kv, (kp, np_), jnp.float32) * 64).astype(edt)
    sshape = (kp // bk, np_ // bn)
    sdt = jnp.dtype(case.scale_dtype)
    if sdt == jnp.float8_e8m0fnu:
        e = jax.random.randint(ks, sshape, -6, 3)
        scales = jnp.exp2(e.astype(jnp.float32)).astype(sdt)
    else:
        u = jax.random.uniform(ks, sshape, jnp.float32, 0.5, 2.0)
        scales = (u * (1 / 64 if edt == jnp.float8_e4m3fn else 1 / 8)).astype(sdt)
    zeros = None
    if case.zeros:
        zeros = jax.random.uniform(kz, sshape, jnp.float32, 4.0, 11.0).astype(sdt)
    global_scale = jnp.float32(0.75) if case.global_scale else None
    if layout == "nk":
        values = values.T
        scales = scales.T
        zeros = zeros.T if zeros is not None else None
    return dict(values=values, scales=scales, zeros=zeros, global_scale=global_scale,
                element_dtype=edt, block_k=bk, block_n=bn, layout=layout, k=k, n=n)


def stored_bytes(w: dict) -> int:
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize
               for a in (w["values"], w["scales"], w["zeros"]) if a is not None)


def weight_spec(w: dict) -> WeightSpec:
    """The kernels' static description of a `random_weight` (padded sizes read off the arrays,
    as `api.weight_only_matmul` does)."""
    kdim = 0 if w["layout"] == "kn" else 1
    values = w["values"]
    return WeightSpec(element_dtype=jnp.dtype(w["element_dtype"]), scale_dtype=jnp.dtype(w["scales"].dtype),
                      block_k=w["block_k"], block_n=w["block_n"], layout=w["layout"], k=w["k"], n=w["n"],
                      kp=values.shape[kdim] * (2 if blocks.is_four_bit(w["element_dtype"]) else 1),
                      np_=values.shape[1 - kdim], has_zeros=w["zeros"] is not None,
                      has_global_scale=w["global_scale"] is not None)


def tolerance(x, w: dict, out_dtype) -> tuple[float, float]:
    """(rel, abs): the elementwise bound rel * |reference| + abs on |kernel - reference| for
    x @ the stored weight `w` (a `random_weight` dict).

    Output rounding: half an ulp of out_dtype relative to |ref| (doubled for margin).
    Contraction: the kernel rounds scaled weights to bf16 before the dot when a tile spans
    several scale blocks (relative 2**-9 per term) and sums in a different order; those
    per-term errors have random signs, so they grow like sqrt(K) times rms(x) * rms(w).
    The bound allows 2**-6 of that (8 standard deviations of the 2**-9 rounding): real-width
    prefill checks take the maximum over ~1.5M outputs, where 4 deviations are exceeded
    (seen on an H200: uint4-g128 at M=1024 failed 2**-7). A wrong kernel is off by O(1).
    """
    eps_out = {jnp.dtype(jnp.bfloat16): 2.0**-8, jnp.dtype(jnp.float16): 2.0**-10,
               jnp.dtype(jnp.float32): 2.0**-20}[jnp.dtype(out_dtype)]
    w_f32 = blocks.dequantize_blocks(
        w["values"], w["scales"], w["zeros"], w["global_scale"], element_dtype=w["element_dtype"],
        block_k=w["block_k"], block_n=w["block_n"], layout=w["layout"], k=w["k"], n=w["n"])
    xr = float(jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32)))))
    wr = float(jnp.sqrt(jnp.mean(jnp.square(w_f32))))
    return eps_out, 2.0**-6 * math.sqrt(w["k"]) * xr * wr
