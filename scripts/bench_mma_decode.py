"""The tensor-core decode GEMV (`triton_mma`) around the chooser's config: its split of K by
programs (4 per SM) or by 16-row weight tiles (16 per SM), x read as it is (x_mode 1) or in
fragment order (x_mode 2), in one process on the GPU; every variant is checked against the
reference first.

    python -m scripts.bench_mma_decode [--shapes 8192x28672,14336x4096] [--ms 4,8,16]
        [--formats int4-g128,int8,nvfp4] [--kernels]

--kernels adds each variant's per-kernel device times (XLA's transpose of x, the GEMV, XLA's
split-K sum). Prints one line per (shape, M, format) and writes $OUT/bench_mma_decode.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import jax
import jax.numpy as jnp

from pallas_kernels.weight_only import config as wcfg, testing
from pallas_kernels.weight_only.api import weight_only_matmul
from scripts import bench_util
from scripts.bench_kernels import CHECK_TOL, _rel_err


def variants(spec: wcfg.WeightSpec, m: int, device_kind: str) -> dict[str, wcfg.TileConfig]:
    """The chooser's config with each split rule and x mode ("programs-x1", ...)."""
    base = wcfg.choose_config(m, spec, device_kind=device_kind)
    return {f"{rule}-x{xm}": dataclasses.replace(
                base, split_k=wcfg.split_for(spec, base, m, mma_tiles=rule == "tiles"), x_mode=xm)
            for rule in ("programs", "tiles") for xm in (1, 2)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="8192x28672,14336x4096,4096x14336")
    p.add_argument("--ms", default="4,8,16")
    p.add_argument("--formats", default="int4-g128,int8,nvfp4")
    p.add_argument("--kernels", action="store_true", help="also per-kernel device times")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args(argv)
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
                bf = bench_util.time_call(jax.jit(lambda x, w: x @ w), [(x, w) for w in bf_sets])
                ref = weight_only_matmul(x, *sets[0], **static, impl="xla", out_dtype=jnp.float32)
                row = dict(k=k, n=n, m=m, fmt=label, bf16_us=bf,
                           chosen=dataclasses.asdict(wcfg.choose_config(m, spec, device_kind=card)))
                line = f"{k}x{n} M={m:<3d} {label:10s} bf16 {bf:6.1f} |"
                for name, cfg in variants(spec, m, card).items():
                    f = jax.jit(lambda x, *arr, cfg=cfg: weight_only_matmul(
                        x, *arr, **static, impl="triton", config=cfg, out_dtype=jnp.float32))
                    err = _rel_err(f(x, *sets[0]), ref)
                    us = bench_util.time_call(f, [(x, *s) for s in sets]) if err < CHECK_TOL else -1.0
                    row[name] = dict(us=us, split_k=cfg.split_k, rel_err=err)
                    if a.kernels:
                        row[name]["kernels_ms"] = bench_util.kernel_times(f, x, *sets[0])
                    line += f" {name} s{cfg.split_k} {us:6.1f} ({bf / us:.2f}x) |" if us > 0 else f" {name} FAILED |"
                rows.append(row)
                print(line, flush=True)
            del ws, sets
        del wbf, bf_sets
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bench_mma_decode.json"), "w") as f:
        json.dump(dict(card=card, jax=jax.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
