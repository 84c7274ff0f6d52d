"""Demand benchmark: it/s of the published model under NumPyro vs the fast path, same run.

    python benchmarks/demand.py --size small            # 10,000 products x 156 periods
    python benchmarks/demand.py --size medium           # 100,000 products
    python benchmarks/demand.py --quick                 # a tiny panel, seconds

(a) reference: the published formulation fitted by NumPyro's ``SVI.run`` (one compiled scan),
see ``reference_demand.py``; (b) fast path: the panel formulation under samplepar's sharded SVI
on every local device (one per CPU core unless XLA_FLAGS says otherwise), its steps taken as
``svi.fit`` takes them (``svi.STEPS_PER_CALL`` to a compiled call). Both: AutoNormal,
Renyi ELBO with 4 particles, AdamW with exponential decay. Both are timed from the parameters of
a fast-path fit of ``--settle-steps`` steps (the regime most of a fit runs in): the fast path
computes a chunk of blocks cell by cell only while its log demand may reach the clip, which early
draws from AutoNormal's uniform initialisation do everywhere (see ``block_poisson``), so it is
also timed from the initial parameters (``fast_it_per_s_from_init``); the reference's cost does
not depend on the parameters. The paths are timed in ``--rounds``
alternating rounds (fast path, its mini-batches, reference) and each figure is the median of
its rounds, so that the machine's drift reaches all of them alike; the JSON keeps every round.
Each step time is also given as a
multiple of one fused exp pass over the step's particle-observations (4 x N), timed in the same
run: the floor of a step that must evaluate every rate. Mini-batch SVI (blocks drawn on device
each step, ``--batch-fractions`` of the panel) is timed on the formulation whose product latents
are local to the blocks (``local_model``: a step samples, scores and differentiates only its
blocks' products), from the same settled parameters, and compared per observation:
observations per second against the full-batch step's. That formulation's full-batch step is
timed too (``local_it_per_s``), and so is a mini-batch of one block per device, the cost of a
step that does not shrink with the batch (``one_block_per_device_it_per_s``). A learning check then
runs both for ``--learn-steps`` from the same initial parameters and compares their final
losses, and the correlation of the fitted product elasticities with the truth. The two
trajectories differ even from the same start: NumPyro's Renyi surrogate weights particles by
``exp(log_w - logmeanexp(log_w))``, and float32 cannot resolve the ``-log(4)`` inside that
log-mean-exp at the log-weights of this model early in a fit (|log_w| of 1e7 to 1e9): the
weights then sum to 1 (at 1e8 and beyond), e or e^2 (at 1e7 to 3e7) instead of 4, so its
gradient is scaled by 1/4 to 1.8 and rises as the loss falls, which Adam turns into a larger
step for a while. Ours takes the exact softmax (tests/test_objectives.py). With Trace_ELBO,
whose particles are not weighted, the two paths follow each other (1,000 products, 300 steps:
final losses 3.39e6 and 3.40e6); with this Renyi objective NumPyro's loss falls faster (600
steps: 7.5e5 against 1.30e6). Prints a table, ends with one JSON line, and writes
benchmarks/results/demand.json (``demand-quick.json`` with ``--quick``; ``--output`` elsewhere).
Flags given beside ``--quick`` win over its settings (``--size`` included).
"""

from __future__ import annotations

import os

if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={os.cpu_count() or 1}"
    ).strip()

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_demand  # noqa: E402
from _common import (  # noqa: E402
    RESULTS,
    check_writable,
    fill_unset,
    fractions,
    positive_int,
    run_svi,
)

from samplepar import svi  # noqa: E402
from samplepar.host import prepare_process  # noqa: E402
from samplepar.mesh import make_mesh  # noqa: E402
from samplepar.models import (  # noqa: E402
    fast_inputs,
    fast_model,
    observations,
    panel,
    published_inputs,
    simulate,
)
from samplepar.models.demand import (  # noqa: E402
    BLOCK_INDEX,
    local_inputs,
    local_model,
    products_to_slots,
)

SIZES = {  # products, periods, categories
    "quick": (200, 52, 4),
    "small": (10_000, 156, 10),
    "medium": (100_000, 156, 10),
    "large": (1_000_000, 156, 10),
}
NUM_PARTICLES = 4
LEARNING_RATE = 0.05  # both paths: AdamW, halved every 1000 steps


def exp_pass_seconds(num_elements: int, repeats: int = 20) -> float:
    """Median seconds of one fused ``sum(exp(x))`` over ``num_elements`` float32 values."""
    x = jnp.linspace(-4.0, 4.0, num_elements, dtype=jnp.float32)
    fn = jax.jit(lambda v: jnp.sum(jnp.exp(v)))
    fn(x).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x).block_until_ready()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def elasticity_correlation(guide, params: dict, truth) -> float:
    """Correlation of the guide's median product elasticities with the true ones."""
    m = guide.median(params)
    elasticity = (
        m["global_elasticity"]
        + m["sigma_category"] * m["category_elasticity_decentered"][truth.product_category]
        + m["sigma_product"] * m["product_elasticity_decentered"]
    )
    return float(np.corrcoef(np.asarray(elasticity), truth.product_elasticity)[0, 1])


def in_slots(params: dict, local_params: dict, blocks) -> dict:
    """The fast model's ``params`` for the local model: per-product guide parameters placed in
    the panel's slots, the empty slots keeping ``local_params``' (their initial values)."""
    return {
        name: products_to_slots(value, blocks, local_params[name])
        if name.startswith("product_")
        else value
        for name, value in params.items()
    }


def parse_args(argv=None):
    """The command line, with the settings ``--size`` (or ``--quick``) implies filled in where
    not given, and the output's directory checked before any work."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["small", "medium", "large"], help="default small")
    parser.add_argument("--quick", action="store_true", help="a tiny panel (seconds)")
    parser.add_argument("--steps", type=positive_int, help="timed fast-path steps a round")
    parser.add_argument("--reference-steps", type=positive_int, help="timed NumPyro steps a round")
    parser.add_argument("--rounds", type=positive_int, default=5, help="alternating timing rounds")
    parser.add_argument("--learn-steps", type=positive_int, help="steps of the learning check")
    parser.add_argument(
        "--settle-steps", type=positive_int, help="fast-path steps before the timed rounds"
    )
    parser.add_argument("--layout", default="data", help="mesh layout of the fast path")
    parser.add_argument(
        "--batch-fractions",
        type=fractions,
        default=[0.25, 0.5],
        help="mini-batch sizes to time, as fractions in (0, 1] of the panel's blocks "
        "(comma-separated)",
    )
    parser.add_argument("--output", type=Path, help="JSON path (default results/demand.json)")
    args = parser.parse_args(argv)
    fill_unset(args, {"size": "quick" if args.quick else "small"})
    scale = {"quick": 1, "small": 1, "medium": 10, "large": 100}[args.size]
    fill_unset(
        args,
        {
            "steps": max(20, 60 // scale),
            "reference_steps": max(3, 10 // scale),
            "learn_steps": 100 if args.size == "quick" else max(30, 300 // scale),
            "settle_steps": 100 if args.size == "quick" else 1000,
            "output": RESULTS / ("demand-quick.json" if args.quick else "demand.json"),
        },
    )
    check_writable(parser, args.output.parent)
    return args


def main(argv=None) -> dict:
    prepare_process()  # as the command line does: see samplepar.host
    args = parse_args(argv)
    size = args.size
    num_products, num_periods, num_categories = SIZES[size]
    steps, reference_steps = args.steps, args.reference_steps
    learn_steps, settle_steps = args.learn_steps, args.settle_steps

    table, truth = simulate(0, num_products, num_periods, num_categories)
    obs = observations(table)
    num_obs = len(obs.units)
    data, model_kwargs = published_inputs(obs)
    mesh = make_mesh(args.layout)
    blocks = panel(obs, num_shards=dict(mesh.shape)["data"])
    panel_data, _ = fast_inputs(obs, blocks)
    local_data, local_kwargs = local_inputs(obs, blocks)

    def build(batch_size=None, local=False):
        return svi.build(
            jax.random.key(0),
            local_model if local else fast_model,
            local_data if local else panel_data,
            model_kwargs=local_kwargs if local else model_kwargs,
            data_plate="rows",
            mesh=mesh,
            num_particles=NUM_PARTICLES,
            optimizer=svi.default_optimizer(LEARNING_RATE),
            batch_size=batch_size,
            rows_argument=BLOCK_INDEX if local and batch_size else None,
        )

    problem = build()
    init_constrained = problem.constrain(problem.params)
    seed_key = jax.random.key(1)
    settle_its, _, settled_state = run_svi(problem, seed_key, settle_steps - svi.STEPS_PER_CALL)
    settled = jax.device_get(problem.params_of(settled_state.params))
    print(
        f"settled: {settle_steps} fast-path steps from the initial parameters at {settle_its:.1f} "
        "it/s"
    )
    num_blocks, data_shards = len(panel_data["product"]), dict(mesh.shape)["data"]
    batch_blocks = [
        max(1, round(fraction * num_blocks / data_shards)) * data_shards
        for fraction in args.batch_fractions
    ]
    local_problem = build(local=True)
    local_settled = in_slots(settled, local_problem.params, blocks)
    minibatch_problems = [build(batch, local=True) for batch in batch_blocks]
    one_block_problem = build(data_shards, local=True)  # one block per device
    reference = reference_demand.make_svi(NUM_PARTICLES, svi.default_optimizer(LEARNING_RATE))
    reference_round = reference_demand.round_timer(
        reference,
        jax.random.key(1),
        reference_steps,
        data,
        model_kwargs,
        problem.constrain(settled),
    )

    # Rounds alternate between the paths, so that the machine's drift (timings here wander by
    # 10 to 20% from minute to minute) reaches every figure alike; medians are reported.
    exp_seconds = exp_pass_seconds(NUM_PARTICLES * num_obs)
    rounds = {"fast": [], "fast_from_init": [], "local": [], "one_block": [], "reference": []}
    rounds["minibatch"] = [[] for _ in batch_blocks]
    for _ in range(args.rounds):
        rounds["fast"].append(run_svi(problem, seed_key, steps, settled)[0])
        rounds["fast_from_init"].append(run_svi(problem, seed_key, steps)[0])
        rounds["local"].append(run_svi(local_problem, seed_key, steps, local_settled)[0])
        its, _, _ = run_svi(one_block_problem, seed_key, 10 * steps, local_settled)
        rounds["one_block"].append(its)
        for times, minibatch_problem, batch in zip(
            rounds["minibatch"], minibatch_problems, batch_blocks, strict=True
        ):  # as many observations as a full-batch round
            batch_steps = round(steps * num_blocks / batch)
            times.append(run_svi(minibatch_problem, seed_key, batch_steps, local_settled)[0])
        rounds["reference"].append(reference_round())
    exp_seconds = min(exp_seconds, exp_pass_seconds(NUM_PARTICLES * num_obs))
    fast_its = float(np.median(rounds["fast"]))
    fast_from_init_its = float(np.median(rounds["fast_from_init"]))
    reference_its = float(np.median(rounds["reference"]))
    minibatch = []
    for fraction, batch, times in zip(
        args.batch_fractions, batch_blocks, rounds["minibatch"], strict=True
    ):
        its = float(np.median(times))
        obs_per_step = batch * num_obs / num_blocks  # expected: blocks drawn uniformly
        minibatch.append(
            {
                "fraction": fraction,
                "batch_blocks": batch,
                "it_per_s": its,
                "it_per_s_rounds": times,
                "obs_per_s": its * obs_per_step,
                "obs_per_s_vs_full_batch": its * obs_per_step / (fast_its * num_obs),
            }
        )

    reference_run, _ = reference_demand.run(
        reference, jax.random.key(1), learn_steps, data, model_kwargs, init_constrained
    )
    reference_losses = np.asarray(reference_run.losses)
    _, fast_losses, state = run_svi(problem, seed_key, learn_steps - svi.STEPS_PER_CALL)
    fast_params = problem.constrain(problem.params_of(state.params))
    tail = max(1, learn_steps // 10)
    result = {
        "size": size,
        "products": num_products,
        "periods": num_periods,
        "categories": num_categories,
        "observations": num_obs,
        "devices": jax.device_count(),
        "layout": str(dict(mesh.shape)),
        "particles": NUM_PARTICLES,
        "rounds": args.rounds,
        "settle_steps": settle_steps,
        "reference_it_per_s": reference_its,
        "fast_it_per_s": fast_its,
        "speedup": fast_its / reference_its,
        "fast_it_per_s_from_init": fast_from_init_its,
        "speedup_from_init": fast_from_init_its / reference_its,
        "reference_it_per_s_rounds": rounds["reference"],
        "fast_it_per_s_rounds": rounds["fast"],
        "fast_it_per_s_from_init_rounds": rounds["fast_from_init"],
        "local_it_per_s": float(np.median(rounds["local"])),
        "local_it_per_s_rounds": rounds["local"],
        "one_block_per_device_it_per_s": float(np.median(rounds["one_block"])),
        "one_block_per_device_it_per_s_rounds": rounds["one_block"],
        "speedup_per_round": [
            f / r for f, r in zip(rounds["fast"], rounds["reference"], strict=True)
        ],
        "exp_pass_ms": 1e3 * exp_seconds,
        "reference_step_in_exp_passes": 1.0 / reference_its / exp_seconds,
        "fast_step_in_exp_passes": 1.0 / fast_its / exp_seconds,
        "full_batch_obs_per_s": fast_its * num_obs,
        "minibatch": minibatch,
        "learn_steps": learn_steps,
        "reference_final_loss": float(reference_losses[-tail:].mean()),
        "fast_final_loss": float(fast_losses[-tail:].mean()),
        "reference_elasticity_corr": elasticity_correlation(
            reference.guide, reference_run.params, truth
        ),
        "fast_elasticity_corr": elasticity_correlation(problem.guide, fast_params, truth),
    }
    rows = [
        ("", "reference (NumPyro)", "fast path (samplepar)"),
        ("it/s", f"{reference_its:.2f}", f"{fast_its:.1f}"),
        ("it/s from the initial params", "", f"{fast_from_init_its:.1f}"),
        ("it/s, product latents local", "", f"{result['local_it_per_s']:.1f}"),
        (
            "step / exp pass",
            f"{result['reference_step_in_exp_passes']:.1f}",
            f"{result['fast_step_in_exp_passes']:.1f}",
        ),
        (
            f"loss, last {tail} of {learn_steps}",
            f"{result['reference_final_loss']:.6g}",
            f"{result['fast_final_loss']:.6g}",
        ),
        (
            "corr(elasticity, truth)",
            f"{result['reference_elasticity_corr']:.3f}",
            f"{result['fast_elasticity_corr']:.3f}",
        ),
    ]
    print(
        f"demand-{size}: {num_products} products x {num_periods} periods = {num_obs} obs, "
        f"{jax.device_count()} devices, layout {result['layout']}, "
        f"exp pass {result['exp_pass_ms']:.2f} ms"
    )
    for row in rows:
        print(f"{row[0]:<28}{row[1]:>22}{row[2]:>24}")
    spread = result["speedup_per_round"]
    print(
        f"speed-up per iteration: {result['speedup']:.1f}x (median it/s of {args.rounds} rounds; "
        f"per round {min(spread):.1f}x to {max(spread):.1f}x); from the initial parameters "
        f"{result['speedup_from_init']:.1f}x"
    )
    one_block_ms = 1e3 / result["one_block_per_device_it_per_s"]
    print(
        f"mini-batch of one block per device: {result['one_block_per_device_it_per_s']:.1f} it/s, "
        f"{one_block_ms:.2f} ms a step (what does not shrink with the batch)"
    )
    for row in minibatch:
        print(
            f"mini-batch {row['batch_blocks']} of {num_blocks} blocks "
            f"({row['batch_blocks'] / num_blocks:.2f}, asked {row['fraction']:g}): "
            f"{row['it_per_s']:.1f} it/s, "
            f"{row['obs_per_s'] / 1e6:.1f} M obs/s = {row['obs_per_s_vs_full_batch']:.2f}x "
            f"the full batch's {result['full_batch_obs_per_s'] / 1e6:.1f} M obs/s"
        )
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
