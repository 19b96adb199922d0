"""The registry of quantization formats and recipes: every fact about a format lives here.

A *format* says how one tensor is stored: the element dtype, one scale of `scale_dtype`
per block of `block = (along K, along N)` elements, and the rule that picks the scale.
K is the contraction axis (axis -2 of a (K, N) weight, axis -1 of (M, K) activations);
`None` in `block` means the whole axis, so `(None, 1)` is per output channel (or per token
for activations) and `(None, None)` per tensor.

A *recipe* is what users type: a weight format plus, optionally, the activation format
that `x` is quantized to on the fly, plus the storage layout its kernels want.

Code passes `QuantFormat`/`Recipe` objects; names appear only at the edges (CLI flags,
checkpoint metadata) and become objects through `get_format` / `get_recipe`, which list the
valid names when they fail.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax.numpy as jnp

from pallas_kernels import blocks

ELEMENT_DTYPES = tuple(blocks.ELEMENT_MAX)
SCALE_DTYPES = tuple(
    jnp.dtype(d)
    for d in (jnp.float32, jnp.bfloat16, jnp.float16, jnp.float8_e8m0fnu, jnp.float8_e4m3fn)
)


class UnknownFormatError(KeyError, ValueError):
    """A format or recipe name that is not in the registry."""

    def __str__(self):  # KeyError would repr() the message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class QuantFormat:
    """Elements of `element_dtype`; one scale of `scale_dtype` per block of elements.

    Attributes:
      name: registry name (the public contract; stored in checkpoints).
      element_dtype: int8, int4, uint4, float8_e4m3fn or float4_e2m1fn.
      scale_dtype: float32, bfloat16, float16, float8_e8m0fnu (MX) or float8_e4m3fn (NVFP4).
      block: (along K, along N); None = the whole axis. Powers of two.
      scale_rule: how a block's scale is chosen; see `pallas_kernels.blocks.quantize_blocks`.
      kind: "weight" (quantized at conversion time) or "activation" (on the fly, axis -1).
    """

    name: str
    element_dtype: jnp.dtype
    scale_dtype: jnp.dtype
    block: tuple[int | None, int | None]
    scale_rule: Literal["absmax", "minmax", "mx-floor", "mx-up", "nvfp4"] = "absmax"
    kind: Literal["weight", "activation"] = "weight"

    def __post_init__(self):
        ed, sd = jnp.dtype(self.element_dtype), jnp.dtype(self.scale_dtype)
        object.__setattr__(self, "element_dtype", ed)
        object.__setattr__(self, "scale_dtype", sd)
        if ed not in ELEMENT_DTYPES:
            raise ValueError(f"{self.name}: element_dtype={ed} not in {[str(d) for d in ELEMENT_DTYPES]}")
        if sd not in SCALE_DTYPES:
            raise ValueError(f"{self.name}: scale_dtype={sd} not in {[str(d) for d in SCALE_DTYPES]}")
        if len(self.block) != 2:
            raise ValueError(f"{self.name}: block={self.block} must be (along K, along N)")
        for b in self.block:
            if b is not None and (not isinstance(b, int) or b < 1 or b & (b - 1)):
                raise ValueError(f"{self.name}: block={self.block}: {b} is not a power of two")
        if self.scale_rule not in blocks.SCALE_RULES:
            raise ValueError(f"{self.name}: scale_rule={self.scale_rule!r} not in {blocks.SCALE_RULES}")
        if (self.scale_rule == "minmax") != (ed == jnp.uint4):
            raise ValueError(f"{self.name}: uint4 elements go with scale_rule='minmax' and only they do")
        if self.scale_rule.startswith("mx") and sd != jnp.float8_e8m0fnu:
            raise ValueError(f"{self.name}: MX scale rules need float8_e8m0fnu scales, got {sd}")
        if self.scale_rule == "nvfp4" and (sd != jnp.float8_e4m3fn or ed != jnp.float4_e2m1fn):
            raise ValueError(f"{self.name}: nvfp4 needs float4_e2m1fn elements with float8_e4m3fn scales")
        if self.kind not in ("weight", "activation"):
            raise ValueError(f"{self.name}: kind={self.kind!r} must be 'weight' or 'activation'")

    @property
    def symmetric(self) -> bool:
        return self.scale_rule != "minmax"

    @property
    def bits(self) -> int:
        return 4 if blocks.is_four_bit(self.element_dtype) else 8

    def to_json(self) -> dict:
        """Every field, so a checkpoint can rebuild a user-defined format too."""
        return {
            "name": self.name,
            "element_dtype": self.element_dtype.name,
            "scale_dtype": self.scale_dtype.name,
            "block": list(self.block),
            "scale_rule": self.scale_rule,
            "kind": self.kind,
        }

    @classmethod
    def from_json(cls, d: dict) -> "QuantFormat":
        return cls(
            name=d["name"],
            element_dtype=jnp.dtype(d["element_dtype"]),
            scale_dtype=jnp.dtype(d["scale_dtype"]),
            block=tuple(d["block"]),
            scale_rule=d["scale_rule"],
            kind=d["kind"],
        )


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Recipe:
    """A weight format, the activation format paired with it (None: bf16/f16 activations)
    and the storage layout of weights: "nk" (K-major: each output channel's codes are
    contiguous, so decode kernels load 16-byte runs along K and the scaled GEMMs feed the
    tensor cores K-major), "mma" ("nk" rearranged into the tiles of the tensor-core decode
    GEMV, `blocks.mma_format_reason`: int8, int4, uint4, fp8, mxfp4, nvfp4; the measured best
    for decode on H200, BENCHMARKS.md; prefill reads an "nk" copy) or "kn"."""

    name: str
    weight: QuantFormat
    act: QuantFormat | None = None
    layout: Literal["kn", "nk", "mma"] = "nk"

    def __post_init__(self):
        if self.weight.kind != "weight":
            raise ValueError(f"{self.name}: {self.weight.name} is not a weight format")
        if self.layout == "mma" and self.act is not None:
            raise ValueError(f"{self.name}: layout 'mma' is for weight-only recipes (the decode GEMV), "
                             f"not with activations {self.act.name}")
        if self.act is not None:
            check_pair(self.weight, self.act)


def check_pair(w: QuantFormat, act: QuantFormat) -> None:
    """Raises unless activations in `act` can meet weights in `w` in one scaled GEMM:
    same number family (int with int, float with float) and the same K blocking."""
    if act.kind != "activation":
        raise ValueError(f"{act.name} is not an activation format (kind={act.kind!r})")
    if w.scale_rule in ("nvfp4", "minmax"):
        raise ValueError(
            f"weight format {w.name} has {'a per-tensor scale' if w.scale_rule == 'nvfp4' else 'zero points'}; "
            f"activation format {act.name} needs a single-level symmetric weight format")
    w_int = jnp.issubdtype(w.element_dtype, jnp.integer)
    a_int = jnp.issubdtype(act.element_dtype, jnp.integer)
    if w_int != a_int or w.block[0] != act.block[0]:
        raise ValueError(
            f"weight format {w.name} (elements {w.element_dtype}, K block {w.block[0]}) does "
            f"not line up with activation format {act.name} (elements {act.element_dtype}, "
            f"K block {act.block[0]}): both must be integer or both float, with equal K blocks")


_F32, _BF16 = jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)
_I8, _I4, _U4 = jnp.dtype(jnp.int8), jnp.dtype(jnp.int4), jnp.dtype(jnp.uint4)
_E4M3, _E2M1, _E8M0 = (jnp.dtype(d) for d in (jnp.float8_e4m3fn, jnp.float4_e2m1fn, jnp.float8_e8m0fnu))


def _formats() -> dict[str, QuantFormat]:
    F = QuantFormat
    fs = [
        F(name="int8", element_dtype=_I8, scale_dtype=_F32, block=(None, 1)),
        F(name="fp8", element_dtype=_E4M3, scale_dtype=_F32, block=(None, 1)),
        F(name="fp8-tensor", element_dtype=_E4M3, scale_dtype=_F32, block=(None, None)),
        F(name="fp8-block128", element_dtype=_E4M3, scale_dtype=_F32, block=(128, 128)),
        F(name="int8-block32", element_dtype=_I8, scale_dtype=_F32, block=(32, 32)),
        F(name="mxfp8", element_dtype=_E4M3, scale_dtype=_E8M0, block=(32, 1), scale_rule="mx-floor"),
        F(name="mxfp8-up", element_dtype=_E4M3, scale_dtype=_E8M0, block=(32, 1), scale_rule="mx-up"),
        F(name="mxfp4", element_dtype=_E2M1, scale_dtype=_E8M0, block=(32, 1), scale_rule="mx-floor"),
        F(name="mxfp4-up", element_dtype=_E2M1, scale_dtype=_E8M0, block=(32, 1), scale_rule="mx-up"),
        F(name="nvfp4", element_dtype=_E2M1, scale_dtype=_E4M3, block=(16, 1), scale_rule="nvfp4"),
        # Activations: quantized along their last axis (K), one scale per token or per tile.
        F(name="act-int8-token", element_dtype=_I8, scale_dtype=_F32, block=(None, 1), kind="activation"),
        F(name="act-fp8-token", element_dtype=_E4M3, scale_dtype=_F32, block=(None, 1), kind="activation"),
        F(name="act-fp8-1x128", element_dtype=_E4M3, scale_dtype=_F32, block=(128, 1), kind="activation"),
        F(name="act-int8-1x32", element_dtype=_I8, scale_dtype=_F32, block=(32, 1), kind="activation"),
        F(name="act-mxfp8", element_dtype=_E4M3, scale_dtype=_E8M0, block=(32, 1), scale_rule="mx-floor",
          kind="activation"),
    ]
    for g in (32, 64, 128):
        fs.append(F(name=f"int4-g{g}", element_dtype=_I4, scale_dtype=_F32, block=(g, 1)))
        fs.append(F(name=f"uint4-g{g}", element_dtype=_U4, scale_dtype=_F32, block=(g, 1), scale_rule="minmax"))
    return {f.name: f for f in fs}


FORMATS: dict[str, QuantFormat] = _formats()


def _recipes() -> dict[str, Recipe]:
    f = FORMATS
    R = Recipe
    rs = [
        R(name="w8a16", weight=f["int8"], layout="mma"),
        R(name="w4a16", weight=f["int4-g128"], layout="mma"),
        R(name="w4a16-g32", weight=f["int4-g32"]),
        R(name="w4a16-g64", weight=f["int4-g64"]),
        R(name="w4a16-uint4", weight=f["uint4-g128"], layout="mma"),
        R(name="w4a16-uint4-g32", weight=f["uint4-g32"]),
        R(name="w4a16-uint4-g64", weight=f["uint4-g64"]),
        R(name="w8a8-int8", weight=f["int8"], act=f["act-int8-token"]),
        R(name="w8a8-fp8", weight=f["fp8"], act=f["act-fp8-token"]),
        R(name="fp8-block", weight=f["fp8-block128"], act=f["act-fp8-1x128"]),
        R(name="int8-block", weight=f["int8-block32"], act=f["act-int8-1x32"]),
        R(name="mxfp8", weight=f["mxfp8"], act=f["act-mxfp8"]),
        R(name="w8a16-fp8", weight=f["fp8"], layout="mma"),
        R(name="mxfp4", weight=f["mxfp4"], layout="mma"),
        R(name="mxfp4-a8", weight=f["mxfp4"], act=f["act-mxfp8"]),
        R(name="nvfp4", weight=f["nvfp4"], layout="mma"),
    ]
    return {r.name: r for r in rs}


RECIPES: dict[str, Recipe] = _recipes()


def get_format(name: str | QuantFormat) -> QuantFormat:
    """The registered format called `name` (a QuantFormat passes through)."""
    if isinstance(name, QuantFormat):
        return name
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        raise UnknownFormatError(f"unknown quantization format {name!r}; valid formats: {sorted(FORMATS)}") from None


def get_recipe(name: str | Recipe) -> Recipe:
    """The registered recipe called `name` (a Recipe passes through)."""
    if isinstance(name, Recipe):
        return name
    try:
        return RECIPES[name]
    except (KeyError, TypeError):
        raise UnknownFormatError(f"unknown recipe {name!r}; valid recipes: {sorted(RECIPES)}") from None


def register_format(fmt: QuantFormat) -> QuantFormat:
    """Adds a user-defined format (validated on construction); names must be new."""
    if fmt.name in FORMATS and FORMATS[fmt.name] != fmt:
        raise ValueError(f"a different format named {fmt.name!r} is already registered")
    FORMATS[fmt.name] = fmt
    return fmt
