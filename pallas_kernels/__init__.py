"""Floor 1: block-scaled matmul kernels on plain arrays, and their plain-jnp references.

Nothing here knows a format by name: kernels take values, scales and static facts (element
dtype, scale dtype, block shape along K and N, layout). `blocks.py` is the storage contract;
`weight_only/` serves bf16 activations with low-bit weights, `act_quant/` + `scaled_gemm/`
serve activations quantized on the fly.
"""
