"""Posterior draws of a fitted sharded SVI problem, and their ArviZ form.

:func:`samplepar.svi.build` picks the way a problem draws (``SVI.draw``): the guide's own
``sample_posterior`` for global latents (:func:`guide_draws`), or, with local latents, the guide
run on every row and the model replayed against it (:func:`local_draws`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.handlers import replay, seed, substitute, trace

from samplepar.svi_rows import Rows
from samplepar.svi_sites import data_rows


def posterior_draws(rng_key, svi, params: dict, num_draws: int) -> dict:
    """``num_draws`` draws of every latent site from the fitted guide of ``svi`` (a
    :class:`samplepar.svi.SVI`), ``[num_draws, ...]``.

    ``params`` are constrained (``FitResult.params``). Without local latents the guide must
    offer ``sample_posterior`` (every NumPyro autoguide does); with them, the guide is run on
    every row and the model replayed against it (:func:`local_draws`).
    """
    return {name: np.asarray(value) for name, value in svi.draw(rng_key, params, num_draws).items()}


def guide_draws(guide) -> Callable:
    """``draw(rng_key, params, num_draws)`` by the guide's ``sample_posterior``."""
    return jax.jit(
        lambda key, params, num_draws: guide.sample_posterior(
            key, params, sample_shape=(num_draws,)
        ),
        static_argnums=2,
    )


def local_draws(model, guide, model_kwargs: dict, data_plate: str, data, num_rows: int):
    """``draw(rng_key, params, num_draws)`` of a model with local latents, on all its rows.

    Each draw traces the guide on the rows ``data`` holds (:class:`Rows`, as ``SVI.data``) and
    replays the model against it, so deterministic sites of local latents are
    computed from their rows' data (a guide's ``sample_posterior`` would use the rows it was
    set up on). The model's likelihood is not returned, so it is not computed. Padded rows are
    dropped before the guide runs, so that the data plate's subsample is its ``num_rows`` rows.
    One process only.
    """

    def one_draw(rng_key, params, arrays, rows):
        kwargs = {**model_kwargs, **arrays}
        model_key, guide_key = jax.random.split(rng_key)
        guide_trace = trace(
            substitute(seed(data_rows(guide, data_plate, rows, num_rows), guide_key), data=params)
        ).get_trace(**kwargs)
        model_trace = trace(
            replay(seed(data_rows(model, data_plate, rows, num_rows), model_key), guide_trace)
        ).get_trace(**kwargs)
        values = {}
        for name, site in model_trace.items():
            if site["type"] == "deterministic" or (
                site["type"] == "sample" and not site["is_observed"]
            ):
                values[name] = site["value"]
        return values

    @functools.partial(jax.jit, static_argnums=(2, 4))
    def draw_rows(rng_key, params, num_draws: int, data: Rows, num_kept: int):
        kept = jnp.flatnonzero(data.mask, size=num_kept)
        arrays = jax.tree.map(lambda a: a[kept], data.arrays)
        keys = jax.random.split(rng_key, num_draws)
        return jax.lax.map(lambda key: one_draw(key, params, arrays, data.index[kept]), keys)

    def draw(rng_key, params, num_draws: int):
        if jax.process_count() > 1:
            raise NotImplementedError(
                "posterior draws of local latents gather every row into one process; "
                "draw them in a single-process run from the saved parameters"
            )
        return draw_rows(rng_key, params, num_draws, data, num_rows)  # one process: all kept

    return draw


def to_inference_data(draws: dict, path=None):
    """ArviZ InferenceData of guide draws (one chain); written to netCDF at ``path`` if given."""
    import arviz as az  # 1 s to import: only here, not for every process that fits

    data = az.from_dict(posterior={name: value[None] for name, value in draws.items()})
    if path is not None:
        data.to_netcdf(str(path))
    return data
