"""One process of a multi-process job: a loss and its gradient on the global mesh.

The toy model's under the engine (objective ``renyi`` or ``predictive-nll``), or sharded SVI of
the local-latent model (``local-latents``, with the parameters after a few steps:
:func:`stepped_params`), each process passing its own rows. Started by
tests/test_distributed.py through samplepar.launch; prints one JSON line.
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import toy_model

from samplepar import distributed, engine, mesh, objectives, svi
from samplepar.models.grouped import grouped_model, simulate_groups

NUM_ROWS = 300  # local-latent job: rows of the data set


def fixed_params(params: dict) -> dict:
    """Parameters of ``params``' shapes with set values, the same in every process."""
    return {
        name: 0.1 + 0.05 * (jnp.arange(value.size, dtype=value.dtype).reshape(value.shape) % 7)
        for name, value in sorted(params.items())
    }


def stepped_params(problem: svi.SVI, params: dict, num_steps: int = 3) -> np.ndarray:
    """The parameters after ``num_steps`` steps from ``params``, raveled (sorted by name): one
    by ``SVI.step``, the rest in one ``SVI.steps`` call (both ways ``svi.fit`` takes them)."""
    state = problem.init(params)
    state, _ = problem.step(jax.random.key(5), state, problem.data)
    state, _ = problem.steps(jax.random.key(5), state, problem.data, num_steps - 1)
    stepped = problem.params_of(state.params)
    return np.concatenate([np.ravel(stepped[name].addressable_data(0)) for name in sorted(stepped)])


def local_latents_problem(layout: str, rows: slice = slice(None)) -> svi.SVI:
    """Sharded SVI of the local-latent model on ``rows`` of its data (this process's)."""
    data = simulate_groups(NUM_ROWS, 4)
    return svi.build(
        jax.random.key(0),
        grouped_model,
        {name: value[rows] for name, value in data.items()},
        model_kwargs={"num_rows": NUM_ROWS},
        data_plate="rows",
        mesh=mesh.make_mesh(layout),
        num_particles=4,
    )


def main(layout: str, job: str) -> None:
    distributed.initialize()
    m = mesh.make_mesh(layout)
    if job == "local-latents":
        problem = local_latents_problem(layout, mesh.process_slice(NUM_ROWS, m))
        loss, params, batch = problem.loss, fixed_params(problem.params), problem.data
    else:
        family, params, particle, batch = toy_model.make()
        rows = mesh.process_slice(toy_model.BATCH, m)
        batch = mesh.global_batch({k: v[rows] for k, v in batch.items()}, m)
        loss = engine.make_loss(
            particle, objectives.get_objective(job, 0.5), m, 8, 100, kl_fn=family.kl
        )
    (value, _), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        params, jax.random.key(7), batch
    )
    flat = np.concatenate([np.ravel(leaf.addressable_data(0)) for leaf in jax.tree.leaves(grad)])
    stepped = stepped_params(problem, params) if job == "local-latents" else np.zeros(0)
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "processes": jax.process_count(),
                "devices": jax.device_count(),
                "loss": float(value.addressable_data(0)),
                "grad": flat.tolist(),
                "stepped": stepped.tolist(),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
