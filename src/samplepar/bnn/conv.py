"""Convolutional models: LeNet-5 and a small residual network, channels-last images.

Inputs are ``[B, H, W, C]`` (or ``[B, H, W]``, one channel). Neither model keeps running
statistics: batch norm would make an example's likelihood depend on the other examples of its
(sharded) batch and on the weight sample that last updated the statistics, breaking the exact,
layout-independent objective. The ResNet uses GroupNorm, which normalises each example alone.
Both convolve with :func:`patch_conv` unless given ``convolution="xla"``; the parameters are the
same either way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

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
    sh, sw = window_strides
    if isinstance(padding, str):
        padding = lax.padtype_to_pads((height, width), (kh, kw), window_strides, padding)
    (top, bottom), (left, right) = padding
    h_out = (height + top + bottom - kh) // sh + 1
    w_out = (width + left + right - kw) // sw + 1
    tile = width_tile(w_out, kw, sw)
    views = -(-w_out // tile)
    span = tile + kw - 1
    step = tile * sw
    # Zero columns on the right so that the last view is whole; its extra outputs are cut below.
    extra = max(0, (views - 1) * step + span - (width + left + right))
    x = jnp.pad(lhs, ((0, 0), (top, bottom), (left, right + extra), (0, 0)))
    # Columns first, as a few wide windows or (im2col) a few strided slices, then rows.
    if views <= span:
        columns = jnp.stack([x[:, :, k * step : k * step + span] for k in range(views)], axis=2)
    else:
        last = (views - 1) * step + 1
        columns = jnp.stack([x[:, :, v : v + last : step] for v in range(span)], axis=3)
    columns = columns.reshape(*columns.shape[:3], -1)  # [B, H_padded, views, span * C_in]
    patches = jnp.concatenate(
        [columns[:, i : i + (h_out - 1) * sh + 1 : sh] for i in range(kh)], axis=-1
    )  # [B, H_out, views, kh * span * C_in]
    out = jnp.dot(patches, banded_kernel(rhs, tile), precision=precision)
    return out.reshape(batch, h_out, views * tile, c_out)[:, :, :w_out]


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


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max pooling: conv 6@5x5, pool, conv 16@5x5, pool, 120, 84, out.

    The first convolution keeps the size (``SAME``); the second is ``VALID`` when the pooled map
    is at least 10 wide (28x28 input: 16@5x5 = 400 features, as in the original) and ``SAME`` for
    small inputs (8x8 input: 16@2x2). Inputs must be at least 4x4.
    """

    num_outputs: int = 10
    convolution: str = "patches"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = conv_layer(self.convolution)
        x = as_image(x)
        x = max_pool_2x2(nn.relu(conv(6, (5, 5), padding="SAME")(x)))
        padding = "VALID" if min(x.shape[1:3]) >= 10 else "SAME"
        x = max_pool_2x2(nn.relu(conv(16, (5, 5), padding=padding)(x)))
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(120)(x))
        x = nn.relu(nn.Dense(84)(x))
        return nn.Dense(self.num_outputs)(x)


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
