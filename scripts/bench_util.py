"""Timing helpers shared by the kernel benchmarks (GPU; CPU works for smoke runs).

`time_call` returns the median microseconds of one call of `fn`, measured on the device:
one jitted program calls `fn` once per argument set (weight copies, so that consecutive
calls stream from HBM instead of the 50 MB L2, as in a real model), and CUPTI
(`jax.experimental.mosaic.gpu.profiler.measure`) sums the program's kernel times. Host
dispatch is not in the number: a 30 us kernel timed by a host clock around single calls
measures JAX's dispatch instead (seen here: XLA's bf16 GEMV of a 117 MB weight "took"
64 us that way). Without CUPTI (CPU smoke runs) the host clock times the same program.
`last_method()` says which clock the last call used.
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


_METHOD = ["none"]


def last_method() -> str:
    """'cupti' (device kernel time) or 'host' (wall clock around the jitted program)."""
    return _METHOD[0]


def time_call(fn: Callable, arg_sets: Sequence[tuple], *, warmup: int = 2, iters: int = 20,
              repeats: int = 5) -> float:
    """Median device microseconds per call of fn(*args), over `arg_sets` (see module doc).
    `iters` is the number of timed programs (CUPTI) or of back-to-back programs per host
    sample (`repeats` samples)."""
    sets = list(arg_sets)
    prog = jax.jit(lambda sets: [fn(*a) for a in sets])
    for _ in range(warmup):
        jax.block_until_ready(prog(sets))
    try:
        from jax.experimental.mosaic.gpu import profiler
        if jax.default_backend() != "gpu":
            raise RuntimeError("no GPU")
        _, ms = profiler.measure(prog, iterations=iters)(sets)
        if ms:
            _METHOD[0] = "cupti"
            return statistics.median(ms) * 1e3 / len(sets)
    except Exception:  # noqa: BLE001 - no CUPTI here: fall back to the host clock
        pass
    _METHOD[0] = "host"
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(iters):
            out = prog(sets)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - t0) / (iters * len(sets)) * 1e6)
    return statistics.median(samples)


def kernel_times(fn: Callable, *args, **kwargs) -> dict[str, list]:
    """{kernel name: [launches, device ms]} of one call of the jitted `fn` (CUPTI, after a
    warm-up call); {} where CUPTI is not available (CPU)."""
    try:
        from jax.experimental.mosaic.gpu import profiler
        if jax.default_backend() != "gpu":
            return {}
        _, timings = profiler.measure(fn, aggregate=False)(*args, **kwargs)
    except RuntimeError:  # no CUPTI on this platform
        return {}
    kernels: dict[str, list] = {}
    for name, ms in timings or []:
        k = kernels.setdefault(name, [0, 0.0])
        k[0] += 1
        k[1] += ms
    return kernels


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
