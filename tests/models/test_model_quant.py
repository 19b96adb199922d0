"""Quantized twins: same paths, QTensor leaves, Orbax round trip, checkpoint mismatch errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lowbit_jax as lj
from models import config, evaluate, quant, weights
from models.generate import SamplingParams, generate


@pytest.fixture(scope="module")
def model():
    # d_model 128 so that 128-wide blocks (fp8-block, int4-g128) fit without padding.
    return weights.build_model(config.tiny_llama(d_model=128, d_ff=256, head_dim=32, n_layers=1), seed=0)


@pytest.mark.parametrize("recipe", list(lj.RECIPES))
def test_quantized_twin(model, recipe):
    q, report = quant.quantize_model(model, recipe)
    flat_f = jax.tree_util.tree_flatten_with_path(quant.model_state(model))[0]
    flat_q = jax.tree_util.tree_flatten_with_path(quant.model_state(q), is_leaf=lambda x: isinstance(x, lj.QTensor))[0]
    assert [p for p, _ in flat_f] == [p for p, _ in flat_q]
    kernels = [x for p, x in flat_q if p[-1].key == "kernel"]
    assert kernels and all(isinstance(k, lj.QTensor) for k in kernels)
    assert isinstance(q.embed.embedding.get_value(), jax.Array)
    toks = jnp.asarray([[3, 4, 5, 6]])
    ref, got = model(toks)[0], q(toks)[0]
    assert np.isfinite(got).all()
    # Loose: random weights, 4-bit formats; this checks wiring, not accuracy.
    assert np.corrcoef(np.ravel(ref), np.ravel(got))[0, 1] > 0.8
    assert quant.weight_stats(q).bits_per_weight < 32


def test_save_restore_and_mismatch(model, tmp_path):
    q, _ = quant.quantize_model(model, "w4a16-g32")
    path = tmp_path / "ck"
    quant.save_model(path, q, model_name="tiny-llama", recipe="w4a16-g32")
    r = quant.restore_model(path, model_name="tiny-llama", recipe="w4a16-g32", template=model)
    toks = jnp.asarray([[3, 4, 5, 6]])
    np.testing.assert_array_equal(r(toks)[0], q(toks)[0])
    assert generate(r, [[3, 4]], SamplingParams(max_new_tokens=3)).tokens == \
        generate(q, [[3, 4]], SamplingParams(max_new_tokens=3)).tokens
    with pytest.raises(quant.CheckpointMismatchError, match="recipe 'w4a16-g32', not the requested 'nvfp4'"):
        quant.restore_model(path, model_name="tiny-llama", recipe="nvfp4", template=model)
    with pytest.raises(quant.CheckpointMismatchError, match="model 'tiny-llama', not the requested 'smollm2-135m'"):
        quant.restore_model(path, model_name="smollm2-135m", recipe="w4a16-g32")


def test_unknown_recipe():
    with pytest.raises(lj.UnknownFormatError, match="'w3a7'"):
        quant.check_recipe("w3a7")
    assert quant.recipe_names()[0] == "float"


def test_random_model_quantizes_leafwise():
    cfg = config.tiny_llama(d_model=64, d_ff=128, head_dim=16)
    m = quant.random_model(cfg, "mxfp4", dtype="bfloat16")
    assert isinstance(m.layers[0].mlp.up.kernel.get_value(), lj.QTensor)
    out = generate(m, [[3, 4, 5]], SamplingParams(max_new_tokens=4), stop_ids=[])
    assert len(out.tokens[0]) == 4


def test_perplexity_protocol(model):
    ids = np.arange(3, 3 + 2 * 16 + 5) % model.config.vocab_size
    r = evaluate.perplexity(model, ids, ctx=16)
    assert (r.n_windows, r.total_windows, r.n_tokens) == (2, 2, 30)
    nll = 0.0
    for w in ids[:32].reshape(2, 16):
        logp = jax.nn.log_softmax(model(jnp.asarray(w[None]))[0][0, :-1], axis=-1)
        nll -= float(jnp.take_along_axis(logp, jnp.asarray(w[1:, None]), axis=-1).sum())
    np.testing.assert_allclose(r.nll, nll / 30, rtol=1e-5)
    assert evaluate.perplexity(model, ids, ctx=16, max_windows=1).n_windows == 1
    with pytest.raises(evaluate.TextTooShortError, match="has 37 tokens, fewer than one window of ctx=64"):
        evaluate.perplexity(model, ids, ctx=64)


def test_similarity_correlation():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(6, 4))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    human = np.triu(e @ e.T, 1)
    r = evaluate.similarity_correlation(e, human)
    assert r.n_pairs == 15 and r.pearson == pytest.approx(1.0) and r.spearman == pytest.approx(1.0)


def test_finetune_train_checkpoint_convert_serve(tmp_path):
    import orbax.checkpoint as ocp
    from scripts.finetune import train_and_convert
    cfg = config.tiny_llama(d_model=64, d_ff=128, head_dim=16)
    m = weights.build_model(cfg, seed=0)
    ids = (np.arange(400) * 7) % cfg.vocab_size
    served, s = train_and_convert(m, ids, model_name="tiny-llama", recipe="w8a16", steps=3, lr=1e-2,
                                  seq_len=16, batch=2, out_dir=tmp_path)
    assert len(s["losses"]) == 3 and s["losses"][-1] < s["losses"][0]
    with ocp.StandardCheckpointer() as ck:
        train = ck.restore(tmp_path / "train")
    assert {"params", "opt_state", "step"} <= set(train)
    assert isinstance(served.layers[0].attn.q.kernel.get_value(), lj.QTensor)
    assert lj.read_manifest(s["inference_checkpoint"])["metadata"]["recipe"] == "w8a16"
    assert len(generate(served, [[3, 4]], SamplingParams(max_new_tokens=3), stop_ids=[]).tokens[0]) == 3
    with pytest.raises(ValueError, match="fewer than batch=2 windows"):
        train_and_convert(m, ids[:20], model_name="tiny-llama", recipe="w8a16", steps=1, lr=1e-3,
                          seq_len=16, batch=2, out_dir=tmp_path / "b")
