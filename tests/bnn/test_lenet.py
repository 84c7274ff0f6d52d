"""LeNet-5's channels-first blocks (``samplepar.bnn.lenet``) equal XLA's convolution, ReLU and
2x2 max pooling as separate layers: in value and gradient, under vmap over per-sample weights,
where pooling windows tie, and on inputs whose size sends them to the channels-last blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplepar.bnn import get_model
from samplepar.bnn.lenet import channels_first_fits, second_padding, window_kernel


def test_window_kernel_places_each_tap_under_its_pooling_output():
    kernel = jnp.arange(1.0, 1 + 3 * 3 * 2 * 4).reshape(3, 3, 2, 4)
    window = np.asarray(window_kernel(kernel))
    assert window.shape == (4, 4, 2, 2, 2, 4)
    for i, j, a, b in np.ndindex(4, 4, 2, 2):
        inside = 0 <= i - a < 3 and 0 <= j - b < 3
        want = kernel[i - a, j - b] if inside else np.zeros((2, 4))
        np.testing.assert_array_equal(window[i, j, :, a, b], want)


@pytest.mark.parametrize(
    ("size", "fits"),
    [((28, 28), True), ((32, 32), True), ((8, 8), True), ((16, 20), True), ((4, 4), True)]
    + [((30, 30), False), ((7, 7), False), ((10, 10), False), ((12, 14), False)],
)
def test_channels_first_where_the_first_pooled_map_has_even_sides(size, fits):
    assert channels_first_fits(size, (5, 5), second_padding(size)) is fits


def test_parameters_are_those_of_the_separate_layers():
    x = jnp.zeros((1, 28, 28, 1))
    patches = get_model("lenet5", (28, 28, 1), 10).init(jax.random.key(3), x)
    xla = get_model("lenet5", (28, 28, 1), 10, convolution="xla").init(jax.random.key(3), x)
    assert jax.tree.structure(patches) == jax.tree.structure(xla)
    for a, b in zip(jax.tree.leaves(patches), jax.tree.leaves(xla), strict=True):
        np.testing.assert_array_equal(a, b)


def test_lenet_gradients_agree_with_either_convolution():
    """The fused blocks (``patches``) against XLA's convolution and separate layers."""
    x = jax.random.normal(jax.random.key(9), (4, 28, 28, 1))
    y = jnp.arange(4) % 10
    patches = get_model("lenet5", (28, 28, 1), 10)
    xla = get_model("lenet5", (28, 28, 1), 10, convolution="xla")
    variables = patches.init(jax.random.key(10), x)

    def gradient(model):
        def loss(variables):
            logits = model.apply(variables, x)
            return -jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(4), y])

        return jax.jit(jax.value_and_grad(loss))(variables)

    got, want = gradient(patches), gradient(xla)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.mark.parametrize(
    "shape",
    [(8, 8, 1), (12, 12, 3), (16, 20, 2), (20, 20, 1), (28, 28, 1), (32, 32, 3), (4, 4, 1)]
    + [(30, 30, 1), (7, 7, 1)],
)
def test_blocks_agree_with_xla_under_vmap_over_weight_samples(shape):
    """Channels first where the first pooled map has even sides (all but 30x30 and 7x7, which
    keep the channels-last blocks; CIFAR-10 is 32x32x3): values and gradients of per-sample
    weights under ``vmap``, as the engine evaluates them, against XLA's convolution."""
    x = jax.random.normal(jax.random.key(1), (3, *shape))
    patches = get_model("lenet5", shape, 10)
    xla = get_model("lenet5", shape, 10, convolution="xla")
    variables = patches.init(jax.random.key(2), x[:1])
    noise = jax.tree.map(lambda v: jax.random.normal(jax.random.key(3), (4, *v.shape)), variables)
    samples = jax.tree.map(lambda v, n: v + 0.3 * jnp.std(v + 1e-3) * n, variables, noise)
    target = jax.random.normal(jax.random.key(4), (4, 3, 10))

    def value_and_gradients(model):
        def loss(samples):
            return jnp.sum(target * jax.vmap(lambda v: model.apply(v, x))(samples))

        return jax.jit(jax.value_and_grad(loss))(samples)

    got, want = value_and_gradients(patches), value_and_gradients(xla)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_tied_maxima_split_the_gradient_as_separate_layers_do():
    """A mostly blank image and positive biases: windows tie four ways in both blocks, and
    their gradient is split as the separate layers split it."""
    x = jnp.zeros((2, 28, 28, 1)).at[0, 2:4, 2:5, 0].set(1.0)
    patches = get_model("lenet5", (28, 28, 1), 10)
    xla = get_model("lenet5", (28, 28, 1), 10, convolution="xla")
    variables = patches.init(jax.random.key(2), x[:1])
    params = dict(variables["params"])
    for name, key in (("Conv_0", 5), ("Conv_1", 6)):
        bias = jnp.abs(jax.random.normal(jax.random.key(key), params[name]["bias"].shape))
        params[name] = {**params[name], "bias": bias}
    variables = {"params": params}
    target = jax.random.normal(jax.random.key(4), (2, 10))

    def gradients(model):
        return jax.grad(lambda v: jnp.sum(target * model.apply(v, x)))(variables)

    for a, b in zip(
        jax.tree.leaves(gradients(patches)), jax.tree.leaves(gradients(xla)), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))
