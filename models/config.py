"""Frozen model configs and their named presets.

A config holds every architecture fact a module needs; nothing is read from globals. Names
(`smollm2-135m`, ...) exist only here and at the CLI edge; `get_config(name)` turns a name
into an object and lists the valid names when it fails.

Glossary: `d_model` residual width; `n_heads` query heads; `n_kv_heads` key/value heads
(grouped-query attention when fewer than `n_heads`); `head_dim` per-head width; `d_ff` MLP
hidden width; `max_len` the longest sequence (prompt + generated) a KV cache is built for.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LlamaConfig:
    """Llama-family decoder: RMSNorm pre-norm, rotate-half RoPE, GQA, SwiGLU MLP."""
    name: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    rms_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    max_len: int = 2048
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    pad_id: int = 0

    def __post_init__(self):
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"{self.n_heads=} must be a multiple of {self.n_kv_heads=}")
        if self.head_dim % 2:
            raise ValueError(f"{self.head_dim=} must be even for rotate-half RoPE")

    @property
    def n_params(self) -> int:
        attn = self.d_model * self.head_dim * (2 * self.n_heads + 2 * self.n_kv_heads)
        mlp = 3 * self.d_model * self.d_ff
        emb = self.vocab_size * self.d_model * (1 if self.tie_embeddings else 2)
        return self.n_layers * (attn + mlp + 2 * self.d_model) + emb + self.d_model


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class BertConfig:
    """BERT encoder: learned positions, post-LayerNorm, exact (erf) GELU, mean pooling."""
    name: str
    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    max_len: int = 512
    type_vocab_size: int = 2
    ln_eps: float = 1e-12
    pad_id: int = 0

    def __post_init__(self):
        if self.d_model % self.n_heads:
            raise ValueError(f"{self.d_model=} must be a multiple of {self.n_heads=}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


ModelConfig = LlamaConfig | BertConfig

PRESETS: dict[str, ModelConfig] = {
    "smollm2-135m": LlamaConfig(
        name="smollm2-135m", vocab_size=49152, d_model=576, n_layers=30, n_heads=9,
        n_kv_heads=3, head_dim=64, d_ff=1536, rms_eps=1e-5, rope_theta=1e5,
        tie_embeddings=True, max_len=8192, bos_id=None, eos_ids=(2, 0), pad_id=2),
    "minilm-l6": BertConfig(
        name="minilm-l6", vocab_size=30522, d_model=384, n_layers=6, n_heads=12, d_ff=1536,
        max_len=512, ln_eps=1e-12, pad_id=0),
    # Speed-run shapes only (random weights): Meta Llama 3 8B / 70B.
    "llama3-8b": LlamaConfig(
        name="llama3-8b", vocab_size=128256, d_model=4096, n_layers=32, n_heads=32,
        n_kv_heads=8, head_dim=128, d_ff=14336, rms_eps=1e-5, rope_theta=5e5, max_len=8192,
        bos_id=128000, eos_ids=(128001, 128009), pad_id=128001),
    "llama3-70b": LlamaConfig(
        name="llama3-70b", vocab_size=128256, d_model=8192, n_layers=80, n_heads=64,
        n_kv_heads=8, head_dim=128, d_ff=28672, rms_eps=1e-5, rope_theta=5e5, max_len=8192,
        bos_id=128000, eos_ids=(128001, 128009), pad_id=128001),
}


class UnknownModelError(ValueError):
    pass


def get_config(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; valid: {sorted(PRESETS)}") from None


def tiny_llama(**overrides) -> LlamaConfig:
    """A few-thousand-parameter decoder for tests (GQA on, tied embeddings off)."""
    kw = dict(name="tiny-llama", vocab_size=64, d_model=32, n_layers=2, n_heads=4,
              n_kv_heads=2, head_dim=8, d_ff=48, rope_theta=1e4, max_len=64,
              eos_ids=(1,), pad_id=0)
    kw.update(overrides)
    return LlamaConfig(**kw)


def tiny_bert(**overrides) -> BertConfig:
    kw = dict(name="tiny-bert", vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_ff=48,
              max_len=32)
    kw.update(overrides)
    return BertConfig(**kw)
