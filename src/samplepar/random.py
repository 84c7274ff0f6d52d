"""Layout-independent randomness.

The key of global sample ``s`` at step ``t`` is ``fold_in(fold_in(key(seed), t), s)``: it depends
on (seed, t, s) alone, so a run on any number of devices draws the same samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def step_key(seed_key: jax.Array, step) -> jax.Array:
    """The key of training step ``step`` (an int or a traced scalar)."""
    return jax.random.fold_in(seed_key, step)


def sample_keys(rng_key: jax.Array, sample_indices: jax.Array) -> jax.Array:
    """One key per global sample index: ``fold_in(rng_key, s)``, shape ``[len(indices)]``."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng_key, sample_indices)


def local_sample_indices(num_local: int, axis_name: str) -> jax.Array:
    """Global indices of the samples this shard holds, inside ``shard_map`` over ``axis_name``."""
    return jax.lax.axis_index(axis_name) * num_local + jnp.arange(num_local)
