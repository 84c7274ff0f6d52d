"""Per-device memory of the sharded training step, from XLA's own memory analysis.

Workload bnn-mlp: mean-field MLP 784-512-512-10, batch 256, S = 16 weight samples. For
sample = 1, 2, 4, 8, data = 1, 2, 4, 8 and the hybrids sample=2,data=2, sample=4,data=2 and
sample=2,data=4 the full step (loss, gradient, Adam update) is compiled and
``compiled.memory_analysis().temp_size_in_bytes`` read: the per-device temporary bytes
(activations, weight samples, gradients), the part that sharding is meant to shrink.
Target: sample = k uses at most 1.15 / k of the one-device figure. A least-squares fit of
``temp(k) = F + V / k`` on the sample axis separates what every device keeps (F: the gradient
and optimizer temporaries, parameter-sized) from what the samples share out (V).

    python benchmarks/memory.py [--samples 16] [--batch 256]   # both multiples of 8

Prints a table, writes ``benchmarks/results/memory.json`` and ``memory.png`` (per-device MiB
against the number of devices, per strategy) and ends with one JSON line.
"""

from __future__ import annotations

import argparse

from _common import RESULTS, check_writable, emit, mlp_workload, positive_int, use_host_devices

use_host_devices(8)

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from samplepar import engine, mesh, objectives  # noqa: E402

TARGET = 1.15
SIZES = (1, 2, 4, 8)  # devices on the sample or the data axis
HYBRIDS = {"sample=2,data=2": 4, "sample=4,data=2": 8, "sample=2,data=4": 8}


def step_bytes(layout: str, num_samples: int, batch_size: int) -> dict:
    family, params, log_lik, make_batch = mlp_workload()
    m = mesh.make_mesh(layout)
    optimizer = optax.adam(1e-3)
    particle = engine.bayesian_particle(family, log_lik)
    loss = engine.make_loss(
        particle, objectives.ELBO(), m, num_samples, dataset_size=60000, kl_fn=family.kl
    )
    step = engine.build_step(loss, optimizer, m, engine.weight_sample_compiler_options(m))
    state = engine.init(params, optimizer, m)
    batch = mesh.global_batch(make_batch(batch_size), m)
    analysis = step.lower(jax.random.key(0), state, batch).compile().memory_analysis()
    return {
        "temp": int(analysis.temp_size_in_bytes),
        "argument": int(analysis.argument_size_in_bytes),
        "output": int(analysis.output_size_in_bytes),
    }


def fixed_and_sharded(rows: dict) -> tuple[float, float]:
    """Least-squares ``(F, V)`` of ``temp(k) = F + V / k`` over the sample-axis sizes ``k``.

    ``F`` is what every device holds whatever ``k`` (the replicated gradient and optimizer
    temporaries), ``V`` what the samples share out. ``temp(k) <= TARGET / k * temp(1)`` at the
    largest ``k`` needs ``F <= (TARGET - 1) / (k - TARGET) * V``.
    """
    sizes = np.array(list(rows), float)
    temps = np.array([row["temp"] for row in rows.values()], float)
    design = np.stack([np.ones_like(sizes), 1.0 / sizes], axis=1)
    (fixed, shared), *_ = np.linalg.lstsq(design, temps, rcond=None)
    return float(fixed), float(shared)


def plot(table: dict, hybrid: dict, title: str, path) -> None:
    """Per-device temp MiB against the device count: sample, data, hybrids, ideal 1/k."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    base = table["sample"][1]["temp"] / 2**20
    for axis, rows in table.items():
        ax.plot(list(rows), [r["temp"] / 2**20 for r in rows.values()], "o-", label=axis)
    for layout, row in hybrid.items():
        ax.plot(HYBRIDS[layout], row["temp"] / 2**20, "s", label=layout)
    sizes = list(table["sample"])
    ax.plot(sizes, [base / k for k in sizes], "k:", label="ideal 1/k")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("devices")
    ax.set_ylabel("per-device temp MiB")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_args():
    """The command line; ``--samples`` and ``--batch`` must split over up to 8 devices."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    most = max(SIZES)
    parser.add_argument(
        "--samples", type=positive_int, default=16, help=f"weight samples S, a multiple of {most}"
    )
    parser.add_argument(
        "--batch", type=positive_int, default=256, help=f"batch size, a multiple of {most}"
    )
    args = parser.parse_args()
    for name in ("samples", "batch"):
        if getattr(args, name) % most:
            parser.error(f"--{name} {getattr(args, name)} is not a multiple of {most}")
    check_writable(parser, RESULTS)
    return args


def print_row(layout: str, row: dict, base: int, target: float) -> None:
    """One table row: temp MiB, its ratio to the one-device figure, the target, args MiB."""
    print(
        f"{layout:<16} {row['temp'] / 2**20:10.2f} {row['temp'] / base:11.3f} {target:8.3f} "
        f"{row['argument'] / 2**20:9.2f}"
    )


def main() -> None:
    args = parse_args()
    table = {
        axis: {k: step_bytes(f"{axis}={k}", args.samples, args.batch) for k in SIZES}
        for axis in ("sample", "data")
    }
    hybrid = {layout: step_bytes(layout, args.samples, args.batch) for layout in HYBRIDS}
    print(f"bnn-mlp 784-512-512-10, batch {args.batch}, S={args.samples}: per-device bytes")
    print(f"{'layout':<16} {'temp MiB':>10} {'x 1-device':>11} {'target':>8} {'args MiB':>9}")
    verdicts = {}
    base = table["sample"][1]["temp"]
    for axis, rows in table.items():
        for k, row in rows.items():
            target = TARGET / k if axis == "sample" else float("nan")
            if axis == "sample":
                verdicts[str(k)] = row["temp"] / base <= target
            print_row(f"{axis}={k}", row, rows[1]["temp"], target)
    for layout, row in hybrid.items():
        print_row(layout, row, base, float("nan"))
    fixed, shared = fixed_and_sharded(table["sample"])
    k = max(SIZES)
    allowed = (TARGET - 1) / (k - TARGET) * shared
    _, params, _, _ = mlp_workload()
    gradient = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
    print(
        f"sample axis: temp(k) = {fixed / 2**20:.2f} MiB + {shared / 2**20:.1f} MiB / k; the "
        f"target at k={k} allows at most {allowed / 2**20:.2f} MiB that does not shrink with k; "
        f"the gradient every device holds (mean and scale) is {gradient / 2**20:.2f} MiB"
    )
    title = f"bnn-mlp step, S={args.samples}, batch {args.batch}"
    plot(table, hybrid, title, RESULTS / "memory.png")
    emit(
        "memory",
        {
            "workload": "bnn-mlp",
            "num_samples": args.samples,
            "batch_size": args.batch,
            "metric": "per-device temp bytes (compiled memory analysis)",
            "sample": {str(k): v["temp"] for k, v in table["sample"].items()},
            "data": {str(k): v["temp"] for k, v in table["data"].items()},
            "hybrid": {layout: v["temp"] for layout, v in hybrid.items()},
            "sample_within_target": verdicts,
            "sample_fit_fixed_bytes": fixed,
            "sample_fit_shared_bytes": shared,
            "gradient_bytes": gradient,
        },
    )


if __name__ == "__main__":
    main()
