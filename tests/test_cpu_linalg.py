"""Batched Cholesky and triangular solves in XLA's HLO on CPU: LAPACK's results, and no hang."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from samplepar import cpu_linalg


def _lowered_with_lapack(fn, *args) -> bool:
    return "lapack" in jax.jit(fn).lower(*args).as_text()


def test_batched_ops_leave_lapack_and_agree_with_it():
    """conftest switches, as the command line does: batched ops are HLO, single ones LAPACK."""
    x = jax.random.normal(jax.random.key(0), (4, 50, 50))
    a = x @ x.transpose(0, 2, 1) + 50 * jnp.eye(50)
    b = jax.random.normal(jax.random.key(1), (4, 50, 3))

    def solve(a, b):
        return jax.scipy.linalg.solve_triangular(jnp.linalg.cholesky(a), b, lower=True)

    assert not _lowered_with_lapack(solve, a, b)
    assert _lowered_with_lapack(solve, a[0], b[0])
    batched = jax.jit(solve)(a, b)
    singles = jnp.stack([jax.jit(solve)(a[i], b[i]) for i in range(4)])
    np.testing.assert_allclose(batched, singles, rtol=2e-5, atol=2e-6)


def test_switch_can_be_turned_off(monkeypatch):
    monkeypatch.setenv(cpu_linalg.XLA_LINALG_SWITCH, "0")
    assert cpu_linalg.batched_linalg_in_xla_on_cpu() is False


LOW_RANK_STEPS = """
from samplepar.host import prepare_process
prepare_process()
import jax
from samplepar import compare
config = compare.StudyConfig(num_products=1000, methods=("lowrank-at-mean",), svi_steps=5,
                             num_draws=50)
compare.run_svi(jax.random.key(0), "lowrank-at-mean", compare.simulate_panel(config), config)
print("done")
"""


def test_low_rank_guide_on_every_device_does_not_hang():
    """With LAPACK, this step (4 particles, a 50 x 50 capacitance matrix, 8 devices) stalled in
    every run: every pool thread waited in a batched triangular solve for the others. The
    process either sat for good (``subprocess.run``'s time limit fails the test) or was aborted
    by XLA's time limit on collectives (this test without the fix: exit -6 after 78 s)."""
    run = subprocess.run(
        [sys.executable, "-c", LOW_RANK_STEPS],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("done")
