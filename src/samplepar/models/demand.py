"""The hierarchical Poisson price-elasticity model, in two formulations with one log-density.

Both share the latent structure (:func:`latents`):

    global elasticity           g ~ Normal(-1, 1)
    category elasticities     e_c ~ Normal(g, sigma_cat)             (LocScaleReparam)
    product elasticities      e_p ~ Normal(e_{c(p)}, sigma_prod)     (LocScaleReparam)
    product effects           a_p ~ Normal(mu, sigma)                (log base demand)
    category-period effects  b_ct ~ Normal(0, sigma_cp)
    log demand            l_{pt} = a_p + b_{c(p)t} + e_p log price_{pt}
    units                 y_{pt} ~ Poisson(exp(clip(l_{pt}, -4, 20)))

Priors (:class:`Priors`) are weakly informative: elasticities centred on -1 (demand falls with
price) with unit scale; half-normal scales of 0.5 for the elasticity hierarchy and the
category-period effects; ``mu ~ Normal(3, 3)`` and ``sigma ~ HalfNormal(2)`` for log base demand,
which covers daily to yearly retail counts. Both elasticity levels are fully non-centred
(``LocScaleReparam(0)``), the usual cure for funnel geometry in SVI and NUTS alike.

:func:`published_model` is written as published: long observation vectors, gathers by index,
a plate ``obs`` over observations. :func:`fast_model` takes a blocked product x period panel
(:func:`samplepar.models.demand_data.panel`: blocks of up to 32 products of one category): one
plate ``rows`` over blocks whose factor is each block's log-likelihood, computed by
:func:`samplepar.models.block_poisson.block_log_likelihood` with its gradient fused into the
forward pass, and sum log(y!) precomputed once per block. Products, categories and periods
enter only through small gathers of per-product and per-block parameters.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.infer.reparam import LocScaleReparam

from samplepar.models.block_poisson import Blocks, block_log_likelihood

LOG_DEMAND_CLIP = (-4.0, 20.0)
OBS_PLATE = "obs"
ROWS_PLATE = "rows"
SLOTS_PLATE = "slots"
BLOCK_INDEX = "block_index"  # the local model's argument for a mini-batch's blocks


@dataclasses.dataclass(frozen=True)
class Priors:
    """Hyper-parameters of the priors (see the module docstring)."""

    elasticity_loc: float = -1.0
    elasticity_scale: float = 1.0
    sigma_category: float = 0.5
    sigma_product: float = 0.5
    effect_loc: float = 3.0
    effect_scale: float = 3.0
    sigma_effect: float = 2.0
    sigma_cat_period: float = 0.5


def latents(product_category, num_categories: int, num_periods: int, priors: Priors):
    """Samples the latent sites; returns (product elasticity [P], effect [P], b [C, T])."""
    category_el, sigma_prod, mu, sigma_effect, sigma_cp = hyper_latents(num_categories, priors)
    with numpyro.plate("products", len(product_category)):
        product_el, effect = product_latents(
            category_el[product_category], sigma_prod, mu, sigma_effect
        )
    return product_el, effect, cat_period_latents(num_categories, num_periods, sigma_cp)


def hyper_latents(num_categories: int, priors: Priors):
    """Samples the global sites and category elasticities; returns (category elasticity [C],
    product elasticity scale, effect location, effect scale, category-period scale)."""
    g = numpyro.sample(
        "global_elasticity", dist.Normal(priors.elasticity_loc, priors.elasticity_scale)
    )
    sigma_cat = numpyro.sample("sigma_category", dist.HalfNormal(priors.sigma_category))
    sigma_prod = numpyro.sample("sigma_product", dist.HalfNormal(priors.sigma_product))
    mu = numpyro.sample("mu_effect", dist.Normal(priors.effect_loc, priors.effect_scale))
    sigma_effect = numpyro.sample("sigma_effect", dist.HalfNormal(priors.sigma_effect))
    sigma_cp = numpyro.sample("sigma_cat_period", dist.HalfNormal(priors.sigma_cat_period))
    with numpyro.handlers.reparam(config={"category_elasticity": LocScaleReparam(0)}):
        with numpyro.plate("categories", num_categories):
            category_el = numpyro.sample("category_elasticity", dist.Normal(g, sigma_cat))
    return category_el, sigma_prod, mu, sigma_effect, sigma_cp


def product_latents(elasticity_loc, sigma_prod, mu, sigma_effect, real=None):
    """Samples each product's elasticity and effect in the enclosing plates.

    ``real`` (optional, broadcasting against ``elasticity_loc``) marks the places that hold a
    product; the others (a panel's empty slots) get standard normal priors, which no data and
    no other site touch, so the posterior of every product is unchanged.
    """
    loc_scale = [(elasticity_loc, sigma_prod), (mu, sigma_effect)]
    if real is not None:
        loc_scale = [
            (jnp.where(real, loc, 0.0), jnp.where(real, scale, 1.0)) for loc, scale in loc_scale
        ]
    (el_loc, el_scale), (effect_loc, effect_scale) = loc_scale
    with numpyro.handlers.reparam(config={"product_elasticity": LocScaleReparam(0)}):
        product_el = numpyro.sample("product_elasticity", dist.Normal(el_loc, el_scale))
    effect = numpyro.sample("product_effect", dist.Normal(effect_loc, effect_scale))
    return product_el, effect


def cat_period_latents(num_categories: int, num_periods: int, sigma_cp):
    """Samples the category-period effects ``[C, T]``."""
    with (
        numpyro.plate("cat_period_categories", num_categories, dim=-2),
        numpyro.plate("periods", num_periods, dim=-1),
    ):
        return numpyro.sample("cat_period_effect", dist.Normal(0.0, sigma_cp))


def published_model(
    product,
    category,
    period,
    log_price,
    units=None,
    *,
    product_category,
    num_categories: int,
    num_periods: int,
    priors: Priors = Priors(),
):
    """The model as published; observation vectors are ``[N]`` (see :class:`Observations`).

    ``product_category`` ``[P]`` gives each product's category code.
    """
    product_el, effect, cat_period = latents(product_category, num_categories, num_periods, priors)
    log_demand = effect[product] + cat_period[category, period] + product_el[product] * log_price
    rate = jnp.exp(jnp.clip(log_demand, *LOG_DEMAND_CLIP))
    with numpyro.plate(OBS_PLATE, log_price.shape[0]):
        numpyro.sample("units", dist.Poisson(rate), obs=units)


def fast_model(
    product,
    category,
    log_units_factorial,
    *,
    product_category,
    num_categories: int,
    num_periods: int,
    priors: Priors = Priors(),
    **cells,
):
    """The same log-density on panel blocks (see :class:`Panel`): ``product`` ``[B, K]``,
    ``category`` and ``log_units_factorial`` ``[B]``, ``cells`` the blocks' cell arrays and
    their sums (the fields of :class:`~samplepar.models.block_poisson.Blocks`).

    Blocks may be any subset of the panel's (one data shard's, a mini-batch), so it shards.
    """
    product_el, effect, cat_period = latents(product_category, num_categories, num_periods, priors)
    log_lik = block_log_likelihood(
        effect[product], product_el[product], cat_period[category], Blocks(**cells), LOG_DEMAND_CLIP
    )
    with numpyro.plate(ROWS_PLATE, len(category)):
        numpyro.factor("units", log_lik - log_units_factorial)


def local_model(
    category,
    log_units_factorial,
    filled,
    mean_log_price,
    *,
    num_blocks: int,
    num_categories: int,
    num_periods: int,
    priors: Priors = Priors(),
    block_index=None,
    **cells,
):
    """:func:`fast_model` with the product latents local to the blocks (the same posterior).

    A product's elasticity and effect are sampled per block slot (``[B, K]``, inside the
    ``rows`` plate declared with all ``num_blocks`` blocks, NumPyro's mini-batch idiom), so
    that sharded SVI samples, scores and differentiates them only on the blocks a device or a
    mini-batch holds (:mod:`samplepar.svi`, local latents). Empty slots get standard normal
    priors that touch nothing (:func:`product_latents`); :func:`slots_to_products` reads a
    product's values back. It takes the panel's arrays but ``product``, and each slot's
    ``filled`` flag and ``mean_log_price`` ``[B, K]`` (for :func:`slot_mean_log_price`), made
    once by :func:`local_inputs`. With ``block_index`` ``[B]`` the model is given a data
    shard's blocks whole and models its blocks at ``block_index`` (a mini-batch,
    ``svi.build(..., rows_argument=BLOCK_INDEX)``), reading their cells chunk by chunk instead
    of having them gathered first.
    """
    category_el, sigma_prod, mu, sigma_effect, sigma_cp = hyper_latents(num_categories, priors)
    del mean_log_price  # read by slot_mean_log_price
    category, log_units_factorial, filled = (
        _at_blocks(x, block_index) for x in (category, log_units_factorial, filled)
    )
    with numpyro.plate(ROWS_PLATE, num_blocks, subsample_size=len(category), dim=-2):
        with numpyro.plate(SLOTS_PLATE, filled.shape[1], dim=-1):
            product_el, effect = product_latents(
                category_el[category][:, None], sigma_prod, mu, sigma_effect, filled
            )
    cat_period = cat_period_latents(num_categories, num_periods, sigma_cp)
    log_lik = block_log_likelihood(
        effect, product_el, cat_period[category], Blocks(**cells), LOG_DEMAND_CLIP, block_index
    )
    with numpyro.plate(ROWS_PLATE, num_blocks, subsample_size=len(category), dim=-2):
        numpyro.factor("units", (log_lik - log_units_factorial)[:, None])


def slots_to_products(values, panel):
    """``[..., P]``: per-product values of per-slot ``values`` ``[..., B, K]`` (the panel's)."""
    real = np.asarray(panel.observed).any(-1)
    product = np.asarray(panel.product)[real]
    out = np.empty(np.shape(values)[:-2] + (len(product),), np.asarray(values).dtype)
    out[..., product] = np.asarray(values)[..., real]
    return out


def products_to_slots(values, panel, empty):
    """``[B, K, ...]``: per-product ``values`` ``[P, ...]`` in the panel's slots, ``empty``
    (broadcasting) in its empty slots; the inverse of :func:`slots_to_products`."""
    real = np.asarray(panel.observed).any(-1)
    values = np.asarray(values)
    real = real.reshape(real.shape + (1,) * (values.ndim - 1))
    return np.where(real, values[np.asarray(panel.product)], empty)


def draws_by_product(draws: dict, panel) -> dict:
    """:func:`local_model`'s posterior draws with its per-slot product sites (``product_*``,
    ``[S, B, K]``) turned per-product (``[S, P]``)."""
    return {
        name: slots_to_products(value, panel) if name.startswith("product_") else value
        for name, value in draws.items()
    }


def slot_mean_log_price(arrays: dict) -> jax.Array:
    """``[B, K]`` each slot's mean log price over its observed periods (0 for empty slots),
    from :func:`local_model`'s arguments (for ``mcmc.effect_at_mean``)."""
    return _at_blocks(arrays["mean_log_price"], arrays.get(BLOCK_INDEX))


def _at_blocks(x, block_index):
    """``x``'s blocks at ``block_index`` (all of them if it is None)."""
    return x if block_index is None else jnp.take(x, block_index, axis=0, mode="clip")


def published_inputs(obs) -> tuple[dict, dict]:
    """(observation arrays sharded over ``obs``, model kwargs) for :func:`published_model`."""
    data = {
        "product": obs.product,
        "category": obs.category,
        "period": obs.period,
        "log_price": obs.log_price,
        "units": obs.units,
    }
    return data, model_kwargs(obs)


def fast_inputs(obs, panel) -> tuple[dict, dict]:
    """(panel arrays sharded over ``rows``, model kwargs) for :func:`fast_model`."""
    return panel._asdict(), model_kwargs(obs)


def local_inputs(obs, panel) -> tuple[dict, dict]:
    """(panel arrays sharded over ``rows``, model kwargs) for :func:`local_model`."""
    sizes = model_kwargs(obs)
    del sizes["product_category"]
    arrays = {name: value for name, value in panel._asdict().items() if name != "product"}
    observed = np.asarray(panel.observed)
    count = observed.sum(-1)
    total = np.where(observed, panel.log_price, 0.0).sum(-1, dtype=np.float64)
    arrays["filled"] = count > 0
    arrays["mean_log_price"] = (total / np.maximum(count, 1)).astype(np.float32)
    return arrays, {**sizes, "num_blocks": len(panel.category)}


def model_kwargs(obs) -> dict:
    """The replicated keyword arguments both models take (category codes and sizes)."""
    return {
        "product_category": obs.product_category,
        "num_categories": len(obs.encoding.categories),
        "num_periods": len(obs.encoding.periods),
    }
