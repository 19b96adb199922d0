"""Where a decode step's time goes: wall time against device (kernel) time, per kernel (GPU).

    python -m scripts.profile_generate [--model llama3-8b] [--layers 32] [--recipes w4a16,mxfp4]
        [--legacy-launch]

For each recipe, random weights of the preset's shape (`--layers` overrides the depth) and a
256-token prompt at batch 1: the compiled `generate` program is run for 33 and 64 new tokens
(one program: one new-token bucket). The differences over the 31 extra steps give
    wall ms/step    the host clock, fastest of 3 runs each;
    device ms/step  CUPTI's sum of the program's kernel times;
and the kernels that take the device time. Wall above device is time the GPU waited for the
host (launches), which no kernel can win back. `--legacy-launch` lowers the Triton kernels to
jax-triton's legacy custom call instead of the FFI target (`pallas_kernels.triton_ffi`), to
compare the two; it must be chosen before the first Triton launch of the process.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import jax
import numpy as np

from models import config, quant
from models.generate import SamplingParams, generate_program
from scripts import bench_util
from scripts.bench_generate import LONG, SHORT


def _profile(model, prompts, n_new: int) -> tuple[float, dict[str, list]]:
    """(fastest wall seconds of 3 runs, {kernel name: [launches, device ms]}) of one program."""
    program, args, kwargs = generate_program(model, prompts, SamplingParams(max_new_tokens=n_new),
                                             stop_ids=())
    kernels = bench_util.kernel_times(program, *args, **kwargs)
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        jax.block_until_ready(program(*args, **kwargs))
        walls.append(time.perf_counter() - t0)
    return min(walls), kernels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama3-8b")
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--recipes", default="w4a16,mxfp4")
    ap.add_argument("--legacy-launch", action="store_true")
    ap.add_argument("--top", type=int, default=6)
    a = ap.parse_args(argv)
    from pallas_kernels import triton_ffi
    if a.legacy_launch:
        triton_ffi.launch_target = lambda: triton_ffi.LEGACY_TARGET
    cfg = config.get_config(a.model)
    if a.layers:
        cfg = dataclasses.replace(cfg, n_layers=a.layers)
    prompts = np.random.default_rng(0).integers(3, cfg.vocab_size, size=(1, 256)).tolist()
    steps = LONG - SHORT
    print(f"{cfg.name} x{cfg.n_layers} layers on {jax.devices()[0].device_kind}, Triton launches: "
          f"{triton_ffi.launch_target()}", flush=True)
    for recipe in a.recipes.split(","):
        model = quant.random_model(cfg, recipe, dtype="bfloat16")
        (w0, k0), (w1, k1) = _profile(model, prompts, SHORT), _profile(model, prompts, LONG)
        if not k1:
            raise SystemExit("no kernel times: CUPTI (an NVIDIA GPU) is needed")
        dev = (sum(v[1] for v in k1.values()) - sum(v[1] for v in k0.values())) / steps
        print(f"== {recipe}: wall {(w1 - w0) / steps * 1e3:.3f} ms/step, device {dev:.3f} ms/step "
              f"(33 tokens: wall {w0 * 1e3:.1f} ms, device {sum(v[1] for v in k0.values()):.1f} ms)")
        per_step = {n: ((k1[n][0] - k0.get(n, [0, 0])[0]) / steps,
                        (k1[n][1] - k0.get(n, [0, 0])[1]) / steps * 1e3) for n in k1}
        for name, (n, us) in sorted(per_step.items(), key=lambda kv: -kv[1][1])[:a.top]:
            print(f"   {name[:60]:60s} {n:6.1f} launches {us:8.1f} us per step")


if __name__ == "__main__":
    main()
