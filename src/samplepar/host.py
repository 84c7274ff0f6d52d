"""How a process runs on its host: the memory policy for XLA's CPU runtime, and
:func:`prepare_process`, the settings every entry point makes before JAX starts.

XLA's CPU runtime allocates each execution's temporaries afresh (148 MiB for a step of the
784-512-512-10 MLP at S=16) and frees them at its end. glibc serves blocks above 32 MiB, and
blocks that other threads' arenas cannot hold, with a fresh ``mmap`` and returns them with
``munmap``, so every step faults its temporaries in again, page by page, and the kernel zeroes
each page: about 38,000 page faults and a third of the MLP step's time in the kernel on 2 CPU
cores. Keeping freed memory in the process (one arena, no ``mmap`` of large blocks, no trimming)
lets the next step reuse the same pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt(3) parameters
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
NEVER_TRIM = 2**31 - 1  # bytes; mallopt takes an int
SWITCH = "SAMPLEPAR_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep freed memory for reuse; returns whether it did.

    Call it before JAX starts its backend (the threads created before it keep their own arenas).
    The process's resident memory then stays at its peak instead of shrinking between steps.
    A no-op off glibc or with ``SAMPLEPAR_KEEP_FREED_MEMORY=0``.
    """
    if os.environ.get(SWITCH, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, NEVER_TRIM))
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)


def prepare_process() -> None:
    """What the command line and the benchmarks do before JAX starts: :func:`keep_freed_memory`,
    :func:`samplepar.random.unroll_threefry_on_cpu` and
    :func:`samplepar.cpu_linalg.batched_linalg_in_xla_on_cpu` (each has its switch)."""
    keep_freed_memory()
    from samplepar.cpu_linalg import batched_linalg_in_xla_on_cpu  # imports jax: no backend yet
    from samplepar.random import unroll_threefry_on_cpu

    unroll_threefry_on_cpu()
    batched_linalg_in_xla_on_cpu()
