"""`QTensor`, the quantized array, and the pure `quantize` / `dequantize` transforms.

A QTensor is a pytree (arrays are children; format, logical shape, axis, layout and the
paired activation format are static) so it passes through `jit`, `vmap`, `tree_map`,
Orbax and Flax NNX like any array.

Invariant (the one definition lives in `pallas_kernels.blocks`):

    dequantize(q) == (decode(values) - zeros) * broadcast(scales) * global_scale

with `zeros` only for asymmetric formats and `global_scale` only for two-level ones
(NVFP4). Multiply, never divide: a scale is the size of one step of the element grid.

Axes: `axis` is the contraction axis K, -2 for a (..., K, N) weight and -1 for (..., M, K)
activations. The storage `layout` ("kn" or "nk", see `pallas_kernels.blocks`) is where K
sits in memory; it defaults to K-first for weights and K-last for activations, and a weight
may be stored K-major ("nk") for fp8/int8 tensor cores. Neither changes the logical value.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lowbit_jax.formats import QuantFormat, check_pair, get_format
from pallas_kernels import blocks


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["values", "scales", "zeros", "global_scale"],
    meta_fields=["fmt", "shape", "axis", "layout", "act"],
)
@dataclasses.dataclass(frozen=True)
class QTensor:
    """A block-quantized array.

    Attributes:
      values: stored elements; uint8 with two 4-bit elements per byte for 4-bit formats.
      scales: one per block, `fmt.scale_dtype`.
      zeros: zero points (asymmetric formats) in the scale dtype, else None.
      global_scale: f32 per matrix (NVFP4), else None.
      fmt: the QuantFormat.
      shape: the logical shape (what `dequantize` returns); storage may be padded.
      axis: the contraction axis, -2 or -1.
      layout: "kn", "nk" or "mma" (`pallas_kernels.blocks`): where K sits in storage.
      act: the activation format this weight is multiplied with (recipes like w8a8), or None.
    """

    values: jax.Array
    scales: jax.Array
    zeros: jax.Array | None
    global_scale: jax.Array | None
    fmt: QuantFormat
    shape: tuple[int, ...]
    axis: int
    layout: str
    act: QuantFormat | None = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> jnp.dtype:
        """The element dtype (the logical dtype after `dequantize` is the caller's choice)."""
        return self.fmt.element_dtype

    @property
    def kn_shape(self) -> tuple[int, int]:
        """Logical (K, N) of the trailing matrix."""
        a, b = self.shape[-2:]
        return (a, b) if self.axis == -2 else (b, a)

    @property
    def block_kn(self) -> tuple[int, int]:
        """Concrete (block_k, block_n) with whole-axis blocks resolved against storage."""
        kp, np_ = self.padded_kn
        bk, bn = self.fmt.block
        return (bk or kp, bn or np_)

    @property
    def padded_kn(self) -> tuple[int, int]:
        a, b = self.values.shape[-2:]
        if self.layout in ("nk", "mma"):
            a, b = b, a
        if blocks.is_four_bit(self.fmt.element_dtype):
            a *= 2
        return a, b

    @property
    def nbytes(self) -> int:
        """Bytes actually stored (a 4-bit element counts half a byte)."""
        arrs = (self.values, self.scales, self.zeros, self.global_scale)
        return sum(int(a.size) * jnp.dtype(a.dtype).itemsize for a in arrs if a is not None)

    def validate(self) -> "QTensor":
        """Checks that the arrays agree with the static facts; raises naming what is wrong."""
        fmt = self.fmt
        want = blocks.storage_dtype(fmt.element_dtype)
        if self.values.dtype != want:
            raise ValueError(f"{fmt.name}: values.dtype={self.values.dtype}, expected {want}")
        if self.scales.dtype != fmt.scale_dtype:
            raise ValueError(f"{fmt.name}: scales.dtype={self.scales.dtype}, expected {fmt.scale_dtype}")
        if self.axis not in (-2, -1) or self.layout not in blocks.LAYOUTS:
            raise ValueError(f"axis={self.axis} must be -2 or -1 and layout={self.layout!r} one of {blocks.LAYOUTS}")
        if self.values.ndim != len(self.shape) or self.values.shape[:-2] != tuple(self.shape[:-2]):
            raise ValueError(f"values.shape={self.values.shape} does not match logical shape={self.shape}")
        k, n = self.kn_shape
        kp, np_ = self.padded_kn
        bk, bn = self.block_kn
        if kp < k or np_ < n or kp % bk or np_ % bn:
            raise ValueError(f"storage (K, N)=({kp}, {np_}) does not hold logical ({k}, {n}) in blocks ({bk}, {bn})")
        sk, sn = (kp // bk, np_ // bn)
        want_s = (sk, sn) if self.layout == "kn" else (sn, sk)
        if tuple(self.scales.shape[-2:]) != want_s:
            raise ValueError(f"scales.shape={self.scales.shape}: trailing dims should be {want_s}")
        if (self.zeros is not None) != (not fmt.symmetric):
            raise ValueError(f"{fmt.name}: zeros must be present exactly for asymmetric formats")
        if self.zeros is not None and self.zeros.shape != self.scales.shape:
            raise ValueError(f"zeros.shape={self.zeros.shape} != scales.shape={self.scales.shape}")
        if (self.global_scale is None) != (fmt.scale_rule != "nvfp4"):
            raise ValueError(f"{fmt.name}: global_scale must be present exactly for two-level formats")
        return self


def _normalize_axis(shape: tuple[int, ...], axis: int) -> int:
    nd = len(shape)
    if not -nd <= axis < nd:
        raise ValueError(f"{axis=} is out of range for an array of shape {shape}")
    a = axis - nd if axis >= 0 else axis
    if a not in (-2, -1):
        raise ValueError(
            f"{axis=} of shape {shape}: the contraction axis must be one of the last two "
            f"(use jnp.moveaxis first)")
    return a


def quantize(
    x: jax.Array,
    fmt: QuantFormat | str,
    axis: int = -2,
    *,
    layout: str | None = None,
    act: QuantFormat | str | None = None,
) -> QTensor:
    """Quantizes a float array along its contraction `axis` into `fmt`.

    Args:
      x: float array of rank >= 2 (leading axes are batch axes).
      fmt: a QuantFormat (or its registered name).
      axis: the contraction axis: -2 for a (..., K, N) weight, -1 for (..., M, K) inputs.
      layout: storage order "kn" or "nk" (default): where K sits in storage. "nk" keeps each
        output channel's codes contiguous along K, which the GPU kernels load fastest.
      act: activation format to pair with (recorded as static metadata for `qmatmul`).

    Pure and jit-able (no host sync). K and N that are not multiples of the block are
    zero-padded in storage; `dequantize` returns exactly `x.shape`.
    """
    fmt = get_format(fmt)
    act = None if act is None else get_format(act)
    if act is not None:
        check_pair(fmt, act)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"quantize needs a real floating-point array, got dtype={x.dtype}")
    shape = tuple(x.shape)
    if x.ndim < 2:
        raise ValueError(
            f"quantize needs an array of rank >= 2 (a matrix or a batch of them), got "
            f"shape={shape}; for a vector use x[None, :] with axis=-1")
    ax = _normalize_axis(shape, axis)
    if 0 in shape:
        raise ValueError(f"cannot quantize an array with a zero-sized axis: shape={shape}")
    layout = layout or "nk"
    if layout not in blocks.LAYOUTS:
        raise ValueError(f"{layout=} must be one of {blocks.LAYOUTS}")
    if layout == "mma" and (act is not None or fmt.kind == "activation"):
        raise ValueError("layout 'mma' stores weights for the weight-only decode GEMV; weights "
                         "met by quantized activations (and activations) use 'nk' or 'kn'")
    if fmt.kind == "activation" and ax == -1 and layout == "nk":
        # Activations in their natural (..., M, K) order: the kernels' dynamic quantizer
        # is the definition, so qmatmul's reference and its kernels agree bit for bit.
        values, scales = _quantize_rows(x, fmt)
        zeros = gscale = None
    else:
        w = x if ax == -2 else jnp.swapaxes(x, -1, -2)  # (..., K, N)
        values, scales, zeros, gscale = _quantize_blocks(w, fmt, layout)
    return QTensor(values=values, scales=scales, zeros=zeros, global_scale=gscale,
                   fmt=fmt, shape=shape, axis=ax, layout=layout, act=act)


@functools.partial(jax.jit, static_argnames=("fmt", "layout"))
def _quantize_blocks(w, fmt: QuantFormat, layout: str):
    return blocks.quantize_blocks(
        w, element_dtype=fmt.element_dtype, scale_dtype=fmt.scale_dtype,
        block_k=fmt.block[0], block_n=fmt.block[1], scale_rule=fmt.scale_rule, layout=layout)


@functools.partial(jax.jit, static_argnames=("fmt",))
def _quantize_rows(x, fmt: QuantFormat):
    from pallas_kernels.act_quant.reference import quantize_rows
    return quantize_rows(x, element_dtype=fmt.element_dtype, block_k=fmt.block[0],
                         scale_dtype=fmt.scale_dtype,
                         mx_round="up" if fmt.scale_rule == "mx-up" else "floor")


def dequantize(q: QTensor, dtype=jnp.float32) -> jax.Array:
    """The logical array of `q` in `dtype` (exactly `q.shape`)."""
    if not isinstance(q, QTensor):
        raise TypeError(f"dequantize needs a QTensor, got {type(q).__name__}")
    k, n = q.kn_shape
    bk, bn = q.block_kn
    # Stored order, rounded once to dtype (`blocks.dequantize_as`: a word-wise pass for bf16/f16).
    w = blocks.dequantize_as(
        q.values, q.scales, q.zeros, q.global_scale, dtype=dtype, element_dtype=q.fmt.element_dtype,
        block_k=bk, block_n=bn, layout=q.layout, k=k, n=n)
    if (q.layout == "kn") == (q.axis == -1):  # (k, n) wanted as (n, k), or the reverse
        w = jnp.swapaxes(w, -1, -2)
    return w.reshape(q.shape)


def numpy_codes(q: QTensor) -> np.ndarray:
    """The logical elements as an ml_dtypes/numpy array of the element dtype, in storage
    order with padding (for inspection and packing tests)."""
    k_axis = -2 if q.layout == "kn" else -1
    v = q.values
    if blocks.is_four_bit(q.fmt.element_dtype):
        v = blocks.codes_to_float(blocks.unpack_nibbles(v, k_axis), q.fmt.element_dtype)
    return np.asarray(v).astype(q.fmt.element_dtype)
