"""Public entry of the activation-quantized (W8A8 / block-scaled / MX) GEMM family.

    values, scales = quantize_activations(x, element_dtype=..., block_k=..., scale_dtype=...)
    y = scaled_matmul(values, scales, wv, ws, x_block_k=..., w_block_k=..., w_block_n=...,
                      layout="nk", w_element_dtype=..., k=K, n=N, out_dtype=jnp.bfloat16)

Arguments are plain arrays plus static facts (element dtype, scale dtype, block shapes,
layout), never format names. Contracts: x side as `act_quant.reference`, weight side as
`pallas_kernels.blocks` (values "nk" (Np, Kp) or "kn" (Kp, Np); 4-bit packed two per byte
along K). y[m, j] = sum_k dequant(x)[m, k] * dequant(w)[k, j] for j < n.

impl:
  "xla"     the jnp reference (dequantize, f32 dot); runs anywhere.
  "triton"  the Triton kernel (GPU only); raises with the reason if it cannot run.
  "pallas"  the Pallas kernel: natively on GPU (Pallas-Triton, whole tiles only) or
            interpreted with `interpret=True`; raises with the reason if it cannot run.
  "mosaic"  the warp-specialized Mosaic GPU kernel (`mosaic_kernel.py`; 8-bit "nk" weights,
            per-token x per-channel scales or one promotion per K step); natively on a
            Hopper GPU, or interpreted with `interpret=True` (epilogue scales only); raises
            with the reason if it cannot run.
  "auto"    on GPU: mosaic, else triton, else pallas, else xla; M <= TRITON_MAX_M (decode)
            tries triton first; MX formats: xla (measured fastest on Hopper); off GPU: pallas
            when interpret=True, else xla. Each fallback logs its reason once.

Supported scale groupings (G = min(x_block_k, w_block_k) along K, the promotion group):
one of x_block_k / w_block_k must divide the other, both must divide Kp, and the tile's
block_k must divide G. w_block_n is 1 (per channel), a multiple of the tile's block_n or a
divisor of it. MX (E8M0) activation scales with 32-blocks on both sides use tl.dot_scaled.
"""

from __future__ import annotations

import functools
import logging
import math

import jax
import jax.numpy as jnp

from pallas_kernels import blocks
from pallas_kernels.act_quant import kernel as aq_kernel
from pallas_kernels.act_quant import reference as aq_ref
from pallas_kernels.scaled_gemm import kernel as pallas_kernel
from pallas_kernels.scaled_gemm import mosaic_kernel
from pallas_kernels.scaled_gemm.config import (TRITON_MAX_M, GemmConfig, choose_config,
                                               choose_mosaic_config)
from pallas_kernels.scaled_gemm.mosaic_kernel import MosaicGemmConfig
from pallas_kernels.scaled_gemm.reference import scaled_matmul_reference

log = logging.getLogger(__name__)
_IMPLS = ("auto", "xla", "pallas", "triton", "mosaic")
E8M0 = jnp.dtype(jnp.float8_e8m0fnu)


@functools.cache
def _log_once(msg: str) -> None:
    log.warning(msg)


def _on_gpu() -> bool:
    return jax.default_backend() == "gpu"


@functools.cache
def _triton_import_error() -> str | None:
    try:
        import jax_triton  # noqa: F401
        import triton  # noqa: F401
    except ImportError as e:
        return f"Triton path unavailable: {e} (install jax-triton on the GPU machine)"
    return None


# ----------------------------------------------------------------------------------------
# Activation quantization


def quantize_activations(
    x: jax.Array, *, element_dtype, block_k: int | None, scale_dtype, mx_round: str = "floor",
    impl: str = "auto", interpret: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """x (..., K) float -> values (..., Kp) element_dtype, scales (..., Kp/block_k).

    See `act_quant.reference.quantize_rows` for the rules (it is the definition).
    """
    if impl not in ("auto", "xla", "pallas"):
        raise ValueError(f"{impl=} must be auto, xla or pallas")
    aq_ref.check_args(element_dtype, scale_dtype, block_k, mx_round)
    kw = dict(element_dtype=element_dtype, block_k=block_k, scale_dtype=scale_dtype,
              mx_round=mx_round)
    reason = aq_kernel.unsupported_reason((1, x.shape[-1]), block_k=block_k)
    if reason is None and not (_on_gpu() or interpret):
        reason = "no GPU and interpret=False"
    if impl == "xla" or (impl == "auto" and reason):
        if impl == "auto":
            _log_once(f"quantize_activations: XLA path ({reason})")
        return aq_ref.quantize_rows(x, **kw)
    if reason:
        raise ValueError(f"quantize_activations impl='pallas' cannot run: {reason}")
    lead = x.shape[:-1]
    v, s = aq_kernel.quantize_rows_pallas(x.reshape(-1, x.shape[-1]), interpret=interpret, **kw)
    return v.reshape(*lead, v.shape[-1]), s.reshape(*lead, s.shape[-1])


# ----------------------------------------------------------------------------------------
# Scaled GEMM


def _facts(xv, xs, wv, ws, *, x_block_k, w_block_k, w_block_n, layout, w_element_dtype, k, n):
    """Validates shapes/blocks; returns a dict of derived static facts. Raises ValueError."""
    if layout not in ("kn", "nk"):
        raise ValueError(f"{layout=} must be 'kn' or 'nk'")
    if xv.ndim != 2 or xs.ndim != 2:
        raise ValueError(f"x values/scales must be 2-D; got {xv.shape=}, {xs.shape=}")
    m, kp = xv.shape
    gx = kp if x_block_k is None else x_block_k
    if xs.shape != (m, kp // gx) or kp % gx:
        raise ValueError(f"x scales {xs.shape} do not match values {xv.shape} with "
                         f"x_block_k={x_block_k}")
    four = blocks.is_four_bit(w_element_dtype)
    kw_, np_ = (wv.shape[1], wv.shape[0]) if layout == "nk" else wv.shape
    kpw = kw_ * 2 if four else kw_
    if kpw != kp:
        raise ValueError(f"x values K={kp} != weight Kp={kpw}: quantize x with K padded like "
                         f"the weight (block_k={w_block_k})")
    if not (k <= kp and n <= np_):
        raise ValueError(f"logical {k=}, {n=} exceed the stored Kp={kp}, Np={np_}")
    if kp % w_block_k or np_ % w_block_n:
        raise ValueError(f"weight Kp={kp}, Np={np_} must be multiples of {w_block_k=}, "
                         f"{w_block_n=}")
    want = (np_ // w_block_n, kp // w_block_k) if layout == "nk" else (kp // w_block_k,
                                                                      np_ // w_block_n)
    if ws.shape != want:
        raise ValueError(f"weight scales {ws.shape} != {want} for layout={layout!r}, "
                         f"{w_block_k=}, {w_block_n=}")
    if gx % w_block_k and w_block_k % gx:
        raise ValueError(f"activation blocks x_block_k={gx} and weight blocks "
                         f"w_block_k={w_block_k} do not nest (one must divide the other)")
    xe = jnp.dtype(xv.dtype)
    if xe not in (jnp.dtype(jnp.int8), jnp.dtype(jnp.float8_e4m3fn)):
        raise ValueError(f"activation element dtype {xe} must be int8 or float8_e4m3fn")
    we = jnp.dtype(w_element_dtype)
    if (xe == jnp.int8) != (we == jnp.int8):
        raise ValueError(f"int8 activations need int8 weights and vice versa; got x {xe}, "
                         f"w {we}")
    if four and we != jnp.float4_e2m1fn:
        raise ValueError(f"4-bit weights must be float4_e2m1fn with fp8 activations, got {we}")
    return dict(m=m, kp=kp, np_=np_, gx=gx, gw=w_block_k, g=min(gx, w_block_k), four=four,
                mx=(jnp.dtype(xs.dtype) == E8M0 and jnp.dtype(ws.dtype) == E8M0
                    and gx == 32 and w_block_k == 32 and w_block_n == 1))


def _config_reason(f, cfg: GemmConfig, w_block_n) -> str | None:
    if cfg.mode == "dot_scaled" and not f["mx"]:
        return "mode='dot_scaled' needs E8M0 scales in 1x32 blocks on both operands"
    if cfg.mode == "epilogue" and f["g"] < f["kp"]:
        return f"mode='epilogue' needs scales constant along K; group is {f['g']} < Kp={f['kp']}"
    if f["g"] % cfg.block_k and cfg.mode != "dot_scaled":
        return f"tile block_k={cfg.block_k} must divide the scale group G={f['g']}"
    if cfg.groups_per_step == 2 and (f["g"] != cfg.block_k or (f["kp"] // f["g"]) % 2
                                     or f["four"]):
        return (f"groups_per_step=2 needs block_k == G={f['g']}, an even number of groups "
                f"(Kp={f['kp']}) and 8-bit weights")
    if f["kp"] % cfg.block_k:
        return f"Kp={f['kp']} must be a multiple of block_k={cfg.block_k}"
    if w_block_n > 1 and w_block_n % cfg.block_n and cfg.block_n % w_block_n:
        return f"{w_block_n=} and block_n={cfg.block_n} do not nest"
    return None


def unsupported_reason(
    xv, xs, wv, ws, *, x_block_k, w_block_k, w_block_n, layout, w_element_dtype, k, n,
    impl: str = "triton", interpret: bool = False,
    config: GemmConfig | MosaicGemmConfig | None = None,
) -> str | None:
    """Why `impl` ("triton", "pallas" or "mosaic") cannot run these arguments; None when it
    can.

    Arguments may be arrays or jax.ShapeDtypeStruct. Invalid arguments (blocks that do not
    nest, shape mismatches) are reported too.
    """
    try:
        f = _facts(xv, xs, wv, ws, x_block_k=x_block_k, w_block_k=w_block_k,
                   w_block_n=w_block_n, layout=layout, w_element_dtype=w_element_dtype, k=k, n=n)
    except ValueError as e:
        return str(e)
    if impl == "mosaic":
        return _mosaic_reason(f, config, layout=layout, w_element_dtype=w_element_dtype,
                              xs_dtype=xs.dtype, interpret=interpret)
    if config is not None and not isinstance(config, GemmConfig):
        return f"impl={impl!r} takes a GemmConfig, got {type(config).__name__}"
    if impl == "triton":
        if not _on_gpu():
            return "the Triton kernel needs a GPU"
        err = _triton_import_error()
        if err:
            return err
        return _triton_reason(f, config, n, w_block_n)
    if impl == "pallas":
        if not (_on_gpu() or interpret):
            return "no GPU and interpret=False"
        if not interpret:
            if _pallas_block_k(f) < 16:
                return (f"promotion group {f['g']} is not a multiple of 16, the smallest K step "
                        f"of the native Pallas kernel")
            bm, bn = _pallas_tiles(f, n, interpret=False)
            return pallas_kernel.native_unsupported_reason(
                f["m"], n, f["np_"], block_m=bm, block_n=bn, w_block_n=w_block_n,
                four_bit=f["four"], e8m0=E8M0 in (jnp.dtype(xs.dtype), jnp.dtype(ws.dtype)))
        return None
    raise ValueError(f"{impl=} must be 'triton', 'pallas' or 'mosaic'")


def triton_config_reason(xv, xs, wv, ws, *, config: GemmConfig | None, x_block_k, w_block_k,
                         w_block_n, layout, w_element_dtype, k, n) -> str | None:
    """Why the Triton kernel cannot take these arguments with `config` (None: the chosen
    one), wherever it would run (a GPU, or Triton's interpreter)."""
    try:
        f = _facts(xv, xs, wv, ws, x_block_k=x_block_k, w_block_k=w_block_k,
                   w_block_n=w_block_n, layout=layout, w_element_dtype=w_element_dtype, k=k, n=n)
    except ValueError as e:
        return str(e)
    return _triton_reason(f, config, n, w_block_n)


def _chosen_config(f, config: GemmConfig | None, n) -> GemmConfig:
    return config or choose_config(m=f["m"], n=n, kp=f["kp"], group_k=f["g"], mx=f["mx"],
                                   four_bit=f["four"])


def _triton_reason(f, config: GemmConfig | None, n, w_block_n) -> str | None:
    return _config_reason(f, _chosen_config(f, config, n), w_block_n)


def _pallas_block_k(f) -> int:
    """K step of the Pallas kernel: the largest power of two <= 32 that divides the promotion
    group, so no step straddles a scale group or the end of K."""
    return math.gcd(32, f["g"])


def _pallas_tiles(f, n, *, interpret):
    if interpret:       # small shapes in CI: small tiles so several programs run
        return 16, 32
    return 64, 128


def _mosaic_config(f, config) -> MosaicGemmConfig:
    return config or choose_mosaic_config(kp=f["kp"], np_=f["np_"], group_k=f["g"])


def _mosaic_reason(f, config, *, layout, w_element_dtype, xs_dtype, interpret) -> str | None:
    if config is not None and not isinstance(config, MosaicGemmConfig):
        return f"impl='mosaic' takes a MosaicGemmConfig, got {type(config).__name__}"
    if not (_on_gpu() or interpret):
        return "the Mosaic GPU kernel needs a GPU (or interpret=True)"
    if (why := mosaic_kernel.device_reason()) is not None:
        return why
    if layout != "nk" or f["four"]:
        return (f"the Mosaic GPU kernel takes 8-bit weights in the 'nk' layout (K-major, as "
                f"8-bit wgmma needs); got {layout=}, {jnp.dtype(w_element_dtype)}")
    cfg = _mosaic_config(f, config)
    promote = f["g"] < f["kp"]
    if promote and f["g"] != cfg.tile_k:
        return (f"the Mosaic GPU kernel promotes once per K step: the scale group "
                f"G={f['g']} must equal tile_k={cfg.tile_k}")
    if promote and interpret and not _on_gpu():
        return ("per-K-group promotion does not run in Mosaic GPU interpret mode (jax 0.11.2's "
                "interpreter cannot store into a WGMMA accumulator); it lowers natively")
    return mosaic_kernel.unsupported_reason(
        element_dtype=w_element_dtype, kp=f["kp"], np_=f["np_"],
        groups=f["kp"] // f["g"], config=cfg)


def _mosaic_scales(xs, ws, f, w_block_n):
    """The kernel's (S, M) and (S, Np) f32 scales, S = Kp / G: each side's scale of group g
    (x's blocks and the weight's (block_k, block_n) blocks repeated to G x 1)."""
    sa = jnp.repeat(xs.astype(jnp.float32).T, f["gx"] // f["g"], axis=0)
    sb = jnp.repeat(ws.astype(jnp.float32).T, f["gw"] // f["g"], axis=0)
    return sa, jnp.repeat(sb, w_block_n, axis=1)


def scaled_matmul(
    xv, xs, wv, ws, *, x_block_k: int | None, w_block_k: int, w_block_n: int, layout: str,
    w_element_dtype, k: int, n: int, out_dtype=jnp.bfloat16, impl: str = "auto",
    interpret: bool = False, config: GemmConfig | MosaicGemmConfig | None = None,
) -> jax.Array:
    """y (M, n) out_dtype = dequant(xv, xs) @ dequant(wv, ws)[:, :n].

    Args:
      xv, xs: activations from `quantize_activations`: (M, Kp) int8/float8_e4m3fn values,
        (M, Kp / x_block_k) scales (f32, bf16 or float8_e8m0fnu); x_block_k None = per row.
      wv, ws: weights per `pallas_kernels.blocks` in `layout`; element dtype
        `w_element_dtype` (int8, float8_e4m3fn, or float4_e2m1fn packed in uint8).
      w_block_k, w_block_n: weight scale block (w_block_k = Kp for per-channel).
      k, n: logical (unpadded) K and N.
      config: tile config: a GemmConfig for the Triton path (default: `choose_config`), a
        MosaicGemmConfig for impl="mosaic" (default: `choose_mosaic_config`).
    """
    if impl not in _IMPLS:
        raise ValueError(f"{impl=} must be one of {_IMPLS}")
    f = _facts(xv, xs, wv, ws, x_block_k=x_block_k, w_block_k=w_block_k, w_block_n=w_block_n,
               layout=layout, w_element_dtype=w_element_dtype, k=k, n=n)
    common = dict(x_block_k=x_block_k, w_block_k=w_block_k, w_block_n=w_block_n, layout=layout,
                  w_element_dtype=w_element_dtype, k=k, n=n)
    if impl == "auto":
        gpu_order = (("triton", "mosaic", "pallas") if f["m"] <= TRITON_MAX_M
                     else ("mosaic", "triton", "pallas"))
        order = gpu_order if _on_gpu() else (("pallas",) if interpret else ())
        chosen, reasons = "xla", []
        if _on_gpu() and f["mx"] and config is None:
            # Measured on H100/H200 (BENCHMARKS.md): XLA's exact bf16 decomposition of MX
            # (reference.py) beats both Triton MX paths (tl.dot_scaled, per-32 promotion).
            order, reasons = (), ["MX on Hopper: XLA's exact bf16 path measured fastest"]
        for cand in order:
            r = unsupported_reason(xv, xs, wv, ws, impl=cand, interpret=interpret,
                                   config=config, **common)
            if r is None:
                chosen = cand
                break
            reasons.append(f"{cand}: {r}")
        if reasons or not order:
            _log_once(f"scaled_matmul: using {chosen} "
                      f"({'; '.join(reasons) or 'no GPU and interpret=False'})")
        impl = chosen
    elif impl in ("triton", "pallas", "mosaic"):
        r = unsupported_reason(xv, xs, wv, ws, impl=impl, interpret=interpret, config=config,
                               **common)
        if r:
            raise ValueError(f"scaled_matmul impl={impl!r} cannot run: {r}")
    if impl == "xla":
        return scaled_matmul_reference(xv, xs, wv, ws, w_block_k=w_block_k,
                                       w_block_n=w_block_n, layout=layout,
                                       w_element_dtype=w_element_dtype, n=n,
                                       out_dtype=out_dtype)
    if impl == "pallas":
        bm, bn = _pallas_tiles(f, n, interpret=interpret)
        return pallas_kernel.scaled_matmul_pallas(
            xv, xs, wv, ws, x_block_k=f["gx"], w_block_k=w_block_k, w_block_n=w_block_n,
            layout=layout, w_element_dtype=jnp.dtype(w_element_dtype), n=n,
            out_dtype=jnp.dtype(out_dtype), block_m=bm, block_n=bn,
            block_k=_pallas_block_k(f), interpret=interpret)
    if impl == "mosaic":
        sa, sb = _mosaic_scales(xs, ws, f, w_block_n)
        cfg = _mosaic_config(f, config)
        y = mosaic_kernel.scaled_matmul_mosaic(
            xv, wv, sa, sb, out_dtype=jnp.dtype(out_dtype), config=cfg,
            uniform_n=w_block_n % cfg.tile_n == 0, interpret=interpret and not _on_gpu())
        return y[:, :n]
    from pallas_kernels.scaled_gemm import triton_call  # GPU only: imports triton

    cfg = _chosen_config(f, config, n)
    return triton_call.scaled_matmul_triton(
        xv, xs, wv, ws, x_block_k=f["gx"], w_block_k=w_block_k, w_block_n=w_block_n,
        layout=layout, four_bit=f["four"], n=n, out_dtype=jnp.dtype(out_dtype), config=cfg)
