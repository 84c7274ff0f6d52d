"""Shared pieces of the benchmarks: device flags, argument checks, the bnn-mlp workload, timing
and JSON output."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("results")


def use_host_devices(count: int) -> None:
    """Asks XLA for ``count`` CPU devices; call before jax is imported."""
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def int_at_least(minimum: int):
    """An argparse ``type``: an integer ``>= minimum``, so bad counts fail at parsing."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


positive_int = int_at_least(1)


def positive_ints(text: str) -> list[int]:
    """An argparse ``type``: comma-separated positive integers, e.g. ``1,4,16``."""
    return [positive_int(part) for part in text.split(",")]


def fractions(text: str) -> list[float]:
    """An argparse ``type``: comma-separated fractions in (0, 1], e.g. ``0.25,0.5``."""

    def fraction(part: str) -> float:
        try:
            value = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a number") from None
        if not 0 < value <= 1:
            raise argparse.ArgumentTypeError(f"{value} is not in (0, 1]")
        return value

    return [fraction(part) for part in text.split(",")]


def fill_unset(args: argparse.Namespace, settings: dict) -> None:
    """Gives each argument still ``None`` (not given) its value from ``settings``, so that
    flags given beside ``--quick`` win over its settings."""
    for name, value in settings.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def check_writable(parser: argparse.ArgumentParser, directory: Path) -> None:
    """Creates ``directory`` if needed and fails through ``parser`` unless it is writable, so
    that a bad output path stops the run before its work, not after."""
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()  # os.access says yes to root everywhere
    except OSError as error:
        parser.error(f"cannot write to output directory {directory}: {error.strerror}")


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
