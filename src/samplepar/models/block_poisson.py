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

Where no cell of a chunk can reach the clip, the chunk takes a shorter path with the same value
and gradient. ``l`` is then ``c``, so the terms linear in the data reduce to per-slot and
per-period sums of units (:class:`Blocks`, computed once with the panel) and a cell needs only
its rate ``exp(l)``: one quantity per cell instead of five, and no selects. Whether a chunk can
reach the clip follows from bounds on ``l`` per slot (the extremes of its log prices and of the
category-period effects), checked each step for every particle at once: :func:`_forward` is a
``custom_vmap``, so that the particles the engine vectorises share one branch instead of
computing both.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

CHUNK_BLOCKS = 16  # blocks per scan step: a few hundred KiB per array per particle
CLIP_MARGIN = 0.01  # bounds within this of the clip count as reaching it (float32 rounding)


class Blocks(NamedTuple):
    """A panel's blocks as the likelihood reads them: cells ``[B, K, T]`` and their sums."""

    log_price: np.ndarray  # [B, K, T] float32
    units: np.ndarray  # [B, K, T] float32, 0 where unobserved
    observed: np.ndarray  # [B, K, T] bool
    units_total: np.ndarray  # [B, K] sum of units over periods
    units_log_price: np.ndarray  # [B, K] sum of units * log price over periods
    units_per_period: np.ndarray  # [B, T] sum of units over the block's slots
    log_price_low: np.ndarray  # [B, K] least log price of a slot's observed cells (0 if none)
    log_price_high: np.ndarray  # [B, K] greatest (0 if none)


def blocks(log_price, units, observed) -> Blocks:
    """:class:`Blocks` of the cells, sums taken in float64 (NumPy arrays)."""
    log_price, units, observed = map(np.asarray, (log_price, units, observed))
    units64 = np.where(observed, units, 0.0).astype(np.float64)
    any_observed = observed.any(-1)
    low = np.where(observed, log_price, np.inf).min(-1)
    high = np.where(observed, log_price, -np.inf).max(-1)
    return Blocks(
        log_price.astype(np.float32),
        units64.astype(np.float32),
        observed.astype(bool),
        units64.sum(-1).astype(np.float32),
        (units64 * log_price).sum(-1).astype(np.float32),
        units64.sum(-2).astype(np.float32),
        np.where(any_observed, low, 0.0).astype(np.float32),
        np.where(any_observed, high, 0.0).astype(np.float32),
    )


def cell_terms(effect, elasticity, cat_period, log_price, units, observed, clip):
    """(log-likelihood, its derivative in log demand) per cell, ``[..., K, T]`` each."""
    log_demand = effect[..., None] + cat_period[..., None, :] + elasticity[..., None] * log_price
    clipped = jnp.clip(log_demand, *clip)
    rate = jnp.exp(clipped)
    value = jnp.where(observed, units * clipped - rate, 0.0)
    active = observed & (log_demand > clip[0]) & (log_demand < clip[1])
    derivative = jnp.where(active, units - rate, 0.0)
    return value, derivative


def _exact_chunk(effect, elasticity, cat_period, data: Blocks, clip):
    """Per-block value ``[..., C]`` and gradient reductions of a chunk, cell by cell."""
    value, derivative = cell_terms(
        effect, elasticity, cat_period, data.log_price, data.units, data.observed, clip
    )
    reductions = (
        derivative.sum(-1),
        (derivative * data.log_price).sum(-1),
        derivative.sum(-2),
    )
    return value.sum((-2, -1)), reductions


def _unclipped_chunk(effect, elasticity, cat_period, data: Blocks):
    """The same as :func:`_exact_chunk` where no observed cell reaches the clip."""
    log_demand = (
        effect[..., None] + cat_period[..., None, :] + elasticity[..., None] * data.log_price
    )
    rate = jnp.where(data.observed, jnp.exp(log_demand), 0.0)
    rate_per_slot = rate.sum(-1)
    linear = (effect * data.units_total + elasticity * data.units_log_price - rate_per_slot).sum(
        -1
    ) + (cat_period * data.units_per_period).sum(-1)
    reductions = (
        data.units_total - rate_per_slot,
        data.units_log_price - (rate * data.log_price).sum(-1),
        data.units_per_period - rate.sum(-2),
    )
    return linear, reductions


def _within_clip(effect, elasticity, cat_period, data: Blocks, clip) -> jax.Array:
    """Whether every observed cell's log demand lies inside the clip, by bounds per slot."""
    at_low = elasticity * data.log_price_low
    at_high = elasticity * data.log_price_high
    least = effect + jnp.minimum(at_low, at_high) + cat_period.min(-1, keepdims=True)
    most = effect + jnp.maximum(at_low, at_high) + cat_period.max(-1, keepdims=True)
    inside = (least > clip[0] + CLIP_MARGIN) & (most < clip[1] - CLIP_MARGIN)
    return jnp.all(inside)


def _scan_chunks(effect, elasticity, cat_period, index, data: Blocks, clip):
    """Per-block log-likelihood ``[..., B]`` and the gradient reductions, chunk by chunk.

    The parameters may have leading particle axes (``[..., B, K]``); the data has none. Chunks
    hold ``CHUNK_BLOCKS`` blocks and the last ``B mod CHUNK_BLOCKS`` blocks make one more, so
    that any number of blocks (a data shard's, a mini-batch's) runs in full-size chunks. With
    ``index`` ``[B]``, block ``b`` is ``data``'s block ``index[b]``, taken chunk by chunk.
    """
    lead = effect.ndim - 2
    num_blocks = effect.shape[lead]
    chunk = min(CHUNK_BLOCKS, num_blocks)
    count, rest = divmod(num_blocks, chunk)
    params = (effect, elasticity, cat_period)

    def one_chunk(start, size):
        chunk_params = [jax.lax.dynamic_slice_in_dim(p, start, size, lead) for p in params]
        if index is None:
            chunk_data = jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, size), data)
        else:
            blocks = jax.lax.dynamic_slice_in_dim(index, start, size)
            chunk_data = jax.tree.map(lambda x: jnp.take(x, blocks, axis=0, mode="clip"), data)
        inside = _within_clip(*chunk_params, chunk_data, clip)
        branches = (functools.partial(_exact_chunk, clip=clip), _unclipped_chunk)
        return jax.lax.switch(inside.astype(jnp.int32), branches, *chunk_params, chunk_data)

    def unchunked(x):  # [count, ..., chunk, rest] -> [..., count * chunk, rest]
        x = jnp.moveaxis(x, 0, lead)
        return x.reshape(x.shape[:lead] + (count * chunk,) + x.shape[lead + 2 :])

    indices = jnp.arange(count)
    _, outputs = jax.lax.scan(lambda _, i: (None, one_chunk(i * chunk, chunk)), None, indices)
    outputs = jax.tree.map(unchunked, outputs)
    if rest:
        last = one_chunk(count * chunk, rest)
        outputs = jax.tree.map(lambda a, b: jnp.concatenate([a, b], lead), outputs, last)
    return outputs


@functools.cache
def _forward_for(clip: tuple[float, float]):
    """:func:`_scan_chunks` for ``clip``, with a batching rule that keeps particles together."""

    @jax.custom_batching.custom_vmap
    def forward(effect, elasticity, cat_period, index, data):
        return _scan_chunks(effect, elasticity, cat_period, index, data, clip)

    @forward.def_vmap
    def forward_batched(axis_size, in_batched, effect, elasticity, cat_period, index, data):
        params_batched, data_batched = in_batched[:3], in_batched[3:]
        if any(jax.tree.leaves(data_batched)):  # per-particle data: one particle at a time
            axes = tuple(0 if b else None for b in params_batched)
            data_axes = jax.tree.map(lambda b: 0 if b else None, data_batched)
            run = jax.vmap(functools.partial(_scan_chunks, clip=clip), in_axes=(*axes, *data_axes))
            outputs = run(effect, elasticity, cat_period, index, data)
        else:
            params = [
                p if b else jnp.broadcast_to(p, (axis_size,) + p.shape)
                for p, b in zip((effect, elasticity, cat_period), params_batched, strict=True)
            ]
            outputs = _scan_chunks(*params, index, data, clip)
        return outputs, jax.tree.map(lambda _: True, outputs)

    return forward


def _forward(clip, effect, elasticity, cat_period, index, *data):
    return _forward_for(clip)(effect, elasticity, cat_period, index, Blocks(*data))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _block_log_likelihood(clip, effect, elasticity, cat_period, index, *data):
    return _forward(clip, effect, elasticity, cat_period, index, *data)[0]


def _bwd(clip, reductions, cotangent):
    del clip
    d_effect, d_elasticity, d_cat_period = reductions
    scale = cotangent[..., None]
    no_data = (None,) * (1 + len(Blocks._fields))  # the index and the data
    return (scale * d_effect, scale * d_elasticity, scale * d_cat_period, *no_data)


_block_log_likelihood.defvjp(_forward, _bwd)  # the forward pass already has the residuals


def block_log_likelihood(
    effect: jax.Array,
    elasticity: jax.Array,
    cat_period: jax.Array,
    data: Blocks,
    clip: tuple[float, float],
    index: jax.Array | None = None,
) -> jax.Array:
    """``[B]``: each block's Poisson log-likelihood, without the ``log(units!)`` constant.

    ``effect`` and ``elasticity`` are ``[B, K]``, ``cat_period`` ``[B, T]`` (the block's
    category's row), ``data`` the blocks (:func:`blocks`); ``clip`` bounds the log demand.
    With ``index`` ``[B]`` the blocks are ``data``'s blocks at ``index`` (a mini-batch of a
    shard), read chunk by chunk instead of gathered first. Differentiable in the first three
    arguments (reverse mode: the gradient is fused into the forward pass).
    """
    clip = tuple(map(float, clip))
    return _block_log_likelihood(clip, effect, elasticity, cat_period, index, *data)
