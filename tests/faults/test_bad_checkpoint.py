"""Damaged or foreign checkpoints are refused clearly; a checkpoint moves between layouts."""

import dataclasses
import pickle
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fault_runs import TINY, assert_params_close

from samplepar import checkpoint, train


def _tree(width=100):
    return {"w": jnp.arange(10.0 * width).reshape(10, width), "b": jnp.ones(3), "n": jnp.int32(7)}


def _saved(tmp_path, tree=None) -> Path:
    folder = tmp_path / "checkpoints"
    checkpoint.save(folder, 1, _tree() if tree is None else tree, {"step": 1})
    return folder


def _largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def test_truncated_array_file_is_refused(tmp_path):
    folder = _saved(tmp_path)
    data = _largest_file(folder / "1" / "state")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint 1 in .* is damaged"):
        checkpoint.restore(folder, 1, _tree())


def test_truncated_metadata_is_refused(tmp_path):
    folder = _saved(tmp_path)
    metadata = folder / "1" / "state" / "_METADATA"
    metadata.write_bytes(metadata.read_bytes()[:50])
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint 1 in .* is damaged"):
        checkpoint.restore(folder, 1, _tree())


def test_truncated_record_is_refused(tmp_path):
    folder = _saved(tmp_path)
    record = folder / "1" / "meta" / "metadata"
    record.write_bytes(record.read_bytes()[:5])
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoint 1 in .* cannot be read"):
        checkpoint.restore_meta(folder, 1)


def test_other_shapes_are_refused(tmp_path):
    folder = _saved(tmp_path)
    shapes = r"does not fit this run .* shape: \(10, 50\) .* stored shape: \(10, 100\)"
    with pytest.raises(checkpoint.CheckpointError, match=shapes):
        checkpoint.restore(folder, 1, _tree(width=50))


def test_other_structure_is_refused(tmp_path):
    folder = _saved(tmp_path)
    other = {"w": jnp.zeros((10, 100)), "kernel": jnp.zeros(3), "n": jnp.int32(0)}
    with pytest.raises(checkpoint.CheckpointError, match=r"does not fit this run"):
        checkpoint.restore(folder, 1, other)


def test_nothing_is_unpickled(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    folder = _saved(tmp_path)
    restored = checkpoint.restore(folder, 1, _tree())
    assert checkpoint.restore_meta(folder, 1) == {"step": 1}
    np.testing.assert_array_equal(restored["w"], _tree()["w"])
    assert not [p for p in folder.rglob("*") if p.suffix in (".pkl", ".pickle", ".npy")]


def _params(result) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(result.state.params)]


def test_checkpoint_moves_from_sample8_to_hybrid_layout(tmp_path):
    tiny = {**TINY, "samples": 8, "eval_samples": 8}
    base = train.TrainConfig(**{**tiny, "layout": "sample=8", "epochs": 1})
    first = train.train(base, tmp_path / "moved")
    assert first.state.step == 22
    moved = train.train(
        dataclasses.replace(base, layout="sample=2,data=2", epochs=2), tmp_path / "moved"
    )
    assert moved.state.step == 44
    assert dict(moved.run.mesh.shape) == {"sample": 2, "data": 2}
    whole = train.train(dataclasses.replace(base, epochs=2), tmp_path / "whole")
    assert_params_close(_params(moved), _params(whole), tol=1e-4)
