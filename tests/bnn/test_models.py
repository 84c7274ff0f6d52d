"""The model zoo and its registry: shapes, sizes, per-example independence, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from samplepar.bnn import get_model, model_likelihood


def init_and_apply(model, x):
    variables = jax.jit(model.init)(jax.random.key(0), x)
    return variables, jax.jit(model.apply)(variables, x)


CASES = [
    ("mlp", (28, 28, 1), 10, {}),
    ("lenet5", (28, 28, 1), 10, {}),
    ("lenet", (8, 8, 1), 10, {}),
    ("resnet", (32, 32, 3), 10, {}),
    ("resnet", (8, 8), 10, {"widths": (8, 16)}),
    ("vit", (32, 32, 3), 7, {}),
    ("vit", (8, 8, 1), 10, {}),
    ("forecaster", (12, 1), 4, {}),
    ("forecaster", (12,), 4, {}),
]


@pytest.mark.parametrize(("name", "shape", "outputs", "options"), CASES)
def test_output_shape(name, shape, outputs, options):
    model = get_model(name, shape, outputs, **options)
    x = jnp.zeros((3, *shape))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    assert jax.eval_shape(model.apply, variables, x).shape == (3, outputs)


def random_variables(model, x):
    """Variables of the model's shapes drawn by numpy: compiling flax's initialisers of
    4-D conv kernels takes tens of seconds on a shared CPU."""
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: 0.3 * rng.standard_normal(s.shape, np.float32), shapes)


@pytest.mark.parametrize(
    ("name", "options"),
    [("resnet", {"widths": (4, 8)}), ("vit", {"dim": 8, "depth": 1, "heads": 2, "mlp_dim": 8})],
)
def test_no_batch_statistics(name, options):
    """An example's output does not depend on the rest of its batch (GroupNorm, LayerNorm)."""
    model = get_model(name, (8, 8, 1), 10, **options)
    x = jax.random.uniform(jax.random.key(1), (3, 8, 8, 1))
    variables = random_variables(model, x)
    out = jax.jit(model.apply)(variables, x)
    assert np.all(np.isfinite(out)) and float(jnp.std(out[:, 0])) > 0
    others = x.at[1:].set(jax.random.uniform(jax.random.key(2), (2, 8, 8, 1)) * 5.0)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, others)[0], out[0], rtol=1e-5)


def test_reference_parameter_counts():
    def count(name, shape):
        model = get_model(name, shape, 10)
        variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))
        return sum(leaf.size for leaf in jax.tree.leaves(variables))

    assert count("mlp", (784,)) == 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10
    # LeNet-5 on 28x28: 6@5x5 'same', pool, 16@5x5 'valid', pool -> 400 -> 120 -> 84 -> 10
    assert count("lenet5", (28, 28, 1)) == 156 + 2416 + 48120 + 10164 + 850
    # on 8x8 the second convolution keeps its size: 16@2x2 = 64 features
    assert count("lenet5", (8, 8, 1)) == 156 + 2416 + (64 * 120 + 120) + 10164 + 850


def test_forecaster_starts_with_the_persistence_forecast():
    model = get_model("forecaster", (5, 1), 3)
    x = jnp.arange(10.0).reshape(2, 5, 1)
    _, out = init_and_apply(model, x)
    np.testing.assert_array_equal(out, [[4.0] * 3, [9.0] * 3])
    assert model_likelihood("forecaster") == "gaussian"
    assert model_likelihood("LeNet-5") == "categorical"


def test_vit_default_patch_follows_the_image_size():
    assert get_model("vit", (32, 32, 3), 10).patch_size == 4
    assert get_model("vit", (8, 8, 1), 10).patch_size == 2


@pytest.mark.parametrize(
    ("name", "shape", "options", "message"),
    [
        ("transformer", (8, 8, 1), {}, r"unknown model 'transformer'; known models: mlp, lenet5"),
        ("vit", (30, 30, 3), {}, r"patch_size=4 must divide the image size 30x30"),
        ("vit", (8, 8, 1), {"patch_size": 3}, r"patch_size=3 must divide"),
        ("vit", (8, 8, 1), {"dim": 10, "heads": 4}, r"multiple of heads=4"),
        ("lenet5", (64,), {}, r"needs an image shape \(H, W\) or \(H, W, C\), got \(64,\)"),
        ("lenet5", (3, 3, 1), {}, r"at least 4x4"),
        ("resnet", (2, 2, 1), {}, r"at least 4x4"),
        ("resnet", (8, 8, 1), {"widths": (6,)}, r"groups=4 must divide widths \[6\]"),
        ("forecaster", (8, 8, 1), {}, r"window shape"),
        ("mlp", (784,), {"depth": 3}, r"no option\(s\) \['depth'\]; its options are \['hidden'\]"),
        ("mlp", (0,), {}, r"positive sizes"),
        ("mlp", 64, {}, r"input_shape must be a tuple of positive sizes .* got 64"),
        ("vit", (8, 8, 1), {"patch_size": 0}, r"patch_size must be an integer >= 1, got 0"),
        ("vit", (8, 8, 1), {"heads": 0}, r"heads must be an integer >= 1, got 0"),
        ("resnet", (8, 8, 3), {"groups": 0}, r"groups must be an integer >= 1, got 0"),
    ],
)
def test_bad_requests_are_named(name, shape, options, message):
    with pytest.raises(ValueError, match=message):
        get_model(name, shape, 10, **options)


def test_the_output_count_must_be_a_whole_number():
    with pytest.raises(ValueError, match="num_outputs must be an integer >= 1, got 10.5"):
        get_model("mlp", (64,), 10.5)
