"""Triton launches from JAX through jaxlib's typed-FFI target, so XLA can put them in CUDA graphs.

jax-triton 0.3.1 lowers `triton_call` to the legacy custom call "triton_kernel_call"
(api_version 2; the kernel's zlib-compressed proto as an opaque string). XLA's command-buffer
pass captures only typed-FFI custom calls with the command-buffer trait, so in a jitted decode
loop every Triton launch was its own host launch and cut the CUDA graph of the XLA kernels
around it. Measured on an H200 (Llama-3-8B shape, batch 1, 225 Triton GEMVs per token,
`scripts/profile_generate.py`): the host, not the GPU, set the decode step -- w4a16's kernels
took 2.35 ms of device time per token and the step 3.9 ms (BENCHMARKS.md, session 7).

jaxlib (>= 0.10.1) registers the same launcher as the typed-FFI target
"triton_kernel_call_ffi" (attribute `opaque`: the same compressed proto; command-buffer
compatible), which JAX's own Triton lowering and later jax-triton releases emit.
`triton_call` below re-registers jax-triton's CUDA lowering once so that the custom call it
emits is rebuilt as that target: same operands, results, aliases and proto. Where jaxlib does
not register the target, the legacy call stays and the reason is logged once.
"""

from __future__ import annotations

import functools
import logging

import jax
from jax.interpreters import mlir

log = logging.getLogger(__name__)
FFI_TARGET = "triton_kernel_call_ffi"
LEGACY_TARGET = "triton_kernel_call"


def ffi_target_reason() -> str | None:
    """None when jaxlib registers the typed-FFI Triton target for CUDA, else why not."""
    try:
        from jax._src.lib import gpu_triton
    except ImportError as e:
        return f"jaxlib has no Triton launcher ({e})"
    plugin = getattr(gpu_triton, "_cuda_triton", None)
    if plugin is None:
        return "jaxlib's CUDA plugin is not installed"
    if FFI_TARGET not in plugin.registrations():
        return f"this jaxlib does not register {FFI_TARGET!r}"
    return None


@functools.cache
def launch_target() -> str:
    """The custom call our Triton launches lower to; installs the FFI rewrite on first use."""
    why = ffi_target_reason()
    if why is not None:
        log.warning("Triton launches stay on the legacy custom call %r: %s", LEGACY_TARGET, why)
        return LEGACY_TARGET
    from jax_triton import triton_lib

    legacy = functools.partial(triton_lib.triton_kernel_call_lowering,
                               triton_lib.get_cuda_backend)

    def lowering(ctx, *array_args, **params):
        results = legacy(ctx, *array_args, **params)
        op = results[0].owner
        op = getattr(op, "operation", op)
        opaque = mlir.ir.StringAttr(op.attributes["backend_config"]).value_bytes
        op.erase()
        rule = jax.ffi.ffi_lowering(
            FFI_TARGET, operand_output_aliases=dict(params["input_output_aliases"]))
        return rule(ctx, *array_args, opaque=opaque)

    mlir.register_lowering(triton_lib.triton_kernel_call_p, lowering, platform="cuda")
    return FFI_TARGET


def triton_call(*arrays, **kwargs):
    """`jax_triton.triton_call`, lowered to `launch_target()` (GPU machines only)."""
    import jax_triton as jt

    launch_target()
    return jt.triton_call(*arrays, **kwargs)
