"""Layout-independent randomness, and JAX's Threefry hash made fast on CPU.

The key of global sample ``s`` at step ``t`` is ``fold_in(fold_in(key(seed), t), s)``: it depends
on (seed, t, s) alone, so a run on any number of devices draws the same samples.

JAX lowers its Threefry hash as a rolled loop on CPU (quicker to compile): each of its five
blocks writes and re-reads the whole state, and every draw, split and fold-in is a loop that
XLA's CPU runtime steps through op by op. :func:`normal` (weight noise) computes the same hash
unrolled, in one fusion; :func:`unroll_threefry_on_cpu` makes every Threefry use in the process
(NumPyro's draws, key splits) lower unrolled. Both give JAX's numbers bit for bit.
"""

from __future__ import annotations

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir

from samplepar.checks import check_count

UNROLL_SWITCH = "SAMPLEPAR_UNROLL_THREEFRY"


def step_key(seed_key: jax.Array, step) -> jax.Array:
    """The key of training step ``step`` (an int in ``[0, 2**32)`` or a traced scalar)."""
    if not isinstance(step, jax.Array | np.ndarray):
        check_count("step", step, minimum=0)
        if step >= 2**32:
            raise ValueError(f"step must be below 2**32 (a key folds in 32 bits), got {step}")
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


def _threefry2x32(key1, key2, x1, x2) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 hash (20 rounds) of counters ``(x1, x2)`` under the key ``(key1, key2)``
    (uint32, broadcast together), written out round by round, so that XLA fuses it into one
    elementwise pass."""
    key1, key2, x1, x2 = jnp.broadcast_arrays(key1, key2, x1, x2)
    ks = (key1, key2, key1 ^ key2 ^ jnp.uint32(0x1BD11BDA))
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for block in range(5):
        for rotation in _THREEFRY_ROTATIONS[block % 2]:
            x1 = x1 + x2
            x2 = _rotate_left(x2, rotation) ^ x1
        x1 = x1 + ks[(block + 1) % 3]
        x2 = x2 + ks[(block + 2) % 3] + jnp.uint32(block + 1)
    return x1, x2


def unroll_threefry_on_cpu() -> bool:
    """Lowers JAX's Threefry primitive unrolled on CPU, for every program compiled after the
    call; returns whether it did (``SAMPLEPAR_UNROLL_THREEFRY=0`` keeps JAX's rolled loop).

    The same bits, faster: 10.7 M normal draws took 63 ms instead of 153 ms on one core, and a
    demand-small SVI step (NumPyro's guide draws, a dozen key splits) lost its 23 loops. The
    command line and the benchmarks call it; library users may too.
    """
    if os.environ.get(UNROLL_SWITCH, "1") == "0":
        return False
    rule = mlir.lower_fun(_threefry2x32, multiple_results=True)
    mlir.register_lowering(threefry2x32_p, rule, platform="cpu")
    return True


def normal(rng_key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Standard normal draws: the same numbers as ``jax.random.normal(rng_key, shape, dtype)``,
    computed faster on CPU.

    A weight sample's noise is millions of numbers; with JAX's rolled hash (see the top) drawing
    it cost more than the model's matmuls. Here the hash is unrolled whether or not
    :func:`unroll_threefry_on_cpu` was called (about 2.5x faster draws on a 2-core CPU). The
    draws are made inside a conditional branch (:func:`_materialised_normals`): XLA cannot fuse
    across it, so the draw is one fusion, run on every core, that keeps only its result. Drawn
    inline, XLA split the hash and ``erf_inv`` over several fusions whose ``[S, n]``
    intermediates (``erf_inv``'s inner square root among them) stayed alive until the backward
    pass recomputed the draw from them: the 784-512-512-10 MLP's step at S = 16 held 148 MiB of
    temporaries, 108 MiB behind the branch. A loop over two halves of the counters kept the
    same 108 MiB, but XLA writes a loop's outputs in place, one core at a time: that step took
    210 to 215 ms, against 180 to 202 behind the branch (three processes, each the median of
    12 alternating calls). Keys of other implementations, dtypes other than float32 and JAX's
    non-partitionable bit layout go to ``jax.random.normal``.
    """
    size = math.prod(shape)
    fast = (
        str(jax.random.key_impl(rng_key)) == "threefry2x32"
        and jnp.dtype(dtype) == jnp.float32
        and jax.config.jax_threefry_partitionable
        and size < 2**32 - 1
    )
    if not fast:
        return jax.random.normal(rng_key, shape, dtype)
    key = rng_key if rng_key.dtype == jnp.uint32 else jax.random.key_data(rng_key)
    return _materialised_normals(size)(key).reshape(shape)


def normal_rows(
    rng_key: jax.Array, shape: tuple[int, ...], axis: int, rows: jax.Array
) -> jax.Array:
    """``jnp.take(jax.random.normal(rng_key, shape), rows, axis)``, the same numbers, drawn for
    those rows only: a row's draw does not depend on which other rows are drawn with it.

    Each element's Threefry counter is its flat index in ``shape``, so the rows' counters are
    computed directly. Keys and sizes :func:`normal` sends to JAX draw the whole array here.
    """
    axis = axis % len(shape)
    size = math.prod(shape)
    if not (
        str(jax.random.key_impl(rng_key)) == "threefry2x32"
        and jax.config.jax_threefry_partitionable
        and size < 2**32 - 1
    ):
        return jnp.take(jax.random.normal(rng_key, shape), rows, axis=axis)
    out_shape = (*shape[:axis], rows.shape[0], *shape[axis + 1 :])
    strides = np.cumprod((1, *shape[::-1]))[-2::-1]  # C order, in elements
    counts = jnp.zeros(out_shape, jnp.uint32)
    for dim, stride in enumerate(strides):
        if dim == axis:  # the rows, along their axis
            index = jnp.asarray(rows, jnp.uint32).reshape(-1, *[1] * (len(shape) - axis - 1))
        else:
            index = jax.lax.broadcasted_iota(jnp.uint32, out_shape, dim)
        counts = counts + index * jnp.uint32(stride)
    key = rng_key if rng_key.dtype == jnp.uint32 else jax.random.key_data(rng_key)
    return _normal_of_counts(key[..., 0], key[..., 1], counts)


@functools.cache
def _materialised_normals(size: int):
    """``keys uint32[..., 2] -> float32[..., size]``: each key's first ``size`` normals, drawn
    behind a conditional branch that XLA cannot fuse into the draws' consumers.

    The predicate ``(max(keys) | 1) != 0`` always holds but is known only at run time. Under
    ``vmap`` the predicate stays one scalar (batching a predicate would turn the branch into a
    ``select`` and fuse again): batched keys make a leading axis of the same function.
    """

    @jax.custom_batching.custom_vmap
    def draws(keys: jax.Array) -> jax.Array:
        def draw(keys):
            counts = jax.lax.iota(jnp.uint32, size)
            return _normal_of_counts(keys[..., 0:1], keys[..., 1:2], counts)

        def never(keys):  # zeros derived from the keys, so they vary over devices as the draws do
            zero = (keys[..., :1] & jnp.uint32(0)).astype(jnp.float32)
            return jnp.broadcast_to(zero, (*keys.shape[:-1], size))

        always = (jnp.max(keys, initial=0) | jnp.uint32(1)) != 0
        return jax.lax.cond(always, draw, never, keys)

    @draws.def_vmap
    def draws_batched(axis_size, in_batched, keys):
        if not in_batched[0]:
            keys = jnp.broadcast_to(keys, (axis_size, *keys.shape))
        return draws(keys), True

    return draws


def _normal_of_counts(key1: jax.Array, key2: jax.Array, counts: jax.Array) -> jax.Array:
    """``jax.random.normal``'s draws at the given counters of a raw key's two words (uint32,
    broadcast together)."""
    high, low = _threefry2x32(key1, key2, jnp.zeros((), jnp.uint32), counts)
    bits = high ^ low
    # as jax.random.uniform on [nextafter(-1, 0), 1), then sqrt(2) erfinv, like jax.random.normal
    one_to_two = jax.lax.bitcast_convert_type(
        (bits >> jnp.uint32(9)) | jnp.uint32(0x3F800000), jnp.float32
    )
    low_end = np.nextafter(np.float32(-1.0), np.float32(0.0))
    uniform = jnp.maximum(low_end, (one_to_two - 1.0) * (np.float32(1.0) - low_end) + low_end)
    return np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(uniform)
