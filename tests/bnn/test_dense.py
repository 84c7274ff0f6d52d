"""``dense_dot_general``: ``nn.Dense``'s contractions go to ``kernel_product`` (tested against
``lax.dot_general`` in tests/bnn/test_product.py), others to ``lax.dot_general``; the MLP keeps
flax's parameter names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from samplepar.bnn import MLP
from samplepar.bnn.dense import dense_dot_general
from samplepar.bnn.product import kernel_product


@pytest.mark.parametrize("x_shape", [(5, 7), (2, 5, 7)])
def test_dense_contractions_go_to_kernel_product(x_shape):
    """nn.Dense's contraction: the inputs' last axis with the kernel's first. Its value and
    gradients against ``lax.dot_general``: tests/bnn/test_product.py."""
    numbers = (((len(x_shape) - 1,), (0,)), ((), ()))
    x = jax.random.normal(jax.random.key(0), x_shape)
    w = jax.random.normal(jax.random.key(1), (7, 4))
    jaxpr = str(jax.make_jaxpr(lambda x, w: dense_dot_general(x, w, numbers))(x, w))
    assert "custom_vjp_call" in jaxpr
    np.testing.assert_array_equal(dense_dot_general(x, w, numbers), kernel_product(x, w))


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
