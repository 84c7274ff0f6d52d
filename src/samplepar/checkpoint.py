"""Checkpoints with orbax: array state plus a JSON record (config, data position, step).

A checkpoint directory holds one sub-directory per saved step. orbax writes each step to a
temporary directory and renames it when complete, so a process killed during a write leaves the
previous checkpoint usable. Nothing is ever pickled. Restoring takes a *like* tree whose shapes,
dtypes and shardings say how to lay the arrays out, so a checkpoint saved on one mesh layout
restores on another.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: corrupt, truncated, or from another configuration."""


def _manager(directory: str | os.PathLike, max_to_keep: int | None = 2) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=options)


def save(directory, step: int, tree: PyTree, meta: dict, max_to_keep: int | None = 2) -> None:
    """Saves ``tree`` (arrays) and ``meta`` (JSON-serialisable) as checkpoint ``step``."""
    with _manager(directory, max_to_keep) as manager:
        manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(tree), meta=ocp.args.JsonSave(meta)
            ),
        )
        manager.wait_until_finished()


def latest_step(directory) -> int | None:
    """The newest complete checkpoint's step, or None when there is none."""
    if not Path(directory).is_dir():
        return None
    with _manager(directory) as manager:
        return manager.latest_step()


def restore_meta(directory, step: int) -> dict:
    """The JSON record of checkpoint ``step``."""
    with _manager(directory) as manager:
        try:
            restored = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as error:  # orbax raises several types for damaged files
            raise CheckpointError(
                f"checkpoint {step} in {directory} cannot be read ({type(error).__name__}: "
                f"{error}); delete that step's folder to fall back to an earlier one"
            ) from error
    return dict(restored.meta)


def restore(directory, step: int, like: PyTree) -> PyTree:
    """Restores checkpoint ``step`` laid out like ``like`` (shapes, dtypes, shardings).

    Raises CheckpointError when the stored tree does not match ``like`` or cannot be read.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    with _manager(directory) as manager:
        try:
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
            )
        except Exception as error:  # orbax raises several types for damaged files
            raise CheckpointError(
                f"checkpoint {step} in {directory} does not fit this run or is damaged "
                f"({type(error).__name__}: {str(error)[:300]})"
            ) from error
    state = restored.state
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(like), strict=True):
        if np.shape(got) != np.shape(want):
            raise CheckpointError(
                f"checkpoint {step} in {directory} holds an array of shape {np.shape(got)} where "
                f"this run has {np.shape(want)}: it was saved by another model or configuration"
            )
    return state


def check_config(
    workdir,
    config: dict,
    *,
    resumable: bool = True,
    normalise: Callable[[dict], dict] | None = None,
    filename: str = "config.json",
) -> None:
    """Records ``config`` in ``workdir``, or raises if the workdir holds a different run.

    ``resumable`` says whether the workdir holds state to resume (a checkpoint). Without one, a
    stored configuration is that of a run refused or stopped before its first checkpoint: it
    is replaced, so that the corrected command can start. ``normalise`` maps the stored
    configuration to ``config``'s spelling before they are compared (names with aliases). Keys
    that may differ between a run and its resumption (e.g. the layout) are the caller's to
    leave out of ``config``.
    """
    path = Path(workdir) / filename
    canonical = json.loads(json.dumps(config, sort_keys=True))
    if path.exists() and resumable:
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise CheckpointError(f"{path} is not valid JSON: {error}") from error
        if normalise is not None and isinstance(stored, dict):
            stored = json.loads(json.dumps(normalise(stored), sort_keys=True))
        if stored != canonical:
            differing = sorted(
                key for key in set(stored) | set(canonical) if stored.get(key) != canonical.get(key)
            )
            details = ", ".join(
                f"{key}: stored {stored.get(key)!r} vs now {canonical.get(key)!r}"
                for key in differing
            )
            raise CheckpointError(
                f"workdir {workdir} holds a run with a different configuration ({details}); "
                "use another --workdir or delete that one"
            )
        return
    if jax.process_index() == 0:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(canonical, indent=2, sort_keys=True))
        os.replace(temporary, path)
