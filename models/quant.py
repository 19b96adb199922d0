"""Quantize, save and restore whole NNX models by recipe.

A model is split into its graph (static) and its state; the state's pure dict (paths like
`layers/3/attn/q/kernel`) goes through `lowbit_jax.quantize_params`, which replaces the
matmul kernels by QTensors and leaves embeddings, norms and biases in float (its default
rules). The same graph merged with the new state is the quantized twin: QDense reads the
QTensor from the same `kernel` path and `qmatmul` dispatches on its type.

Checkpoints are `lowbit_jax.save` directories whose metadata names the model preset and the
recipe; `restore_model` refuses a checkpoint made for another model or recipe, naming both.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np
from flax import nnx

import lowbit_jax as lj
from models.config import get_config
from models.layers import QDense

FLOAT = "float"


class CheckpointMismatchError(ValueError):
    """A checkpoint was made for another model or recipe than the one asked for."""


def recipe_names() -> list[str]:
    return [FLOAT, *lj.RECIPES]


def check_recipe(name: str) -> str:
    """`name` if it is "float" or a registered recipe; else UnknownFormatError listing them."""
    if name != FLOAT:
        lj.get_recipe(name)
    return name


def model_state(model) -> dict:
    """The model's parameters as a pure nested dict (float arrays and/or QTensors)."""
    _, state = nnx.split(model)
    return nnx.to_pure_dict(state)


def with_state(model, pure: dict):
    """A copy of `model` whose parameters are taken from `pure` (same paths, any leaf type)."""
    graphdef, state = nnx.split(model)
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def quantize_model(model, recipe: str, rules=None, *, progress: bool | None = None):
    """(quantized twin of `model`, lowbit_jax.QuantizeReport). recipe "float" copies nothing.

    rules: ordered (regex, format | "skip") pairs on parameter paths, passed to
    `lowbit_jax.quantize_params` (e.g. `[("layers/0/", "skip")]` keeps the first block float).
    """
    check_recipe(recipe)
    pure, report = lj.quantize_params(model_state(model), recipe, rules, return_report=True,
                                      progress=progress)
    return with_state(model, pure), report


_KEEP = object()


def set_matmul(model, *, impl: str | None = None, act_format: Any = _KEEP) -> None:
    """Injects the matmul implementation (and optionally an activation format, None meaning
    "the one the QTensor records") into every QDense of `model`, in place."""
    for _, m in nnx.iter_modules(model):
        if isinstance(m, QDense):
            if impl is not None:
                m.impl = impl
            if act_format is not _KEEP:
                m.act_format = act_format


@dataclasses.dataclass(frozen=True, slots=True)
class WeightStats:
    total_bytes: int        # every parameter leaf
    linear_bytes: int       # QDense kernels only
    linear_params: int      # logical elements of QDense kernels

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.linear_bytes / max(self.linear_params, 1)


def weight_stats(model) -> WeightStats:
    total = linear = n = 0
    flat = jax.tree_util.tree_flatten_with_path(
        model_state(model), is_leaf=lambda x: isinstance(x, lj.QTensor))[0]
    for path, leaf in flat:
        b = leaf.nbytes if isinstance(leaf, lj.QTensor) else int(np.prod(leaf.shape)) * leaf.dtype.itemsize
        total += b
        if getattr(path[-1], "key", None) == "kernel":
            linear += b
            n += int(np.prod(leaf.shape))
    return WeightStats(total_bytes=total, linear_bytes=linear, linear_params=n)


def save_model(path: str | pathlib.Path, model, *, model_name: str, recipe: str, extra: dict | None = None):
    """Saves the model's parameters with {"model", "recipe"} metadata (Orbax via lowbit_jax)."""
    meta = {"kind": "inference", "model": model_name, "recipe": recipe, **(extra or {})}
    return lj.save(path, model_state(model), metadata=meta)


def check_checkpoint(path: str | pathlib.Path, *, model_name: str, recipe: str) -> dict:
    """The checkpoint's metadata; CheckpointMismatchError if it names another model or recipe.
    Reads only the manifest, so callers can fail fast before loading any weights."""
    meta = lj.read_manifest(path).get("metadata", {})
    for key, want in (("model", model_name), ("recipe", recipe)):
        if meta.get(key) != want:
            raise CheckpointMismatchError(
                f"checkpoint {str(path)!r} holds {key} {meta.get(key)!r}, not the requested {want!r}")
    return meta


def restore_model(path: str | pathlib.Path, *, model_name: str, recipe: str, template=None):
    """Restores a `save_model` checkpoint into a model of preset `model_name`.

    `template` is any model of that preset (its graph is reused, its weights are not read);
    without it an abstract one is built. Raises CheckpointMismatchError when the checkpoint's
    metadata names another model or recipe.
    """
    check_checkpoint(path, model_name=model_name, recipe=recipe)
    pure = lj.restore(path)
    if template is None:
        from models.weights import abstract_model
        template = abstract_model(get_config(model_name))
    return with_state(template, int_keys(pure))


def int_keys(tree):
    """JSON and Orbax round trips may turn the integer keys of layer lists into strings; undo that."""
    if isinstance(tree, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): int_keys(v) for k, v in tree.items()}
    return tree


def random_model(cfg, recipe: str = FLOAT, *, seed: int = 0, dtype=None, progress: bool = False):
    """A model of `cfg` with random weights, quantized by `recipe` one leaf at a time, so the
    peak memory is the quantized model plus one float leaf (speed runs of 8B/70B shapes).

    dtype: the float dtype of unquantized leaves and so of activations (default f32).
    """
    import jax.numpy as jnp
    from tqdm import tqdm
    from models.weights import abstract_model
    check_recipe(recipe)
    dtype = jnp.dtype(dtype or jnp.float32)
    abstract = abstract_model(cfg)
    flat = jax.tree_util.tree_flatten_with_path(model_state(abstract))
    key = jax.random.key(seed)
    leaves = []
    for i, (path, sds) in enumerate(tqdm(flat[0], desc="random weights", disable=not progress)):
        names = [str(getattr(p, "key", getattr(p, "idx", p))) for p in path]
        if names[-1] == "scale":
            leaf = jnp.ones(sds.shape, dtype)
        elif names[-1] == "bias":
            leaf = jnp.zeros(sds.shape, dtype)
        else:
            std = 0.02 if "embed" in names[-2] else 1.0 / np.sqrt(sds.shape[0])
            leaf = (std * jax.random.normal(jax.random.fold_in(key, i), sds.shape, jnp.float32)).astype(dtype)
            if recipe != FLOAT:
                nested = leaf
                for n in reversed(names):
                    nested = {n: nested}
                q = lj.quantize_params(nested, recipe, progress=False)
                for n in names:
                    q = q[n]
                leaf = q
        leaves.append(leaf)
    pure = jax.tree_util.tree_unflatten(flat[1], leaves)
    return with_state(abstract, pure)
