"""A small softmax-regression BNN shared by the engine and objective tests."""

import jax
import jax.numpy as jnp
import numpy as np

from samplepar import engine, variational

NUM_FEATURES, NUM_CLASSES, BATCH = 5, 3, 16


def log_lik(weights, batch, rng_key):
    """Per-example categorical log-likelihood of a linear softmax model, shape [B]."""
    del rng_key
    logits = batch["x"] @ weights["w"] + weights["b"]
    return jnp.take_along_axis(jax.nn.log_softmax(logits), batch["y"][:, None], axis=1)[:, 0]


def make(seed=0, init_scale=0.1, prior_scale=1.0):
    """(family, params, particle_fn, batch) with fixed random data."""
    rng = np.random.default_rng(seed)
    family = variational.mean_field_normal(init_scale, prior_scale)
    mean = {
        "w": (0.3 * rng.normal(size=(NUM_FEATURES, NUM_CLASSES))).astype(np.float32),
        "b": (0.1 * rng.normal(size=NUM_CLASSES)).astype(np.float32),
    }
    batch = {
        "x": rng.normal(size=(BATCH, NUM_FEATURES)).astype(np.float32),
        "y": rng.integers(0, NUM_CLASSES, size=BATCH).astype(np.int32),
    }
    return family, family.init(mean), engine.bayesian_particle(family, log_lik), batch
