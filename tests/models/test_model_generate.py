"""KV-cache generate vs the full forward; jit vs op-by-op; batching; sampling validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from models import generate as G
from models.llama import KVCache

PROMPTS = [[3, 4, 5, 6, 7, 8, 9], [10, 11, 12], [13]]


@pytest.mark.parametrize("model_name", ["tiny_llama", "tiny_llama_tied"])
def test_cached_decode_matches_full_forward(request, model_name):
    """Prefill 5 tokens into the cache, then decode 1 at a time: logits equal the full forward."""
    model = request.getfixturevalue(model_name)
    cfg = model.config
    jitted = nnx.jit(lambda m, *a: m(*a))  # one compile per shape instead of op-by-op dispatch
    call = lambda *a: jitted(model, *a)  # noqa: E731
    toks = jnp.asarray([[5, 9, 2, 7, 3, 11, 4, 8]], jnp.int32)
    full, _ = call(toks)
    s = 16
    cache = KVCache.zeros(cfg, 1, s)
    pos = jnp.arange(8)[None]
    valid = jnp.zeros((1, s), bool)
    p = 5
    valid = valid.at[:, :p].set(True)
    mask = (jnp.arange(s)[None, :] <= jnp.arange(p)[:, None])[None] & valid[:, None]
    logits, cache = call(toks[:, :p], pos[:, :p], mask, cache, 0)
    np.testing.assert_allclose(logits, full[:, :p], rtol=1e-5, atol=1e-5)
    for t in range(p, 8):
        valid = valid.at[:, t].set(True)
        m = ((jnp.arange(s) <= t)[None] & valid)[:, None]
        step, cache = call(toks[:, t:t + 1], pos[:, t:t + 1], m, cache, jnp.int32(t))
        np.testing.assert_allclose(step[:, 0], full[:, t], rtol=1e-5, atol=1e-5)


def test_greedy_matches_reference_and_padding(tiny_llama):
    """Batched, left-padded generate == per-prompt full-forward greedy decoding."""
    res = G.generate(tiny_llama, PROMPTS, G.SamplingParams(max_new_tokens=6), stop_ids=[])
    for prompt, got in zip(PROMPTS, res.tokens):
        assert got == G.greedy_reference(tiny_llama, prompt, 6)
    alone = G.generate(tiny_llama, [PROMPTS[1]], G.SamplingParams(max_new_tokens=6), stop_ids=[])
    assert alone.tokens[0] == res.tokens[1]


def test_jit_equals_op_by_op(tiny_llama):
    params = G.SamplingParams(max_new_tokens=3)
    jitted = G.generate(tiny_llama, PROMPTS[1:], params, stop_ids=[])
    eager = G.generate(tiny_llama, PROMPTS[1:], params, stop_ids=[], jit=False)
    assert jitted.tokens == eager.tokens


def test_generate_program_is_what_generate_runs(tiny_llama):
    """The (program, args, kwargs) exposed for profiling produce generate's tokens."""
    params = G.SamplingParams(max_new_tokens=5)
    program, args, kwargs = G.generate_program(tiny_llama, PROMPTS, params, stop_ids=[])
    assert kwargs == {"n_new": 8}
    out, steps = program(*args, **kwargs)
    res = G.generate(tiny_llama, PROMPTS, params, stop_ids=[])
    assert int(steps) == 5 and np.asarray(out)[:, :5].tolist() == res.tokens
    with pytest.raises(G.GenerateError, match="empty"):
        G.generate_program(tiny_llama, [[]], params)


def test_no_recompile_within_bucket(tiny_llama):
    params = G.SamplingParams(max_new_tokens=5)
    G.generate(tiny_llama, [[3, 4, 5]], params)
    before = G._generate_jit._cache_size()
    G.generate(tiny_llama, [[3, 4, 5, 6, 7, 8]], G.SamplingParams(max_new_tokens=7, temperature=0.7,
                                                                   top_k=3, top_p=0.9, seed=4))
    assert G._generate_jit._cache_size() == before


def test_stop_tokens(tiny_llama):
    free = G.generate(tiny_llama, [PROMPTS[0]], G.SamplingParams(max_new_tokens=6), stop_ids=[])
    stop = free.tokens[0][2]
    first = free.tokens[0].index(stop)
    res = G.generate(tiny_llama, [PROMPTS[0]], G.SamplingParams(max_new_tokens=6), stop_ids=[stop])
    assert res.tokens[0] == free.tokens[0][:first] and res.stopped == [True]
    assert res.steps == first + 1


def test_sampling_seeded_and_topk1_is_greedy(tiny_llama):
    s = G.SamplingParams(max_new_tokens=8, temperature=1.5, top_p=0.95, seed=7)
    a = G.generate(tiny_llama, PROMPTS, s, stop_ids=[])
    b = G.generate(tiny_llama, PROMPTS, s, stop_ids=[])
    assert a.tokens == b.tokens
    greedy = G.generate(tiny_llama, PROMPTS, G.SamplingParams(max_new_tokens=8), stop_ids=[])
    k1 = G.generate(tiny_llama, PROMPTS, G.SamplingParams(max_new_tokens=8, temperature=2.0, top_k=1, seed=3),
                    stop_ids=[])
    assert k1.tokens == greedy.tokens


def test_top_p_and_top_k_keep_the_right_tokens():
    logits = jnp.log(jnp.tile(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]), (400, 1)))
    sample = jax.jit(G.sample_logits)
    top_p = sample(logits, jax.random.key(0), jnp.float32(1.0), jnp.int32(0), jnp.float32(0.7))
    assert set(np.asarray(top_p).tolist()) == {0, 1}    # 0.5 < 0.7 <= 0.5 + 0.3
    top_k = sample(logits, jax.random.key(1), jnp.float32(1.0), jnp.int32(3), jnp.float32(1.0))
    assert set(np.asarray(top_k).tolist()) == {0, 1, 2}


@pytest.mark.parametrize("kw, match", [
    (dict(temperature=-0.1), "temperature=-0.1"),
    (dict(temperature=float("nan")), "temperature=nan"),
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(top_p=1.5), "top_p=1.5"),
    (dict(top_k=-1), "top_k=-1"),
    (dict(max_new_tokens=0), "max_new_tokens=0"),
    (dict(max_new_tokens=True), "max_new_tokens=True"),
    (dict(seed=1.5), "seed=1.5"),
])
def test_sampling_params_validated(kw, match):
    with pytest.raises(G.GenerateError, match=match):
        G.SamplingParams(**kw)


def test_bad_prompts(tiny_llama):
    with pytest.raises(G.GenerateError, match="prompt 1 is empty"):
        G.generate(tiny_llama, [[3], []])
    with pytest.raises(G.GenerateError, match="prompts is empty"):
        G.generate(tiny_llama, [])
    max_len = tiny_llama.config.max_len
    with pytest.raises(G.GenerateError, match=f"max_len={max_len}"):
        G.generate(tiny_llama, [[3] * 60], G.SamplingParams(max_new_tokens=10))


def test_bucket():
    assert [G.bucket(n) for n in (1, 8, 9, 16, 17, 100)] == [8, 8, 16, 16, 32, 128]
