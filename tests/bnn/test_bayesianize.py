"""bayesianize: unmodified linen and nnx models become mean-field BNNs that train sharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx
from scipy import stats

from samplepar.bnn import MLP, bayesianize
from samplepar.bnn.bayesianize import NOISE

X = jax.random.normal(jax.random.key(0), (8, 6))
Y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1], jnp.int32)
BATCH = {"x": X, "y": Y, "index": jnp.arange(8)}


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(6, 8, rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def linen_model():
    return MLP(num_outputs=3, hidden=(8,))


def deterministic_log_lik(logits):
    return np.take_along_axis(jax.nn.log_softmax(logits), np.asarray(Y)[:, None], 1)[:, 0]


def draw(bm, params, seed=0):
    return bm.family.sample_and_log_prob(jax.random.key(seed), params)[0]


def test_linen_tiny_posterior_scale_gives_the_deterministic_log_lik():
    model = linen_model()
    bm = bayesianize(model, init_scale=1e-8)
    params = bm.init_params(jax.random.key(3), X[:1])
    variables = model.init(jax.random.key(3), X[:1])
    expected = deterministic_log_lik(model.apply(variables, X))
    got = bm.log_lik_fn(draw(bm, params), BATCH, jax.random.key(9))
    assert got.shape == (8,)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        bm.predict_fn(draw(bm, params), X), model.apply(variables, X), atol=1e-6
    )


def test_nnx_tiny_posterior_scale_gives_the_deterministic_log_lik():
    model = NnxMLP(nnx.Rngs(4))
    expected = deterministic_log_lik(model(X))
    bm = bayesianize(model, init_scale=1e-8)
    params = bm.init_params(jax.random.key(0), X[:1])
    got = jax.jit(bm.log_lik_fn)(draw(bm, params), BATCH, jax.random.key(9))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the user's module is untouched
    np.testing.assert_array_equal(deterministic_log_lik(model(X)), expected)


def test_posterior_noise_changes_the_log_lik():
    bm = bayesianize(linen_model(), init_scale=0.5)
    params = bm.init_params(jax.random.key(3), X[:1])
    a = bm.log_lik_fn(draw(bm, params, 0), BATCH, None)
    b = bm.log_lik_fn(draw(bm, params, 1), BATCH, None)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-2


@pytest.mark.parametrize("model_fn", [linen_model, lambda: NnxMLP(nnx.Rngs(4))])
def test_deterministic_layer_is_a_point_estimate_with_no_kl(model_fn):
    model = model_fn()
    layer = "Dense_1" if isinstance(model, nn.Module) else "out"
    bm = bayesianize(model, init_scale=0.2, prior_scale=0.7, deterministic=(layer,))
    params = bm.init_params(jax.random.key(3), X[:1])
    weights = draw(bm, params)
    means = bm.family.sample_and_log_prob(jax.random.key(0), params)[0]
    flat_point = jax.tree_util.tree_flatten_with_path(params.point)[0]
    assert flat_point and all(layer in str(path) for path, _ in flat_point)
    for path, value in flat_point:
        np.testing.assert_array_equal(value, _at(weights, path))
        np.testing.assert_array_equal(value, _at(means, path))
    # KL equals the full model's KL minus the deterministic layer's own KL
    full = bayesianize(model, init_scale=0.2, prior_scale=0.7)
    full_params = full.init_params(jax.random.key(3), X[:1])
    kl_all = full.family.kl(full_params)
    only_layer = bayesianize(
        model, init_scale=0.2, prior_scale=0.7, deterministic=lambda p: layer not in p
    )
    kl_layer = only_layer.family.kl(only_layer.init_params(jax.random.key(3), X[:1]))
    np.testing.assert_allclose(bm.family.kl(params), kl_all - kl_layer, rtol=1e-5)
    # and moving the deterministic layer leaves the KL alone
    moved = params._replace(point=jax.tree.map(lambda v: v + 3.0, params.point))
    assert bm.family.kl(moved) == bm.family.kl(params)


def _at(tree, path):
    for entry in path:
        tree = tree[entry.key]
    return tree


def test_unknown_deterministic_layer_lists_the_layers():
    bm = bayesianize(linen_model(), deterministic=("Dense_7",))
    with pytest.raises(ValueError, match=r"Dense_7.*params/Dense_0, params/Dense_1"):
        bm.init_params(jax.random.key(0), X[:1])
    with pytest.raises(ValueError, match="deterministic= takes layer names .* got 5"):
        bayesianize(linen_model(), deterministic=(5,))


def test_gaussian_likelihood_fixed_and_learned_noise():
    model = MLP(num_outputs=2, hidden=(4,))
    y = jax.random.normal(jax.random.key(5), (8, 2))
    batch = {"x": X, "y": y}
    fixed = bayesianize(model, "gaussian", noise_scale=0.5, init_scale=1e-8)
    params = fixed.init_params(jax.random.key(1), X[:1])
    weights = draw(fixed, params)
    mean, scale = fixed.predict_fn(weights, X)
    expected = stats.norm.logpdf(np.asarray(y), np.asarray(mean), 0.5).sum(axis=1)
    np.testing.assert_allclose(fixed.log_lik_fn(weights, batch, None), expected, rtol=1e-5)
    np.testing.assert_array_equal(scale, np.full((8, 2), 0.5, np.float32))

    learned = bayesianize(model, "gaussian", init_scale=1e-8)
    params = learned.init_params(jax.random.key(1), X[:1])
    assert NOISE in params.point and NOISE not in jax.tree.leaves(params.variational)
    weights = draw(learned, params)
    _, scale = learned.predict_fn(weights, X)
    np.testing.assert_allclose(scale, 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="do not match the model's output shape"):
        learned.log_lik_fn(weights, {"x": X, "y": y[:, :1]}, None)
    with pytest.raises(ValueError, match=r"shape \(2, 8\) do not match .* shape \(8, 2\)"):
        learned.log_lik_fn(weights, {"x": X, "y": y.T}, None)  # same size, transposed


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="unknown likelihood"):
        bayesianize(linen_model(), "poisson")
    with pytest.raises(ValueError, match="gaussian likelihood only"):
        bayesianize(linen_model(), noise_scale=1.0)
    with pytest.raises(TypeError, match="linen.Module or nnx.Module"):
        bayesianize(lambda x: x)
    bm = bayesianize(linen_model())
    weights = draw(bm, bm.init_params(jax.random.key(0), X[:1]))
    with pytest.raises(ValueError, match="integer labels"):
        bm.log_lik_fn(weights, {"x": X, "y": Y.astype(jnp.float32)}, None)
    with_aug = bayesianize(linen_model(), augment=lambda key, x, idx: x)
    with pytest.raises(ValueError, match="'index'"):
        with_aug.log_lik_fn(weights, {"x": X, "y": Y}, jax.random.key(0))


def test_out_of_range_labels_raise_when_concrete_and_give_nan_when_traced():
    bm = bayesianize(linen_model())
    weights = draw(bm, bm.init_params(jax.random.key(0), X[:1]))
    bad = {"x": X, "y": Y.at[jnp.array([2, 5])].set(jnp.array([-1, 3]))}
    with pytest.raises(ValueError, match=r"0\.\.2; got \[-1, 3\] at positions \[2, 5\]"):
        bm.log_lik_fn(weights, bad, None)
    got = np.asarray(jax.jit(bm.log_lik_fn)(weights, bad, None))
    assert np.isnan(got[[2, 5]]).all()  # not the last class's log-probability
    keep = [0, 1, 3, 4, 6, 7]
    want = np.asarray(bm.log_lik_fn(weights, BATCH, None))
    np.testing.assert_allclose(got[keep], want[keep], rtol=1e-6)


class LinenDropout(nn.Module):
    deterministic: bool = False

    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.Dropout(0.5, deterministic=self.deterministic)(x))


class NnxDropout(nnx.Module):
    def __init__(self, rngs):
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.out = nnx.Linear(6, 3, rngs=rngs)

    def __call__(self, x):
        return self.out(self.drop(x))


@pytest.mark.parametrize("model_fn", [LinenDropout, lambda: NnxDropout(nnx.Rngs(0))])
def test_models_drawing_random_numbers_are_refused_with_the_fix(model_fn):
    advice = r"Dropout.*not supported.*deterministic=True \(linen\) or call model.eval\(\) \(nnx\)"
    with pytest.raises(ValueError, match=advice):
        bayesianize(model_fn()).init_params(jax.random.key(0), X[:1])
    model = model_fn()
    if isinstance(model, nn.Module):
        model = LinenDropout(deterministic=True)
        expected = model.apply(model.init(jax.random.key(0), X[:1]), X)
    else:
        model.eval()
        expected = model(X)
    bm = bayesianize(model, init_scale=1e-8)
    weights = draw(bm, bm.init_params(jax.random.key(0), X[:1]))
    np.testing.assert_allclose(bm.predict_fn(weights, X), expected, atol=1e-6)


def test_models_with_running_statistics_are_refused():
    class WithBatchNorm(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.BatchNorm(use_running_average=False)(x))

    with pytest.raises(ValueError, match="batch_stats.*GroupNorm"):
        bayesianize(WithBatchNorm()).init_params(jax.random.key(0), X[:1])

    class NnxBatchNorm(nnx.Module):
        def __init__(self, rngs):
            self.norm = nnx.BatchNorm(6, rngs=rngs)

    with pytest.raises(ValueError, match="batch statistics.*GroupNorm"):
        bayesianize(NnxBatchNorm(nnx.Rngs(0)))
