"""Activation-quantized GEMMs: y = dequant(xq) @ dequant(wq), one kernel family.

Formats served (by their static facts, never by name): int8 or fp8 per-token x
per-channel (W8A8), fp8 1x128 x 128x128 blocks (DeepSeek-V3), int8 1x32 x 32x32 blocks
(JetFire), MXFP8 x MXFP8 and MXFP8 x MXFP4 (E8M0 scales per 32 along K). Public entry:
`api.py` (`quantize_activations`, `scaled_matmul`, `unsupported_reason`).
"""

from pallas_kernels.scaled_gemm.api import (  # noqa: F401
    quantize_activations,
    scaled_matmul,
    unsupported_reason,
)
from pallas_kernels.scaled_gemm.config import GemmConfig, choose_config  # noqa: F401
