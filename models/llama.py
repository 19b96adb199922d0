"""Llama-family decoder (SmolLM2, Llama 3) in Flax NNX, with a functional KV cache.

Per block: x += o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x)))); x += down(silu(gate(n2(x))) * up(n2(x))),
with RMSNorm pre-norms, rotate-half RoPE (dim i pairs with i + head_dim/2) and grouped-query
attention (`n_kv_heads` key/value heads shared by `n_heads // n_kv_heads` query heads each).

Glossary:
  slot      an index into the KV cache's time axis (0 .. cache_len-1).
  position  the RoPE position of a token; with left padding it differs from its slot.
  mask      (B, T, S) bool: query t may read cache slot s. Callers build it, so one forward
            serves training (causal over the batch's own tokens), prefill and decode.

The cache is a plain pytree (`KVCache`) passed in and returned, not module state, so the
jitted generate loop carries it as a loop variable and XLA updates it in place.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import LlamaConfig
from models.layers import Embed, QDense, RMSNorm, attention, rope


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
    """Per layer, keys and values of shape (B, cache_len, n_kv_heads, head_dim)."""
    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]

    @classmethod
    def zeros(cls, cfg: LlamaConfig, batch: int, cache_len: int, dtype=jnp.float32) -> "KVCache":
        shape = (batch, cache_len, cfg.n_kv_heads, cfg.head_dim)
        return cls(k=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers)),
                   v=tuple(jnp.zeros(shape, dtype) for _ in range(cfg.n_layers)))


class Attention(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        d, hd = cfg.d_model, cfg.head_dim
        self.q = QDense(d, cfg.n_heads * hd, rngs=rngs)
        self.k = QDense(d, cfg.n_kv_heads * hd, rngs=rngs)
        self.v = QDense(d, cfg.n_kv_heads * hd, rngs=rngs)
        self.o = QDense(cfg.n_heads * hd, d, rngs=rngs)
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, hd
        self.rope_theta = cfg.rope_theta

    def __call__(self, x, positions, mask, kv=None, slot=None):
        b, t, _ = x.shape
        q = rope(self.q(x).reshape(b, t, self.n_heads, self.head_dim), positions, self.rope_theta)
        k = rope(self.k(x).reshape(b, t, self.n_kv_heads, self.head_dim), positions, self.rope_theta)
        v = self.v(x).reshape(b, t, self.n_kv_heads, self.head_dim)
        if kv is not None:
            ck, cv = kv
            zero = jnp.zeros((), jnp.int32)
            k = jax.lax.dynamic_update_slice(ck, k.astype(ck.dtype), (zero, slot, zero, zero))
            v = jax.lax.dynamic_update_slice(cv, v.astype(cv.dtype), (zero, slot, zero, zero))
            kv = (k, v)
        out = attention(q, k, v, mask)
        return self.o(out.reshape(b, t, self.n_heads * self.head_dim)), kv


class MLP(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.gate = QDense(cfg.d_model, cfg.d_ff, rngs=rngs)
        self.up = QDense(cfg.d_model, cfg.d_ff, rngs=rngs)
        self.down = QDense(cfg.d_ff, cfg.d_model, rngs=rngs)

    def __call__(self, x):
        return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


class Block(nnx.Module):
    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(cfg.d_model, eps=cfg.rms_eps)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg.d_model, eps=cfg.rms_eps)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, positions, mask, kv=None, slot=None):
        h, kv = self.attn(self.attn_norm(x), positions, mask, kv, slot)
        x = x + h
        return x + self.mlp(self.mlp_norm(x)), kv


class Llama(nnx.Module):
    """Decoder-only LM. Parameter paths: embed.embedding, layers.{i}.attn.{q,k,v,o}.kernel,
    layers.{i}.mlp.{gate,up,down}.kernel, layers.{i}.{attn,mlp}_norm.scale, final_norm.scale,
    and lm_head.kernel unless the embeddings are tied."""

    def __init__(self, cfg: LlamaConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed = Embed(cfg.vocab_size, cfg.d_model, rngs=rngs)
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.n_layers)])
        self.final_norm = RMSNorm(cfg.d_model, eps=cfg.rms_eps)
        self.lm_head = None if cfg.tie_embeddings else QDense(cfg.d_model, cfg.vocab_size, rngs=rngs)

    def __call__(self, tokens: jax.Array, positions: jax.Array | None = None,
                 mask: jax.Array | None = None, cache: KVCache | None = None,
                 slot: jax.Array | int = 0, last_only: bool = False):
        """tokens (B, T) int32 -> (logits (B, T, vocab) f32, cache or None).

        `last_only`: logits of the last position only, (B, 1, vocab): what a prefill needs
        (the LM head over every prompt position is 2 * T * d_model * vocab wasted FLOPs).

        Without `positions`/`mask`: positions 0..T-1 and a causal mask (training, perplexity).
        With `cache`: this step's keys/values are written at slots [slot, slot + T) and
        `mask` (B, T, cache_len) selects which slots each query reads.
        """
        b, t = tokens.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        if mask is None:
            if cache is not None:
                raise ValueError("a cached forward needs an explicit mask")
            mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
        slot = jnp.asarray(slot, jnp.int32)
        x = self.embed(tokens)
        new_k, new_v = [], []
        for i, layer in enumerate(self.layers):
            kv = None if cache is None else (cache.k[i], cache.v[i])
            x, kv = layer(x, positions, mask, kv, slot)
            if kv is not None:
                new_k.append(kv[0])
                new_v.append(kv[1])
        if last_only:
            x = x[:, -1:]
        x = self.final_norm(x)
        logits = self.embed.attend(x) if self.lm_head is None else self.lm_head(x)
        new_cache = None if cache is None else KVCache(k=tuple(new_k), v=tuple(new_v))
        return logits.astype(jnp.float32), new_cache
