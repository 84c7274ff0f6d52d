"""``patch_conv``: the convolution as a matmul of a banded kernel with shifted views equals XLA's
convolution, in value, gradient and under vmap over per-sample kernels, for any view width; and
``conv_relu_pool`` equals XLA's convolution, ReLU and 2x2 max pooling as separate layers."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from samplepar.bnn import conv, get_model
from samplepar.bnn.conv import (
    banded_kernel,
    conv_relu_pool,
    max_pool_2x2,
    patch_conv,
    width_tile,
)

CHANNELS_LAST = ("NHWC", "HWIO", "NHWC")


# Jitted whole: op by op, the gradients' many small slices and pads dispatch slowly.
@functools.partial(jax.jit, static_argnums=(2, 3))
def reference(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=CHANNELS_LAST)


@functools.partial(jax.jit, static_argnums=(2, 3))
def patched(x, w, strides, padding):
    return patch_conv(x, w, strides, padding, dimension_numbers=CHANNELS_LAST)


@functools.partial(jax.jit, static_argnums=(3,))
def separate(x, w, b, padding):
    return max_pool_2x2(nn.relu(reference(x, w, (1, 1), padding) + b))


@functools.partial(jax.jit, static_argnums=(3,))
def fused(x, w, b, padding):
    return conv_relu_pool(x, w, b, padding)


CASES = [
    ((2, 8, 8, 1), (5, 5, 1, 6), (1, 1), "SAME"),
    ((2, 14, 14, 6), (5, 5, 6, 16), (1, 1), "VALID"),
    ((2, 9, 7, 3), (3, 3, 3, 4), (2, 2), "SAME"),
    ((2, 8, 8, 4), (1, 1, 4, 8), (2, 2), "VALID"),
    ((2, 6, 6, 2), (3, 3, 2, 5), (1, 2), ((2, 0), (1, 1))),
]


@pytest.fixture
def most_columns(request, monkeypatch):
    """``conv.WIDTH_TILE`` set to the parameter, with ``patched`` and ``fused`` traced afresh."""
    monkeypatch.setattr(conv, "WIDTH_TILE", request.param)
    patched.clear_cache()
    fused.clear_cache()
    yield request.param
    patched.clear_cache()
    fused.clear_cache()


@pytest.mark.parametrize("most_columns", [1, 3, conv.WIDTH_TILE], indirect=True)
@pytest.mark.parametrize(("x_shape", "w_shape", "strides", "padding"), CASES)
def test_value_and_gradients_equal_xla_convolution(
    x_shape, w_shape, strides, padding, most_columns
):
    """Views of 1 column (im2col), of 3 (the last view cut short on 8- and 10-wide outputs) and of
    the default width."""
    x_key, w_key, t_key = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(x_key, x_shape)
    w = jax.random.normal(w_key, w_shape)
    expected = reference(x, w, strides, padding)
    np.testing.assert_allclose(patched(x, w, strides, padding), expected, rtol=1e-5, atol=1e-5)
    target = jax.random.normal(t_key, expected.shape)

    def gradients(conv):
        loss = lambda x, w: jnp.sum(target * conv(x, w, strides, padding))  # noqa: E731
        return jax.jit(jax.grad(loss, (0, 1)))(x, w)

    for got, want in zip(gradients(patched), gradients(reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_banded_kernel_places_each_tap_on_its_diagonal():
    rhs = jax.random.normal(jax.random.key(9), (2, 3, 2, 4))
    band = np.asarray(banded_kernel(rhs, 4)).reshape(2, 6, 2, 4, 4)  # [i, v, c, w, o]
    expected = np.zeros_like(band)
    for w in range(4):
        expected[:, w : w + 3, :, w, :] = rhs
    np.testing.assert_array_equal(band, expected)
    np.testing.assert_array_equal(banded_kernel(rhs, 1), rhs.reshape(12, 4))


@pytest.mark.parametrize(
    ("out_width", "kernel_width", "stride", "tile"),
    [(28, 5, 1, 7), (10, 5, 1, 5), (8, 3, 1, 8), (32, 3, 1, 8), (16, 3, 2, 1), (32, 1, 1, 1)],
)
def test_width_tile_splits_evenly_and_keeps_im2col_where_views_do_not_overlap(
    out_width, kernel_width, stride, tile, monkeypatch
):
    monkeypatch.setattr(conv, "WIDTH_TILE", 8)
    assert width_tile(out_width, kernel_width, stride) == tile


def test_vmap_over_kernels_with_shared_and_per_sample_inputs():
    x = jax.random.normal(jax.random.key(1), (3, 10, 10, 2))
    kernels = jax.random.normal(jax.random.key(2), (4, 3, 3, 2, 5))
    inputs = jax.random.normal(jax.random.key(3), (4, 3, 10, 10, 2))
    shared = jax.vmap(patched, (None, 0, None, None))(x, kernels, (1, 1), "SAME")
    each = jax.vmap(patched, (0, 0, None, None))(inputs, kernels, (1, 1), "SAME")
    for s in range(4):
        np.testing.assert_allclose(
            shared[s], reference(x, kernels[s], (1, 1), "SAME"), rtol=1e-5, atol=1e-5
        )
        np.testing.assert_allclose(
            each[s], reference(inputs[s], kernels[s], (1, 1), "SAME"), rtol=1e-5, atol=1e-5
        )


def test_dilated_and_grouped_convolutions_go_to_xla():
    x = jax.random.normal(jax.random.key(4), (2, 9, 9, 4))
    w = jax.random.normal(jax.random.key(5), (3, 3, 2, 4))
    grouped = patch_conv(
        x, w, (1, 1), "SAME", dimension_numbers=CHANNELS_LAST, feature_group_count=2
    )
    expected = lax.conv_general_dilated(
        x, w, (1, 1), "SAME", dimension_numbers=CHANNELS_LAST, feature_group_count=2
    )
    np.testing.assert_array_equal(grouped, expected)
    w = jax.random.normal(jax.random.key(6), (3, 3, 4, 4))
    dilated = patch_conv(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=CHANNELS_LAST)
    expected = lax.conv_general_dilated(
        x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=CHANNELS_LAST
    )
    np.testing.assert_array_equal(dilated, expected)


@pytest.mark.parametrize(
    ("name", "shape", "options"),
    [("lenet5", (8, 8, 1), {}), ("resnet", (8, 8, 3), {"widths": (4, 8)})],
)
def test_models_give_the_same_outputs_with_either_convolution(name, shape, options):
    x = jax.random.normal(jax.random.key(7), (3, *shape))
    patches = get_model(name, shape, 10, **options)
    xla = get_model(name, shape, 10, convolution="xla", **options)
    shapes = jax.eval_shape(patches.init, jax.random.key(8), x)
    assert jax.tree.structure(shapes) == jax.tree.structure(
        jax.eval_shape(xla.init, jax.random.key(8), x)
    )
    rng = np.random.default_rng(0)  # numpy draws: compiling flax's initialisers is slow
    variables = jax.tree.map(lambda a: rng.normal(0, 0.3, a.shape).astype(a.dtype), shapes)
    np.testing.assert_allclose(
        jax.jit(patches.apply)(variables, x), jax.jit(xla.apply)(variables, x), rtol=1e-4, atol=1e-5
    )


def test_unknown_convolution_is_refused():
    with pytest.raises(ValueError, match="convolution='fft' is unknown; choose patches or xla"):
        get_model("lenet5", (8, 8, 1), 10, convolution="fft")


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (3, 9, 7, 2), (1, 28, 28, 6), (2, 1, 4, 1)])
def test_max_pool_2x2_equals_flax_max_pool_in_value_and_gradient(shape):
    # continuous draws: no tied maxima, where the two gradients may split differently
    x = jax.random.normal(jax.random.key(5), shape)
    expected = nn.max_pool(x, (2, 2), (2, 2))
    np.testing.assert_array_equal(max_pool_2x2(x), expected)
    target = jax.random.normal(jax.random.key(6), expected.shape)

    def gradient(pool):
        return jax.jit(jax.grad(lambda x: jnp.sum(target * pool(x))))(x)

    np.testing.assert_array_equal(
        gradient(max_pool_2x2), gradient(lambda x: nn.max_pool(x, (2, 2), (2, 2)))
    )


def test_max_pool_2x2_after_relu_gives_tied_zeros_no_gradient():
    x = jnp.array([[-1.0, -2.0], [-3.0, -0.5]]).reshape(1, 2, 2, 1)
    grad = jax.grad(lambda x: jnp.sum(max_pool_2x2(nn.relu(x))))(x)
    np.testing.assert_array_equal(grad, jnp.zeros_like(x))


POOL_CASES = [
    ((2, 28, 28, 1), (5, 5, 1, 6), "SAME"),  # LeNet-5's first block
    ((2, 14, 14, 6), (5, 5, 6, 16), "VALID"),  # and its second
    ((3, 9, 7, 2), (3, 3, 2, 4), "SAME"),  # odd output: its last row and column are dropped
    ((2, 6, 8, 3), (3, 2, 3, 5), ((2, 0), (1, 1))),
]


def pool_inputs(x_shape, w_shape, seed=0):
    x_key, w_key, b_key = jax.random.split(jax.random.key(seed), 3)
    return (
        jax.random.normal(x_key, x_shape),
        jax.random.normal(w_key, w_shape),
        jax.random.normal(b_key, w_shape[-1:]),
    )


def pool_gradients(block, x, w, b, padding, target):
    loss = lambda x, w, b: jnp.sum(target * block(x, w, b, padding))  # noqa: E731
    return jax.jit(jax.grad(loss, (0, 1, 2)))(x, w, b)


@pytest.mark.parametrize("most_columns", [2, 3, conv.WIDTH_TILE], indirect=True)
@pytest.mark.parametrize(("x_shape", "w_shape", "padding"), POOL_CASES)
def test_conv_relu_pool_equals_separate_layers(x_shape, w_shape, padding, most_columns):
    """Views of 2 columns (28 of them: built as strided slices), of 2 or 4 (3 at most) and of the
    default width. Continuous draws: no tied maxima."""
    x, w, b = pool_inputs(x_shape, w_shape)
    expected = separate(x, w, b, padding)
    got = fused(x, w, b, padding)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    target = jax.random.normal(jax.random.key(3), expected.shape)
    for got, want in zip(
        pool_gradients(fused, x, w, b, padding, target),
        pool_gradients(separate, x, w, b, padding, target),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_conv_relu_pool_splits_the_gradient_between_tied_maxima():
    """On a blank image every window's outputs equal the bias: its positive channels tie four
    ways, and their gradient is split as the separate layers split it."""
    x = jnp.zeros((1, 8, 8, 1)).at[0, 2:4, 2:5, 0].set(1.0)
    _, w, b = pool_inputs(x.shape, (3, 3, 1, 4), seed=4)
    b = b.at[:2].set(jnp.abs(b[:2]))
    target = jax.random.normal(jax.random.key(5), (1, 4, 4, 4))
    np.testing.assert_allclose(fused(x, w, b, "SAME"), separate(x, w, b, "SAME"), atol=1e-6)
    for got, want in zip(
        pool_gradients(fused, x, w, b, "SAME", target),
        pool_gradients(separate, x, w, b, "SAME", target),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_conv_relu_pool_under_vmap_over_kernels_of_a_shared_input():
    x, _, _ = pool_inputs((3, 12, 12, 2), (5, 5, 2, 3))
    kernels = jax.random.normal(jax.random.key(6), (4, 5, 5, 2, 3))
    biases = jax.random.normal(jax.random.key(7), (4, 3))
    target = jax.random.normal(jax.random.key(8), (4, 3, 6, 6, 3))

    def loss(block, kernels, biases):
        out = jax.vmap(block, (None, 0, 0, None))(x, kernels, biases, "SAME")
        return jnp.sum(target * out)

    def value_and_gradients(block):
        return jax.jit(jax.value_and_grad(lambda k, b: loss(block, k, b), (0, 1)))(kernels, biases)

    got, want = value_and_gradients(fused), value_and_gradients(separate)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_relu_pool_refuses_an_output_too_small_to_pool():
    x, w, b = pool_inputs((1, 3, 3, 1), (3, 3, 1, 2))
    with pytest.raises(ValueError, match="output is 1x1; 2x2 pooling needs at least 2x2"):
        conv_relu_pool(x, w, b, "VALID")
