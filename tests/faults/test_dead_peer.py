"""A two-process run loses a process: the survivor exits with a clear error within 60 s.

Both processes run the real ``samplepar train`` command (jax.distributed on 127.0.0.1, gloo
collectives); one is killed with SIGKILL after the first checkpoint. The checkpoint left behind
then resumes in a single process.
"""

import subprocess
import time

from fault_runs import command, environment, run, steps, stored_state, wait_for

from samplepar import launch

DETECT_S = 60


def test_killed_peer_stops_the_survivor_and_checkpoint_resumes(tmp_path):
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
        processes[1].kill()
        killed = time.monotonic()
        survivor = processes[0].wait(timeout=DETECT_S + 30)
        took = time.monotonic() - killed
    finally:
        for process in processes:
            process.kill()
            process.wait()
    logs[0].seek(0)
    output = logs[0].read()
    assert took < DETECT_S, f"survivor needed {took:.0f} s to stop"
    assert survivor == 1, output[-3000:]
    assert "samplepar: error: another process of this multi-process run stopped" in output
    assert "start every process again with the same command to resume" in output

    kept = steps(workdir)
    assert kept and kept[-1] % 22 == 0
    state = stored_state(workdir)
    assert int(state["step"]) == kept[-1]
    resumed = run(command(workdir, epochs=kept[-1] // 22 + 1), env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert steps(workdir)[-1] == kept[-1] + 22
