"""The tensor-core decode GEMV (`triton_mma`), modelled on CPU one warp at a time.

The kernel runs only on NVIDIA GPUs (`pytest -m gpu` checks it against the reference). Here
every piece of its arithmetic runs as the GPU would run it, short of Triton's address math:
the "mma" storage layout (`blocks.nk_to_mma`), the upcast's inline PTX (the very string the
kernel assembles, executed by `testing.run_ptx`) on the words each lane loads, `mma.sync` m16n8k16
on the lanes' fragments (PTX ISA's fragment layout for .bf16/.f16: A rows g, g + 8 and K
pairs 2t, 2t + 8; B K pairs 2t, 2t + 8 of column g; D rows g, g + 8, columns 2t, 2t + 1),
the all-ones MMA that sums x, and the per-chunk correction `(acc - (offset + z) * S) * s`.
Together they must give the reference product on fresh random stored weights.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels import blocks
from pallas_kernels.weight_only import testing, triton_mma
from pallas_kernels.weight_only.reference import weight_only_matmul_reference
from pallas_kernels.weight_only.testing import run_ptx

NP_X = {"bf16": jnp.bfloat16, "f16": jnp.float16}


def as_pairs(reg: np.ndarray, xt: str) -> np.ndarray:
    """(...,) uint32 -> (..., 2) f32 of the two 16-bit halves (low half first)."""
    reg = np.asarray(reg, np.uint32)
    return reg.reshape(-1).view(np.uint16).reshape(*reg.shape, 2).view(NP_X[xt]).astype(np.float32)


def mma(a_regs, b_regs, xt):
    """m16n8k16 on one warp: a_regs (4, 32) and b_regs (2, 32) uint32 per lane -> D (16, 8)."""
    a = np.zeros((16, 16), np.float32)
    b = np.zeros((16, 8), np.float32)
    for lane in range(32):
        g, t = divmod(lane, 4)
        for r, (row, col) in enumerate([(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)]):
            a[row, col:col + 2] = as_pairs(a_regs[r][lane], xt)
        for r, krow in enumerate([2 * t, 2 * t + 8]):
            b[krow:krow + 2, g] = as_pairs(b_regs[r][lane], xt)
    return a.astype(np.float64) @ b.astype(np.float64)


def model_kernel(x, w, xt) -> np.ndarray:
    """The kernel's output (M, n), one warp per 16-row tile, all M in n8 blocks."""
    edt = jnp.dtype(w["element_dtype"])
    values = np.asarray(w["values"])
    nrows = values.shape[0]
    ck = blocks.mma_chunk_k(edt)
    kp = ck * (values.shape[1] // 64)
    chunks, tiles = kp // ck, nrows // 16
    words = values.reshape(-1).view(np.uint32).reshape(tiles, chunks, 256)
    m = x.shape[0]
    xp = np.zeros((-(-m // 8) * 8, kp), np.float32)
    xp[:m, :x.shape[1]] = np.asarray(x, np.float32)
    xw = xp.astype(NP_X[xt]).view(np.uint32)  # (rows, kp / 2) pairs
    bk = w["block_k"]
    floats = edt in triton_mma.FLOAT_BIAS
    lane_scales = floats and bk < kp and bk % ck != 0  # MODE 2: scales in the upcast's factors
    nf = 2 if lane_scales and bk < ck // 4 else 1
    off = 0.0 if floats else triton_mma.offset(edt, xt)
    s = np.asarray(w["scales"], np.float32)  # (N, K / block)
    z = np.asarray(w["zeros"], np.float32) if w["zeros"] is not None else None
    asm = triton_mma.float_upcast_asm(edt, nf) if floats else triton_mma.upcast_asm(edt, xt)
    ones = np.full((32,), (triton_mma.MAGIC[xt][2] * 0x10001), np.uint32)
    out = np.zeros((xp.shape[0], nrows))
    lanes = np.arange(32)
    g, t = lanes // 4, lanes % 4
    for tile in range(tiles):
        for c in range(chunks):
            wd = words[tile, c]
            ins = [wd[lanes * 4 + i] for i in range(4)] + [wd[128 + lanes * 4 + i] for i in range(4)]
            if floats:
                ins += lane_factors(w, tile, c, ck, nf) if lane_scales else [np.uint32(triton_mma._float_factors(
                    triton_mma.FLOAT_BIAS[edt])["FAC"])] * 4
            frags = run_ptx(asm, ins, 16 if edt == jnp.float8_e4m3fn else 32)
            rows = tile * 16 + np.r_[0:16]
            srow = (c * ck) // bk if bk < kp else 0
            for b0 in range(0, xp.shape[0], 8):
                def xvec(v):  # the lane's 4 x words of x vector v in this chunk
                    base = c * ck // 2 + t * (ck // 8) + 4 * v
                    return [xw[b0 + g, base + j] for j in range(4)]
                acc = np.zeros((16, 8))
                hi = np.zeros((16, 8))
                xs = np.zeros((16, 8))
                for v in range(ck // 32):
                    xr = xvec(v)
                    xs += mma([ones] * 4, xr[:2], xt) + mma([ones] * 4, xr[2:], xt)
                    if edt == jnp.int8:  # fragments 0-3: lo plane, 4-7: hi plane
                        acc += mma(frags[8 * v:8 * v + 4], xr[:2], xt) + mma(frags[8 * v + 4:8 * v + 8], xr[2:], xt)
                        hi += (mma(frags[16 + 8 * v:16 + 8 * v + 4], xr[:2], xt)
                               + mma(frags[16 + 8 * v + 4:16 + 8 * v + 8], xr[2:], xt))
                    else:
                        acc += mma(frags[8 * v:8 * v + 4], xr[:2], xt) + mma(frags[8 * v + 4:8 * v + 8], xr[2:], xt)
                cz = off + (z[rows, srow][:, None] if z is not None else 0.0)
                d = acc + 16 * hi - cz * xs
                scale = 2.0 ** triton_mma.SCALE_SHIFT if lane_scales else s[rows, srow][:, None]
                out[b0:b0 + 8, rows] += (d * scale).T
    if w["global_scale"] is not None:
        out *= float(w["global_scale"])
    return out[:m]


def lane_factors(w, tile, c, ck, nf) -> list[np.ndarray]:
    """The 4 factor registers of every lane (rows g, g + 8; then those of the second block of
    its K run): bf16x2 bits of scale * 2**(bias - SCALE_SHIFT), written out from the formats'
    definitions (e8m0 2**(e - 127); other scales their float value)."""
    edt = jnp.dtype(w["element_dtype"])
    bias = triton_mma.FLOAT_BIAS[edt]
    g, t = np.arange(32) // 4, np.arange(32) % 4
    regs = []
    for half in range(2):
        for row in range(2):
            n = tile * 16 + g + 8 * row
            kb = (c * ck + t * (ck // 4) + half * (ck // 8) * (nf - 1)) // w["block_k"]
            sc = np.asarray(w["scales"])[n, kb]
            if sc.dtype == jnp.float8_e8m0fnu:
                e = sc.view(np.uint8).astype(np.float64) - 127
                val = 2.0 ** (e + bias - triton_mma.SCALE_SHIFT)
            else:
                val = sc.astype(np.float64) * 2.0 ** (bias - triton_mma.SCALE_SHIFT)
            bits = val.astype(np.float32).astype(jnp.bfloat16).view(np.uint16).astype(np.uint32)
            regs.append(bits | (bits << np.uint32(16)))
    return regs


@pytest.mark.parametrize("label,xt", [(label, xt) for label in ("int4-g128", "uint4-g128", "int8")
                                      for xt in ("bf16", "f16")]
                         + [(label, "bf16") for label in ("mxfp4", "nvfp4", "fp8", "mxfp8")])
def test_mma_kernel_math_matches_reference(label, xt):
    case = testing.CASES_BY_LABEL[label]
    k, n, m = 256, 32, 3
    w = testing.random_weight(jax.random.key(7), case, k, n, layout="mma")
    x = jax.random.normal(jax.random.key(8), (m, k), jnp.float32).astype(NP_X[xt])
    ref = weight_only_matmul_reference(
        x, w["values"], w["scales"], w["zeros"], w["global_scale"], element_dtype=case.element_dtype,
        block_k=w["block_k"], block_n=1, layout="mma", k=k, n=n, out_dtype=jnp.float32)
    got = model_kernel(x, w, xt)
    np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-5, atol=1e-4 * float(jnp.abs(ref).max()))


@pytest.mark.parametrize("ck", [128, 64])  # 4-bit and 8-bit chunks
@pytest.mark.parametrize("m,nb", [(1, 1), (5, 1), (13, 1), (16, 2), (13, 2), (27, 2)])
def test_fragment_order_x_is_what_each_lane_loads(ck, m, nb):
    """x_mode 2's x, read at the kernel's fragment-order addresses (pass mb, chunk c, n8 block
    b, vector v, lane 4g + t, word j: word (((mb * CT + c) * NB + b) * NV + v) * 128 + 4 lane
    + j), holds what x_mode 1 reads at row 8 NB mb + 8 b + g, word c * ck / 2 + t * ck / 8 +
    4 v + j, for every lane of every load; rows past M are zeros (their outputs are dropped)."""
    k, kp = 3 * ck - 6, 3 * ck
    x = jax.random.normal(jax.random.key(m), (m, k), jnp.float32).astype(jnp.bfloat16)
    xf = np.asarray(triton_mma.fragment_order_x(x, kp, ck, nb)).reshape(-1).view(np.uint32)
    plain = np.zeros((-(-m // (8 * nb)) * 8 * nb, kp), np.float32)
    plain[:m, :k] = np.asarray(x, np.float32)
    words = plain.astype(jnp.bfloat16).view(np.uint32)  # (rows, kp / 2)
    ct, nv = kp // ck, ck // 32
    seen = 0
    for mb in range(words.shape[0] // (8 * nb)):
        for c in range(ct):
            for b in range(nb):
                for v in range(nv):
                    for lane in range(32):
                        g, t = divmod(lane, 4)
                        at = (((mb * ct + c) * nb + b) * nv + v) * 128 + 4 * lane
                        want = words[8 * nb * mb + 8 * b + g, c * ck // 2 + t * ck // 8 + 4 * v:][:4]
                        np.testing.assert_array_equal(xf[at:at + 4], want)
                        seen += 4
    assert seen == xf.size


@pytest.mark.parametrize("label", ["int4-g128", "uint4-g128", "int8"])
def test_upcast_gives_magic_plus_code_on_every_byte(label):
    """One LOP3 per pair: bf16 128 + code (int4: 136 + code; int8: its two nibble planes)."""
    edt = testing.CASES_BY_LABEL[label].element_dtype
    words = np.arange(256, dtype=np.uint8).view(np.uint32)  # every byte in every position
    words = np.concatenate([words, np.roll(np.arange(256, dtype=np.uint8), 1).view(np.uint32)])
    outs = run_ptx(triton_mma.upcast_asm(edt, "bf16"), [words] * 8, 32)
    for frag in range(8):
        for slot in range(2):
            got = as_pairs(outs[4 * frag + 2 * slot], "bf16")  # row g's pair of this fragment slot
            # which nibble pair (j) feeds (frag, slot): 4-bit frag 2i + j // 2, slot j % 2;
            # int8 lo plane frag i (j = 0, 2), hi plane 4 + i (j = 1, 3)
            j = (2 * slot + (frag >= 4)) if jnp.dtype(edt) == jnp.int8 else 2 * (frag % 2) + slot
            nib = np.stack([(words >> (4 * j)) & 15, (words >> (4 * j + 16)) & 15], -1).astype(np.int64)
            signed = jnp.dtype(edt) == jnp.int4 or (jnp.dtype(edt) == jnp.int8 and j % 2 == 1)
            want = 128 + (nib ^ 8 if signed else nib)
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("codes", [jnp.float4_e2m1fn, jnp.float8_e4m3fn])
@pytest.mark.parametrize("nf", [1, 2])
def test_e4m3_lane_factors_are_the_scale_times_2_to_the_fx(codes, nf):
    """Every e4m3 scale byte (NaN, zero and negative ones included) in both places of the
    16-bit word a lane loads: the factors are bf16 scale * 2**(bias - SCALE_SHIFT), each in
    both halves; nf == 1 repeats the first block's."""
    fx = triton_mma.FLOAT_BIAS[jnp.dtype(codes)] - triton_mma.SCALE_SHIFT
    b = np.arange(256, dtype=np.uint32)
    words = [b | (np.roll(b, 7) << np.uint32(8)), np.roll(b, 100) | (b << np.uint32(8))]  # rows g, g + 8
    if nf == 1:
        words = [w & np.uint32(0xFF) for w in words]
    outs = run_ptx(triton_mma.lane_e4m3_factor_asm(nf, fx), words + words, 4)

    def factor(byte):
        v = byte.astype(np.uint8).view(jnp.float8_e4m3fn).astype(np.float64) * 2.0 ** fx
        bits = v.astype(np.float32).astype(jnp.bfloat16).view(np.uint16).astype(np.uint32)
        return bits | (bits << np.uint32(16))

    for reg, (row, block) in enumerate([(0, 0), (1, 0), (0, 1), (1, 1)]):
        byte = (words[row] >> np.uint32(8 * (block if nf == 2 else 0))) & np.uint32(0xFF)
        got, want = outs[reg], factor(byte)
        nan = np.isnan(byte.astype(np.uint8).view(jnp.float8_e4m3fn).astype(np.float32))
        assert nan.sum() == 2  # 0x7f and 0xff: every byte is in every place
        np.testing.assert_array_equal(got[~nan], want[~nan])
        halves = np.stack([got[nan] & np.uint32(0xFFFF), got[nan] >> np.uint32(16)])
        assert np.isnan(halves.astype(np.uint16).view(jnp.bfloat16).astype(np.float32)).all()


@pytest.mark.parametrize("block_k,ok", [(8, False), (16, True), (24, False), (32, True), (48, False),
                                        (64, True), (96, False), (256, True)])
def test_mma_float_blocks_divide_the_chunk(block_k, ok):
    """e2m1 codes (128-long chunks, 32-long lane runs): a lane's run lies in one block or in
    two adjacent half-run blocks, which its factors' 16-bit scale load reads."""
    why = blocks.mma_format_reason(jnp.float4_e2m1fn, block_k, jnp.float8_e4m3fn)
    assert (why is None) == ok, why


@pytest.mark.parametrize("label", ["int4-g128", "uint4-g128", "int8", "mxfp4", "nvfp4", "fp8"])
@pytest.mark.parametrize("k,n", [(256, 48), (200, 40)])
def test_mma_layout_round_trips(label, k, n):
    """"mma" is a byte permutation of "nk": the same values, scales and dequantized weight."""
    case = testing.CASES_BY_LABEL[label]
    w = jax.random.normal(jax.random.key(3), (k, n), jnp.float32)
    q = dict(element_dtype=case.element_dtype, scale_dtype=case.scale_dtype, block_k=case.block_k,
             block_n=case.block_n, scale_rule="minmax" if case.zeros else "absmax")
    nk = blocks.quantize_blocks(w, **q, layout="nk")
    mm = blocks.quantize_blocks(w, **q, layout="mma")
    assert mm[0].shape[0] % 16 == 0 and mm[0].shape[1] % 64 == 0
    back = blocks.mma_to_nk(mm[0], case.element_dtype)
    np.testing.assert_array_equal(np.asarray(blocks.nk_to_mma(back, case.element_dtype)), np.asarray(mm[0]))
    def block_k(values):  # per channel: the whole padded K
        return case.block_k or blocks.stored_kp(values, case.element_dtype, "nk")
    kw = dict(element_dtype=case.element_dtype, block_n=1, k=k, n=n)
    a = blocks.dequantize_blocks(nk[0], nk[1], nk[2], layout="nk", block_k=block_k(nk[0]), **kw)
    b = blocks.dequantize_blocks(mm[0], mm[1], mm[2], layout="mma", block_k=block_k(mm[0]), **kw)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("label,m,x_dtype,reads", [
    ("int4-g128", 1, jnp.bfloat16, True), ("int4-g128", 32, jnp.float16, True),
    ("int4-g128", 33, jnp.bfloat16, False),  # past MMA_MAX_M: the prefill-style tiles on an "nk" copy
    ("mxfp4", 16, jnp.bfloat16, True), ("nvfp4", 1, jnp.bfloat16, True), ("mxfp8", 3, jnp.bfloat16, True),
    ("mxfp4", 1, jnp.float16, False),  # float codes meet x in bf16 MMAs only
])
def test_mma_weights_route_to_the_gemv_only_where_it_serves(label, m, x_dtype, reads, monkeypatch):
    """What `weight_only_matmul` sends to the tensor-core GEMV on a GPU (kernel launch
    replaced by a recorder): "mma" weights it serves at M <= MMA_MAX_M; the rest get their
    "nk" bytes back and another kernel; an explicit mma config with f16 x on float codes is
    refused with the reason."""
    from pallas_kernels.weight_only import api, triton_kernel
    from pallas_kernels.weight_only.config import TileConfig
    monkeypatch.setattr(api, "_on_gpu", lambda: True)
    monkeypatch.setattr(triton_kernel, "available", lambda: None)
    seen = []

    def record(x, values, scales, zeros, g, **kw):
        seen.append((kw["cfg"].kernel, kw["spec"].layout))
        return jnp.zeros((x.shape[0], kw["spec"].n), kw["out_dtype"])
    monkeypatch.setattr(api, "_batched_kernel_call", record)
    case = testing.CASES_BY_LABEL[label]
    w = testing.random_weight(jax.random.key(0), case, 512, 64, layout="mma")
    x = jnp.ones((m, 512), x_dtype)
    api.weight_only_matmul(x, **w)
    assert seen == ([("mma", "mma")] if reads else [(seen[0][0], "nk")]) and (reads or seen[0][0] != "mma")
    if not reads and x_dtype == jnp.float16:
        cfg = TileConfig(kernel="mma", block_m=8, block_n=64, block_k=128, num_warps=4, num_stages=1)
        with pytest.raises(NotImplementedError, match="bfloat16 x only"):
            api.weight_only_matmul(x, **w, impl="triton", config=cfg)


@pytest.mark.parametrize("element_dtype", [jnp.int8, jnp.int4, jnp.uint4])
def test_stored_k_order_reads_mma_chunks(element_dtype):
    """`blocks.stored_k_order`: in the 4-d view (16-row tiles, 64-byte chunks) that the
    register-operand Mosaic kernel boxes per K step, code field q of a chunk's row holds K
    offset stored_k_order(q); "nk" is the identity."""
    four = blocks.is_four_bit(element_dtype)
    n, kp = 32, 256
    ck = blocks.mma_chunk_k(element_dtype)
    k_of = np.broadcast_to(np.arange(kp), (n, kp))  # each code = its K index (mod its range)
    codes = k_of % 16 if four else (k_of % 256) - 128
    if four:
        values = blocks.pack_nibbles(jnp.asarray(codes, jnp.uint8), axis=1)
    else:
        values = jnp.asarray(codes, jnp.int8)
    view = np.asarray(blocks.nk_to_mma(values, element_dtype)).reshape(n // 16, kp // ck, 16, -1)
    if four:  # the fields of each byte: low nibble first
        view = np.stack([view & 15, view >> 4], -1).reshape(*view.shape[:-1], -1)
    want = blocks.stored_k_order(element_dtype, "mma", ck)
    for c in range(kp // ck):
        got = view[:, c].astype(np.int64)
        expect = (c * ck + want) % 16 if four else ((c * ck + want) % 256) - 128
        np.testing.assert_array_equal(got, np.broadcast_to(expect, got.shape))
    np.testing.assert_array_equal(blocks.stored_k_order(element_dtype, "nk", ck), np.arange(ck))
