"""Dynamic activation quantization along K (per-token, 1xB blocks, MX).

`reference.quantize_rows` is the canonical definition (also used by `lowbit_jax.quantize`);
`kernel.quantize_rows_pallas` is the fused one-pass Pallas kernel; the public entry with
impl selection is `pallas_kernels.scaled_gemm.api.quantize_activations`.
"""

from pallas_kernels.act_quant.reference import dequantize_rows, quantize_rows  # noqa: F401
