"""A run killed with SIGKILL at a random moment resumes and ends where an uninterrupted run ends."""

import json
import random
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from fault_runs import assert_params_close, command, environment, run, steps, stored_state, wait_for

from samplepar import checkpoint, train

EPOCHS = 3
STEPS_PER_EPOCH = 22  # the training digits in batches of 64


def _fake_half_written_step(workdir, step: int) -> None:
    """What a kill during orbax's write of ``step`` leaves: a temporary folder, never renamed."""
    tmp = workdir / "checkpoints" / f"{step}.orbax-checkpoint-tmp-1700000000000000"
    (tmp / "state").mkdir(parents=True)
    (tmp / "state" / "manifest.ocdbt").write_bytes(b"\x00" * 7)


def test_kill_9_then_resume_matches_uninterrupted_run(tmp_path):
    env = environment(tmp_path / "compile-cache")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    finished = run(command(whole, epochs=EPOCHS), env)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert steps(whole)[-1] == EPOCHS * STEPS_PER_EPOCH

    delay = random.Random().uniform(0.0, 1.0)
    process = subprocess.Popen(
        command(broken, epochs=EPOCHS),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: steps(broken), 600, "the first checkpoint")
        time.sleep(delay)
    finally:
        process.kill()
        process.wait()
    kept = steps(broken)
    assert kept and kept[-1] < EPOCHS * STEPS_PER_EPOCH, f"not interrupted ({kept}, {delay=})"
    _fake_half_written_step(broken, kept[-1] + STEPS_PER_EPOCH)
    assert checkpoint.latest_step(broken / "checkpoints") == kept[-1]

    resumed = run(command(broken, epochs=EPOCHS), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps(broken)[-1] == EPOCHS * STEPS_PER_EPOCH
    assert_params_close(jax.tree.leaves(stored_state(broken)), jax.tree.leaves(stored_state(whole)))
    assert _logged_steps(broken) == _logged_steps(whole) == [22, 44, 66]


def _logged_steps(workdir) -> list[int]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_resume_drops_log_records_past_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 22, "a": 1}\n{"step": 44, "a": 2}\n{"step": 66, "a"')
    train._drop_records_after(path, 22)
    assert path.read_text() == '{"step": 22, "a": 1}\n'
    train._drop_records_after(path, 22)
    assert path.read_text() == '{"step": 22, "a": 1}\n'


def test_half_written_step_is_ignored_and_previous_restores(tmp_path):
    tree = {"w": jnp.arange(6.0).reshape(2, 3), "n": jnp.int32(4)}
    folder = tmp_path / "checkpoints"
    checkpoint.save(folder, 5, tree, {"step": 5})
    _fake_half_written_step(tmp_path, 6)
    assert checkpoint.latest_step(folder) == 5
    restored = checkpoint.restore(folder, 5, tree)
    np.testing.assert_array_equal(restored["w"], tree["w"])
    assert checkpoint.restore_meta(folder, 5) == {"step": 5}
    # The next save of that step replaces the debris.
    checkpoint.save(folder, 6, jax.tree.map(lambda x: x + 1, tree), {"step": 6})
    assert checkpoint.latest_step(folder) == 6
    np.testing.assert_array_equal(checkpoint.restore(folder, 6, tree)["w"], tree["w"] + 1)
