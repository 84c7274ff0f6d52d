"""Augmentation: correct transforms, and keys that make the result independent of the layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from samplepar.data.augment import (
    AugmentConfig,
    augment,
    augment_batch,
    augment_stream,
    batch_augmenter,
)
from samplepar.mesh import DATA, SAMPLE, make_mesh
from samplepar.random import local_sample_indices, step_key

NUM_SAMPLES, BATCH = 8, 12
IMAGES = np.random.default_rng(0).uniform(size=(BATCH, 6, 6, 2)).astype(np.float32)
INDICES = np.arange(100, 100 + BATCH, dtype=np.int32)  # global example indices
KEY = step_key(jax.random.key(0), 3)


OPS = {"max_shift": 1, "jitter_std": 0.05}  # flip and scaling: see the tests of the transforms
CONFIGS = {
    "per-sample": AugmentConfig(mode="per-sample", num_samples=NUM_SAMPLES, **OPS),
    "per-shard": AugmentConfig(mode="per-shard", groups=4, num_samples=NUM_SAMPLES, **OPS),
    "shared": AugmentConfig(mode="shared", num_samples=NUM_SAMPLES, **OPS),
}


def _augment_all(samples, x, indices):
    """``{name: [len(samples), B, ...]}``: augment_batch vmapped over global sample indices."""
    fn = jax.vmap(augment_batch, in_axes=(None, 0, None, None, None))
    return {name: fn(KEY, samples, indices, x, config) for name, config in CONFIGS.items()}


augment_all = jax.jit(_augment_all)  # one compilation per shape serves every test
close = lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # noqa: E731


def _shifted(x, dy, dx):
    out = np.zeros_like(x)
    h, w = x.shape[:2]
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def test_shift_is_a_zero_filled_crop_and_flip_a_mirror():
    config = AugmentConfig(max_shift=2, flip=True)
    keys = jax.random.split(jax.random.key(1), 64)
    out = np.asarray(jax.vmap(lambda k: augment(k, IMAGES[0], config))(keys))
    seen = set()
    for image in out:
        matches = [
            (dy, dx, flip)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            for flip in (False, True)
            if np.array_equal(image, _shifted(IMAGES[0][:, ::-1] if flip else IMAGES[0], dy, dx))
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 25  # many of the 50 shift/flip combinations occur
    assert {flip for _, _, flip in seen} == {False, True}


def test_series_jitter_and_scaling_have_the_configured_sizes():
    series = np.ones((40, 1), np.float32)
    keys = jax.random.split(jax.random.key(2), 2000)
    jitter = jax.vmap(lambda k: augment(k, series, AugmentConfig(jitter_std=0.2)))(keys)
    np.testing.assert_allclose(np.std(jitter), 0.2, rtol=0.02)  # 80,000 draws
    scaled = jax.vmap(lambda k: augment(k, series, AugmentConfig(scale_std=0.1)))(keys)
    log_scale = np.log(np.asarray(scaled)[:, 0, 0])
    np.testing.assert_allclose(np.std(log_scale), 0.1, rtol=0.05)
    assert np.all(np.asarray(scaled).std(axis=1) < 1e-6)  # one factor per example


def test_result_depends_on_sample_and_example_index_only_not_on_position():
    whole = augment_all(jnp.arange(NUM_SAMPLES), IMAGES, INDICES)
    samples = np.array([5, 2, 7, 0, 3, 6, 1, 4])
    rows = np.roll(np.arange(BATCH), 5)
    moved = augment_all(jnp.asarray(samples), IMAGES[rows], INDICES[rows])  # same compilation
    for name in CONFIGS:
        close(moved[name], np.asarray(whole[name])[samples][:, rows])


def test_split_over_a_sample_by_data_mesh_equals_one_piece():
    """Each device holds 2 of the 8 samples and 6 of the 12 examples."""
    mesh = make_mesh("sample=4,data=2")
    local = NUM_SAMPLES // 4
    shard = lambda x, indices: _augment_all(local_sample_indices(local, SAMPLE), x, indices)  # noqa: E731
    spec = PartitionSpec(DATA)
    out_spec = {name: PartitionSpec(SAMPLE, DATA) for name in CONFIGS}
    fn = jax.jit(jax.shard_map(shard, mesh=mesh, in_specs=(spec, spec), out_specs=out_spec))
    put = lambda a: jax.device_put(a, NamedSharding(mesh, spec))  # noqa: E731
    sharded = fn(put(IMAGES), put(INDICES))
    whole = augment_all(jnp.arange(NUM_SAMPLES), IMAGES, INDICES)
    for name in CONFIGS:
        close(sharded[name], whole[name])


def test_per_sample_differs_shared_does_not_per_shard_follows_groups():
    out = {
        k: np.asarray(v) for k, v in augment_all(jnp.arange(NUM_SAMPLES), IMAGES, INDICES).items()
    }
    per_sample, shared, per_shard = out["per-sample"], out["shared"], out["per-shard"]
    for s in range(1, NUM_SAMPLES):
        assert np.abs(per_sample[s] - per_sample[0]).max() > 0.1
        np.testing.assert_array_equal(shared[s], shared[0])
    for s in range(NUM_SAMPLES):  # 4 groups of two consecutive samples: 0-1, 2-3, 4-5, 6-7
        np.testing.assert_array_equal(per_shard[s], per_shard[s - s % 2])
        if s % 2 == 0 and s:
            assert np.abs(per_shard[s] - per_shard[0]).max() > 0.1
    assert np.abs(shared[0][0] - shared[0][1]).max() > 0.1  # examples still differ
    streams = lambda groups: [  # noqa: E731
        augment_stream(s, AugmentConfig(mode="per-shard", groups=groups, num_samples=8))
        for s in range(8)
    ]
    assert streams(8) == list(range(8))  # groups == num_samples: per-sample
    assert streams(1) == [0] * 8  # one group: shared
    assert streams(3) == [0, 0, 0, 1, 1, 1, 2, 2]


def test_batch_augmenter_fits_the_engine_and_keeps_labels():
    config = AugmentConfig(jitter_std=0.1, num_samples=NUM_SAMPLES)
    batch = {"x": IMAGES, "y": INDICES * 2, "index": INDICES}
    out = batch_augmenter(config)(KEY, 3, batch)
    close(out["x"], augment_batch(KEY, 3, INDICES, IMAGES, config))
    assert np.abs(np.asarray(out["x"]) - IMAGES).max() > 0.1
    assert out["y"] is batch["y"] and out["index"] is batch["index"]


def test_disabled_config_returns_the_batch_and_bad_settings_are_named():
    assert augment_batch(KEY, 0, INDICES, IMAGES, AugmentConfig()) is IMAGES
    with pytest.raises(ValueError, match=r"augment mode 'per-device' is unknown"):
        AugmentConfig(mode="per-device")
    with pytest.raises(ValueError, match=r"augment_groups=5 must lie in 1..num_samples=4"):
        AugmentConfig(mode="per-shard", groups=5, num_samples=4)
    with pytest.raises(ValueError, match="max_shift must be >= 0"):
        AugmentConfig(max_shift=-1)
    with pytest.raises(ValueError, match=r"flip needs images \[H, W, C\]"):
        augment(KEY, jnp.ones((40, 1)), AugmentConfig(flip=True))
