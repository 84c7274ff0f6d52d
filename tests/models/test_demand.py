"""The demand model: the fast formulation has the published log-density; SVI recovers truth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer.util import initialize_model, potential_energy

from samplepar import svi
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


def test_fast_path_recovers_elasticities():
    """Sharded SVI of the fast model: elasticities correlate with the truth after 800 steps."""
    obs, _, (panel_data, kwargs), truth = _inputs(48, 52, 3, seed=3)
    problem = svi.build(
        jax.random.key(0),
        fast_model,
        panel_data,
        model_kwargs=kwargs,
        data_plate="rows",
        mesh=make_mesh("sample=2,data=2"),
        optimizer=svi.default_optimizer(learning_rate=0.05),
    )
    result = svi.fit(jax.random.key(1), problem, 800, progress_bar=False)
    draws = svi.posterior_draws(jax.random.key(2), problem, result.params, 200)
    estimate = draws["product_elasticity"].mean(axis=0)
    correlation = np.corrcoef(estimate, truth.product_elasticity)[0, 1]
    assert correlation > 0.6, correlation
    assert abs(estimate.mean() - truth.product_elasticity.mean()) < 0.3
    assert result.losses[-50:].mean() < result.losses[:50].mean()
