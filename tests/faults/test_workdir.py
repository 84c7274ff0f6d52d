"""An unwritable workdir or a full disk is reported before training starts."""

import sys
import time

import jax.numpy as jnp
import pytest

from samplepar import cli, preflight, train


def test_writable_workdir_is_checked_without_creating_anything(tmp_path):
    workdir = tmp_path / "a" / "b"
    assert preflight.check_workdir(workdir, min_free_bytes=1) == workdir
    assert list(tmp_path.iterdir()) == []
    workdir.mkdir(parents=True)
    assert preflight.check_workdir(workdir, min_free_bytes=1) == workdir
    assert list(workdir.iterdir()) == []


def test_parent_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(preflight.WorkdirError, match="cannot be created") as info:
        preflight.check_workdir(blocker / "run")
    assert str(blocker / "run") in str(info.value)


def test_workdir_is_a_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(preflight.WorkdirError, match="not a directory"):
        preflight.check_workdir(blocker)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")
def test_directory_that_refuses_writes():
    # /proc/self is a directory in which no one, root included, can create a file.
    with pytest.raises(preflight.WorkdirError, match="is not writable"):
        preflight.check_workdir("/proc/self")


def test_not_enough_space(tmp_path):
    with pytest.raises(
        preflight.WorkdirError, match=r"free but the checkpoints need about 1\.0 EiB"
    ):
        preflight.check_workdir(tmp_path, min_free_bytes=2**60)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_bytes_counts_kept_and_in_flight_copies():
    tree = {"a": jnp.zeros((10, 10), jnp.float32), "b": [jnp.zeros(5, jnp.int32)], "c": None}
    assert preflight.checkpoint_bytes(tree, kept=2) == int(1.1 * 420 * 3)


def test_train_checks_the_workdir_before_loading_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # The data set is missing as well: the workdir error must come first, and fast.
    config = train.TrainConfig(dataset="mnist", data_dir=str(tmp_path / "none"), progress=False)
    started = time.perf_counter()
    with pytest.raises(preflight.WorkdirError, match="cannot be created"):
        train.train(config, blocker / "run")
    assert time.perf_counter() - started < 5.0


def test_cli_reports_unwritable_workdir_as_bad_input(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = cli.main(["--host-devices", "0", "train", "--workdir", str(blocker / "run")])
    assert code == cli.EXIT_BAD_INPUT
    assert f"workdir {blocker / 'run'} cannot be created" in capsys.readouterr().err
