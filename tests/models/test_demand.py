"""The demand model: the fast formulation has the published log-density; SVI recovers truth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import initialize_model, potential_energy

from samplepar import mcmc, svi, svi_draws
from samplepar.mesh import make_mesh
from samplepar.models import (
    fast_inputs,
    fast_model,
    observations,
    panel,
    published_inputs,
    published_model,
    simulate,
    validate,
)
from samplepar.models.demand import (
    BLOCK_INDEX,
    local_inputs,
    local_model,
    slot_mean_log_price,
    slots_to_products,
)
from samplepar.models.demand_data import mean_log_price


def _inputs(num_products, num_periods, num_categories, drop=(), seed=0):
    table, truth = simulate(seed, num_products, num_periods, num_categories)
    obs = observations(validate(table.drop(index=list(drop)).reset_index(drop=True)))
    return obs, published_inputs(obs), fast_inputs(obs, panel(obs)), truth


@pytest.mark.parametrize("scale", [0.3, 3.0])  # 3.0 drives many cells into the clip
def test_fast_model_has_published_log_density(scale):
    """Potential energy and its gradient agree (float32) on a panel with missing cells."""
    _, (data, kwargs), (panel_data, _), _ = _inputs(12, 7, 3, drop=(3, 10, 40, 41))
    info = initialize_model(jax.random.key(0), published_model, model_kwargs={**data, **kwargs})
    leaves, tree = jax.tree.flatten(info.param_info.z)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(
        tree, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )

    def energy(model, arrays):
        return jax.value_and_grad(lambda p: potential_energy(model, (), {**arrays, **kwargs}, p))

    value, grads = energy(published_model, data)(params)
    fast_value, fast_grads = energy(fast_model, panel_data)(params)
    np.testing.assert_allclose(fast_value, value, rtol=2e-6)
    for name in grads:
        np.testing.assert_allclose(fast_grads[name], grads[name], rtol=1e-4, atol=1e-3)
    assert jnp.isfinite(value)


@pytest.mark.parametrize("at_mean", [False, True])
def test_local_model_has_fast_log_density(at_mean):
    """With each product's latents in its block slot, the local model's potential energy and
    gradient are the fast model's plus the empty slots' standard normal priors."""
    obs, _, (data, kwargs), _ = _inputs(40, 9, 3, drop=(3, 10, 40, 41))
    blocks = panel(obs)
    local_data, local_kwargs = local_inputs(obs, blocks)
    fast, local = fast_model, local_model
    if at_mean:
        fast = mcmc.effect_at_mean(fast_model, jnp.asarray(mean_log_price(obs)))
        local = mcmc.effect_at_mean(local_model, slot_mean_log_price)
    info = initialize_model(jax.random.key(0), fast, model_kwargs={**data, **kwargs})
    params = {
        k: v + 0.5 * jax.random.normal(jax.random.key(i), v.shape)
        for i, (k, v) in enumerate(info.param_info.z.items())
    }
    real = blocks.observed.any(-1)
    assert (~real).sum() > 0  # the panel has empty slots
    product_sites = [n for n in params if n.startswith("product_")]
    local_params = dict(params)
    for i, name in enumerate(product_sites):
        padding = jax.random.normal(jax.random.key(10 + i), real.shape)
        local_params[name] = jnp.where(real, params[name][blocks.product], padding)

    def energy(model, arrays, model_kwargs, p):
        return jax.value_and_grad(
            lambda p: potential_energy(model, (), {**arrays, **model_kwargs}, p)
        )(p)

    value, grads = energy(fast, data, kwargs, params)
    local_value, local_grads = energy(local, local_data, local_kwargs, local_params)
    padding_log_prior = sum(
        jax.scipy.stats.norm.logpdf(local_params[n])[~real].sum() for n in product_sites
    )
    np.testing.assert_allclose(local_value, value - padding_log_prior, rtol=2e-6)
    for name in params:
        expected = grads[name]
        if name in product_sites:
            got = slots_to_products(np.asarray(local_grads[name]), blocks)
            np.testing.assert_allclose(
                np.asarray(local_grads[name])[~real], local_params[name][~real], rtol=1e-5
            )
        else:
            got = local_grads[name]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3, err_msg=name)


def _build(model, data, kwargs, layout, **options) -> svi.SVI:
    """Sharded SVI of a panel model on ``layout``, learning rate 0.05 unless given."""
    options.setdefault("optimizer", svi.default_optimizer(learning_rate=0.05))
    return svi.build(
        jax.random.key(0),
        model,
        data,
        model_kwargs=kwargs,
        data_plate="rows",
        mesh=make_mesh(layout),
        **options,
    )


def test_fast_path_recovers_elasticities():
    """Sharded SVI of the fast model: elasticities correlate with the truth after 800 steps."""
    obs, _, (panel_data, kwargs), truth = _inputs(48, 52, 3, seed=3)
    problem = _build(fast_model, panel_data, kwargs, "sample=2,data=2")
    result = svi.fit(jax.random.key(1), problem, 800, progress_bar=False)
    draws = svi_draws.posterior_draws(jax.random.key(2), problem, result.params, 200)
    estimate = draws["product_elasticity"].mean(axis=0)
    correlation = np.corrcoef(estimate, truth.product_elasticity)[0, 1]
    assert correlation > 0.6, correlation
    assert abs(estimate.mean() - truth.product_elasticity.mean()) < 0.3
    assert result.losses[-50:].mean() < result.losses[:50].mean()


@pytest.mark.parametrize("at_mean", [False, True])
def test_local_model_reads_minibatch_blocks_by_index(at_mean):
    """A mini-batch given as the shard's whole blocks and the drawn blocks' positions has the
    loss and gradient of the same blocks gathered first (the same key draws the same blocks)."""
    obs, _, _, _ = _inputs(300, 9, 3)
    blocks = panel(obs, num_shards=2)
    data, kwargs = local_inputs(obs, blocks)
    model = mcmc.effect_at_mean(local_model, slot_mean_log_price) if at_mean else local_model
    results = []
    for rows_argument in (None, BLOCK_INDEX):
        problem = _build(
            model, data, kwargs, "sample=2,data=2", batch_size=6, rows_argument=rows_argument
        )
        batch = problem.subsample(jax.random.key(3), problem.data)
        whole = jax.tree.leaves(batch.arrays)[0].shape[0] == problem.data.mask.shape[0]
        assert whole == (rows_argument is not None)  # else the drawn blocks are gathered
        grad = jax.jit(jax.value_and_grad(problem.loss, has_aux=True))
        results.append(grad(problem.params, jax.random.key(4), batch))
    ((value, _), grads), ((indexed_value, _), indexed_grads) = results
    np.testing.assert_allclose(indexed_value, value, rtol=1e-6)
    for name in grads:
        np.testing.assert_allclose(indexed_grads[name], grads[name], rtol=1e-5, atol=1e-6)


def test_local_model_minibatch_fit_recovers_elasticities():
    """Mini-batch SVI of the local model (a fifth of the blocks a step, product effect at the
    mean log price): per-product posterior means correlate with the truth (0.86 after 1,500
    steps, 0.91 after 3,000; a full-batch fit of the fast model: 0.92 after 1,500)."""
    obs, _, _, truth = _inputs(400, 52, 10, seed=3)
    blocks = panel(obs, num_shards=2)
    data, kwargs = local_inputs(obs, blocks)
    num_blocks = len(blocks.category)
    problem = _build(
        mcmc.effect_at_mean(local_model, slot_mean_log_price),
        data,
        kwargs,
        "data=2",
        batch_size=2 * (num_blocks // 10),
        rows_argument=BLOCK_INDEX,
    )
    result = svi.fit(jax.random.key(1), problem, 1500, progress_bar=False)
    draws = svi_draws.posterior_draws(jax.random.key(2), problem, result.params, 200)
    elasticity = slots_to_products(draws["product_elasticity"], blocks)
    assert elasticity.shape == (200, 400)
    correlation = np.corrcoef(elasticity.mean(axis=0), truth.product_elasticity)[0, 1]
    assert correlation > 0.8, correlation
