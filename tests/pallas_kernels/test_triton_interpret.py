"""Every weight-only Triton kernel (dot, swap-AB, the GEMVs; each x and scale mode, split K,
both layouts) run by Triton's CPU interpreter on the GPU path's own launch, against the
reference on the same stored weights (`pallas_kernels.weight_only.triton_interpret`).

The interpreter must be switched on before the kernels are defined, so all cases run in one
child process; each case is then its own test here.
"""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

from pallas_kernels.weight_only import triton_interpret  # noqa: E402

IDS = [f"{label}-{name}-{layout}" for label, name, _ in triton_interpret.CASES for layout in ("kn", "nk")]


@pytest.fixture(scope="module")
def results():
    env = dict(os.environ, TRITON_INTERPRET="1", JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "pallas_kernels.weight_only.triton_interpret", "--json"],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_kernel_ran(results):
    from pallas_kernels.weight_only.config import KERNELS
    assert {r["kernel"] for r in results.values() if "excess" in r} == set(KERNELS)


@pytest.mark.parametrize("cid", IDS)
def test_matches_reference(results, cid):
    r = results[cid]
    if "skipped" in r:
        pytest.skip(r["skipped"])
    assert "error" not in r, r["error"]
    assert r["finite"] and r["excess"] <= 0, r
