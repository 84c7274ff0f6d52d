"""Checks on a run's working directory, made before anything expensive starts.

A run that cannot write its checkpoints should fail in its first second, not after an hour of
training: ``check_workdir`` writes and fsyncs a probe file in the directory (in its nearest
existing parent when it does not exist yet), removes it, and compares the free space with what
the checkpoints will need. It creates nothing: a run refused for its settings or data leaves
no empty workdir behind; the run creates it when it records its configuration.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
from pathlib import Path

import jax

PROBE_PREFIX = ".samplepar-probe-"


class WorkdirError(OSError):
    """A working directory that cannot be created, written, or lacks the space a run needs."""


def checkpoint_bytes(tree, kept: int = 2) -> int:
    """Disk bytes ``kept`` checkpoints of ``tree`` need, plus one being written, plus 10 %."""
    one = sum(
        math.prod(leaf.shape) * leaf.dtype.itemsize
        for leaf in jax.tree.leaves(tree)
        if hasattr(leaf, "dtype")
    )
    return int(1.1 * one * (kept + 1))


def check_workdir(path: str | os.PathLike, min_free_bytes: int = 0) -> Path:
    """Makes sure ``path`` is, or can be created as, a writable directory with
    ``min_free_bytes`` free; returns it.

    Raises WorkdirError naming the path and the problem. Leaves nothing behind.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WorkdirError(f"workdir {path} exists and is not a directory")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise WorkdirError(
            f"workdir {path} cannot be created ({existing} is not a directory); "
            "choose a --workdir on a writable file system"
        )
    probe = existing / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"samplepar workdir probe\n")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        problem = "is not writable" if existing == path.absolute() else "cannot be created"
        raise WorkdirError(
            f"workdir {path} {problem} ({error.strerror or error}); "
            "choose a --workdir on a writable file system"
        ) from error
    finally:
        probe.unlink(missing_ok=True)
    check_free_space(existing, min_free_bytes)
    return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest parent that exists (the file system it will be created on)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(path: str | os.PathLike, min_free_bytes: int) -> Path:
    """Raises WorkdirError when the file system of ``path`` has less than ``min_free_bytes``."""
    path = Path(path)
    free = shutil.disk_usage(_nearest_existing(path)).free
    if free < min_free_bytes:
        raise WorkdirError(
            f"workdir {path} has {_size(free)} free but the checkpoints need about "
            f"{_size(min_free_bytes)}; free some space or choose another --workdir"
        )
    return path


def _size(num_bytes: int) -> str:
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    power = min(int(math.log(max(num_bytes, 1), 1024)), len(units) - 1)
    return f"{num_bytes / 1024**power:.1f} {units[power]}"
