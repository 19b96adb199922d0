"""Decode-regime (small M) weight-only kernels in Triton: FMA GEMVs and a swap-AB dot.

Same arguments, storage contract and scale modes as `triton_kernel._weight_only_kernel`
(they share its launcher, `_decode_tile` upcasts and `_decode_scale`); they differ in how a
tile's product is formed, which is what decides whether a memory-bound decode streams the
weight at HBM bandwidth:

    gemv     no tensor cores, one row of x per program (M = 1, 2). The product x[k] * w[k, n]
             is accumulated elementwise in a (K tile, BN) register array across the whole K
             range, with the block scale (and zero point) folded into the decoded weight by
             one FMA; the reduction over K happens once, after the loop.
    fma      no tensor cores. Each program owns BN output columns and a K range; per K tile
             the decoded weight (R x BN, f32) is multiplied by each of the BM <= 8 rows of x
             and reduced over K in registers. Nothing is padded to 16 rows, and no operand
             goes through shared memory. For M of 1 to a few.
    swapab   out^T = W^T x^T on tensor cores: the decoded weight tile is the *first* dot
             operand (it can stay in registers; tl.dot's second operand goes through shared
             memory, and that is now the tiny x tile), the output tile is (BN, BM) with BM
             = 16..64 rows of x. For M of about 8 to 64.

Both handle scale modes 0 (per channel: scales after the K loop) and 1 (the K tile lies
inside one scale block: one multiply per output per tile); a tile spanning several scale
blocks (mode 2) is the `dot` kernel's job (`TileConfig.check` says so).
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the Triton path reports itself unavailable.
    triton = None

if triton is not None:
    from pallas_kernels.weight_only.triton_kernel import _decode_scale, _decode_tile

    @triton.jit
    def _load_scales(s_ptr, z_ptr, srow, scol, ok, ssk, ssn, SCALE: tl.constexpr,
                     HAS_Z: tl.constexpr, FACTOR: tl.constexpr, OFFSET: tl.constexpr):
        """(scale * FACTOR, zero + OFFSET) of one scale row for the given columns."""
        s = _decode_scale(tl.load(s_ptr + srow * ssk + scol * ssn, mask=ok, other=0), SCALE) * FACTOR
        if HAS_Z:
            z = _decode_scale(tl.load(z_ptr + srow * ssk + scol * ssn, mask=ok, other=0), SCALE) + OFFSET
        else:
            z = tl.zeros_like(s) + OFFSET
        return s, z

    @triton.jit
    def _gemv_fma_kernel(
        x_ptr, w_ptr, s_ptr, z_ptr, g_ptr,
        M, K, N, NP, KS,
        sxm, sxk, swk, swn, ssk, ssn, sos, som, son,
        o_ptr,
        ELEM: tl.constexpr, SCALE: tl.constexpr, SBK: tl.constexpr, SBN: tl.constexpr,
        HAS_Z: tl.constexpr, HAS_G: tl.constexpr, FAST: tl.constexpr,
        OFFSET: tl.constexpr, FACTOR: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
        MODE: tl.constexpr, XMODE: tl.constexpr,
        SPLIT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    ):
        FOUR: tl.constexpr = ELEM == 1 or ELEM == 2 or ELEM == 4
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_s = tl.program_id(2)
        offs_m = pid_m * BM + tl.arange(0, BM)
        offs_n = pid_n * BN + tl.arange(0, BN)
        n_ok = offs_n < NP
        scol = offs_n // SBN
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        xacc = tl.zeros((BM, 1), dtype=tl.float32)
        k_begin = pid_s * KS
        for ki in range(0, KS, BK):
            kk = k_begin + ki
            if FOUR:
                rows = kk // 2 + tl.arange(0, BK // 2)
                w = tl.load(w_ptr + rows[:, None] * swk + offs_n[None, :] * swn,
                            mask=(rows[:, None] < (K + 1) // 2) & n_ok[None, :], other=0)
                lo, hi = _decode_tile(w, ELEM, FAST, tl.float32)
                lo = lo.to(tl.float32)
                hi = hi.to(tl.float32)
                ke = kk + 2 * tl.arange(0, BK // 2)
            else:
                offs_k = kk + tl.arange(0, BK)
                w = tl.load(w_ptr + offs_k[:, None] * swk + offs_n[None, :] * swn,
                            mask=(offs_k[:, None] < K) & n_ok[None, :], other=0)
                lo, _ = _decode_tile(w, ELEM, False, tl.float32)
                lo = lo.to(tl.float32)
            if MODE == 1:
                s, z = _load_scales(s_ptr, z_ptr, kk // SBK, scol, n_ok & (kk < K), ssk, ssn,
                                    SCALE, HAS_Z, FACTOR, OFFSET)
            for mi in tl.static_range(BM):
                row = pid_m * BM + mi
                if FOUR:
                    xe = tl.load(x_ptr + row * sxm + ke * sxk, mask=(row < M) & (ke < K), other=0.0).to(tl.float32)
                    xo = tl.load(x_ptr + row * sxm + (ke + 1) * sxk, mask=(row < M) & (ke + 1 < K),
                                 other=0.0).to(tl.float32)
                    d = tl.sum(xe[:, None] * lo + xo[:, None] * hi, axis=0)
                    xs = tl.sum(xe + xo, axis=0)
                else:
                    xk = tl.load(x_ptr + row * sxm + offs_k * sxk, mask=(row < M) & (offs_k < K),
                                 other=0.0).to(tl.float32)
                    d = tl.sum(xk[:, None] * lo, axis=0)
                    xs = tl.sum(xk, axis=0)
                if MODE == 1:
                    d = (d - xs * z) * s
                    acc = tl.where(offs_m[:, None] == row, acc + d[None, :], acc)
                else:
                    acc = tl.where(offs_m[:, None] == row, acc + d[None, :], acc)
                    xacc = tl.where(offs_m[:, None] == row, xacc + xs, xacc)
        if MODE == 0:
            s, z = _load_scales(s_ptr, z_ptr, 0, scol, n_ok, ssk, ssn, SCALE, HAS_Z, FACTOR, OFFSET)
            acc = (acc - xacc * z[None, :]) * s[None, :]
        if HAS_G:
            acc = acc * tl.load(g_ptr)
        o_ptrs = o_ptr + pid_s * sos + offs_m[:, None] * som + offs_n[None, :] * son
        tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))

    @triton.jit
    def _swapab_kernel(
        x_ptr, w_ptr, s_ptr, z_ptr, g_ptr,
        M, K, N, NP, KS,
        sxm, sxk, swk, swn, ssk, ssn, sos, som, son,
        o_ptr,
        ELEM: tl.constexpr, SCALE: tl.constexpr, SBK: tl.constexpr, SBN: tl.constexpr,
        HAS_Z: tl.constexpr, HAS_G: tl.constexpr, FAST: tl.constexpr,
        OFFSET: tl.constexpr, FACTOR: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
        MODE: tl.constexpr, XMODE: tl.constexpr,
        SPLIT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    ):
        FOUR: tl.constexpr = ELEM == 1 or ELEM == 2 or ELEM == 4
        XT = x_ptr.dtype.element_ty
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_s = tl.program_id(2)
        offs_m = pid_m * BM + tl.arange(0, BM)
        offs_n = pid_n * BN + tl.arange(0, BN)
        m_ok = offs_m < M
        n_ok = offs_n < NP
        scol = offs_n // SBN
        acc = tl.zeros((BN, BM), dtype=tl.float32)
        xacc = tl.zeros((1, BM), dtype=tl.float32)
        k_begin = pid_s * KS
        for ki in range(0, KS, BK):
            kk = k_begin + ki
            offs_k = kk + tl.arange(0, BK)
            xt = tl.load(x_ptr + offs_k[:, None] * sxk + offs_m[None, :] * sxm,
                         mask=(offs_k[:, None] < K) & m_ok[None, :], other=0.0)
            if FOUR:
                rows = kk // 2 + tl.arange(0, BK // 2)
                w = tl.load(w_ptr + offs_n[:, None] * swn + rows[None, :] * swk,
                            mask=n_ok[:, None] & (rows[None, :] < (K + 1) // 2), other=0)
                lo, hi = _decode_tile(w, ELEM, FAST, XT)
                wt = tl.reshape(tl.join(lo.to(XT), hi.to(XT)), (BN, BK))
            else:
                w = tl.load(w_ptr + offs_n[:, None] * swn + offs_k[None, :] * swk,
                            mask=n_ok[:, None] & (offs_k[None, :] < K), other=0)
                wt, _ = _decode_tile(w, ELEM, False, XT)
            d = tl.dot(wt.to(XT), xt, out_dtype=tl.float32)
            xs = tl.sum(xt.to(tl.float32), axis=0)[None, :]
            if MODE == 1:
                s, z = _load_scales(s_ptr, z_ptr, kk // SBK, scol, n_ok & (kk < K), ssk, ssn,
                                    SCALE, HAS_Z, FACTOR, OFFSET)
                acc += (d - z[:, None] * xs) * s[:, None]
            else:
                acc += d
                xacc += xs
        if MODE == 0:
            s, z = _load_scales(s_ptr, z_ptr, 0, scol, n_ok, ssk, ssn, SCALE, HAS_Z, FACTOR, OFFSET)
            acc = (acc - z[:, None] * xacc) * s[:, None]
        if HAS_G:
            acc = acc * tl.load(g_ptr)
        o_ptrs = o_ptr + pid_s * sos + offs_m[None, :] * som + offs_n[:, None] * son
        tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=m_ok[None, :] & (offs_n[:, None] < N))

    @triton.jit
    def _gemv_kernel(
        x_ptr, w_ptr, s_ptr, z_ptr, g_ptr,
        M, K, N, NP, KS,
        sxm, sxk, swk, swn, ssk, ssn, sos, som, son,
        o_ptr,
        ELEM: tl.constexpr, SCALE: tl.constexpr, SBK: tl.constexpr, SBN: tl.constexpr,
        HAS_Z: tl.constexpr, HAS_G: tl.constexpr, FAST: tl.constexpr,
        OFFSET: tl.constexpr, FACTOR: tl.constexpr, EVEN_K: tl.constexpr, EVEN_N: tl.constexpr,
        MODE: tl.constexpr, XMODE: tl.constexpr,
        SPLIT: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
    ):
        FOUR: tl.constexpr = ELEM == 1 or ELEM == 2 or ELEM == 4
        pid_n = tl.program_id(0)
        row = tl.program_id(1)  # BM == 1: one row of x per program
        pid_s = tl.program_id(2)
        offs_n = pid_n * BN + tl.arange(0, BN)
        n_ok = offs_n < NP
        scol = offs_n // SBN
        k_begin = pid_s * KS
        if FOUR:
            acc_a = tl.zeros((BK // 2, BN), dtype=tl.float32)
            acc_b = tl.zeros((BK // 2, BN), dtype=tl.float32)
            xv = tl.zeros((BK // 2,), dtype=tl.float32)
        else:
            acc_a = tl.zeros((BK, BN), dtype=tl.float32)
            acc_b = tl.zeros((1, BN), dtype=tl.float32)
            xv = tl.zeros((BK,), dtype=tl.float32)
        for ki in range(0, KS, BK):
            kk = k_begin + ki
            if MODE == 1:
                s, z = _load_scales(s_ptr, z_ptr, kk // SBK, scol, n_ok & (kk < K), ssk, ssn,
                                    SCALE, HAS_Z, FACTOR, OFFSET)
                c = -z * s
            if FOUR:
                rows = kk // 2 + tl.arange(0, BK // 2)
                w = tl.load(w_ptr + rows[:, None] * swk + offs_n[None, :] * swn,
                            mask=(rows[:, None] < (K + 1) // 2) & n_ok[None, :], other=0)
                lo, hi = _decode_tile(w, ELEM, FAST, tl.float32)
                lo = lo.to(tl.float32)
                hi = hi.to(tl.float32)
                ke = kk + 2 * tl.arange(0, BK // 2)
                xe = tl.load(x_ptr + row * sxm + ke * sxk, mask=ke < K, other=0.0).to(tl.float32)
                xo = tl.load(x_ptr + row * sxm + (ke + 1) * sxk, mask=ke + 1 < K, other=0.0).to(tl.float32)
                if MODE == 1:
                    lo = lo * s[None, :] + c[None, :]
                    hi = hi * s[None, :] + c[None, :]
                else:
                    xv += xe + xo
                acc_a += xe[:, None] * lo
                acc_b += xo[:, None] * hi
            else:
                offs_k = kk + tl.arange(0, BK)
                w = tl.load(w_ptr + offs_k[:, None] * swk + offs_n[None, :] * swn,
                            mask=(offs_k[:, None] < K) & n_ok[None, :], other=0)
                v, _ = _decode_tile(w, ELEM, False, tl.float32)
                v = v.to(tl.float32)
                xk = tl.load(x_ptr + row * sxm + offs_k * sxk, mask=offs_k < K, other=0.0).to(tl.float32)
                if MODE == 1:
                    v = v * s[None, :] + c[None, :]
                else:
                    xv += xk
                acc_a += xk[:, None] * v
        tot = tl.sum(acc_a, axis=0) + tl.sum(acc_b, axis=0)
        if MODE == 0:
            s, z = _load_scales(s_ptr, z_ptr, 0, scol, n_ok, ssk, ssn, SCALE, HAS_Z, FACTOR, OFFSET)
            tot = (tot - tl.sum(xv, axis=0) * z) * s
        if HAS_G:
            tot = tot * tl.load(g_ptr)
        tl.store(o_ptr + pid_s * sos + row * som + offs_n * son, tot.to(o_ptr.dtype.element_ty),
                 mask=(offs_n < N) & (row < M))
