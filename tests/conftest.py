"""Test configuration: 8 virtual CPU devices, set before jax is imported anywhere."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The tests' programs are small and each runs a few times, so compiling them was most of the
# suite's time: tests/test_svi.py and tests/test_objectives.py took 246 s of CPU with XLA's
# optimisations and 155 s without. Set here, the subprocesses that tests start inherit it.
# Benchmarks, the demo and users compile fully; JAX_DISABLE_MOST_OPTIMIZATIONS=0 tests that way.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

# ArviZ writes a stamp file on its first import of the day, through a temporary file of a fixed
# name: two test workers importing it at once raced on it ("FileNotFoundError: ...
# daily_warning.tmp" at collection). The controlling process imports it first, before it starts
# the workers, so that they find the day's stamp and write nothing.
if "PYTEST_XDIST_WORKER" not in os.environ:
    import arviz  # noqa: E402, F401

import jax  # noqa: E402
import pytest  # noqa: E402

from samplepar.cpu_linalg import batched_linalg_in_xla_on_cpu  # noqa: E402
from samplepar.random import unroll_threefry_on_cpu  # noqa: E402

jax.config.update("jax_enable_x64", False)
unroll_threefry_on_cpu()  # as the command line does (see samplepar.host.prepare_process)
batched_linalg_in_xla_on_cpu()
assert jax.device_count() == 8, "tests need 8 virtual devices; was jax imported before conftest?"


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory):
    """Compiled programs are kept on disk for this test process, so a program that several tests
    build again (the same HLO from a fresh closure) compiles once."""
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("compile-cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def optimization_level(request):
    """Tests marked ``full_optimization`` compile as users' programs do (see the top)."""
    if request.node.get_closest_marker("full_optimization") is None:
        yield
        return
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)
