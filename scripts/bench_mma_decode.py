"""The tensor-core decode GEMV (`triton_mma`) around the chooser's config, in one process on
the GPU, every variant checked against the reference first. Axes (--vary): "rule", the split
of K by programs (4 per SM) or by 16-row weight tiles (16 per SM); "x", x read as it is
(x_mode 1) or in fragment order (x_mode 2); "sum", the split's partial sums added by XLA
or by the kernel's last program per tile (split_sum).

    python -m scripts.bench_mma_decode [--shapes 8192x28672,14336x4096] [--ms 4,8,16]
        [--formats int4-g128,int8,nvfp4] [--vary rule,x] [--kernels] [--host-calls 32]

--kernels adds each variant's per-kernel device times (XLA's transpose of x, the GEMV, XLA's
split-K sum). CUPTI's device time counts kernels only; --host-calls N also times programs
of N calls (distinct x) on the host clock, which counts the gaps between kernels and the
launcher's memsets. Prints one line per (shape, M, format) and writes
$OUT/bench_mma_decode.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os

import jax
import jax.numpy as jnp

from pallas_kernels.weight_only import config as wcfg, testing
from pallas_kernels.weight_only.api import weight_only_matmul
from scripts import bench_util
from scripts.bench_kernels import CHECK_TOL, _rel_err


AXES = {"rule": ("programs", "tiles"), "x": ("x1", "x2"), "sum": ("xla", "kernel")}


def variants(spec: wcfg.WeightSpec, m: int, device_kind: str, vary=("rule", "x")) -> dict[str, wcfg.TileConfig]:
    """The chooser's config with every combination of the `vary` axes ("tiles-x2", ...)."""
    base = wcfg.choose_config(m, spec, device_kind=device_kind)
    out = {}
    for combo in itertools.product(*(AXES[a] for a in vary)):
        cfg, pick = base, dict(zip(vary, combo))
        if "rule" in pick:
            cfg = dataclasses.replace(cfg, split_k=wcfg.split_for(spec, base, m, mma_tiles=pick["rule"] == "tiles"))
        if "x" in pick:
            cfg = dataclasses.replace(cfg, x_mode=int(pick["x"][1]))
        if "sum" in pick:
            cfg = dataclasses.replace(cfg, split_sum=pick["sum"])
        out["-".join(combo)] = cfg
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="8192x28672,14336x4096,4096x14336")
    p.add_argument("--ms", default="4,8,16")
    p.add_argument("--formats", default="int4-g128,int8,nvfp4")
    p.add_argument("--vary", default="rule,x", help=f"axes among {tuple(AXES)}")
    p.add_argument("--kernels", action="store_true", help="also per-kernel device times")
    p.add_argument("--host-calls", type=int, default=0, help="also host-clock time, N calls per program")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args(argv)
    vary = tuple(a.vary.split(","))
    if unknown := set(vary) - set(AXES):
        p.error(f"--vary: unknown axes {sorted(unknown)}; choose from {tuple(AXES)}")
    card = jax.devices()[0].device_kind
    print(f"{card}; jax {jax.__version__}", flush=True)
    rows = []
    for k, n in (tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")):
        wbf = jax.random.normal(jax.random.key(0), (k, n), jnp.bfloat16)
        bf_sets = [wbf + i for i in range(bench_util.copies_needed(k * n * 2))]
        for label in a.formats.split(","):
            case = testing.CASES_BY_LABEL[label]
            ws = [testing.random_weight(jax.random.key(i), case, k, n, layout="mma")
                  for i in range(bench_util.copies_needed(k * n // 2))]
            static = {f: ws[0][f] for f in ("element_dtype", "block_k", "block_n", "layout", "k", "n")}
            spec = testing.weight_spec(ws[0])
            sets = [(w["values"], w["scales"], w["zeros"], w["global_scale"]) for w in ws]
            for m in (int(v) for v in a.ms.split(",")):
                x = jax.random.normal(jax.random.key(m), (m, k), jnp.bfloat16)
                xs = [x + i for i in range(a.host_calls)]  # distinct calls: XLA merges none
                bf = bench_util.time_call(jax.jit(lambda x, w: x @ w), [(x, w) for w in bf_sets])
                ref = weight_only_matmul(x, *sets[0], **static, impl="xla", out_dtype=jnp.float32)
                row = dict(k=k, n=n, m=m, fmt=label, bf16_us=bf,
                           chosen=dataclasses.asdict(wcfg.choose_config(m, spec, device_kind=card)))
                line = f"{k}x{n} M={m:<3d} {label:10s} bf16 {bf:6.1f} |"
                if xs:
                    row["bf16_host_us"] = bf_host = bench_util.time_call(
                        jax.jit(lambda x, w: x @ w), [(xi, bf_sets[i % len(bf_sets)]) for i, xi in enumerate(xs)],
                        clock="host")
                    line = line[:-1] + f"host {bf_host:6.1f} |"
                for name, cfg in variants(spec, m, card, vary).items():
                    f = jax.jit(lambda x, *arr, cfg=cfg: weight_only_matmul(
                        x, *arr, **static, impl="triton", config=cfg, out_dtype=jnp.float32))
                    err = _rel_err(f(x, *sets[0]), ref)
                    us = bench_util.time_call(f, [(x, *s) for s in sets]) if err < CHECK_TOL else -1.0
                    row[name] = dict(us=us, split_k=cfg.split_k, rel_err=err)
                    if a.kernels:
                        row[name]["kernels_ms"] = bench_util.kernel_times(f, x, *sets[0])
                    line += f" {name} s{cfg.split_k} {us:6.1f} ({bf / us:.2f}x)" if us > 0 else f" {name} FAILED"
                    if xs and us > 0:
                        row[name]["host_us"] = h = bench_util.time_call(
                            f, [(xi, *sets[i % len(sets)]) for i, xi in enumerate(xs)], clock="host")
                        line += f" host {h:6.1f} ({bf_host / h:.2f}x)"
                    line += " |"
                rows.append(row)
                print(line, flush=True)
            del ws, sets
        del wbf, bf_sets
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bench_mma_decode.json"), "w") as f:
        json.dump(dict(card=card, jax=jax.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
