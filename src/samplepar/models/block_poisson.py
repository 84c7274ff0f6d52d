"""The demand model's Poisson log-likelihood over blocks of a panel, with a fused gradient.

A block holds up to K products of one category over T periods. In a cell (block b, slot k,
period t) the log demand is ``l = effect[b, k] + elasticity[b, k] * log_price[b, k, t] +
cat_period[b, t]`` and the cell's log-likelihood, up to the constant ``-log(units!)``, is
``units * c - exp(c)`` with ``c = clip(l, lo, hi)``; unobserved cells contribute nothing.

Written with ``jax.numpy`` and differentiated by JAX, a step materialises several ``[B, K, T]``
arrays per particle (the rate, the residuals autodiff keeps, the cotangents) and then
scatter-adds the cotangent back to the categories: memory traffic, not arithmetic, sets its
pace. Here the forward pass computes, chunk by chunk of blocks so that the work stays in cache,
each block's log-likelihood together with the three reductions its gradient needs: the
derivative ``d = units - exp(c)`` (0 where the clip is active or the cell is unobserved) summed
over periods (effect), weighted by log price and summed over periods (elasticity), and summed
over the block's products (category-period effect). A block's cotangent is one number, so the
backward pass only scales those reductions: ``O(B (K + T))`` memory instead of ``O(B K T)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

CHUNK_BLOCKS = 16  # blocks per scan step: a few hundred KiB per array per particle


def cell_terms(effect, elasticity, cat_period, log_price, units, observed, clip):
    """(log-likelihood, its derivative in log demand) per cell, ``[..., K, T]`` each."""
    log_demand = effect[..., None] + cat_period[..., None, :] + elasticity[..., None] * log_price
    clipped = jnp.clip(log_demand, *clip)
    rate = jnp.exp(clipped)
    value = jnp.where(observed, units * clipped - rate, 0.0)
    active = observed & (log_demand > clip[0]) & (log_demand < clip[1])
    derivative = jnp.where(active, units - rate, 0.0)
    return value, derivative


def _chunk_size(num_blocks: int, target: int = CHUNK_BLOCKS) -> int:
    """The largest divisor of ``num_blocks`` that is at most ``target``."""
    return max(d for d in range(1, min(target, num_blocks) + 1) if num_blocks % d == 0)


def _forward(effect, elasticity, cat_period, log_price, units, observed, clip):
    """Per-block log-likelihood ``[B]`` and the gradient reductions ``([B, K], [B, K], [B, T])``."""
    num_blocks = log_price.shape[0]
    chunk = _chunk_size(num_blocks)

    def chunked(x):
        return x.reshape((num_blocks // chunk, chunk) + x.shape[1:])

    def one_chunk(_, xs):
        value, derivative = cell_terms(*xs, clip)
        log_price = xs[3]  # this chunk's
        reductions = (
            derivative.sum(-1),
            (derivative * log_price).sum(-1),
            derivative.sum(-2),
        )
        return None, (value.sum((-2, -1)), reductions)

    inputs = (effect, elasticity, cat_period, log_price, units, observed)
    _, (value, reductions) = jax.lax.scan(one_chunk, None, jax.tree.map(chunked, inputs))
    unchunk = lambda x: x.reshape((num_blocks,) + x.shape[2:])  # noqa: E731
    return unchunk(value), jax.tree.map(unchunk, reductions)


@functools.partial(jax.custom_vjp, nondiff_argnums=(6,))
def _block_log_likelihood(effect, elasticity, cat_period, log_price, units, observed, clip):
    return _forward(effect, elasticity, cat_period, log_price, units, observed, clip)[0]


def _bwd(clip, reductions, cotangent):
    d_effect, d_elasticity, d_cat_period = reductions
    scale = cotangent[:, None]
    return scale * d_effect, scale * d_elasticity, scale * d_cat_period, None, None, None


_block_log_likelihood.defvjp(_forward, _bwd)  # the forward pass already has the residuals


def block_log_likelihood(
    effect: jax.Array,
    elasticity: jax.Array,
    cat_period: jax.Array,
    log_price: jax.Array,
    units: jax.Array,
    observed: jax.Array,
    clip: tuple[float, float],
) -> jax.Array:
    """``[B]``: each block's Poisson log-likelihood, without the ``log(units!)`` constant.

    ``effect`` and ``elasticity`` are ``[B, K]``, ``cat_period`` ``[B, T]`` (the block's
    category's row), the data ``[B, K, T]``; ``clip`` bounds the log demand. Differentiable in
    the first three arguments (reverse mode: the gradient is fused into the forward pass).
    """
    return _block_log_likelihood(
        effect, elasticity, cat_period, log_price, units, observed, tuple(map(float, clip))
    )
