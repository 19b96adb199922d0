"""BERT encoder (all-MiniLM-L6-v2) in Flax NNX, with sentence-transformers pooling.

Embeddings = word + learned position + token-type (all type 0), then LayerNorm. Per block
(post-norm): x = LN(x + o(attn(q(x), k(x), v(x)))); x = LN(x + down(gelu_erf(up(x)))).
A sentence embedding is the mask-weighted mean of the last hidden states, L2-normalised, so
the dot product of two embeddings is their cosine similarity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from models.config import BertConfig
from models.layers import Embed, LayerNorm, QDense, attention


class EncoderBlock(nnx.Module):
    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        d = cfg.d_model
        self.q = QDense(d, d, use_bias=True, rngs=rngs)
        self.k = QDense(d, d, use_bias=True, rngs=rngs)
        self.v = QDense(d, d, use_bias=True, rngs=rngs)
        self.o = QDense(d, d, use_bias=True, rngs=rngs)
        self.attn_norm = LayerNorm(d, eps=cfg.ln_eps)
        self.up = QDense(d, cfg.d_ff, use_bias=True, rngs=rngs)
        self.down = QDense(cfg.d_ff, d, use_bias=True, rngs=rngs)
        self.mlp_norm = LayerNorm(d, eps=cfg.ln_eps)
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim

    def __call__(self, x, mask):
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.n_heads, self.head_dim)
        h = attention(split(self.q(x)), split(self.k(x)), split(self.v(x)), mask)
        x = self.attn_norm(x + self.o(h.reshape(b, t, d)))
        return self.mlp_norm(x + self.down(jax.nn.gelu(self.up(x), approximate=False)))


class Bert(nnx.Module):
    """Parameter paths: embed.embedding, pos_embed.embedding, type_embed.embedding, embed_norm,
    layers.{i}.{q,k,v,o,up,down}.{kernel,bias}, layers.{i}.{attn,mlp}_norm.{scale,bias}."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.config = cfg
        self.embed = Embed(cfg.vocab_size, cfg.d_model, rngs=rngs)
        self.pos_embed = Embed(cfg.max_len, cfg.d_model, rngs=rngs)
        self.type_embed = Embed(cfg.type_vocab_size, cfg.d_model, rngs=rngs)
        self.embed_norm = LayerNorm(cfg.d_model, eps=cfg.ln_eps)
        self.layers = nnx.List([EncoderBlock(cfg, rngs=rngs) for _ in range(cfg.n_layers)])

    def __call__(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        """tokens (B, T) int32, valid (B, T) bool (False on padding) -> hidden (B, T, d) f32."""
        b, t = tokens.shape
        if t > self.config.max_len:
            raise ValueError(f"sequence length {t} exceeds {self.config.max_len=}")
        x = self.embed(tokens) + self.pos_embed(jnp.arange(t))[None] + self.type_embed(
            jnp.zeros_like(tokens))
        x = self.embed_norm(x)
        mask = jnp.broadcast_to(valid[:, None, :], (b, t, t))
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def embed_sentences(self, tokens: jax.Array, valid: jax.Array) -> jax.Array:
        """Mean-pooled, L2-normalised sentence embeddings (B, d) f32."""
        h = self(tokens, valid).astype(jnp.float32)
        w = valid.astype(jnp.float32)[..., None]
        pooled = (h * w).sum(1) / jnp.maximum(w.sum(1), 1e-9)
        return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
