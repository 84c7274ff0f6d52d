"""svi.build's defaults give the right posterior: a Bayesian linear regression against its exact
posterior, computed by quadrature over the noise scale (the weights integrate out in closed
form)."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import stats

from samplepar import svi, svi_draws

PRIOR_SD = 10.0  # of the slope and the intercept
NOISE_PRIOR_SCALE = 5.0  # HalfNormal scale of the noise sd


def _regression(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, PRIOR_SD))
    b = numpyro.sample("b", dist.Normal(0.0, PRIOR_SD))
    sigma = numpyro.sample("sigma", dist.HalfNormal(NOISE_PRIOR_SCALE))
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("y", dist.Normal(w * x + b, sigma), obs=y)


def _exact_posterior(x, y):
    """Posterior means and sds of w, b and sigma: a grid over sigma, each point weighted by its
    prior and the marginal likelihood of y with (w, b) integrated out."""
    design = np.stack([x, np.ones_like(x)], axis=1).astype(np.float64)
    y = y.astype(np.float64)
    gram, projection, n = design.T @ design, design.T @ y, len(y)
    sigmas = np.linspace(0.3, 0.8, 2001)
    log_weight, means, covs = [], [], []
    for sigma in sigmas:
        cov = np.linalg.inv(gram / sigma**2 + np.eye(2) / PRIOR_SD**2)
        # log N(y; 0, sigma^2 I + PRIOR_SD^2 X X^T) by the determinant lemma and Woodbury
        inner = np.eye(2) * sigma**2 / PRIOR_SD**2 + gram
        quadratic = (y @ y - projection @ np.linalg.solve(inner, projection)) / sigma**2
        log_det = 2 * n * np.log(sigma)
        log_det += np.linalg.slogdet(np.eye(2) + PRIOR_SD**2 * gram / sigma**2)[1]
        log_lik = -0.5 * (n * np.log(2 * np.pi) + log_det + quadratic)
        log_prior = stats.halfnorm(scale=NOISE_PRIOR_SCALE).logpdf(sigma)
        log_weight.append(log_lik + log_prior)
        means.append(cov @ projection / sigma**2)
        covs.append(cov)
    weight = np.exp(np.array(log_weight) - max(log_weight))
    weight /= weight.sum()
    means, covs = np.array(means), np.array(covs)
    coef_mean = weight @ means
    coef_var = weight @ np.diagonal(covs, axis1=1, axis2=2) + weight @ (means - coef_mean) ** 2
    sigma_mean = weight @ sigmas
    sigma_sd = np.sqrt(weight @ (sigmas - sigma_mean) ** 2)
    return {
        "w": (coef_mean[0], np.sqrt(coef_var[0])),
        "b": (coef_mean[1], np.sqrt(coef_var[1])),
        "sigma": (sigma_mean, sigma_sd),
    }


@pytest.mark.parametrize("init_seed", [0, 1, 4])
def test_defaults_recover_the_exact_posterior_of_a_linear_regression(init_seed):
    """Means within a fifth of a posterior sd and sds within 15%, on all devices (``data=8``),
    from three of AutoNormal's random initialisations.

    With the IW-ELBO (``RenyiELBO(0)``, the default before) the sds came out up to 2.1x the exact
    ones. With optax's Adam ``b2`` of 0.999 (the default before), the fit from seed 1 (a first
    loss of 34,750, against 224 at the optimum) ended 34 sds from the exact mean.
    """
    rng = np.random.default_rng(1)
    x = rng.normal(size=300).astype(np.float32)
    y = (2.0 * x - 1.0 + 0.5 * rng.normal(size=300)).astype(np.float32)
    exact = _exact_posterior(x, y)

    problem = svi.build(jax.random.key(init_seed), _regression, {"x": x, "y": y})
    result = svi.fit(jax.random.key(1), problem, 3000, progress_bar=False)
    draws = svi_draws.posterior_draws(jax.random.key(2), problem, result.params, 8000)

    for site, (mean, sd) in exact.items():
        fitted = np.asarray(draws[site])
        assert abs(fitted.mean() - mean) < 0.2 * sd, (site, fitted.mean(), mean, sd)
        assert 0.85 < fitted.std() / sd < 1.15, (site, fitted.std(), sd)
