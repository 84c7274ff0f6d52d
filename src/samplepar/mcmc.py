"""NUTS reference for NumPyro models: chains spread over devices, ArviZ output, convergence summary.

Chains run with ``chain_method="parallel"`` (one chain per local device) when there are at least as
many local devices as chains, and vectorized on one device otherwise. The result is an ArviZ
``InferenceData`` with ``posterior``, ``sample_stats`` (``diverging``, tree depth, step size, ...)
and, when it is small enough, the pointwise ``log_likelihood``; :func:`summarize` condenses it into
R-hat, ESS and the number of divergent transitions.

Hierarchical models sampled in their centred form often diverge (the funnel between a group scale
and its members). :func:`noncentred` rewrites chosen sites with :class:`LocScaleReparam` so NUTS
samples the same posterior in the non-centred form; the original sites stay in the output as
deterministic values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro import handlers
from numpyro.distributions.transforms import AffineTransform
from numpyro.infer import MCMC, NUTS, init_to_median, init_to_sample, init_to_uniform
from numpyro.infer.reparam import LocScaleReparam, Reparam

if TYPE_CHECKING:  # ArviZ takes 1.5 s to import: only where draws become InferenceData
    import arviz as az

EXTRA_FIELDS = ("diverging", "num_steps", "accept_prob", "potential_energy", "energy")
INIT_STRATEGIES = {"median": init_to_median, "uniform": init_to_uniform, "sample": init_to_sample}


class NUTSConfig(NamedTuple):
    """Settings of a NUTS run.

    ``chain_method`` (``"parallel"``, ``"vectorized"``, ``"sequential"``) overrides the automatic
    choice of :func:`chain_method`; ``init`` names the initial-point strategy (``"median"`` of
    the prior by default, ``"uniform"``, ``"sample"``). ``max_log_likelihood_values`` bounds
    chains x draws x observations stored as the pointwise log-likelihood (float32, 4 bytes
    each); above it the group is left out.
    """

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    max_log_likelihood_values: int = 20_000_000
    chain_method: str | None = None
    init: str = "median"


class NUTSSummary(NamedTuple):
    """Convergence of a NUTS run; ``table`` is ArviZ's per-parameter summary."""

    table: pd.DataFrame
    num_divergences: int
    num_transitions: int
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    wall_time_s: float
    chain_method: str

    def converged(self, max_rhat: float = 1.01, max_divergences: int = 0) -> bool:
        """Whether R-hat and the divergence count are within the given limits."""
        return self.max_rhat < max_rhat and self.num_divergences <= max_divergences


def check_config(config: NUTSConfig) -> None:
    """Raise ``ValueError`` naming the first invalid setting of ``config``."""
    if config.num_chains < 1:
        raise ValueError(f"num_chains must be >= 1, got {config.num_chains}")
    if config.num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {config.num_samples}")
    if config.num_warmup < 0:
        raise ValueError(f"num_warmup must be >= 0, got {config.num_warmup}")
    if not 0.0 < config.target_accept_prob < 1.0:
        raise ValueError(f"target_accept_prob must be in (0, 1), got {config.target_accept_prob}")
    if config.chain_method not in (None, "parallel", "vectorized", "sequential"):
        raise ValueError(
            "chain_method must be None, 'parallel', 'vectorized' or 'sequential', "
            f"got {config.chain_method!r}"
        )
    if config.chain_method == "parallel" and config.num_chains > jax.local_device_count():
        raise ValueError(
            f"chain_method='parallel' needs num_chains ({config.num_chains}) <= local devices "
            f"({jax.local_device_count()})"
        )
    if config.init not in INIT_STRATEGIES:
        raise ValueError(f"init must be one of {sorted(INIT_STRATEGIES)}, got {config.init!r}")
    if config.max_tree_depth < 1:
        raise ValueError(f"max_tree_depth must be >= 1, got {config.max_tree_depth}")


def chain_method(num_chains: int, num_devices: int | None = None) -> str:
    """``"parallel"`` (one chain per device) with enough local devices, else ``"vectorized"``."""
    num_devices = jax.local_device_count() if num_devices is None else num_devices
    return "parallel" if num_chains <= num_devices else "vectorized"


def noncentred(model: Callable, sites: Sequence[str]) -> Callable:
    """``model`` with each of ``sites`` sampled as ``loc + scale * z``, ``z ~ N(0, 1)``.

    Same posterior, easier geometry. The latent of site ``name`` becomes ``name_decentered``;
    ``name`` itself stays a deterministic site.
    """
    return handlers.reparam(model, config={name: LocScaleReparam(centered=0) for name in sites})


def effect_at_mean(
    model: Callable,
    covariate_mean: Any,
    effect: str = "product_effect",
    slope: str = "product_elasticity",
) -> Callable:
    """``model`` with the intercept ``effect`` moved to the covariate's mean (same posterior).

    In ``effect + slope * x`` with ``x`` far from zero, intercept and slope are almost perfectly
    anti-correlated a posteriori. This samples ``{effect}_at_mean = effect + slope * mean(x)``
    instead (its density is ``effect``'s prior shifted by ``slope * covariate_mean``) and sets
    ``effect = {effect}_at_mean - slope * covariate_mean`` as a deterministic site. The map has
    unit Jacobian, so the posterior is unchanged; ``slope`` must be sampled (or be a
    deterministic site) before ``effect``. ``covariate_mean`` broadcasts against both sites;
    it may also be a function of the model's keyword arguments, for data that arrive in shards
    or mini-batches.
    """
    return _EffectAtMean(model, effect, slope, covariate_mean)


class _Shift(Reparam):
    """Samples ``{name}_at_mean ~ fn shifted by shift``; the site's value is that minus shift."""

    def __init__(self, shift):
        self.shift = shift

    def __call__(self, name, fn, obs):
        if obs is not None:
            raise ValueError(f"site {name!r} is observed; only a latent effect can be moved")
        shifted = dist.TransformedDistribution(fn, AffineTransform(self.shift, 1.0))
        return None, numpyro.sample(f"{name}_at_mean", shifted) - self.shift


class _EffectAtMean(handlers.reparam):
    """Records the slope's value as it is sampled and shifts the effect site by it."""

    def __init__(self, fn, effect, slope, covariate_mean):
        self.effect, self.slope, self.covariate_mean = effect, slope, covariate_mean
        self._slope_value = self._mean = None
        super().__init__(fn, config=self._reparam_of)

    def _reparam_of(self, msg):
        if msg["name"] != self.effect:
            return None
        if self._slope_value is None:
            raise ValueError(f"site {self.slope!r} must be sampled before {self.effect!r}")
        shift = self._slope_value * self._mean
        self._slope_value = None
        return _Shift(shift)

    def __call__(self, *args, **kwargs):
        mean = self.covariate_mean
        self._mean = mean(kwargs) if callable(mean) else mean
        return super().__call__(*args, **kwargs)

    def postprocess_message(self, msg):
        if msg["name"] == self.slope:
            self._slope_value = msg["value"]


def run_nuts(
    rng_key: jax.Array,
    model: Callable,
    *model_args: Any,
    config: NUTSConfig | None = None,
    dims: dict[str, list[str]] | None = None,
    coords: dict[str, Any] | None = None,
    progress_bar: bool = False,
    **model_kwargs: Any,
) -> az.InferenceData:
    """Sample ``model(*model_args, **model_kwargs)`` with NUTS; returns ``InferenceData``.

    ``idata.attrs`` records ``wall_time_s`` (sampling incl. compilation), ``chain_method`` and the
    settings. ``dims``/``coords`` name array dimensions as in :func:`arviz.from_numpyro`.
    ``progress_bar`` shows NumPyro's bars (one per chain), off under CI.
    """
    config = NUTSConfig() if config is None else config
    check_config(config)
    method = config.chain_method or chain_method(config.num_chains)
    kernel = NUTS(
        model,
        target_accept_prob=config.target_accept_prob,
        max_tree_depth=config.max_tree_depth,
        init_strategy=INIT_STRATEGIES[config.init](),
    )
    mcmc = MCMC(
        kernel,
        num_warmup=config.num_warmup,
        num_samples=config.num_samples,
        num_chains=config.num_chains,
        chain_method=method,
        progress_bar=progress_bar,
    )
    start = time.perf_counter()
    mcmc.run(rng_key, *model_args, extra_fields=EXTRA_FIELDS, **model_kwargs)
    jax.block_until_ready(mcmc.get_samples())
    wall = time.perf_counter() - start

    num_obs = _num_observed(model, model_args, model_kwargs)
    keep_log_lik = config.num_chains * config.num_samples * num_obs
    import arviz as az

    idata = az.from_numpyro(
        mcmc,
        log_likelihood=keep_log_lik <= config.max_log_likelihood_values,
        dims=dims,
        coords=coords,
    )
    idata.attrs.update(
        wall_time_s=wall,
        chain_method=method,
        num_warmup=config.num_warmup,
        num_samples=config.num_samples,
        num_chains=config.num_chains,
        target_accept_prob=config.target_accept_prob,
        max_tree_depth=config.max_tree_depth,
    )
    return idata


def summarize(idata: az.InferenceData, var_names: Sequence[str] | None = None) -> NUTSSummary:
    """R-hat (rank-normalised), bulk/tail ESS and divergences of ``var_names`` (all if ``None``).

    Unrounded: ArviZ's default two decimals would turn an R-hat of 1.0054 into 1.01. With one
    chain R-hat is NaN (it compares chains; ArviZ warns) and the run never counts as converged.
    """
    import arviz as az

    names = None if var_names is None else list(var_names)
    table = az.summary(idata, var_names=names, round_to="none")
    diverging = np.asarray(idata.sample_stats["diverging"])
    return NUTSSummary(
        table=table,
        num_divergences=int(diverging.sum()),
        num_transitions=int(diverging.size),
        max_rhat=float(table["r_hat"].max()),
        min_ess_bulk=float(table["ess_bulk"].min()),
        min_ess_tail=float(table["ess_tail"].min()),
        wall_time_s=float(idata.attrs.get("wall_time_s", float("nan"))),
        chain_method=str(idata.attrs.get("chain_method", "")),
    )


def save(idata: az.InferenceData, path: str) -> None:
    """Write ``idata`` to a netCDF file at ``path``."""
    idata.to_netcdf(path, engine="h5netcdf")


def load(path: str) -> az.InferenceData:
    """Read an ``InferenceData`` written by :func:`save`."""
    import arviz as az

    return az.from_netcdf(path, engine="h5netcdf")


def _num_observed(model: Callable, model_args: tuple, model_kwargs: dict) -> int:
    """Number of observed values in one run of ``model`` (sizes the log-likelihood group).

    The model is traced abstractly (shapes only): nothing is computed or compiled.
    """

    def observed_values():
        trace = handlers.trace(handlers.seed(model, 0)).get_trace(*model_args, **model_kwargs)
        return [s["value"] for s in trace.values() if s["type"] == "sample" and s["is_observed"]]

    return sum(int(np.prod(value.shape)) for value in jax.eval_shape(observed_values))
