"""Loader: seeded epochs without drops, exact resumption, padded evaluation, process slices."""

import numpy as np
import pytest

from samplepar.data.loader import (
    LoaderState,
    epoch_order,
    eval_batches,
    next_batch,
    process_rows,
)
from samplepar.mesh import DATA, LayoutError, global_batch, make_mesh

N = 10
X = np.arange(N * 3, dtype=np.float32).reshape(N, 3)
Y = np.arange(N, dtype=np.int32) * 7


def _stream(batch_size, steps, state=None, seed=0):
    state = LoaderState() if state is None else state
    batches = []
    for _ in range(steps):
        batch, state = next_batch((X, Y), state, batch_size, seed)
        batches.append(batch)
    return batches, state


def test_every_epoch_is_a_permutation_and_batches_cross_epochs_without_drops():
    batches, state = _stream(batch_size=4, steps=5)  # 20 examples = exactly two epochs
    index = np.concatenate([b["index"] for b in batches])
    np.testing.assert_array_equal(np.sort(index[:N]), np.arange(N))
    np.testing.assert_array_equal(np.sort(index[N:]), np.arange(N))
    np.testing.assert_array_equal(index[:N], epoch_order(0, 0, N))
    np.testing.assert_array_equal(index[N:], epoch_order(0, 1, N))
    assert not np.array_equal(epoch_order(0, 0, N), epoch_order(0, 1, N))
    assert state == LoaderState(epoch=2, position=0)
    for b in batches:  # rows stay aligned with their index
        np.testing.assert_array_equal(b["x"], X[b["index"]])
        np.testing.assert_array_equal(b["y"], Y[b["index"]])
        assert b["index"].dtype == np.int32


def test_stream_of_examples_does_not_depend_on_batch_size_and_batches_may_exceed_an_epoch():
    small, _ = _stream(batch_size=3, steps=10)
    large, state = _stream(batch_size=15, steps=2)
    np.testing.assert_array_equal(
        np.concatenate([b["index"] for b in small]), np.concatenate([b["index"] for b in large])
    )
    assert state == LoaderState(epoch=3, position=0)


def test_resuming_from_a_saved_state_continues_the_same_stream():
    full, _ = _stream(batch_size=4, steps=6, seed=3)
    first, state = _stream(batch_size=4, steps=2, seed=3)
    saved = LoaderState(*(int(v) for v in state))  # what a checkpoint stores: two integers
    rest, _ = _stream(batch_size=4, steps=4, state=saved, seed=3)
    for a, b in zip(full, first + rest, strict=True):
        np.testing.assert_array_equal(a["index"], b["index"])
    other, _ = _stream(batch_size=4, steps=1, seed=4)
    assert not np.array_equal(other[0]["index"], full[0]["index"])


def test_bad_loader_input_is_named():
    with pytest.raises(ValueError, match="x has 10 rows but y has 9"):
        next_batch((X, Y[:9]), LoaderState(), 2, 0)
    with pytest.raises(ValueError, match="position 10 is outside 0..9"):
        next_batch((X, Y), LoaderState(0, 10), 2, 0)


def test_eval_batches_cover_each_example_once_with_one_shape():
    batches = list(eval_batches(X, Y, batch_size=3, multiple=2))  # rounded up to 4 rows
    assert [b["x"].shape for b in batches] == [(4, 3)] * 3
    mask = np.concatenate([b["mask"] for b in batches])
    index = np.concatenate([b["index"] for b in batches])[mask]
    np.testing.assert_array_equal(index, np.arange(N))
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in batches])[mask], Y)
    assert mask.sum() == N and not batches[-1]["mask"][2:].any()
    np.testing.assert_array_equal(batches[-1]["x"][2:], 0.0)
    assert sum(float((b["x"].sum(1) * b["mask"]).sum()) for b in batches) == X.sum()


def test_process_rows_of_one_process_assemble_the_global_batch():
    mesh = make_mesh("sample=2,data=4")
    batch, _ = next_batch((X, Y), LoaderState(), 8, 0)
    rows = process_rows(batch, mesh)
    for key in batch:
        np.testing.assert_array_equal(rows[key], batch[key])
    assembled = global_batch(rows, mesh)
    np.testing.assert_array_equal(np.asarray(assembled["x"]), batch["x"])
    assert assembled["x"].sharding.spec[0] == DATA
    with pytest.raises(LayoutError, match="batch of 6 examples cannot be split over data=4"):
        process_rows(next_batch((X, Y), LoaderState(), 6, 0)[0], mesh)
