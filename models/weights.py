"""Weight import: GGUF (llama.cpp) and Hugging Face safetensors -> NNX models in f32.

GGUF: every tensor is dequantized to f32 with `gguf.quants.dequantize`; that f32 model is the
float baseline all recipes are compared against. GGUF stores a matrix as (out, in) rows in
numpy order; our QDense kernels are (in, out), hence the transposes.

The Q/K row permutation: llama.cpp's converter reorders the rows of attn_q / attn_k so that
RoPE's rotated pairs are adjacent (GPT-J "interleaved" layout): per head, rows
[0, D/2, 1, D/2+1, ...]. Our RoPE is rotate-half (pairs i and i + D/2, the Hugging Face
layout), so `unpermute_qk` puts the rows back. `permute_qk` is its inverse (the converter's
own function), kept for the round-trip test.

Safetensors: the Hugging Face BERT layout (encoder.layer.{i}.attention.self.query.weight,
...) and the Llama layout (model.layers.{i}.self_attn.q_proj.weight, ...); (out, in) there too.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from models.bert import Bert
from models.config import BertConfig, LlamaConfig, get_config
from models.llama import Llama


def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Rotate-half (HF) rows -> interleaved (GGUF) rows. w (n_heads * D, in)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Interleaved (GGUF) rows -> rotate-half (HF) rows; inverse of `permute_qk`."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _model_class(cfg):
    return Llama if isinstance(cfg, LlamaConfig) else Bert


def abstract_model(cfg):
    """The model for `cfg` with ShapeDtypeStruct leaves (no memory, no random init)."""
    return nnx.eval_shape(lambda: _model_class(cfg)(cfg, rngs=nnx.Rngs(0)))


def build_model(cfg, pure: dict | None = None, *, seed: int = 0):
    """An NNX model for `cfg`; with `pure` (a nested dict of arrays in the model's state layout)
    its parameters are taken from there instead of a random init (no random init is run)."""
    if pure is None:
        return _model_class(cfg)(cfg, rngs=nnx.Rngs(seed))
    graphdef, state = nnx.split(abstract_model(cfg))
    want = nnx.to_pure_dict(state)
    _check_same_tree(want, pure)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))  # copies numpy to device
    return nnx.merge(graphdef, state)


def _check_same_tree(want: dict, got: dict, prefix: str = "") -> None:
    if not isinstance(want, dict):
        got_shape = tuple(getattr(got, "shape", np.shape(got)))
        if tuple(want.shape) != got_shape:
            raise ValueError(f"{prefix}: expected shape {tuple(want.shape)}, got {got_shape}")
        return
    if not isinstance(got, dict) or set(want) != set(got):
        missing = set(want) - set(got if isinstance(got, dict) else {})
        extra = set(got if isinstance(got, dict) else {}) - set(want)
        raise ValueError(f"parameter tree mismatch at {prefix or '<root>'}: {missing=}, {extra=}")
    for k in want:
        _check_same_tree(want[k], got[k], f"{prefix}.{k}" if prefix else str(k))


# ----------------------------------------------------------------------------- GGUF

def read_gguf(path: str | pathlib.Path):
    import gguf
    return gguf.GGUFReader(str(path))


def gguf_field(reader, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_llama_config(reader, name: str = "smollm2-135m") -> LlamaConfig:
    """The preset `name`, checked against the GGUF header (a mismatch raises, naming both)."""
    arch = gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(f"GGUF architecture {arch!r} is not supported (only 'llama')")
    cfg = get_config(name)
    emb = next(t for t in reader.tensors if t.name == "token_embd.weight")
    found = dict(
        n_layers=gguf_field(reader, "llama.block_count"), d_model=gguf_field(reader, "llama.embedding_length"),
        d_ff=gguf_field(reader, "llama.feed_forward_length"), n_heads=gguf_field(reader, "llama.attention.head_count"),
        n_kv_heads=gguf_field(reader, "llama.attention.head_count_kv"), vocab_size=int(emb.shape[-1]),
        rope_theta=float(gguf_field(reader, "llama.rope.freq_base", 10000.0)))
    for k, v in found.items():
        if not np.isclose(getattr(cfg, k), v):
            raise ValueError(f"GGUF header says {k}={v} but preset {name!r} has {getattr(cfg, k)}")
    return cfg


def load_gguf_llama(path: str | pathlib.Path, name: str = "smollm2-135m", *, progress: bool = True):
    """(cfg, pure param dict in f32) from a llama-architecture GGUF file."""
    from gguf.quants import dequantize
    reader = read_gguf(path)
    cfg = gguf_llama_config(reader, name)
    tensors = {}
    for t in tqdm(reader.tensors, desc="dequantize GGUF", disable=not progress, leave=False):
        tensors[t.name] = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(
            tuple(int(s) for s in reversed(t.shape)))
    layers = {}
    for i in range(cfg.n_layers):
        g = lambda n: tensors.pop(f"blk.{i}.{n}.weight")
        q = unpermute_qk(g("attn_q"), cfg.n_heads)
        k = unpermute_qk(g("attn_k"), cfg.n_kv_heads)
        layers[i] = {
            "attn_norm": {"scale": g("attn_norm")},
            "mlp_norm": {"scale": g("ffn_norm")},
            "attn": {"q": {"kernel": q.T}, "k": {"kernel": k.T},
                     "v": {"kernel": g("attn_v").T}, "o": {"kernel": g("attn_output").T}},
            "mlp": {"gate": {"kernel": g("ffn_gate").T}, "up": {"kernel": g("ffn_up").T},
                    "down": {"kernel": g("ffn_down").T}},
        }
    pure = {"embed": {"embedding": tensors.pop("token_embd.weight")}, "layers": layers,
            "final_norm": {"scale": tensors.pop("output_norm.weight")}}
    if "output.weight" in tensors:
        if cfg.tie_embeddings:
            raise ValueError("GGUF has output.weight but the preset ties embeddings")
        pure["lm_head"] = {"kernel": tensors.pop("output.weight").T}
    tensors.pop("rope_freqs.weight", None)
    if tensors:
        raise ValueError(f"unused GGUF tensors: {sorted(tensors)[:8]}")
    return cfg, pure


# ----------------------------------------------------------------------------- safetensors

def load_hf_bert(model_dir: str | pathlib.Path, name: str = "minilm-l6"):
    """(cfg, pure param dict) from a Hugging Face BERT directory (config.json + model.safetensors)."""
    from safetensors.numpy import load_file
    model_dir = pathlib.Path(model_dir)
    hf = json.loads((model_dir / "config.json").read_text())
    cfg = get_config(name)
    if not isinstance(cfg, BertConfig):
        raise ValueError(f"preset {name!r} is not a BERT encoder")
    for ours, theirs in [("d_model", "hidden_size"), ("n_layers", "num_hidden_layers"),
                         ("n_heads", "num_attention_heads"), ("d_ff", "intermediate_size"),
                         ("vocab_size", "vocab_size"), ("max_len", "max_position_embeddings")]:
        if getattr(cfg, ours) != hf[theirs]:
            raise ValueError(f"config.json says {theirs}={hf[theirs]} but preset {name!r} has {ours}={getattr(cfg, ours)}")
    if hf.get("hidden_act") != "gelu":
        raise ValueError(f"hidden_act {hf.get('hidden_act')!r} is not supported (only exact 'gelu')")
    t = {k.removeprefix("bert."): v.astype(np.float32) for k, v in load_file(model_dir / "model.safetensors").items()}
    dense = lambda p: {"kernel": t.pop(p + ".weight").T, "bias": t.pop(p + ".bias")}
    norm = lambda p: {"scale": t.pop(p + ".weight"), "bias": t.pop(p + ".bias")}
    layers = {}
    for i in range(cfg.n_layers):
        p = f"encoder.layer.{i}."
        layers[i] = {
            "q": dense(p + "attention.self.query"), "k": dense(p + "attention.self.key"),
            "v": dense(p + "attention.self.value"), "o": dense(p + "attention.output.dense"),
            "attn_norm": norm(p + "attention.output.LayerNorm"),
            "up": dense(p + "intermediate.dense"), "down": dense(p + "output.dense"),
            "mlp_norm": norm(p + "output.LayerNorm"),
        }
    pure = {"embed": {"embedding": t.pop("embeddings.word_embeddings.weight")},
            "pos_embed": {"embedding": t.pop("embeddings.position_embeddings.weight")},
            "type_embed": {"embedding": t.pop("embeddings.token_type_embeddings.weight")},
            "embed_norm": norm("embeddings.LayerNorm"), "layers": layers}
    leftover = [k for k in t if not k.startswith(("pooler.", "embeddings.position_ids"))]
    if leftover:
        raise ValueError(f"unused safetensors tensors: {leftover[:8]}")
    return cfg, pure


def hf_llama_to_pure(t: dict[str, np.ndarray], cfg: LlamaConfig) -> dict:
    """Hugging Face Llama layout (model.layers.{i}.self_attn.q_proj.weight, ...) -> pure dict."""
    t = dict(t)
    w = lambda p: np.asarray(t.pop(p + ".weight"), np.float32)
    layers = {}
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        layers[i] = {
            "attn_norm": {"scale": w(p + "input_layernorm")},
            "mlp_norm": {"scale": w(p + "post_attention_layernorm")},
            "attn": {n: {"kernel": w(p + f"self_attn.{n}_proj").T} for n in "qkvo"},
            "mlp": {n: {"kernel": w(p + f"mlp.{n}_proj").T} for n in ("gate", "up", "down")},
        }
    pure = {"embed": {"embedding": w("model.embed_tokens")}, "layers": layers,
            "final_norm": {"scale": w("model.norm")}}
    if not cfg.tie_embeddings:
        pure["lm_head"] = {"kernel": w("lm_head").T}
    t.pop("lm_head.weight", None)
    if t:
        raise ValueError(f"unused safetensors tensors: {sorted(t)[:8]}")
    return pure


def load_hf_llama(path: str | pathlib.Path, name: str):
    """(cfg, pure param dict) from a Hugging Face Llama safetensors file (one shard)."""
    from safetensors.numpy import load_file
    cfg = get_config(name)
    return cfg, hf_llama_to_pure(load_file(str(path)), cfg)
