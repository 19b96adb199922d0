"""`lowbit-jax generate` and `lowbit-jax bench`: text generation and decode throughput.

Throughput is measured on a second call with the same shapes (the first one compiles), and
counts every generated token of every batch row: tokens/s = batch * steps / seconds, where
the time covers prefill and decode (one jitted call, `block_until_ready` implied by reading
the tokens back).
"""

from __future__ import annotations

import time

from models import config, quant
from models.generate import GenerateError, SamplingParams, generate
from models.tokenize import chatml


def encode_prompts(tok, prompts: list[str], *, chat: bool) -> list[list[int]]:
    out = []
    for i, p in enumerate(prompts):
        if not p or not p.strip():
            raise GenerateError(f"prompt {i} is empty ({p!r})")
        text = chatml([{"role": "user", "content": p}]) if chat else p
        out.append(tok.encode(text).ids)
    return out


def generate_text(model, tok, prompts: list[str], params: SamplingParams, *, chat: bool,
                  timed: bool = False) -> dict:
    """{"texts": [...], "tokens": [...], "tokens_per_s": float | None, "seconds": float}."""
    ids = encode_prompts(tok, prompts, chat=chat)
    t0 = time.perf_counter()
    res = generate(model, ids, params)
    secs = time.perf_counter() - t0
    tps = None
    if timed:
        t0 = time.perf_counter()
        res = generate(model, ids, params)
        secs = time.perf_counter() - t0
        tps = len(ids) * res.steps / secs
    texts = [tok.decode(t, skip_special_tokens=True) for t in res.tokens]
    return {"texts": texts, "tokens": [len(t) for t in res.tokens], "steps": res.steps,
            "tokens_per_s": tps, "seconds": round(secs, 3)}


def bench(model_name: str, recipe: str, *, batch: int, prompt_len: int, new_tokens: int,
          dtype: str = "float32", seed: int = 0, impl: str = "auto", repeats: int = 3) -> dict:
    """Decode throughput on random weights of any preset (no download)."""
    import numpy as np
    cfg = config.get_config(model_name)
    quant.check_recipe(recipe)
    if not isinstance(cfg, config.LlamaConfig):
        raise ValueError(f"bench needs a decoder preset; {model_name!r} is an encoder")
    params = SamplingParams(max_new_tokens=new_tokens)
    t0 = time.perf_counter()
    model = quant.random_model(cfg, recipe, seed=seed, dtype=dtype, progress=True)
    quant.set_matmul(model, impl=impl)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    prompts = rng.integers(3, cfg.vocab_size, size=(batch, prompt_len)).tolist()
    no_stop = ()
    t0 = time.perf_counter()
    generate(model, prompts, params, stop_ids=no_stop)
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = generate(model, prompts, params, stop_ids=no_stop)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    stats = quant.weight_stats(model)
    return {"model": model_name, "recipe": recipe, "batch": batch, "prompt_len": prompt_len,
            "new_tokens": res.steps, "tokens_per_s": batch * res.steps / med, "seconds_median": med,
            "first_call_s": round(compile_s, 2), "build_s": round(build_s, 2),
            "weight_bytes": stats.total_bytes, "bits_per_weight": round(stats.bits_per_weight, 3),
            "dtype": dtype, "impl": impl}
