"""End-to-end generate speed on the GPU: prefill and decode tokens/s per recipe.

    python -m scripts.bench_generate [--model llama3-8b] [--recipes float,w4a16,w8a16,fp8-block]

Random weights of the preset's shape (bf16 activations; `quant.random_model` quantizes one
leaf at a time). Per recipe, in one process:
    decode   two calls that generate 33 and 64 tokens share one compiled program (one
             new-token bucket); their time difference over the 31 extra steps gives the
             decode rate, prefill excluded. Batch 1 with a 2048-token prompt and batch 16
             with 64-token prompts.
    prefill  the batch-1 call's time less its 33 decode steps: 2048 / (t33 - 33 * step);
             "dev prefill" does the same with kernel (device) times, free of host noise.
    device   the kernel (device) time of one batch-1 decode step (CUPTI sums of the two
             programs, differenced): the step less this is the GPU waiting for the host.
    matmuls  the Dense products of one batch-1 token, timed layer by layer (device time):
             what the weight-only kernels account for in a decode step.
Each time is the fastest of 5 calls after a compiling call (host launch jitter only
ever adds time). JSON rows (card, jax version, launch target) go to
$OUT/bench_generate.json; a short table is printed last.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from models import config, quant
from models.generate import SamplingParams, bucket, generate, generate_program
from scripts import bench_util


def _time(model, prompts, n_new: int, repeats: int = 5) -> float:
    params = SamplingParams(max_new_tokens=n_new)
    generate(model, prompts, params, stop_ids=())
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        generate(model, prompts, params, stop_ids=())
        ts.append(time.perf_counter() - t0)
    return min(ts)


# Two new-token counts in one bucket of `generate` (33..64 -> 64), so both calls run one
# compiled program and their difference is decode steps only. (16 and 48 fell in buckets 16
# and 64: two programs whose prefills differ by up to ~10% of a 2048-token prefill, several
# decode steps' worth -- the session-5/6 decode rates that swung 1.6x between runs.)
SHORT, LONG = 33, 64


def _decode_rate(model, prompts, b: int) -> tuple[float, float]:
    """(decode tokens/s, seconds of everything but the decode steps) from two calls of one
    compiled program that generate SHORT and LONG tokens."""
    assert bucket(SHORT) == bucket(LONG)
    t_short = _time(model, prompts, SHORT)
    t_long = _time(model, prompts, LONG)
    step = max(t_long - t_short, 1e-9) / (LONG - SHORT)
    return b / step, t_short - SHORT * step


def device_ms(model, prompts) -> tuple[float, float] | tuple[None, None]:
    """Kernel (device) ms of one decode step and of the rest of the SHORT program (the
    prefill, mostly): CUPTI's kernel sums of the SHORT and LONG programs, differenced;
    (None, None) without CUPTI. Beside the host-clock step the first shows how long the GPU
    waited for the host; the second is a prefill time free of the host clocks' noise."""
    totals = []
    for n_new in (SHORT, LONG):
        program, args, kwargs = generate_program(model, prompts, SamplingParams(max_new_tokens=n_new),
                                                 stop_ids=())
        kernels = bench_util.kernel_times(program, *args, **kwargs)
        if not kernels:
            return None, None
        totals.append(sum(ms for _, ms in kernels.values()))
    step = (totals[1] - totals[0]) / (LONG - SHORT)
    return step, totals[0] - SHORT * step


def matmul_ms_per_token(model, dtype) -> float:
    """Device time of the model's Dense products for one token (M=1): each distinct
    (weight shape, format) timed once with `bench_util.time_call` (random x, weight copies
    past L2), times its count. Set against the decode step it shows how much of a step the
    weight products are."""
    import collections
    import jax.numpy as jnp
    from flax import nnx
    import lowbit_jax as lj
    from models.layers import QDense
    groups = collections.OrderedDict()
    for _, mod in nnx.iter_graph(model):
        if isinstance(mod, QDense):
            w = mod.kernel.get_value()
            key = (mod.in_features, mod.out_features, getattr(getattr(w, "fmt", None), "name", "float"))
            groups.setdefault(key, [mod, 0])[1] += 1
    total = 0.0
    for (k, _, _), (mod, count) in groups.items():
        x = jax.random.normal(jax.random.key(k), (1, k), dtype)
        w = mod.kernel.get_value()
        # Enough copies of the weight that consecutive calls stream it from HBM, as the
        # layers of a decode step do (one copy of a small weight stays in the 50 MB L2).
        nbytes = sum(a.nbytes for a in jax.tree_util.tree_leaves(w))
        sets = [(x, jax.tree_util.tree_map(jnp.copy, w)) for _ in range(bench_util.copies_needed(nbytes))]
        total += count * bench_util.time_call(lambda x, w: lj.qmatmul(x, w, impl=mod.impl), sets,
                                              iters=10)
        del sets
    return total / 1e3


def bench_recipe(cfg, recipe: str, *, impl: str, prefill_len: int = 2048, quick: bool = False) -> dict:
    t_start = time.perf_counter()
    model = quant.random_model(cfg, recipe, dtype="bfloat16")
    quant.set_matmul(model, impl=impl)
    stats = quant.weight_stats(model)
    rng = np.random.default_rng(0)
    row = {"recipe": recipe, "weight_bytes": stats.total_bytes,
           "bits_per_weight": round(stats.bits_per_weight, 3), "impl": impl}
    # Batch 1 with a long prompt: decode rate from the difference, prefill from the rest.
    prompt = rng.integers(3, cfg.vocab_size, size=(1, prefill_len)).tolist()
    rate, rest = _decode_rate(model, prompt, 1)
    row["decode_b1_tok_s"] = rate
    row["device_b1_ms_per_step"], rest_ms = device_ms(model, prompt)
    row["prefill_tok_s"] = prefill_len / rest
    row["device_prefill_tok_s"] = prefill_len / rest_ms * 1e3 if rest_ms else None
    if not quick:
        row["matmul_b1_ms_per_tok"] = matmul_ms_per_token(model, "bfloat16")
        rate, _ = _decode_rate(model, rng.integers(3, cfg.vocab_size, size=(16, 64)).tolist(), 16)
        row["decode_b16_tok_s"] = rate
    row["seconds"] = round(time.perf_counter() - t_start, 1)
    print(row, flush=True)
    return row


def _launch_target() -> str:
    """The custom call the Triton kernels lower to (`pallas_kernels.triton_ffi`)."""
    try:
        from pallas_kernels import triton_ffi
        return triton_ffi.launch_target()
    except ImportError as e:
        return f"none ({e})"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama3-8b")
    ap.add_argument("--recipes", default="float,w4a16,w8a16,fp8-block")
    ap.add_argument("--impl", default="auto")
    ap.add_argument("--prefill-len", type=int, default=2048)
    ap.add_argument("--quick", action="store_true", help="batch-1 prefill and decode only (no b16, no matmuls)")
    ap.add_argument("--deadline-s", type=float, default=1e9, help="start no recipe after this many seconds")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    a = ap.parse_args(argv)
    cfg = config.get_config(a.model)
    rows = []
    t0 = time.perf_counter()
    for r in a.recipes.split(","):
        if time.perf_counter() - t0 > a.deadline_s:
            rows.append({"recipe": r, "error": f"skipped: past --deadline-s={a.deadline_s}"})
            continue
        try:
            rows.append(bench_recipe(cfg, r, impl=a.impl, prefill_len=a.prefill_len, quick=a.quick))
        except Exception as e:  # noqa: BLE001 - one failing recipe is a row, not a crash
            rows.append({"recipe": r, "error": f"{type(e).__name__}: {str(e)[:300]}"})
            print(rows[-1], flush=True)
    dev = jax.devices()[0]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bench_generate.json"), "w") as f:
        json.dump({"card": dev.device_kind, "jax": jax.__version__, "model": a.model,
                   "triton_launch_target": _launch_target(), "rows": rows}, f, indent=1)
    base = next((r for r in rows if r["recipe"] == "float" and "error" not in r), None)
    print(f"{a.model} on {dev.device_kind}, jax {jax.__version__}")
    print(f"{'recipe':>10s} {'GB':>6s} {'prefill tok/s':>14s} {'dev prefill':>14s} {'dec b1 tok/s':>13s} "
          f"{'dec b16 tok/s':>14s} {'b1 ms: step':>11s} {'device':>6s} {'matmuls':>7s}")
    for r in rows:
        if "error" in r:
            print(f"{r['recipe']:>10s} ERROR {r['error'][:100]}")
            continue

        def cell(key):
            v = r.get(key)
            if v is None:
                return "-"
            ratio = f" ({v / base[key]:.2f}x)" if base and base.get(key) else ""
            return f"{v:.0f}{ratio}"
        print(f"{r['recipe']:>10s} {r['weight_bytes'] / 1e9:6.2f} {cell('prefill_tok_s'):>14s} "
              f"{cell('device_prefill_tok_s'):>14s} {cell('decode_b1_tok_s'):>13s} {cell('decode_b16_tok_s'):>14s} "
              f"{1e3 / r['decode_b1_tok_s']:11.2f} {r['device_b1_ms_per_step'] or float('nan'):6.2f} "
              f"{r.get('matmul_b1_ms_per_tok') or float('nan'):7.2f}")


if __name__ == "__main__":
    main()
