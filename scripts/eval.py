"""`lowbit-jax eval`: perplexity of a decoder, or similarity quality of an encoder, for one
recipe (quantized on the fly from the float weights, or restored from a checkpoint).

Decoder result keys: model, recipe, ppl, nll, ctx, windows, total_windows, tokens,
weight_bytes, bits_per_weight, seconds. Encoder: pearson, spearman (vs the human scores of
the 50 Lee documents, 1225 pairs), cosine_vs_float (mean cosine of this recipe's embeddings
with the float model's), plus the same size keys; "ppl" is null there.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from models import config, evaluate, quant
from scripts import data


def load_model(model_name: str, recipe: str, checkpoint: str | None = None, *, progress: bool = True):
    """(model for `recipe`, tokenizer, float model). Validates names before loading anything."""
    config.get_config(model_name)
    quant.check_recipe(recipe)
    if checkpoint is not None:
        quant.check_checkpoint(checkpoint, model_name=model_name, recipe=recipe)
    fmodel, tok = data.load_pretrained(model_name, progress=progress)
    if checkpoint is not None:
        model = quant.restore_model(checkpoint, model_name=model_name, recipe=recipe, template=fmodel)
    else:
        model, _ = quant.quantize_model(fmodel, recipe)
    return model, tok, fmodel


def size_keys(model) -> dict:
    s = quant.weight_stats(model)
    return {"weight_bytes": s.total_bytes, "linear_bytes": s.linear_bytes,
            "bits_per_weight": round(s.bits_per_weight, 4)}


def perplexity_on(model, tok, text_path: str | pathlib.Path, *, ctx: int, max_windows: int | None,
                  progress: bool = False) -> evaluate.PerplexityResult:
    path = pathlib.Path(text_path)
    if not path.is_file():
        raise FileNotFoundError(f"text file {str(path)!r} does not exist")
    ids = tok.encode(data.read_text(path)).ids
    return evaluate.perplexity(model, ids, ctx=ctx, max_windows=max_windows, progress=progress,
                               name=f"text file {str(path)!r}")


def eval_decoder(model_name: str, recipe: str, text: str, *, ctx: int, max_windows: int | None,
                 checkpoint: str | None = None, progress: bool = True) -> dict:
    t0 = time.perf_counter()
    if not pathlib.Path(text).is_file():
        raise FileNotFoundError(f"text file {text!r} does not exist")
    model, tok, _ = load_model(model_name, recipe, checkpoint, progress=progress)
    r = perplexity_on(model, tok, text, ctx=ctx, max_windows=max_windows, progress=progress)
    return {"model": model_name, "recipe": recipe, "ppl": r.ppl, "nll": r.nll, "ctx": r.ctx,
            "windows": r.n_windows, "total_windows": r.total_windows, "tokens": r.n_tokens,
            **size_keys(model), "seconds": round(time.perf_counter() - t0, 2)}


def encoder_scores(model, tok, float_emb: np.ndarray | None = None) -> dict:
    docs, sims = data.lee_docs()
    emb = evaluate.embed_texts(model, tok, docs)
    r = evaluate.similarity_correlation(emb, np.asarray(sims))
    out = {"pearson": r.pearson, "spearman": r.spearman, "pairs": r.n_pairs}
    if float_emb is not None:
        out["cosine_vs_float"] = evaluate.mean_cosine(emb, float_emb)
    return out, emb


def eval_encoder(model_name: str, recipe: str, *, checkpoint: str | None = None, progress: bool = True) -> dict:
    t0 = time.perf_counter()
    model, tok, fmodel = load_model(model_name, recipe, checkpoint, progress=progress)
    docs, _ = data.lee_docs()
    float_emb = evaluate.embed_texts(fmodel, tok, docs)
    scores, _ = encoder_scores(model, tok, float_emb)
    return {"model": model_name, "recipe": recipe, "ppl": None, **scores, **size_keys(model),
            "seconds": round(time.perf_counter() - t0, 2)}
