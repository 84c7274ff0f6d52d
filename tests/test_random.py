"""Randomness: the fast normal draws are JAX's numbers, bit for bit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplepar import random as sp_random


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5, 2), (100_003,)])
@pytest.mark.parametrize("seed", [0, 12345])
def test_normal_equals_jax_random_normal(shape, seed):
    key = jax.random.fold_in(jax.random.key(seed), 3)
    ours = jax.jit(lambda k: sp_random.normal(k, shape))(key)
    theirs = jax.jit(lambda k: jax.random.normal(k, shape))(key)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_normal_under_vmap_equals_per_key_draws():
    keys = jax.random.split(jax.random.key(1), 4)
    ours = jax.jit(jax.vmap(lambda k: sp_random.normal(k, (257,))))(keys)
    theirs = jnp.stack([jax.random.normal(k, (257,)) for k in keys])
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_normal_accepts_raw_uint32_keys():
    raw = jax.random.PRNGKey(9)
    np.testing.assert_array_equal(
        np.asarray(sp_random.normal(raw, (64,))), np.asarray(jax.random.normal(raw, (64,)))
    )


@pytest.mark.parametrize(
    "key, dtype",
    [(jax.random.key(2, impl="rbg"), jnp.float32), (jax.random.key(2), jnp.float16)],
)
def test_normal_falls_back_to_jax_for_other_keys_and_dtypes(key, dtype):
    np.testing.assert_array_equal(
        np.asarray(sp_random.normal(key, (33,), dtype)),
        np.asarray(jax.random.normal(key, (33,), dtype)),
    )


def test_normal_is_standard_normal():
    draws = np.asarray(sp_random.normal(jax.random.key(4), (200_000,)))
    # mean and standard deviation within 5 standard errors of 0 and 1
    assert abs(draws.mean()) < 5 / np.sqrt(draws.size)
    assert abs(draws.std() - 1.0) < 5 / np.sqrt(2 * draws.size)
