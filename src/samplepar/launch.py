"""Start a multi-process JAX job on this machine (one process per simulated host).

Each process gets ``SAMPLEPAR_COORDINATOR``, ``SAMPLEPAR_NUM_PROCESSES`` and
``SAMPLEPAR_PROCESS_ID`` in its environment, which :func:`samplepar.distributed.initialize`
reads. On a real cluster the same program is started by SLURM, MPI or Kubernetes instead.
If one process fails, the others are stopped; a time limit bounds the whole job, and no process
is left behind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from typing import NamedTuple


class ProcessResult(NamedTuple):
    process_id: int
    returncode: int
    stdout: str
    stderr: str


class LaunchError(RuntimeError):
    """A process of the job failed or the job outran its time limit."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child_env(base, port: int, num_processes: int, process_id: int, single_thread: bool) -> dict:
    env = dict(base)
    env["SAMPLEPAR_COORDINATOR"] = f"127.0.0.1:{port}"
    env["SAMPLEPAR_NUM_PROCESSES"] = str(num_processes)
    env["SAMPLEPAR_PROCESS_ID"] = str(process_id)
    env.setdefault("JAX_PLATFORMS", "cpu")
    if single_thread:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    return env


def launch_local(
    command: list[str],
    num_processes: int,
    timeout_s: float = 300.0,
    env: dict | None = None,
    pin_cores: bool = False,
) -> list[ProcessResult]:
    """Runs ``command`` as ``num_processes`` cooperating processes on 127.0.0.1.

    ``pin_cores`` gives process i CPU core ``i mod cores`` and one XLA thread, so that a
    1-vs-2 process comparison measures real parallel work. Raises LaunchError (with every
    process's output tail) when a process exits non-zero or the job runs past ``timeout_s``.
    """
    port = free_port()
    cores = sorted(os.sched_getaffinity(0))
    logs = [
        (tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in range(num_processes)
    ]
    procs = []
    for pid, (out, err) in enumerate(logs):
        core = cores[pid % len(cores)] if pin_cores else None
        procs.append(
            subprocess.Popen(
                command,
                env=_child_env(env or os.environ, port, num_processes, pid, pin_cores),
                stdout=out,
                stderr=err,
                text=True,
                start_new_session=True,
                preexec_fn=(lambda c=core: os.sched_setaffinity(0, {c})) if pin_cores else None,
            )
        )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            codes = [proc.poll() for proc in procs]
            failed = [pid for pid, code in enumerate(codes) if code not in (None, 0)]
            if failed or all(code == 0 for code in codes):
                break
            if time.monotonic() > deadline:
                failed = None
                break
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    results = [
        ProcessResult(pid, proc.returncode, *(_read(f) for f in logs[pid]))
        for pid, proc in enumerate(procs)
    ]
    if failed is None:
        raise LaunchError(
            f"job of {num_processes} processes ran past {timeout_s:.0f} s; " + _tails(results)
        )
    if failed:
        raise LaunchError(
            f"process {failed[0]} exited with code {results[failed[0]].returncode}; the others "
            "were stopped. " + _tails(results)
        )
    return results


def _read(handle) -> str:
    handle.seek(0)
    text = handle.read()
    handle.close()
    return text


def _tails(results: list[ProcessResult]) -> str:
    return "\n".join(f"[process {r.process_id} stderr] ...{r.stderr[-1500:]}" for r in results)
