"""Benchmark + GPU correctness check of the activation-quantized GEMM family.

One process, same-run baselines. Shape convention: M x N x K (DeepGEMM's), i.e. y (M, N) =
x (M, K) @ w (K, N); weights stored "nk" (N, K). Shapes: 8192^3, DeepSeek-V3 4096x7168x16384
and 4096x2112x7168, Llama-3-8B prefill layers at M=4096.

For each recipe: impl="auto" (the Mosaic GPU kernel where it runs) and the Triton kernel (a
small config sweep on the big shapes; the best of all is reported), the
fused Pallas quantizer, quantizer + GEMM end to end, and baselines: XLA bf16 (x @ w),
XLA's cuBLASLt fp8/int8 (`lax.dot_general` on 8-bit operands, f32 out, w K-major), the XLA
dequantize-to-bf16-then-dot formulation for block formats, `jax.nn.scaled_matmul` (mxfp8).
Prints a short table last; writes the full JSON to $OUT (or --out).

  python scripts/bench_scaled.py [--quick] [--deadline SECONDS]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels.act_quant import kernel as aq_kernel
from pallas_kernels.act_quant import reference as aq_ref
from pallas_kernels.scaled_gemm import api
from pallas_kernels.scaled_gemm.cases import RECIPES, make_operands
from pallas_kernels.scaled_gemm.config import GemmConfig, choose_config
from pallas_kernels.scaled_gemm.reference import scaled_matmul_reference

SHAPES = {  # name: (M, N, K)
    "sq8192": (8192, 8192, 8192),
    "dsv3-o": (4096, 7168, 16384),
    "dsv3-qkv_a": (4096, 2112, 7168),
    "llama8b-qkvo": (4096, 4096, 4096),
    "llama8b-up": (4096, 14336, 4096),
    "llama8b-down": (4096, 4096, 14336),
    "llama8b-kv": (4096, 1024, 4096),
}
SWEEP_SHAPES = ("sq8192", "dsv3-o")
LAYOUTS = ("nk", "kn")
SWEEP = {
    "w8a8-int8": [GemmConfig(block_m=128, block_n=256, block_k=128, num_warps=8, num_stages=4, mode="epilogue"),
                  GemmConfig(block_m=128, block_n=128, block_k=128, num_warps=4, num_stages=5, mode="epilogue")],
    "w8a8-fp8": [GemmConfig(block_m=128, block_n=256, block_k=128, num_warps=8, num_stages=4, mode="epilogue"),
                 GemmConfig(block_m=128, block_n=128, block_k=128, num_warps=4, num_stages=5, mode="epilogue")],
    "fp8-block": [GemmConfig(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=4, mode="promote"),
                  GemmConfig(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3, mode="promote",
                             groups_per_step=2),
                  # one warpgroup per CTA, 2-3 CTAs per SM so one CTA's promotion can overlap another's
                  # wgmma: slower than 128x128 on H200 (session 7: 738-777 against 833-850 TFLOP/s)
                  GemmConfig(block_m=64, block_n=128, block_k=128, num_warps=4, num_stages=4, mode="promote"),
                  GemmConfig(block_m=64, block_n=128, block_k=128, num_warps=4, num_stages=3, mode="promote")],
    "int8-block": [GemmConfig(block_m=128, block_n=128, block_k=32, num_warps=8, num_stages=5, mode="promote"),
                   GemmConfig(block_m=128, block_n=128, block_k=32, num_warps=8, num_stages=5, mode="promote",
                              groups_per_step=2),
                   GemmConfig(block_m=64, block_n=128, block_k=32, num_warps=4, num_stages=5, mode="promote"),
                   GemmConfig(block_m=64, block_n=64, block_k=32, num_warps=4, num_stages=6, mode="promote"),
                   GemmConfig(block_m=128, block_n=64, block_k=32, num_warps=8, num_stages=5, mode="promote")],
    "mxfp8": [GemmConfig(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3, mode="dot_scaled"),
              GemmConfig(block_m=128, block_n=128, block_k=32, num_warps=8, num_stages=5, mode="promote"),
              GemmConfig(block_m=128, block_n=256, block_k=128, num_warps=8, num_stages=3, mode="dot_scaled")],
    "mxfp4-a8": [GemmConfig(block_m=128, block_n=128, block_k=128, num_warps=8, num_stages=3, mode="dot_scaled"),
                 GemmConfig(block_m=128, block_n=128, block_k=32, num_warps=8, num_stages=5, mode="promote")],
}
QUANT = {  # recipe -> quantize_activations kwargs
    "w8a8-int8": dict(element_dtype=jnp.int8, block_k=None, scale_dtype=jnp.float32),
    "w8a8-fp8": dict(element_dtype=jnp.float8_e4m3fn, block_k=None, scale_dtype=jnp.float32),
    "fp8-block": dict(element_dtype=jnp.float8_e4m3fn, block_k=128, scale_dtype=jnp.float32),
    "int8-block": dict(element_dtype=jnp.int8, block_k=32, scale_dtype=jnp.float32),
    "mxfp8": dict(element_dtype=jnp.float8_e4m3fn, block_k=32, scale_dtype=jnp.float8_e8m0fnu),
}
QUANT["mxfp4-a8"] = QUANT["mxfp8"]


def time_fn(f, *args, min_time=0.02, reps=5):
    """Median seconds per call: warm up, then reps x (iters back-to-back calls)."""
    jax.block_until_ready(f(*args))
    t = time.perf_counter()
    jax.block_until_ready(f(*args))
    one = max(time.perf_counter() - t, 1e-6)
    iters = max(3, min(200, int(min_time / one)))
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(iters):
            r = f(*args)
        jax.block_until_ready(r)
        out.append((time.perf_counter() - t) / iters)
    return statistics.median(out)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return float("inf")
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def recipe_kwargs(r, k):
    gw = k if r.w_block_k is None else r.w_block_k
    return gw


def cfg_label(c):
    return f"{c.mode}-{c.block_m}x{c.block_n}x{c.block_k}-w{c.num_warps}s{c.num_stages}g{c.groups_per_step}"


def pad_up(v, b):
    return -(-v // b) * b


class Bench:
    def __init__(self, deadline):
        self.t0 = time.time()
        self.deadline = deadline
        self.rows, self.checks, self.errors = [], [], []

    def left(self):
        return self.deadline - (time.time() - self.t0)

    def guard(self, what, fn):
        if self.left() <= 0:
            self.errors.append({"what": what, "error": "skipped: deadline"})
            return None
        try:
            return fn()
        except Exception as e:  # keep going: one failure must not lose the run
            self.errors.append({"what": what, "error": f"{type(e).__name__}: {str(e)[:600]}"})
            traceback.print_exc(limit=2)
            return None


def checks(b: Bench):
    """Kernel vs reference on the same quantized inputs, odd M, every recipe and layout."""
    key = jax.random.PRNGKey(int(time.time()) % 1000)
    for r in RECIPES:
        for layout in LAYOUTS:
            def one():
                m, k, n = 257, 1024, 384
                xv, xs, wv, ws, kw = make_operands(jax.random.fold_in(key, hash(r.name) % 997), r, m, k, n, layout)
                ref = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="xla", **kw)
                out = {}
                for c in SWEEP[r.name]:
                    if api.unsupported_reason(xv, xs, wv, ws, impl="triton", config=c, **kw):
                        continue
                    y = jax.jit(lambda *a, c=c: api.scaled_matmul(*a, out_dtype=jnp.float32, impl="triton", config=c, **kw))(xv, xs, wv, ws)
                    out[cfg_label(c)] = rel_err(y, ref)
                yb = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.bfloat16, impl="triton", **kw)
                out["auto-bf16"] = rel_err(yb, ref)
                b.checks.append({"recipe": r.name, "layout": layout, "m": m, "k": k, "n": n, "rel_err": out,
                                 "ok": all(v < (1e-2 if "bf16" in kk else 2e-3 if r.x_dtype != jnp.int8 else 1e-5)
                                           for kk, v in out.items())})
            b.guard(f"check {r.name} {layout}", one)
    # Pallas GEMM natively (Pallas-Triton), one format
    def pallas_native():
        from pallas_kernels.scaled_gemm import cases
        r = next(r for r in cases.RECIPES if r.name == "w8a8-fp8")
        xv, xs, wv, ws, kw = make_operands(key, r, 256, 1024, 512, "nk")
        ref = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="xla", **kw)
        y = api.scaled_matmul(xv, xs, wv, ws, out_dtype=jnp.float32, impl="pallas", **kw)
        b.checks.append({"recipe": r.name, "impl": "pallas-native", "rel_err": rel_err(y, ref),
                         "ok": rel_err(y, ref) < 1e-4})
    b.guard("pallas native gemm", pallas_native)
    # Quantizer kernel vs reference on GPU (odd M, K not a multiple of the block).
    for name, q in QUANT.items():
        if name == "mxfp4-a8" or name not in [r.name for r in RECIPES]:
            continue
        def oneq(q=q, name=name):
            x = (jax.random.normal(key, (999, 7000), jnp.float32) * 3).astype(jnp.bfloat16)
            v1, s1 = aq_ref.quantize_rows(x, **q)
            v2, s2 = aq_kernel.quantize_rows_pallas(x, **q)
            dv = np.abs(np.asarray(v1.astype(jnp.float32)) - np.asarray(v2.astype(jnp.float32)))
            same_s = np.array_equal(np.asarray(s1.astype(jnp.float32)), np.asarray(s2.astype(jnp.float32)))
            b.checks.append({"quantizer": name, "values_equal_frac": float(np.mean(dv == 0)),
                             "max_value_diff": float(dv.max()), "scales_equal": bool(same_s),
                             "ok": bool(same_s and np.mean(dv == 0) > 0.9999)})
        b.guard(f"check quant {name}", oneq)


def bench(b: Bench, quick: bool):
    key = jax.random.PRNGKey(0)
    shapes = dict(list(SHAPES.items())[:2]) if quick else SHAPES
    for sname, (m, n, k) in shapes.items():
        row = {"shape": sname, "M": m, "N": n, "K": k, "flop": 2 * m * n * k}
        flop = row["flop"]
        x = jax.random.normal(key, (m, k), jnp.bfloat16)
        w = jax.random.normal(jax.random.fold_in(key, 1), (k, n), jnp.bfloat16)
        res = {}
        t = b.guard(f"bf16 {sname}", lambda: time_fn(jax.jit(lambda a, c: a @ c), x, w))
        res["xla_bf16"] = t
        a8 = x.astype(jnp.float8_e4m3fn)
        w8 = w.T.astype(jnp.float8_e4m3fn)
        dn = (((1,), (1,)), ((), ()))
        lt = jax.jit(lambda a, c: jax.lax.dot_general(a, c, dn, preferred_element_type=jnp.float32))
        res["xla_lt_fp8"] = b.guard(f"lt fp8 {sname}", lambda: time_fn(lt, a8, w8))
        ai = jnp.clip(x * 20, -127, 127).astype(jnp.int8)
        wi = jnp.clip(w.T * 20, -127, 127).astype(jnp.int8)
        lti = jax.jit(lambda a, c: jax.lax.dot_general(a, c, dn, preferred_element_type=jnp.int32))
        res["xla_lt_int8"] = b.guard(f"lt int8 {sname}", lambda: time_fn(lti, ai, wi))
        del a8, w8, ai, wi
        for r in RECIPES:
            rr = {}
            np_ = pad_up(n, r.w_block_n)
            xv, xs, wv, ws, kw = make_operands(jax.random.fold_in(key, 7), r, m, k, np_, "nk")
            kw["n"] = n
            cfgs = [None] + (SWEEP[r.name] if sname in SWEEP_SHAPES else [])
            best = None
            for c in cfgs:
                if c is not None and api.unsupported_reason(xv, xs, wv, ws, impl="triton", config=c, **kw):
                    continue
                # No config: impl="auto" (the Mosaic GPU kernel where it runs, else Triton's
                # heuristic tiles); a config: that Triton tile.
                impl = "auto" if c is None else "triton"
                f = jax.jit(lambda *a, c=c, impl=impl: api.scaled_matmul(*a, out_dtype=jnp.bfloat16, impl=impl, config=c, **kw))
                tt = b.guard(f"ours {r.name} {sname} {c}", lambda: time_fn(f, xv, xs, wv, ws))
                label = "auto" if c is None else cfg_label(c)
                rr.setdefault("configs", {})[label] = tt
                if tt is not None and (best is None or tt < best[0]):
                    best = (tt, label)
            if best:
                rr["gemm_s"], rr["best_config"] = best
                rr["tflops"] = flop / best[0] / 1e12
            # quantizer alone and quantizer + gemm
            q = QUANT[r.name]
            qf = jax.jit(lambda a: aq_kernel.quantize_rows_pallas(a, **q))
            tq = b.guard(f"quant {r.name} {sname}", lambda: time_fn(qf, x))
            if tq:
                kp = k
                nbytes = m * k * 2 + m * kp + m * (kp // (q["block_k"] or kp)) * jnp.dtype(q["scale_dtype"]).itemsize
                rr["quant_s"], rr["quant_GBps"] = tq, nbytes / tq / 1e9
            tqx = b.guard(f"quant-xla {r.name} {sname}", lambda: time_fn(jax.jit(lambda a: aq_ref.quantize_rows(a, **q)), x))
            rr["quant_xla_s"] = tqx
            cbest = None
            if best and best[1] != "auto":
                cbest = next((c for c in cfgs if c and cfg_label(c) == best[1]), None)

            # The weight is an argument, not a closed-over constant (XLA would try to fold
            # its dequantization at compile time).
            def e2e(a, wv, ws, kw=kw, q=q, c=cbest):
                v, s = aq_kernel.quantize_rows_pallas(a, **q)
                impl = "auto" if c is None else "triton"
                return api.scaled_matmul(v, s, wv, ws, out_dtype=jnp.bfloat16, impl=impl, config=c, **kw)
            te = b.guard(f"e2e {r.name} {sname}", lambda: time_fn(jax.jit(e2e), x, wv, ws))
            rr["e2e_s"] = te
            # XLA baselines specific to the recipe
            if r.name in ("w8a8-fp8", "w8a8-int8"):
                sdt = jnp.int32 if r.name == "w8a8-int8" else jnp.float32

                def xla_e2e(a, wv, ws, q=q, sdt=sdt):
                    v, s = aq_ref.quantize_rows(a, **q)
                    acc = jax.lax.dot_general(v, wv[:n], dn, preferred_element_type=sdt)
                    return (acc.astype(jnp.float32) * s * ws[:n, 0][None, :]).astype(jnp.bfloat16)
                rr["xla_lt_e2e_s"] = b.guard(f"xla e2e {r.name} {sname}",
                                             lambda: time_fn(jax.jit(xla_e2e), x, wv, ws))
            elif sname in SWEEP_SHAPES or r.name == "mxfp8":
                def deq(xv, xs, wv, ws, kw=kw):
                    xd = aq_ref.dequantize_rows(xv, xs).astype(jnp.bfloat16)
                    from pallas_kernels import blocks
                    wd = blocks.dequantize_blocks(wv, ws, element_dtype=kw["w_element_dtype"], block_k=kw["w_block_k"],
                                                  block_n=kw["w_block_n"], layout="nk").astype(jnp.bfloat16)
                    return jnp.dot(xd, wd[:, :n], preferred_element_type=jnp.float32).astype(jnp.bfloat16)
                rr["xla_dequant_bf16_s"] = b.guard(f"xla deq {r.name} {sname}", lambda: time_fn(jax.jit(deq), xv, xs, wv, ws))
            if r.name == "mxfp8":
                def jnn(xv, xs, wv, ws):
                    return jax.nn.scaled_matmul(xv[None], wv[None, :n], xs[None], ws[None, :n],
                                                preferred_element_type=jnp.bfloat16)[0]
                rr["jax_nn_scaled_matmul_s"] = b.guard(f"jnn {sname}", lambda: time_fn(jax.jit(jnn), xv, xs, wv, ws))
            res[r.name] = rr
            del xv, xs, wv, ws
        row["results"] = res
        b.rows.append(row)
        print(f"[{time.time() - b.t0:6.1f}s] {sname} done", flush=True)


def table(b: Bench):
    lines = []
    hdr = f"{'shape MxNxK':24s} {'recipe':10s} {'TF/s':>6s} {'xbf16':>6s} {'xLt':>6s} {'e2e/Lt':>6s} {'xalt':>6s} {'q GB/s':>7s} best"
    lines.append(hdr)
    for row in b.rows:
        res = row["results"]
        f = row["flop"]
        for r in RECIPES:
            rr = res.get(r.name, {})
            g = rr.get("gemm_s")
            if not g:
                lines.append(f"{row['shape']:24s} {r.name:10s} FAILED")
                continue
            bf = res.get("xla_bf16")
            lt = res.get("xla_lt_int8" if "int8" in r.name else "xla_lt_fp8")
            e2e = rr.get("e2e_s")
            e2e_lt = (rr.get("xla_lt_e2e_s") or lt) / e2e if (e2e and (rr.get("xla_lt_e2e_s") or lt)) else float("nan")
            alt = rr.get("jax_nn_scaled_matmul_s") or rr.get("xla_dequant_bf16_s")
            fmt = lambda v: f"{v:6.2f}" if v else "   n/a"  # noqa: E731
            lines.append(f"{row['shape'] + ' ' + str(row['M']) + 'x' + str(row['N']) + 'x' + str(row['K']):24s} "
                         f"{r.name:10s} {f / g / 1e12:6.0f} {fmt(bf / g if bf else None)} {fmt(lt / g if lt else None)} "
                         f"{e2e_lt:6.2f} {fmt(alt / g if alt else None)} {rr.get('quant_GBps', float('nan')):7.0f} {rr.get('best_config', '')}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--deadline", type=float, default=330.0)
    p.add_argument("--out", default=os.environ.get("OUT", "out"))
    p.add_argument("--skip-checks", action="store_true")
    p.add_argument("--shapes", default="", help="comma-separated subset of SHAPES")
    p.add_argument("--recipes", default="", help="comma-separated subset of recipe names")
    p.add_argument("--tag", default="")
    p.add_argument("--check-layouts", default="")
    a = p.parse_args()
    p2 = a
    global SHAPES, RECIPES, LAYOUTS
    if p2.check_layouts:
        LAYOUTS = tuple(p2.check_layouts.split(","))
    if a.shapes:
        SHAPES = {k: SHAPES[k] for k in a.shapes.split(",")}
    if a.recipes:
        RECIPES = tuple(r for r in RECIPES if r.name in a.recipes.split(","))
    b = Bench(a.deadline)
    dev = jax.devices()[0]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "uncommitted"
    except Exception:
        rev = "unknown"
    meta = {"card": dev.device_kind, "jax": jax.__version__, "git_rev": rev,
            "convention": "shape = M x N x K; y(M,N) = x(M,K) @ w(K,N); weights stored nk (N,K)",
            "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        import triton
        meta["triton"] = triton.__version__
    except ImportError:
        pass
    print(meta, flush=True)
    if not a.skip_checks:
        checks(b)
        print(f"[{time.time() - b.t0:6.1f}s] checks done", flush=True)
        for c in b.checks:
            print("CHECK", json.dumps(c), flush=True)
    bench(b, a.quick)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, f"scaled_bench{a.tag}.json"), "w") as fh:
        json.dump({"meta": meta, "checks": b.checks, "rows": b.rows, "errors": b.errors}, fh, indent=1)
    for e in b.errors:
        print("ERROR", e["what"], "::", e["error"][:300])
    print(f"card={meta['card']} jax={meta['jax']} elapsed={time.time() - b.t0:.0f}s")
    print("ratios: xbf16 = XLA bf16 time / ours; xLt = XLA cuBLASLt 8-bit GEMM / ours (GEMM only); "
          "e2e/Lt = (XLA quantize + Lt [+scales]) / (our quantizer + GEMM); xalt = jax.nn.scaled_matmul (mxfp8) "
          "or XLA dequant->bf16 dot / ours")
    print(table(b))


if __name__ == "__main__":
    main()
