"""A bayesianized model trains with the engine: sharded loss, gradient and trajectory equal
the single-device ones."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from samplepar.bnn import MLP, bayesianize, get_model
from samplepar.engine import bayesian_particle, build_step, init, make_loss
from samplepar.mesh import make_mesh
from samplepar.objectives import ELBO
from samplepar.random import step_key

X = jax.random.normal(jax.random.key(0), (8, 6))
Y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1], jnp.int32)
BATCH = {"x": X, "y": Y, "index": jnp.arange(8)}
LAYOUTS = ("none", "sample=4,data=2")


def shift_augment(rng_key, x, index):
    """Per-example noise keyed by (sample key, global example index)."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng_key, index)
    return x + 0.3 * jax.vmap(lambda k: jax.random.normal(k, x.shape[1:]))(keys)


def assert_sharded_equals_single_device(bm, batch):
    params = bm.init_params(jax.random.key(3), batch["x"][:1])
    particle = bayesian_particle(bm.family, bm.log_lik_fn)
    results = []
    for layout in LAYOUTS:
        loss = make_loss(particle, ELBO(), make_mesh(layout), 8, 64, kl_fn=bm.family.kl)
        value_and_grad = jax.jit(jax.value_and_grad(loss, has_aux=True))
        results.append(value_and_grad(params, jax.random.key(7), batch))
    (single, _), single_grad = results[0]
    (sharded, _), sharded_grad = results[1]
    np.testing.assert_allclose(sharded, single, rtol=1e-5)
    flat_single, flat_sharded = jax.tree.leaves(single_grad), jax.tree.leaves(sharded_grad)
    for a, b in zip(flat_single, flat_sharded, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * float(jnp.abs(a).max()))


def test_sharded_loss_and_grad_equal_single_device():
    bm = bayesianize(
        MLP(num_outputs=3, hidden=(8,)),
        init_scale=0.1,
        deterministic=("Dense_1/bias",),
        augment=shift_augment,
    )
    assert_sharded_equals_single_device(bm, BATCH)


@pytest.mark.parametrize("augment", [None, shift_augment], ids=["shared-input", "per-sample"])
def test_lenet_sharded_loss_and_grad_equal_single_device(augment):
    """LeNet-5's fused blocks, their products' gradients summed over the mesh: the first block's
    input is the data (one per shard) or, augmented per sample, each sample's own."""
    images = {**BATCH, "x": jax.random.normal(jax.random.key(1), (8, 8, 8, 1))}
    bm = bayesianize(get_model("lenet5", (8, 8, 1), 3), init_scale=0.1, augment=augment)
    assert_sharded_equals_single_device(bm, images)


def test_trains_with_the_engine_on_any_layout():
    bm = bayesianize(MLP(num_outputs=3, hidden=(8,)), init_scale=0.05, deterministic=("Dense_1",))
    params = bm.init_params(jax.random.key(3), X[:1])
    particle = bayesian_particle(bm.family, bm.log_lik_fn)
    optimizer = optax.adam(3e-2)
    losses = {}
    for layout in LAYOUTS:
        mesh = make_mesh(layout)
        loss = make_loss(particle, ELBO(), mesh, 4, dataset_size=80, kl_fn=bm.family.kl)
        step = build_step(loss, optimizer, mesh)
        state = init(jax.tree.map(jnp.copy, params), optimizer, mesh)  # the step donates it
        history = []
        for t in range(15):
            state, info = step(step_key(jax.random.key(11), t), state, BATCH)
            history.append((float(info.loss), float(info.log_likelihood)))
        losses[layout] = np.array(history)
    np.testing.assert_allclose(losses[LAYOUTS[1]], losses[LAYOUTS[0]], rtol=1e-4)
    loss, log_lik = losses["none"].T
    assert loss[-5:].mean() < loss[:5].mean() - 10  # nats, over 80 examples
    assert log_lik[-5:].mean() > log_lik[:5].mean() + 10
