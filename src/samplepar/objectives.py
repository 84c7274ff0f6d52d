"""Objectives, reduced exactly across the ``sample`` and ``data`` mesh axes.

Every objective is a small frozen config consumed by :func:`reduce_objective`, which runs inside
``shard_map`` on one shard's particle quantities:

- ``log_lik``: ``[S_local, B_local]`` per-example log-likelihood of each local sample;
- ``global_term``: ``[S_local]`` log p(theta_s) - log q(theta_s) (the terms outside the data);
- ``kl``: the analytic KL(q || p), replicated, or ``None``.

The data term of sample s is ``N / B`` times its sum over the global batch (a ``psum`` over
``data``). Log-mean-exp over samples takes the global max (``pmax`` over ``sample``) and then the
global sum of exponentials (``psum``), so every layout computes the same number.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from samplepar.mesh import DATA, SAMPLE


@dataclasses.dataclass(frozen=True)
class ELBO:
    """Mean over samples of the scaled data log-likelihood, minus KL(q || p).

    With ``analytic_kl`` the KL is exact where the family has one; otherwise the Monte-Carlo
    estimate ``mean_s [log p(theta_s) - log q(theta_s)]`` is used.
    """

    analytic_kl: bool = True


@dataclasses.dataclass(frozen=True)
class RenyiELBO:
    """Renyi-alpha bound: ``1/(1-alpha) log mean_s exp((1-alpha) log w_s)``.

    ``alpha = 0`` is the importance-weighted ELBO; ``alpha -> 1`` tends to the ELBO.
    """

    alpha: float = 0.0

    def __post_init__(self):
        alpha = self.alpha
        if not isinstance(alpha, int | float) or not math.isfinite(alpha):
            raise ValueError(f"RenyiELBO alpha must be a finite number, got {alpha!r}")
        if alpha < 0:
            raise ValueError(f"RenyiELBO alpha must be >= 0 (got {alpha}); 0 is the IW-ELBO")
        if alpha == 1:
            raise ValueError(
                "RenyiELBO alpha must differ from 1; alpha = 1 is the ELBO: use ELBO()"
            )


def IWELBO() -> RenyiELBO:  # noqa: N802 - reads as a config, like ELBO()
    """The importance-weighted ELBO, ``log mean_s w_s``."""
    return RenyiELBO(alpha=0.0)


@dataclasses.dataclass(frozen=True)
class PredictiveNLL:
    """Negative log-likelihood of the sample-averaged predictive plus ``kl_weight`` times KL.

    ``-sum_i log mean_s p(y_i | theta_s) + kl_weight * KL``: the loss of the sampling-parallelism
    paper, here reduced exactly across sample shards instead of by averaging gradients.
    """

    kl_weight: float = 1.0

    def __post_init__(self):
        if not (math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"PredictiveNLL kl_weight must be >= 0, got {self.kl_weight}")


Objective = ELBO | RenyiELBO | PredictiveNLL

OBJECTIVE_NAMES = ("elbo", "iwelbo", "renyi", "predictive-nll")


def get_objective(name: str, alpha: float | None = None) -> Objective:
    """An objective by name: elbo, iwelbo, renyi (with ``alpha``) or predictive-nll."""
    key = name.strip().lower().replace("_", "-")
    if key == "elbo":
        return ELBO()
    if key == "iwelbo":
        return IWELBO()
    if key == "renyi":
        return RenyiELBO(0.0 if alpha is None else alpha)
    if key in ("predictive-nll", "nll"):
        return PredictiveNLL()
    raise ValueError(f"unknown objective {name!r}; choose one of {', '.join(OBJECTIVE_NAMES)}")


def _logmeanexp_over_samples(x: jax.Array, num_samples: int) -> jax.Array:
    """``log mean_s exp(x[s, ...])`` over every sample shard; ``x`` is ``[S_local, ...]``."""
    peak = jax.lax.pmax(jax.lax.stop_gradient(jnp.max(x, axis=0)), SAMPLE)
    peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
    total = jax.lax.psum(jnp.sum(jnp.exp(x - peak), axis=0), SAMPLE)
    return peak + jnp.log(total) - math.log(num_samples)


def _mean_over_samples(x: jax.Array, num_samples: int) -> jax.Array:
    return jax.lax.psum(jnp.sum(x, axis=0), SAMPLE) / num_samples


def reduce_objective(
    objective: Objective,
    log_lik: jax.Array,
    global_term: jax.Array,
    kl: jax.Array | None,
    num_samples: int,
    data_scale: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Returns (objective value to maximise, diagnostics), identical on every device.

    ``data_scale`` is dataset size over global batch size (1 for a full batch).
    """
    divergence = _divergence(objective, global_term, kl, num_samples)
    if isinstance(objective, PredictiveNLL):
        per_example = _logmeanexp_over_samples(log_lik, num_samples)
        data_term = data_scale * jax.lax.psum(jnp.sum(per_example), DATA)
        value = data_term - objective.kl_weight * divergence
        return value, {"log_likelihood": data_term, "kl": divergence}
    data_per_sample = data_scale * jax.lax.psum(jnp.sum(log_lik, axis=1), DATA)
    expected_log_lik = _mean_over_samples(data_per_sample, num_samples)
    if isinstance(objective, ELBO):
        value = expected_log_lik - divergence
    elif isinstance(objective, RenyiELBO):
        one_minus_alpha = 1.0 - objective.alpha
        log_weight = data_per_sample + global_term
        value = _logmeanexp_over_samples(one_minus_alpha * log_weight, num_samples)
        value = value / one_minus_alpha
    else:
        raise TypeError(f"not an objective: {objective!r}")
    return value, {"log_likelihood": expected_log_lik, "kl": divergence}


def _divergence(objective, global_term, kl, num_samples) -> jax.Array:
    """KL(q || p): analytic where asked for and available, else the Monte-Carlo mean."""
    if kl is not None and getattr(objective, "analytic_kl", True):
        return kl
    return -_mean_over_samples(global_term, num_samples)
