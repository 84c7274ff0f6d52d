"""Batches: a pure, seeded, checkpointable training iterator and exact padded evaluation batches.

Training: ``next_batch(arrays, state, batch_size, seed) -> (batch, state)`` with
``LoaderState(epoch, position)``. Epoch ``e`` visits the examples in the order of a permutation
drawn from (seed, e); a batch that reaches the end of an epoch continues with the next epoch's
permutation, so no example is ever dropped and the stream of examples does not depend on the batch
size. Saving the two integers of the state with a checkpoint makes resumption exact.

Evaluation: ``eval_batches`` pads the last batch and marks real rows in ``"mask"``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh

from samplepar.mesh import process_slice

Batch = dict[str, np.ndarray]


class LoaderState(NamedTuple):
    """Where the training stream stands: the epoch and the position within its permutation."""

    epoch: int = 0
    position: int = 0


@functools.lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The permutation ``[num_examples]`` of epoch ``epoch``; a function of its arguments only."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order.setflags(write=False)
    return order


def next_batch(
    arrays: tuple[np.ndarray, np.ndarray], state: LoaderState, batch_size: int, seed: int
) -> tuple[Batch, LoaderState]:
    """The next ``{"x", "y", "index"}`` batch of ``batch_size`` rows, and the state after it.

    ``arrays`` is ``(x [N, ...], y [N, ...])``; ``"index" [batch_size]`` holds the rows' global
    example indices (int32), which key their augmentation.
    """
    x, y = arrays
    num_examples = x.shape[0]
    if y.shape[0] != num_examples:
        raise ValueError(f"x has {num_examples} rows but y has {y.shape[0]}")
    if num_examples == 0 or batch_size < 1:
        raise ValueError(f"need examples and batch_size >= 1, got {num_examples}, {batch_size}")
    epoch, position = state
    if not 0 <= position < num_examples:
        raise ValueError(f"loader position {position} is outside 0..{num_examples - 1}")
    parts, needed = [], batch_size
    while needed:
        take = min(needed, num_examples - position)
        parts.append(epoch_order(seed, epoch, num_examples)[position : position + take])
        needed -= take
        position += take
        if position == num_examples:
            epoch, position = epoch + 1, 0
    index = np.concatenate(parts)
    batch = {"x": x[index], "y": y[index], "index": index.astype(np.int32)}
    return batch, LoaderState(epoch, position)


def eval_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, multiple: int = 1
) -> Iterator[Batch]:
    """Batches ``{"x", "y", "index", "mask"}`` covering every example once, all of one shape.

    Each batch has ``batch_size`` rounded up to a multiple of ``multiple`` (e.g. the data-axis
    size) rows; rows past the end are zeros with ``mask`` False, so masked sums are exact.
    """
    if batch_size < 1 or multiple < 1:
        raise ValueError(f"batch_size and multiple must be >= 1, got {batch_size}, {multiple}")
    size = -(-batch_size // multiple) * multiple
    num_examples = x.shape[0]
    for start in range(0, num_examples, size):
        stop = min(start + size, num_examples)
        pad = size - (stop - start)
        batch = {"x": x[start:stop], "y": y[start:stop], "index": np.arange(start, stop)}
        batch = {k: np.pad(v, [(0, pad)] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}
        batch["index"] = batch["index"].astype(np.int32)
        batch["mask"] = np.arange(size) < stop - start
        yield batch


def process_rows(batch: Batch, mesh: Mesh) -> Batch:
    """This process's rows of a global batch whose examples ``mesh`` shards over ``data``.

    In one process that is the whole batch. Feed the result to
    :func:`samplepar.mesh.global_batch` to assemble the sharded global batch.
    """
    return jax.tree.map(lambda a: a[process_slice(a.shape[0], mesh)], batch)
