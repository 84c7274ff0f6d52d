"""A real two-process job (jax.distributed on 127.0.0.1, gloo on the CPU) equals one process."""

import json
import os
import sys
from pathlib import Path

import distributed_worker
import jax
import numpy as np
import pytest
import toy_model

from samplepar import engine, launch, mesh, objectives

WORKER = str(Path(__file__).with_name("distributed_worker.py"))


def single_process(layout, objective_name):
    family, params, particle, batch = toy_model.make()
    m = mesh.make_mesh(layout)
    loss = engine.make_loss(
        particle, objectives.get_objective(objective_name, 0.5), m, 8, 100, kl_fn=family.kl
    )
    (value, _), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(
        params, jax.random.key(7), mesh.global_batch(batch, m)
    )
    return float(value), np.concatenate([np.ravel(x) for x in jax.tree.leaves(grad)])


@pytest.mark.parametrize("objective_name", ["renyi", "predictive-nll"])
def test_two_processes_equal_one(objective_name):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    results = launch.launch_local(
        [sys.executable, WORKER, "sample=2,data=2", objective_name],
        num_processes=2,
        timeout_s=240,
        env=env,
    )
    outputs = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    assert [o["process"] for o in outputs] == [0, 1]
    assert all(o["processes"] == 2 and o["devices"] == 4 for o in outputs)
    value, grad = single_process("sample=2,data=2", objective_name)
    for output in outputs:
        assert output["loss"] == pytest.approx(value, rel=1e-5)
        np.testing.assert_allclose(output["grad"], grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["sample=2,data=2", "sample=4,data=1"])
def test_local_latents_two_processes_equal_one(layout):
    """Sharded SVI with local latents, each process passing its own rows (both processes all
    rows where they split only ``sample``): loss and gradient equal one process's, and so do
    the parameters after three steps (the local ones split over ``data`` in the steps)."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    results = launch.launch_local(
        [sys.executable, WORKER, layout, "local-latents"], num_processes=2, timeout_s=240, env=env
    )
    outputs = [json.loads(r.stdout.strip().splitlines()[-1]) for r in results]
    problem = distributed_worker.local_latents_problem(layout)
    params = distributed_worker.fixed_params(problem.params)
    (value, _), grad = jax.jit(jax.value_and_grad(problem.loss, has_aux=True))(
        params, jax.random.key(7), problem.data
    )
    flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grad)])
    stepped = distributed_worker.stepped_params(problem, params)
    for output in outputs:
        assert output["loss"] == pytest.approx(float(value), rel=1e-5)
        np.testing.assert_allclose(output["grad"], flat, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(output["stepped"], stepped, rtol=1e-5, atol=1e-6)


def test_failing_process_stops_the_job_and_leaves_none_behind(tmp_path):
    script = tmp_path / "job.py"
    marker = tmp_path / "pids"
    script.write_text(
        "import os, sys, time\n"
        f"open({str(marker)!r}, 'a').write(f'{{os.getpid()}}\\n')\n"
        "if os.environ['SAMPLEPAR_PROCESS_ID'] == '1':\n"
        "    sys.exit('peer failed on purpose')\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(launch.LaunchError, match="process 1 exited with code 1"):
        launch.launch_local([sys.executable, str(script)], num_processes=2, timeout_s=60)
    for pid in map(int, marker.read_text().split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_job_past_its_time_limit_is_stopped(tmp_path):
    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(600)\n")
    with pytest.raises(launch.LaunchError, match="ran past 2 s"):
        launch.launch_local([sys.executable, str(script)], num_processes=2, timeout_s=2)
