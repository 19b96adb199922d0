"""Run one weight-only kernel a few times so a profiler can attach (GPU only):

    ncu --clock-control none --section SpeedOfLight --section WarpStateStats -k regex:kgemv \\
        python3 -m scripts.profile_decode --fmt int4-g128 --shape 8192x28672 --m 1 \\
        --layout nk --config kgemv,1,128,128,4,4

--config is kernel,block_m,block_n,block_k,unroll,num_warps[,x_mode] (split_k from the
chooser's rule); without it the chooser's config runs.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp

from pallas_kernels.weight_only import config as wcfg, testing
from pallas_kernels.weight_only.api import weight_only_matmul


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fmt", default="int4-g128")
    p.add_argument("--shape", default="8192x28672")
    p.add_argument("--m", type=int, default=1)
    p.add_argument("--layout", default="nk")
    p.add_argument("--config", default=None)
    p.add_argument("--iters", type=int, default=3)
    a = p.parse_args(argv)
    k, n = (int(v) for v in a.shape.split("x"))
    case = testing.CASES_BY_LABEL[a.fmt]
    w = testing.random_weight(jax.random.key(0), case, k, n, layout=a.layout)
    arrays = (w["values"], w["scales"], w["zeros"], w["global_scale"])
    static = {f: w[f] for f in ("element_dtype", "block_k", "block_n", "layout", "k", "n")}
    cfg = None
    if a.config:
        kind, bm, bn, bk, u, nw, *xm = a.config.split(",")
        cfg = wcfg.TileConfig(kernel=kind, block_m=int(bm), block_n=int(bn), block_k=int(bk),
                              unroll=int(u), num_warps=int(nw), num_stages=1 if kind == "kgemv" else 4,
                              x_mode=int(xm[0]) if xm else 1)
        cfg = dataclasses.replace(cfg, split_k=wcfg.split_for(testing.weight_spec(w), cfg, a.m))
        print(cfg)
    x = jax.random.normal(jax.random.key(1), (a.m, k), jnp.bfloat16)
    f = jax.jit(lambda x, *arr: weight_only_matmul(x, *arr, **static, impl="triton", config=cfg))
    for _ in range(a.iters):
        out = f(x, *arrays)
    jax.block_until_ready(out)
    print("done", out.shape, out.dtype)


if __name__ == "__main__":
    main()
