"""``kernel_product``: inputs times a kernel with one or more output axes equals
``lax.dot_general`` in value and gradients, under ``vmap`` over per-sample kernels and inside
``shard_map`` over a sample x data mesh."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import PartitionSpec

from samplepar.bnn.product import _kernel_gradient_with, kernel_product
from samplepar.mesh import make_mesh


def reference(x, w):
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())))


def value_and_gradients(product, x, w, target):
    loss = lambda x, w: jnp.sum(target * jnp.tanh(product(x, w)))  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, (0, 1)))(x, w)


def assert_close(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


def draws(seed, *shapes):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return [jax.random.normal(k, s) for k, s in zip(keys, shapes, strict=True)]


@pytest.mark.parametrize(
    ("x_shape", "w_shape"), [((5, 7), (7, 4)), ((2, 3, 7), (7, 4)), ((2, 3, 2, 4, 7), (7, 2, 3))]
)
def test_value_and_gradients_equal_dot_general(x_shape, w_shape):
    x, w, target = draws(0, x_shape, w_shape, (*x_shape[:-1], *w_shape[1:]))
    assert_close(
        value_and_gradients(kernel_product, x, w, target),
        value_and_gradients(reference, x, w, target),
    )


@pytest.mark.parametrize("shared_input", [True, False])
def test_vmap_over_kernels(shared_input):
    x, kernels, target = draws(
        1, (6, 2, 7) if shared_input else (3, 6, 2, 7), (3, 7, 2, 5), (3, 6, 2, 2, 5)
    )

    def batched(product):
        return jax.vmap(product, in_axes=(None if shared_input else 0, 0))

    assert_close(
        value_and_gradients(batched(kernel_product), x, kernels, target),
        value_and_gradients(batched(reference), x, kernels, target),
    )


@pytest.mark.parametrize("w_shape", [(7, 4), (7, 2, 3)])
def test_inside_shard_map_the_gradients_are_summed_as_autodiff_sums_them(w_shape):
    """Kernels vary over ``sample`` and ``data``, the inputs over ``data`` only: the input's
    cotangent must be summed over ``sample``, as the transpose of the implicit broadcast is."""
    mesh = make_mesh("sample=2,data=4")
    x, w, target = draws(2, (8, 7), w_shape, (8, *w_shape[1:]))

    def loss(product, x, w):
        def shard(x, w, target):
            w = lax.pcast(w, ("sample", "data"), to="varying")
            return lax.psum(jnp.sum(target * jnp.tanh(product(x, w))), ("sample", "data"))

        specs = (PartitionSpec("data"), PartitionSpec(), PartitionSpec("data"))
        return jax.shard_map(shard, mesh=mesh, in_specs=specs, out_specs=PartitionSpec())(
            x, w, target
        )

    def value_and_gradients_of(product):
        return jax.jit(jax.value_and_grad(lambda x, w: loss(product, x, w), (0, 1)))(x, w)

    assert_close(value_and_gradients_of(kernel_product), value_and_gradients_of(reference))


@pytest.mark.parametrize(
    ("in_axes", "x_shape", "g_shape"),
    [
        ((None, 0), (6, 2, 7), (3, 6, 2, 5)),  # shared inputs
        ((0, None), (3, 6, 2, 7), (6, 2, 5)),  # shared output gradient
        ((0, 0), (3, 6, 2, 7), (3, 6, 2, 5)),  # both per sample, the inputs transposed
        ((0, 0), (3, 40, 64), (3, 40, 2)),  # both per sample, the output gradient transposed
    ],
)
def test_kernel_gradient_under_vmap_equals_the_contraction_of_each_sample(
    in_axes, x_shape, g_shape
):
    x, g = draws(3, x_shape, g_shape)
    got = jax.jit(jax.vmap(_kernel_gradient_with(None), in_axes))(x, g)
    for s in range(3):
        xs = x if in_axes[0] is None else x[s]
        gs = g if in_axes[1] is None else g[s]
        rows = tuple(range(xs.ndim - 1))
        want = lax.dot_general(xs, gs, ((rows, rows), ((), ())))
        np.testing.assert_allclose(got[s], want, rtol=1e-5, atol=1e-5)
