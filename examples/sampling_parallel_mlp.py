"""Sampling parallelism in under 60 lines: a Bayesian MLP on digits, 8 weight samples per step
on 4 virtual devices laid out sample=2 x data=2 (4 samples on each sample shard, the batch
split over the data shards).

python examples/sampling_parallel_mlp.py [--steps 200]
"""

import argparse
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")

import jax  # noqa: E402
import optax  # noqa: E402

import samplepar as sp  # noqa: E402
from samplepar.data import load_dataset, next_batch  # noqa: E402
from samplepar.data.loader import LoaderState  # noqa: E402


def main(steps: int) -> float:
    data = load_dataset("digits")
    model = sp.bayesianize(sp.get_model("mlp", data.x_train.shape[1:], 10, hidden=(64,)))
    params = model.init_params(jax.random.key(0), data.x_train[:1])
    mesh = sp.make_mesh("sample=2,data=2")
    loss = sp.make_loss(
        sp.bayesian_particle(model.family, model.log_lik_fn),
        sp.ELBO(),
        mesh,
        num_samples=8,
        dataset_size=len(data.x_train),
        kl_fn=model.family.kl,
    )
    optimizer = optax.adam(1e-2)
    step = sp.build_step(loss, optimizer, mesh, sp.weight_sample_compiler_options(mesh))
    state = sp.init(params, optimizer, mesh)
    loader, seed = LoaderState(), jax.random.key(1)
    for t in range(steps):
        batch, loader = next_batch((data.x_train, data.y_train), loader, 64, seed=0)
        state, info = step(sp.step_key(seed, t), state, sp.global_batch(batch, mesh))
    weights, _ = model.family.sample_and_log_prob(jax.random.key(2), state.params)
    accuracy = (model.predict_fn(weights, data.x_test).argmax(-1) == data.y_test).mean()
    print(
        f"loss per example {float(info.loss) / len(data.x_train):.3f}, "
        f"accuracy of one posterior sample {float(accuracy):.3f}"
    )
    return float(accuracy)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    main(args.steps)
