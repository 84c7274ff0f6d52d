"""A demand-model SVI fit killed with SIGKILL resumes and ends where an uninterrupted fit ends."""

import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from fault_runs import environment, run, steps, wait_for

WORKER = [sys.executable, str(Path(__file__).with_name("svi_worker.py"))]
NUM_STEPS = 600


def _result(workdir) -> dict:
    with np.load(workdir / "params.npz", allow_pickle=False) as stored:
        return dict(stored)


def test_svi_kill_9_then_resume_matches_uninterrupted_fit(tmp_path):
    env = environment(tmp_path / "compile-cache")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    finished = run([*WORKER, str(whole), str(NUM_STEPS)], env)
    assert finished.returncode == 0, finished.stderr[-3000:]

    process = subprocess.Popen(
        [*WORKER, str(broken), str(NUM_STEPS)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: steps(broken), 600, "the first SVI checkpoint")
        time.sleep(random.Random().uniform(0.0, 0.5))
    finally:
        process.kill()
        process.wait()
    kept = steps(broken)
    assert kept and kept[-1] < NUM_STEPS and not (broken / "params.npz").exists()

    resumed = run([*WORKER, str(broken), str(NUM_STEPS)], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = _result(broken), _result(whole)
    assert got.keys() == want.keys() and len(want["losses"]) == NUM_STEPS
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
