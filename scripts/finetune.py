"""`lowbit-jax finetune`: train a few steps, then the train -> serve path end to end.

1. Fine-tune the float model for `steps` AdamW steps (optax, `nnx.Optimizer`) on windows of a
   text file (next-token cross-entropy).
2. Save an Orbax training checkpoint: model parameters AND optimizer state (moments, count),
   i.e. what a job needs to resume.
3. Convert: restore the training checkpoint, drop the optimizer state, quantize the
   parameters by recipe and save an inference checkpoint (`lowbit_jax.save`, with model and
   recipe in its metadata).
4. Restore the inference checkpoint into the model graph and generate from it.
"""

from __future__ import annotations

import pathlib
import shutil
import time

import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from models import quant
from models.generate import SamplingParams
from scripts import data
from scripts.generate import generate_text


def _loss(model, batch):
    logits, _ = model(batch[:, :-1])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]).mean()


@nnx.jit
def _train_step(model, optimizer, batch):
    loss, grads = nnx.value_and_grad(_loss)(model, batch)
    optimizer.update(model, grads)
    return loss


def _stringify(tree):
    """Orbax wants string keys; NNX pure dicts use ints for list indices."""
    if isinstance(tree, dict):
        return {str(k): _stringify(v) for k, v in tree.items()}
    return tree


def train_and_convert(model, ids: np.ndarray, *, model_name: str, recipe: str, steps: int, lr: float,
                      seq_len: int, batch: int, out_dir: pathlib.Path, seed: int = 0, name: str = "text"):
    """Steps 1-4 above on token ids; returns (served quantized model, summary dict)."""
    quant.check_recipe(recipe)
    if steps < 1:
        raise ValueError(f"{steps=} must be >= 1")
    n_win = len(ids) // (seq_len + 1)
    if n_win < batch:
        raise ValueError(f"{name} has {len(ids)} tokens, fewer than {batch=} windows of {seq_len + 1}")
    windows = np.asarray(ids[: n_win * (seq_len + 1)], np.int32).reshape(n_win, seq_len + 1)
    rng = np.random.default_rng(seed)

    optimizer = nnx.Optimizer(model, optax.adamw(lr), wrt=nnx.Param)
    losses = []
    t0 = time.perf_counter()
    for _ in range(steps):
        b = jnp.asarray(windows[rng.choice(n_win, batch, replace=False)])
        losses.append(float(_train_step(model, optimizer, b)))
    train_s = time.perf_counter() - t0

    train_ckpt, infer_ckpt = out_dir / "train", out_dir / f"inference-{recipe}"
    shutil.rmtree(train_ckpt, ignore_errors=True)
    train_tree = {"params": _stringify(quant.model_state(model)),
                  "opt_state": _stringify(nnx.to_pure_dict(nnx.state(optimizer, nnx.OptState))),
                  "step": np.asarray(steps)}
    with ocp.StandardCheckpointer() as ck:
        ck.save(train_ckpt, train_tree)

    # Convert: read the training checkpoint back, keep only the parameters.
    with ocp.StandardCheckpointer() as ck:
        restored = ck.restore(train_ckpt)
    params = quant.int_keys(restored["params"])
    del restored
    qmodel, report = quant.quantize_model(quant.with_state(model, params), recipe)
    quant.save_model(infer_ckpt, qmodel, model_name=model_name, recipe=recipe,
                     extra={"finetune_steps": steps, "final_loss": losses[-1]})
    served = quant.restore_model(infer_ckpt, model_name=model_name, recipe=recipe, template=model)
    return served, {"model": model_name, "recipe": recipe, "steps": steps, "losses": losses,
                    "train_seconds": round(train_s, 2), "train_checkpoint": str(train_ckpt),
                    "inference_checkpoint": str(infer_ckpt), "bytes_before": report.bytes_before,
                    "bytes_after": report.bytes_after}


def run(*, model_name: str = "smollm2-135m", recipe: str = "w4a16", text: str = "lee", steps: int = 3,
        lr: float = 1e-5, seq_len: int = 128, batch: int = 2, out: str = "out/finetune",
        prompt: str = "What is the capital of France?", seed: int = 0) -> dict:
    quant.check_recipe(recipe)
    text_path = data.lee_background() if text == "lee" else pathlib.Path(text)
    if not text_path.is_file():
        raise FileNotFoundError(f"text file {str(text_path)!r} does not exist")
    model, tok = data.load_pretrained(model_name)
    ids = np.asarray(tok.encode(data.read_text(text_path)).ids, np.int32)
    served, summary = train_and_convert(
        model, ids, model_name=model_name, recipe=recipe, steps=steps, lr=lr, seq_len=seq_len,
        batch=batch, out_dir=pathlib.Path(out).absolute(), seed=seed, name=f"text {str(text_path)!r}")
    gen = generate_text(served, tok, [prompt], SamplingParams(max_new_tokens=32), chat=True)
    return {**summary, "prompt": prompt, "answer": gen["texts"][0]}
