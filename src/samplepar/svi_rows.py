"""The rows of sharded SVI's data: padding, global row indices over processes, and
mini-batches drawn on device (used by :mod:`samplepar.svi`)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec

from samplepar.mesh import DATA, check_batch_size, layout_of


class Rows(NamedTuple):
    """Rows of the data as a step's particles see them, sharded over ``data``."""

    mask: jax.Array  # [B] False for padding rows
    index: jax.Array  # [B] each row's global index among the data set's rows
    arrays: dict  # the rows' arrays [B, ...], or the shard's whole ones (a model reading them)
    positions: jax.Array | None = None  # [B] a mini-batch's positions among the shard's rows


def pad_rows(arrays: dict, multiple: int) -> tuple[dict, np.ndarray]:
    """Pads every array's leading axis to a multiple by repeating its last row; (arrays, mask)."""
    num_rows = {np.shape(a)[0] for a in arrays.values()}
    if len(num_rows) != 1:
        shapes = {k: np.shape(a) for k, a in arrays.items()}
        raise ValueError(f"data arrays must share their leading (row) axis; shapes: {shapes}")
    (n,) = num_rows
    padded = -(-n // multiple) * multiple
    return {k: _pad_edge(a, padded) for k, a in arrays.items()}, np.arange(padded) < n


def _pad_edge(a, length: int) -> np.ndarray:
    """``a`` with its last row repeated up to ``length`` rows."""
    a = np.asarray(a)
    pad = length - len(a)
    return np.concatenate([a, np.repeat(a[-1:], pad, axis=0)]) if pad else a


def row_indices(num_local_rows: int, padded: int, mesh) -> tuple[np.ndarray, int, int]:
    """(global index of each of this process's rows, padded as the rows are; the global row
    count; the global padded count).

    Processes that split the ``data`` axis each hold a consecutive slice of the rows, in
    the order of their data shards; processes that split only ``sample`` hold the same rows.
    """
    if jax.process_count() == 1:
        return _pad_edge(np.arange(num_local_rows, dtype=np.int32), padded), num_local_rows, padded
    counts = multihost_utils.process_allgather(np.array([num_local_rows, padded], np.int64))
    first_shard = {}  # process -> the first data shard it holds
    for (_, shard), device in np.ndenumerate(mesh.devices):
        first_shard[device.process_index] = min(first_shard.get(device.process_index, shard), shard)
    slices = {}  # first data shard -> (rows, padded rows) of the processes holding it
    for process, shard in first_shard.items():
        slices.setdefault(shard, tuple(int(c) for c in counts[process]))
    mine = first_shard[jax.process_index()]
    offset = sum(rows for shard, (rows, _) in slices.items() if shard < mine)
    rows = np.arange(offset, offset + num_local_rows, dtype=np.int32)
    num_rows = sum(rows for rows, _ in slices.values())
    return _pad_edge(rows, padded), num_rows, sum(p for _, p in slices.values())


def make_subsample(mesh, batch_size: int, model_takes_rows: bool = False):
    """``subsample(rng_key, data: Rows) -> Rows``: each data shard draws its rows on device.

    The drawn rows' arrays are gathered, or, with ``model_takes_rows``, left whole (the model
    reads them at the positions itself). Either way the rows' positions among the shard's rows
    come along, where its shard of per-row parameters is read.
    """
    layout = layout_of(mesh)
    check_batch_size(batch_size, layout)
    local = batch_size // layout.data

    def shard(rng_key, data: Rows):
        key = jax.random.fold_in(rng_key, jax.lax.axis_index(DATA))
        positions = jax.random.randint(key, (local,), 0, data.mask.shape[0])

        def take(a):  # "clip": in bounds, and the default ("fill") adds a select pass
            return jnp.take(a, positions, axis=0, mode="clip")

        arrays = data.arrays if model_takes_rows else jax.tree.map(take, data.arrays)
        return Rows(take(data.mask), take(data.index), arrays, positions)

    return jax.shard_map(
        shard,
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(DATA)),
        out_specs=PartitionSpec(DATA),
    )


def row_param_specs(params: dict, local_axes: dict[str, int]) -> dict:
    """A ``PartitionSpec`` per param: local params (``local_axes``: their row axis) split over
    ``data`` along it, like the rows; the others replicated."""
    return {
        name: PartitionSpec(*[None] * local_axes[name], DATA)
        if name in local_axes
        else PartitionSpec()
        for name in params
    }


def drop_padding(params: dict, local_axes: dict[str, int], data: Rows, num_rows: int) -> dict:
    """Local params laid out like ``data``'s padded rows (``N_padded`` along their row axis)
    back at the data set's ``num_rows`` rows, padding rows dropped; the others unchanged."""

    target = jnp.where(data.mask, data.index, num_rows)  # num_rows: out of bounds, dropped

    def real_rows(value, axis):
        value = jnp.moveaxis(value, axis, 0)
        rows = (
            jnp.zeros((num_rows, *value.shape[1:]), value.dtype).at[target].set(value, mode="drop")
        )
        return jnp.moveaxis(rows, 0, axis)

    return {
        name: real_rows(value, local_axes[name]) if name in local_axes else value
        for name, value in params.items()
    }


def check_data(data: dict) -> None:
    """Raises a ValueError naming the first value of ``data`` that is not a numeric array with a
    row axis, or holds NaN or infinite values (with their rows): the loss would be NaN (or the
    initialisation fail) with no word of the data."""
    for name, value in data.items():
        array = None if value is None else np.asarray(value)
        usable = (
            array is not None
            and array.ndim > 0
            and (jnp.issubdtype(array.dtype, jnp.number) or array.dtype == bool)
        )
        if not usable:
            kind = "None" if array is None else f"{array.dtype} of shape {array.shape}"
            raise ValueError(
                f"data {name!r} is {kind}: data are numeric arrays with the rows on their first "
                "axis; pass scalars and other values shared by all rows in model_kwargs, and "
                "leave out arguments that are None"
            )
        if not np.issubdtype(array.dtype, np.inexact):
            continue
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(
                f"data array {name!r} holds NaN or infinite values in rows "
                f"{rows[:5].tolist()}{' ...' if len(rows) > 5 else ''} ({len(rows)} in all); "
                "fill or drop them before fitting"
            )
