"""Floor 4: entry points (the `lowbit-jax` CLI, demo, eval, fine-tune) and GPU benchmarks."""
