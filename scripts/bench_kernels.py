"""Kernel benchmarks on the GPU, one process: weight-only matmul (this file) and, when
present, the activation-quantized section (`scripts.bench_activation:run_section`).

    python -m scripts.bench_kernels [--quick] [--check] [--formats int4-g128,mxfp4]
        [--shapes 8192x28672,14336x4096] [--ms 1,16,1024] [--out DIR]

A run measures, in the same process: the card's copy bandwidth; XLA's bf16 dot; per stored
format, our kernels (`--impls`, default impl="triton"), XLA's own convert-and-dot of
the same stored weight (dequantize to bf16, `x @ w`: the reference with `convert=True`) and
the `impl="auto"` prefill route ("xla-dequant": the same with the weight written out first),
JAX's Mosaic GPU mixed int8 x bf16 kernel (int8, prefill M only; no scales: a lower bound for
it) and torch's bf16 matmul and int4 tinygemm when torch imports. Rows: median us, TB/s of stored weight bytes, TFLOP/s and the
ratio to XLA bf16. Full rows go to OUT/bench_weight_only.json; a short table is printed last.
"""

from __future__ import annotations

import argparse
import itertools
import dataclasses
import json
import os
import re
import subprocess
import sys
import traceback

import jax
import jax.numpy as jnp
import numpy as np

from pallas_kernels import blocks
from pallas_kernels.weight_only import mosaic_kernel, testing, weight_only_matmul, weight_only_matmul_reference
from scripts import bench_util

SHAPES = ((4096, 14336), (14336, 4096), (8192, 28672), (576, 1536))
MS = (1, 4, 16, 64, 1024, 4096)
FORMATS = ("int8", "int4-g128", "uint4-g128", "fp8", "mxfp4", "nvfp4", "mxfp8")


@dataclasses.dataclass(frozen=True)
class Row:
    case: str        # what was timed: "ours-triton", "xla-bf16", "xla-convert", ...
    fmt: str         # stored format label ("bf16" for float baselines)
    m: int
    k: int
    n: int
    us: float
    weight_bytes: int
    err: str = ""

    @property
    def tbps(self) -> float:
        return self.weight_bytes / (self.us * 1e-6) / 1e12 if self.us > 0 else 0.0

    @property
    def tflops(self) -> float:
        return 2 * self.m * self.k * self.n / (self.us * 1e-6) / 1e12 if self.us > 0 else 0.0


# Norm-relative error allowed of a kernel vs the reference: the pre-scaled (bf16-rounded)
# weight tiles of prefill give ~1.5e-3, exact kernels ~1e-6; a wrong tile shows as >= 1e-2
# (seen: swap-AB on int8 codes with 256 rows of x, 1.8e-2).
CHECK_TOL = 5e-3


def _rel_err(out, ref) -> float:
    out = np.asarray(out, np.float32)
    ref = np.asarray(ref, np.float32)
    return float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))


def _static(w):
    return {a: b for a, b in w.items() if a not in ("values", "scales", "zeros", "global_scale")}


def _arrays(w):
    return (w["values"], w["scales"], w["zeros"], w["global_scale"])


def _save_partial(args, name: str, rows: list[Row], checks: list[dict] | None = None):
    """Rows so far to <out>/<name>.partial.json: what a run cut by its time limit leaves."""
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{name}.partial.json"), "w") as f:
        json.dump(dict(rows=[dataclasses.asdict(r) for r in rows], checks=checks or []), f)


def _storable(label: str, layout: str) -> bool:
    """Whether the format can be stored in `layout` ("mma": what the tensor-core GEMV reads,
    `blocks.mma_format_reason`)."""
    case = testing.CASES_BY_LABEL[label]
    return layout != "mma" or blocks.mma_format_reason(case.element_dtype, case.block_k, case.scale_dtype, case.block_n) is None


def bench_weight_only(args) -> tuple[list[Row], list[dict]]:
    rows: list[Row] = []
    checks: list[dict] = []
    key = jax.random.key(0)
    for k, n in args.shapes:
        wbf = jax.random.normal(key, (k, n), jnp.bfloat16)
        bf_bytes = k * n * 2
        wbfs = [wbf] + [wbf + i for i in range(1, bench_util.copies_needed(bf_bytes))]
        for m in args.ms:
            x = jax.random.normal(jax.random.key(m), (m, k), jnp.bfloat16)
            dot = jax.jit(lambda x, w: x @ w)
            us = bench_util.time_call(dot, [(x, w) for w in wbfs])
            rows.append(Row("xla-bf16", "bf16", m, k, n, us, bf_bytes))
            if args.torch:
                rows += _torch_rows(m, k, n)
        del wbfs, wbf
        for label, layout in itertools.product(args.formats, args.layouts):
            if not _storable(label, layout):
                continue
            case = testing.CASES_BY_LABEL[label]
            ws = [testing.random_weight(jax.random.key(100), case, k, n, layout=layout)]
            nbytes = testing.stored_bytes(ws[0])
            ws += [testing.random_weight(jax.random.key(100 + i), case, k, n, layout=layout)
                   for i in range(1, bench_util.copies_needed(nbytes))]
            st = _static(ws[0])
            impls = [i for i in args.impls if i != "mosaic" or layout == "kn"
                     or mosaic_kernel.takes_register_lhs(case.element_dtype, st["block_k"], layout,
                                                         st["k"])]
            fns = {impl: jax.jit(lambda x, v, s, z, g, impl=impl: weight_only_matmul(
                x, v, s, z, g, **st, impl=impl)) for impl in impls}
            fns["xla-convert"] = jax.jit(lambda x, v, s, z, g: weight_only_matmul_reference(
                x, v, s, z, g, **st, convert=True))
            fns["xla-dequant"] = jax.jit(lambda x, v, s, z, g: weight_only_matmul_reference(
                x, v, s, z, g, **st, convert=True, materialize=True))
            for m in args.ms:
                x = jax.random.normal(jax.random.key(m), (m, k), jnp.bfloat16)
                ref = None
                for name, fn in fns.items():
                    case_name = (name if name.startswith("xla-") else f"ours-{name}") + (
                        "" if len(args.layouts) == 1 else f"/{layout}")
                    try:
                        if args.check:
                            if ref is None:
                                ref = weight_only_matmul(x, *_arrays(ws[0]), **st, impl="xla",
                                                         out_dtype=jnp.float32)
                            out = fn(x, *_arrays(ws[0]))
                            e = _rel_err(out, ref)
                            checks.append(dict(case=case_name, fmt=label, m=m, k=k, n=n, rel_err=e))
                            if not (e < CHECK_TOL):
                                print(f"CHECK FAILED {case_name} {label} {m}x{k}x{n}: rel err {e:.3g}", flush=True)
                        us = bench_util.time_call(fn, [(x, *_arrays(w)) for w in ws])
                        rows.append(Row(case_name, label, m, k, n, us, nbytes))
                    except Exception as e:  # noqa: BLE001 - a failing variant is a row, not a crash
                        rows.append(Row(case_name, label, m, k, n, -1.0, nbytes, f"{type(e).__name__}: {str(e)[:300]}"))
                        traceback.print_exc()
                if label == "int8" and m >= 256 and args.mgpu:
                    rows.append(_mixed_mgpu_row(m, k, n, ws[0]))
                _save_partial(args, "bench_weight_only", rows, checks)
            del ws
    return rows, checks


def _sweep_configs(m):
    """All tile variants timed by --sweep-all (tuning data for config.choose_config)."""
    from pallas_kernels.weight_only.config import TileConfig
    if m <= 64:
        base = dict(block_m=16 if m <= 16 else 64)
        shapes = [(64, 256, 4, 4), (128, 256, 4, 3), (256, 256, 8, 3), (128, 512, 4, 3),
                  (64, 512, 4, 4), (256, 128, 4, 4), (128, 128, 4, 4)]
        out = [TileConfig(**base, block_n=bn, block_k=bk, num_warps=w, num_stages=st, x_mode=1)
               for bn, bk, w, st in shapes]
        out.append(TileConfig(**base, block_n=128, block_k=256, num_warps=4, num_stages=3, x_mode=0))
        out.append(TileConfig(**base, block_n=128, block_k=256, num_warps=4, num_stages=3, x_mode=2))
        return out + _decode_kernel_configs(m)
    return [TileConfig(block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=st,
                       pre_scale=True, x_mode=xm)
            for bm, bn, bk, w, st, xm in [(128, 128, 64, 8, 4, 2), (128, 128, 64, 8, 4, 1),
                                          (128, 128, 64, 8, 4, 0), (128, 256, 64, 8, 3, 2),
                                          (128, 128, 128, 8, 3, 2), (64, 128, 64, 4, 4, 2),
                                          (128, 128, 128, 4, 3, 2)]] + _prefill_configs(m)


def _prefill_configs(m):
    """Prefill (M > 64) tiles of the swap-AB kernel: the decoded, pre-scaled weight tile is
    the register operand of the warpgroup dot and x (reordered into even/odd k for 4-bit
    codes, x_mode 3) streams through shared memory; one accumulator across K."""
    from pallas_kernels.weight_only.config import TileConfig
    return [TileConfig(kernel="swapab", block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=st,
                       pre_scale=True, x_mode=xm)
            for bn, bm, bk, w, st, xm in [(128, 256, 64, 8, 3, 3), (128, 256, 64, 8, 4, 3),
                                          (128, 128, 64, 8, 4, 3), (128, 128, 64, 4, 4, 3),
                                          (64, 128, 64, 4, 4, 3), (128, 256, 64, 8, 3, 2),
                                          (128, 128, 64, 8, 4, 2), (128, 128, 64, 4, 4, 2),
                                          (128, 128, 128, 8, 3, 3)]]


def _decode_kernel_configs(m):
    """The decode kernels of `triton_decode`: the K-contiguous GEMV `kgemv` (M <= 8), the
    one-row GEMV (M <= 2) and the FMA GEMV (M <= 8) without tensor cores, swap-AB (every M;
    x_mode 3 for 4-bit codes) and `dot` tiles (even/odd x dots or interleaved nibbles). Tile
    K 16..256; `TileConfig.check` drops the tiles a format cannot take."""
    from pallas_kernels.weight_only.config import TileConfig, mma_block_m
    out = []
    if m <= 8:  # kgemv: K tile 128 (across g16/g32 blocks; 32-long tiles were ~2x slower in
        # every session-3/4 sweep), up to 1024 K per step
        bm = 1 << max(0, (m - 1).bit_length())
        for bn, u, w in [(128, 4, 4), (64, 4, 4), (256, 4, 8), (128, 2, 4), (128, 8, 4), (64, 8, 2)]:
            out.append(TileConfig(block_m=bm, block_n=bn, block_k=128, num_warps=w, num_stages=1,
                                  kernel="kgemv", unroll=u))
        # weight tiles pipelined through shared memory (cp.async, num_stages - 1 steps ahead)
        for bn, u, w, st in [(256, 1, 8, 3), (128, 1, 4, 3), (128, 2, 4, 4)]:
            out.append(TileConfig(block_m=bm, block_n=bn, block_k=128, num_warps=w, num_stages=st,
                                  kernel="kgemv", unroll=u))
    if m <= 64:  # tensor-core GEMV (mma.sync, weight as the 16-row operand): chunk 128 (4-bit) or 64 (int8)
        # (warps, unroll, tiles per warp); x_mode is set per format (`bench_sweep`)
        for w, u, tn in [(4, 2, 1), (4, 2, 2), (4, 1, 2), (4, 1, 4), (2, 2, 2), (2, 2, 4), (8, 1, 2), (4, 4, 1),
                         (2, 4, 2), (8, 2, 1), (4, 1, 1), (8, 1, 1)]:
            for bk in (128, 64):
                out.append(TileConfig(block_m=mma_block_m(m), block_n=16 * w * tn, block_k=bk, num_warps=w,
                                      num_stages=1, kernel="mma", unroll=u))
    if m <= 2:
        for bn, bk, w, st in [(256, 32, 4, 6), (256, 16, 4, 8), (512, 16, 8, 6)]:
            out.append(TileConfig(block_m=1, block_n=bn, block_k=bk, num_warps=w, num_stages=st, kernel="gemv"))
    if m <= 8:
        bm = 1 << max(0, (m - 1).bit_length())
        out.append(TileConfig(block_m=bm, block_n=128, block_k=128, num_warps=4, num_stages=4, kernel="fma"))
    bm = 16 if m <= 16 else (32 if m <= 32 else 64)
    if m >= 4:
        for bn, bk, w, st in [(128, 128, 4, 4), (64, 128, 4, 4), (128, 64, 4, 4), (64, 64, 4, 4)]:
            out.append(TileConfig(block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=st, kernel="swapab"))
    # swap-AB with x reordered into even/odd k (4-bit codes decoded without an interleave)
    for bn, bk, w, st in [(64, 128, 4, 4), (128, 128, 4, 4), (64, 256, 4, 4), (64, 128, 4, 6)]:
        out.append(TileConfig(block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=st, kernel="swapab",
                              x_mode=3))
    if m > 16:  # the prefill kernel's tile (decoded, pre-scaled weight as the register operand)
        for bn, bk, w, st, xm in [(128, 64, 4, 4, 3), (128, 64, 8, 4, 3), (256, 64, 8, 3, 3), (128, 64, 4, 4, 2)]:
            out.append(TileConfig(block_m=64, block_n=bn, block_k=bk, num_warps=w, num_stages=st, kernel="swapab",
                                  x_mode=xm, pre_scale=True))
    bm = 16 if m <= 16 else (32 if m <= 32 else 64)  # tensor-core tiles (x padded to 16 rows)
    for bn, bk, xm in [(128, 256, 1), (64, 256, 1), (128, 128, 1), (64, 128, 2)]:
        out.append(TileConfig(block_m=bm, block_n=bn, block_k=bk, num_warps=4, num_stages=4, x_mode=xm))
    return out


def bench_sweep(args) -> list[Row]:
    """Times tile variants of impl="triton" (split_k from the chooser's rule), each checked
    against the reference first (a variant off by more than CHECK_TOL is a row with `err`), next
    to XLA's bf16 dot and the chooser's default config in the same process."""
    import dataclasses as dc
    from pallas_kernels.weight_only import config as wcfg
    rows = []
    os.makedirs(args.out, exist_ok=True)
    for k, n in args.shapes:
        wbf = jax.random.normal(jax.random.key(0), (k, n), jnp.bfloat16)
        wbfs = [wbf] + [wbf + i for i in range(1, bench_util.copies_needed(k * n * 2))]
        for m in args.ms:
            x = jax.random.normal(jax.random.key(m), (m, k), jnp.bfloat16)
            rows.append(Row("xla-bf16", "bf16", m, k, n,
                            bench_util.time_call(jax.jit(lambda x, w: x @ w), [(x, w) for w in wbfs]), k * n * 2))
        del wbfs, wbf
        for label, layout in itertools.product(args.formats, args.layouts):
            if not _storable(label, layout):
                continue
            case = testing.CASES_BY_LABEL[label]
            ws = [testing.random_weight(jax.random.key(100 + i), case, k, n, layout=layout) for i in range(
                bench_util.copies_needed(k * n // 2))]
            nbytes = testing.stored_bytes(ws[0])
            st = _static(ws[0])
            for m in args.ms:
                x = jax.random.normal(jax.random.key(m), (m, k), jnp.bfloat16)
                ref = weight_only_matmul(x, *_arrays(ws[0]), **st, impl="xla", out_dtype=jnp.float32)
                spec = testing.weight_spec(ws[0])
                cfgs = [None] + list(_sweep_configs(m) if args.sweep_all else (
                    _decode_kernel_configs(m) if m <= 64 else _prefill_configs(m)))
                seen = set()
                for cfg in cfgs:
                    if cfg is not None and m <= 64:
                        cfg = dc.replace(cfg, split_k=wcfg.split_for(spec, cfg, m))
                    if cfg is not None and cfg.kernel == "mma":
                        cfg = dc.replace(cfg, x_mode=wcfg.mma_x_mode(m, spec))  # derived, as the chooser does
                    elif cfg is not None and cfg.x_mode in (0, 2, 3) and not spec.four_bit:
                        cfg = dc.replace(cfg, x_mode=1)  # x modes only differ for 4-bit codes
                    if cfg is not None and cfg.check(spec):
                        continue
                    if cfg is not None and args.only and not re.search(args.only, cfg.kernel + f"x{cfg.x_mode}"):
                        continue
                    name = f"{layout}/" + ("default" if cfg is None else (
                        f"{cfg.kernel}-{cfg.block_m}x{cfg.block_n}x{cfg.block_k}s{cfg.split_k}w{cfg.num_warps}"
                        f"st{cfg.num_stages}x{cfg.x_mode}u{cfg.unroll}{'p' if cfg.pre_scale else ''}"))
                    if name in seen:
                        continue
                    seen.add(name)
                    try:
                        fn = jax.jit(lambda x, v, s, z, g, cfg=cfg: weight_only_matmul(
                            x, v, s, z, g, **st, impl="triton", config=cfg, out_dtype=jnp.float32))
                        e = _rel_err(fn(x, *_arrays(ws[0])), ref)
                        if not e < CHECK_TOL:
                            rows.append(Row(name, label, m, k, n, -1.0, nbytes, f"check failed: rel err {e:.3g}"))
                            continue
                        us = bench_util.time_call(fn, [(x, *_arrays(w)) for w in ws])
                        rows.append(Row(name, label, m, k, n, us, nbytes, f"rel_err={e:.2e}"))
                    except Exception as ex:  # noqa: BLE001
                        rows.append(Row(name, label, m, k, n, -1.0, nbytes, f"{type(ex).__name__}: {str(ex)[:200]}"))
                    print(rows[-1], flush=True)
            del ws
            _save_partial(args, "bench_sweep", rows)
    return rows


TABLE_MARGIN = 0.9  # a variant replaces the heuristic only when >= 10% faster (geo-mean)


def _layout_case(case: str) -> tuple[str, str]:
    """(layout, config name) of a sweep row ("nk/kgemv-..."; rows of older runs: "kn")."""
    return tuple(case.split("/", 1)) if "/" in case else ("kn", case)


def _variant(case: str) -> str:
    """A sweep row's config name without its split_k (which the chooser derives per shape)."""
    return re.sub(r"s\d+w", "w", case)


def write_tuned_table(runs: list[list[Row]], device_kind: str, meta: dict) -> str:
    """Best decode variant per (format, M bucket): each variant is scored by the geometric
    mean of its time over the chooser's default config measured in the same run on the
    same shape; a variant that failed anywhere it was tried is out."""
    import math
    from pallas_kernels.weight_only import config as wcfg
    ratios: dict = {}
    for rows in runs:
        default = {(r.fmt, _layout_case(r.case)[0], r.m, r.k, r.n): r.us for r in rows
                   if _layout_case(r.case)[1] == "default" and r.us > 0}
        for r in rows:
            layout, name = _layout_case(r.case)
            if r.case == "xla-bf16" or name == "default":
                continue
            checked = re.match(r"rel_err=([0-9.e+-]+)", r.err)
            if checked and not float(checked.group(1)) < CHECK_TOL:
                r = dataclasses.replace(r, us=-1.0)  # rows of runs with a looser check
            base = default.get((r.fmt, layout, r.m, r.k, r.n))
            if base is None:
                continue
            ratio = r.us / base if r.us > 0 else float("inf")
            ratios.setdefault((r.fmt, layout, wcfg.m_bucket(r.m)), {}).setdefault(_variant(name), []).append(ratio)
    table = {}
    for (fmt, layout, bucket), by_case in ratios.items():
        scored = {c: math.exp(sum(map(math.log, v)) / len(v)) for c, v in by_case.items()
                  if all(x < float("inf") for x in v)}
        if not scored:
            continue
        case = min(scored, key=scored.get)
        if not scored[case] < TABLE_MARGIN:
            continue  # the heuristic is best, or not clearly beaten (timing noise is ~5%)
        c = testing.CASES_BY_LABEL[fmt]
        kind, rest = case.split("-", 1)
        bm, bn, bk, w, st = (int(v) for v in re.match(r"(\d+)x(\d+)x(\d+)w(\d+)st(\d+)", rest).groups())
        x_mode = re.search(r"st\d+x(\d+)", rest)
        unroll = re.search(r"u(\d+)", rest)
        key = wcfg.table_key(c.element_dtype, c.block_k, c.block_n, layout)
        table.setdefault(key, {})[bucket] = dict(
            kernel=kind, block_m=bm, block_n=bn, block_k=bk, num_warps=w, num_stages=st,
            x_mode=int(x_mode.group(1)) if x_mode else 1, pre_scale=rest.endswith("p"),
            unroll=int(unroll.group(1)) if unroll else 1)
    path = wcfg.TUNED_DIR / f"{wcfg.device_slug(device_kind)}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # merge: earlier sweeps of other formats stay
        old = json.loads(path.read_text())["table"]
        for key, buckets in table.items():
            old.setdefault(key, {}).update(buckets)
        table = old
    path.write_text(json.dumps({"device_kind": device_kind, "jax": meta.get("jax"),
                                "git_rev": meta.get("git_rev"), "table": table}, indent=1))
    wcfg.tuned_table.cache_clear()
    return str(path)


def summarize_sweep(rows: list[Row], copy_bps: float) -> str:
    """Per (shape, format, M): the default config, the best variant, and both vs XLA bf16."""
    bf = {(r.m, r.k, r.n): r.us for r in rows if r.case == "xla-bf16"}
    out = [f"{'K x N':>12s} {'fmt':>10s} {'M':>4s} {'bf16 us':>8s} {'default':>8s} {'best us':>8s} "
           f"{'TB/s':>5s} {'%copy':>5s} {'x bf16':>6s}  best variant"]
    groups = {}
    for r in rows:
        if r.case != "xla-bf16":
            groups.setdefault((r.k, r.n, r.fmt, r.m), []).append(r)
    for (k, n, fmt, m), rs in groups.items():
        ok = [r for r in rs if r.us > 0]
        dflt = next((r.us for r in rs if _layout_case(r.case)[1] == "default" and r.us > 0), -1.0)
        best = min(ok, key=lambda r: r.us) if ok else None
        b = bf.get((m, k, n), 0)
        if best is None:
            out.append(f"{k:>5d}x{n:<6d} {fmt:>10s} {m:>4d} {b:8.1f} {'-':>8s}  all variants failed")
            continue
        out.append(f"{k:>5d}x{n:<6d} {fmt:>10s} {m:>4d} {b:8.1f} {dflt:8.1f} {best.us:8.1f} {best.tbps:5.2f} "
                   f"{100 * best.tbps * 1e12 / copy_bps:5.0f} {b / best.us:6.2f}  {best.case}")
    return "\n".join(out)


def _mixed_mgpu_row(m, k, n, w) -> Row:
    """JAX's Hopper mixed int8 x bf16 kernel on out^T = W^T x^T (no scales: a lower bound)."""
    try:
        from jax.experimental.pallas.ops.gpu import hopper_mixed_type_matmul_mgpu as mm
        wt = jnp.asarray(w["values"])  # (n, k) int8: the kernel's "a" operand
        wt = wt if w["layout"] == "nk" else wt.T
        xt = jax.random.normal(jax.random.key(1), (k, m), jnp.bfloat16)
        cfg = mm.TuningConfig(tile_m=128, tile_n=128, tile_k=64, max_concurrent_steps=4)
        f = jax.jit(lambda a, b: mm.mixed_matmul_kernel(a, b, out_dtype=jnp.bfloat16, config=cfg))
        us = bench_util.time_call(f, [(wt, xt)])
        return Row("jax-mgpu-mixed", "int8", m, k, n, us, k * n)
    except Exception as e:  # noqa: BLE001
        return Row("jax-mgpu-mixed", "int8", m, k, n, -1.0, k * n, f"{type(e).__name__}: {str(e)[:300]}")


def _torch_rows(m, k, n) -> list[Row]:
    try:
        import torch
    except ImportError:
        return []
    rows = []
    dev = "cuda"
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    copies = bench_util.copies_needed(k * n * 2)
    ws = [torch.randn(k, n, device=dev, dtype=torch.bfloat16) for _ in range(copies)]
    it = iter(range(10**9))
    us = bench_util.time_torch(lambda: x @ ws[next(it) % copies])
    rows.append(Row("torch-bf16", "bf16", m, k, n, us, k * n * 2))
    del ws
    try:
        nb = k * n // 2 + (k // 128) * n * 4
        copies = bench_util.copies_needed(nb)
        packs = []
        for _ in range(copies):
            w_u8 = torch.randint(0, 256, (n, k // 2), device=dev, dtype=torch.uint8)
            packed = torch.ops.aten._convert_weight_to_int4pack(w_u8, 8)
            sz = torch.rand(k // 128, n, 2, device=dev, dtype=torch.bfloat16)
            packs.append((packed, sz))
        it2 = iter(range(10**9))

        def f():
            p, sz = packs[next(it2) % copies]
            return torch.ops.aten._weight_int4pack_mm(x, p, 128, sz)
        us = bench_util.time_torch(f)
        rows.append(Row("torch-int4", "int4-g128", m, k, n, us, nb))
    except Exception as e:  # noqa: BLE001
        rows.append(Row("torch-int4", "int4-g128", m, k, n, -1.0, 0, f"{type(e).__name__}: {str(e)[:200]}"))
    return rows


def _git_rev() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:  # noqa: BLE001
        return "unknown"


def summarize(rows: list[Row], copy_bps: float) -> str:
    base = {(r.m, r.k, r.n): r.us for r in rows if r.case == "xla-bf16" and r.us > 0}
    lines = [f"{'case':15s} {'fmt':11s} {'M':>5s} {'KxN':>11s} {'us':>8s} {'TB/s':>5s} "
             f"{'%copy':>5s} {'TFLOP/s':>7s} {'xBF16':>6s}"]
    for r in rows:
        if r.us <= 0:
            lines.append(f"{r.case:15s} {r.fmt:11s} {r.m:5d} {r.k}x{r.n:<6d} FAILED {r.err[:60]}")
            continue
        b = base.get((r.m, r.k, r.n))
        ratio = f"{b / r.us:6.2f}" if b else "   n/a"
        lines.append(f"{r.case:15s} {r.fmt:11s} {r.m:5d} {r.k:>5d}x{r.n:<5d} {r.us:8.1f} "
                     f"{r.tbps:5.2f} {100 * r.tbps * 1e12 / copy_bps:5.0f} {r.tflops:7.1f} {ratio}")
    return "\n".join(lines)


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 shapes x M in {1,16,1024}")
    p.add_argument("--check", action="store_true", help="verify each kernel vs reference first")
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--shapes", default=None, help="KxN list, e.g. 8192x28672,14336x4096")
    p.add_argument("--ms", default=None, help="M list, e.g. 1,16,1024")
    p.add_argument("--impls", default="triton",
                   help="our impls to time, e.g. triton,pallas,mosaic,auto (mosaic: 'kn', and "
                        "'nk'/'mma' weights of the register-operand kernel)")
    p.add_argument("--no-torch", dest="torch", action="store_false")
    p.add_argument("--no-mgpu", dest="mgpu", action="store_false")
    p.add_argument("--sweep", action="store_true", help="time tile variants (triton) instead")
    p.add_argument("--layouts", default="nk,mma",
                   help="stored layouts to time, e.g. kn,nk,mma (mma: the formats it can store)")
    p.add_argument("--only", default="", help="with --sweep: variants whose '<kernel>x<x_mode>' matches this regex")
    p.add_argument("--sweep-all", action="store_true", help="with --sweep: all variants, not just the decode kernels")
    p.add_argument("--table-from", nargs="+", default=None, metavar="JSON",
                   help="rebuild the tuned table from saved --sweep JSON files (no GPU needed)")
    p.add_argument("--write-table", action="store_true",
                   help="with --sweep: write the best decode config per format and M bucket to "
                        "pallas_kernels/weight_only/tuned/<device>.json (read by choose_config)")
    p.add_argument("--sections", default="weight_only,activation")
    p.add_argument("--out", default=os.environ.get("OUT", "."))
    a = p.parse_args(argv)
    a.formats = [f for f in a.formats.split(",") if f]
    if a.shapes:
        a.shapes = [tuple(int(v) for v in s.split("x")) for s in a.shapes.split(",")]
    else:
        a.shapes = [(8192, 28672), (14336, 4096)] if a.quick else list(SHAPES)
    a.ms = [int(v) for v in a.ms.split(",")] if a.ms else ([1, 16, 1024] if a.quick else list(MS))
    a.sections = a.sections.split(",")
    a.layouts = a.layouts.split(",")
    a.impls = a.impls.split(",")
    return a


def main(argv=None):
    args = _parse(argv if argv is not None else sys.argv[1:])
    if args.table_from:
        runs = [json.load(open(p)) for p in args.table_from]
        rows = [[Row(**{f.name: r[f.name] for f in dataclasses.fields(Row)}) for r in run["sweep"]] for run in runs]
        kinds = {run["card"] for run in runs}
        if len(kinds) != 1:
            raise SystemExit(f"--table-from files come from different cards: {sorted(kinds)}")
        print("wrote", write_tuned_table(rows, kinds.pop(), runs[-1]))
        return
    dev = jax.devices()[0]
    copy_bps = bench_util.copy_bandwidth()
    print(f"device {dev.device_kind}; jax {jax.__version__}; copy bandwidth {copy_bps / 1e12:.2f} TB/s", flush=True)
    result = dict(card=dev.device_kind, jax=jax.__version__, git_rev=_git_rev(),
                  copy_tbps=copy_bps / 1e12, args={k: str(v) for k, v in vars(args).items()})
    summary = ""
    if args.sweep:
        rows = bench_sweep(args)
        result["sweep"] = [dict(dataclasses.asdict(r), tbps=r.tbps, tflops=r.tflops) for r in rows]
        result["timing"] = bench_util.last_method()
        path = os.path.join(args.out, "bench_sweep.json")
        os.makedirs(args.out, exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
        print(summarize_sweep(rows, copy_bps))
        if args.write_table:
            print("wrote", write_tuned_table([rows], dev.device_kind, result), flush=True)
        return
    if "weight_only" in args.sections:
        rows, checks = bench_weight_only(args)
        result["weight_only"] = [dict(dataclasses.asdict(r), tbps=r.tbps, tflops=r.tflops) for r in rows]
        result["weight_only_checks"] = checks
        summary = summarize(rows, copy_bps)
    if "activation" in args.sections:
        try:
            from scripts.bench_activation import run_section  # the other engineer's section
        except ImportError:
            run_section = None
        if run_section is not None:
            result["activation"] = run_section(args)
    os.makedirs(args.out, exist_ok=True)
    result["timing"] = bench_util.last_method()
    path = os.path.join(args.out, "bench_weight_only.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    bad = [c for c in result.get("weight_only_checks", []) if not c["rel_err"] < CHECK_TOL]
    print(f"wrote {path}; {len(bad)} failed checks")
    print(summary)


if __name__ == "__main__":
    main()
