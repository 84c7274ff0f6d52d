"""Multi-host start-up. Called from entry points only (the CLI, scripts), never on import."""

from __future__ import annotations

import os

import jax


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: int = 120,
    heartbeat_timeout_s: int = 20,
    shutdown_timeout_s: int = 60,
) -> bool:
    """Joins a multi-process JAX job; returns True when one was started.

    With an explicit ``coordinator_address`` (``host:port``), ``num_processes`` and
    ``process_id`` are required. Without one, ``SAMPLEPAR_COORDINATOR``,
    ``SAMPLEPAR_NUM_PROCESSES`` and ``SAMPLEPAR_PROCESS_ID`` are read, and failing those JAX's own
    cluster detection (SLURM, Open MPI, Kubernetes, ...) is tried when ``auto`` clusters are
    present. On the CPU, collectives go through gloo.

    A process that stops sending heartbeats for ``heartbeat_timeout_s`` seconds (killed, hung,
    its host lost) is declared dead and JAX ends the others (an abort with its own message)
    instead of leaving them waiting; JAX's default (100 s) is lowered so a dead peer is noticed
    within a minute. A killed peer is usually noticed sooner: the next collective fails, which
    the command line reports as :func:`lost_peer`.
    ``shutdown_timeout_s`` bounds the wait for the others at exit.
    """
    timeouts = {
        "initialization_timeout": timeout_s,
        "heartbeat_timeout_seconds": heartbeat_timeout_s,
        "shutdown_timeout_seconds": shutdown_timeout_s,
    }
    coordinator_address = coordinator_address or os.environ.get("SAMPLEPAR_COORDINATOR")
    if num_processes is None and "SAMPLEPAR_NUM_PROCESSES" in os.environ:
        num_processes = int(os.environ["SAMPLEPAR_NUM_PROCESSES"])
    if process_id is None and "SAMPLEPAR_PROCESS_ID" in os.environ:
        process_id = int(os.environ["SAMPLEPAR_PROCESS_ID"])
    if coordinator_address is None:
        if not _cluster_detected():
            return False
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**timeouts)
        return True
    if num_processes is None or process_id is None:
        raise ValueError(
            "a coordinator address needs both num_processes and process_id "
            f"(got num_processes={num_processes}, process_id={process_id})"
        )
    if not 0 <= process_id < num_processes:
        raise ValueError(f"process_id {process_id} is outside 0..{num_processes - 1}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **timeouts,
    )
    return True


# Words in the errors that collectives (gloo) and JAX's coordination service raise when a
# process of the job has stopped.
_PEER_LOST = ("gloo", "connection reset by peer", "connection closed", "heartbeat", "coordination")


def lost_peer(error: BaseException) -> bool:
    """True when ``error``, raised in a multi-process job, says another process has stopped."""
    if not jax.distributed.is_initialized():
        return False
    text = str(error).lower()
    return any(marker in text for marker in _PEER_LOST)


def _cluster_detected() -> bool:
    """True inside a SLURM job step, an Open MPI launch or similar, as JAX would detect it."""
    markers = (
        "SLURM_STEP_NODELIST",
        "OMPI_MCA_orte_hnp_uri",
        "PMI_RANK",
        "JAX_COORDINATOR_ADDRESS",
    )
    return any(m in os.environ for m in markers)
