"""Fully connected models: an MLP classifier and an MLP forecaster for time series."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn


class MLP(nn.Module):
    """Flattens ``[B, ...]`` inputs; ReLU hidden layers; ``[B, num_outputs]`` outputs."""

    num_outputs: int = 10
    hidden: Sequence[int] = (512, 512)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_outputs)(x)


class Forecaster(nn.Module):
    """History window ``[B, window]`` or ``[B, window, features]`` -> horizon ``[B, num_outputs]``.

    Predicts the change from the last observed value of the first feature (a persistence
    baseline plus an MLP correction); the output layer starts at zero, so the initial model
    forecasts "no change".
    """

    num_outputs: int = 1
    hidden: Sequence[int] = (64, 64)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        last = x[:, -1] if x.ndim == 2 else x[:, -1, 0]
        h = x.reshape(x.shape[0], -1)
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        delta = nn.Dense(self.num_outputs, kernel_init=nn.initializers.zeros)(h)
        return last[:, None].astype(jnp.float32) + delta
