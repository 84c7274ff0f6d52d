"""The BNN training loop: layout-independent runs, exact resume, metrics log, config guard."""

import dataclasses
import json

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from samplepar import checkpoint, train
from samplepar.data.loader import LoaderState

TINY = dict(
    model="mlp",
    dataset="digits",
    samples=4,
    batch_size=64,
    epochs=1,
    eval_samples=4,
    eval_batch_size=256,
    learning_rate=1e-2,
    augment="per-sample",
    progress=False,
    report=False,
)


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def single_device_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("single")
    result = train.train(train.TrainConfig(layout="none", **{**TINY, "epochs": 2}), workdir)
    return workdir, result


def test_every_hybrid_step_equals_the_single_device_step():
    """Two epochs on one device; at each step, ``sample=4,data=2`` from the same state agrees.

    Whole runs are not compared parameter by parameter: a ReLU unit at its kink turns a
    rounding-level gradient difference into a step-sized one, after which two layouts follow
    different (equally good) trajectories. ``tests/test_demo.py`` compares their final metrics.
    """
    config = train.TrainConfig(layout="none", **{**TINY, "epochs": 2})
    single, hybrid = (
        train.build(config),
        train.build(dataclasses.replace(config, layout="sample=4,data=2")),
    )
    replicated = NamedSharding(hybrid.mesh, PartitionSpec())
    state, loader = single.state, LoaderState()
    for step in range(config.epochs * single.steps_per_epoch):
        # The hybrid layout's own copy of the state (a step donates its input).
        hybrid_state = jax.tree.map(lambda x: jax.device_put(np.asarray(x), replicated), state)
        key, batch, next_loader = train.step_inputs(single, config, loader, step)
        state, info = single.step(key, state, batch)
        _, hybrid_batch, _ = train.step_inputs(hybrid, config, loader, step)
        hybrid_state, hybrid_info = hybrid.step(key, hybrid_state, hybrid_batch)
        loader = next_loader
        assert float(hybrid_info.loss) == pytest.approx(float(info.loss), rel=1e-5)
        np.testing.assert_allclose(
            flat(hybrid_state.params),
            flat(state.params),
            rtol=1e-5,
            atol=1e-6,
            err_msg=f"step {step}",
        )


def test_metrics_log_and_checkpoints(single_device_run):
    workdir, result = single_device_run
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1.0, 2.0]
    for key in ("train_loss", "test_accuracy", "test_nll", "test_ece", "test_brier"):
        assert np.isfinite(records[-1][key])
    assert records[-1]["test_accuracy"] > 0.5  # ten classes: chance is 0.1
    steps = records[-1]["step"]
    assert checkpoint.latest_step(workdir / "checkpoints") == steps
    assert int(result.state.step) == steps
    assert not (workdir / "report.json").exists()  # report=False


def test_resume_ends_where_the_uninterrupted_run_ends(single_device_run, tmp_path):
    _, reference = single_device_run
    train.train(train.TrainConfig(layout="none", **TINY), tmp_path)  # stops after epoch 1
    resumed = train.train(train.TrainConfig(layout="none", **{**TINY, "epochs": 2}), tmp_path)
    np.testing.assert_allclose(
        flat(resumed.state.params), flat(reference.state.params), rtol=1e-5, atol=1e-6
    )
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[1]["seconds"] > records[0]["seconds"]  # counted on across the resumption


def test_asking_for_fewer_epochs_than_done_says_so(single_device_run, capsys):
    workdir, reference = single_device_run
    result = train.train(train.TrainConfig(layout="none", **TINY), workdir)  # 2 done, 1 asked
    assert "already holds 2 epochs, more than the 1 asked for" in capsys.readouterr().err
    np.testing.assert_array_equal(flat(result.state.params), flat(reference.state.params))


def test_progress_in_a_log_is_not_written_every_step(tmp_path, capsys):
    # capsys's stderr is no terminal: 22 steps and an evaluation redraw the bar at its start
    # and end only (a per-step redraw, forced by the loss shown beside it, wrote 24).
    config = train.TrainConfig(layout="none", **{**TINY, "progress": True})
    train.train(config, tmp_path)
    assert 2 <= capsys.readouterr().err.count("train mlp/digits:") <= 4


def test_a_run_stored_under_a_model_alias_resumes(tmp_path):
    # Runs recorded before names were made canonical stored the model as typed ("lenet") and
    # had no data_options setting.
    old = {k: v for k, v in dataclasses.asdict(train.TrainConfig(model="lenet")).items()}
    old = {k: v for k, v in old.items() if k not in (*train.RESUMABLE, "data_options")}
    (tmp_path / "config.json").write_text(json.dumps(old))
    now = train.TrainConfig(model="LeNet-5").identity()
    assert now["model"] == "lenet5"
    checkpoint.check_config(tmp_path, now, normalise=train.canonical_identity)
    with pytest.raises(checkpoint.CheckpointError, match="model: stored 'lenet5' vs now 'mlp'"):
        checkpoint.check_config(
            tmp_path, train.TrainConfig(model="mlp").identity(), normalise=train.canonical_identity
        )


def test_workdir_of_another_configuration_is_refused(single_device_run):
    workdir, _ = single_device_run
    config = train.TrainConfig(layout="none", **{**TINY, "samples": 8})
    with pytest.raises(checkpoint.CheckpointError, match="different configuration.*samples"):
        train.train(config, workdir)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"learning_rate": -1.0}, "learning_rate must be a positive number"),
        ({"augment": "sometimes"}, "augment='sometimes' is unknown"),
        ({"objective": "kl"}, "unknown objective 'kl'"),
        ({"objective": "renyi", "alpha": 1.0}, "alpha must differ from 1"),
        ({"progress": "no"}, "setting progress must be true or false, got 'no'"),
        ({"samples": True}, "setting samples must be an integer >= 1, got True"),
        ({"seed": -1}, "setting seed must be an integer >= 0, got -1"),
        ({"layout": 5}, "setting layout must be a string, got 5"),
        ({"data_options": "path=x.csv"}, "setting data_options must be a table"),
        ({"model": "resnet9000"}, "unknown model 'resnet9000'; known models: mlp, lenet5 \\("),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        train.TrainConfig(**{**TINY, **settings})
