"""Mean-field normal family: densities against scipy, analytic KL against Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from samplepar import variational

TREE = {"w": np.array([[0.5, -1.0], [2.0, 0.0]], np.float32), "b": np.array([0.3], np.float32)}


def test_init_centres_on_the_given_weights_with_the_given_scale():
    family = variational.mean_field_normal(init_scale=0.02)
    params = family.init(TREE)
    np.testing.assert_array_equal(params.loc["w"], TREE["w"])
    scales = variational.posterior_scale(params)
    np.testing.assert_allclose(scales["w"], 0.02, rtol=1e-5)


def test_log_prob_and_prior_match_scipy():
    family = variational.mean_field_normal(init_scale=0.5, prior_scale=2.0)
    params = family.init(TREE)
    draw, log_q = family.sample_and_log_prob(jax.random.key(0), params)
    expected_q = sum(
        stats.norm(TREE[k], 0.5).logpdf(np.asarray(draw[k], np.float64)).sum() for k in TREE
    )
    expected_p = sum(stats.norm(0, 2.0).logpdf(np.asarray(draw[k], np.float64)).sum() for k in TREE)
    assert float(log_q) == pytest.approx(expected_q, rel=1e-5)
    assert float(family.log_prob(params, draw)) == pytest.approx(expected_q, rel=1e-5)
    assert float(family.log_prior(draw)) == pytest.approx(expected_p, rel=1e-5)


def test_samples_have_the_posterior_moments():
    family = variational.mean_field_normal(init_scale=0.3)
    params = family.init(TREE)
    keys = jax.random.split(jax.random.key(1), 4000)
    draws, _ = jax.vmap(family.sample_and_log_prob, in_axes=(0, None))(keys, params)
    # standard error of the mean: 0.3 / sqrt(4000) ~ 0.005; of the std: 0.3 / sqrt(8000) ~ 0.0034
    np.testing.assert_allclose(draws["w"].mean(0), TREE["w"], atol=0.02)
    np.testing.assert_allclose(draws["w"].std(0), 0.3, atol=0.015)


def test_analytic_kl_matches_monte_carlo():
    family = variational.mean_field_normal(init_scale=0.4, prior_scale=1.5)
    params = family.init(TREE)
    keys = jax.random.split(jax.random.key(2), 20000)

    def log_ratio(key):
        draw, log_q = family.sample_and_log_prob(key, params)
        return log_q - family.log_prior(draw)

    samples = jax.vmap(log_ratio)(keys)
    standard_error = float(jnp.std(samples)) / np.sqrt(len(samples))
    assert abs(float(jnp.mean(samples)) - float(family.kl(params))) < 4 * standard_error


def test_bad_scales_are_refused():
    with pytest.raises(ValueError, match="init_scale"):
        variational.mean_field_normal(init_scale=0.0)
    with pytest.raises(ValueError, match="prior_scale"):
        variational.mean_field_normal(prior_scale=-1.0)
    with pytest.raises(ValueError, match="init_scale must be a finite positive number"):
        variational.mean_field_normal(init_scale=float("inf"))
    with pytest.raises(ValueError, match="init_scale must be a finite positive number >= 1e-30"):
        variational.mean_field_normal(init_scale=1e-40)  # its log-density overflows float32
