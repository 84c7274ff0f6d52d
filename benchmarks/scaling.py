"""Weak and strong scaling with real processes (jax.distributed on 127.0.0.1, one CPU core each).

Workload bnn-mlp (mean-field MLP 784-512-512-10). Each configuration runs as 1 and as 2
processes, every process pinned to its own core with one XLA thread, and times the training step
(median over timed steps, after compilation and warm-up), in ``--rounds`` rounds alternating the
1- and the 2-process run (medians reported, every round in the JSON: from minute to minute the
same run on this machine varies by 10 to 20%):

- sample, weak:   1 process S=8,  2 processes S=16 on sample=2 (S grows with the devices);
- sample, strong: S=16 on 1 process and on 2 processes (sample=2);
- data, weak:     batch 128 on 1 process, 256 on 2 processes (data=2), S=4;
- data, strong:   batch 256, S=4 on 1 and on 2 processes (data=2);
- hybrid, weak:   1 process S=8, batch 256; 2 processes S=16, batch 256 on sample=2,data=2
                  (two virtual devices per process: samples split inside a process, the batch
                  across processes);
- hybrid, strong: S=16, batch 256 on 1 process and on 2 processes (sample=2,data=2).

Weak efficiency = t(1) / t(2); strong speed-up = t(1) / t(2) (ideal 2). A control runs the
1-process sample-weak workload as 2 independent processes at once, with no communication (3
rounds alternating with the 1-process run, medians): t(1) over its time is the most a 2-process
run can reach on this machine (shared caches, memory bandwidth, hyperthreads); the weak runs
with the same work per process are also given relative to it.
Target: sample weak efficiency at least 0.90.

    python benchmarks/scaling.py [--steps 20] [--rounds 3] [--only sample-weak ...]
    python benchmarks/scaling.py --quick     # sample-weak and hybrid-strong, 1 round: a smoke run

Prints a table, writes ``benchmarks/results/scaling.json`` and ``scaling.png`` (time per step of
each configuration on 1 and 2 processes, and the efficiencies and speed-ups against ideal);
``--quick`` writes ``scaling-quick.json`` and ``scaling-quick.png``, and flags given beside it
win over its settings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

CONFIGS = {
    # name: (layout on 2 processes, samples on 1, samples on 2, batch on 1, batch on 2,
    #        devices per process on 2 processes)
    "sample-weak": ("sample=2", 8, 16, 256, 256, 1),
    "sample-strong": ("sample=2", 16, 16, 256, 256, 1),
    "data-weak": ("data=2", 4, 4, 128, 256, 1),
    "data-strong": ("data=2", 4, 4, 256, 256, 1),
    "hybrid-weak": ("sample=2,data=2", 8, 16, 256, 256, 2),
    "hybrid-strong": ("sample=2,data=2", 16, 16, 256, 256, 2),
}


CONTROL_ROUNDS = 3


def worker(layout: str, num_samples: int, batch_size: int, steps: int, connected: bool) -> None:
    """One process: times ``steps`` training steps and prints a JSON line. Unless
    ``connected``, the process runs alone, without joining the others (the control)."""
    from _common import median_seconds, mlp_workload

    from samplepar import distributed
    from samplepar.host import prepare_process

    prepare_process()  # as the command line does: see samplepar.host

    if connected:
        distributed.initialize()
    import jax
    import optax

    from samplepar import engine, mesh, objectives, random

    family, params, log_lik, make_batch = mlp_workload()
    m = mesh.make_mesh(layout)
    optimizer = optax.adam(1e-3)
    particle = engine.bayesian_particle(family, log_lik)
    loss = engine.make_loss(particle, objectives.ELBO(), m, num_samples, 60000, kl_fn=family.kl)
    step = engine.build_step(loss, optimizer, m, engine.weight_sample_compiler_options(m))
    state = engine.init(params, optimizer, m)
    global_rows = make_batch(batch_size)
    rows = mesh.process_slice(batch_size, m)
    batch = mesh.global_batch({k: v[rows] for k, v in global_rows.items()}, m)
    seed = jax.random.key(0)
    box = {"state": state, "t": 0}

    def one_step():
        box["state"], info = step(random.step_key(seed, box["t"]), box["state"], batch)
        box["t"] += 1
        info.loss.block_until_ready()

    seconds = median_seconds(one_step, repeats=steps, warmup=3)
    print(json.dumps({"process": jax.process_index(), "step_seconds": seconds}))


def run(
    layout: str,
    num_processes: int,
    num_samples: int,
    batch_size: int,
    steps: int,
    devices_per_process: int = 1,
    connected: bool = True,
) -> float:
    """Seconds per step of the slowest process, each pinned to its own core."""
    from samplepar import launch

    here = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, os.path.join(here, "scaling.py"), "--worker"]
    command += [layout, str(num_samples), str(batch_size), str(steps), str(int(connected))]
    flags = f"--xla_force_host_platform_device_count={devices_per_process}"
    env = dict(os.environ, XLA_FLAGS=flags)
    results = launch.launch_local(command, num_processes, timeout_s=600, env=env, pin_cores=True)
    return max(json.loads(r.stdout.strip().splitlines()[-1])["step_seconds"] for r in results)


def plot(record: dict, path) -> None:
    """Step times on 1 and 2 processes, and efficiency / speed-up against ideal, per config."""
    from matplotlib.figure import Figure

    names = list(record["configs"])
    rows = [record["configs"][n] for n in names]
    fig = Figure(figsize=(11, 4))
    times, ratios = fig.subplots(1, 2)
    x = range(len(names))
    times.bar([i - 0.2 for i in x], [r["t1_s"] * 1e3 for r in rows], 0.4, label="1 process")
    times.bar([i + 0.2 for i in x], [r["t2_s"] * 1e3 for r in rows], 0.4, label="2 processes")
    times.set_xticks(list(x), names, rotation=30, ha="right")
    times.set_ylabel("ms per step (median)")
    times.legend()
    values = [r.get("efficiency", r.get("speedup")) for r in rows]
    ideal = [1.0 if "efficiency" in r else 2.0 for r in rows]
    ratios.bar(list(x), values, 0.5, label="measured")
    ratios.scatter(list(x), ideal, marker="_", s=400, color="k", label="ideal")
    if "control_efficiency" in record:
        ratios.axhline(record["control_efficiency"], ls=":", color="gray", label="control")
    ratios.set_xticks(list(x), names, rotation=30, ha="right")
    ratios.set_ylabel("weak efficiency / strong speed-up")
    ratios.set_ylim(0, 2.5)
    ratios.legend(ncol=3, loc="upper center", fontsize=8)
    fig.suptitle(f"{record['workload']}: 1 vs 2 processes, one core each")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        layout, samples, batch, steps, connected = sys.argv[2:7]
        worker(layout, int(samples), int(batch), int(steps), connected == "1")
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import RESULTS, check_writable, emit, fill_unset, positive_int

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (about 2 minutes)")
    parser.add_argument("--steps", type=positive_int, help="timed steps a run (default 20)")
    parser.add_argument("--only", choices=sorted(CONFIGS), nargs="+", help="default: all")
    parser.add_argument(
        "--rounds",
        type=positive_int,
        help="alternating 1- and 2-process runs per config (default 3)",
    )
    args = parser.parse_args()
    quick = {"steps": 5, "rounds": 1, "only": ["sample-weak", "hybrid-strong"]}
    fill_unset(args, quick if args.quick else {"steps": 20, "rounds": 3})
    control_rounds = args.rounds if args.quick else CONTROL_ROUNDS
    output = "scaling-quick" if args.quick else "scaling"
    check_writable(parser, RESULTS)

    record = {"workload": "bnn-mlp", "cores_per_process": 1, "configs": {}}
    _, control_samples, _, control_batch, _, _ = CONFIGS["sample-weak"]
    alone, control = [], []
    for _ in range(control_rounds):  # alternating, so that drifting load hits both alike
        alone.append(run("none", 1, control_samples, control_batch, args.steps))
        control.append(run("none", 2, control_samples, control_batch, args.steps, connected=False))
    alone, control = statistics.median(alone), statistics.median(control)
    record["control"] = {"t1_s": alone, "t2_independent_s": control}
    record["control_efficiency"] = alone / control
    print(
        f"control: S={control_samples} alone {alone * 1e3:.1f} ms, as 2 independent processes "
        f"{control * 1e3:.1f} ms: ceiling {alone / control:.3f}"
    )
    print(f"{'config':<14} {'t(1) ms':>9} {'t(2) ms':>9} {'ratio':>7}")
    for name in args.only or CONFIGS:
        layout, s1, s2, b1, b2, devices = CONFIGS[name]
        t1_rounds, t2_rounds = [], []
        for _ in range(args.rounds):  # alternating, as the control
            t1_rounds.append(run("none", 1, s1, b1, args.steps))
            t2_rounds.append(run(layout, 2, s2, b2, args.steps, devices))
        t1, t2 = statistics.median(t1_rounds), statistics.median(t2_rounds)
        ratio = t1 / t2
        kind = "efficiency" if name.endswith("weak") else "speedup"
        record["configs"][name] = {
            "layout": layout,
            "t1_s": t1,
            "t2_s": t2,
            kind: ratio,
            "t1_s_rounds": t1_rounds,
            "t2_s_rounds": t2_rounds,
        }
        if kind == "efficiency" and (s1, b1) == (control_samples, control_batch):
            record["configs"][name]["efficiency_vs_control"] = control / t2
        print(f"{name:<14} {t1 * 1e3:9.1f} {t2 * 1e3:9.1f} {ratio:7.3f}")
    if "sample-weak" in record["configs"]:
        record["weak_efficiency"] = record["configs"]["sample-weak"]["efficiency"]
    plot(record, RESULTS / f"{output}.png")
    emit(output, record)


if __name__ == "__main__":
    main()
