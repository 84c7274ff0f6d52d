"""The reference: the demand model as published, fitted by NumPyro's own SVI.

The model is :func:`samplepar.models.published_model`, written as the article writes it (long
observation vectors, gathers by index, a plate over observations). It is fitted the fastest way
NumPyro offers: ``SVI.run`` without a progress bar, which compiles the whole loop as one
``lax.scan``. Nothing from samplepar's SVI is used here.
"""

from __future__ import annotations

import time

import jax
from numpyro.infer import SVI, RenyiELBO
from numpyro.infer.autoguide import AutoNormal

from samplepar.models import published_model
from samplepar.svi import default_optimizer


def make_svi(num_particles: int = 4, optimizer=None) -> SVI:
    """NumPyro SVI of the published model: AutoNormal, Renyi ELBO (alpha 0), AdamW + decay."""
    optimizer = default_optimizer() if optimizer is None else optimizer
    guide = AutoNormal(published_model)
    return SVI(published_model, guide, optimizer, RenyiELBO(num_particles=num_particles))


def run(svi: SVI, rng_key, num_steps: int, data: dict, model_kwargs: dict, init_params=None):
    """(``SVIRunResult``: params, state, losses; seconds including compilation) of ``svi.run``."""
    start = time.perf_counter()
    result = svi.run(
        rng_key,
        num_steps,
        progress_bar=False,
        init_params=init_params,
        **data,
        **model_kwargs,
    )
    jax.block_until_ready(result.losses)
    return result, time.perf_counter() - start


def round_timer(
    svi: SVI, rng_key, num_steps: int, data: dict, model_kwargs: dict, init_params=None
):
    """A function that runs ``num_steps`` steps of the loop ``svi.run`` compiles (a ``lax.scan``
    of ``svi.update``) and returns their it/s; the scan is compiled here, so no call counts it."""
    state = svi.init(rng_key, init_params=init_params, **data, **model_kwargs)

    def loop(state, arrays):
        def body(state, _):
            return svi.update(state, **arrays, **model_kwargs)

        return jax.lax.scan(body, state, None, length=num_steps)

    compiled = jax.jit(loop).lower(state, data).compile()

    def steps_per_second() -> float:
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, data))
        return num_steps / (time.perf_counter() - start)

    return steps_per_second
