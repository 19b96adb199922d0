"""Quantize and dequantize whole parameter trees by recipe and ordered path rules.

A parameter's *path* is its tree path joined with "/" (e.g. "layers/3/attn/q/kernel"):
dict keys, sequence indices, dataclass fields and NNX state keys all become path parts.
Rules are `(regex, target)` pairs tried in order with `re.search`; the first match wins.
`target` is a QuantFormat, a format name, or "skip". Leaves no rule matches get the
recipe's weight format, except the default skips below. The float model and its quantized
twin keep the same paths: only leaf types change (Array -> QTensor).

Default skips (so a recipe quantizes the matmul weights and nothing else): leaves of rank
< 2, non-float leaves, and paths that look like embeddings, norms or biases.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from lowbit_jax.formats import QuantFormat, Recipe, check_pair, get_format, get_recipe
from lowbit_jax.qtensor import QTensor, dequantize, quantize
from pallas_kernels import blocks

log = logging.getLogger(__name__)

SKIP = "skip"
DEFAULT_SKIP = re.compile(r"(^|/)[^/]*(embed|embedding|wte|wpe|norm|ln_|layernorm|bias)[^/]*(/|$)", re.IGNORECASE)

Rule = tuple[str, "QuantFormat | str"]


def path_str(path) -> str:
    """'a/0/b' for a tree path of dict keys, indices and attributes."""
    parts = []
    for p in path:
        for attr in ("key", "idx", "name"):
            if hasattr(p, attr):
                parts.append(str(getattr(p, attr)))
                break
        else:
            parts.append(str(p))
    return "/".join(parts)


@dataclasses.dataclass(frozen=True)
class QuantizeReport:
    """What `quantize_params` did: formats per path, bytes before/after, unused rules."""

    formats: dict[str, str]
    skipped: tuple[str, ...]
    unmatched_rules: tuple[str, ...]
    bytes_before: int
    bytes_after: int

    def __str__(self) -> str:
        ratio = self.bytes_before / max(self.bytes_after, 1)
        return (f"quantized {len(self.formats)} leaves, kept {len(self.skipped)} in float; "
                f"{self.bytes_before / 2**20:.1f} MiB -> {self.bytes_after / 2**20:.1f} MiB ({ratio:.2f}x)"
                + (f"; rules that matched nothing: {list(self.unmatched_rules)}" if self.unmatched_rules else ""))


def _leaf_bytes(x) -> int:
    if isinstance(x, QTensor):
        return x.nbytes
    if hasattr(x, "dtype") and hasattr(x, "shape"):
        return int(math.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
    return 0


def _compile_rules(rules: Sequence[Rule] | None) -> list[tuple[re.Pattern, QuantFormat | None, str]]:
    out = []
    for rule in rules or ():
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2):
            raise ValueError(f"a rule must be a (regex, format-or-'skip') pair, got {rule!r}")
        pattern, target = rule
        try:
            rx = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"rule regex {pattern!r} does not compile: {e}") from None
        fmt = None if target == SKIP else get_format(target)
        if fmt is not None and fmt.kind != "weight":
            raise ValueError(f"rule {pattern!r} targets {fmt.name}, which is an activation format")
        out.append((rx, fmt, pattern))
    return out


def quantize_params(
    params: Any,
    recipe: Recipe | str,
    rules: Sequence[Rule] | None = None,
    *,
    return_report: bool = False,
    progress: bool | None = None,
):
    """Quantizes every matmul weight of `params` (any pytree: dict, NNX state, ...).

    Args:
      params: a pytree of arrays; weights are (..., K, N) and quantized along K (-2).
      recipe: a Recipe or its name, or "float" (returns `params` unchanged).
      rules: ordered (regex, format | format name | "skip") pairs on the path.
      return_report: also return a `QuantizeReport`.
      progress: show a tqdm bar (default: when the tree holds more than 64 MiB).

    Raises ValueError naming the path of a leaf holding NaN or Inf (a check on values, so
    it runs on concrete arrays; under `jit`/`eval_shape` only shapes are seen).
    Returns the tree with QTensor leaves (and the report if asked).
    """
    if recipe == "float":  # the identity; the report lists every leaf as kept
        size = sum(_leaf_bytes(x) for x in jax.tree_util.tree_leaves(params))
        paths = tuple(path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params))
        rep = QuantizeReport({}, paths, (), size, size)
        return (params, rep) if return_report else params
    recipe = get_recipe(recipe)
    compiled = _compile_rules(rules)
    used = [False] * len(compiled)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params, is_leaf=lambda x: isinstance(x, QTensor))
    before = sum(_leaf_bytes(x) for _, x in leaves)
    if progress is None:
        progress = before > 64 * 2**20
    out, formats, skipped = [], {}, []
    for path, x in tqdm(leaves, desc=f"quantize {recipe.name}", disable=not progress, unit="leaf"):
        p = path_str(path)
        fmt = _choose(p, x, recipe, compiled, used)
        if fmt is None:
            out.append(x)
            skipped.append(p)
            continue
        if not isinstance(x, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(x))):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x, np.float32))))
            raise ValueError(f"parameter {p!r} holds {bad} NaN/Inf values; refusing to quantize it")
        if recipe.act is not None and fmt is not recipe.weight:
            try:
                check_pair(fmt, recipe.act)
            except ValueError as e:
                raise ValueError(f"parameter {p!r}: a rule chose {fmt.name}, which recipe "
                                 f"{recipe.name} cannot use with its activations: {e}") from None
        out.append(quantize(x, fmt, axis=-2, layout=_layout_for(p, fmt, recipe.layout), act=recipe.act))
        formats[p] = fmt.name
    unmatched = tuple(pat for (_, _, pat), u in zip(compiled, used) if not u)
    for pat in unmatched:
        log.warning("quantize_params: rule %r matched no parameter", pat)
    tree = jax.tree_util.tree_unflatten(treedef, out)
    report = QuantizeReport(formats, tuple(skipped), unmatched, before, sum(_leaf_bytes(x) for x in out))
    log.info("quantize_params(%s): %s", recipe.name, report)
    return (tree, report) if return_report else tree


def _layout_for(p: str, fmt: QuantFormat, layout: str) -> str:
    """The recipe's layout, except "mma" for a format the tensor-core GEMV does not read (a
    rule's other element dtype, or scale blocks shorter than its chunk): stored "nk" (the
    same numbers; only decode speed differs)."""
    if layout != "mma":
        return layout
    if (why := blocks.mma_format_reason(fmt.element_dtype, fmt.block[0], fmt.scale_dtype, fmt.block[1])) is not None:
        log.info("quantize_params: %r (%s) stored 'nk': %s", p, fmt.name, why)
        return "nk"
    return "mma"


def _choose(p: str, x, recipe: Recipe, compiled, used) -> QuantFormat | None:
    for i, (rx, fmt, _) in enumerate(compiled):
        if rx.search(p):
            used[i] = True
            if fmt is not None and not _quantizable(x):
                raise ValueError(f"rule {compiled[i][2]!r} asks to quantize {p!r}, which is not a float array of rank >= 2")
            return fmt
    if not _quantizable(x) or DEFAULT_SKIP.search(p):
        return None
    return recipe.weight


def _quantizable(x) -> bool:
    return (not isinstance(x, QTensor) and hasattr(x, "dtype") and getattr(x, "ndim", 0) >= 2
            and jnp.issubdtype(x.dtype, jnp.floating))


def dequantize_params(params: Any, dtype=None) -> Any:
    """Replaces every QTensor leaf by its dequantized array (`dtype`, default float32)."""
    return jax.tree_util.tree_map(
        lambda x: dequantize(x, dtype or jnp.float32) if isinstance(x, QTensor) else x,
        params, is_leaf=lambda x: isinstance(x, QTensor))
