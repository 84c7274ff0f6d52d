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
from typing import Any, NamedTuple

import arviz as az
import jax
import numpy as np
import pandas as pd
from numpyro import handlers
from numpyro.infer import MCMC, NUTS
from numpyro.infer.reparam import LocScaleReparam


class NUTSConfig(NamedTuple):
    """Settings of a NUTS run.

    ``chain_method`` (``"parallel"``, ``"vectorized"``, ``"sequential"``) overrides the automatic
    choice of :func:`chain_method`. ``max_log_likelihood_values`` bounds chains x draws x
    observations stored as the pointwise log-likelihood (float32, 4 bytes each); above it the
    group is left out.
    """

    num_warmup: int = 500
    num_samples: int = 500
    num_chains: int = 4
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10
    max_log_likelihood_values: int = 20_000_000
    chain_method: str | None = None


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


def run_nuts(
    rng_key: jax.Array,
    model: Callable,
    *model_args: Any,
    config: NUTSConfig | None = None,
    dims: dict[str, list[str]] | None = None,
    coords: dict[str, Any] | None = None,
    **model_kwargs: Any,
) -> az.InferenceData:
    """Sample ``model(*model_args, **model_kwargs)`` with NUTS; returns ``InferenceData``.

    ``idata.attrs`` records ``wall_time_s`` (sampling incl. compilation), ``chain_method`` and the
    settings. ``dims``/``coords`` name array dimensions as in :func:`arviz.from_numpyro`.
    """
    config = NUTSConfig() if config is None else config
    check_config(config)
    method = config.chain_method or chain_method(config.num_chains)
    kernel = NUTS(
        model,
        target_accept_prob=config.target_accept_prob,
        max_tree_depth=config.max_tree_depth,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=config.num_warmup,
        num_samples=config.num_samples,
        num_chains=config.num_chains,
        chain_method=method,
        progress_bar=False,
    )
    start = time.perf_counter()
    mcmc.run(rng_key, *model_args, extra_fields=("diverging",), **model_kwargs)
    jax.block_until_ready(mcmc.get_samples())
    wall = time.perf_counter() - start

    num_obs = _num_observed(model, model_args, model_kwargs)
    keep_log_lik = config.num_chains * config.num_samples * num_obs
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
    """R-hat (rank-normalised), bulk/tail ESS and divergences of ``var_names`` (all if ``None``)."""
    table = az.summary(idata, var_names=None if var_names is None else list(var_names))
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
    return az.from_netcdf(path, engine="h5netcdf")


def _num_observed(model: Callable, model_args: tuple, model_kwargs: dict) -> int:
    """Number of observed values in one run of ``model`` (sizes the log-likelihood group)."""
    trace = handlers.trace(handlers.seed(model, 0)).get_trace(*model_args, **model_kwargs)
    return sum(
        int(np.prod(site["value"].shape))
        for site in trace.values()
        if site["type"] == "sample" and site["is_observed"]
    )
