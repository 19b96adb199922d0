"""Every Triton kernel run by Triton's CPU interpreter on the GPU path's own launch, against
the reference on the same stored operands (`pallas_kernels.triton_interpret`): the
weight-only kernels (dot, swap-AB, the GEMVs; each x and scale mode, split K, both layouts)
and the scaled GEMM (epilogue and promote modes, one or two K groups per step, every recipe).

The interpreter must be switched on before the kernels are defined, so all cases run in one
child process; each case is then its own test here.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from pallas_kernels import triton_interpret  # noqa: E402
from pallas_kernels.weight_only.config import KERNELS  # noqa: E402

IDS = [cid for cid, _, _ in triton_interpret.all_cases()]


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TRITON_INTERPRET="1", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "pallas_kernels.triton_interpret", "--json"],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# `mma` is warp-level PTX (mma.sync across a warp's lanes, inline asm), which Triton's
# interpreter cannot execute: test_weight_only_mma.py runs its PTX and fragments on CPU.
NOT_INTERPRETABLE = {"mma"}


def test_every_kernel_and_mode_ran(results):
    ran = {r["kernel"] for r in results.values() if "excess" in r}
    assert ran == (set(KERNELS) - NOT_INTERPRETABLE) | {"scaled/epilogue", "scaled/promote"}, ran


@pytest.mark.parametrize("cid", IDS)
def test_matches_reference(results, cid):
    r = results[cid]
    if "skipped" in r:
        pytest.skip(r["skipped"])
    assert "error" not in r, r["error"]
    assert r["finite"] and r["excess"] <= 0, r
