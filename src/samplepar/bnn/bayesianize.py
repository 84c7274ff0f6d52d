"""Turn an unmodified flax model (linen or nnx) into a variational Bayesian neural network.

The weights of the network become a mean-field normal posterior centred on the model's own
deterministic initialisation, with a ``N(0, prior_scale^2)`` prior; chosen layers can stay point
estimates. The result plugs into :func:`samplepar.engine.bayesian_particle`:

    bm = bayesianize(model)
    params = bm.init_params(rng_key, x[:1])
    particle = bayesian_particle(bm.family, bm.log_lik_fn)
    loss = make_loss(particle, ELBO(), mesh, num_samples, dataset_size, kl_fn=bm.family.kl)

A batch is a dict with ``"x"`` ``[B, ...]``, ``"y"`` (``[B]`` int labels, or regression targets
of the model's output shape) and, when an augmentation is given, ``"index"`` ``[B]`` (global
example indices, so an example's augmentation does not depend on how the batch is sharded).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import errors, linen, nnx

from samplepar.bnn.partition import PathPredicate, leaf_paths, partitioned
from samplepar.metrics import check_labels, label_log_prob
from samplepar.variational import Family, mean_field_normal

PyTree = Any
Augment = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]

LIKELIHOODS = ("categorical", "gaussian")
NOISE = "raw_noise_scale"
_LOG_2PI = math.log(2.0 * math.pi)


class BayesianModel(NamedTuple):
    """A Bayesian view of a flax model.

    - ``family``: the variational family over the weights tree ``{"model": ..., [NOISE]: ...}``;
    - ``init_params(rng_key, example_x) -> params``: variational parameters around the flax init;
    - ``log_lik_fn(weights, batch, rng_key) -> [B]``: per-example log-likelihood;
    - ``predict_fn(weights, x)``: logits ``[B, C]`` (categorical) or ``(mean, scale)`` each of
      the output shape (gaussian).
    """

    family: Family
    init_params: Callable[[jax.Array, jax.Array], PyTree]
    log_lik_fn: Callable[[PyTree, dict, jax.Array], jax.Array]
    predict_fn: Callable[[PyTree, jax.Array], Any]


def _point_predicate(deterministic: Sequence[str] | PathPredicate) -> PathPredicate:
    """Paths kept deterministic: the learned noise scale, plus the user's selection.

    A name selects every leaf whose path holds its ``/``-separated parts consecutively, so
    ``"Dense_2"``, ``"Dense_2/kernel"`` and ``"params/Dense_2"`` all work.
    """
    if callable(deterministic):
        chosen = deterministic
    else:
        if isinstance(deterministic, str):
            deterministic = (deterministic,)
        for name in deterministic:
            if not isinstance(name, str):
                raise ValueError(
                    "deterministic= takes layer names (strings) or a predicate on a parameter's "
                    f"path; got {name!r}"
                )
        patterns = [tuple(name.strip("/").split("/")) for name in deterministic]

        def chosen(path):
            return any(_contains(path, pattern) for pattern in patterns)

    return lambda path: path[:1] == (NOISE,) or bool(chosen(path))


def _contains(path: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    k = len(pattern)
    return any(path[i : i + k] == pattern for i in range(len(path) - k + 1))


def _check_selection(deterministic, paths: list[tuple[str, ...]]) -> None:
    if callable(deterministic):
        return
    names = (deterministic,) if isinstance(deterministic, str) else deterministic
    for name in names:
        pattern = tuple(name.strip("/").split("/"))
        if not any(_contains(path, pattern) for path in paths):
            layers = sorted({"/".join(path[1:-1]) for path in paths if path[0] == "model"})
            raise ValueError(
                f"deterministic={name!r} matches no parameter of the model; "
                f"its layers are: {', '.join(layers)}"
            )


@contextlib.contextmanager
def _refusing_random_layers(model) -> Iterator[None]:
    """Turn flax's obscure error for a layer that draws random numbers (Dropout) into advice."""
    try:
        yield
    except (errors.InvalidRngError, errors.TraceContextError) as error:
        raise ValueError(
            f"{type(model).__name__} draws random numbers in its forward pass (e.g. Dropout); "
            "stochastic layers are not supported, a BNN's only randomness is its weight "
            "posterior: build the model with deterministic=True (linen) or call model.eval() (nnx)"
        ) from error


def _model_functions(model) -> tuple[Callable, Callable]:
    """``(init_weights(rng_key, example_x) -> tree, apply(tree, x) -> output)``."""
    if isinstance(model, linen.Module):

        def init_weights(rng_key, example_x):
            variables = dict(model.init(rng_key, example_x))
            extra = sorted(set(variables) - {"params"})
            if extra:
                raise ValueError(
                    f"{type(model).__name__} keeps variable collections {extra} besides 'params'; "
                    "a BNN needs a stateless model: replace BatchNorm by GroupNorm or LayerNorm"
                )
            return variables

        return init_weights, model.apply
    if isinstance(model, nnx.Module):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        stats = [path for path, _ in nnx.to_flat_state(nnx.state(model, nnx.BatchStat))]
        if stats:
            raise ValueError(
                f"{type(model).__name__} keeps batch statistics at {stats[0]}; a BNN needs a "
                "stateless model: replace BatchNorm by GroupNorm or LayerNorm"
            )
        pure = nnx.to_pure_dict(params)

        def apply(tree, x):
            return nnx.merge(graphdef, nnx.State(tree), rest)(x)

        return (lambda rng_key, example_x: pure), apply
    raise TypeError(
        f"bayesianize takes a flax linen.Module or nnx.Module, got {type(model).__name__}"
    )


def bayesianize(
    model,
    likelihood: str = "categorical",
    *,
    init_scale: float = 1e-3,
    prior_scale: float = 1.0,
    deterministic: Sequence[str] | PathPredicate = (),
    noise_scale: float | None = None,
    augment: Augment | None = None,
) -> BayesianModel:
    """A :class:`BayesianModel` of ``model``; the model itself is not changed.

    ``likelihood``: ``"categorical"`` (logits ``[B, C]``, labels ``y`` ``[B]`` in ``0..C-1``:
    others raise when concrete and, traced under ``jit``, give a NaN log-likelihood that stops
    training rather than wrapping to another class) or ``"gaussian"`` (mean of the target's
    shape; ``noise_scale`` fixed, or learned as a point estimate starting at 1 when ``None``).
    ``init_scale``: posterior standard deviation at initialisation; ``prior_scale``: prior
    standard deviation. ``deterministic``: layer names (or a predicate on a parameter's path
    tuple) kept as point estimates. ``augment(rng_key, x, example_indices) -> x`` is applied to
    the inputs before each forward pass.

    For an nnx model the posterior mean starts at the module's current weights (``rng_key`` of
    ``init_params`` is unused); its non-parameter state is held constant. The forward pass must
    be deterministic: build Dropout with ``deterministic=True`` (linen) or call ``model.eval()``
    (nnx).
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {likelihood!r}; choose one of {LIKELIHOODS}")
    if noise_scale is not None and likelihood != "gaussian":
        raise ValueError("noise_scale applies to the gaussian likelihood only")
    if noise_scale is not None and not noise_scale > 0:
        raise ValueError(f"noise_scale must be positive, got {noise_scale}")
    learned_noise = likelihood == "gaussian" and noise_scale is None
    init_weights, apply = _model_functions(model)
    is_point = _point_predicate(deterministic)
    family = partitioned(mean_field_normal(init_scale, prior_scale), is_point)

    def predict_fn(weights, x):
        out = apply(weights["model"], x)
        if likelihood == "categorical":
            return out
        scale = jax.nn.softplus(weights[NOISE]) if learned_noise else noise_scale
        return out, jnp.broadcast_to(scale, out.shape)

    def init_params(rng_key, example_x):
        with _refusing_random_layers(model):
            weights = {"model": init_weights(rng_key, example_x)}
            if learned_noise:
                weights[NOISE] = jnp.float32(math.log(math.expm1(1.0)))
            _check_selection(deterministic, leaf_paths(weights))
            out = jax.eval_shape(predict_fn, weights, example_x)
        if likelihood == "categorical" and jnp.ndim(out) != 2:
            raise ValueError(
                f"categorical likelihood needs logits [B, C]; the model returns shape {out.shape}"
            )
        return family.init(weights)

    def log_lik_fn(weights, batch, rng_key):
        x = batch["x"]
        if augment is not None:
            if "index" not in batch:
                raise ValueError(
                    "augmentation needs the batch's global example indices under 'index'"
                )
            x = augment(rng_key, x, batch["index"])
        if likelihood == "categorical":
            return _categorical(predict_fn(weights, x), batch["y"])
        return _gaussian(*predict_fn(weights, x), batch["y"])

    return BayesianModel(family, init_params, log_lik_fn, predict_fn)


def _categorical(logits: jax.Array, y: jax.Array) -> jax.Array:
    if not jnp.issubdtype(y.dtype, jnp.integer) or y.shape != logits.shape[:1]:
        raise ValueError(
            f"categorical likelihood needs integer labels y of shape {logits.shape[:1]}, "
            f"got {y.dtype} {y.shape}"
        )
    check_labels(y, logits.shape[-1])
    return label_log_prob(jax.nn.log_softmax(logits, axis=-1), y)


def _gaussian(mean: jax.Array, scale: jax.Array, y: jax.Array) -> jax.Array:
    if y.shape != mean.shape:
        raise ValueError(
            f"gaussian likelihood: targets y of shape {y.shape} do not match the model's "
            f"output shape {mean.shape}"
        )
    z = (y - mean) / scale
    log_p = -0.5 * z * z - jnp.log(scale) - 0.5 * _LOG_2PI
    return jnp.sum(log_p.reshape(mean.shape[0], -1), axis=1)
