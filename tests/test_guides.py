"""Guides: the paired guide keeps intercept-slope correlation; PSIS k-hat flags a bad guide."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal

from samplepar import guides

GROUPS, PER_GROUP, PRIOR_SD = 6, 30, 10.0


def regression(x, y=None):
    """Per-group Gaussian regression y = a + b x + N(0, 1); a, b ~ N(0, PRIOR_SD)."""
    with numpyro.plate("groups", x.shape[0]):
        a = numpyro.sample("a", dist.Normal(0.0, PRIOR_SD))
        b = numpyro.sample("b", dist.Normal(0.0, PRIOR_SD))
    with numpyro.plate("obs", x.shape[1], dim=-1), numpyro.plate("g", x.shape[0], dim=-2):
        numpyro.sample("y", dist.Normal(a[:, None] + b[:, None] * x, 1.0), obs=y)


def regression_data():
    """Covariate around 1.0 with sd 0.3 (like log price): a and b are ~ -0.96 correlated."""
    rng = np.random.default_rng(0)
    x = 1.0 + 0.3 * rng.standard_normal((GROUPS, PER_GROUP))
    y = 2.0 - 1.5 * x + rng.standard_normal(x.shape)
    return jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)


def exact_posterior(x, y):
    """Conjugate posterior of (a_i, b_i): means [G, 2] and covariances [G, 2, 2]."""
    design = np.stack([np.ones_like(x), x], axis=-1).astype(np.float64)
    precision = np.einsum("gni,gnj->gij", design, design) + np.eye(2) / PRIOR_SD**2
    cov = np.linalg.inv(precision)
    mean = np.einsum("gij,gnj,gn->gi", cov, design, np.asarray(y, np.float64))
    return mean, cov


def fit(guide, x, y, steps=1500):
    svi = SVI(regression, guide, optax.adam(0.05), Trace_ELBO(num_particles=4))
    return svi.run(jax.random.key(0), steps, x, y, progress_bar=False).params


@pytest.fixture(scope="module")
def fitted():
    x, y = regression_data()
    out = {}
    for name, guide in [
        ("paired", guides.AutoPairedNormal(regression, block=("a", "b"))),
        ("normal", AutoNormal(regression)),
    ]:
        params = fit(guide, x, y)
        draws = guide.sample_posterior(jax.random.key(1), params, sample_shape=(4000,))
        out[name] = (guide, params, np.stack([draws["a"], draws["b"]], axis=-1))
    return x, y, out


def test_paired_guide_matches_exact_posterior(fitted):
    x, y, out = fitted
    mean, cov = exact_posterior(x, y)
    draws = out["paired"][2]
    sd_b = np.sqrt(cov[:, 1, 1])
    np.testing.assert_allclose(draws[..., 1].mean(0), mean[:, 1], atol=0.3 * sd_b.max())
    np.testing.assert_allclose(draws[..., 1].std(0), sd_b, rtol=0.2)
    corr = np.array([np.corrcoef(draws[:, g, 0], draws[:, g, 1])[0, 1] for g in range(GROUPS)])
    assert np.all(corr < -0.85)


def test_mean_field_shrinks_the_slope_variance(fitted):
    """Mean-field sd of b is about sd * sqrt(1 - rho^2): here < 0.4 of the exact sd."""
    x, y, out = fitted
    _, cov = exact_posterior(x, y)
    ratio = out["normal"][2][..., 1].std(0) / np.sqrt(cov[:, 1, 1])
    assert np.all(ratio < 0.4)


def test_khat_passes_good_guides_and_flags_shrunk_one(fitted):
    x, y, out = fitted
    guide, params, _ = out["paired"]
    mean, cov = exact_posterior(x, y)
    exact = {
        "auto_block_loc": jnp.asarray(mean, jnp.float32),
        "auto_block_scale_tril": jnp.asarray(1.1 * np.linalg.cholesky(cov), jnp.float32),
    }
    good = guides.psis_khat(
        jax.random.key(2), regression, guide, exact, x, y, num_draws=500, batch_size=500
    )
    assert good.khat < guides.KHAT_GOOD and good.trusted
    assert "can be used" in good.message
    fitted_paired = guides.psis_khat(
        jax.random.key(2), regression, guide, params, x, y, num_draws=500, batch_size=500
    )
    assert fitted_paired.trusted
    guide, params, _ = out["normal"]
    bad = guides.psis_khat(
        jax.random.key(2), regression, guide, params, x, y, num_draws=500, batch_size=500
    )
    assert bad.khat > guides.KHAT_BAD and not bad.trusted
    assert "not to be trusted" in bad.message


def test_khat_flags_tiny_scales():
    x, y = regression_data()
    guide = AutoNormal(regression)
    handlers.seed(guide, 0)(x, y)  # sets up the guide's sites
    mean, cov = exact_posterior(x, y)
    params = {
        "a_auto_loc": jnp.asarray(mean[:, 0], jnp.float32),
        "b_auto_loc": jnp.asarray(mean[:, 1], jnp.float32),
        "a_auto_scale": jnp.full(GROUPS, 1e-3),
        "b_auto_scale": jnp.full(GROUPS, 1e-3),
    }
    result = guides.psis_khat(
        jax.random.key(3), regression, guide, params, x, y, num_draws=500, batch_size=500
    )
    assert result.khat > guides.KHAT_BAD


def test_log_ratios_equal_direct_formula(fitted):
    """log p(theta, y) - log q(theta) computed by hand for the paired guide's draws."""
    x, y, out = fitted
    guide, params, _ = out["paired"]
    key = jax.random.key(4)
    ratios = guides.log_ratios(key, regression, guide, params, 3, x, y)
    for i, k in enumerate(jax.random.split(key, 3)):
        seeded = handlers.substitute(handlers.seed(guide, k), data=params)
        tr = handlers.trace(seeded).get_trace(x, y)
        a, b = tr["a"]["value"], tr["b"]["value"]
        q = dist.MultivariateNormal(
            params["auto_block_loc"], scale_tril=params["auto_block_scale_tril"]
        ).log_prob(jnp.stack([a, b], -1))
        p = (
            dist.Normal(0.0, PRIOR_SD).log_prob(a).sum()
            + dist.Normal(0.0, PRIOR_SD).log_prob(b).sum()
            + dist.Normal(a[:, None] + b[:, None] * x, 1.0).log_prob(y).sum()
        )
        np.testing.assert_allclose(ratios[i], p - q.sum(), rtol=1e-4)


def test_get_guide_names():
    assert isinstance(guides.get_guide("normal", regression), AutoNormal)
    assert isinstance(guides.get_guide("lowrank", regression), AutoLowRankMultivariateNormal)
    assert isinstance(guides.get_guide("paired", regression), guides.AutoPairedNormal)
    with pytest.raises(ValueError, match="unknown guide 'fullrank'; choose one of normal"):
        guides.get_guide("fullrank", regression)


def test_paired_guide_names_missing_sites():
    x, y = regression_data()
    guide = guides.AutoPairedNormal(regression, block=("a", "c"))
    with pytest.raises(ValueError, match=r"block sites \['c'\] are not latent sites"):
        handlers.seed(guide, 0)(x, y)
