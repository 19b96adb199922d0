"""Bytes per weight and round-trip error of every registered weight format.

    ./dev run python -m scripts.formats_table [--k 4096 --n 4096] [--json FILE]

Quantizes one random-normal (K, N) weight with each format and reports the stored bytes per
weight (4-bit elements count half a byte; scales, zero points and global scales included)
and the round-trip error of `dequantize(quantize(w))`: relative RMS and max |error| / max |w|.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp

import lowbit_jax as lj


def format_rows(k: int = 4096, n: int = 4096, seed: int = 0) -> list[dict]:
    w = jax.random.normal(jax.random.key(seed), (k, n), jnp.float32)
    rows = []
    for name, fmt in sorted(lj.FORMATS.items()):
        if fmt.kind != "weight":
            continue
        q = lj.quantize(w, fmt)
        err = lj.dequantize(q) - w
        rows.append({
            "format": name,
            "bytes_per_weight": q.nbytes / (k * n),
            "rel_rms_error": float(jnp.linalg.norm(err) / jnp.linalg.norm(w)),
            "max_abs_error_over_max_w": float(jnp.max(jnp.abs(err)) / jnp.max(jnp.abs(w))),
        })
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--json", help="also write the rows to this file")
    a = ap.parse_args(argv)
    rows = format_rows(a.k, a.n)
    print(f"{'format':14s} {'B/weight':>9s} {'rel RMS err':>12s} {'max err/max|w|':>15s}")
    for r in rows:
        print(f"{r['format']:14s} {r['bytes_per_weight']:9.4f} {r['rel_rms_error']:12.5f} {r['max_abs_error_over_max_w']:15.5f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"k": a.k, "n": a.n, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
