"""Convolutions for per-sample kernels, and a small residual network; channels-last images.

Inputs are ``[B, H, W, C]`` (or ``[B, H, W]``, one channel). The models keep no running
statistics: batch norm would make an example's likelihood depend on the other examples of its
(sharded) batch and on the weight sample that last updated the statistics, breaking the exact,
layout-independent objective. The ResNet uses GroupNorm, which normalises each example alone.
Unless given ``convolution="xla"``, the ResNet convolves with :func:`patch_conv`; the parameters
are the same either way. :func:`conv_relu_pool` computes a convolution, ReLU and 2x2 max pooling
as one block (LeNet-5's, :mod:`samplepar.bnn.lenet`, for the inputs its channels-first layout
does not fit).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax.linen.dtypes import promote_dtype
from jax import lax

from samplepar.bnn.product import kernel_product

_CHANNELS_LAST = lax.ConvDimensionNumbers(
    lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2)
)


# Most output columns one view of ``patch_conv`` yields: wider views make fewer, larger patches
# and a denser matmul, at the price of the band's zeros. Vectorised over weight samples on a
# 2-core CPU, LeNet-5 (28x28) ran as fast with 12 as with 14, 16 or 28, and 1.4x faster than
# with 1 (im2col); the ResNet (32x32) was fastest with 12 or 14, slower with 8 or 16.
WIDTH_TILE = 12


def width_tile(out_width: int, kernel_width: int, stride: int) -> int:
    """Output columns per view of ``patch_conv``: the fewest views of at most ``WIDTH_TILE``
    columns, split evenly; 1 (plain im2col) for strided or 1-wide kernels, where views would
    not overlap and the band would only add zeros."""
    if stride != 1 or kernel_width == 1:
        return 1
    views = -(-out_width // WIDTH_TILE)
    return -(-out_width // views)


def banded_kernel(rhs: jax.Array, tile: int) -> jax.Array:
    """The kernel as the matrix that maps a view of ``span = tile + kw - 1`` input columns to
    ``tile`` output columns at stride 1 (``tile = 1``: any stride): ``[kh, kw, C_in, C_out] ->
    [kh * span * C_in, tile * C_out]``, row ``(i, v, c)`` and column ``(w, o)`` holding
    ``rhs[i, v - w, c, o]`` where ``0 <= v - w < kw`` and 0 elsewhere. Built by padding, so its
    entries are exact."""
    kh, kw, c_in, c_out = rhs.shape
    span = tile + kw - 1
    shifted = [jnp.pad(rhs, ((0, 0), (w, tile - 1 - w), (0, 0), (0, 0))) for w in range(tile)]
    return jnp.stack(shifted, axis=3).reshape(kh * span * c_in, tile * c_out)


def patch_conv(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding,
    lhs_dilation: Sequence[int] | None = None,
    rhs_dilation: Sequence[int] | None = None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    precision=None,
    **options,
) -> jax.Array:
    """``lax.conv_general_dilated`` for 2-D channels-last convolutions, as one matmul of a
    banded kernel with the input's shifted views.

    Each view holds ``kh`` rows by ``span`` columns of the input and yields ``tile`` adjacent
    output columns (:func:`width_tile`; with ``tile = 1`` this is im2col). Under ``vmap`` over
    weight samples a convolution with per-sample kernels becomes a grouped convolution, which
    XLA's CPU backend runs slowly; this form becomes a batched matmul, and a shared input's views
    are built once. Views several columns wide cut the patches' size (and the scatter-add of
    their gradient) by about ``kw`` times. Same result up to float32 summation order. Dilated,
    grouped or non-channels-last convolutions go to ``lax.conv_general_dilated`` unchanged.
    ``lhs [B, H, W, C_in]``, ``rhs [kh, kw, C_in, C_out]`` -> ``[B, H_out, W_out, C_out]``.
    """
    plain = (
        lhs.ndim == 4
        and feature_group_count == 1
        and not options
        and all(d == 1 for d in (lhs_dilation or (1, 1)) + tuple(rhs_dilation or (1, 1)))
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _CHANNELS_LAST
    )
    if not plain:
        return lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **options,
        )
    batch, height, width, _ = lhs.shape
    kh, kw, _, c_out = rhs.shape
    padding = conv_pads((height, width), (kh, kw), window_strides, padding)
    h_out, w_out = conv_output_size((height, width), (kh, kw), window_strides, padding)
    tile = width_tile(w_out, kw, window_strides[1])
    views = -(-w_out // tile)
    blocks = _row_blocks(lhs, (kh, kw), window_strides, padding, tile, views, h_out)
    patches = jnp.concatenate(blocks, axis=-1)  # [B, H_out, views, kh * span * C_in]
    out = jnp.dot(patches, banded_kernel(rhs, tile), precision=precision)
    return out.reshape(batch, h_out, views * tile, c_out)[:, :, :w_out]


def conv_pads(size, kernel_size, strides, padding) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((top, bottom), (left, right))`` from a padding name or pairs."""
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(size, kernel_size, strides, padding)
    return tuple(tuple(p) for p in padding)


def conv_output_size(size, kernel_size, strides, padding) -> tuple[int, int]:
    """``(H_out, W_out)`` of a convolution with ``padding`` as pairs."""
    return tuple(
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(size, kernel_size, strides, padding, strict=True)
    )


def _row_blocks(lhs, kernel_size, strides, padding, tile, views, rows) -> list[jax.Array]:
    """The views of :func:`patch_conv` for the first ``rows`` output rows, one block per kernel
    row: ``kh`` arrays ``[B, rows, views, span * C_in]``, concatenated on the last axis by the
    callers. Columns are built first, as a few wide windows or (im2col) a few strided slices."""
    kh, kw = kernel_size
    sh, sw = strides
    (top, bottom), (left, right) = padding
    span = tile + kw - 1
    step = tile * sw
    # Zero columns on the right so that the last view is whole; its extra outputs are cut later.
    extra = max(0, (views - 1) * step + span - (lhs.shape[2] + left + right))
    x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right + extra), (0, 0)))
    if views <= span:
        columns = jnp.stack([x[:, :, k * step : k * step + span] for k in range(views)], axis=2)
    else:
        last = (views - 1) * step + 1
        columns = jnp.stack([x[:, :, v : v + last : step] for v in range(span)], axis=3)
    columns = columns.reshape(*columns.shape[:3], -1)  # [B, H_padded, views, span * C_in]
    return [columns[:, i : i + (rows - 1) * sh + 1 : sh] for i in range(kh)]


def conv_relu_pool(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, padding, precision=None
) -> jax.Array:
    """``max_pool_2x2(relu(conv(x, kernel) + bias))`` at stride 1, as one matmul of the banded
    kernel (:func:`patch_conv`) whose output keeps each pooling window's rows and columns on axes
    of their own: ``[B, H_out / 2, 2, views, 2, tile / 2 * C_out]``, reduced by a max over the
    two window axes.

    Under ``vmap`` over weight samples with a shared input (a first layer), the samples stay in
    the matmul's output order: ReLU, pooling and their gradients read it in place, where the
    separate layers read it through a transpose. The bias is the matmul's last row (against a
    column of ones), so its sum stays in place too; the kernel's gradient is one contraction
    (:func:`~samplepar.bnn.product.kernel_product`). LeNet-5's vectorised step at S=16 took
    130.2 ms with the separate layers and 90.3 ms with both blocks fused, on a 2-core CPU (its
    channels-first blocks, :mod:`samplepar.bnn.lenet`, now run where their layout fits).

    Same values and gradients up to float32 summation order (ReLU after the max equals the max
    after ReLU; the max's gradient is split evenly between tied maxima, as in
    :func:`max_pool_2x2`). An odd last output row or column is dropped. ``x [B, H, W, C_in]``,
    ``kernel [kh, kw, C_in, C_out]``, ``bias [C_out]``, one dtype -> ``[B, H_out // 2,
    W_out // 2, C_out]``.
    """
    batch, height, width, _ = x.shape
    kh, kw, _, c_out = kernel.shape
    padding = conv_pads((height, width), (kh, kw), (1, 1), padding)
    h_out, w_out = conv_output_size((height, width), (kh, kw), (1, 1), padding)
    rows, cols = h_out // 2, w_out // 2
    if rows == 0 or cols == 0:
        raise ValueError(
            f"conv_relu_pool: the convolution's output is {h_out}x{w_out}; 2x2 pooling needs at "
            "least 2x2"
        )
    views = -(-w_out // WIDTH_TILE)
    tile = 2 * -(-cols // views)  # even: a view holds whole pooling windows
    blocks = _row_blocks(x, (kh, kw), (1, 1), padding, tile, views, 2 * rows)
    ones = jnp.ones((batch, 2 * rows, views, 1), x.dtype)
    patches = jnp.concatenate([*blocks, ones], axis=-1).reshape(batch, rows, 2, views, -1)
    band = banded_kernel(kernel, tile).reshape(-1, tile // 2, 2, c_out).swapaxes(1, 2)
    band = jnp.concatenate([band, jnp.broadcast_to(bias, (1, 2, tile // 2, c_out))])
    out = kernel_product(patches, band.reshape(band.shape[0], 2, -1), precision)
    pooled = nn.relu(jnp.max(out, axis=(2, 4)))  # [B, rows, views, tile / 2 * C_out]
    return pooled.reshape(batch, rows, views * tile // 2, c_out)[:, :, :cols]


def conv_params(module: nn.Module, shape: tuple[int, int, int, int]) -> tuple[jax.Array, jax.Array]:
    """``nn.Conv``'s parameters of ``module``, created with its initialisers: ``kernel`` of
    ``shape`` ``[kh, kw, C_in, features]`` and ``bias [features]``."""
    kernel = module.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
    bias = module.param("bias", nn.initializers.zeros_init(), (shape[-1],), jnp.float32)
    return kernel, bias


class ConvReLUPool(nn.Module):
    """``max_pool_2x2(relu(nn.Conv(features, kernel_size, padding=padding)(x)))`` computed by
    :func:`conv_relu_pool`, with ``nn.Conv``'s parameters and initialisers (``kernel [kh, kw,
    C_in, features]``, ``bias [features]``)."""

    features: int
    kernel_size: tuple[int, int]
    padding: str | Sequence[tuple[int, int]] = "SAME"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel, bias = conv_params(self, (*self.kernel_size, x.shape[-1], self.features))
        x, kernel, bias = promote_dtype(x, kernel, bias)
        return conv_relu_pool(x, kernel, bias, self.padding)


# How the models below convolve: ``patches`` (default; fast for per-sample kernels on the CPU) or
# ``xla`` (``lax.conv_general_dilated``).
CONVOLUTIONS = {"patches": patch_conv, "xla": lax.conv_general_dilated}


def conv_layer(convolution: str):
    """``nn.Conv`` computing with the named convolution (same parameters either way)."""
    return functools.partial(nn.Conv, conv_general_dilated=CONVOLUTIONS[convolution])


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """``nn.max_pool(x, (2, 2), (2, 2))`` (``VALID``: an odd last row or column is dropped) as a
    max over a reshape, ``[B, H, W, C] -> [B, H // 2, W // 2, C]``.

    Same values. Its gradient goes to the maximum of each window, split evenly between tied
    maxima (after a ReLU, tied zeros get no gradient either way). Differentiating XLA's
    ``reduce_window`` instead builds index arrays the size of the input and a variadic window
    reduction; under ``vmap`` over weight samples that took most of LeNet-5's step on a CPU.
    """
    b, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def as_image(x: jax.Array) -> jax.Array:
    """``[B, H, W]`` -> ``[B, H, W, 1]``; ``[B, H, W, C]`` unchanged."""
    return x[..., None] if x.ndim == 3 else x


class ResidualBlock(nn.Module):
    """conv3x3-GN-ReLU-conv3x3-GN plus a (projected when the shape changes) shortcut."""

    width: int
    stride: int = 1
    groups: int = 4
    convolution: str = "patches"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = conv_layer(self.convolution)
        strides = (self.stride, self.stride)
        y = conv(self.width, (3, 3), strides, use_bias=False)(x)
        y = nn.relu(nn.GroupNorm(self.groups)(y))
        y = nn.GroupNorm(self.groups)(conv(self.width, (3, 3), use_bias=False)(y))
        if self.stride != 1 or x.shape[-1] != self.width:
            x = conv(self.width, (1, 1), strides, use_bias=False)(x)
        return nn.relu(x + y)


class ResNet(nn.Module):
    """A small ResNet: 3x3 stem, one stage per width (each after the first halves the size),
    ``blocks`` residual blocks per stage, global average pooling, dense output."""

    num_outputs: int = 10
    widths: Sequence[int] = (16, 32, 64)
    blocks: int = 1
    groups: int = 4
    convolution: str = "patches"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = as_image(x)
        x = conv_layer(self.convolution)(self.widths[0], (3, 3), use_bias=False)(x)
        x = nn.relu(nn.GroupNorm(self.groups)(x))
        for stage, width in enumerate(self.widths):
            for block in range(self.blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                x = ResidualBlock(width, stride, self.groups, self.convolution)(x)
        return nn.Dense(self.num_outputs)(jnp.mean(x, axis=(1, 2)))
