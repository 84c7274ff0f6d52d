"""Batched Cholesky factorisations and triangular solves on CPU without LAPACK's thread pool.

On CPU, JAX runs a batch of Cholesky factorisations or triangular solves as one LAPACK call
that spreads the batch over XLA's intra-op thread pool and waits for it. That pool has one
thread per CPU device, and a program sharded over every device runs on all of them at once:
each thread then waits for work that no free thread is left to run, and the process sits for
good or is aborted by XLA's time limit on collectives. A low-rank guide's step (4 particles, a
50 x 50 capacitance matrix) on 8 devices did in every run (tests/test_cpu_linalg.py).
:func:`batched_linalg_in_xla_on_cpu` lowers the batched cases to XLA's own HLO instead (no
LAPACK, no pool); unbatched ones keep LAPACK.
"""

from __future__ import annotations

import os

from jax._src.lax import linalg
from jax.interpreters import mlir

XLA_LINALG_SWITCH = "SAMPLEPAR_BATCHED_LINALG_IN_XLA"


def _batched_in_xla(xla_rule, lapack_rule):
    """A lowering that takes ``xla_rule`` for operands with batch axes, else ``lapack_rule``."""

    def rule(ctx, *operands, **params):
        batched = len(ctx.avals_in[0].shape) > 2
        return (xla_rule if batched else lapack_rule)(ctx, *operands, **params)

    return rule


def batched_linalg_in_xla_on_cpu() -> bool:
    """Lowers batched Cholesky factorisations and triangular solves to XLA's HLO on CPU, for
    every program compiled after the call; returns whether it did
    (``SAMPLEPAR_BATCHED_LINALG_IN_XLA=0`` keeps LAPACK). The same results to float
    tolerance. The command line and the benchmarks call it; library users may too.
    """
    if os.environ.get(XLA_LINALG_SWITCH, "1") == "0":
        return False
    rules = (
        (linalg.cholesky_p, linalg._cholesky_lowering, linalg._cholesky_cpu_lowering),
        (
            linalg.triangular_solve_p,
            linalg._triangular_solve_lowering,
            linalg._triangular_solve_cpu_lower,
        ),
    )
    for primitive, xla_rule, lapack_rule in rules:
        mlir.register_lowering(primitive, _batched_in_xla(xla_rule, lapack_rule), platform="cpu")
    return True
