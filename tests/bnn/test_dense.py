"""``dense_dot_general``: ``nn.Dense``'s product through ``kernel_product`` equals
``lax.dot_general`` in value and gradient, also under ``vmap`` over per-sample kernels (inside
``shard_map``: tests/bnn/test_product.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from samplepar.bnn import MLP
from samplepar.bnn.dense import dense_dot_general

DENSE = lambda dot: lambda x, w: dot(x, w, (((x.ndim - 1,), (0,)), ((), ())))  # noqa: E731


def value_and_gradients(product, x, w, target):
    loss = lambda x, w: jnp.sum(target * jnp.tanh(product(x, w)))  # noqa: E731
    return jax.jit(jax.value_and_grad(loss, (0, 1)))(x, w)


def assert_close(got, want):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("x_shape", [(5, 7), (2, 3, 7)])
def test_value_and_gradients_equal_dot_general(x_shape):
    x_key, w_key, t_key = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(x_key, x_shape)
    w = jax.random.normal(w_key, (7, 4))
    target = jax.random.normal(t_key, (*x_shape[:-1], 4))
    assert_close(
        value_and_gradients(DENSE(dense_dot_general), x, w, target),
        value_and_gradients(DENSE(lax.dot_general), x, w, target),
    )


@pytest.mark.parametrize("shared_input", [True, False])
def test_vmap_over_kernels(shared_input):
    x_key, w_key, t_key = jax.random.split(jax.random.key(1), 3)
    x = jax.random.normal(x_key, (6, 7) if shared_input else (3, 6, 7))
    kernels = jax.random.normal(w_key, (3, 7, 4))
    target = jax.random.normal(t_key, (3, 6, 4))

    def batched(dot):
        return jax.vmap(DENSE(dot), in_axes=(None if shared_input else 0, 0))

    assert_close(
        value_and_gradients(batched(dense_dot_general), x, kernels, target),
        value_and_gradients(batched(lax.dot_general), x, kernels, target),
    )


def test_other_contractions_go_to_dot_general():
    x = jax.random.normal(jax.random.key(3), (2, 5, 7))
    w = jax.random.normal(jax.random.key(4), (2, 7, 4))
    numbers = (((2,), (1,)), ((0,), (0,)))
    np.testing.assert_array_equal(dense_dot_general(x, w, numbers), lax.dot_general(x, w, numbers))


def test_mlp_keeps_flax_dense_parameter_names():
    shapes = jax.eval_shape(
        MLP(num_outputs=3, hidden=(8,)).init, jax.random.key(0), jnp.ones((1, 6))
    )
    assert sorted(shapes["params"]) == ["Dense_0", "Dense_1"]
    assert shapes["params"]["Dense_0"]["kernel"].shape == (6, 8)
