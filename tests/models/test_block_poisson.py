"""The fused block log-likelihood equals the plain jax.numpy expression in value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplepar.models.block_poisson import CHUNK_BLOCKS, block_log_likelihood, cell_terms

CLIP = (-4.0, 20.0)


def _reference(effect, elasticity, cat_period, log_price, units, observed):
    """What autodiff differentiates without help: the cell terms summed per block."""
    return cell_terms(effect, elasticity, cat_period, log_price, units, observed, CLIP)[0].sum(
        (-2, -1)
    )


def _problem(num_blocks, seed=0, spread=3.0):
    """Random blocks (K=4, T=7) with missing cells; ``spread`` drives cells into the clip."""
    rng = np.random.default_rng(seed)
    shape = (num_blocks, 4, 7)
    params = (
        jnp.asarray(rng.normal(2.0, spread, shape[:2]), jnp.float32),
        jnp.asarray(rng.normal(-1.0, 1.0, shape[:2]), jnp.float32),
        jnp.asarray(rng.normal(0.0, spread, (num_blocks, 7)), jnp.float32),
    )
    data = (
        jnp.asarray(rng.normal(0.0, 0.5, shape), jnp.float32),
        jnp.asarray(rng.poisson(3.0, shape), jnp.float32),
        jnp.asarray(rng.random(shape) < 0.8),
    )
    weights = jnp.asarray(rng.random(num_blocks), jnp.float32)
    return params, data, weights


@pytest.mark.parametrize("num_blocks", [1, 2 * CHUNK_BLOCKS, 3 * CHUNK_BLOCKS + 1, 37])
def test_value_and_gradient_match_autodiff(num_blocks):
    """One chunk, several chunks, and block counts whose chunks are not CHUNK_BLOCKS long."""
    params, data, weights = _problem(num_blocks)
    clipped = cell_terms(*params, *data, CLIP)[1] == 0
    assert (clipped & data[2]).any()  # the clip is active somewhere

    def loss(fn):
        return jax.value_and_grad(lambda p: jnp.sum(weights * fn(*p, *data)))

    value, grads = loss(lambda *a: block_log_likelihood(*a, CLIP))(params)
    want_value, want_grads = loss(_reference)(params)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_gradient_matches_finite_differences_in_float64():
    """Central differences of the block values, in float64, away from the clip's kinks."""
    with jax.enable_x64(True):
        params, data, _ = _problem(5, seed=1, spread=0.5)
        params = tuple(p.astype(jnp.float64) for p in params)
        data = (data[0].astype(jnp.float64), data[1].astype(jnp.float64), data[2])
        direction = tuple(
            jax.random.normal(jax.random.key(i), p.shape, jnp.float64) for i, p in enumerate(params)
        )

        def total(p):
            return jnp.sum(block_log_likelihood(*p, *data, CLIP))

        grads = jax.grad(total)(params)
        eps = 1e-6
        shifted = [
            tuple(p + s * eps * d for p, d in zip(params, direction, strict=True)) for s in (1, -1)
        ]
        numeric = (total(shifted[0]) - total(shifted[1])) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(grads, direction, strict=True))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7)


def test_vmap_over_particles_matches_a_loop():
    """The engine vmaps particles: the batched custom gradient equals one particle at a time."""
    params, data, weights = _problem(2 * CHUNK_BLOCKS, seed=2)
    stacked = tuple(jnp.stack([p, p + 0.1 * i]) for i, p in enumerate(params))

    def particle_loss(*p):
        return jnp.sum(weights * block_log_likelihood(*p, *data, CLIP))

    batched = jax.vmap(jax.grad(particle_loss, argnums=(0, 1, 2)))(*stacked)
    for s in range(2):
        one = jax.grad(particle_loss, argnums=(0, 1, 2))(*(p[s] for p in stacked))
        for got, want in zip(batched, one, strict=True):
            np.testing.assert_allclose(got[s], want, rtol=1e-6, atol=1e-6)
