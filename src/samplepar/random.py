"""Layout-independent randomness.

The key of global sample ``s`` at step ``t`` is ``fold_in(fold_in(key(seed), t), s)``: it depends
on (seed, t, s) alone, so a run on any number of devices draws the same samples.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def step_key(seed_key: jax.Array, step) -> jax.Array:
    """The key of training step ``step`` (an int or a traced scalar)."""
    return jax.random.fold_in(seed_key, step)


def sample_keys(rng_key: jax.Array, sample_indices: jax.Array) -> jax.Array:
    """One key per global sample index: ``fold_in(rng_key, s)``, shape ``[len(indices)]``."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng_key, sample_indices)


def local_sample_indices(num_local: int, axis_name: str) -> jax.Array:
    """Global indices of the samples this shard holds, inside ``shard_map`` over ``axis_name``."""
    return jax.lax.axis_index(axis_name) * num_local + jnp.arange(num_local)


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def _rotate_left(x: jax.Array, bits: int) -> jax.Array:
    return (x << jnp.uint32(bits)) | (x >> jnp.uint32(32 - bits))


def _threefry2x32(key: jax.Array, x1: jax.Array, x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash (20 rounds) of counters ``(x1, x2)`` under ``key`` (uint32[2]),
    written out round by round, so that XLA fuses it into one elementwise pass."""
    ks = (key[0], key[1], key[0] ^ key[1] ^ jnp.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for block in range(5):
        for rotation in _THREEFRY_ROTATIONS[block % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, rotation) ^ x1
        x1 = x1 + ks[(block + 1) % 3]
        x2 = x2 + ks[(block + 2) % 3] + jnp.uint32(block + 1)
    return x1, x2


def normal(rng_key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Standard normal draws: the same numbers as ``jax.random.normal(rng_key, shape, dtype)``,
    computed faster on CPU.

    JAX lowers its Threefry hash as a rolled loop on CPU (quicker to compile), which writes and
    re-reads the whole state in each of its five blocks; a weight sample's noise is millions of
    numbers, so drawing it cost more than the model's matmuls. Here the same hash, unrolled,
    is one fused pass (about 2.5x faster draws on a 2-core CPU). Keys of other implementations,
    dtypes other than float32 and JAX's non-partitionable bit layout go to ``jax.random.normal``.
    """
    size = math.prod(shape)
    fast = (
        str(jax.random.key_impl(rng_key)) == "threefry2x32"
        and jnp.dtype(dtype) == jnp.float32
        and jax.config.jax_threefry_partitionable
        and size < 2**32
    )
    if not fast:
        return jax.random.normal(rng_key, shape, dtype)
    key = rng_key if rng_key.dtype == jnp.uint32 else jax.random.key_data(rng_key)
    counts = jax.lax.iota(jnp.uint32, size).reshape(shape)
    high, low = _threefry2x32(key, jnp.zeros((), jnp.uint32), counts)
    bits = high ^ low
    # as jax.random.uniform on [nextafter(-1, 0), 1), then sqrt(2) erfinv, like jax.random.normal
    one_to_two = jax.lax.bitcast_convert_type(
        (bits >> jnp.uint32(9)) | jnp.uint32(0x3F800000), jnp.float32
    )
    low_end = np.nextafter(np.float32(-1.0), np.float32(0.0))
    uniform = jnp.maximum(low_end, (one_to_two - 1.0) * (np.float32(1.0) - low_end) + low_end)
    return np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(uniform)
