"""One process of a multi-process job: the toy model's loss and gradient on the global mesh.

Started by tests/test_distributed.py through samplepar.launch; prints one JSON line.
"""

import json
import sys

import jax
import numpy as np
import toy_model

from samplepar import distributed, engine, mesh, objectives


def main(layout: str, objective_name: str) -> None:
    distributed.initialize()
    family, params, particle, batch = toy_model.make()
    m = mesh.make_mesh(layout)
    rows = mesh.process_slice(toy_model.BATCH, m)
    local = {k: v[rows] for k, v in batch.items()}
    loss = engine.make_loss(
        particle, objectives.get_objective(objective_name, 0.5), m, 8, 100, kl_fn=family.kl
    )
    (value, _), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        params, jax.random.key(7), mesh.global_batch(local, m)
    )
    flat = np.concatenate([np.ravel(leaf.addressable_data(0)) for leaf in jax.tree.leaves(grad)])
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "processes": jax.process_count(),
                "devices": jax.device_count(),
                "loss": float(value.addressable_data(0)),
                "grad": flat.tolist(),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
