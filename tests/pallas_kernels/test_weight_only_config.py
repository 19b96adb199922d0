"""Tile configs: the tuned decode table (written by `scripts/bench_kernels.py --sweep
--write-table`, read by `choose_config`) and the validation of decode-kernel tiles."""

import dataclasses
import json

import jax.numpy as jnp
import pytest

from pallas_kernels.weight_only import config as wcfg


def spec(element=jnp.int4, block_k=128, k=4096, n=14336, zeros=False):
    kp = -(-k // block_k) * block_k if block_k else k
    return wcfg.WeightSpec(element_dtype=jnp.dtype(element), scale_dtype=jnp.dtype(jnp.float32),
                           block_k=block_k or kp, block_n=1, layout="kn", k=k, n=n, kp=kp, np_=n,
                           has_zeros=zeros)


@pytest.fixture
def table(tmp_path, monkeypatch):
    t = {
        wcfg.table_key(jnp.int4, 128, 1, "kn"): {
            "m1": dict(kernel="gemv", block_m=1, block_n=256, block_k=32, num_warps=4, num_stages=6),
            "m16": dict(kernel="swapab", block_m=16, block_n=128, block_k=64, num_warps=4, num_stages=4),
            "prefill": dict(kernel="swapab", block_m=256, block_n=128, block_k=64, num_warps=8,
                            num_stages=3, x_mode=3, pre_scale=True),
        },
        wcfg.table_key(jnp.int8, None, 1, "kn"): {
            "m1": dict(kernel="fma", block_m=1, block_n=128, block_k=128, num_warps=4, num_stages=4),
        },
        wcfg.table_key(jnp.uint4, 32, 1, "kn"): {
            "m16": dict(kernel="dot", block_m=16, block_n=64, block_k=32, num_warps=4, num_stages=4),
        },
        # A tile K of 128 cannot lie inside a 32-block: the entry must be ignored.
        wcfg.table_key(jnp.float4_e2m1fn, 32, 1, "kn"): {
            "m1": dict(kernel="gemv", block_m=1, block_n=256, block_k=128, num_warps=4, num_stages=6),
        },
    }
    monkeypatch.setattr(wcfg, "TUNED_DIR", tmp_path)
    (tmp_path / "fake-gpu-9000.json").write_text(json.dumps({"device_kind": "Fake GPU 9000", "table": t}))
    wcfg.tuned_table.cache_clear()
    yield "Fake GPU 9000"
    wcfg.tuned_table.cache_clear()


@pytest.mark.parametrize("m,kernel,block_m", [(1, "gemv", 1), (2, "gemv", 1), (3, "swapab", 16),
                                              (16, "swapab", 16), (40, "swapab", 64)])
def test_tuned_entries_adapt_to_m(table, m, kernel, block_m):
    cfg = wcfg.choose_config(m, spec(), device_kind=table)
    assert (cfg.kernel, cfg.block_m) == (kernel, block_m)
    assert cfg.check(spec()) is None and cfg.split_k >= 1


@pytest.mark.parametrize("m,block_m", [(5, 16), (16, 16), (17, 32), (64, 64)])
def test_decode_dot_entries_cover_all_rows_in_one_tile(table, m, block_m):
    assert wcfg.choose_config(m, spec(jnp.uint4, 32), device_kind=table).block_m == block_m


def test_m64_entry_serves_17_to_64_rows(table, monkeypatch):
    """An m64 entry (tuned at M=64) wins over the m16 one from 17 rows on; below, m16 stays."""
    key = wcfg.table_key(jnp.int4, 128, 1, "kn")
    t = wcfg.tuned_table(table)
    monkeypatch.setitem(t, key, dict(t[key], m64=dict(kernel="swapab", block_m=64, block_n=128, block_k=64,
                                                      num_warps=8, num_stages=4, x_mode=3, pre_scale=True)))
    assert wcfg.choose_config(16, spec(), device_kind=table).pre_scale is False
    for m, block_m in ((17, 32), (64, 64)):
        cfg = wcfg.choose_config(m, spec(), device_kind=table)
        assert (cfg.kernel, cfg.pre_scale, cfg.block_m, cfg.num_warps) == ("swapab", True, block_m, 8)


def test_prefill_entries_keep_their_tile(table):
    for m in (65, 1024, 4096):
        cfg = wcfg.choose_config(m, spec(), device_kind=table)
        assert (cfg.kernel, cfg.block_m, cfg.x_mode, cfg.pre_scale, cfg.split_k) == ("swapab", 256, 3, True, 1)


def test_unknown_devices_and_missing_entries_use_the_heuristic(table):
    prefill = wcfg.choose_config(1024, spec(jnp.int8, None), device_kind=table)
    assert (prefill.kernel, prefill.x_mode, prefill.pre_scale) == ("swapab", 1, True)
    assert wcfg.choose_config(1024, spec(jnp.uint4, 32), device_kind="Other GPU").x_mode == 3
    assert wcfg.choose_config(1024, spec(jnp.float8_e4m3fn, None), device_kind=table).kernel == "dot"
    assert wcfg.choose_config(1024, spec(), backend="pallas").kernel == "dot"
    assert wcfg.choose_config(1, spec(), device_kind="Other GPU").kernel == "dot"
    assert wcfg.choose_config(1, spec(), device_kind=None).kernel == "dot"
    assert wcfg.choose_config(1, spec(), backend="pallas", device_kind=table).kernel == "dot"


def test_fma_rows_and_invalid_entries(table):
    s8 = spec(jnp.int8, None)
    assert wcfg.choose_config(5, s8, device_kind=table).kernel == "dot"  # no m16 entry for int8
    assert wcfg.choose_config(1, s8, device_kind=table).kernel == "fma"
    fp4 = spec(jnp.float4_e2m1fn, 32)
    assert wcfg.choose_config(1, fp4, device_kind=table).kernel == "dot"


@pytest.mark.parametrize("kw,msg", [
    (dict(kernel="gemv", block_m=2), "block_m=2 must be 1"),
    (dict(kernel="fma", block_m=16), "block_m=16 must be <= 8"),
    (dict(kernel="swapab", block_m=8), "block_m=8 >= 16"),
    (dict(kernel="wgmma", block_m=16), "kernel='wgmma'"),
    (dict(kernel="dot", block_m=16, x_mode=3), "x_mode=3"),
    (dict(kernel="swapab", block_m=16, x_mode=4), "x_mode=4"),
    (dict(kernel="mma", block_m=16, x_mode=0, num_warps=4), "fragment order"),
])
def test_decode_tile_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        wcfg.TileConfig(block_n=128, block_k=64, **kw)


@pytest.mark.parametrize("device_kind", [None, "NVIDIA H100 80GB HBM3"])
@pytest.mark.parametrize("element,block_k", [(jnp.int4, 128), (jnp.int8, None)])
@pytest.mark.parametrize("m", [1, 4, 8, 9, 16, 32])
def test_mma_reads_x_in_fragment_order_for_4_bit_codes_over_two_n8_blocks(m, element, block_k, device_kind):
    """"mma" weights, heuristic or tuned table: x in fragment order for 4-bit codes over two
    n8 blocks of x, else as it is (the table's entries are adapted to M, as block_m is)."""
    mma = dataclasses.replace(spec(element, block_k), layout="mma")
    cfg = wcfg.choose_config(m, mma, device_kind=device_kind)
    x_mode = 2 if m > 8 and element == jnp.int4 else 1
    assert (cfg.kernel, cfg.block_m, cfg.x_mode) == ("mma", 8 if m <= 8 else 16, x_mode)


@pytest.mark.parametrize("element,block_k,m,split", [
    (jnp.int4, 128, 1, 28), (jnp.int4, 128, 4, 14), (jnp.int4, 128, 16, 14),
    (jnp.int8, None, 1, 28), (jnp.int8, None, 4, 28), (jnp.int8, None, 16, 14)])
def test_mma_split_counts_tiles_over_two_n8_blocks_or_few_rows_of_4_bit_codes(element, block_k, m, split):
    """14336x4096 in 128-row programs (32 of them): enough programs (4 per SM, 528) for one
    row of x and for int8 over one n8 block; 16-row tiles (16 per SM, 2112 of 256) otherwise.
    The split is the smallest divisor of the K chunks (112 of 128 4-bit codes, 224 of 64
    int8) that reaches the target."""
    mma = dataclasses.replace(spec(element, block_k, k=14336, n=4096), layout="mma")
    cfg = wcfg.choose_config(m, mma)
    assert (cfg.block_n, cfg.split_k) == (128, split)


def test_decode_kernels_need_the_tile_inside_one_scale_block():
    cfg = wcfg.TileConfig(kernel="gemv", block_m=1, block_n=128, block_k=256)
    assert "inside one scale block" in cfg.check(spec())
    assert cfg.check(spec(jnp.int8, None)) is None  # per channel: any tile
    # swap-AB scaling the decoded tile (prefill) may span several blocks; scaling its dot may not
    assert wcfg.TileConfig(kernel="swapab", block_m=64, block_n=128, block_k=256, pre_scale=True).check(spec()) is None
    assert "inside one scale block" in wcfg.TileConfig(kernel="swapab", block_m=64, block_n=128, block_k=256).check(spec())


def test_committed_tables_are_valid():
    for path in sorted(wcfg.TUNED_DIR.glob("*.json")):
        data = json.loads(path.read_text())
        assert wcfg.device_slug(data["device_kind"]) == path.stem
        for key, buckets in data["table"].items():
            for bucket, fields in buckets.items():
                assert bucket in ("m1", "m16", "m64", "prefill") and set(fields) <= set(wcfg.TUNED_FIELDS), (key, bucket)
                wcfg.TileConfig(**fields)


@pytest.mark.parametrize("k,n,bn,unroll", [(8192, 28672, 64, 4), (14336, 4096, 128, 2),
                                           (576, 1536, 64, 4), (4096, 1024, 128, 4)])
def test_kgemv_split_gives_every_program_the_same_whole_steps(k, n, bn, unroll):
    s = spec(k=k, n=n)
    cfg = wcfg.TileConfig(kernel="kgemv", block_m=1, block_n=bn, block_k=128, unroll=unroll)
    split = wcfg.split_for(s, cfg, 1)
    steps = -(-(s.kp // 128) // unroll)
    assert steps % split == 0
    programs = -(-n // bn) * split
    assert programs >= 4 * wcfg.NUM_SMS or split == steps


def test_kgemv_tiles_must_divide_padded_k_and_swapab_refuses_wide_e4m3():
    kg = wcfg.TileConfig(kernel="kgemv", block_m=1, block_n=128, block_k=64)
    assert kg.check(spec(jnp.int8, None, k=1000)) is not None  # 1000 % 64
    assert wcfg.TileConfig(kernel="kgemv", block_m=1, block_n=128, block_k=8).check(
        spec(jnp.int8, None, k=1000)) is None
    sw = wcfg.TileConfig(kernel="swapab", block_m=64, block_n=128, block_k=64)
    assert "e4m3" in sw.check(spec(jnp.float8_e4m3fn, None))
    assert wcfg.TileConfig(kernel="swapab", block_m=16, block_n=128, block_k=64).check(
        spec(jnp.float8_e4m3fn, None)) is None


def test_tuned_kgemv_entry_rounds_rows_up(tmp_path, monkeypatch):
    key = wcfg.table_key(jnp.int4, 128, 1, "kn")
    entry = dict(kernel="kgemv", block_m=1, block_n=64, block_k=128, num_warps=4, num_stages=1, unroll=4)
    monkeypatch.setattr(wcfg, "TUNED_DIR", tmp_path)
    (tmp_path / "fake-gpu-9001.json").write_text(json.dumps({"device_kind": "x", "table": {key: {"m1": entry}}}))
    wcfg.tuned_table.cache_clear()
    try:
        one = wcfg.choose_config(1, spec(), device_kind="Fake GPU 9001")
        two = wcfg.choose_config(2, spec(), device_kind="Fake GPU 9001")
        assert (one.kernel, one.block_m, one.unroll) == ("kgemv", 1, 4)
        assert (two.kernel, two.block_m) == ("kgemv", 2)
        assert one.split_k == wcfg.split_for(spec(), one, 1)
    finally:
        wcfg.tuned_table.cache_clear()
