"""Batched autoregressive generation: one jit-compiled prefill + `lax.while_loop` decode.

Layout. Prompts are LEFT-padded to a bucket length P (a power of two), so every sequence's
last prompt token sits in slot P-1 and decode step i writes slot P+i for the whole batch.
RoPE positions are counted per sequence (cumsum of the valid mask), so padding does not
shift them; padded slots are masked out of attention.

Recompiles. Static (a new value compiles once more): the model graph, batch size, prompt
bucket P and new-token bucket N (cache_len = P + N). Arrays (any value reuses the compiled
loop): prompt tokens/mask, max_new_tokens, temperature, top_k, top_p, the PRNG key and the
stop-token ids. So a new prompt length inside a bucket, or different sampling settings,
reuse one executable.

Sampling (per step, all in-graph): temperature == 0 -> greedy argmax; else logits/temperature,
keep the top_k largest (top_k == 0: all), then the smallest prefix of the sorted
distribution whose mass reaches top_p (always at least one token), then sample.

A sequence is finished after it emits a stop token; it then emits `pad_id`. The loop ends
when every sequence is finished or max_new_tokens were produced. Returned token lists exclude
the stop token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from models.llama import KVCache, Llama


class GenerateError(ValueError):
    """Bad generate input (empty prompt, too long, invalid sampling parameter)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class SamplingParams:
    """temperature >= 0 (0 = greedy); top_k >= 0 (0 = off); top_p in (0, 1]; seed any int."""
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if not (is_int(self.max_new_tokens) and self.max_new_tokens >= 1):
            raise GenerateError(f"max_new_tokens={self.max_new_tokens!r} must be an int >= 1")
        if not (self.temperature >= 0) or not np.isfinite(self.temperature):
            raise GenerateError(f"temperature={self.temperature!r} must be finite and >= 0")
        if not (is_int(self.top_k) and self.top_k >= 0):
            raise GenerateError(f"top_k={self.top_k!r} must be an int >= 0 (0 disables it)")
        if not is_int(self.seed):
            raise GenerateError(f"seed={self.seed!r} must be an int")
        if not (0.0 < self.top_p <= 1.0):
            raise GenerateError(f"top_p={self.top_p!r} must be in (0, 1]")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DecodeState:
    step: jax.Array        # () int32, tokens produced so far
    tokens: jax.Array      # (B, N) int32, produced tokens (pad after a stop)
    next_token: jax.Array  # (B,) int32, sampled but not yet recorded
    done: jax.Array        # (B,) bool
    position: jax.Array    # (B,) int32, RoPE position of next_token
    key_valid: jax.Array   # (B, cache_len) bool, slots holding real tokens
    cache: KVCache
    rng: jax.Array


def bucket(n: int, minimum: int = 8) -> int:
    """Smallest power of two >= max(n, minimum)."""
    return max(minimum, 1 << max(0, int(n) - 1).bit_length())


def sample_logits(logits: jax.Array, rng: jax.Array, temperature: jax.Array,
                  top_k: jax.Array, top_p: jax.Array) -> jax.Array:
    """logits (B, V) f32 -> token ids (B,) int32. Parameters are scalar arrays."""

    def greedy(_):
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def stochastic(_):
        x = logits / jnp.maximum(temperature, 1e-6)
        v = x.shape[-1]
        desc = -jnp.sort(-x, axis=-1)
        kth = jnp.where(top_k > 0, desc[:, jnp.clip(top_k - 1, 0, v - 1)], -jnp.inf)
        desc = jnp.where(desc >= kth[:, None], desc, -jnp.inf)
        probs = jax.nn.softmax(desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs      # mass strictly above each token
        n_keep = jnp.maximum(jnp.sum(before < top_p, axis=-1), 1)
        cutoff = jnp.take_along_axis(desc, (n_keep - 1)[:, None], axis=-1)
        x = jnp.where(x >= jnp.maximum(cutoff, kth[:, None]), x, -jnp.inf)
        return jax.random.categorical(rng, x, axis=-1).astype(jnp.int32)

    return jax.lax.cond(temperature > 0, stochastic, greedy, None)


def _generate_impl(graphdef, state, tokens, valid, max_new, temperature, top_k, top_p, rng,
                   stop_ids, *, n_new: int):
    model = nnx.merge(graphdef, state)
    cfg = model.config
    b, p = tokens.shape
    cache_len = p + n_new
    slots = jnp.arange(cache_len)
    positions = jnp.maximum(jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1, 0)
    key_valid = jnp.zeros((b, cache_len), bool).at[:, :p].set(valid)
    mask = (slots[None, :] <= jnp.arange(p)[:, None])[None] & key_valid[:, None, :]
    # The cache holds keys/values in the activations' dtype (bf16 models: half the bytes
    # that every decode step reads).
    cache = KVCache.zeros(cfg, b, cache_len, model.embed.embedding[...].dtype)
    logits, cache = model(tokens, positions, mask, cache, 0, last_only=True)
    rng, sub = jax.random.split(rng)
    init = DecodeState(
        step=jnp.zeros((), jnp.int32), tokens=jnp.full((b, n_new), cfg.pad_id, jnp.int32),
        next_token=sample_logits(logits[:, -1], sub, temperature, top_k, top_p),
        done=jnp.zeros((b,), bool), position=positions[:, -1] + 1, key_valid=key_valid,
        cache=cache, rng=rng)

    def cond(s: DecodeState):
        return (s.step < max_new) & ~jnp.all(s.done)

    def body(s: DecodeState):
        tok = jnp.where(s.done, cfg.pad_id, s.next_token)
        tokens_out = jax.lax.dynamic_update_slice(s.tokens, tok[:, None], (0, s.step))
        done = s.done | jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
        slot = p + s.step
        kv = jax.lax.dynamic_update_slice(s.key_valid, jnp.ones((b, 1), bool), (0, slot))
        step_mask = ((slots <= slot)[None, :] & kv)[:, None, :]
        step_logits, cache = model(tok[:, None], s.position[:, None], step_mask, s.cache, slot)
        rng, sub = jax.random.split(s.rng)
        nxt = sample_logits(step_logits[:, 0], sub, temperature, top_k, top_p)
        return DecodeState(step=s.step + 1, tokens=tokens_out, next_token=nxt, done=done,
                           position=s.position + 1, key_valid=kv, cache=cache, rng=rng)

    final = jax.lax.while_loop(cond, body, init)
    return final.tokens, final.step


_generate_jit = jax.jit(_generate_impl, static_argnums=(0,), static_argnames=("n_new",))


@dataclasses.dataclass(frozen=True, slots=True)
class GenerateResult:
    tokens: list[list[int]]   # per prompt, generated ids without the stop token
    stopped: list[bool]       # per prompt, whether a stop token ended it
    steps: int                # decode steps run (tokens produced by the longest sequence)


def generate_program(model: Llama, prompts: Sequence[Sequence[int]],
                     params: SamplingParams = SamplingParams(), *,
                     stop_ids: Sequence[int] | None = None) -> tuple[Callable, tuple, dict]:
    """(jitted program, args, kwargs) that `generate` runs: `program(*args, **kwargs)` returns
    (tokens (B, N) int32, steps). For tools that time or profile the program itself.

    Raises GenerateError for an empty batch/prompt or prompt + max_new_tokens > max_len.
    """
    cfg = model.config
    if not isinstance(params, SamplingParams):
        raise GenerateError(f"params must be SamplingParams, got {type(params).__name__}")
    if len(prompts) == 0:
        raise GenerateError("prompts is empty; give at least one prompt")
    lens = [len(p) for p in prompts]
    for i, n in enumerate(lens):
        if n == 0:
            raise GenerateError(f"prompt {i} is empty (0 tokens)")
        if n + params.max_new_tokens > cfg.max_len:
            raise GenerateError(f"prompt {i} has {n} tokens; + max_new_tokens={params.max_new_tokens} "
                                f"exceeds the context length max_len={cfg.max_len} of {cfg.name!r}")
    stop = tuple(cfg.eos_ids if stop_ids is None else stop_ids) or (-1,)
    p = bucket(max(lens))
    toks = np.full((len(prompts), p), cfg.pad_id, np.int32)
    valid = np.zeros((len(prompts), p), bool)
    for i, pr in enumerate(prompts):
        toks[i, p - len(pr):] = pr
        valid[i, p - len(pr):] = True
    graphdef, state = nnx.split(model)
    args = (graphdef, state, jnp.asarray(toks), jnp.asarray(valid),
            jnp.asarray(params.max_new_tokens, jnp.int32), jnp.asarray(params.temperature, jnp.float32),
            jnp.asarray(params.top_k, jnp.int32), jnp.asarray(params.top_p, jnp.float32),
            jax.random.key(params.seed), jnp.asarray(stop, jnp.int32))
    return _generate_jit, args, {"n_new": bucket(params.max_new_tokens)}


def generate(model: Llama, prompts: Sequence[Sequence[int]], params: SamplingParams = SamplingParams(),
             *, stop_ids: Sequence[int] | None = None, jit: bool = True) -> GenerateResult:
    """Generate continuations of a batch of token-id prompts (different lengths allowed).

    `jit=False` runs the same program op by op (under `jax.disable_jit`), for testing.
    Raises GenerateError for an empty batch/prompt or prompt + max_new_tokens > max_len.
    """
    program, args, kwargs = generate_program(model, prompts, params, stop_ids=stop_ids)
    if jit:
        out, steps = program(*args, **kwargs)
    else:
        with jax.disable_jit():
            out, steps = _generate_impl(*args, **kwargs)
    out, stop = np.asarray(out), np.asarray(args[-1])
    result, stopped = [], []
    for row in out[:, : int(steps)]:
        hit = np.nonzero(np.isin(row, stop))[0]
        stopped.append(bool(hit.size))
        result.append(row[: hit[0]].tolist() if hit.size else row.tolist())
    return GenerateResult(tokens=result, stopped=stopped, steps=int(steps))


def greedy_reference(model: Llama, prompt: Sequence[int], n: int) -> list[int]:
    """Greedy decoding by re-running the full causal forward (no cache) each step; a test
    oracle. The sequence is right-padded to a fixed length (causal attention makes the pad
    invisible to earlier positions), so the forward compiles once."""
    length = len(prompt) + n
    buf = np.full((1, length), model.config.pad_id, np.int32)
    buf[0, : len(prompt)] = prompt
    graphdef, state = nnx.split(model)
    fwd = jax.jit(lambda s, t: nnx.merge(graphdef, s)(t)[0])
    for cur in range(len(prompt), length):
        buf[0, cur] = int(jnp.argmax(fwd(state, jnp.asarray(buf))[0, cur - 1]))
    return buf[0, len(prompt):].tolist()
