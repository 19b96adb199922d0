"""Tile sweep of the Mosaic GPU prefill GEMMs against XLA, one process, on the GPU.

    python -m scripts.bench_mosaic [--shapes 8192x28672,4096x14336] [--ms 1024,4096]
        [--kernels jax-mixed,jax-bf16,kn,rlhs] [--formats int8,int4-g128] [--layouts mma,nk]
        [--sweep] [--split] [--out DIR]

For each (M, K, N): XLA's bf16 `x @ w`; per format, the `impl="auto"` prefill route
(dequantized weight written out, then XLA's GEMM: "xla-dequant") and
XLA's dequantize-to-bf16 pass alone ("dequant-only", with GB/s moved), then every tile
configuration of
  jax-mixed  JAX's `hopper_mixed_type_matmul_mgpu` (int8 x bf16, no scales) on
             out^T = W^T x^T: the ceiling of its register-LHS, warp-specialized structure;
  jax-bf16   JAX's `hopper_matmul_mgpu` (bf16 x bf16 from shared memory, no upcast at all)
             as x @ W and as W^T x^T: what a Mosaic GPU GEMM of this structure reaches
             against cuBLAS on the shape, the ceiling for any weight-only kernel built on it;
  kn         `weight_only_matmul(..., impl="mosaic")` on "kn" weights: the one-warpgroup
             kernel that dequantizes into shared memory;
  rlhs       `weight_only_matmul(..., impl="mosaic")` on "nk"/"mma" weights (`--layouts`):
             y^T = W x^T with the upcast weight tile as wgmma's register operand, the
             default tiles, or with `--sweep` the candidates of `_rlhs_configs`;
each checked against the reference on the same weight before it is timed.
Times are CUPTI device time (`bench_util.time_call`, weight copies past L2). Rows go to
OUT/bench_mosaic.json; the best configuration per case is printed last.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import os
import sys
import traceback

import jax
import jax.numpy as jnp

from pallas_kernels import blocks
from pallas_kernels.weight_only import api, mosaic_kernel, testing
from pallas_kernels.weight_only.reference import weight_only_matmul_reference
from scripts import bench_util
from scripts.bench_kernels import _arrays, _git_rev, _rel_err, _static

CHECK_TOL = 5e-3  # bf16-rounded scaled tiles against the f32 oracle


def _jax_mixed_configs():
    from jax.experimental.pallas.ops.gpu import hopper_mixed_type_matmul_mgpu as mm
    D = mm.MatmulDimension
    for tm, tn, tk, steps, wg in itertools.product((64, 128), (128,), (64, 128), (4,), (D.M, D.N)):
        yield f"tm{tm}_tn{tn}_tk{tk}_s{steps}_wg{wg}", mm.TuningConfig(
            tile_m=tm, tile_n=tn, tile_k=tk, max_concurrent_steps=steps, wg_dimension=wg,
            grid_minor_dim=D.N, grid_tile_width=8)


def _jax_bf16_configs():
    """Per-warpgroup tiles of JAX's bf16 example around ours (a 128x256 CTA tile of two
    64x256 warpgroup tiles), with and without a 2-CTA cluster (TMA multicast). 128x256 per
    warpgroup ran 7-12x slower (H100, session 17: spills)."""
    from jax.experimental.pallas.ops.gpu import hopper_matmul_mgpu as mm
    D = mm.MatmulDimension
    for tm, tn, wg, cluster in ((64, 256, D.M, None), (128, 128, D.N, None), (128, 128, D.M, None),
                                (64, 256, D.M, D.M), (128, 128, D.N, D.N)):
        yield f"tm{tm}_tn{tn}_wg{wg}_cl{cluster}", mm.TuningConfig(
            tile_m=tm, tile_n=tn, tile_k=64, max_concurrent_steps=4,
            wg_dimension=wg, grid_minor_dim=D.N, grid_tile_width=8, cluster_dimension=cluster)


def _kn_configs():
    for tm, tn, tk, steps in itertools.product((64, 128), (128, 256), (64, 128), (2, 4)):
        yield f"tm{tm}_tn{tn}_tk{tk}_s{steps}", mosaic_kernel.MosaicConfig(
            tile_m=tm, tile_n=tn, tile_k=tk, max_concurrent_steps=steps)


def _rlhs_configs(element_dtype, sweep: bool, split: bool = False, **tiles_for):
    """(name, config) candidates of the register-operand kernel (None: its default). tile_m:
    weight rows per compute warpgroup; tile_n: rows of x. split: the default tiles with
    each K step upcast in two halves as well (`tiles_for`: `register_lhs_config`'s facts)."""
    yield "default", None
    default = mosaic_kernel.register_lhs_config(element_dtype, jnp.bfloat16, **tiles_for)
    if split and not default.split_upcast:  # e2m1 codes split by default
        yield "split", dataclasses.replace(default, split_upcast=True)
    if not sweep:
        return
    tk = 128 if blocks.is_four_bit(element_dtype) else 64
    cands = ((64, 128, 4), (128, 128, 3)) if tk == 128 else ((64, 256, 3), (64, 256, 2), (128, 128, 3))
    for tm, tn, steps in cands:
        yield f"tm{tm}_tn{tn}_tk{tk}_s{steps}", dataclasses.replace(
            mosaic_kernel.REGISTER_LHS_TILES, tile_m=tm, tile_n=tn, tile_k=tk,
            max_concurrent_steps=steps)


def _row(**kw):
    print(json.dumps(kw), flush=True)
    return kw


def bench(args) -> list[dict]:
    rows = []
    for (k, n), m in itertools.product(args.shapes, args.ms):
        x = jax.random.normal(jax.random.key(m), (m, k), jnp.bfloat16)
        wbf = jax.random.normal(jax.random.key(0), (k, n), jnp.bfloat16)
        wbfs = [wbf + i for i in range(bench_util.copies_needed(k * n * 2))]
        us_bf16 = bench_util.time_call(jax.jit(lambda x, w: x @ w), [(x, w) for w in wbfs])
        rows.append(_row(kernel="xla-bf16", fmt="bf16", config="", m=m, k=k, n=n, us=us_bf16))
        if "jax-bf16" in args.kernels:
            from jax.experimental.pallas.ops.gpu import hopper_matmul_mgpu as bf16_mm
            ref = (x @ wbf).astype(jnp.float32)
            # W^T x^T on operands transposed once, outside the timing (our kernels' form)
            orients = (("x@w", lambda x, w, cfg: bf16_mm.matmul(x, w, None, cfg), lambda x, w: (x, w)),
                       ("wT@xT", lambda wt, xt, cfg: bf16_mm.matmul(wt, xt, None, cfg),
                        lambda x, w: (w.T, x.T)))
            for (orient, fn, args_of), (name, cfg) in itertools.product(orients, _jax_bf16_configs()):
                f = jax.jit(functools.partial(fn, cfg=cfg))
                try:
                    out = f(*args_of(x, wbf))
                    err = _rel_err(out if orient == "x@w" else out.T, ref)
                    if not err < CHECK_TOL:
                        raise AssertionError(f"check failed: rel err {err:.3g}")
                    us = bench_util.time_call(f, [args_of(x, w) for w in wbfs])
                    rows.append(_row(kernel="jax-bf16", fmt=f"bf16 {orient}", config=name, m=m, k=k, n=n, us=us))
                except Exception as e:  # noqa: BLE001 - a config that does not fit is a row
                    rows.append(_row(kernel="jax-bf16", fmt=f"bf16 {orient}", config=name, m=m, k=k, n=n, us=-1.0,
                                     error=f"{type(e).__name__}: {str(e)[:200]}"))
        del wbfs, wbf
        if "jax-mixed" in args.kernels:
            from jax.experimental.pallas.ops.gpu import hopper_mixed_type_matmul_mgpu as mm
            wts = [jax.random.randint(jax.random.key(i), (n, k), -128, 128, jnp.int32).astype(jnp.int8)
                   for i in range(bench_util.copies_needed(k * n))]
            xt = x.T
            for name, cfg in _jax_mixed_configs():
                try:
                    f = jax.jit(functools.partial(mm.mixed_matmul_kernel, out_dtype=jnp.bfloat16, config=cfg))
                    us = bench_util.time_call(f, [(w, xt) for w in wts])
                    rows.append(_row(kernel="jax-mixed", fmt="int8", config=name, m=m, k=k, n=n, us=us))
                except Exception as e:  # noqa: BLE001 - a config that does not fit is a row
                    rows.append(_row(kernel="jax-mixed", fmt="int8", config=name, m=m, k=k, n=n, us=-1.0,
                                     error=f"{type(e).__name__}: {str(e)[:200]}"))
            del wts
        layouts = ["kn"] if "kn" in args.kernels else args.layouts
        for label, layout in itertools.product(args.formats, layouts):
            case = testing.CASES_BY_LABEL[label]
            ws = [testing.random_weight(jax.random.key(100), case, k, n, layout=layout)]
            ws += [testing.random_weight(jax.random.key(100 + i), case, k, n, layout=layout)
                   for i in range(1, bench_util.copies_needed(testing.stored_bytes(ws[0])))]
            st = _static(ws[0])
            fmt = f"{label}/{layout}"
            deq = jax.jit(lambda v, s, z, g: blocks.dequantize_as(
                v, s, z, g, dtype=jnp.bfloat16,
                **{f: st[f] for f in ("element_dtype", "block_k", "block_n", "layout", "k", "n")}))
            if m == args.ms[0]:  # independent of M
                us = bench_util.time_call(deq, [_arrays(w) for w in ws])
                rows.append(_row(kernel="dequant-only", fmt=fmt, config="", m=m, k=k, n=n, us=us,
                                 gbps=(testing.stored_bytes(ws[0]) + 2 * k * n) / us / 1e3))
            conv = jax.jit(lambda x, *a: weight_only_matmul_reference(
                x, *a, **st, convert=True, materialize=True))
            us = bench_util.time_call(conv, [(x, *_arrays(w)) for w in ws])
            rows.append(_row(kernel="xla-dequant", fmt=fmt, config="", m=m, k=k, n=n, us=us))
            if "kn" in args.kernels:
                configs, kernel = _kn_configs(), "kn"
            elif "rlhs" in args.kernels:
                kp = blocks.stored_kp(ws[0]["values"], case.element_dtype, ws[0]["layout"])
                configs = _rlhs_configs(case.element_dtype, args.sweep, args.split,
                                        block_k=st["block_k"], kp=kp,
                                        has_zeros=ws[0]["zeros"] is not None)
                kernel = "rlhs"
            else:
                continue
            ref = weight_only_matmul_reference(x, *_arrays(ws[0]), **st)
            for name, cfg in configs:
                f = jax.jit(lambda x, *a, cfg=cfg: api.weight_only_matmul(x, *a, **st, impl="mosaic", config=cfg))
                try:
                    err = _rel_err(f(x, *_arrays(ws[0])), ref)
                    if not err < CHECK_TOL:
                        rows.append(_row(kernel=kernel, fmt=fmt, config=name, m=m, k=k, n=n, us=-1.0,
                                         error=f"check failed: rel err {err:.3g}"))
                        continue
                    us = bench_util.time_call(f, [(x, *_arrays(w)) for w in ws])
                    rows.append(_row(kernel=kernel, fmt=fmt, config=name, m=m, k=k, n=n, us=us, rel_err=err))
                except NotImplementedError as e:  # a tile the kernel refuses up front
                    rows.append(_row(kernel=kernel, fmt=fmt, config=name, m=m, k=k, n=n, us=-1.0,
                                     error=f"refused: {str(e)[:200]}"))
                except Exception as e:  # noqa: BLE001
                    traceback.print_exc(limit=2)
                    rows.append(_row(kernel=kernel, fmt=fmt, config=name, m=m, k=k, n=n, us=-1.0,
                                     error=f"{type(e).__name__}: {str(e)[:200]}"))
            del ws
    return rows


def summarize(rows: list[dict]) -> str:
    out = [f"{'K x N':>12s} {'M':>5s} {'kernel':>12s} {'fmt':>15s} {'us':>8s} {'xbf16':>6s} {'TF/s':>6s}  config"]
    bf16 = {(r["m"], r["k"], r["n"]): r["us"] for r in rows if r["kernel"] == "xla-bf16"}
    best = {}
    for r in rows:
        if r["us"] > 0:
            key = (r["m"], r["k"], r["n"], r["kernel"], r["fmt"])
            if key not in best or r["us"] < best[key]["us"]:
                best[key] = r
    for (m, k, n, kern, fmt), r in sorted(best.items()):
        tf = 2 * m * k * n / r["us"] / 1e6
        out.append(f"{k:>5d}x{n:<6d} {m:>5d} {kern:>12s} {fmt:>15s} {r['us']:8.1f} "
                   f"{bf16[(m, k, n)] / r['us']:6.2f} {tf:6.0f}  {r['config']}"
                   + (f" {r['gbps']:.0f} GB/s" if "gbps" in r else ""))
    return "\n".join(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="8192x28672,4096x14336")
    p.add_argument("--ms", default="1024,4096")
    p.add_argument("--kernels", default="rlhs", help="jax-mixed, jax-bf16, and kn or rlhs")
    p.add_argument("--formats", default="int8,int4-g128,uint4-g128")
    p.add_argument("--layouts", default="mma", help="weight layouts of rlhs (kn: 'kn')")
    p.add_argument("--sweep", action="store_true", help="rlhs: every candidate tile, not the default")
    p.add_argument("--split", action="store_true", help="rlhs: also the default tiles with split_upcast")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args(argv if argv is not None else sys.argv[1:])
    a.shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    a.ms = [int(v) for v in a.ms.split(",")]
    a.kernels, a.formats = a.kernels.split(","), [f for f in a.formats.split(",") if f]
    a.layouts = a.layouts.split(",")
    dev = jax.devices()[0]
    rows = bench(a)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "bench_mosaic.json"), "w") as f:
        json.dump(dict(card=dev.device_kind, jax=jax.__version__, git_rev=_git_rev(),
                       timing=bench_util.last_method(), args=vars(a), rows=rows), f, indent=1)
    print(f"device {dev.device_kind}; jax {jax.__version__}; timing {bench_util.last_method()}")
    print(summarize(rows))


if __name__ == "__main__":
    main()
