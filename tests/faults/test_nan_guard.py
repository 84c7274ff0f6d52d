"""A loss that turns NaN or Inf stops the run: the step is named, the good checkpoints stay."""

import re

import jax
import numpy as np
from fault_runs import flags, steps, stored_state

from samplepar import cli

STEPS_PER_EPOCH = 3  # the training digits in batches of 512: a checkpoint every 3 steps


def test_absurd_learning_rate_stops_with_step_hint_and_exit_1(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = flags(learning_rate=1e6, batch_size=512, epochs=20)
    code = cli.main(["--host-devices", "0", "train", "--workdir", str(workdir), *argv])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILED, err
    found = re.search(r"loss became (nan|inf|-inf) at step (\d+);", err)
    assert found, err
    assert "Hint: lower learning_rate (now 1000000.0)" in err
    bad_step = int(found.group(2))
    kept = steps(workdir)
    # Every epoch before the bad step was saved, and nothing after it.
    assert kept and kept[-1] == (bad_step - 1) // STEPS_PER_EPOCH * STEPS_PER_EPOCH, (kept, err)
    state = stored_state(workdir)
    assert int(state["step"]) == kept[-1]
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))
