"""Guides for SVI on the demand model, and the PSIS k-hat check of a fitted guide.

Guides (:func:`get_guide`):

- ``"normal"``: :class:`~numpyro.infer.autoguide.AutoNormal`, mean-field (the article's choice).
- ``"lowrank"``: :class:`~numpyro.infer.autoguide.AutoLowRankMultivariateNormal`, a normal with a
  rank-``r`` plus diagonal covariance over all latents.
- ``"paired"``: :class:`AutoPairedNormal`, mean-field except that a product's effect and its
  elasticity share a full 2 x 2 covariance. In the demand model log price sits far from zero
  (around 1.5), so a product's intercept and slope are almost perfectly anti-correlated a
  posteriori; a mean-field guide must then shrink the elasticity's variance by about
  ``1 - rho**2``. Keeping the pair joint costs 5 parameters a product instead of 4. It helps,
  but mean-field on the model with the effect at the mean log price
  (:func:`samplepar.mcmc.effect_at_mean`) works better and is the default of
  :mod:`samplepar.compare`.

:func:`psis_khat` draws from a fitted guide, computes the importance ratios
``log p(theta, y) - log q(theta)`` and fits the Pareto tail (PSIS, Vehtari et al. 2015). k-hat
above 0.7 means the guide misses posterior mass badly enough that its uncertainty is not to be
trusted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import biject_to, constraints
from numpyro.infer import init_to_median
from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from numpyro.infer.util import log_density

GUIDES = ("normal", "lowrank", "paired")
PAIRED_SITES = ("product_effect", "product_elasticity_decentered")
KHAT_GOOD, KHAT_BAD = 0.5, 0.7


class AutoPairedNormal(AutoNormal):
    """AutoNormal with a full covariance, per plate element, across the sites of ``block``.

    ``block`` names latent sites with real support, one shape ``[N]``, in one plate; element
    ``i`` of all of them is drawn jointly from ``MultivariateNormal(loc[i], scale_tril[i])``
    (``loc [N, k]``, ``scale_tril [N, k, k]``). Every other latent site is mean-field, as in
    AutoNormal (same parameter names).
    """

    def __init__(self, model: Callable, block: Sequence[str] = PAIRED_SITES, **kwargs: Any):
        if len(block) < 2:
            raise ValueError(f"block needs at least two site names, got {list(block)}")
        self.block = tuple(block)
        super().__init__(model, **kwargs)

    def _setup_prototype(self, *args, **kwargs):
        super()._setup_prototype(*args, **kwargs)
        latent = {
            name: site
            for name, site in self.prototype_trace.items()
            if site["type"] == "sample" and not site["is_observed"]
        }
        missing = [name for name in self.block if name not in latent]
        if missing:
            raise ValueError(
                f"block sites {missing} are not latent sites of the model; it has {list(latent)}"
            )
        shapes = {name: jnp.shape(self._init_locs[name]) for name in self.block}
        stacks = {tuple(f.name for f in latent[name]["cond_indep_stack"]) for name in self.block}
        if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
            raise ValueError(f"block sites must share one shape [N]; got {shapes}")
        if len(stacks) != 1 or len(next(iter(stacks))) != 1:
            raise ValueError(f"block sites must lie in one common plate; got plates {stacks}")
        for name in self.block:
            support = latent[name]["fn"].support
            if isinstance(support, constraints.independent):
                support = support.base_constraint
            if support is not constraints.real:
                raise ValueError(f"block site {name!r} must have real support")
        self._block_plate = latent[self.block[0]]["cond_indep_stack"][0].name

    def _block_params(self):
        """(loc [N, k], scale_tril [N, k, k]) as ``numpyro.param`` sites."""
        init = jnp.stack([self._init_locs[name] for name in self.block], axis=-1)
        eye = jnp.broadcast_to(jnp.eye(len(self.block)), init.shape + (len(self.block),))
        loc = numpyro.param(f"{self.prefix}_block_loc", init)
        scale_tril = numpyro.param(
            f"{self.prefix}_block_scale_tril",
            self._init_scale * eye,
            constraint=constraints.scaled_unit_lower_cholesky,
        )
        return loc, scale_tril

    def __call__(self, *args, **kwargs):
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, site in self.prototype_trace.items():
            if site["type"] != "sample" or site["is_observed"] or name in self.block:
                continue
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                result[name] = numpyro.sample(name, self._site_dist(name, site))
        loc, scale_tril = self._block_params()
        with plates[self._block_plate]:
            joint = numpyro.sample(
                f"_{self.prefix}_block_latent",
                # scale_tril is lower Cholesky by its constraint. NumPyro's check of it runs under
                # jax.ensure_compile_time_eval, where its tril cannot follow the device-varying
                # parameters of a sharded step ("pvary should be called under jax.shard_map").
                dist.MultivariateNormal(loc, scale_tril=scale_tril, validate_args=False),
                infer={"is_auxiliary": True},
            )
            for i, name in enumerate(self.block):
                result[name] = numpyro.sample(name, dist.Delta(joint[..., i]))
        return result

    def _site_dist(self, name: str, site: dict):
        """The mean-field factor of a site outside the block, in its constrained space."""
        event_dim = self._event_dims[name]
        init_loc = self._init_locs[name]
        loc = numpyro.param(f"{name}_{self.prefix}_loc", init_loc, event_dim=event_dim)
        scale = numpyro.param(
            f"{name}_{self.prefix}_scale",
            jnp.full(jnp.shape(init_loc), self._init_scale),
            constraint=self.scale_constraint,
            event_dim=event_dim,
        )
        normal = dist.Normal(loc, scale).to_event(event_dim)
        return dist.TransformedDistribution(normal, biject_to(site["fn"].support))

    def sample_posterior(self, rng_key, params, *args, sample_shape=(), **kwargs):
        mean_field_key, block_key = jax.random.split(rng_key)
        names = [name for name in self._init_locs if name not in self.block]
        keys = dict(zip(names, jax.random.split(mean_field_key, len(names)), strict=True))
        latent = {
            name: dist.Normal(
                params[f"{name}_{self.prefix}_loc"], params[f"{name}_{self.prefix}_scale"]
            ).sample(keys[name], sample_shape)
            for name in names
        }
        joint = dist.MultivariateNormal(
            params[f"{self.prefix}_block_loc"],
            scale_tril=params[f"{self.prefix}_block_scale_tril"],
        ).sample(block_key, sample_shape)
        latent.update({name: joint[..., i] for i, name in enumerate(self.block)})
        return self._constrain(latent)

    def median(self, params):
        loc = params[f"{self.prefix}_block_loc"]
        latent = {
            name: params[f"{name}_{self.prefix}_loc"]
            for name in self._init_locs
            if name not in self.block
        }
        latent.update({name: loc[..., i] for i, name in enumerate(self.block)})
        return self._constrain(latent)


def get_guide(
    name: str,
    model: Callable,
    *,
    init_scale: float = 0.1,
    rank: int | None = None,
    init_loc_fn: Callable = init_to_median,
):
    """The guide called ``name`` (one of :data:`GUIDES`) for ``model``.

    ``rank`` is the low-rank guide's rank (NumPyro's default, about sqrt(dimension), if None).
    Locations start at the prior medians (``init_loc_fn``), scales at ``init_scale``.
    """
    options = dict(init_scale=init_scale, init_loc_fn=init_loc_fn)
    if name == "normal":
        return AutoNormal(model, **options)
    if name == "lowrank":
        return AutoLowRankMultivariateNormal(model, rank=rank, **options)
    if name == "paired":
        return AutoPairedNormal(model, **options)
    raise ValueError(f"unknown guide {name!r}; choose one of {', '.join(GUIDES)}")


class KHat(NamedTuple):
    """PSIS diagnostic of a guide: Pareto k-hat, the raw log ratios ``[S]`` and a verdict."""

    khat: float
    log_ratios: np.ndarray
    trusted: bool
    message: str


def log_ratios(
    rng_key: jax.Array,
    model: Callable,
    guide: Callable,
    params: dict,
    num_draws: int,
    *model_args: Any,
    batch_size: int = 64,
    **model_kwargs: Any,
) -> jax.Array:
    """``[num_draws]`` importance log ratios ``log p(theta, y) - log q(theta)``, theta ~ q.

    ``params`` are the guide's constrained parameters. Draws are evaluated ``batch_size`` at a
    time (memory: ``batch_size`` evaluations of the model), in one compiled program whose inputs
    are the keyword arguments that are ``jax.Array``s (the data); the other arguments are fixed
    into it, as an SVI step fixes them.
    """
    data = {k: v for k, v in model_kwargs.items() if isinstance(v, jax.Array)}
    fixed = {k: v for k, v in model_kwargs.items() if k not in data}

    def one(key, params, data):
        kwargs = {**fixed, **data}
        log_q, guide_trace = log_density(handlers.seed(guide, key), model_args, kwargs, params)
        log_p, _ = log_density(handlers.replay(model, guide_trace), model_args, kwargs, params)
        return log_p - log_q

    @jax.jit
    def all_ratios(rng_key, params, data):
        keys = jax.random.split(rng_key, num_draws)
        per_draw = functools.partial(one, params=params, data=data)
        return jax.lax.map(per_draw, keys, batch_size=min(batch_size, num_draws))

    return all_ratios(rng_key, params, data)


def psis_khat(
    rng_key: jax.Array,
    model: Callable,
    guide: Callable,
    params: dict,
    *model_args: Any,
    num_draws: int = 1000,
    batch_size: int = 64,
    **model_kwargs: Any,
) -> KHat:
    """Pareto k-hat of the guide's importance ratios, with a plain-language verdict."""
    ratios = np.asarray(
        log_ratios(
            rng_key,
            model,
            guide,
            params,
            num_draws,
            *model_args,
            batch_size=batch_size,
            **model_kwargs,
        ),
        np.float64,
    )
    if not np.isfinite(ratios).all():
        bad = int((~np.isfinite(ratios)).sum())
        return KHat(
            float("inf"),
            ratios,
            False,
            f"{bad} of {num_draws} guide draws have a non-finite model density: the guide puts "
            "mass where the model has none; do not trust it.",
        )
    import arviz as az  # 1.5 s to import: only where k-hat is computed

    _, khat = az.psislw(ratios)
    khat = float(khat)
    return KHat(khat, ratios, khat <= KHAT_BAD, khat_message(khat))


def khat_message(khat: float) -> str:
    """What a k-hat value means for the user of the fitted guide."""
    if khat <= KHAT_GOOD:
        return (
            f"k-hat = {khat:.2f} <= {KHAT_GOOD}: the guide covers the posterior well; its means "
            "and intervals can be used."
        )
    if khat <= KHAT_BAD:
        return (
            f"k-hat = {khat:.2f} in ({KHAT_GOOD}, {KHAT_BAD}]: the guide is usable, but its "
            "intervals may be somewhat too narrow."
        )
    return (
        f"k-hat = {khat:.2f} > {KHAT_BAD}: the guide is not to be trusted. It misses parts of "
        "the posterior, so its intervals are likely too narrow and its means may be biased. "
        "Check it against NUTS, or decorrelate the latents (e.g. the product effect at the "
        "mean log price) or keep correlated latents together in the guide."
    )
