"""A two-process run loses a process: the survivor stops with a clear error within 60 s.

Both processes run the real ``samplepar train`` command (jax.distributed on 127.0.0.1, gloo
collectives). After the first checkpoint one is killed (SIGKILL) or stopped (SIGSTOP, a hung
host). A survivor in a collective sees the killed peer's connection reset at once and exits with
samplepar's error (exit code 1). A survivor waiting where nothing fails (the stopped peer's
collective, a checkpoint's barrier) waits until the coordination service misses the peer's
heartbeats (20 s). Then either a barrier fails first, and samplepar reports it (exit code 1), or
JAX ends the process itself: an abort with JAX's "another task died" message, which jaxlib gives
Python no way to replace. Either way the checkpoint left behind resumes in one process.
"""

import signal
import subprocess
import time

from fault_runs import command, environment, run, steps, stored_state, wait_for

from samplepar import launch

DETECT_S = 60
HEARTBEAT_S = 20  # samplepar.distributed.initialize's heartbeat_timeout_s
SAMPLEPAR_STOP = "samplepar: error: another process of this multi-process run stopped"
RESUME_HINT = "start every process again with the same command to resume"
JAX_STOP = "This most likely indicates that another task died"


def run_losing_a_peer(tmp_path, lose_signal: int) -> tuple[int, float, str]:
    """Starts a 2-process training run, sends ``lose_signal`` to process 1 after the first
    checkpoint; returns process 0's exit code, seconds from the signal to its exit, output."""
    env = environment(tmp_path / "compile-cache")
    workdir = tmp_path / "run"
    coordinator = f"127.0.0.1:{launch.free_port()}"
    logs = [(tmp_path / f"p{i}.out").open("w+") for i in range(2)]
    processes = [
        subprocess.Popen(
            command(
                workdir,
                *("--coordinator", coordinator, "--num-processes", "2", "--process-id", str(i)),
                host_devices=1,
                epochs=50,
            ),
            env=env,
            stdout=logs[i],
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    try:
        wait_for(lambda: steps(workdir), 400, "the first checkpoint of the 2-process run")
        processes[1].send_signal(lose_signal)
        lost = time.monotonic()
        survivor = processes[0].wait(timeout=DETECT_S + 30)
        took = time.monotonic() - lost
    finally:
        for process in processes:
            process.kill()  # also ends a stopped process
            process.wait()
    logs[0].seek(0)
    return survivor, took, logs[0].read()


def assert_clear_stop(survivor: int, output: str) -> None:
    """samplepar's error and exit code 1, or JAX's abort with its own message."""
    if survivor == 1:
        assert SAMPLEPAR_STOP in output and RESUME_HINT in output, output[-3000:]
    else:
        assert survivor == -signal.SIGABRT and JAX_STOP in output, output[-3000:]


def assert_checkpoint_resumes(tmp_path) -> None:
    workdir = tmp_path / "run"
    kept = steps(workdir)
    assert kept and kept[-1] % 22 == 0
    state = stored_state(workdir)
    assert int(state["step"]) == kept[-1]
    resumed = run(
        command(workdir, epochs=kept[-1] // 22 + 1), environment(tmp_path / "compile-cache")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps(workdir)[-1] == kept[-1] + 22


def test_killed_peer_stops_the_survivor_and_checkpoint_resumes(tmp_path):
    survivor, took, output = run_losing_a_peer(tmp_path, signal.SIGKILL)
    assert took < DETECT_S, f"survivor needed {took:.0f} s to stop"
    assert_clear_stop(survivor, output)
    if survivor != 1:  # the kill found the survivor outside any collective
        assert took > HEARTBEAT_S / 2, f"JAX stopped the survivor after {took:.0f} s"
    assert_checkpoint_resumes(tmp_path)


def test_hung_peer_stops_the_survivor_after_missed_heartbeats(tmp_path):
    survivor, took, output = run_losing_a_peer(tmp_path, signal.SIGSTOP)
    assert HEARTBEAT_S / 2 < took < DETECT_S, f"survivor stopped after {took:.0f} s"
    assert_clear_stop(survivor, output)
    assert_checkpoint_resumes(tmp_path)
