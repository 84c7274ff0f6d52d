"""LeNet-5, its two convolution blocks laid out channels first: one matmul per block.

Each block is ``max_pool_2x2(relu(conv(x) + b))`` with a 5x5 kernel. Written as one matmul of a
*window kernel* (:func:`window_kernel`: the map from a pooling window's ``6 x 6`` input to its
2x2 convolution outputs) with every pooling window's input as a column, a block costs about 1.4
times a plain convolution's multiplications, where :func:`~samplepar.bnn.conv.conv_relu_pool`'s
banded kernel costs 2.8. The first block's windows come from the data alone, so under ``vmap``
over weight samples its matmul is one product for all samples. Its pooled output stays channels
first, the batch axis last, with rows and columns split by parity: the second block's windows are
then contiguous slices of it. Inputs whose first pooled map has odd sides keep
:func:`~samplepar.bnn.conv.conv_relu_pool`'s blocks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax.linen.dtypes import promote_dtype
from jax import lax

from samplepar.bnn.conv import (
    ConvReLUPool,
    as_image,
    conv_layer,
    conv_output_size,
    conv_pads,
    conv_params,
    max_pool_2x2,
)


def window_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel as the map from a ``(kh + 1) x (kw + 1)`` input window to the 2x2 outputs of
    the pooling window it covers: ``[kh, kw, C_in, C_out] -> [kh + 1, kw + 1, C_in, 2, 2, C_out]``,
    entry ``[i, j, c, a, b, o]`` holding ``kernel[i - a, j - b, c, o]`` where both indices are in
    range and 0 elsewhere. Built by padding, so its entries are exact."""
    taps = [
        [jnp.pad(kernel, ((a, 1 - a), (b, 1 - b), (0, 0), (0, 0))) for b in range(2)]
        for a in range(2)
    ]
    return jnp.stack([jnp.stack(row, axis=3) for row in taps], axis=3)


def channels_first_fits(size, kernel_size, padding) -> bool:
    """Whether LeNet-5's blocks can run in :func:`split_conv_relu_pool`'s layout: odd kernels, a
    first pooled map of even size, and even padding for the second convolution."""
    (h, w), (kh, kw) = size[:2], kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        return False
    rows, cols = h // 2, w // 2  # the first block keeps the size (SAME)
    if rows % 2 or cols % 2:
        return False
    pads = conv_pads((rows, cols), kernel_size, (1, 1), padding)
    h_out, w_out = conv_output_size((rows, cols), kernel_size, (1, 1), pads)
    return all(p % 2 == 0 for pair in pads for p in pair) and h_out >= 2 and w_out >= 2


def _first_windows(x: jax.Array, kernel_size, padding) -> tuple[jax.Array, tuple[int, int]]:
    """The input window of every 2x2 pooling window of a stride-1 convolution with
    ``padding``, as the columns of ``[(kh + 1) * (kw + 1) * C + 1, M]`` (the last row ones, for
    the bias). Column ``(q, t, r, c, b)`` is the window of pooled position ``(2 r + q, 2 c + t)``
    of example ``b``: the pooled map's rows and columns split by parity, so that the next block
    takes its windows as contiguous slices (:func:`split_conv_relu_pool`). One gather with
    constant indices, from the data alone: built once for all weight samples. Returns the
    windows and the pooled size ``(rows, cols)``, both even."""
    batch, height, width, c = x.shape
    kh, kw = kernel_size
    padding = conv_pads((height, width), kernel_size, (1, 1), padding)
    h_out, w_out = conv_output_size((height, width), kernel_size, (1, 1), padding)
    rows, cols = h_out // 2, w_out // 2
    (top, bottom), (left, right) = padding
    x = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    pixels = x.transpose(1, 2, 3, 0).reshape(-1, batch)  # [(H, W, C), B]
    shape = (kh + 1, kw + 1, c, 2, 2, rows // 2, cols // 2)
    i, j, ch, q, t, r, col = np.ix_(*(np.arange(n) for n in shape))
    index = ((2 * (2 * r + q) + i) * x.shape[2] + 2 * (2 * col + t) + j) * c + ch
    index = np.broadcast_to(index, shape).reshape((kh + 1) * (kw + 1) * c, -1)
    windows = pixels[jnp.asarray(index, np.int32)].reshape(index.shape[0], -1)
    ones = jnp.ones((1, windows.shape[1]), x.dtype)
    return jnp.concatenate([windows, ones]), (rows, cols)


def _pooled_product(windows, kernel_rows, bias, precision):
    """``max_pool_2x2(relu(conv + bias))`` as one matmul ``[2 * 2 * C_out, K] @ windows [K, M]``
    (the rows of ``kernel_rows [K - 1, 2, 2, C_out]``, transposed, and the bias), reduced over
    the pooling window's two leading axes: ``[C_out, M]``."""
    c_out = kernel_rows.shape[-1]
    band = jnp.concatenate([kernel_rows, jnp.broadcast_to(bias, (1, 2, 2, c_out))])
    out = jnp.dot(band.reshape(band.shape[0], -1).T, windows, precision=precision)
    return nn.relu(jnp.max(out.reshape(2, 2, c_out, -1), axis=(0, 1)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _split_windows(x: jax.Array, halves: tuple[int, int], size: tuple[int, int]) -> jax.Array:
    """``x [C, R, W, B]`` -> ``[hh, hw, C, rows, cols, B]``: entry ``[p, u, ..., r, c, :]`` is
    ``x[:, r + p, c + u]``, for ``halves = (hh, hw)`` and ``size = (rows, cols)``.

    One gather of whole example rows (``B`` contiguous numbers) at constant indices, as many as
    the windows' entries per example. As a stack of the ``hh * hw`` slices, XLA's CPU backend
    built it in one loop that chose between the slices at every element: LeNet-5's step at S=16
    took 82.3 ms that way and 77.5 ms gathering single numbers (2-core CPU, timed alternating in
    one process); gathering rows, whose indices do not grow with the batch, came within 2% of
    the latter. Its gradient adds the shifted slices in place, one after the other; autodiff's
    transpose of the slices (every shift evaluated at every element in one loop) took 84.5 ms
    against 82.7."""
    rows, cols = size
    c, height, width, batch = x.shape
    p, u, ch, r, col = np.ix_(*(np.arange(n) for n in (*halves, c, rows, cols)))
    index = np.broadcast_to((ch * height + r + p) * width + col + u, (*halves, c, rows, cols))
    return x.reshape(-1, batch)[jnp.asarray(index, np.int32)]


def _split_windows_fwd(x, halves, size):
    return _split_windows(x, halves, size), x.shape


def _split_windows_bwd(halves, size, shape, cotangent):
    rows, cols = size
    total = jnp.zeros(shape, cotangent.dtype)
    for p in range(halves[0]):
        for u in range(halves[1]):
            start = (0, p, u, 0)
            current = lax.dynamic_slice(total, start, (shape[0], rows, cols, shape[3]))
            total = lax.dynamic_update_slice(total, current + cotangent[p, u], start)
    return (total,)


_split_windows.defvjp(_split_windows_fwd, _split_windows_bwd)


def split_conv_relu_pool(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, padding, precision=None
) -> jax.Array:
    """:func:`~samplepar.bnn.conv.conv_relu_pool` on (and to) a channels-first map whose rows
    and columns are split by parity: ``x [C_in, 2, 2, R, W, B]``, entry ``[c, q, t, r, w, b]``
    holding pixel ``(2 r + q, 2 w + t)``, -> ``[C_out, rows, cols, B]`` (plain rows and
    columns).

    A pooling window's input is ``(kh + 1) x (kw + 1)`` pixels (odd kernels): ``(kh + 1) / 2``
    row pairs by ``(kw + 1) / 2`` column pairs, so every window is a contiguous slice of the split
    map, the example axis last. One matmul of the window kernel (:func:`window_kernel`, the bias
    as its last row) with the windows as columns, ``[2 * 2 * C_out, K] @ [K, rows * cols * B]``.
    Under ``vmap`` over weight samples it is a batched matmul, with the pooling window's axes
    outermost: the max over them reads whole planes. Even padding only."""
    c_in, _, _, half_h, half_w, batch = x.shape
    kh, kw, _, c_out = kernel.shape
    pads = conv_pads((2 * half_h, 2 * half_w), (kh, kw), (1, 1), padding)
    h_out, w_out = conv_output_size((2 * half_h, 2 * half_w), (kh, kw), (1, 1), pads)
    rows, cols = h_out // 2, w_out // 2
    (top, bottom), (left, right) = pads
    x = jnp.pad(x, ((0, 0),) * 3 + ((top // 2, bottom // 2), (left // 2, right // 2), (0, 0)))
    halves = ((kh + 1) // 2, (kw + 1) // 2)
    windows = _split_windows(x.reshape(c_in * 4, *x.shape[3:]), halves, (rows, cols))
    windows = windows.reshape(-1, rows * cols * batch)  # rows (p, u, C_in, q, t)
    windows = jnp.concatenate([windows, jnp.ones((1, windows.shape[1]), x.dtype)])
    band = window_kernel(kernel).reshape(halves[0], 2, halves[1], 2, c_in, 2, 2, c_out)
    band = band.transpose(0, 2, 4, 1, 3, 5, 6, 7).reshape(-1, 2, 2, c_out)
    return _pooled_product(windows, band, bias, precision).reshape(c_out, rows, cols, batch)


class ConvParams(nn.Module):
    """``nn.Conv``'s parameters and initialisers (:func:`~samplepar.bnn.conv.conv_params`), for
    blocks that compute with them elsewhere: ``in_features -> (kernel, bias)``."""

    features: int
    kernel_size: tuple[int, int]

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        return conv_params(self, (*self.kernel_size, in_features, self.features))


def lenet_features(x, kernels, biases, second_padding, precision=None) -> jax.Array:
    """LeNet-5's two blocks, ``max_pool_2x2(relu(conv(x) + b))`` twice (the first ``SAME``),
    laid out channels first: ``x [B, H, W, C]`` -> ``[B, rows, cols, C_out]``, the same values
    as two :func:`~samplepar.bnn.conv.conv_relu_pool` calls up to float32 summation order.

    The first block's windows (:func:`_first_windows`) come from the data alone: under ``vmap``
    over weight samples its matmul is one ``[S * 4 * C_out, K] @ [K, M]`` product. Its output,
    channels first with the pooled map split by parity, is the second block's input
    (:func:`split_conv_relu_pool`) as it stands."""
    (k0, k1), (b0, b1) = kernels, biases
    windows, (rows, cols) = _first_windows(x, k0.shape[:2], "SAME")
    c_out = k0.shape[-1]
    band = window_kernel(k0).reshape(-1, 2, 2, c_out)  # rows (i, j, C_in), as the windows
    pooled = _pooled_product(windows, band, b0, precision)
    pooled = pooled.reshape(c_out, 2, 2, rows // 2, cols // 2, x.shape[0])
    out = split_conv_relu_pool(pooled, k1, b1, second_padding, precision)
    return out.transpose(3, 1, 2, 0)


def second_padding(size: tuple[int, int]) -> str:
    """The second convolution's padding for an ``(H, W)`` input: ``VALID`` when the first pooled
    map is at least 10 wide, else ``SAME`` (see :class:`LeNet5`)."""
    return "VALID" if min(n // 2 for n in size) >= 10 else "SAME"


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max pooling: conv 6@5x5, pool, conv 16@5x5, pool, 120, 84, out.

    The first convolution keeps the size (``SAME``); the second is ``VALID`` when the pooled map
    is at least 10 wide (28x28 input: 16@5x5 = 400 features, as in the original) and ``SAME`` for
    small inputs (8x8 input: 16@2x2). Inputs must be at least 4x4.

    With ``patches``, both blocks run channels first (:func:`lenet_features`) when the first
    pooled map has even sides (28x28, 8x8, ...), else as
    :func:`~samplepar.bnn.conv.conv_relu_pool` blocks.
    """

    num_outputs: int = 10
    convolution: str = "patches"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = as_image(x)
        padding = second_padding(x.shape[1:3])
        if self.convolution == "patches" and channels_first_fits(x.shape[1:3], (5, 5), padding):
            k0, b0 = ConvParams(6, (5, 5), name="Conv_0")(x.shape[-1])
            k1, b1 = ConvParams(16, (5, 5), name="Conv_1")(6)
            x, k0, b0, k1, b1 = promote_dtype(x, k0, b0, k1, b1)
            x = lenet_features(x, (k0, k1), (b0, b1), padding)
        else:
            x = self.block(6, "SAME", "Conv_0")(x)
            x = self.block(16, padding, "Conv_1")(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(120)(x))
        x = nn.relu(nn.Dense(84)(x))
        return nn.Dense(self.num_outputs)(x)

    def block(self, features: int, padding: str, name: str):
        """Conv 5x5, ReLU, 2x2 max pooling: fused (:class:`ConvReLUPool`) with ``patches``,
        separate layers with ``xla``; named as ``nn.Conv`` so the parameters are the same."""
        if self.convolution == "patches":
            return ConvReLUPool(features, (5, 5), padding, name=name)
        conv = conv_layer(self.convolution)(features, (5, 5), padding=padding, name=name)
        return lambda x: max_pool_2x2(nn.relu(conv(x)))
