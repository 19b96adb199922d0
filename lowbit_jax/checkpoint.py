"""Self-describing, verified Orbax checkpoints of (quantized) parameter trees.

A checkpoint directory holds:
    arrays/                 an Orbax (StandardCheckpointer) item: a flat dict of arrays
    lowbit_manifest.json    written last: library version, user metadata, the tree's
                            structure, and per leaf its kind, format, logical shape, axis,
                            layout, and for every stored array its dtype, shape and SHA-256.

`restore(path)` needs no target: the manifest rebuilds the tree (nested dicts and lists;
QTensors with their formats, user-defined ones included). With a target (a tree of arrays
or of `jax.ShapeDtypeStruct`, e.g. from `jax.eval_shape`) the structure, shapes and formats
must match, and the first differing path is named. Every array is checked against its
digest, so a truncated, tampered or foreign checkpoint fails with a specific error. No
pickle anywhere: arrays go through Orbax/TensorStore, structure through JSON.

Dtypes TensorStore does not store natively (float8_*, float4_*) are written as their raw
bytes (uint8) and viewed back, so round trips are bit-exact for every format.

Saving over an existing checkpoint writes a new directory beside it and swaps it in; an
interrupted save leaves the previous checkpoint restorable (from `<path>.previous` during
the swap, which `restore` finds by itself).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from lowbit_jax.formats import QuantFormat
from lowbit_jax.params import path_str
from lowbit_jax.qtensor import QTensor

MANIFEST = "lowbit_manifest.json"
ARRAYS = "arrays"
SCHEMA = 1
_NATIVE = {"float32", "float64", "float16", "bfloat16", "int8", "uint8", "int16", "uint16",
           "int32", "uint32", "int64", "uint64", "bool"}


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, corrupt, foreign, or does not fit the target."""


def _version() -> str:
    from lowbit_jax import __version__
    return __version__


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).view(np.uint8).tobytes()).hexdigest()


def _to_storable(a) -> tuple[np.ndarray, dict]:
    a = np.asarray(a)
    info = {"dtype": a.dtype.name, "shape": list(a.shape), "sha256": _digest(a)}
    if a.dtype.name not in _NATIVE:
        a = a.view(np.uint8)
    return a, info


def _from_stored(a: np.ndarray, info: dict, where: str) -> np.ndarray:
    a = np.asarray(a)
    dt = jnp.dtype(info["dtype"])
    if a.dtype != dt:
        a = a.view(dt)
    if list(a.shape) != info["shape"]:
        raise CheckpointError(f"{where}: stored shape {list(a.shape)} != manifest shape {info['shape']}")
    if _digest(a) != info["sha256"]:
        raise CheckpointError(f"{where}: content digest mismatch (the checkpoint was modified or corrupted)")
    return a


# ---- tree structure as JSON ---------------------------------------------------------------

def _structure(tree, leaves_out: list) -> Any:
    """JSON skeleton of nested dicts/lists/tuples (after `_to_plain`); any other node is a
    leaf, recorded as {"leaf": index} with the leaf appended to `leaves_out`."""
    if tree is None:
        return {"none": True}
    if isinstance(tree, dict):
        return {"dict": [[_key_json(k), _structure(v, leaves_out)] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        return {"list" if isinstance(tree, list) else "tuple": [_structure(v, leaves_out) for v in tree]}
    leaves_out.append(tree)
    return {"leaf": len(leaves_out) - 1}


def _key_json(k):
    if isinstance(k, (str, int)) and not isinstance(k, bool):
        return k
    raise CheckpointError(f"dict key {k!r} of type {type(k).__name__} cannot be saved (use str or int keys)")


def _rebuild(skel, leaves: list) -> Any:
    if "leaf" in skel:
        return leaves[skel["leaf"]]
    if "none" in skel:
        return None
    if "dict" in skel:
        return {k: _rebuild(v, leaves) for k, v in skel["dict"]}
    items = [_rebuild(v, leaves) for v in skel.get("list", skel.get("tuple", []))]
    return items if "list" in skel else tuple(items)


def _to_plain(tree):
    """NNX State / other mappings -> dicts, recursively (QTensor leaves kept)."""
    if isinstance(tree, QTensor):
        return tree
    if hasattr(tree, "to_pure_dict"):
        tree = tree.to_pure_dict()
    if isinstance(tree, dict) or (hasattr(tree, "items") and not hasattr(tree, "shape")):
        return {k: _to_plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_plain(v) for v in tree)
    return tree


# ---- save ---------------------------------------------------------------------------------

def save(path: str | os.PathLike, tree: Any, *, metadata: dict | None = None) -> Path:
    """Saves `tree` (arrays and QTensors in dicts/lists/tuples or an NNX State) to `path`.

    `metadata` (JSON-serialisable) is stored in the manifest, e.g. model and recipe names.
    Refuses to overwrite a directory that is not a lowbit-jax checkpoint.
    """
    path = Path(path).absolute()
    if path.exists() and not (path / MANIFEST).is_file():
        if not path.is_dir() or any(path.iterdir()):
            raise CheckpointError(f"{path} exists and is not a lowbit-jax checkpoint; refusing to overwrite it")
    try:
        json.dumps(metadata or {})
    except TypeError as e:
        raise CheckpointError(f"metadata must be JSON-serialisable: {e}") from None
    leaves: list = []
    skel = _structure(_to_plain(tree), leaves)
    arrays, entries = {}, []
    for i, leaf in enumerate(leaves):
        entry = _leaf_entry(i, leaf, arrays)
        entries.append(entry)
    manifest = {"library": "lowbit-jax", "version": _version(), "schema": SCHEMA,
                "metadata": metadata or {}, "structure": skel, "leaves": entries}
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(tmp / ARRAYS, arrays)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _swap_in(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _leaf_entry(i: int, leaf, arrays: dict) -> dict:
    def put(name, a):
        stored, info = _to_storable(a)
        arrays[name] = stored
        return {**info, "key": name}

    if isinstance(leaf, QTensor):
        leaf.validate()
        e = {"kind": "qtensor", "format": leaf.fmt.to_json(), "shape": list(leaf.shape),
             "axis": leaf.axis, "layout": leaf.layout,
             "act": None if leaf.act is None else leaf.act.to_json(), "arrays": {}}
        for field in ("values", "scales", "zeros", "global_scale"):
            a = getattr(leaf, field)
            if a is not None:
                e["arrays"][field] = put(f"l{i:05d}_{field}", a)
        return e
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return {"kind": "array", "arrays": {"value": put(f"l{i:05d}", leaf)}}
    if isinstance(leaf, (bool, int, float, str)):
        return {"kind": "scalar", "value": leaf}
    raise CheckpointError(f"leaf {i} of type {type(leaf).__name__} cannot be saved")


def _swap_in(tmp: Path, path: Path) -> None:
    prev = path.with_name(path.name + ".previous")
    if path.exists():
        if prev.exists():
            shutil.rmtree(prev)  # stale: `path` is the intact one
        os.replace(path, prev)
    # Without `path`, a `.previous` left by an interrupted swap stays until the new one is in.
    os.replace(tmp, path)
    if prev.exists():
        shutil.rmtree(prev)


# ---- restore ------------------------------------------------------------------------------

def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the checkpoint at `path` (raises CheckpointError if there is none)."""
    path = _resolve(Path(path))
    try:
        m = json.loads((path / MANIFEST).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path / MANIFEST} is not valid JSON ({e}); the checkpoint is corrupt") from None
    if m.get("library") != "lowbit-jax" or "leaves" not in m:
        raise CheckpointError(f"{path} has a manifest that is not a lowbit-jax checkpoint's")
    if m.get("schema", 0) > SCHEMA:
        raise CheckpointError(f"{path} was written by a newer lowbit-jax (schema {m['schema']} > {SCHEMA})")
    return m


def _resolve(path: Path) -> Path:
    if (path / MANIFEST).is_file():
        return path
    prev = path.with_name(path.name + ".previous")
    if not path.exists() and (prev / MANIFEST).is_file():
        return prev  # a save was interrupted while swapping: the previous one is intact
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    if (path / "_CHECKPOINT_METADATA").exists() or (path / "_METADATA").exists() or any(path.glob("*/_METADATA")):
        raise CheckpointError(f"{path} is an Orbax checkpoint but not a lowbit-jax one (no {MANIFEST})")
    raise CheckpointError(f"{path} is not a lowbit-jax checkpoint (no {MANIFEST}); it may be incomplete")


def restore(path: str | os.PathLike, target: Any = None) -> Any:
    """Restores the tree saved at `path`; verifies every array's digest.

    With `target` (arrays, ShapeDtypeStructs or QTensors in the same structure), raises
    CheckpointError naming the first path whose structure, shape, dtype or format differs.
    """
    path = _resolve(Path(path).absolute())
    m = read_manifest(path)
    if not (path / ARRAYS).is_dir():
        raise CheckpointError(f"{path} is missing its {ARRAYS}/ directory; the checkpoint is incomplete")
    try:
        with ocp.StandardCheckpointer() as ckptr:
            stored = ckptr.restore(path / ARRAYS)
    except Exception as e:  # Orbax/TensorStore raise many types for damaged files
        raise CheckpointError(f"{path}: Orbax could not read the arrays ({type(e).__name__}: {e})") from e
    leaves = [_restore_leaf(i, e, stored, path) for i, e in enumerate(m["leaves"])]
    tree = _rebuild(m["structure"], leaves)
    if target is not None:
        check_matches(tree, target)
    return tree


def _restore_leaf(i: int, e: dict, stored: dict, path: Path):
    def get(info, where):
        if info["key"] not in stored:
            raise CheckpointError(f"{path}: array {info['key']!r} ({where}) is missing")
        return jnp.asarray(_from_stored(stored[info["key"]], info, f"{path}: {where}"))

    if e["kind"] == "scalar":
        return e["value"]
    if e["kind"] == "array":
        return get(e["arrays"]["value"], f"leaf {i}")
    if e["kind"] != "qtensor":
        raise CheckpointError(f"{path}: leaf {i} has unknown kind {e['kind']!r}")
    arrs = {f: get(info, f"leaf {i} {f}") for f, info in e["arrays"].items()}
    q = QTensor(values=arrs["values"], scales=arrs["scales"], zeros=arrs.get("zeros"),
                global_scale=arrs.get("global_scale"), fmt=QuantFormat.from_json(e["format"]),
                shape=tuple(e["shape"]), axis=e["axis"], layout=e["layout"],
                act=None if e["act"] is None else QuantFormat.from_json(e["act"]))
    try:
        return q.validate()
    except ValueError as err:
        raise CheckpointError(f"{path}: leaf {i} is inconsistent: {err}") from None


def check_matches(tree: Any, target: Any) -> None:
    """Raises CheckpointError naming the first path where `tree` and `target` differ."""
    is_leaf = lambda x: isinstance(x, QTensor)  # noqa: E731
    got = jax.tree_util.tree_flatten_with_path(_to_plain(tree), is_leaf=is_leaf)[0]
    want = jax.tree_util.tree_flatten_with_path(_to_plain(target), is_leaf=is_leaf)[0]
    gp = [path_str(p) for p, _ in got]
    wp = [path_str(p) for p, _ in want]
    for a, b in zip(gp, wp):
        if a != b:
            raise CheckpointError(f"checkpoint structure differs from the target at {a!r} (target has {b!r})")
    if len(gp) != len(wp):
        extra = gp[len(wp):] or wp[len(gp):]
        side = "checkpoint" if len(gp) > len(wp) else "target"
        raise CheckpointError(f"the {side} has extra leaves, first {extra[0]!r}")
    for p, (_, g), (_, w) in zip(gp, got, want):
        if isinstance(w, QTensor) or isinstance(g, QTensor):
            if not (isinstance(w, QTensor) and isinstance(g, QTensor)):
                raise CheckpointError(f"{p!r}: checkpoint has {type(g).__name__}, target has {type(w).__name__}")
            if (g.fmt, g.shape, g.layout, g.axis, g.act) != (w.fmt, w.shape, w.layout, w.axis, w.act):
                describe = lambda q: (f"{q.fmt.name} {q.shape} {q.layout}"  # noqa: E731
                                      f"{'' if q.act is None else ' x ' + q.act.name}")
                raise CheckpointError(f"{p!r}: checkpoint {describe(g)} != target {describe(w)}")
            continue
        if isinstance(g, (bool, int, float, str)):
            if isinstance(w, (bool, int, float, str)) or tuple(getattr(w, "shape", (None,))) == ():
                continue  # a Python scalar (jax.eval_shape makes it a 0-d struct)
        gs, ws = tuple(getattr(g, "shape", ())), tuple(getattr(w, "shape", ()))
        gd, wd = getattr(g, "dtype", type(g)), getattr(w, "dtype", type(w))
        if gs != ws or gd != wd:
            raise CheckpointError(f"{p!r}: checkpoint has {gd}{list(gs)}, target has {wd}{list(ws)}")
