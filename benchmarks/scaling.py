"""Weak and strong scaling with real processes (jax.distributed on 127.0.0.1, one CPU core each).

Workload bnn-mlp (mean-field MLP 784-512-512-10). Each configuration runs as 1 and as 2
processes, every process pinned to its own core with one XLA thread, and times the training step
(median over timed steps, after compilation and warm-up):

- sample, weak:   1 process S=8,  2 processes S=16 on sample=2 (S grows with the devices);
- sample, strong: S=16 on 1 process and on 2 processes (sample=2);
- data, weak:     batch 128 on 1 process, 256 on 2 processes (data=2), S=4;
- data, strong:   batch 256, S=4 on 1 and on 2 processes (data=2).

Weak efficiency = t(1) / t(2); strong speed-up = t(1) / t(2) (ideal 2).
Target: sample weak efficiency at least 0.90.

    python benchmarks/scaling.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

CONFIGS = {
    # name: (layout on 2 processes, samples on 1, samples on 2, batch on 1, batch on 2)
    "sample-weak": ("sample=2", 8, 16, 256, 256),
    "sample-strong": ("sample=2", 16, 16, 256, 256),
    "data-weak": ("data=2", 4, 4, 128, 256),
    "data-strong": ("data=2", 4, 4, 256, 256),
}


def worker(layout: str, num_samples: int, batch_size: int, steps: int) -> None:
    """One process: times ``steps`` training steps and prints a JSON line."""
    from _common import median_seconds, mlp_workload

    from samplepar import distributed

    distributed.initialize()
    import jax
    import optax

    from samplepar import engine, mesh, objectives, random

    family, params, log_lik, make_batch = mlp_workload()
    m = mesh.make_mesh(layout)
    optimizer = optax.adam(1e-3)
    particle = engine.bayesian_particle(family, log_lik)
    loss = engine.make_loss(particle, objectives.ELBO(), m, num_samples, 60000, kl_fn=family.kl)
    step = engine.build_step(loss, optimizer, m)
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


def run(layout: str, num_processes: int, num_samples: int, batch_size: int, steps: int):
    from samplepar import launch

    here = os.path.dirname(os.path.abspath(__file__))
    command = [sys.executable, os.path.join(here, "scaling.py"), "--worker"]
    command += [layout, str(num_samples), str(batch_size), str(steps)]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    results = launch.launch_local(command, num_processes, timeout_s=600, env=env, pin_cores=True)
    return max(json.loads(r.stdout.strip().splitlines()[-1])["step_seconds"] for r in results)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        layout, samples, batch, steps = sys.argv[2:6]
        worker(layout, int(samples), int(batch), int(steps))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", choices=sorted(CONFIGS), nargs="*")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _common import emit

    record = {"workload": "bnn-mlp", "cores_per_process": 1, "configs": {}}
    print(f"{'config':<14} {'t(1) ms':>9} {'t(2) ms':>9} {'ratio':>7}")
    for name in args.only or CONFIGS:
        layout, s1, s2, b1, b2 = CONFIGS[name]
        t1 = run("none", 1, s1, b1, args.steps)
        t2 = run(layout, 2, s2, b2, args.steps)
        ratio = t1 / t2
        kind = "efficiency" if name.endswith("weak") else "speedup"
        record["configs"][name] = {"t1_s": t1, "t2_s": t2, kind: ratio}
        print(f"{name:<14} {t1 * 1e3:9.1f} {t2 * 1e3:9.1f} {ratio:7.3f}")
    if "sample-weak" in record["configs"]:
        record["weak_efficiency"] = record["configs"]["sample-weak"]["efficiency"]
    emit("scaling", record)


if __name__ == "__main__":
    main()
