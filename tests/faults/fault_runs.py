"""Shared pieces of the fault tests: the tiniest training run, as a command or a config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

# The tiniest run: a mean-field MLP on scikit-learn's digits, 2 weight samples, 2 epochs, no
# report (its plots are tested in test_report.py and test_cli.py).
TINY = {
    "model": "mlp",
    "dataset": "digits",
    "samples": 2,
    "batch_size": 64,
    "epochs": 2,
    "eval_samples": 2,
    "layout": "sample=2",
    "progress": False,
    "report": False,
}


def flags(**settings) -> list[str]:
    """``samplepar train`` flags for TINY with ``settings`` on top."""
    out = []
    for name, value in {**TINY, **settings}.items():
        if name in ("progress", "report"):
            out += [] if value else ["--no-" + name]
        else:
            out += ["--" + name.replace("_", "-"), str(value)]
    return out


def command(workdir, *extra: str, host_devices: int = 2, **settings) -> list[str]:
    """The ``samplepar train`` command line of TINY (``settings`` on top) in ``workdir``."""
    return [
        sys.executable,
        "-m",
        "samplepar.cli",
        "--host-devices",
        str(host_devices),
        *extra,
        "train",
        "--workdir",
        str(workdir),
        *flags(**settings),
    ]


def environment(cache_dir) -> dict:
    """The environment of a CLI subprocess: CPU only, compiled programs shared via ``cache_dir``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_COMPILATION_CACHE_DIR"] = str(cache_dir)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    return env


def run(cmd: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def steps(workdir) -> list[int]:
    """The complete checkpoint steps in ``workdir`` (orbax renames a step's folder when done)."""
    folder = Path(workdir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def stored_state(workdir, step: int | None = None) -> dict:
    """The state tree of checkpoint ``step`` (default: the newest) in ``workdir``, as numpy."""
    step = steps(workdir)[-1] if step is None else step
    path = (Path(workdir) / "checkpoints" / str(step) / "state").absolute()
    with ocp.PyTreeCheckpointer() as checkpointer:
        tree = checkpointer.metadata(path).item_metadata.tree
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        return checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def final_params(workdir) -> list[np.ndarray]:
    """The variational parameters of the newest checkpoint in ``workdir``, as numpy leaves."""
    return jax.tree.leaves(stored_state(workdir)["params"])


def assert_params_close(got: list[np.ndarray], want: list[np.ndarray], tol: float = 1e-5) -> None:
    assert len(got) == len(want) > 0
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
