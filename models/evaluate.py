"""Model quality metrics: decoder perplexity and encoder similarity.

Perplexity, the standard protocol: tokenize the whole file (no BOS), cut it into
non-overlapping windows of `ctx` tokens from the start (the tail shorter than a window is
dropped), run each window from an empty context, and take exp of the mean negative
log-likelihood over every predicted token of every window (ctx - 1 per window).
`max_windows` keeps only the first windows, to bound the run time.

Encoder: sentence embeddings (mean-pooled, L2-normalised) of the 50 Lee documents; the
cosine of each of the 1225 document pairs (upper triangle) is correlated with the human
similarity scores (Pearson and Spearman), and a quantized model is compared with the float
one by the mean cosine between their embeddings of the same document.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import stats
from tqdm import tqdm

from models.generate import bucket


class TextTooShortError(ValueError):
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class PerplexityResult:
    ppl: float
    nll: float          # mean NLL (nats per token)
    n_tokens: int       # predicted tokens scored
    n_windows: int      # windows scored
    ctx: int
    total_windows: int  # windows the text has at this ctx


@functools.partial(jax.jit, static_argnums=(0,))
def _window_nll(graphdef, state, tokens):
    model = nnx.merge(graphdef, state)
    logits, _ = model(tokens)
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    return nll.sum(axis=-1)


def perplexity(model, ids: Sequence[int] | np.ndarray, *, ctx: int, max_windows: int | None = None,
               progress: bool = False, name: str = "text") -> PerplexityResult:
    ids = np.asarray(ids, np.int32)
    if ctx < 2:
        raise ValueError(f"{ctx=} must be >= 2")
    if ctx > model.config.max_len:
        raise ValueError(f"{ctx=} exceeds the context length max_len={model.config.max_len}")
    total = len(ids) // ctx
    if total == 0:
        raise TextTooShortError(f"{name} has {len(ids)} tokens, fewer than one window of {ctx=}")
    n = total if max_windows is None else min(total, max_windows)
    if n < 1:
        raise ValueError(f"{max_windows=} must be >= 1")
    graphdef, state = nnx.split(model)
    windows = ids[: n * ctx].reshape(n, ctx)
    total_nll = 0.0
    for w in tqdm(windows, desc=f"perplexity ctx={ctx}", disable=not progress, leave=False):
        total_nll += float(_window_nll(graphdef, state, jnp.asarray(w[None]))[0])
    mean = total_nll / (n * (ctx - 1))
    return PerplexityResult(ppl=math.exp(mean), nll=mean, n_tokens=n * (ctx - 1), n_windows=n,
                            ctx=ctx, total_windows=total)


@functools.partial(jax.jit, static_argnums=(0,))
def _embed(graphdef, state, tokens, valid):
    return nnx.merge(graphdef, state).embed_sentences(tokens, valid)


def embed_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 16) -> np.ndarray:
    """(len(texts), d) f32 unit-norm sentence embeddings; batches padded to a power of two."""
    encs = [tokenizer.encode(t).ids for t in texts]
    graphdef, state = nnx.split(model)
    out = []
    for start in range(0, len(encs), batch_size):
        chunk = encs[start:start + batch_size]
        t = min(bucket(max(map(len, chunk))), model.config.max_len)
        toks = np.full((len(chunk), t), model.config.pad_id, np.int32)
        valid = np.zeros((len(chunk), t), bool)
        for i, e in enumerate(chunk):
            toks[i, : len(e)] = e
            valid[i, : len(e)] = True
        out.append(np.asarray(_embed(graphdef, state, jnp.asarray(toks), jnp.asarray(valid))))
    return np.concatenate(out)


@dataclasses.dataclass(frozen=True, slots=True)
class SimilarityResult:
    pearson: float
    spearman: float
    n_pairs: int


def similarity_correlation(emb: np.ndarray, human: np.ndarray) -> SimilarityResult:
    """Correlate pairwise cosines of `emb` (N, d) with the upper triangle of `human` (N, N)."""
    human = np.asarray(human, np.float64)
    iu = np.triu_indices(len(emb), 1)
    cos = (emb @ emb.T)[iu]
    return SimilarityResult(pearson=float(stats.pearsonr(cos, human[iu]).statistic),
                            spearman=float(stats.spearmanr(cos, human[iu]).statistic),
                            n_pairs=len(cos))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of cos(a_i, b_i)."""
    num = np.sum(a * b, axis=-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return float(np.mean(num / np.maximum(den, 1e-12)))
