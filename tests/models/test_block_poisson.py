"""The fused block log-likelihood equals the plain jax.numpy expression in value and gradient,
on chunks that reach the clip (cell by cell) and chunks that do not (the shorter path)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplepar.models.block_poisson import (
    CHUNK_BLOCKS,
    _within_clip,
    block_log_likelihood,
    blocks,
    cell_terms,
)

CLIP = (-4.0, 20.0)


def _reference(effect, elasticity, cat_period, data):
    """What autodiff differentiates without help: the cell terms summed per block."""
    value, _ = cell_terms(
        effect, elasticity, cat_period, data.log_price, data.units, data.observed, CLIP
    )
    return value.sum((-2, -1))


def _problem(num_blocks, seed=0, spread=3.0):
    """Random blocks (K=4, T=7) with missing cells; ``spread`` drives cells into the clip."""
    rng = np.random.default_rng(seed)
    shape = (num_blocks, 4, 7)
    params = (
        jnp.asarray(rng.normal(2.0, spread, shape[:2]), jnp.float32),
        jnp.asarray(rng.normal(-1.0, 1.0, shape[:2]), jnp.float32),
        jnp.asarray(rng.normal(0.0, spread, (num_blocks, 7)), jnp.float32),
    )
    observed = rng.random(shape) < 0.8
    data = blocks(
        rng.normal(0.0, 0.5, shape).astype(np.float32),
        np.where(observed, rng.poisson(3.0, shape), 0).astype(np.float32),
        observed,
    )
    weights = jnp.asarray(rng.random(num_blocks), jnp.float32)
    return params, data, weights


def _chunks_inside_clip(params, data, num_blocks) -> list[bool]:
    """Which of the kernel's chunks of blocks take the short path (the last may be shorter)."""
    size = min(CHUNK_BLOCKS, num_blocks)
    return [
        bool(
            _within_clip(
                *(p[i : i + size] for p in params),
                jax.tree.map(lambda x, i=i: x[i : i + size], data),
                CLIP,
            )
        )
        for i in range(0, num_blocks, size)
    ]


def _assert_matches_autodiff(params, data, weights):
    def loss(fn):
        return jax.value_and_grad(lambda p: jnp.sum(weights * fn(*p, data)))

    value, grads = loss(lambda *a: block_log_likelihood(*a, CLIP))(params)
    want_value, want_grads = loss(_reference)(params)
    np.testing.assert_allclose(value, want_value, rtol=1e-6)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("num_blocks", [1, 2 * CHUNK_BLOCKS, 3 * CHUNK_BLOCKS + 1, 37])
def test_value_and_gradient_match_autodiff_where_the_clip_is_reached(num_blocks):
    """One chunk, several chunks, and block counts whose chunks are not CHUNK_BLOCKS long."""
    params, data, weights = _problem(num_blocks)
    clipped = cell_terms(*params, data.log_price, data.units, data.observed, CLIP)[1] == 0
    assert (clipped & data.observed).any()  # the clip is active somewhere
    assert not all(_chunks_inside_clip(params, data, num_blocks))  # some go cell by cell
    _assert_matches_autodiff(params, data, weights)


@pytest.mark.parametrize("num_blocks", [1, 3 * CHUNK_BLOCKS])
def test_value_and_gradient_match_autodiff_inside_the_clip(num_blocks):
    params, data, weights = _problem(num_blocks, seed=3, spread=0.3)
    assert all(_chunks_inside_clip(params, data, num_blocks))  # the short path everywhere
    _assert_matches_autodiff(params, data, weights)


@pytest.mark.parametrize(
    ("num_blocks", "clipped_block", "paths"),
    [
        (3 * CHUNK_BLOCKS, CHUNK_BLOCKS + 2, [True, False, True]),
        (2 * CHUNK_BLOCKS + 3, 2 * CHUNK_BLOCKS + 1, [True, True, False]),  # the short last chunk
        (2 * CHUNK_BLOCKS + 3, 0, [False, True, True]),
    ],
)
def test_chunks_take_their_own_paths(num_blocks, clipped_block, paths):
    """A chunk that reaches the clip beside chunks that do not."""
    params, data, weights = _problem(num_blocks, seed=4, spread=0.3)
    effect = params[0].at[clipped_block, 1].set(-6.0)  # one slot of one chunk
    params = (effect, *params[1:])
    assert _chunks_inside_clip(params, data, num_blocks) == paths
    _assert_matches_autodiff(params, data, weights)


def test_gradient_matches_finite_differences_in_float64():
    """Central differences of the block values, in float64, away from the clip's kinks."""
    with jax.enable_x64(True):
        params, data, _ = _problem(5, seed=1, spread=0.5)
        params = tuple(p.astype(jnp.float64) for p in params)
        data = data._replace(log_price=data.log_price.astype(np.float64))
        direction = tuple(
            jax.random.normal(jax.random.key(i), p.shape, jnp.float64) for i, p in enumerate(params)
        )

        def total(p):
            return jnp.sum(block_log_likelihood(*p, data, CLIP))

        grads = jax.grad(total)(params)
        eps = 1e-6
        shifted = [
            tuple(p + s * eps * d for p, d in zip(params, direction, strict=True)) for s in (1, -1)
        ]
        numeric = (total(shifted[0]) - total(shifted[1])) / (2 * eps)
        analytic = sum(jnp.vdot(g, d) for g, d in zip(grads, direction, strict=True))
        np.testing.assert_allclose(analytic, numeric, rtol=1e-7)


@pytest.mark.parametrize("spread", [3.0, 0.3])
def test_vmap_over_particles_matches_a_loop(spread):
    """The engine vmaps particles: the batched custom gradient equals one particle at a time,
    whether the particles reach the clip or not (and when only one of them does)."""
    params, data, weights = _problem(2 * CHUNK_BLOCKS + 5, seed=2, spread=spread)
    stacked = tuple(jnp.stack([p, p + 0.1 * i, p]) for i, p in enumerate(params))
    stacked = (stacked[0].at[2, 3, 1].set(-8.0), *stacked[1:])  # the third reaches the clip

    def particle_loss(*p):
        return jnp.sum(weights * block_log_likelihood(*p, data, CLIP))

    batched = jax.jit(jax.vmap(jax.value_and_grad(particle_loss, argnums=(0, 1, 2))))(*stacked)
    for s in range(3):
        one = jax.value_and_grad(particle_loss, argnums=(0, 1, 2))(*(p[s] for p in stacked))
        np.testing.assert_allclose(batched[0][s], one[0], rtol=1e-6)
        for got, want in zip(batched[1], one[1], strict=True):
            np.testing.assert_allclose(got[s], want, rtol=1e-6, atol=1e-6)


def test_vmap_over_data_and_unbatched_parameters():
    """Data batched too (each particle its own blocks): every combination equals the loop."""
    params, data, _ = _problem(CHUNK_BLOCKS, seed=5, spread=0.3)
    other = _problem(CHUNK_BLOCKS, seed=6, spread=3.0)[1]
    both = jax.tree.map(lambda a, b: jnp.stack([a, b]), data, other)
    values = jax.vmap(lambda d: block_log_likelihood(*params, d, CLIP))(both)
    for s, one_data in enumerate((data, other)):
        np.testing.assert_allclose(
            values[s], block_log_likelihood(*params, one_data, CLIP), rtol=1e-6
        )
    shifted = params[0] + jnp.arange(2.0)[:, None, None]
    values = jax.vmap(lambda e: block_log_likelihood(e, *params[1:], data, CLIP))(shifted)
    for s in range(2):
        np.testing.assert_allclose(
            values[s], block_log_likelihood(shifted[s], *params[1:], data, CLIP), rtol=1e-6
        )


def test_blocks_sums_ignore_unobserved_cells():
    log_price = np.array([[[0.5, 9.0, -0.2], [0.0, 0.0, 0.0]]], np.float32)
    units = np.array([[[2.0, 7.0, 1.0], [0.0, 0.0, 0.0]]], np.float32)
    observed = np.array([[[True, False, True], [False, False, False]]])
    data = blocks(log_price, units, observed)
    np.testing.assert_allclose(data.units, [[[2.0, 0.0, 1.0], [0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(data.units_total, [[3.0, 0.0]])
    np.testing.assert_allclose(data.units_log_price, [[0.8, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(data.units_per_period, [[2.0, 0.0, 1.0]])
    np.testing.assert_allclose(data.log_price_low, [[-0.2, 0.0]])
    np.testing.assert_allclose(data.log_price_high, [[0.5, 0.0]])


@pytest.mark.parametrize("spread", [0.3, 3.0])  # 3.0 sends chunks down the cell-by-cell path
def test_indexed_blocks_equal_gathered_blocks(spread):
    """Blocks read by index chunk by chunk (a mini-batch of a shard, with repeats) give the
    value and gradient of the same blocks gathered first, under vmap over particles too."""
    params, data, weights = _problem(40, seed=3, spread=spread)
    index = jnp.asarray(np.random.default_rng(4).integers(0, 40, 37), jnp.int32)
    gathered = jax.tree.map(lambda x: x[np.asarray(index)], data)

    def loss(p, index_or_none, blocks_data):
        taken = [x[index] for x in p[:2]] + [p[2][index]]
        per_particle = jax.vmap(
            lambda e, s: block_log_likelihood(e, s, taken[2], blocks_data, CLIP, index_or_none)
        )(jnp.stack([taken[0], taken[0] + 0.1]), jnp.stack([taken[1], taken[1] - 0.1]))
        return jnp.sum(per_particle * weights[:37])

    value, grads = jax.value_and_grad(loss)(params, index, data)
    expected, expected_grads = jax.value_and_grad(loss)(params, None, gathered)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    for got, want in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
