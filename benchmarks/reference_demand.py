"""The reference: the demand model as published, fitted by NumPyro's own SVI.

The model is :func:`samplepar.models.published_model`, written as the article writes it (long
observation vectors, gathers by index, a plate over observations). It is fitted the fastest way
NumPyro offers: ``SVI.run`` without a progress bar, which compiles the whole loop as one
``lax.scan``. Nothing from samplepar's SVI is used here.

``benchmarks/demand.py`` times it against the fast path; run alone, this script times it on a
simulated panel: ``python benchmarks/reference_demand.py --products 1000 --steps 50``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
from numpyro.infer import SVI, RenyiELBO
from numpyro.infer.autoguide import AutoNormal

from samplepar.host import prepare_process
from samplepar.models import observations, published_inputs, published_model, simulate
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


def main(argv=None) -> float:
    """Times the published model's ``svi.run`` loop on a simulated panel; returns its it/s."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import positive_int

    prepare_process()  # as benchmarks/demand.py does
    parser = argparse.ArgumentParser(
        description="Time NumPyro's own SVI of the demand model as published, on a simulated "
        "panel (4 particles, AutoNormal, one device)."
    )
    parser.add_argument("--products", type=positive_int, default=1000, help="default 1000")
    parser.add_argument("--periods", type=positive_int, default=156, help="default 156")
    parser.add_argument("--categories", type=positive_int, default=10, help="default 10")
    parser.add_argument("--steps", type=positive_int, default=50, help="timed steps a round")
    parser.add_argument("--rounds", type=positive_int, default=3, help="timing rounds")
    args = parser.parse_args(argv)
    if args.categories > args.products:
        parser.error(f"--categories {args.categories} is more than --products {args.products}")
    table, _ = simulate(0, args.products, args.periods, args.categories)
    data, model_kwargs = published_inputs(observations(table))
    timer = round_timer(make_svi(), jax.random.key(0), args.steps, data, model_kwargs)
    rates = [timer() for _ in range(args.rounds)]
    median = float(np.median(rates))
    print(
        f"published model, {args.products * args.periods:,} observations: "
        f"{median:.2f} it/s (median of {args.rounds} rounds of {args.steps} steps: "
        + ", ".join(f"{r:.2f}" for r in rates)
        + ")"
    )
    return median


if __name__ == "__main__":
    main()
