"""A variational family over part of a pytree; the other leaves are point estimates.

Leaves are chosen by their path, a tuple of names such as ``("model", "params", "Dense_2",
"kernel")``. A point leaf is a plain parameter: no noise when sampling, no log-density, no prior
and no KL. Its gradient comes from the data term alone (a maximum-likelihood estimate).

Both halves keep the full tree structure with ``None`` in place of the other half's leaves, so
checkpoints and optimizer states read like the model's own parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from samplepar.variational import Family

PyTree = Any
PathPredicate = Callable[[tuple[str, ...]], bool]


class PartitionedParams(NamedTuple):
    """``variational``: the base family's parameters over the random leaves (``None`` at point
    leaves); ``point``: the point leaves (``None`` at random leaves)."""

    variational: PyTree
    point: PyTree


def path_names(path) -> tuple[str, ...]:
    """A jax key path as plain names: dict keys, attribute names and sequence indices."""
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(str(getattr(entry, attr)))
                break
        else:
            names.append(str(entry))
    return tuple(names)


def leaf_paths(tree: PyTree) -> list[tuple[str, ...]]:
    """The path of every leaf of ``tree``, in flattening order."""
    return [path_names(path) for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def split(tree: PyTree, is_point: PathPredicate) -> tuple[PyTree, PyTree]:
    """``(random_part, point_part)`` of ``tree``, each with ``None`` at the other's leaves."""
    random_part = jax.tree_util.tree_map_with_path(
        lambda p, x: None if is_point(path_names(p)) else x, tree
    )
    point_part = jax.tree_util.tree_map_with_path(
        lambda p, x: x if is_point(path_names(p)) else None, tree
    )
    return random_part, point_part


def merge(random_part: PyTree, point_part: PyTree) -> PyTree:
    """Inverse of :func:`split`."""
    return jax.tree.map(
        lambda r, p: p if r is None else r, random_part, point_part, is_leaf=lambda x: x is None
    )


def partitioned(base: Family, is_point: PathPredicate) -> Family:
    """``base`` over the leaves where ``is_point(path)`` is false; point estimates elsewhere.

    ``kl`` is the base family's KL over the random leaves (``None`` if the base has none).
    """

    def init(mean_tree: PyTree) -> PartitionedParams:
        random_part, point_part = split(mean_tree, is_point)
        return PartitionedParams(base.init(random_part), point_part)

    def sample_and_log_prob(rng_key: jax.Array, params: PartitionedParams):
        draw, log_q = base.sample_and_log_prob(rng_key, params.variational)
        return merge(draw, params.point), log_q

    def log_prob(params: PartitionedParams, tree: PyTree) -> jax.Array:
        return base.log_prob(params.variational, split(tree, is_point)[0])

    def log_prior(tree: PyTree) -> jax.Array:
        return base.log_prior(split(tree, is_point)[0])

    kl = None
    if base.kl is not None:

        def kl(params: PartitionedParams) -> jax.Array:
            return base.kl(params.variational)

    return Family(init, sample_and_log_prob, log_prob, log_prior, kl)
