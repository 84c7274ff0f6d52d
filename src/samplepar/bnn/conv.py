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
    """``lax.conv_general_dilated`` for 2-D channels-last convolutions, as one matmul of the
    kernel with the input's shifted views (im2col by slicing).

    Under ``vmap`` over weight samples a convolution with per-sample kernels becomes a grouped
    convolution, which XLA's CPU backend runs slowly; this form becomes a batched matmul, and a
    shared input's views are built once. Same result up to float32 summation order. Dilated,
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
    kh, kw, c_in, c_out = rhs.shape
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], (kh, kw), window_strides, padding)
    x = jnp.pad(lhs, ((0, 0), *[tuple(p) for p in padding], (0, 0)))
    sh, sw = window_strides
    h_out = (x.shape[1] - kh) // sh + 1
    w_out = (x.shape[2] - kw) // sw + 1
    views = [
        x[:, i : i + (h_out - 1) * sh + 1 : sh, j : j + (w_out - 1) * sw + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]
    patches = jnp.concatenate(views, axis=-1)  # [B, H_out, W_out, kh * kw * C_in]
    return jnp.dot(patches, rhs.reshape(kh * kw * c_in, c_out), precision=precision)


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
