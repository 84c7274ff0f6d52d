"""A loop that queues demand-model SVI steps on two CPU devices and reads none of their results.

Usage: ``python unread_steps_worker.py NUM_STEPS``; prints the final step count when done.
Without :class:`samplepar.dispatch.BoundedDispatch` such a loop stopped in an all-reduce's
rendezvous (the process aborts after 40 s) in about half of the runs of 3,000 steps.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
from svi_worker import demand_problem  # noqa: E402


def main(num_steps: int) -> None:
    problem = demand_problem()
    state = problem.init(problem.params)
    seed_key = jax.device_put(jax.random.key(1), state.step.sharding)
    for _ in range(num_steps):
        state, _ = problem.step(seed_key, state, problem.data)
    print(int(state.step))


if __name__ == "__main__":
    main(int(sys.argv[1]))
