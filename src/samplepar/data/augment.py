"""Data augmentation in JAX, keyed so that its randomness never depends on the device layout.

``augment(rng_key, x, config)`` transforms one example (``[H, W, C]`` image or ``[L, C]`` series):
a random integer shift with zero fill along every spatial axis (identical to a random crop of the
input zero-padded by ``max_shift``), a horizontal flip, a random scaling and gaussian jitter.

``augment_batch(rng_key, sample_index, example_indices, x, config)`` augments a batch for one
Monte-Carlo sample. With ``rng_key`` the step key, the key of (sample ``s``, global example ``i``)
is ``fold_in(fold_in(fold_in(rng_key, AUGMENT_STREAM), stream(s)), i)`` where ``stream(s)`` is

- ``per-sample``: ``s`` (every sample sees its own augmentation),
- ``per-shard``: ``s * groups // num_samples`` (``groups`` runs of consecutive samples share one),
- ``shared``:     ``0`` (all samples see the same augmentation).

It depends on (step, s, i) alone, so any split of samples and examples over devices gives the same
batch. ``per-shard`` with ``groups == num_samples`` equals ``per-sample``; with ``groups == 1`` it
equals ``shared``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

MODES = ("per-sample", "per-shard", "shared")
AUGMENT_STREAM = 0x41554721  # keeps augmentation keys apart from the weight keys fold_in(key, s)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Which transforms to apply and how their keys are shared between Monte-Carlo samples.

    ``max_shift``: integer shift in ``[-max_shift, max_shift]`` per spatial axis, zero fill.
    ``flip``: horizontal flip with probability 1/2 (images only; keep it off for digits).
    ``scale_std``: multiply the example by ``exp(scale_std * N(0, 1))``.
    ``jitter_std``: add ``jitter_std * N(0, 1)`` noise to every value.
    ``mode``: ``per-sample``, ``per-shard`` or ``shared``; ``groups`` (the ``augment_groups``
    setting) and ``num_samples`` define the groups of ``per-shard``.
    """

    max_shift: int = 0
    flip: bool = False
    scale_std: float = 0.0
    jitter_std: float = 0.0
    mode: str = "per-sample"
    groups: int = 1
    num_samples: int = 1

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"augment mode {self.mode!r} is unknown; modes are {list(MODES)}")
        for name in ("max_shift", "scale_std", "jitter_std"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment setting {name} must be >= 0, got {getattr(self, name)}")
        if self.num_samples < 1:
            raise ValueError(f"augment setting num_samples must be >= 1, got {self.num_samples}")
        if self.mode == "per-shard" and not 1 <= self.groups <= self.num_samples:
            raise ValueError(
                f"augment_groups={self.groups} must lie in 1..num_samples={self.num_samples} "
                "for mode 'per-shard'"
            )

    @property
    def enabled(self) -> bool:
        return bool(self.max_shift or self.flip or self.scale_std or self.jitter_std)


def random_shift(rng_key: jax.Array, x: jax.Array, max_shift: int) -> jax.Array:
    """``x [*spatial, C]`` shifted by a random integer in ``[-max_shift, max_shift]`` per axis."""
    spatial = x.ndim - 1
    offsets = jax.random.randint(rng_key, (spatial,), -max_shift, max_shift + 1)
    padded = jnp.pad(x, [(max_shift, max_shift)] * spatial + [(0, 0)])
    starts = [max_shift - o for o in offsets] + [0]
    return jax.lax.dynamic_slice(padded, starts, x.shape)


def random_flip(rng_key: jax.Array, x: jax.Array) -> jax.Array:
    """``x [H, W, C]`` mirrored left-right with probability 1/2."""
    if x.ndim != 3:
        raise ValueError(f"flip needs images [H, W, C], got an example of shape {x.shape}")
    return jnp.where(jax.random.bernoulli(rng_key), x[:, ::-1, :], x)


def augment(rng_key: jax.Array, x: jax.Array, config: AugmentConfig) -> jax.Array:
    """One augmented example, same shape and dtype as ``x`` (``[H, W, C]`` or ``[L, C]``)."""
    shift_key, flip_key, scale_key, jitter_key = jax.random.split(rng_key, 4)
    if config.max_shift:
        x = random_shift(shift_key, x, config.max_shift)
    if config.flip:
        x = random_flip(flip_key, x)
    if config.scale_std:
        x = x * jnp.exp(config.scale_std * jax.random.normal(scale_key, (), x.dtype))
    if config.jitter_std:
        x = x + config.jitter_std * jax.random.normal(jitter_key, x.shape, x.dtype)
    return x


def augment_stream(sample_index, config: AugmentConfig):
    """The key stream of global sample ``sample_index`` (an int or traced scalar) under ``mode``."""
    if config.mode == "per-sample":
        return sample_index
    if config.mode == "per-shard":
        return sample_index * config.groups // config.num_samples
    return 0


def example_keys(rng_key: jax.Array, stream, example_indices: jax.Array) -> jax.Array:
    """Keys ``[B]`` of global examples ``example_indices [B]`` in key stream ``stream``."""
    base = jax.random.fold_in(jax.random.fold_in(rng_key, AUGMENT_STREAM), stream)
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, example_indices)


def augment_batch(
    rng_key: jax.Array,
    sample_index,
    example_indices: jax.Array,
    x: jax.Array,
    config: AugmentConfig,
) -> jax.Array:
    """``x [B, ...]`` augmented for global sample ``sample_index``; ``rng_key`` is the step key.

    ``example_indices [B]`` are the examples' global indices (a loader batch's ``"index"``).
    Vmap over ``sample_index`` for several samples.
    """
    if not config.enabled:
        return x
    keys = example_keys(rng_key, augment_stream(sample_index, config), example_indices)
    return jax.vmap(lambda key, example: augment(key, example, config))(keys, x)


def batch_augmenter(config: AugmentConfig, key: str = "x"):
    """``augment_fn(rng_key, sample_index, batch) -> batch`` for ``engine.make_loss``.

    Augments ``batch[key]`` with :func:`augment_batch` keyed by ``batch["index"]``; other entries
    pass through. Pass ``None`` to the engine instead when ``config.enabled`` is False.
    """

    def augment_fn(rng_key, sample_index, batch):
        x = augment_batch(rng_key, sample_index, batch["index"], batch[key], config)
        return {**batch, key: x}

    return augment_fn
