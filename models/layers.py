"""Building blocks shared by the decoder and the encoder: QDense, norms, embeddings, RoPE.

QDense is the one place where a model multiplies by a weight matrix. Its parameter `kernel`
holds either a float array of shape (in, out) or a `lowbit_jax.QTensor` of the same logical
shape; the layer calls `lowbit_jax.qmatmul(x, kernel, act=act_format, impl=impl)` either way.
So a float model and its quantized twin have identical parameter paths and graph; only the
leaf type differs, and quantizing a model is a map over its state (see `models.quant`).

`act_format` (a `QuantFormat`, or None to use the one the QTensor records from its recipe)
and `impl` ("auto" | "pallas" | "triton" | "xla") are static attributes of the layer, set at
construction or by `models.quant.set_matmul` -- injected, the way Flax's own `dot_general=`
hook is, never patched in.

Naming invariant (relied on by `lowbit_jax.quantize_params`' default rules): embedding
tables live under a path containing "embed", norm scales under one containing "norm", biases
are called "bias"; everything else named `kernel` is a matmul weight.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

import lowbit_jax as lj


class QDense(nnx.Module):
    """y = x @ kernel (+ bias); x (..., in) float, kernel (in, out) float or QTensor."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = False,
                 rngs: nnx.Rngs, act_format=None, impl: str = "auto",
                 param_dtype=jnp.float32, init_scale: float = 1.0):
        std = init_scale / math.sqrt(in_features)
        self.kernel = nnx.Param(
            std * jax.random.normal(rngs.params(), (in_features, out_features), param_dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), param_dtype)) if use_bias else None
        self.in_features = in_features
        self.out_features = out_features
        self.act_format = act_format
        self.impl = impl

    def __call__(self, x: jax.Array) -> jax.Array:
        y = lj.qmatmul(x, self.kernel.get_value(), act=self.act_format, impl=self.impl)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype)
        return y


class RMSNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(x.dtype)


class LayerNorm(nnx.Module):
    def __init__(self, dim: int, *, eps: float, param_dtype=jnp.float32):
        self.scale = nnx.Param(jnp.ones((dim,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((dim,), param_dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.scale[...] + self.bias[...]).astype(x.dtype)


class Embed(nnx.Module):
    """Lookup table (num, dim); `attend` multiplies by its transpose (tied output head)."""

    def __init__(self, num: int, dim: int, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        self.embedding = nnx.Param(0.02 * jax.random.normal(rngs.params(), (num, dim), param_dtype))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.embedding[...], ids, axis=0)

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("...d,vd->...v", x, self.embedding[...].astype(x.dtype))


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotate-half RoPE. x (B, T, H, D); positions (B, T) int. Pairs dim i with i + D/2."""
    d = x.shape[-1]
    inv_freq = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)          # (D/2,)
    ang = positions.astype(jnp.float32)[..., None] * inv_freq                   # (B, T, D/2)
    cos = jnp.cos(ang)[:, :, None, :]
    sin = jnp.sin(ang)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = x32[..., : d // 2], x32[..., d // 2:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax attention with grouped KV heads.

    q (B, T, H, D); k, v (B, S, G, D) with H a multiple of G; mask (B, T, S) bool, True where
    a query may attend. Returns (B, T, H, D). Scores and softmax run in f32.
    """
    b, t, h, d = q.shape
    g = k.shape[2]
    qg = q.reshape(b, t, g, h // g, d).astype(jnp.float32)
    scores = jnp.einsum("btgrd,bsgd->bgrts", qg, k.astype(jnp.float32)) / math.sqrt(d)
    scores = jnp.where(mask[:, None, None], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum("bgrts,bsgd->btgrd", probs, v.astype(jnp.float32))
    return out.reshape(b, t, h, d).astype(q.dtype)
