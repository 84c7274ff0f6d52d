"""A hierarchical model with one latent per row: the smallest use of local latents.

``y[i, j] ~ Normal(offset[i] + weight * x[i, j], 0.5)``, ``offset[i] ~ Normal(0, spread)``,
written with NumPyro's mini-batch idiom (the rows plate declared with the data set's size), so
that sharded SVI slices the offsets' guide parameters to the rows each device or batch holds.
``row_mean`` (a deterministic site) is each row's mean of ``offset + weight * x``.
"""

from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist

ROWS_PLATE = "rows"
TRUE_WEIGHT, TRUE_SPREAD = 1.5, 0.8


def grouped_model(x, y=None, *, num_rows: int):
    """``x``, ``y`` ``[B, C]``: rows of the ``num_rows`` rows of the data set, C cells each."""
    weight = numpyro.sample("weight", dist.Normal(0.0, 1.0))
    spread = numpyro.sample("spread", dist.HalfNormal(1.0))
    with numpyro.plate(ROWS_PLATE, num_rows, subsample_size=x.shape[0], dim=-2):
        offset = numpyro.sample("offset", dist.Normal(0.0, spread))
        numpyro.deterministic("row_mean", offset + weight * x.mean(-1, keepdims=True))
        with numpyro.plate("cells", x.shape[1], dim=-1):
            numpyro.sample("y", dist.Normal(offset + weight * x, 0.5), obs=y)


def simulate_groups(num_rows: int, cells: int, seed: int = 0) -> dict:
    """``{"x", "y"}`` ``[num_rows, cells]`` float32, drawn with TRUE_WEIGHT and TRUE_SPREAD."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((num_rows, cells))
    offset = TRUE_SPREAD * rng.standard_normal((num_rows, 1))
    y = offset + TRUE_WEIGHT * x + 0.5 * rng.standard_normal(x.shape)
    return {"x": x.astype(np.float32), "y": y.astype(np.float32)}
