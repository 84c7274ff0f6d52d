"""predict: layout-independent mixture summaries, every input format, refusals that write nothing.

The run is the tiny MLP on digits at its initial parameters, saved as a checkpoint (training is
not needed to test loading and prediction).
"""

import dataclasses
import json
import shutil
import types

import numpy as np
import pandas as pd
import pytest

from samplepar import checkpoint, mesh, predict, train
from samplepar.bnn.predictive import sample_outputs

CONFIG = train.TrainConfig(
    model="mlp", samples=4, eval_samples=4, eval_batch_size=100, layout="none", progress=False
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    run = train.build(CONFIG)
    checkpoint.check_config(directory, CONFIG.identity())
    checkpoint.save(directory / "checkpoints", 1, run.state, {"loader": [0, 0], "step": 1})
    return directory


@pytest.fixture(scope="module")
def loaded(workdir):
    return predict.load_run(workdir, layout="sample=2,data=2")


def test_sample_outputs_refuses_a_count_the_sample_axis_cannot_split(loaded):
    # 6 draws on sample=2 would work; 3 had silently returned 2 draws.
    run, _, _ = loaded
    with pytest.raises(mesh.LayoutError, match="3 samples cannot be split over sample=2"):
        sample_outputs(run.model, run.mesh, 3, "categorical", None)


def test_layout_independent(loaded):
    """The same draws on 4 devices (sample=2, data=2) as on one, to float32 tolerance."""
    run, params, config = loaded
    x = run.dataset.x_test[:37]  # not a multiple of the batch: padding is masked
    sharded = predict.predictive(run, params, config, x)
    single_run = train.build(dataclasses.replace(config, layout="none"))
    single = predict.predictive(single_run, params, config, x)
    for name in ("probabilities", "entropy", "mutual_information"):
        np.testing.assert_allclose(sharded[name], single[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sharded["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    assert sharded["entropy"].shape == (37,)
    assert np.all(sharded["mutual_information"] >= -1e-6)
    with pytest.raises(ValueError, match=r"no inputs to predict: x has shape \(0, 8, 8, 1\)"):
        predict.predictive(run, params, config, x[:0])


def _write(path, x):
    flat = x.reshape(len(x), -1)
    frame = pd.DataFrame(flat, columns=predict.feature_columns(x.shape[1:]))
    if path.suffix == ".npy":
        np.save(path, x)
    elif path.suffix == ".npz":
        np.savez(path, x=flat)
    elif path.suffix == ".csv":
        frame.assign(id=np.arange(len(x))).to_csv(path, index=False)
    else:
        frame.to_parquet(path)


@pytest.mark.parametrize("name, output", [("in.npy", "out.csv"), ("in.csv", "out.parquet")])
def test_formats(workdir, loaded, tmp_path, name, output):
    run, params, config = loaded
    x = run.dataset.x_test[:23]
    _write(tmp_path / name, x)
    args = types.SimpleNamespace(
        workdir=workdir,
        inputs=tmp_path / name,
        output=tmp_path / output,
        layout="sample=2",
        samples=None,
    )
    result = predict.predict_main(args)
    frame = pd.read_csv(args.output) if output.endswith("csv") else pd.read_parquet(args.output)
    assert result["rows"] == len(frame) == 23
    probs = frame[[f"prob_{c}" for c in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(frame["predicted_class"], probs.argmax(axis=1))
    expected = predict.predictive(run, params, config, x)
    np.testing.assert_allclose(frame["entropy"], expected["entropy"], rtol=1e-5, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, output])


@pytest.mark.parametrize("name", ["in.npz", "in.parquet"])
def test_read_inputs(tmp_path, name):
    x = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype(np.float32)
    _write(tmp_path / name, x)
    np.testing.assert_array_equal(predict.read_inputs(tmp_path / name, (8, 8, 1)), x)


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("in.npy", np.zeros((3, 7, 7)), r"shape \(3, 7, 7\) but the model expects \(N, 8, 8, 1\)"),
        ("in.csv", pd.DataFrame({"x0": [1.0], "x1": [2.0]}), "lacks column.*x2, x3"),
        ("in.csv", pd.DataFrame({f"x{i}": ["a" if i == 5 else 0.5] for i in range(64)}), "x5"),
        ("in.npy", np.full((2, 64), np.nan), "row 0 holds NaN"),
        ("in.npy", np.zeros((0, 64)), r"holds no input rows \(shape \(0, 64\)\)"),
        ("in.txt", None, "unknown input format"),
    ],
)
def test_bad_inputs(tmp_path, name, data, message):
    path = tmp_path / name
    if isinstance(data, pd.DataFrame):
        data.to_csv(path, index=False)
    elif data is not None:
        np.save(path, data)
    else:
        path.write_text("1,2\n")
    with pytest.raises(ValueError, match=message):
        predict.read_inputs(path, (8, 8, 1))


def test_refusal_writes_nothing(workdir, tmp_path):
    path = tmp_path / "in.csv"
    pd.DataFrame({"x0": [1.0], "x1": [2.0]}).to_csv(path, index=False)
    with pytest.raises(ValueError, match="lacks column.*x2, x3"):
        predict.predict_file(workdir, path, tmp_path / "out.csv", layout="none")
    assert [p.name for p in tmp_path.iterdir()] == ["in.csv"]


def test_never_overwrites_input(workdir, tmp_path):
    path = tmp_path / "in.csv"
    _write(path, np.zeros((2, 8, 8, 1), np.float32))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="overwrite the input"):
        predict.predict_file(workdir, path, path, layout="none")
    assert path.read_bytes() == before


def test_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        predict.load_run(tmp_path)


@pytest.mark.parametrize(
    "draws, layout", [(16, "sample=8,data=1"), (12, "sample=4,data=2"), (3, "sample=1,data=8")]
)
def test_default_layout(draws, layout):
    assert predict.default_layout(draws, 8) == layout


def test_default_layout_checks_the_draws_not_training(workdir, tmp_path):
    """Trained with 4 samples, 16 draws go on sample=8 (the audit's run failed on the 4)."""
    run, _, config = predict.load_run(workdir, samples=16)
    assert mesh.layout_of(run.mesh) == mesh.Layout(8, 1)
    assert (config.samples, config.eval_samples) == (4, 16)
    x = run.dataset.x_test[:5]
    np.save(tmp_path / "in.npy", x)
    result = predict.predict_file(workdir, tmp_path / "in.npy", tmp_path / "out.csv", samples=16)
    assert (result["rows"], result["samples"]) == (5, 16)


def test_training_batch_and_augmentation_are_not_checked(workdir, tmp_path):
    """A training batch of 100 (not a multiple of data=8) and 4 augmentation groups (more than
    2 draws) concern training only."""
    other = tmp_path / "run"
    shutil.copytree(workdir, other)
    stored = json.loads((other / "config.json").read_text())
    stored.update(batch_size=100, augment="per-shard", augment_groups=4)
    (other / "config.json").write_text(json.dumps(stored))
    run, _, config = predict.load_run(other, layout="data=8", samples=2)
    assert mesh.layout_of(run.mesh) == mesh.Layout(1, 8)
    assert (config.batch_size, config.augment, config.eval_samples) == (100, "per-shard", 2)


@pytest.mark.parametrize(
    "layout, samples, message",
    [
        (None, 0, "--samples must be an integer >= 1, got 0"),
        (None, True, "--samples must be an integer >= 1, got True"),
        ("sample=8", None, "^the run's eval_samples .see --samples.: 4 samples cannot be split "),
        ("sample=4", 6, "^--samples: 6 samples cannot be split over sample=4 devices"),
    ],
)
def test_refuses_draws_that_do_not_fit(workdir, layout, samples, message):
    with pytest.raises(ValueError, match=message):
        predict.load_run(workdir, layout, samples)
