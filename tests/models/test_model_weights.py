"""Weight import: GGUF Q/K permutation, parameter-tree checks, layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import config, weights
from models.layers import rope


def _interleaved_rope(x, positions, theta):
    """RoPE on adjacent pairs (2i, 2i+1): llama.cpp's layout for GGUF Q/K rows."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = positions[..., None] * inv
    cos, sin = np.cos(ang)[:, :, None], np.sin(ang)[:, :, None]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x2 * cos + x1 * sin
    return out


def test_permute_round_trip():
    w = np.random.default_rng(0).normal(size=(3 * 8, 5))
    np.testing.assert_array_equal(weights.unpermute_qk(weights.permute_qk(w, 3), 3), w)
    assert not np.array_equal(weights.permute_qk(w, 3), w)


def test_unpermuted_rows_give_same_attention_scores():
    """q.k with interleaved RoPE on GGUF rows == with rotate-half RoPE on unpermuted rows."""
    rng = np.random.default_rng(1)
    heads, d, d_in, t = 2, 8, 6, 5
    w_hf = rng.normal(size=(heads * d, d_in)).astype(np.float32)
    w_gguf = weights.permute_qk(w_hf, heads)
    x = rng.normal(size=(1, t, d_in)).astype(np.float32)
    pos = np.arange(t)[None].astype(np.float32)
    q_gguf = _interleaved_rope((x @ w_gguf.T).reshape(1, t, heads, d), pos, 1e4)
    q_ours = np.asarray(rope(jnp.asarray((x @ weights.unpermute_qk(w_gguf, heads).T).reshape(1, t, heads, d)),
                             jnp.asarray(pos, jnp.int32), 1e4))
    s_gguf = np.einsum("bthd,bshd->bhts", q_gguf, q_gguf)
    s_ours = np.einsum("bthd,bshd->bhts", q_ours, q_ours)
    np.testing.assert_allclose(s_ours, s_gguf, rtol=1e-4, atol=1e-4)


def test_build_model_rejects_wrong_tree():
    cfg = config.tiny_llama()
    model = weights.build_model(cfg, seed=0)
    from models.quant import model_state
    pure = jax.tree.map(np.asarray, model_state(model))
    assert weights.build_model(cfg, pure) is not None
    pure["layers"][0]["attn"]["q"]["kernel"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="layers.0.attn.q.kernel: expected shape"):
        weights.build_model(cfg, pure)
    del pure["final_norm"]
    with pytest.raises(ValueError, match="final_norm"):
        weights.build_model(cfg, pure)


def test_hf_llama_layout_round_trip():
    cfg = config.tiny_llama()
    model = weights.build_model(cfg, seed=0)
    from models.quant import model_state
    pure = model_state(model)
    hf = {"model.embed_tokens.weight": pure["embed"]["embedding"], "model.norm.weight": pure["final_norm"]["scale"],
          "lm_head.weight": pure["lm_head"]["kernel"].T}
    for i, layer in pure["layers"].items():
        p = f"model.layers.{i}."
        hf[p + "input_layernorm.weight"] = layer["attn_norm"]["scale"]
        hf[p + "post_attention_layernorm.weight"] = layer["mlp_norm"]["scale"]
        for n in "qkvo":
            hf[p + f"self_attn.{n}_proj.weight"] = layer["attn"][n]["kernel"].T
        for n in ("gate", "up", "down"):
            hf[p + f"mlp.{n}_proj.weight"] = layer["mlp"][n]["kernel"].T
    twin = weights.build_model(cfg, weights.hf_llama_to_pure({k: np.asarray(v) for k, v in hf.items()}, cfg))
    toks = jnp.asarray([[1, 2, 3]])
    np.testing.assert_allclose(twin(toks)[0], model(toks)[0], rtol=1e-6)


def test_unknown_model():
    with pytest.raises(config.UnknownModelError, match="'gpt5'.*smollm2-135m"):
        config.get_config("gpt5")


def test_bert_padding_invariance(tiny_bert):
    toks = jnp.asarray([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    valid = jnp.asarray([[1, 1, 1, 0, 0], [1] * 5], bool)
    emb = tiny_bert.embed_sentences(toks, valid)
    alone = tiny_bert.embed_sentences(toks[:1, :3], valid[:1, :3])
    np.testing.assert_allclose(emb[0], alone[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jnp.linalg.norm(emb, axis=-1), 1.0, rtol=1e-5)
