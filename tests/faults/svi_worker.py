"""A demand-model SVI fit with checkpoints, as its own process (killed by test_svi_resume.py).

Usage: ``python svi_worker.py WORKDIR NUM_STEPS``; writes WORKDIR/params.npz when done.
"""

import os
import sys
from pathlib import Path

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from samplepar import svi  # noqa: E402
from samplepar.mesh import make_mesh  # noqa: E402
from samplepar.models import (  # noqa: E402
    observations,
    published_inputs,
    published_model,
    simulate,
    validate,  # noqa: E402
)

CHECKPOINT_EVERY = 100


def demand_problem() -> svi.SVI:
    """Sharded SVI of the published demand model on a 12-product table, over two devices."""
    table, _ = simulate(0, 12, 7, 3)
    data, model_kwargs = published_inputs(observations(validate(table)))
    return svi.build(
        jax.random.key(0),
        published_model,
        data,
        model_kwargs=model_kwargs,
        mesh=make_mesh("data=2"),
        num_particles=4,
    )


def main(workdir: Path, num_steps: int) -> None:
    result = svi.fit(
        jax.random.key(2),
        demand_problem(),
        num_steps,
        progress_bar=False,
        checkpoint_dir=workdir / "checkpoints",
        checkpoint_every=CHECKPOINT_EVERY,
    )
    arrays = {f"param_{k}": np.asarray(v) for k, v in result.params.items()}
    np.savez(workdir / "params.npz", losses=result.losses, **arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
