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
    if layout == "mma":  # whole tiles, as `blocks.quantize_blocks` pads
        kp, np_ = blocks.mma_padded(k, n, case.element_dtype, case.block_k, bn)
        bk = case.block_k or kp
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
    if layout in ("nk", "mma"):
        values = values.T
        scales = scales.T
        zeros = zeros.T if zeros is not None else None
    if layout == "mma":
        values = blocks.nk_to_mma(values, edt)
    return dict(values=values, scales=scales, zeros=zeros, global_scale=global_scale,
                element_dtype=edt, block_k=bk, block_n=bn, layout=layout, k=k, n=n)


def stored_bytes(w: dict) -> int:
    return sum(int(np.prod(a.shape)) * a.dtype.itemsize
               for a in (w["values"], w["scales"], w["zeros"]) if a is not None)


def weight_spec(w: dict) -> WeightSpec:
    """The kernels' static description of a `random_weight` (padded sizes read off the arrays,
    as `api.weight_only_matmul` does)."""
    values = w["values"]
    return WeightSpec(element_dtype=jnp.dtype(w["element_dtype"]), scale_dtype=jnp.dtype(w["scales"].dtype),
                      block_k=w["block_k"], block_n=w["block_n"], layout=w["layout"], k=w["k"], n=w["n"],
                      kp=blocks.stored_kp(values, w["element_dtype"], w["layout"]),
                      np_=values.shape[1 if w["layout"] == "kn" else 0], has_zeros=w["zeros"] is not None,
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


def run_ptx(asm: str, word, n_out: int) -> list[np.ndarray]:
    """Executes the straight-line PTX of the upcasts and lane factors (mov, shl, shr, xor,
    and, prmt, lop3 on .b32; mov.b32 packing and unpacking 16-bit halves; shr.s32; sub.f32;
    cvt.rn.bf16x2.f32, cvt.rn.f16x2.e4m3x2, cvt.f32.f16; mul.rn.bf16x2) on vectors of 32-bit
    input words (one array: $n_out; a list: $n_out, $n_out + 1, ...); returns the output
    registers $0..$n_out-1. 16-bit registers hold their bits in the low half of a uint32."""
    words = [word] if isinstance(word, np.ndarray) else list(word)
    word = np.broadcast_arrays(*words)[0]
    regs = {f"${n_out + i}": w.astype(np.uint32) for i, w in enumerate(words)}

    def val(tok):
        if tok in regs:
            return regs[tok]
        return np.uint32(int(tok[2:], 16) if tok.startswith("0f") else int(tok, 0))  # 0fXXXXXXXX: f32 bits

    f32 = lambda v: np.asarray(v, np.uint32).view(np.float32)  # noqa: E731
    for line in asm.strip("{}\n").split("\n"):
        op, _, rest = line.strip().rstrip(";").partition(" ")
        if op == "mov.b32" and rest.startswith("{"):  # {lo, hi}, src: unpack the halves
            halves, src = rest[1:].split("}, ")
            lo, hi = halves.split(", ")
            w32 = np.broadcast_to(val(src), word.shape)
            regs[lo], regs[hi] = w32 & np.uint32(0xFFFF), w32 >> np.uint32(16)
            continue
        if op == "mov.b32" and "{" in rest:  # dst, {lo, hi}: pack two 16-bit registers
            dst, halves = rest.split(", {")
            lo, hi = halves.rstrip("}").split(", ")
            regs[dst] = (val(lo) & np.uint32(0xFFFF)) | (val(hi) << np.uint32(16))
            continue
        args = [a.strip() for a in rest.split(",")]
        if op.startswith(".reg"):
            continue
        if op == "cvt.rn.f16x2.e4m3x2":  # byte i of a -> half i of d, exact
            b = val(args[1])
            half = lambda v: (v & np.uint32(0xFF)).astype(np.uint8).view(jnp.float8_e4m3fn).astype(  # noqa: E731
                np.float16).view(np.uint16).astype(np.uint32)
            regs[args[0]] = half(b) | (half(b >> np.uint32(8)) << np.uint32(16))
            continue
        if op == "cvt.f32.f16":
            h = (val(args[1]) & np.uint32(0xFFFF)).astype(np.uint16).view(np.float16)
            regs[args[0]] = h.astype(np.float32).view(np.uint32)
            continue
        if op == "mov.b32":
            regs[args[0]] = np.broadcast_to(val(args[1]), word.shape).astype(np.uint32)
        elif op == "shl.b32":
            regs[args[0]] = (val(args[1]) << np.uint32(int(args[2]))).astype(np.uint32)
        elif op == "shr.b32":
            regs[args[0]] = (val(args[1]) >> np.uint32(int(args[2]))).astype(np.uint32)
        elif op == "prmt.b32":  # bytes of {b, a}: selector nibble i picks result byte i
            a, b, sel = val(args[1]), val(args[2]), int(args[3], 0)
            src = [(a >> np.uint32(8 * i)) & np.uint32(0xFF) for i in range(4)]
            src += [(b >> np.uint32(8 * i)) & np.uint32(0xFF) for i in range(4)]
            regs[args[0]] = sum((src[(sel >> 4 * i) & 7] << np.uint32(8 * i)) for i in range(4)).astype(np.uint32)
        elif op == "shr.s32":  # arithmetic: the sign bit is replicated
            regs[args[0]] = (val(args[1]).view(np.int32) >> np.int32(int(args[2]))).view(np.uint32)
        elif op == "and.b32":
            regs[args[0]] = (val(args[1]) & val(args[2])).astype(np.uint32)
        elif op == "mul.rn.bf16x2":  # lane-wise bf16 products, subnormal inputs kept, RNE
            def lane(v, i):
                bits = (np.broadcast_to(v, word.shape) >> np.uint32(16 * i)) & np.uint32(0xFFFF)
                return bits.astype(np.uint16).view(jnp.bfloat16).astype(np.float32)
            prod = [(lane(val(args[1]), i) * lane(val(args[2]), i)).astype(jnp.bfloat16).view(np.uint16)
                    for i in (0, 1)]
            regs[args[0]] = (prod[0].astype(np.uint32) | (prod[1].astype(np.uint32) << np.uint32(16)))
        elif op == "xor.b32":
            regs[args[0]] = (val(args[1]) ^ val(args[2])).astype(np.uint32)
        elif op == "sub.f32":
            regs[args[0]] = (f32(val(args[1])) - f32(np.broadcast_to(val(args[2]), word.shape))).view(np.uint32)
        elif op == "cvt.rn.bf16x2.f32":  # upper half from a, lower from b, round to nearest even
            bf = lambda v: f32(v).astype(jnp.bfloat16).view(np.uint16).astype(np.uint32)  # noqa: E731
            regs[args[0]] = ((bf(val(args[1])) << np.uint32(16)) | bf(val(args[2]))).astype(np.uint32)
        elif op == "lop3.b32":
            a, b, c, lut = val(args[1]), val(args[2]), val(args[3]), int(args[4], 0)
            table = {0xEA: (a & b) | c, 0x6A: (a & b) ^ c, 0xA8: (a | b) & c, 0xEC: (a & c) | b}
            regs[args[0]] = table[lut].astype(np.uint32)
        else:
            raise NotImplementedError(op)
    return [regs[f"${i}"] for i in range(n_out)]
