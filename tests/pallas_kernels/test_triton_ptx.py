"""The weight-only Triton launches compiled for sm_90a without a GPU (`scripts/ptx_report`):
every launch the chooser makes loads its weight in 16-byte vectors and spills nothing.

Guards the bug that capped every decode kernel at ~1 TB/s: integer arguments are not
specialized by jax-triton, so a runtime stride made Triton load one byte per instruction.
"""

import pytest

pytest.importorskip("triton")

from pallas_kernels.weight_only.config import TileConfig  # noqa: E402
from scripts import ptx_report  # noqa: E402

FORMATS = ["int4-g128", "uint4-g128", "int8", "fp8", "mxfp4", "nvfp4"]


@pytest.mark.parametrize("m", [1, 16, 1024])
@pytest.mark.parametrize("label", FORMATS)
def test_chosen_launches_load_16_byte_vectors(label, m):
    r = ptx_report.report_case(label, 4096, 1536, m, "nk", "NVIDIA H200")
    assert r["widest"] == 16, r
    # Byte loads are scale reads only: one per scale block, so up to one per 16-byte weight
    # vector for g32 codes (kgemv tiles across blocks); byte-wide weight loads would be >= 16x.
    assert r["loads"][16] >= 2 * r["loads"][1], r
    assert r["stack"] == 0, r  # no register spills


@pytest.mark.parametrize("label", ["int4-g128", "int8"])
def test_kn_layout_launches_load_16_byte_vectors(label):
    for m in (1, 16):
        r = ptx_report.report_case(label, 4096, 1536, m, "kn", "NVIDIA H200")
        assert r["widest"] == 16 and r["stack"] == 0, r


@pytest.mark.parametrize("layout", ["kn", "nk"])
@pytest.mark.parametrize("label", ["int4-g128", "int8", "mxfp4"])
@pytest.mark.parametrize("cfg", [
    TileConfig(kernel="kgemv", block_m=1, block_n=64, block_k=32, unroll=4, num_stages=1),
    TileConfig(kernel="kgemv", block_m=4, block_n=64, block_k=32, unroll=2, num_stages=1),
    TileConfig(kernel="gemv", block_m=1, block_n=256, block_k=32, num_stages=6),
    TileConfig(kernel="fma", block_m=4, block_n=128, block_k=32),
    TileConfig(kernel="swapab", block_m=16, block_n=128, block_k=32),
], ids=lambda c: f"{c.kernel}-bm{c.block_m}")
def test_every_decode_kernel_compiles(cfg, label, layout):
    """The kernels the table can pick, on either layout: they build for sm_90a and spill at
    most a few registers (kgemv over 4 rows of int8 spills 8 bytes; the rejected 3-D kgemv
    step spilled 704)."""
    m = min(cfg.block_m, 3) if cfg.kernel != "swapab" else 13
    r = ptx_report.report_case(label, 4096, 1536, m, layout, None, config=cfg)
    assert r["stack"] <= 64 and r["widest"] >= 4, r


@pytest.mark.parametrize("label", ["int4-g128", "uint4-g128", "int8", "mxfp4", "nvfp4", "fp8", "mxfp8"])
@pytest.mark.parametrize("m", [1, 16, 40])
def test_mma_launches_are_fragment_loads_without_shared_memory(label, m):
    """The tensor-core GEMV (layout "mma") as the chooser launches it: the weight and x loads
    are the 16-byte fragment vectors, the upcast and MMAs stay in registers (no layout
    conversion through shared memory), at most a few registers spill (uint4 over 16 rows of x:
    16 bytes)."""
    r = ptx_report.report_case(label, 4096, 1536, m, "mma", "NVIDIA H200")
    assert r["kernel"] == "mma" and r["widest"] == 16 and r["stack"] <= 16, r
    assert r["mma_sync"] > 0 and r["shared"] == 0, r


def test_nvfp4_scale_factors_cost_little_over_mxfp4s():
    """NVFP4's e4m3 scales (two blocks per lane run) cost at most 5% more SASS in the
    tensor-core GEMV's main loop than MXFP4's e8m0 ones, same tile (BENCHMARKS.md session 15:
    420 against 383 instructions while Triton converted each scale byte, 397 with the 16-bit
    loads and the factors in PTX)."""
    cfg = TileConfig(kernel="mma", block_m=8, block_n=128, block_k=128, num_warps=4,
                     num_stages=1, unroll=1, x_mode=1)
    loop = {label: sum(ptx_report.report_case(label, 8192, 8192, 1, "mma", None,
                                              config=cfg)["loop"].values())
            for label in ("mxfp4", "nvfp4")}
    assert loop["mxfp4"] > 100 and loop["nvfp4"] <= 1.05 * loop["mxfp4"], loop
