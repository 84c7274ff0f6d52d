"""NUTS reference: recovery of known elasticities, chain layouts, reparameterisation, netCDF."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density

from samplepar import mcmc

NUM_PRODUCTS, NUM_PERIODS = 20, 10


def tiny_demand(product, log_price, num_products, sales=None):
    """Hierarchical Poisson demand: product effect and elasticity drawn around shared means."""
    mu_alpha = numpyro.sample("mu_alpha", dist.Normal(3.0, 1.0))
    sigma_alpha = numpyro.sample("sigma_alpha", dist.HalfNormal(1.0))
    mu_beta = numpyro.sample("mu_beta", dist.Normal(-1.0, 1.0))
    sigma_beta = numpyro.sample("sigma_beta", dist.HalfNormal(0.5))
    with numpyro.plate("products", num_products):
        beta = numpyro.sample("beta", dist.Normal(mu_beta, sigma_beta))
        alpha = numpyro.sample("alpha", dist.Normal(mu_alpha, sigma_alpha))
    rate = jnp.exp(alpha[product] + beta[product] * log_price)
    with numpyro.plate("obs", product.shape[0]):
        numpyro.sample("sales", dist.Poisson(rate), obs=sales)


def tiny_panel(seed=0):
    """20 x 10 panel: centred log prices (sd 0.3), ~50 sales a period; returns true elasticities."""
    rng = np.random.default_rng(seed)
    alpha = rng.normal(4.0, 0.3, NUM_PRODUCTS)
    beta = rng.normal(-1.5, 0.3, NUM_PRODUCTS)
    product = np.repeat(np.arange(NUM_PRODUCTS), NUM_PERIODS)
    log_price = rng.normal(0.0, 0.3, product.size).astype(np.float32)
    sales = rng.poisson(np.exp(alpha[product] + beta[product] * log_price))
    data = dict(product=jnp.asarray(product), log_price=jnp.asarray(log_price))
    return data, jnp.asarray(sales), beta


@pytest.fixture(scope="module")
def nuts_run():
    data, sales, beta = tiny_panel()
    config = mcmc.NUTSConfig(num_warmup=150, num_samples=100, num_chains=2)
    model = mcmc.noncentred(tiny_demand, ["alpha", "beta"])
    idata = mcmc.run_nuts(
        jax.random.key(0), model, **data, num_products=NUM_PRODUCTS, sales=sales, config=config
    )
    return idata, beta


def test_nuts_recovers_elasticities(nuts_run):
    idata, beta_true = nuts_run
    beta = np.asarray(idata.posterior["beta"])
    assert beta.shape == (2, 100, NUM_PRODUCTS)
    # Each elasticity is identified to about +-0.15 (sd) by 10 periods of ~50 sales.
    rmse = np.sqrt(np.mean((beta.mean(axis=(0, 1)) - beta_true) ** 2))
    assert rmse < 0.25
    lo, hi = np.quantile(beta.reshape(-1, NUM_PRODUCTS), [0.05, 0.95], axis=0)
    assert np.mean((lo <= beta_true) & (beta_true <= hi)) >= 0.7


def test_nuts_output_groups_and_summary(nuts_run, tmp_path):
    idata, _ = nuts_run
    assert idata.sample_stats["diverging"].shape == (2, 100)
    assert idata.log_likelihood["sales"].shape == (2, 100, NUM_PRODUCTS * NUM_PERIODS)
    assert idata.attrs["chain_method"] == "parallel"
    summary = mcmc.summarize(idata, ["mu_beta", "sigma_beta", "beta"])
    assert summary.num_transitions == 200
    assert summary.num_divergences <= 2
    assert summary.max_rhat < 1.05
    assert summary.min_ess_bulk > 50
    rhat = az.rhat(idata, var_names=["mu_beta", "sigma_beta", "beta"]).to_array().max()
    assert summary.max_rhat == pytest.approx(float(rhat), abs=1e-9)  # not rounded to 0.01
    assert list(summary.table.index[:2]) == ["mu_beta", "sigma_beta"]
    path = tmp_path / "nuts.nc"
    mcmc.save(idata, str(path))
    back = mcmc.load(str(path))
    np.testing.assert_array_equal(back.posterior["beta"], idata.posterior["beta"])
    assert back.attrs["num_chains"] == 2


@pytest.mark.full_optimization  # unoptimised, the two programs round apart and NUTS amplifies it
def test_parallel_equals_vectorized():
    """Chains on separate devices follow the same trajectories as chains vectorized on one."""
    data, sales, _ = tiny_panel(1)
    model = mcmc.noncentred(tiny_demand, ["alpha", "beta"])
    draws = {}
    for method in ("parallel", "vectorized"):
        config = mcmc.NUTSConfig(num_warmup=20, num_samples=5, num_chains=2, chain_method=method)
        idata = mcmc.run_nuts(
            jax.random.key(3), model, **data, num_products=NUM_PRODUCTS, sales=sales, config=config
        )
        draws[method] = np.asarray(idata.posterior["mu_beta"])
    np.testing.assert_allclose(draws["parallel"], draws["vectorized"], rtol=1e-4, atol=1e-4)


def test_chain_method_choice():
    assert mcmc.chain_method(4, num_devices=8) == "parallel"
    assert mcmc.chain_method(8, num_devices=8) == "parallel"
    assert mcmc.chain_method(4, num_devices=1) == "vectorized"
    assert mcmc.chain_method(4) == "parallel"  # 8 virtual devices in the tests


def test_noncentred_is_loc_plus_scale_times_z():
    data, sales, _ = tiny_panel()
    model = mcmc.noncentred(tiny_demand, ["beta"])
    trace = handlers.trace(handlers.seed(model, 1)).get_trace(
        **data, num_products=NUM_PRODUCTS, sales=sales
    )
    z = trace["beta_decentered"]["value"]
    expected = trace["mu_beta"]["value"] + trace["sigma_beta"]["value"] * z
    assert trace["beta"]["type"] == "deterministic"
    np.testing.assert_allclose(trace["beta"]["value"], expected, rtol=1e-6)
    assert trace["alpha"]["type"] == "sample"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("num_chains", 0, "num_chains"),
        ("num_samples", 0, "num_samples"),
        ("num_warmup", -1, "num_warmup"),
        ("target_accept_prob", 1.0, "target_accept_prob"),
        ("max_tree_depth", 0, "max_tree_depth"),
        ("chain_method", "pmap", "chain_method"),
    ],
)
def test_bad_config_names_the_setting(field, value, message):
    config = mcmc.NUTSConfig()._replace(**{field: value})
    with pytest.raises(ValueError, match=message):
        mcmc.check_config(config)


def test_parallel_needs_enough_devices():
    config = mcmc.NUTSConfig(num_chains=16, chain_method="parallel")
    with pytest.raises(ValueError, match="local devices"):
        mcmc.check_config(config)


def test_effect_at_mean_keeps_the_log_density():
    """Moving the intercept to the covariate mean has unit Jacobian: same joint density."""
    data, sales, _ = tiny_panel()
    kwargs = dict(**data, num_products=NUM_PRODUCTS, sales=sales)
    mean = jnp.linspace(0.5, 2.0, NUM_PRODUCTS)
    moved = mcmc.effect_at_mean(tiny_demand, mean, effect="alpha", slope="beta")
    trace = handlers.trace(handlers.seed(moved, 2)).get_trace(**kwargs)
    assert trace["alpha"]["type"] == "deterministic"
    alpha = trace["alpha_at_mean"]["value"] - trace["beta"]["value"] * mean
    np.testing.assert_allclose(trace["alpha"]["value"], alpha, rtol=1e-6)
    shared = {k: trace[k]["value"] for k in ("mu_alpha", "sigma_alpha", "mu_beta", "sigma_beta")}
    shared["beta"] = trace["beta"]["value"]
    at_mean = {"alpha_at_mean": trace["alpha_at_mean"]["value"]}
    log_moved, _ = log_density(moved, (), kwargs, {**shared, **at_mean})
    log_orig, _ = log_density(tiny_demand, (), kwargs, {**shared, "alpha": alpha})
    np.testing.assert_allclose(log_moved, log_orig, rtol=1e-5)


def test_effect_at_mean_needs_the_slope_first():
    data, sales, _ = tiny_panel()
    moved = mcmc.effect_at_mean(tiny_demand, 1.0, effect="mu_alpha", slope="beta")
    with pytest.raises(ValueError, match="'beta' must be sampled before 'mu_alpha'"):
        handlers.seed(moved, 0)(**data, num_products=NUM_PRODUCTS, sales=sales)
