"""The one public entry of weight-only block-scaled matmul: `weight_only_matmul`.

`x @ W` where W (k, n) is stored by the contract of `pallas_kernels.blocks` (codes +
block scales [+ zeros] [+ global scale]) and only x is a float array. Implementations:

    "xla"     `reference.weight_only_matmul_reference`: dequantize, dot (XLA fuses what it can).
    "pallas"  `pallas_kernel.py`: BlockSpec Pallas kernel; `interpret=True` runs it anywhere.
    "triton"  `triton_kernel.py` + `triton_decode.py`: raw Triton via jax-triton, NVIDIA GPUs
              only (the fast path; tiles from the per-device tuned table or the heuristic).
    "mosaic"  `mosaic_kernel.py`: Mosaic GPU (wgmma) prefill GEMMs. int8/int4/uint4/e4m3/
              e2m1 weights stored "nk" or "mma" (scales over K, over groups of whole K steps
              or over 2-8 groups per step, e.g. MX's 32 and NVFP4's 16; blocks of rows
              repeated per row; a global scale folded in): y^T = W x^T on the
              warp-specialized scaled GEMM with the upcast weight tile as wgmma's register
              operand (native only).
              "kn" int8/int4/uint4: a one-warpgroup kernel that dequantizes into shared
              memory; runs in GPU interpret mode on CPU; explicit only (0.65x XLA's bf16 dot
              for int8 and 0.36x for int4-g128 at M=1024 on H200, below the XLA route).
    "auto"    on GPU: M >= XLA_PREFILL_MIN_M (prefill) -> the weights the register-operand
              kernel takes (`mosaic_kernel.auto_register_lhs_reason`: int8, fp8 per channel
              and 128x128 blocks, int4/uint4 g32-g128, mxfp8, mxfp4, nvfp4; 4-bit up to
              `mosaic_kernel.REGISTER_LHS_MAX_M_4BIT`; grids of at least
              `mosaic_kernel.REGISTER_LHS_MIN_TILES` CTA tiles, not narrow layers such as
              Llama-3-8B's k/v or SmolLM2's): that kernel (at M=1024 on H100: 0.81-0.99x
              XLA's bf16 dot for int8, fp8, int4 g32-g128 and mxfp8, 0.69-0.80x for uint4,
              mxfp4 and nvfp4, against 0.57-0.72x for the route);
              other weights: dequantized to x's dtype in one pass, then XLA's GEMM
              (`weight_only_matmul_reference(..., convert=True, materialize=True)`; the
              measurements behind it are at `config.XLA_PREFILL_MIN_M`);
              else triton, else pallas, else xla; off GPU: xla. Each fallback logs its reason
              once (logging, module logger).

`unsupported_reason(...)` says why an implementation cannot run (None when it can); an
explicit impl raises ValueError/NotImplementedError with that reason.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp

from pallas_kernels import blocks
from pallas_kernels.weight_only import mosaic_kernel, triton_kernel
from pallas_kernels.weight_only.config import (
    ELEMENT_DTYPES, MMA_MAX_M, SCALE_DTYPES, XLA_PREFILL_MIN_M, TileConfig, WeightSpec, choose_config,
    mma_weight_reason, mma_x_reason)
from pallas_kernels.weight_only.pallas_kernel import weight_only_matmul_pallas
from pallas_kernels.weight_only.reference import weight_only_matmul_reference

logger = logging.getLogger(__name__)
IMPLS = ("auto", "xla", "pallas", "triton", "mosaic")
X_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _padded(k: int, n: int, element_dtype, block_k: int, block_n: int) -> tuple[int, int]:
    kp = -(-k // block_k) * block_k
    if blocks.is_four_bit(element_dtype) and kp % 2:
        kp *= 2
    return kp, -(-n // block_n) * block_n


@functools.cache
def _log_once(msg: str) -> None:
    logger.warning(msg)


def _on_gpu() -> bool:
    return jax.default_backend() == "gpu"


def _device_kind() -> str | None:
    """The GPU's name (keys the tuned tile tables), None off GPU."""
    return jax.devices()[0].device_kind if _on_gpu() else None


def unsupported_reason(x_shape, x_dtype, *, element_dtype, scale_dtype, block_k: int,
                       block_n: int, layout: str, k: int, n: int, impl: str,
                       interpret: bool = False, kp: int | None = None,
                       np_: int | None = None, config: TileConfig | None = None,
                       has_global_scale: bool = False, has_zeros: bool = False,
                       out_dtype=None) -> str | None:
    """Why `impl` cannot compute this product (None when it can). kp/np_ default to the
    smallest padding the contract allows."""
    if impl not in IMPLS:
        return f"{impl=} must be one of {IMPLS}"
    if jnp.dtype(element_dtype) not in ELEMENT_DTYPES:
        return f"element_dtype={jnp.dtype(element_dtype)} not in {ELEMENT_DTYPES}"
    if jnp.dtype(scale_dtype) not in SCALE_DTYPES:
        return f"scale_dtype={jnp.dtype(scale_dtype)} not in {SCALE_DTYPES}"
    if layout not in blocks.LAYOUTS:
        return f"{layout=} must be one of {blocks.LAYOUTS}"
    if len(x_shape) != 2 or x_shape[-1] != k:
        return f"x_shape={tuple(x_shape)} must be (M, {k=})"
    if impl == "xla":
        return None
    if impl == "auto" and not _on_gpu():
        return "no GPU: the kernels run natively on NVIDIA GPUs only (interpret=True runs impl='pallas' anywhere)"
    if jnp.dtype(x_dtype) not in X_DTYPES:
        return f"x_dtype={jnp.dtype(x_dtype)} must be bfloat16 or float16 for impl={impl!r}"
    if kp is None or np_ is None:
        kp, np_ = _padded(k, n, element_dtype, block_k, block_n)
    try:
        spec = WeightSpec(element_dtype=jnp.dtype(element_dtype), scale_dtype=jnp.dtype(scale_dtype),
                          block_k=block_k, block_n=block_n, layout=layout, k=k, n=n, kp=kp, np_=np_)
    except ValueError as e:
        return str(e)
    if impl == "mosaic" and mosaic_kernel.takes_register_lhs(element_dtype, block_k, layout, kp):
        if config is not None and not isinstance(config, mosaic_kernel.RegisterLhsConfig):
            return (f"this weight takes the register-operand kernel, whose config is a "
                    f"RegisterLhsConfig (scaled_gemm's MosaicGemmConfig), not {config!r}")
        why = mosaic_kernel.register_lhs_reason(
            element_dtype=element_dtype, x_dtype=x_dtype, block_k=block_k, layout=layout, kp=kp,
            out_dtype=out_dtype, has_zeros=has_zeros, interpret=interpret,
            config=config)
        if why is None and not _on_gpu():
            why = "impl='mosaic' runs natively only on a Hopper GPU"
        return why
    if impl == "mosaic":
        if isinstance(config, mosaic_kernel.RegisterLhsConfig):
            return (f"a RegisterLhsConfig is for the register-operand kernel, which takes "
                    f"{', '.join(map(str, mosaic_kernel.REGISTER_LHS_CODES))} weights stored 'nk' or "
                    f"'mma'; this "
                    f"{jnp.dtype(element_dtype)} {layout!r} weight ({block_k=}) takes a MosaicConfig")
        why = mosaic_kernel.unsupported_reason(
            element_dtype=element_dtype, block_k=block_k, block_n=block_n, layout=layout, kp=kp,
            np_=np_, has_global_scale=has_global_scale, config=_mosaic_config(config, element_dtype))
        if why is None and not interpret and not _on_gpu():
            why = "impl='mosaic' runs natively only on a Hopper GPU; pass interpret=True"
        return why
    backend = "pallas" if impl == "pallas" else "triton"
    if impl == "auto":
        if not _on_gpu():
            return "no GPU: the kernels run natively on NVIDIA GPUs only (interpret=True runs impl='pallas' anywhere)"
        backend = "triton" if triton_kernel.available() is None else "pallas"
    cfg = config or choose_config(x_shape[0], spec, backend=backend, device_kind=_device_kind())
    if (why := cfg.check(spec)) is not None:
        return why
    if cfg.kernel == "mma" and (why := mma_x_reason(element_dtype, x_dtype)) is not None:
        return why
    if backend == "triton":
        if interpret:
            return "impl='triton' has no interpret mode (use impl='pallas' with interpret=True)"
        if (why := triton_kernel.available()) is not None:
            return why
        if not _on_gpu():
            return "impl='triton' needs an NVIDIA GPU"
        dot = cfg.kernel in ("dot", "swapab")  # tensor-core tiles; the GEMVs have none
        if dot and (cfg.block_m < 16 or cfg.block_n < 16 or cfg.block_k < (32 if spec.four_bit else 16)):
            return f"Triton dots need block_m, block_n >= 16 and block_k >= 32 (4-bit) / 16: {cfg}"
        if cfg.block_k & (cfg.block_k - 1) or cfg.block_k < 2:
            return f"tile block_k={cfg.block_k} must be a power of two >= 2"
        return None
    # Pallas: K tiles and splits must cover kp exactly, scale rows whole.
    tk = cfg.block_k
    if np_ % cfg.block_n:
        return f"{np_=} must be a multiple of block_n={cfg.block_n} for impl='pallas'"
    if kp % (tk * cfg.split_k):
        return f"{kp=} must be a multiple of block_k*split_k={tk * cfg.split_k} for impl='pallas'"
    ks = kp // cfg.split_k
    if ks % block_k and block_k % ks and block_k < kp:
        return f"K per split {ks} and {block_k=} must divide one another for impl='pallas'"
    if not interpret:
        if not _on_gpu():
            return "impl='pallas' runs natively only on GPU; pass interpret=True"
        if min(cfg.block_m, cfg.block_n, tk // (2 if spec.four_bit else 1)) < 16 or tk & (tk - 1):
            return f"Pallas-on-GPU (Triton lowering) needs tiles >= 16: {cfg}"
    return None


def _mosaic_config(config, element_dtype) -> mosaic_kernel.MosaicConfig:
    """The one-warpgroup kernel's config: `config` may be a MosaicConfig; a TileConfig's
    tile sizes carry over; None: `mosaic_kernel.default_config`."""
    if isinstance(config, mosaic_kernel.MosaicConfig):
        return config
    if config is None:
        return mosaic_kernel.default_config(element_dtype)
    return mosaic_kernel.MosaicConfig(tile_m=max(64, config.block_m), tile_n=config.block_n,
                                      tile_k=config.block_k)


def _reads_mma(impl: str, x, config, element_dtype, block_k: int, block_n: int, scale_dtype, kp: int) -> bool:
    """Whether a product with an "mma"-stored weight runs `triton_mma`: an explicit config of
    that kernel, or decode (M <= MMA_MAX_M) on GPU of what the kernel serves."""
    if impl not in ("auto", "triton"):
        return False
    if config is not None:
        return getattr(config, "kernel", None) == "mma"
    serves = (mma_weight_reason(element_dtype, scale_dtype, block_k, block_n, kp) is None
              and mma_x_reason(element_dtype, x.dtype) is None)
    return serves and x.shape[0] <= MMA_MAX_M and _on_gpu() and triton_kernel.available() is None


def _kernel_call(x, values, scales, zeros, global_scale, *, chosen, spec, cfg, out_dtype,
                 interpret):
    if chosen == "mosaic" and spec.layout in mosaic_kernel.REGISTER_LHS_LAYOUTS:
        return mosaic_kernel.weight_only_matmul_register_lhs(
            x, values, scales, zeros, global_scale, element_dtype=spec.element_dtype,
            layout=spec.layout, block_k=spec.block_k, block_n=spec.block_n, n=spec.n,
            out_dtype=out_dtype, config=cfg)
    if chosen == "mosaic":
        return mosaic_kernel.weight_only_matmul_mosaic(
            x, values, scales, zeros, element_dtype=spec.element_dtype, block_k=spec.block_k,
            k=spec.k, n=spec.n, out_dtype=out_dtype, config=cfg,
            interpret=interpret)
    if chosen == "pallas":
        return weight_only_matmul_pallas(x, values, scales, zeros, global_scale, spec=spec,
                                         cfg=cfg, out_dtype=out_dtype, interpret=interpret)
    return triton_kernel.weight_only_matmul_triton(x, values, scales, zeros, global_scale,
                                                   spec=spec, cfg=cfg, out_dtype=out_dtype)


def _batched_kernel_call(x, values, scales, zeros, global_scale, **static):
    """The kernel call with a vmap rule (jax-triton has none): a batched x is folded into
    M (one launch); batched weights are mapped over sequentially."""

    @jax.custom_batching.custom_vmap
    def call(x, values, scales, zeros, global_scale):
        return _kernel_call(x, values, scales, zeros, global_scale, **static)

    @call.def_vmap
    def _rule(axis_size, in_batched, x, values, scales, zeros, global_scale):
        xb, *wb = in_batched
        if not any(jax.tree_util.tree_leaves(wb)):
            if not xb:
                return call(x, values, scales, zeros, global_scale), False
            b, m, k = x.shape
            out = call(x.reshape(b * m, k), values, scales, zeros, global_scale)
            return out.reshape(b, m, -1), True
        args = (x, values, scales, zeros, global_scale)
        flags = (xb, *wb)

        def bcast(a, f):
            if a is None or f:
                return a
            return jnp.broadcast_to(a, (axis_size, *jnp.shape(a)))
        args = tuple(jax.tree_util.tree_map(bcast, a, f) if a is not None else None
                     for a, f in zip(args, flags))
        return jax.lax.map(lambda t: call(*t), args), True

    return call(x, values, scales, zeros, global_scale)


def weight_only_matmul(x, values, scales, zeros=None, global_scale=None, *, element_dtype,
                       block_k: int, block_n: int, layout: str = "kn", k: int, n: int,
                       out_dtype=None, impl: str = "auto", interpret: bool = False,
                       config=None) -> jax.Array:
    """x (M, k) bf16/f16 times the stored weight (k, n) -> (M, n) `out_dtype` (default x.dtype).

    `config`: a TileConfig (Triton/Pallas) or a MosaicConfig (impl="mosaic"); None picks one.

    values/scales/zeros/global_scale follow `pallas_kernels.blocks` ("kn", "nk" or "mma").
    Leading batch axes of x are flattened into M.
    """
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    lead = x.shape[:-1]
    if x.ndim != 2:
        x = x.reshape(-1, x.shape[-1])
    if x.shape[-1] != k:
        raise ValueError(f"x.shape[-1]={x.shape[-1]} must equal {k=}")
    if layout not in blocks.LAYOUTS:
        raise ValueError(f"{layout=} must be one of {blocks.LAYOUTS}")
    kdim = 0 if layout == "kn" else 1
    kp = blocks.stored_kp(values, element_dtype, layout)
    np_ = values.shape[1 - kdim]
    if values.dtype != blocks.storage_dtype(element_dtype):
        raise ValueError(f"values.dtype={values.dtype} must be {blocks.storage_dtype(element_dtype)} "
                         f"for element_dtype={jnp.dtype(element_dtype)}")
    want_s = (kp // block_k, np_ // block_n) if layout == "kn" else (np_ // block_n, kp // block_k)
    if kp % block_k or np_ % block_n or scales.shape != want_s:
        raise ValueError(f"scales.shape={scales.shape} must be {want_s} for values {values.shape}, "
                         f"{block_k=}, {block_n=}, {layout=}")
    if zeros is not None and (zeros.shape != scales.shape or zeros.dtype != scales.dtype):
        raise ValueError(f"zeros {zeros.shape} {zeros.dtype} must match scales {scales.shape} {scales.dtype}")
    facts = dict(element_dtype=element_dtype, block_k=block_k, block_n=block_n, layout=layout,
                 k=k, n=n, out_dtype=out_dtype)
    prefill = (impl == "auto" and config is None and x.shape[0] >= XLA_PREFILL_MIN_M
               and _on_gpu() and jnp.dtype(x.dtype) in X_DTYPES)
    register_lhs = mosaic_kernel.takes_register_lhs(element_dtype, block_k, layout, kp)
    if prefill:
        why = mosaic_kernel.auto_register_lhs_reason(element_dtype, block_k, layout, kp,
                                                     x.shape[0], np_)
        if why is None:
            why = mosaic_kernel.register_lhs_reason(
                element_dtype=element_dtype, x_dtype=x.dtype, block_k=block_k, layout=layout,
                kp=kp, out_dtype=out_dtype, has_zeros=zeros is not None)
        if why is None:
            return mosaic_kernel.weight_only_matmul_register_lhs(
                x, values, scales, zeros, global_scale, element_dtype=element_dtype, layout=layout,
                block_k=block_k, block_n=block_n, n=n, out_dtype=out_dtype).reshape(*lead, n)
        _log_once(f"weight_only_matmul: prefill (M >= {XLA_PREFILL_MIN_M}) of a "
                  f"{jnp.dtype(element_dtype)} {layout!r} weight takes the XLA route, the weight "
                  f"dequantized to {jnp.dtype(x.dtype)} in one pass, then XLA's GEMM: {why}")
        return weight_only_matmul_reference(x, values, scales, zeros, global_scale, **facts,
                                            convert=True, materialize=True).reshape(*lead, n)
    if (layout == "mma" and not (impl == "mosaic" and register_lhs)
            and not _reads_mma(impl, x, config, element_dtype, block_k, block_n, scales.dtype, kp)):
        # Only the tensor-core GEMV reads "mma"; every other path gets the "nk" bytes back
        # (one XLA pass over the weight, per call: prefill, CPU, explicit other kernels).
        values, layout = blocks.mma_to_nk(values, element_dtype), "nk"
    kw = dict(element_dtype=element_dtype, scale_dtype=scales.dtype, block_k=block_k,
              block_n=block_n, layout=layout, k=k, n=n, kp=kp, np_=np_, config=config,
              has_global_scale=global_scale is not None, has_zeros=zeros is not None,
              out_dtype=out_dtype)
    chosen = impl
    if impl == "auto":
        why = unsupported_reason(x.shape, x.dtype, impl="auto", interpret=interpret, **kw)
        if why is None:
            chosen = "triton" if triton_kernel.available() is None else "pallas"
            why = unsupported_reason(x.shape, x.dtype, impl=chosen, interpret=interpret, **kw)
        if why is not None:
            _log_once(f"weight_only_matmul: falling back to XLA: {why}")
            chosen = "xla"
    else:
        why = unsupported_reason(x.shape, x.dtype, impl=impl, interpret=interpret, **kw)
        if why is not None:
            # Arguments XLA would accept but this kernel cannot take: NotImplementedError.
            args_ok = unsupported_reason(x.shape, x.dtype, impl="xla", **kw) is None
            raise (NotImplementedError if args_ok and impl in IMPLS else ValueError)(why)
    if chosen == "xla":
        out = weight_only_matmul_reference(x, values, scales, zeros, global_scale,
                                           **dict(facts, layout=layout))
        return out.reshape(*lead, n)
    spec = WeightSpec(element_dtype=jnp.dtype(element_dtype), scale_dtype=jnp.dtype(scales.dtype),
                      block_k=block_k, block_n=block_n, layout=layout, k=k, n=n, kp=kp, np_=np_,
                      has_zeros=zeros is not None, has_global_scale=global_scale is not None)
    if chosen == "mosaic":  # the register-operand kernel's config (None: its own) or the other's
        cfg = config if register_lhs else _mosaic_config(config, element_dtype)
    else:
        cfg = config or choose_config(x.shape[0], spec, backend=chosen, device_kind=_device_kind())
    out = _batched_kernel_call(x, values, scales, zeros, global_scale, chosen=chosen, spec=spec,
                               cfg=cfg, out_dtype=out_dtype, interpret=interpret)
    return out.reshape(*lead, n)
