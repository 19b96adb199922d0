"""lowbit-jax: low-bit quantization for JAX on NVIDIA GPUs.

    import lowbit_jax as lj
    fmt = lj.get_format("mxfp4")
    q = lj.quantize(w, fmt, axis=-2)          # -> lj.QTensor (a pytree)
    w2 = lj.dequantize(q, dtype=jnp.float32)
    params_q = lj.quantize_params(params, "w4a16")
    lj.save(path, params_q); params_r = lj.restore(path)
    y = lj.qmatmul(x, q)                      # kernel on GPU, XLA reference elsewhere
"""

__version__ = "0.1.0"

from lowbit_jax.formats import (  # noqa: E402
    FORMATS, RECIPES, QuantFormat, Recipe, UnknownFormatError, check_pair, get_format,
    get_recipe, register_format)
from lowbit_jax.qtensor import QTensor, dequantize, quantize  # noqa: E402
from lowbit_jax.params import QuantizeReport, dequantize_params, quantize_params  # noqa: E402
from lowbit_jax.checkpoint import CheckpointError, read_manifest, restore, save  # noqa: E402
from lowbit_jax.qmatmul import KernelUnavailableError, qmatmul  # noqa: E402

__all__ = [
    "FORMATS", "RECIPES", "QuantFormat", "Recipe", "UnknownFormatError", "check_pair",
    "get_format", "get_recipe", "register_format", "QTensor", "dequantize", "quantize",
    "QuantizeReport", "dequantize_params", "quantize_params", "CheckpointError",
    "read_manifest", "restore", "save", "KernelUnavailableError", "qmatmul",
]
