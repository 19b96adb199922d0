"""Sweep of the Mosaic GPU scaled GEMM (`scaled_gemm/mosaic_kernel.py`) against the Triton
kernel and XLA's cuBLASLt / bf16 GEMMs, in one process on the GPU (CUPTI device time).

Every configuration is first checked against the f32 reference on the same quantized
operands (odd M); only configurations that pass are timed. Shapes are M x N x K.

  python scripts/bench_mosaic_scaled.py [--shapes sq8192,dsv3-o] [--recipes fp8-block]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import traceback

import jax
import jax.numpy as jnp

from pallas_kernels.scaled_gemm import api
from pallas_kernels.scaled_gemm.cases import RECIPES, make_operands
from pallas_kernels.scaled_gemm.mosaic_kernel import MosaicGemmConfig as MC
from scripts.bench_scaled import rel_err
from scripts.bench_util import time_call

SHAPES = {"sq8192": (8192, 8192, 8192), "dsv3-o": (4096, 7168, 16384),
          "llama8b-up": (4096, 14336, 4096), "dsv3-qkv_a": (4096, 2112, 7168)}
PROMOTE = [MC(tile_m=64, tile_n=128, wg_dim="m", max_concurrent_steps=4),
           MC(tile_m=64, tile_n=128, wg_dim="m", max_concurrent_steps=4, grid_tile_width=16),
           MC(tile_m=64, tile_n=128, wg_dim="m", max_concurrent_steps=4, grid_minor_dim="m"),
           MC(tile_m=64, tile_n=128, wg_dim="m", max_concurrent_steps=3),
           MC(tile_m=64, tile_n=128, wg_dim="n", max_concurrent_steps=4)]
PROMOTE32 = [MC(tile_m=64, tile_n=128, tile_k=32, wg_dim="m", max_concurrent_steps=8),
             MC(tile_m=64, tile_n=128, tile_k=32, wg_dim="n", max_concurrent_steps=8)]
EPILOGUE = [MC(tile_m=128, tile_n=128, wg_dim="n", max_concurrent_steps=3),
            MC(tile_m=128, tile_n=128, wg_dim="n", max_concurrent_steps=3, grid_minor_dim="m"),
            MC(tile_m=128, tile_n=128, wg_dim="m", max_concurrent_steps=3),
            MC(tile_m=128, tile_n=128, tile_k=64, wg_dim="n", max_concurrent_steps=6),
            MC(tile_m=64, tile_n=256, wg_dim="m", max_concurrent_steps=3)]

def label(c: MC) -> str:
    return (f"{c.tile_m}x{c.tile_n}x{c.tile_k}/{c.wg_dim} s{c.max_concurrent_steps} "
            f"{c.grid_minor_dim}{c.grid_tile_width}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--shapes", default="sq8192,dsv3-o,llama8b-up")
    p.add_argument("--recipes", default="fp8-block,w8a8-fp8,w8a8-int8")
    p.add_argument("--deadline", type=float, default=480)
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    a = p.parse_args()
    t0 = time.time()
    recipes = [r for r in RECIPES if r.name in a.recipes.split(",")]
    meta = {"card": jax.devices()[0].device_kind, "jax": jax.__version__,
            "git_rev": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                      text=True).stdout.strip()}
    print(meta, flush=True)
    rows, checks, errors = [], [], []
    key = jax.random.key(int(time.time()) % 997)
    ok_cfgs = {}
    for r in recipes:  # correctness first, on a small odd-M problem
        cfgs = EPILOGUE if not r.x_block_k else PROMOTE if r.x_block_k == 128 else PROMOTE32
        xv, xs, wv, ws, kw = make_operands(key, r, 333, 1024, 768, "nk")
        ref = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="xla", **kw)
        ok_cfgs[r.name] = []
        for c in cfgs:
            try:
                y = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="mosaic",
                                      config=c, **kw)
                e = rel_err(y, ref)
                good = e < (1e-5 if r.x_dtype == jnp.int8 else 3e-3)
                checks.append({"recipe": r.name, "config": label(c), "rel_err": e, "ok": good})
                print("CHECK", r.name, label(c), f"{e:.2e}", good, flush=True)
                if good:
                    ok_cfgs[r.name].append(c)
            except Exception as ex:  # noqa: BLE001 - report and go on
                errors.append({"what": f"check {r.name} {label(c)}", "error": f"{type(ex).__name__}: {str(ex)[:800]}"})
                print("ERROR", r.name, label(c), type(ex).__name__, str(ex)[:800], flush=True)
    for sname in a.shapes.split(","):
        m, n, k = SHAPES[sname]
        flop = 2 * m * n * k
        x = jax.random.normal(key, (m, k), jnp.bfloat16)
        w = jax.random.normal(jax.random.fold_in(key, 1), (k, n), jnp.bfloat16)
        dn = (((1,), (1,)), ((), ()))
        base = {"xla_bf16": time_call(lambda p, q: p @ q, [(x, w)])}
        a8, w8 = x.astype(jnp.float8_e4m3fn), w.T.astype(jnp.float8_e4m3fn)
        base["lt_fp8"] = time_call(lambda p, q: jax.lax.dot_general(
            p, q, dn, preferred_element_type=jnp.float32).astype(jnp.bfloat16), [(a8, w8)])
        ai = jnp.clip(x * 20, -127, 127).astype(jnp.int8)
        wi = jnp.clip(w.T * 20, -127, 127).astype(jnp.int8)
        base["lt_int8"] = time_call(lambda p, q: jax.lax.dot_general(
            p, q, dn, preferred_element_type=jnp.int32).astype(jnp.bfloat16), [(ai, wi)])
        del x, w, a8, w8, ai, wi
        print(sname, {kk: round(v, 1) for kk, v in base.items()}, flush=True)
        for r in recipes:
            if time.time() - t0 > a.deadline:
                errors.append({"what": f"{sname} {r.name}", "error": "skipped: deadline"})
                continue
            xv, xs, wv, ws, kw = make_operands(jax.random.fold_in(key, 7), r, m, k, n, "nk")
            res = {}
            try:
                yt = jax.jit(lambda *q: api.scaled_matmul(*q, impl="triton", **kw))(xv, xs, wv, ws)
                res["triton"] = time_call(lambda *q: api.scaled_matmul(*q, impl="triton", **kw),
                                          [(xv, xs, wv, ws)])
            except Exception as ex:  # noqa: BLE001
                errors.append({"what": f"triton {sname} {r.name}", "error": str(ex)[:400]})
                yt = None
            for c in ok_cfgs[r.name]:
                if api.unsupported_reason(xv, xs, wv, ws, impl="mosaic", config=c, **kw):
                    continue
                try:
                    f = lambda *q, c=c: api.scaled_matmul(*q, impl="mosaic", config=c, **kw)  # noqa: E731
                    us = time_call(f, [(xv, xs, wv, ws)])
                    e = rel_err(jax.jit(f)(xv, xs, wv, ws).astype(jnp.float32),
                                yt.astype(jnp.float32)) if yt is not None else None
                    res[label(c)] = us
                    res[label(c) + " err_vs_triton"] = e
                except Exception as ex:  # noqa: BLE001
                    errors.append({"what": f"{sname} {r.name} {label(c)}", "error": f"{type(ex).__name__}: {str(ex)[:600]}"})
                    traceback.print_exc(limit=1)
            rows.append({"shape": sname, "M": m, "N": n, "K": k, "recipe": r.name,
                         "baselines_us": base, "us": res})
            best = min(((v, kk) for kk, v in res.items() if "err" not in kk and kk != "triton"),
                       default=(None, None))
            print(sname, r.name, {kk: (round(v, 1) if isinstance(v, float) and v > 1e-2 else v)
                                  for kk, v in res.items()}, flush=True)
            if best[0]:
                lt = base["lt_int8" if r.x_dtype == jnp.int8 else "lt_fp8"]
                print(f"  best mosaic {best[1]}: {flop / best[0] / 1e6:.0f} TF/s, "
                      f"{base['xla_bf16'] / best[0]:.2f}x bf16, {lt / best[0]:.2f}x Lt, "
                      f"triton {flop / res['triton'] / 1e6 if res.get('triton') else 0:.0f} TF/s", flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "mosaic_scaled.json"), "w") as fh:
        json.dump({"meta": meta, "checks": checks, "rows": rows, "errors": errors}, fh, indent=1)
    print("\nshape recipe: TF/s triton | best mosaic (config) | x bf16 | x Lt")
    for row in rows:
        res, base, flop = row["us"], row["baselines_us"], 2 * row["M"] * row["N"] * row["K"]
        cand = [(v, kk) for kk, v in res.items() if "err" not in kk and kk != "triton"]
        if not cand:
            print(row["shape"], row["recipe"], "no mosaic result")
            continue
        v, kk = min(cand)
        lt = base["lt_int8" if "int8" in row["recipe"] else "lt_fp8"]
        tt = res.get("triton")
        print(f"{row['shape']:11s} {row['recipe']:10s} {flop / tt / 1e6 if tt else 0:6.0f} | "
              f"{flop / v / 1e6:6.0f} ({kk}) | {base['xla_bf16'] / v:.2f} | {lt / v:.2f}")
    for e in errors:
        print("ERROR", e["what"], e["error"][:300])


if __name__ == "__main__":
    main()
