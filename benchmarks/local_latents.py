"""Mini-batch SVI with local latents: throughput per observation against full-batch steps.

    python benchmarks/local_latents.py                  # 200,000 groups x 8 observations
    python benchmarks/local_latents.py --groups 20000   # seconds

A hierarchical model with one latent per row (a group's offset) besides two global latents,
written with NumPyro's mini-batch idiom (``samplepar.models.grouped``).
AutoNormal, Renyi ELBO (alpha = 0) with 4 particles, AdamW, every local device on ``data``.
Full-batch steps and mini-batch steps of ``--batch-fractions`` of the rows (drawn on device)
are timed in ``--rounds`` alternating rounds, taken as ``svi.fit`` takes them
(``svi.STEPS_PER_CALL`` to a compiled call); each figure is the median of its rounds, and a
mini-batch's observations per second are compared with the full batch's. A step on one row
per device gives the step's cost that does not shrink with the batch. Prints a table, ends with
one JSON line and writes benchmarks/results/local_latents.json.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RESULTS,
    check_writable,
    emit,
    fractions,
    positive_int,
    run_svi,
    use_host_devices,
)

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    use_host_devices(os.cpu_count() or 1)

import argparse  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from samplepar import svi  # noqa: E402
from samplepar.host import prepare_process  # noqa: E402
from samplepar.mesh import make_mesh  # noqa: E402
from samplepar.models.grouped import ROWS_PLATE, grouped_model, simulate_groups  # noqa: E402
from samplepar.objectives import RenyiELBO  # noqa: E402

OBSERVATIONS_PER_ROW = 8
NUM_PARTICLES = 4


def main(argv=None) -> dict:
    prepare_process()  # as the command line does: see samplepar.host
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--groups", type=positive_int, default=200_000, help="rows, one latent each"
    )
    parser.add_argument(
        "--steps", type=positive_int, default=20, help="timed full-batch steps a round"
    )
    parser.add_argument("--rounds", type=positive_int, default=5, help="alternating timing rounds")
    parser.add_argument(
        "--batch-fractions",
        type=fractions,
        default=[0.25, 0.125],
        help="mini-batch sizes as fractions in (0, 1] of the rows (comma-separated)",
    )
    args = parser.parse_args(argv)
    check_writable(parser, RESULTS)
    mesh = make_mesh("data")
    data_shards = dict(mesh.shape)["data"]
    data = simulate_groups(args.groups, OBSERVATIONS_PER_ROW)

    def build(batch_size=None):
        return svi.build(
            jax.random.key(0),
            grouped_model,
            data,
            model_kwargs={"num_rows": args.groups},
            data_plate=ROWS_PLATE,
            mesh=mesh,
            objective=RenyiELBO(0.0),
            num_particles=NUM_PARTICLES,
            batch_size=batch_size,
        )

    batches = {"full": args.groups, f"fixed cost ({data_shards} rows)": data_shards}
    for fraction in args.batch_fractions:
        batches[f"{fraction:g} of the rows"] = max(1, round(fraction * args.groups / data_shards))
        batches[f"{fraction:g} of the rows"] *= data_shards
    problems = {name: build(None if name == "full" else rows) for name, rows in batches.items()}
    # each mini-batch round sees as many observations as a full-batch one, up to 10x its steps
    steps = {
        name: min(10 * args.steps, round(args.steps * args.groups / rows))
        for name, rows in batches.items()
    }
    rounds = {name: [] for name in problems}
    seed_key = jax.random.key(1)
    for _ in range(args.rounds):
        for name, problem in problems.items():
            rounds[name].append(run_svi(problem, seed_key, steps[name])[0])
    full_its = float(np.median(rounds["full"]))
    print(f"{'steps on':<22}{'it/s':>9}{'obs/s vs full':>15}")
    figures = {}
    for name, rows in batches.items():
        its = float(np.median(rounds[name]))
        ratio = its * rows / (full_its * args.groups)
        figures[name] = {"rows": rows, "it_per_s": its, "it_per_s_rounds": rounds[name]}
        figures[name]["obs_per_s_vs_full_batch"] = ratio
        print(f"{name:<22}{its:>9.1f}{ratio:>15.2f}")
    record = {
        "groups": args.groups,
        "observations": args.groups * OBSERVATIONS_PER_ROW,
        "devices": jax.device_count(),
        "particles": NUM_PARTICLES,
        "rounds": args.rounds,
        "steps": figures,
    }
    emit("local_latents", record)
    return record


if __name__ == "__main__":
    main()
