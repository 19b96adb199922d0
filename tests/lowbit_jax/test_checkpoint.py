"""Orbax checkpoints: bit-exact round trips, self-description, and every corruption."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import lowbit_jax as lj
from lowbit_jax import checkpoint as ckpt


def tree(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "embed": {"embedding": jnp.asarray(rng.standard_normal((50, 64)), jnp.float32)},
        "layers": [
            {"mlp": {"kernel": jnp.asarray(rng.standard_normal((64, 96)), jnp.bfloat16),
                     "bias": jnp.asarray(rng.standard_normal(96), jnp.float32)},
             "norm": {"scale": jnp.ones(64, jnp.float32)}}
            for _ in range(2)
        ],
        "step": 7,
    }


def bits(x):
    return np.atleast_1d(np.asarray(x)).view(np.uint8)


def assert_bit_exact(a, b):
    la = jax.tree_util.tree_leaves(a)
    lb = jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        if isinstance(x, int):
            assert x == y
        else:
            assert np.asarray(x).dtype == np.asarray(y).dtype
            np.testing.assert_array_equal(bits(x), bits(y))


@pytest.mark.parametrize("recipe", sorted(lj.RECIPES))
def test_roundtrip_is_bit_exact_for_every_recipe(tmp_path, recipe):
    q = lj.quantize_params(tree(), recipe)
    lj.save(tmp_path / "ck", q, metadata={"recipe": recipe})
    r = lj.restore(tmp_path / "ck")
    assert_bit_exact(q, r)
    kq = r["layers"][1]["mlp"]["kernel"]
    assert isinstance(kq, lj.QTensor) and kq.fmt == lj.get_recipe(recipe).weight
    assert kq.act == lj.get_recipe(recipe).act
    assert lj.read_manifest(tmp_path / "ck")["metadata"] == {"recipe": recipe}


def test_user_defined_format_survives(tmp_path):
    f = lj.QuantFormat(name="int4-g16-bf16-ck", element_dtype=jnp.int4, scale_dtype=jnp.bfloat16, block=(16, 1))
    q = {"w": lj.quantize(jnp.ones((32, 8)) * 0.3, f)}
    lj.save(tmp_path / "c", q)
    assert lj.restore(tmp_path / "c")["w"].fmt == f


def test_4bit_checkpoint_is_about_half_a_byte_per_weight(tmp_path):
    w = {"kernel": jnp.asarray(np.random.default_rng(0).standard_normal((1024, 1024)), jnp.float32)}
    q = lj.quantize_params(w, "w4a16", rules=[("kernel", "int4-g128")])
    lj.save(tmp_path / "c", q)
    size = sum(f.stat().st_size for f in (tmp_path / "c").rglob("*") if f.is_file())
    assert size < 1024 * 1024 * 0.62, size  # 0.5 B/weight + 4/128 B scales + metadata


def test_restore_with_target_and_mismatch_names_the_path(tmp_path):
    q = lj.quantize_params(tree(), "w8a16")
    lj.save(tmp_path / "c", q)
    abstract = jax.eval_shape(lambda: lj.quantize_params(tree(), "w8a16"))
    assert_bit_exact(lj.restore(tmp_path / "c", target=abstract), q)
    with pytest.raises(lj.CheckpointError, match=r"layers/0/mlp/kernel.*int8.*act-int8-token"):
        lj.restore(tmp_path / "c", target=lj.quantize_params(tree(), "w8a8-int8"))
    other = lj.quantize_params(tree(), "w4a16")
    with pytest.raises(lj.CheckpointError, match=r"layers/0/mlp/kernel.*int8.*int4-g128"):
        lj.restore(tmp_path / "c", target=other)
    t = tree()
    t["layers"][0]["mlp"]["bias"] = jnp.zeros(95)
    with pytest.raises(lj.CheckpointError, match=r"layers/0/mlp/bias"):
        lj.restore(tmp_path / "c", target=lj.quantize_params(t, "w8a16"))
    t = tree()
    del t["embed"]
    with pytest.raises(lj.CheckpointError, match="structure differs|extra leaves"):
        lj.restore(tmp_path / "c", target=t)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(lj.CheckpointError, match="no checkpoint at"):
        lj.restore(tmp_path / "nothing")


def _array_files(path):
    return sorted(p for p in (path / ckpt.ARRAYS).rglob("*") if p.is_file() and p.stat().st_size > 0
                  and "d" in p.parent.name or p.parent.name.startswith("ocdbt"))


def test_truncated_checkpoint(tmp_path):
    lj.save(tmp_path / "c", lj.quantize_params(tree(), "w4a16"))
    shutil.rmtree(tmp_path / "c" / ckpt.ARRAYS)
    with pytest.raises(lj.CheckpointError, match="missing its arrays"):
        lj.restore(tmp_path / "c")
    lj.save(tmp_path / "d", lj.quantize_params(tree(), "w4a16"))
    data = [p for p in (tmp_path / "d" / ckpt.ARRAYS).rglob("*") if p.is_file() and p.stat().st_size > 200]
    for p in data:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(lj.CheckpointError):
        lj.restore(tmp_path / "d")


def test_tampered_manifest_digest_and_values(tmp_path):
    q = lj.quantize_params(tree(), "w4a16")
    lj.save(tmp_path / "c", q)
    m = json.loads((tmp_path / "c" / ckpt.MANIFEST).read_text())
    leaf = next(e for e in m["leaves"] if e["kind"] == "qtensor")
    leaf["arrays"]["values"]["sha256"] = "0" * 64
    (tmp_path / "c" / ckpt.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(lj.CheckpointError, match="digest mismatch"):
        lj.restore(tmp_path / "c")
    (tmp_path / "c" / ckpt.MANIFEST).write_text("{not json")
    with pytest.raises(lj.CheckpointError, match="not valid JSON"):
        lj.restore(tmp_path / "c")


def test_tampered_array_content_is_detected(tmp_path):
    """Overwrite one stored array with different data through Orbax itself."""
    q = {"w": lj.quantize(jnp.asarray(np.random.default_rng(1).standard_normal((64, 8)), jnp.float32), "int8")}
    lj.save(tmp_path / "c", q)
    stored = ocp.StandardCheckpointer().restore(tmp_path / "c" / ckpt.ARRAYS)
    key = next(k for k in stored if k.endswith("_values"))
    stored[key] = np.asarray(stored[key]).copy()
    stored[key][0, 0] ^= 1
    shutil.rmtree(tmp_path / "c" / ckpt.ARRAYS)
    with ocp.StandardCheckpointer() as c:
        c.save(tmp_path / "c" / ckpt.ARRAYS, stored)
    with pytest.raises(lj.CheckpointError, match=r"leaf 0 values.*digest mismatch"):
        lj.restore(tmp_path / "c")


def test_foreign_checkpoint(tmp_path):
    with ocp.StandardCheckpointer() as c:
        c.save(tmp_path / "foreign", {"a": np.ones(3)})
    with pytest.raises(lj.CheckpointError, match="Orbax checkpoint but not a lowbit-jax one"):
        lj.restore(tmp_path / "foreign")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / ckpt.MANIFEST).write_text(json.dumps({"library": "other"}))
    with pytest.raises(lj.CheckpointError, match="not a lowbit-jax checkpoint"):
        lj.restore(tmp_path / "fake")


def test_refuses_to_save_over_a_non_checkpoint(tmp_path):
    d = tmp_path / "mydata"
    d.mkdir()
    (d / "important.txt").write_text("keep me")
    with pytest.raises(lj.CheckpointError, match="not a lowbit-jax checkpoint; refusing"):
        lj.save(d, tree())
    assert (d / "important.txt").read_text() == "keep me"
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(lj.CheckpointError, match="refusing"):
        lj.save(f, tree())


def test_overwrite_and_interrupted_save_keep_a_restorable_checkpoint(tmp_path, monkeypatch):
    first = lj.quantize_params(tree(0), "w8a16")
    second = lj.quantize_params(tree(1), "w8a16")
    lj.save(tmp_path / "c", first)
    lj.save(tmp_path / "c", second)  # overwrite is fine
    assert_bit_exact(lj.restore(tmp_path / "c"), second)

    real_replace = os.replace
    calls = []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("power cut")
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        lj.save(tmp_path / "c", first)
    monkeypatch.setattr(ckpt.os, "replace", real_replace)
    assert_bit_exact(lj.restore(tmp_path / "c"), second)  # found at c.previous
    lj.save(tmp_path / "c", first)
    assert_bit_exact(lj.restore(tmp_path / "c"), first)
    assert not (tmp_path / "c.previous").exists()


def test_nnx_state_roundtrip(tmp_path):
    from flax import nnx
    model = nnx.Linear(32, 16, rngs=nnx.Rngs(0))
    state = nnx.state(model, nnx.Param)
    q = lj.quantize_params(state, "w4a16-g32")
    lj.save(tmp_path / "c", q)
    r = lj.restore(tmp_path / "c")
    assert isinstance(r["kernel"], lj.QTensor) and r["bias"].shape == (16,)
