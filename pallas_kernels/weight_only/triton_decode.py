"""Decode-regime (small M) weight-only kernels in Triton: FMA GEMVs and a swap-AB dot.

Same storage contract and scale modes as `triton_kernel._weight_only_kernel` (they share its
`_decode_tile` upcasts and `_decode_scale`; all but `kgemv` also its launcher); they differ in
how a tile's product is formed, which is what decides whether a memory-bound decode streams
the weight at HBM bandwidth:

    kgemv    the measured best for M = 1 on the "nk" layout (every format but int8;
             BENCHMARKS.md; weights stored "mma" go to `triton_mma`). Weights
             stored "nk" (K-major), so a thread's loads are 16-byte runs along K; no tensor
             cores and no shared-memory operand. 4-bit codes become f32 with no conversion
             instruction (`_upcast_nibbles`, `_upcast_e2m1`), x arrives as f32 reordered per
             K tile into [even k; odd k] and pre-scaled by XLA (`kgemv_x`). Products are
             summed in registers per chunk (<= 32 values, inside one scale block and one
             thread's load) as multiply-add chains, scaled once per chunk and kept per chunk
             until after the K loop: no cross-thread reduction per tile, and tiles may span
             scale blocks (g16/g32; their scales are loaded in the chunk sums' layout by
             `_load_scales` through PTX, so no layout conversion). U tiles are loaded per loop step
             (num_stages > 1: pipelined through shared memory). Its own arguments
             (`kgemv_args`): the x prologue adds the per-chunk sums and e2m1's row factors.

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

import jax.numpy as jnp

from pallas_kernels.weight_only import config

try:
    import triton
    import triton.language as tl
except ImportError:  # CPU-only installs: the Triton path reports itself unavailable.
    triton = None

if triton is not None:
    from pallas_kernels.weight_only.triton_kernel import (_decode_scale, _decode_tile, _upcast_e2m1,
                                                          _upcast_nibbles)

    @triton.jit
    def _ld_nc(ptrs):
        """Elementwise global load through inline PTX (read-only path), for 1-, 2- and 4-byte
        elements. Unlike `tl.load` it anchors no register layout, so Triton computes it in the
        layout of its consumer."""
        dt: tl.constexpr = ptrs.dtype.element_ty
        if dt.primitive_bitwidth == 8:
            v = tl.inline_asm_elementwise("ld.global.nc.u8 $0, [$1];", "=r,l", [ptrs], dtype=tl.int32,
                                          is_pure=True, pack=1).to(dt)
        elif dt.primitive_bitwidth == 16:
            v = tl.inline_asm_elementwise("ld.global.nc.b16 $0, [$1];", "=h,l", [ptrs], dtype=dt.value,
                                          is_pure=True, pack=1)
        else:
            v = tl.inline_asm_elementwise("ld.global.nc.b32 $0, [$1];", "=r,l", [ptrs], dtype=dt.value,
                                          is_pure=True, pack=1)
        return v

    @triton.jit
    def _load_scales(s_ptr, z_ptr, srow, scol, ok, ssk, ssn, SCALE: tl.constexpr,
                     HAS_Z: tl.constexpr, FACTOR: tl.constexpr, OFFSET: tl.constexpr,
                     PTX: tl.constexpr = False):
        """(scale * FACTOR, zero + OFFSET) of one scale row for the given columns. PTX: loaded
        by `_ld_nc`, so they come out in the layout of the tile they multiply (no shared-memory
        layout conversion, no barrier); out-of-range entries read scale 0 of the array instead
        (their products are masked or zero)."""
        if PTX:
            off = tl.where(ok, srow * ssk + scol * ssn, 0)
            s = _decode_scale(_ld_nc(s_ptr + off), SCALE) * FACTOR
        else:
            s = _decode_scale(tl.load(s_ptr + srow * ssk + scol * ssn, mask=ok, other=0), SCALE) * FACTOR
        if HAS_Z and PTX:
            z = _decode_scale(_ld_nc(z_ptr + off), SCALE) + OFFSET
        elif HAS_Z:
            z = _decode_scale(tl.load(z_ptr + srow * ssk + scol * ssn, mask=ok, other=0), SCALE) + OFFSET
        else:
            z = tl.zeros_like(s) + OFFSET
        return s, z

    @triton.jit
    def _gemv_fma_kernel(
        x_ptr, w_ptr, s_ptr, z_ptr, g_ptr, o_ptr,  # jax-triton: inputs, then outputs
        # Sizes and strides are constexpr: jax-triton leaves integer arguments unspecialized,
        # and a stride of unknown divisibility limits every load to one element.
        M: tl.constexpr, K: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, KS: tl.constexpr,
        sxm: tl.constexpr, sxk: tl.constexpr, swk: tl.constexpr, swn: tl.constexpr,
        ssk: tl.constexpr, ssn: tl.constexpr, sos: tl.constexpr, som: tl.constexpr,
        son: tl.constexpr,
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
        x_ptr, w_ptr, s_ptr, z_ptr, g_ptr, o_ptr,  # jax-triton: inputs, then outputs
        # Sizes and strides are constexpr: jax-triton leaves integer arguments unspecialized,
        # and a stride of unknown divisibility limits every load to one element.
        M: tl.constexpr, K: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, KS: tl.constexpr,
        sxm: tl.constexpr, sxk: tl.constexpr, swk: tl.constexpr, swn: tl.constexpr,
        ssk: tl.constexpr, ssn: tl.constexpr, sos: tl.constexpr, som: tl.constexpr,
        son: tl.constexpr,
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
        R: tl.constexpr = BK if SBK > BK else SBK  # rows of one scale block inside a tile
        G: tl.constexpr = BK // R  # scale blocks per tile (MODE 2)
        for ki in range(0, KS, BK):
            kk = k_begin + ki
            offs_k = kk + tl.arange(0, BK)
            if FOUR and XMODE == 3:  # x reordered per K tile into [even k; odd k] (`even_odd`)
                offs_h = kk + tl.arange(0, BK // 2)  # x is zero-padded to whole K tiles
                xm = (kk < K) & m_ok[None, :]
                xe = tl.load(x_ptr + offs_h[:, None] * sxk + offs_m[None, :] * sxm, mask=xm, other=0.0)
                xo = tl.load(x_ptr + (offs_h + BK // 2)[:, None] * sxk + offs_m[None, :] * sxm,
                             mask=xm, other=0.0)
            else:
                xt = tl.load(x_ptr + offs_k[:, None] * sxk + offs_m[None, :] * sxm,
                             mask=(offs_k[:, None] < K) & m_ok[None, :], other=0.0)
            if FOUR:
                rows = kk // 2 + tl.arange(0, BK // 2)
                w = tl.load(w_ptr + offs_n[:, None] * swn + rows[None, :] * swk,
                            mask=n_ok[:, None] & (rows[None, :] < (K + 1) // 2), other=0)
                lo, hi = _decode_tile(w, ELEM, FAST, XT)
            else:
                w = tl.load(w_ptr + offs_n[:, None] * swn + offs_k[None, :] * swk,
                            mask=n_ok[:, None] & (offs_k[None, :] < K), other=0)
                lo, _ = _decode_tile(w, ELEM, FAST, XT)
            if MODE == 2:
                # Prefill: the scales (and offsets) go into the decoded tile, w = code * s + c
                # with c = -(zero + offset) * s, one FMA per element; the dots then chain on
                # one accumulator across all of K (a fresh product per tile would make every
                # step wait for its tensor-core result).
                srows = kk // SBK + tl.arange(0, G)
                s_ok = n_ok[:, None] & (srows[None, :] * SBK < K)
                s2, z2 = _load_scales(s_ptr, z_ptr, srows[None, :], scol[:, None], s_ok, ssk, ssn,
                                      SCALE, HAS_Z, FACTOR, OFFSET)
                c2 = -z2 * s2
                HR: tl.constexpr = R // 2 if FOUR else R  # decoded columns per scale block
                sf = tl.reshape(tl.broadcast_to(s2[:, :, None], (BN, G, HR)), (BN, G * HR))
                if ELEM == 4 and XT == tl.bfloat16:  # e2m1 (2 significant bits) * e8m0|e4m3: exact in bf16
                    lo = lo * sf.to(XT)
                    hi = hi * sf.to(XT)
                else:
                    cf = tl.reshape(tl.broadcast_to(c2[:, :, None], (BN, G, HR)), (BN, G * HR))
                    lo = (lo.to(tl.float32) * sf + cf).to(XT)
                    if FOUR:
                        hi = (hi.to(tl.float32) * sf + cf).to(XT)
            if FOUR and XMODE == 3:
                a1, b1, a2, b2 = lo, xe, hi, xo
            elif FOUR:
                a1, b1 = tl.reshape(tl.join(lo.to(XT), hi.to(XT)), (BN, BK)), xt
            else:
                a1, b1 = lo, xt
            if MODE != 1:  # one accumulator chained across K
                acc = tl.dot(a1.to(XT), b1, acc=acc, out_dtype=tl.float32)
                if FOUR and XMODE == 3:
                    acc = tl.dot(a2.to(XT), b2, acc=acc, out_dtype=tl.float32)
            else:
                d = tl.dot(a1.to(XT), b1, out_dtype=tl.float32)
                if FOUR and XMODE == 3:
                    d = tl.dot(a2.to(XT), b2, acc=d, out_dtype=tl.float32)
            if MODE == 1:
                s, z = _load_scales(s_ptr, z_ptr, kk // SBK, scol, n_ok & (kk < K), ssk, ssn,
                                    SCALE, HAS_Z, FACTOR, OFFSET)
            if MODE != 2 and (HAS_Z or OFFSET != 0):  # the offset / zero correction: sums of x
                if FOUR and XMODE == 3:
                    xs = tl.sum(xe.to(tl.float32), axis=0)[None, :] + tl.sum(xo.to(tl.float32), axis=0)[None, :]
                else:
                    xs = tl.sum(xt.to(tl.float32), axis=0)[None, :]
                if MODE == 0:
                    xacc += xs
                else:
                    d -= z[:, None] * xs
            if MODE == 1:
                acc += d * s[:, None]
        if MODE == 0:
            s, z = _load_scales(s_ptr, z_ptr, 0, scol, n_ok, ssk, ssn, SCALE, HAS_Z, FACTOR, OFFSET)
            acc = (acc - z[:, None] * xacc) * s[:, None]
        if HAS_G:
            acc = acc * tl.load(g_ptr)
        o_ptrs = o_ptr + pid_s * sos + offs_m[None, :] * som + offs_n[:, None] * son
        tl.store(o_ptrs, acc.to(o_ptr.dtype.element_ty), mask=m_ok[None, :] & (offs_n[:, None] < N))

    @triton.jit
    def _gemv_kernel(
        x_ptr, w_ptr, s_ptr, z_ptr, g_ptr, o_ptr,  # jax-triton: inputs, then outputs
        # Sizes and strides are constexpr: jax-triton leaves integer arguments unspecialized,
        # and a stride of unknown divisibility limits every load to one element.
        M: tl.constexpr, K: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, KS: tl.constexpr,
        sxm: tl.constexpr, sxk: tl.constexpr, swk: tl.constexpr, swn: tl.constexpr,
        ssk: tl.constexpr, ssn: tl.constexpr, sos: tl.constexpr, som: tl.constexpr,
        son: tl.constexpr,
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

    @triton.jit
    def _kgemv_kernel(
        x_ptr, cb_ptr, xs_ptr, r_ptr, w_ptr, s_ptr, z_ptr, g_ptr, o_ptr,
        M: tl.constexpr, N: tl.constexpr, NP: tl.constexpr, NT: tl.constexpr, KT: tl.constexpr,
        sxm: tl.constexpr, sxc: tl.constexpr, swk: tl.constexpr, swn: tl.constexpr,
        ssk: tl.constexpr, ssn: tl.constexpr, sos: tl.constexpr, som: tl.constexpr,
        ELEM: tl.constexpr, SCALE: tl.constexpr, SBK: tl.constexpr, SBN: tl.constexpr,
        HAS_Z: tl.constexpr, HAS_G: tl.constexpr, FAST: tl.constexpr, ZOFF: tl.constexpr,
        FACTOR: tl.constexpr, MODE: tl.constexpr,
        BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, CK: tl.constexpr, U: tl.constexpr,
        NS: tl.constexpr, NCP: tl.constexpr, EVEN: tl.constexpr,
    ):
        """K-contiguous FMA GEMV (see `kgemv_args`). Program (n, m, s): BN output columns,
        BM rows of x, K tiles [s * KT, (s + 1) * KT), U tiles per loop step (unrolled, so
        their loads are in flight together; with NS > 1 Triton pipelines the weight loads
        through shared memory, cp.async NS - 1 steps ahead). Each tile is cut into chunks of
        CK values that lie inside one scale block and inside one thread's vector load: a chunk's products
        are summed in registers, scaled (MODE 1) and kept per chunk in the accumulator, so
        the only cross-thread reduction is the final one, after the K loop."""
        FOUR: tl.constexpr = ELEM == 1 or ELEM == 2 or ELEM == 4
        BKB: tl.constexpr = BK // 2 if FOUR else BK  # stored bytes of one row per K tile
        NC: tl.constexpr = BK // CK  # chunks per tile
        CB: tl.constexpr = BKB // NC  # stored bytes per chunk
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        pid_s = tl.program_id(2)
        offs_n = pid_n * BN + tl.arange(0, BN)
        n_ok = offs_n < NP
        scol = offs_n // SBN
        offs_b = tl.arange(0, BKB)
        offs_c = tl.arange(0, NC)
        offs_m = pid_m * BM + tl.arange(0, BM)
        if BM == 1:
            acc = tl.zeros((BN, NC), dtype=tl.float32)
        else:
            acc = tl.zeros((BM, BN, NC), dtype=tl.float32)
        corr = tl.zeros((BM, 1), dtype=tl.float32)  # MODE 0: sums of cb and of x over chunks
        xsum = tl.zeros((BM, 1), dtype=tl.float32)
        for t0 in tl.range(0, KT, U, num_stages=NS):
            for u in tl.static_range(U):
                t = pid_s * KT + t0 + u
                t_ok = t < NT
                w_ptrs = w_ptr + offs_n[:, None] * swn + (t * BKB + offs_b)[None, :] * swk
                if EVEN:  # every column and K tile in range: no masks (a masked load zeroes first)
                    w = tl.load(w_ptrs, eviction_policy="evict_first")
                else:
                    w = tl.load(w_ptrs, mask=n_ok[:, None] & t_ok, other=0, eviction_policy="evict_first")
                if FOUR:
                    if ELEM == 4:  # value * 2**-126 (`e2m1_to_f32_asm`); x is pre-scaled per row
                        if FAST:
                            lo, hi = _upcast_e2m1(w, True)
                        else:
                            wi = w.to(tl.uint32)
                            lo = (((wi & 8) << 28) | ((wi & 7) << 22)).to(tl.float32, bitcast=True)
                            hi = (((wi & 0x80) << 24) | (((wi >> 4) & 7) << 22)).to(tl.float32, bitcast=True)
                    elif FAST:
                        lo, hi = _upcast_nibbles(w, ELEM == 1, True)
                    else:
                        lo = (w & 15).to(tl.int32)
                        hi = (w >> 4).to(tl.int32)
                        if ELEM == 1:
                            lo = lo ^ 8
                            hi = hi ^ 8
                        lo = lo.to(tl.float32)
                        hi = hi.to(tl.float32)
                else:
                    lo, _ = _decode_tile(w, ELEM, False, tl.float32)
                    lo = lo.to(tl.float32)
                if MODE == 1 and SBK >= BK:  # one scale row per tile: a vector load (converted
                    # to the chunk sums' layout through shared memory: measured faster than
                    # the PTX loads here, int4-g128 M=1, H200)
                    s, z = _load_scales(s_ptr, z_ptr, (t * BK) // SBK, scol, n_ok & t_ok,
                                        ssk, ssn, SCALE, HAS_Z, FACTOR, ZOFF)
                    s = s[:, None]
                    z = z[:, None]
                elif MODE == 1:  # per chunk: the tile spans scale blocks (g16/g32)
                    srow = (t * BK + offs_c * CK) // SBK
                    # in the chunk sums' layout by PTX loads (the interpreter runs tl.load)
                    s, z = _load_scales(s_ptr, z_ptr, srow[None, :], scol[:, None], n_ok[:, None] & t_ok,
                                        ssk, ssn, SCALE, HAS_Z, FACTOR, ZOFF, PTX=FAST)
                for mi in tl.static_range(BM):
                    row = pid_m * BM + mi
                    r_ok = (row < M) & t_ok
                    xrow = x_ptr + row * sxm + t * BK
                    # x: even (then odd) k for 4-bit codes (`kgemv_x`); no mask when nothing is out of range
                    if EVEN and M % BM == 0:
                        xe = tl.load(xrow + offs_b, eviction_policy="evict_last")
                        if FOUR:
                            xo = tl.load(xrow + BKB + offs_b, eviction_policy="evict_last")
                    else:
                        xe = tl.load(xrow + offs_b, mask=r_ok, other=0.0, eviction_policy="evict_last")
                        if FOUR:
                            xo = tl.load(xrow + BKB + offs_b, mask=r_ok, other=0.0, eviction_policy="evict_last")
                    # in-thread chains of products per chunk (a chunk is one load; multiply-adds
                    # once contracted), two for 4-bit codes
                    d = tl.sum(tl.reshape(lo * xe[None, :], (BN, NC, CB)), axis=2)
                    if FOUR:
                        d += tl.sum(tl.reshape(hi * xo[None, :], (BN, NC, CB)), axis=2)
                    if MODE == 1 and ELEM == 4:  # no offsets, no zero points
                        d = d * s
                    elif MODE == 1:
                        cb = tl.load(cb_ptr + row * sxc + t * NC + offs_c, mask=r_ok, other=0.0)
                        xs = tl.load(xs_ptr + row * sxc + t * NC + offs_c, mask=r_ok, other=0.0)
                        d = (d - cb[None, :] - z * xs[None, :]) * s
                    if BM == 1:
                        acc += d
                    else:
                        acc = tl.where(offs_m[:, None, None] == row, acc + d[None, :, :], acc)
        if BM == 1:
            out = tl.sum(acc, axis=1)
        else:
            out = tl.sum(acc, axis=2)
        if MODE == 0:
            # Per channel the corrections are linear in the K sums: split 0 subtracts those of
            # all of K (one reduction per program instead of one per tile).
            offs_a = tl.arange(0, NCP)
            for mi in tl.static_range(BM):
                row = pid_m * BM + mi
                a_ok = (offs_a < sxc) & (row < M) & (pid_s == 0)
                cbt = tl.sum(tl.load(cb_ptr + row * sxc + offs_a, mask=a_ok, other=0.0), axis=0)
                xst = tl.sum(tl.load(xs_ptr + row * sxc + offs_a, mask=a_ok, other=0.0), axis=0)
                corr = tl.where(offs_m[:, None] == row, corr + cbt, corr)
                xsum = tl.where(offs_m[:, None] == row, xsum + xst, xsum)
            s, z = _load_scales(s_ptr, z_ptr, 0, scol, n_ok, ssk, ssn, SCALE, HAS_Z, FACTOR, ZOFF)
            if BM == 1:
                out = (out - tl.sum(corr, axis=0) - tl.sum(xsum, axis=0) * z) * s
            else:
                out = (out - corr - xsum * z[None, :]) * s[None, :]
        if ELEM == 4:  # undo x's row pre-scale
            if BM == 1:
                out = out * tl.load(r_ptr + pid_m)
            else:
                out = out * tl.load(r_ptr + offs_m, mask=offs_m < M, other=0.0)[:, None]
        if HAS_G:
            out = out * tl.load(g_ptr)
        if BM == 1:
            tl.store(o_ptr + pid_s * sos + pid_m * som + offs_n, out.to(o_ptr.dtype.element_ty),
                     mask=(offs_n < N) & (pid_m < M))
        else:
            o_ptrs = o_ptr + pid_s * sos + offs_m[:, None] * som + offs_n[None, :]
            tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def even_odd(x, block_k: int):
    """(M, K) -> (M, K') with K' the multiple of block_k at or above K (zero padding): each K
    tile of block_k reordered into [even k; odd k], the order of a tile of packed nibbles
    decoded into its low and high halves. XLA does it once per call (x is small next to W)."""
    m, k = x.shape
    kr = -(-k // block_k) * block_k
    t = jnp.pad(x, ((0, 0), (0, kr - k))).reshape(m, kr // block_k, block_k)
    return jnp.concatenate([t[..., 0::2], t[..., 1::2]], axis=-1).reshape(m, kr)


def kgemv_x(x, spec, cfg, fast4: bool):
    """`kgemv`'s view of x: f32, K padded to kp, and for 4-bit codes each K tile reordered
    [even k; odd k] (`even_odd`) so a thread's K run of x is one vector load. With the f32
    nibble upcast (`fast4`) even k are scaled by 2 and odd k by 1/8 and `cb` holds the 128
    offsets' share; `xs` is the sum of x (zero points), both per chunk (`config.kgemv_chunk`).
    e2m1 codes decode to value * 2**-126 (`e2m1_to_f32_asm`), so each row of x is scaled by
    a power of two 2**a that puts its largest |x| just under 2**127 (exact, and every product
    stays a normal f32); `r` = 2**(126 - a) per row undoes both (the e2m1 launch passes
    FACTOR = 1, not `_factor`'s 64), and cb, xs are zeros (the kernel reads neither).
    Returns (x (M, kp), cb (M, chunks), xs (M, chunks), r (M,))."""
    m = x.shape[0]
    bk, ck = cfg.block_k, config.kgemv_chunk(spec, cfg)
    nt, nc = spec.kp // bk, bk // ck
    x = jnp.pad(x.astype(jnp.float32), ((0, 0), (0, spec.kp - spec.k)))
    r = jnp.ones((m,), jnp.float32)
    if jnp.dtype(spec.element_dtype) == jnp.float4_e2m1fn:  # no offsets or zero points: no sums
        _, e = jnp.frexp(jnp.max(jnp.abs(x), axis=1))  # max|x| < 2**e
        a = jnp.minimum(127, 127 - e)
        x = even_odd(x * jnp.ldexp(jnp.float32(1), a)[:, None], bk)
        zeros = jnp.zeros((m, nt * nc), jnp.float32)
        return x, zeros, zeros, jnp.ldexp(jnp.float32(1), 126 - a)
    if not spec.four_bit:
        return x, jnp.zeros((m, nt * nc), jnp.float32), x.reshape(m, nt * nc, ck).sum(-1), r
    t = even_odd(x, bk).reshape(m, nt, 2, nc, ck // 2)
    se, so = t[:, :, 0].sum(-1).reshape(m, -1), t[:, :, 1].sum(-1).reshape(m, -1)
    if fast4:
        cb = 256.0 * se + 16.0 * so
        t = t * jnp.array([2.0, 0.125], jnp.float32)[:, None, None]
    else:
        cb = jnp.zeros_like(se)
    return t.reshape(m, spec.kp), cb, se + so, r


def kgemv_args(x, arrays, ints, consts, *, spec, cfg):
    """`kgemv`'s inputs and constexprs, from the shared launch arguments (`triton_kernel.
    triton_launch`): one GEMV program per (BN columns, BM rows of x, K split); each loop step
    loads U tiles of BN rows x BK K of the stored weight (with the "nk" layout, 16-byte runs
    along K), upcasts them to f32 in registers (4-bit: `_upcast_nibbles`, no convert
    instructions) and reduces each tile against x by FMA; the tile's scale multiplies the
    reduced value (one multiply per output per tile; e2m1: `e2m1_to_f32_asm`, and r undoes
    x's row pre-scale after the loop). No tensor cores, no shared-memory
    operand: for M of 1 to a few, where decode must stream W at HBM bandwidth."""
    _, w, s, z, g = arrays
    m = x.shape[0]
    elem = consts["ELEM"]
    xp, cb, xs, r = kgemv_x(x, spec, cfg, consts["FAST"] and elem in (1, 2))
    nt = spec.kp // cfg.block_k
    kt = -(-nt // cfg.split_k)
    kt = -(-kt // cfg.unroll) * cfg.unroll  # whole loop steps (`config.split_for`)
    ck = config.kgemv_chunk(spec, cfg)
    chunks = spec.kp // ck
    params = dict(
        M=m, N=spec.n, NP=spec.np_, NT=nt, KT=kt, sxm=spec.kp, sxc=chunks,
        sos=m * spec.n if cfg.split_k > 1 else 0, som=spec.n,
        **{k: ints[k] for k in ("swk", "swn", "ssk", "ssn")},
        **{k: consts[k] for k in ("ELEM", "SCALE", "SBK", "SBN", "HAS_Z", "HAS_G", "FAST",
                                  "BM", "BN", "BK")},
        FACTOR=1.0 if elem == 4 else consts["FACTOR"],  # e2m1: the row factor r holds it
        MODE=0 if spec.block_k >= spec.kp else 1,  # 1: scales per chunk (a tile may span blocks)
        ZOFF=8.0 if elem == 1 else 0.0, CK=ck, U=cfg.unroll, NS=cfg.num_stages,
        EVEN=spec.np_ % cfg.block_n == 0 and kt * cfg.split_k == nt,
        NCP=1 << max(0, (chunks - 1).bit_length()))  # MODE 0: all chunk sums at once
    return (xp, cb, xs, r, w, s, z, g), params
