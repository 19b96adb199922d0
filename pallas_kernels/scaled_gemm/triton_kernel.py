"""Block-scaled GEMM in raw Triton, called from JAX through `jax_triton.triton_call`.

Why Triton and not Pallas here: on H100 a plain Triton K-loop fp8 GEMM reached ~1090
TFLOP/s where the same loop through Pallas-Triton reached ~470; Mosaic GPU's wgmma path
has no fp8/int8 x fp8/int8 example to start from yet. This module imports `triton`, so it
is only imported on a GPU machine (see `api.py`); on CPU the Pallas kernel in `kernel.py`
(same algorithm, same arguments) runs interpreted.

One kernel, three modes chosen from the block shapes (never from a format name):
  MODE_EPILOGUE  scales constant along K (per-token x, per-channel w): acc = sum over K of
                 dot(x_tile, w_tile) in int32 (int8) or f32 (fp8), then y = acc * sx * sw.
  MODE_PROMOTE   scales change every G = min(x_block_k, w_block_k) along K (DeepSeek-V3
                 1x128 x 128x128, JetFire 1x32 x 32x32, MX emulation): each G-wide slice is
                 accumulated in fresh registers ("partial") and promoted into the f32
                 accumulator: acc += partial * sx[:, g] * sw[g, :] (DeepGEMM's recipe).
  MODE_DOT_SCALED  MX formats (E8M0 scales per 32 along K, per output channel): Triton's
                 `tl.dot_scaled` (on Hopper the compiler upcasts to bf16 and folds the
                 power-of-two scales in, exactly). Also takes packed float4_e2m1 weights.

Tiles: BLOCK_M x BLOCK_N outputs per program, BLOCK_K along K per step; grouped launch
order (GROUP_M) for L2 reuse. Storage follows `pallas_kernels.blocks`: x values (M, Kp),
x scales (M, Kp/gx); weights "nk" (Np, Kp) [packed fp4: (Np, Kp/2)] with scales
(Np/bn, Kp/gw), or "kn" (Kp, Np) with (Kp/gw, Np/bn). E8M0 scales travel as uint8 bits.
All sizes are constexpr (jit shapes are static anyway), so Triton sees divisibility.
"""

from __future__ import annotations

import triton
import triton.language as tl

MODE_EPILOGUE, MODE_PROMOTE, MODE_DOT_SCALED = 0, 1, 2


@triton.jit
def _decode_scale(s, E8M0: tl.constexpr):
    """f32 value of a scale tensor: E8M0 bits (uint8) -> 2**(s-127), else a plain cast."""
    if E8M0:
        bits = s.to(tl.int32)
        # exponent bits 0 is 2**-127, a subnormal: 0x00400000.
        bits = tl.where(bits == 0, 0x00400000, bits << 23)
        return bits.to(tl.float32, bitcast=True)
    else:
        return s.to(tl.float32)


@triton.jit
def _fp4_to_fp8(packed):
    """(BK/2, BN) uint8 of two e2m1 codes (low nibble = even k) -> (BK, BN) float8e4nv."""
    lo = packed & 0xF
    hi = packed >> 4
    codes = tl.reshape(tl.permute(tl.join(lo, hi), (0, 2, 1)),
                       (2 * packed.shape[0], packed.shape[1]))
    sign = (codes & 0x8) << 4
    e2 = (codes >> 1) & 0x3
    m1 = codes & 0x1
    # e2m1 (bias 1) -> e4m3 (bias 7): normal codes move exponent by +6; 0.5 (e2=0,m=1)
    # becomes 2**-1 = exponent 6, mantissa 0; zero stays zero.
    mag = tl.where(e2 == 0, m1 * (6 << 3), ((e2 + 6) << 3) | (m1 << 2))
    return (sign | mag).to(tl.uint8).to(tl.float8e4nv, bitcast=True)


@triton.jit
def _to_f32(part, ACC_INT: tl.constexpr, G: tl.constexpr):
    if ACC_INT and G <= 256:
        # |part| <= 128 * 128 * G < 2**22: int -> f32 by adding 1.5 * 2**23 to the bits
        # (one integer add + one float add) instead of I2F, which Hopper issues at a
        # quarter of the FFMA rate and which dominated the promotion loop.
        return (part + 0x4B400000).to(tl.float32, bitcast=True) - 12582912.0
    else:
        return part.to(tl.float32)


@triton.jit
def _group_scale(xs_ptr, ws_ptr, rm, rn, pid_n, k0, NXS: tl.constexpr, KP: tl.constexpr,
                 NP: tl.constexpr, GX: tl.constexpr, GW: tl.constexpr, BNW: tl.constexpr,
                 W_NK: tl.constexpr, X_E8M0: tl.constexpr, W_E8M0: tl.constexpr,
                 BLOCK_N: tl.constexpr):
    """sx[:, g] (x) sw[g, :] for the scale group starting at K offset k0 (broadcastable)."""
    sx = _decode_scale(tl.load(xs_ptr + rm * NXS + k0 // GX), X_E8M0)
    if (BNW % BLOCK_N) == 0:      # one weight scale for the whole tile
        nb = (pid_n * BLOCK_N) // BNW
        if W_NK:
            sw = _decode_scale(tl.load(ws_ptr + nb * (KP // GW) + k0 // GW), W_E8M0)
        else:
            sw = _decode_scale(tl.load(ws_ptr + (k0 // GW) * (NP // BNW) + nb), W_E8M0)
        return (sx * sw)[:, None]
    else:
        if W_NK:
            sw = _decode_scale(tl.load(ws_ptr + (rn // BNW) * (KP // GW) + k0 // GW), W_E8M0)
        else:
            sw = _decode_scale(tl.load(ws_ptr + (k0 // GW) * (NP // BNW) + rn // BNW), W_E8M0)
        return sx[:, None] * sw[None, :]


@triton.jit
def scaled_gemm_kernel(
    x_ptr, xs_ptr, w_ptr, ws_ptr, y_ptr,
    M: tl.constexpr, N: tl.constexpr, KP: tl.constexpr, NP: tl.constexpr,
    GX: tl.constexpr, GW: tl.constexpr, BNW: tl.constexpr,
    W_NK: tl.constexpr, W_FP4: tl.constexpr, X_E8M0: tl.constexpr, W_E8M0: tl.constexpr,
    ACC_INT: tl.constexpr, MODE: tl.constexpr, GPS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Rows/cols past the edge wrap around (valid memory, results masked at the store),
    # which keeps masks out of the K loop.
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    rn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % NP
    rk = tl.arange(0, BLOCK_K)
    NXS: tl.constexpr = KP // GX          # x scale columns
    KW: tl.constexpr = KP // 2 if W_FP4 else KP   # stored weight K extent
    BKW: tl.constexpr = BLOCK_K // 2 if W_FP4 else BLOCK_K
    rkw = tl.arange(0, BKW)

    x_ptrs = x_ptr + rm[:, None] * KP + rk[None, :]
    if W_NK:
        w_ptrs = w_ptr + rn[None, :] * KW + rkw[:, None]       # (BKW, BLOCK_N), K-major
        w_step = BKW
    else:
        w_ptrs = w_ptr + rkw[:, None] * NP + rn[None, :]
        w_step = BKW * NP

    if ACC_INT:
        acc_dtype = tl.int32
    else:
        acc_dtype = tl.float32

    if MODE == 0:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
        for _ in range(0, KP // BLOCK_K):
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
            if W_FP4:
                b = _fp4_to_fp8(b)
            acc = tl.dot(a, b, acc, out_dtype=acc_dtype)
            x_ptrs += BLOCK_K
            w_ptrs += w_step
        sx = _decode_scale(tl.load(xs_ptr + rm * NXS), X_E8M0)
        if W_NK:
            sw = _decode_scale(tl.load(ws_ptr + (rn // BNW) * (KP // GW)), W_E8M0)
        else:
            sw = _decode_scale(tl.load(ws_ptr + rn // BNW), W_E8M0)
        y = acc.to(tl.float32) * sx[:, None] * sw[None, :]
    elif MODE == 1:
        G: tl.constexpr = GX if GX < GW else GW
        TPG: tl.constexpr = G // BLOCK_K          # K tiles per scale group
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        if GPS == 2:
            # Two groups per step: both partial products are issued before either is
            # promoted, so the second wgmma chain can overlap the first one's FMAs.
            for g in range(0, KP // G, 2):
                p0 = tl.dot(tl.load(x_ptrs), tl.load(w_ptrs), out_dtype=acc_dtype)
                p1 = tl.dot(tl.load(x_ptrs + BLOCK_K), tl.load(w_ptrs + w_step),
                            out_dtype=acc_dtype)
                x_ptrs += 2 * BLOCK_K
                w_ptrs += 2 * w_step
                acc += _to_f32(p0, ACC_INT, G) * _group_scale(
                    xs_ptr, ws_ptr, rm, rn, pid_n, g * G, NXS, KP, NP, GX, GW, BNW, W_NK,
                    X_E8M0, W_E8M0, BLOCK_N)
                acc += _to_f32(p1, ACC_INT, G) * _group_scale(
                    xs_ptr, ws_ptr, rm, rn, pid_n, (g + 1) * G, NXS, KP, NP, GX, GW, BNW,
                    W_NK, X_E8M0, W_E8M0, BLOCK_N)
        else:
            for g in range(0, KP // G):
                part = tl.zeros((BLOCK_M, BLOCK_N), dtype=acc_dtype)
                for _ in range(0, TPG):
                    a = tl.load(x_ptrs)
                    b = tl.load(w_ptrs)
                    if W_FP4:
                        b = _fp4_to_fp8(b)
                    part = tl.dot(a, b, part, out_dtype=acc_dtype)
                    x_ptrs += BLOCK_K
                    w_ptrs += w_step
                acc += _to_f32(part, ACC_INT, G) * _group_scale(
                    xs_ptr, ws_ptr, rm, rn, pid_n, g * G, NXS, KP, NP, GX, GW, BNW, W_NK,
                    X_E8M0, W_E8M0, BLOCK_N)
        y = acc
    else:
        # MX: 32-element E8M0 scale blocks along K, one per output channel (BNW == 1).
        SB: tl.constexpr = BLOCK_K // 32
        rs = tl.arange(0, SB)
        xs_ptrs = xs_ptr + rm[:, None] * NXS + rs[None, :]
        if W_NK:
            ws_ptrs = ws_ptr + rn[:, None] * (KP // 32) + rs[None, :]
            ws_step = SB
        else:
            ws_ptrs = ws_ptr + rs[None, :] * NP + rn[:, None]
            ws_step = SB * NP
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for _ in range(0, KP // BLOCK_K):
            a = tl.load(x_ptrs)
            b = tl.load(w_ptrs)
            a_s = tl.load(xs_ptrs)
            b_s = tl.load(ws_ptrs)
            if W_FP4:
                acc = tl.dot_scaled(a, a_s, "e4m3", b, b_s, "e2m1", acc)
            else:
                acc = tl.dot_scaled(a, a_s, "e4m3", b, b_s, "e4m3", acc)
            x_ptrs += BLOCK_K
            w_ptrs += w_step
            xs_ptrs += SB
            ws_ptrs += ws_step
        y = acc

    om = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    on = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    y_ptrs = y_ptr + om[:, None] * N + on[None, :]
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=(om[:, None] < M) & (on[None, :] < N))
