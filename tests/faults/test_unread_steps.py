"""A loop that never reads a step's result finishes instead of deadlocking (samplepar.dispatch)."""

import subprocess
import sys
from pathlib import Path

from fault_runs import environment

WORKER = [sys.executable, str(Path(__file__).with_name("unread_steps_worker.py"))]
NUM_STEPS = 3000


def test_steps_queued_unread_on_two_devices_finish(tmp_path):
    done = subprocess.run(
        [*WORKER, str(NUM_STEPS)],
        env=environment(tmp_path / "compile-cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == str(NUM_STEPS)
