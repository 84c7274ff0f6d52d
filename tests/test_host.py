"""The host memory policy: freed temporaries are reused instead of faulted in again each call."""

import json
import statistics
import subprocess
import sys

import pytest

from samplepar import host

SCRIPT = """
import json, resource, sys
from samplepar import host
kept = host.keep_freed_memory() if sys.argv[1] == "keep" else False
import jax, jax.numpy as jnp
a = jnp.ones((8192, 64)); b = jnp.ones((64, 2048))
f = jax.jit(lambda a, b: jnp.sum(jnp.sin(a @ b)))  # a 64 MiB temporary, over glibc's mmap limit
for _ in range(40):  # the heap takes a few dozen calls to settle into a layout it then reuses
    f(a, b).block_until_ready()
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    f(a, b).block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults}))
"""


def faults_per_call(mode: str) -> tuple[bool, float]:
    """(policy applied, median page faults per call) in a fresh process."""
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    record = json.loads(run.stdout.strip().splitlines()[-1])
    return record["kept"], statistics.median(record["faults"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc policy")
def test_kept_memory_is_reused_without_page_faults():
    (_, default), (kept, reused) = faults_per_call("default"), faults_per_call("keep")
    assert kept
    assert default > 10_000  # 64 MiB in 4 KiB pages, faulted in on every call
    assert reused < 0.1 * default


def test_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(host.SWITCH, "0")
    assert host.keep_freed_memory() is False
