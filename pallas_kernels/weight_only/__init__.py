"""Weight-only low-bit matmul kernels: x (bf16/f16) @ block-scaled low-bit weight.

Public entry: `weight_only_matmul`, `unsupported_reason` (api.py). Configs in config.py,
the reference/XLA fallback in reference.py, kernels in pallas_kernel.py (BlockSpec Pallas;
interpret mode on CPU) and triton_kernel.py (raw Triton through jax-triton; GPU).
"""

from pallas_kernels.weight_only.api import unsupported_reason, weight_only_matmul
from pallas_kernels.weight_only.config import TileConfig, WeightSpec, choose_config
from pallas_kernels.weight_only.reference import weight_only_matmul_reference

__all__ = ["weight_only_matmul", "unsupported_reason", "weight_only_matmul_reference",
           "TileConfig", "WeightSpec", "choose_config"]
