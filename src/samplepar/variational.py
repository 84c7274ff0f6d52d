"""Variational families over an arbitrary parameter pytree.

A family is a NamedTuple of pure functions (as an optax transform is):

- ``init(mean_tree) -> params``: variational parameters centred on a deterministic pytree;
- ``sample_and_log_prob(rng_key, params) -> (tree, log_q)``: one draw and its log-density;
- ``log_prob(params, tree) -> log_q``;
- ``log_prior(tree) -> log_p`` under the family's prior;
- ``kl(params) -> KL(q || prior)``, analytic, or ``None`` where none exists.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from samplepar import random as sp_random

PyTree = Any

_LOG_2PI = math.log(2.0 * math.pi)


class MeanFieldParams(NamedTuple):
    """Per-weight mean and unconstrained scale; ``scale = softplus(raw_scale)``."""

    loc: PyTree
    raw_scale: PyTree


class Family(NamedTuple):
    init: Callable[[PyTree], PyTree]
    sample_and_log_prob: Callable[[jax.Array, PyTree], tuple[PyTree, jax.Array]]
    log_prob: Callable[[PyTree, PyTree], jax.Array]
    log_prior: Callable[[PyTree], jax.Array]
    kl: Callable[[PyTree], jax.Array] | None


def _inverse_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))


def _normal_log_density(x, loc, scale) -> jax.Array:
    z = (x - loc) / scale
    return jnp.sum(-0.5 * z * z - jnp.log(scale) - 0.5 * _LOG_2PI)


def _tree_sum(tree) -> jax.Array:
    return sum((jnp.sum(leaf) for leaf in jax.tree.leaves(tree)), start=jnp.zeros(()))


def mean_field_normal(init_scale: float = 1e-3, prior_scale: float = 1.0) -> Family:
    """Fully factorised normal posterior with a ``N(0, prior_scale^2)`` prior on every weight.

    ``init`` centres the posterior on the given weights with standard deviation ``init_scale``.
    """
    for name, scale in (("init_scale", init_scale), ("prior_scale", prior_scale)):
        # float32 holds standard deviations from about 1e-30 (their log-density stays finite)
        if not 1e-30 <= scale < math.inf:
            raise ValueError(f"{name} must be a finite positive number >= 1e-30, got {scale}")
    raw_init = _inverse_softplus(init_scale)

    def init(mean_tree: PyTree) -> MeanFieldParams:
        loc = jax.tree.map(lambda w: jnp.asarray(w, jnp.float32), mean_tree)
        raw = jax.tree.map(lambda w: jnp.full(jnp.shape(w), raw_init, jnp.float32), mean_tree)
        return MeanFieldParams(loc, raw)

    def sample_and_log_prob(rng_key: jax.Array, params: MeanFieldParams):
        leaves, treedef = jax.tree.flatten(params.loc)
        raw_leaves = treedef.flatten_up_to(params.raw_scale)
        keys = jax.random.split(rng_key, len(leaves))
        draws, log_q = [], jnp.zeros(())
        for key, loc, raw in zip(keys, leaves, raw_leaves, strict=True):
            scale = jax.nn.softplus(raw)
            # drawn flat then reshaped: same numbers, far faster to compile for conv kernels
            eps = sp_random.normal(key, (jnp.size(loc),), jnp.result_type(loc))
            eps = eps.reshape(jnp.shape(loc))
            draws.append(loc + scale * eps)
            log_q += jnp.sum(-0.5 * eps * eps - jnp.log(scale) - 0.5 * _LOG_2PI)
        return treedef.unflatten(draws), log_q

    def log_prob(params: MeanFieldParams, tree: PyTree) -> jax.Array:
        terms = jax.tree.map(
            lambda x, loc, raw: _normal_log_density(x, loc, jax.nn.softplus(raw)),
            tree,
            params.loc,
            params.raw_scale,
        )
        return _tree_sum(terms)

    def log_prior(tree: PyTree) -> jax.Array:
        return _tree_sum(jax.tree.map(lambda x: _normal_log_density(x, 0.0, prior_scale), tree))

    def kl(params: MeanFieldParams) -> jax.Array:
        def leaf_kl(loc, raw):
            scale = jax.nn.softplus(raw)
            ratio = scale / prior_scale
            return jnp.sum(0.5 * (ratio * ratio + (loc / prior_scale) ** 2 - 1.0) - jnp.log(ratio))

        return _tree_sum(jax.tree.map(leaf_kl, params.loc, params.raw_scale))

    return Family(init, sample_and_log_prob, log_prob, log_prior, kl)


def posterior_scale(params: MeanFieldParams) -> PyTree:
    """Standard deviations of a mean-field posterior, per weight."""
    return jax.tree.map(jax.nn.softplus, params.raw_scale)
