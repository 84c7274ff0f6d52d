"""Posterior predictive draws of a Bayesian model, samples over ``sample``, inputs over ``data``."""

from __future__ import annotations

import jax
from jax.sharding import PartitionSpec

from samplepar import engine, mesh
from samplepar import random as sp_random


def sample_outputs(bayesian, mesh_, num_samples: int, likelihood: str, per_pass: int | None):
    """``outputs(params, rng_key, x [B, ...]) -> [S, B, ...]`` per-sample predictions.

    Categorical models give log-probabilities ``[S, B, C]``; Gaussian ones predictive draws
    (mean plus scaled noise) ``[S, B, H]``. Sample s uses ``fold_in(rng_key, s)``, so the result
    does not depend on the layout of ``mesh_``.
    """
    mesh.check_num_samples(num_samples, mesh.layout_of(mesh_))
    per_shard = num_samples // mesh.layout_of(mesh_).sample

    def shard_outputs(params, rng_key, x):
        keys = sp_random.sample_keys(
            rng_key, sp_random.local_sample_indices(per_shard, mesh.SAMPLE)
        )

        def one(key):
            weight_key, noise_key = jax.random.split(key)
            weights, _ = bayesian.family.sample_and_log_prob(weight_key, params)
            out = bayesian.predict_fn(weights, x)
            if likelihood == "categorical":
                return jax.nn.log_softmax(out, axis=-1)
            mean, scale = out
            return mean + scale * jax.random.normal(noise_key, mean.shape, mean.dtype)

        return engine.map_samples(one, keys, per_pass)

    return jax.shard_map(
        shard_outputs,
        mesh=mesh_,
        in_specs=(PartitionSpec(), PartitionSpec(), PartitionSpec(mesh.DATA)),
        out_specs=PartitionSpec(mesh.SAMPLE, mesh.DATA),
    )
