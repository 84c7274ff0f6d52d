"""Shared pieces of the benchmarks: device flags, the bnn-mlp workload, timing and JSON output."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def use_host_devices(count: int) -> None:
    """Asks XLA for ``count`` CPU devices; call before jax is imported."""
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def mlp_workload(widths=(784, 512, 512, 10), seed=0):
    """The bnn-mlp workload: (family, params, log_lik_fn, make_batch(batch_size))."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from samplepar import variational

    rng = np.random.default_rng(seed)
    mean = [
        {
            "w": (rng.normal(size=(n_in, n_out)) / np.sqrt(n_in)).astype(np.float32),
            "b": np.zeros(n_out, np.float32),
        }
        for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)
    ]
    family = variational.mean_field_normal(init_scale=1e-3, prior_scale=1.0)

    def log_lik(weights, batch, rng_key):
        del rng_key
        h = batch["x"]
        for layer in weights[:-1]:
            h = jax.nn.relu(h @ layer["w"] + layer["b"])
        logits = h @ weights[-1]["w"] + weights[-1]["b"]
        return jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], 1)[:, 0]

    def make_batch(batch_size):
        return {
            "x": rng.normal(size=(batch_size, widths[0])).astype(np.float32),
            "y": rng.integers(0, widths[-1], size=batch_size).astype(np.int32),
        }

    return family, family.init(mean), log_lik, make_batch


def median_seconds(fn, repeats: int = 10, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` (which must block until its result is ready)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_svi(problem, seed_key, num_steps: int, init_params=None):
    """(steps/s, losses, final state) of sharded SVI taken as ``svi.fit`` takes it:
    ``STEPS_PER_CALL`` steps to a compiled call (at most two in flight, ``samplepar.dispatch``).
    One call compiles and is not timed; then ``num_steps`` steps (rounded down to
    whole calls, at least one) are; ``losses`` has every step's, the untimed call's first."""
    import jax
    import numpy as np

    from samplepar import svi

    per_call = svi.STEPS_PER_CALL
    calls = max(1, num_steps // per_call)
    state = problem.init(problem.params if init_params is None else init_params)
    seed_key = jax.device_put(seed_key, state.step.sharding)
    state, info = problem.steps(seed_key, state, problem.data, per_call)
    losses = [info.loss]
    jax.block_until_ready(state)
    start = time.perf_counter()
    for _ in range(calls):
        state, info = problem.steps(seed_key, state, problem.data, per_call)
        losses.append(info.loss)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    return calls * per_call / seconds, np.concatenate(jax.device_get(losses)), state


def emit(name: str, record: dict) -> None:
    """Prints the final JSON line and writes it to benchmarks/results/<name>.json."""
    RESULTS.mkdir(exist_ok=True)
    line = json.dumps(record)
    (RESULTS / f"{name}.json").write_text(line + "\n")
    print(line)
