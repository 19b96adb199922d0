"""Timing helpers shared by the kernel benchmarks (GPU; CPU works for smoke runs).

`time_call` warms up, then times `iters` back-to-back calls between two
`block_until_ready`s, `repeats` times, and returns the median microseconds per call.
Callers pass several argument sets (weight copies) when one set would fit in the 50 MB L2,
so repeated calls stream from HBM as in a real model instead of hitting the cache.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

L2_BYTES = 50 * 2**20


def copies_needed(nbytes: int, l2_bytes: int = L2_BYTES) -> int:
    """Weight copies to rotate so consecutive calls miss L2 (>= 3x L2 in all)."""
    return max(1, min(16, -(-3 * l2_bytes // max(nbytes, 1))))


def time_call(fn: Callable, arg_sets: Sequence[tuple], *, warmup: int = 3, iters: int = 20,
              repeats: int = 5) -> float:
    """Median microseconds per call of fn(*args), rotating over arg_sets."""
    out = None
    for i in range(warmup):
        out = fn(*arg_sets[i % len(arg_sets)])
    jax.block_until_ready(out)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(iters):
            out = fn(*arg_sets[i % len(arg_sets)])
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t0) / iters * 1e6)
    return statistics.median(samples)


def copy_bandwidth(nbytes: int = 2**30) -> float:
    """Device-to-device copy bandwidth in bytes/s (bytes read + bytes written)."""
    x = jnp.ones((nbytes // 4,), jnp.float32)
    f = jax.jit(lambda a: a * 1.0 + 1.0)  # read once, write once; not elided
    us = time_call(f, [(x,)], warmup=2, iters=10, repeats=5)
    return 2 * nbytes / (us * 1e-6)


def time_torch(fn: Callable, *, warmup: int = 3, iters: int = 20, repeats: int = 5) -> float:
    """Median microseconds per call of a torch CUDA callable, timed with CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / iters)
    return statistics.median(samples)
