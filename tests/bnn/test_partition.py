"""The partitioned family: point leaves carry no noise, density, prior or KL."""

import jax
import jax.numpy as jnp
import numpy as np

from samplepar.bnn.partition import merge, partitioned, path_names, split
from samplepar.variational import mean_field_normal

TREE = {
    "a": {"kernel": jnp.arange(6.0).reshape(2, 3) / 10, "bias": jnp.ones(3)},
    "b": {"kernel": -jnp.ones((3, 2)), "bias": jnp.zeros(2)},
}


def is_point(path):
    return path[0] == "b"


def test_split_merge_roundtrip_and_paths():
    random_part, point_part = split(TREE, is_point)
    assert random_part["b"]["kernel"] is None and point_part["a"]["bias"] is None
    back = merge(random_part, point_part)
    jax.tree.map(np.testing.assert_array_equal, back, TREE)
    (path, _), *_ = jax.tree_util.tree_flatten_with_path(TREE)[0]
    assert path_names(path) == ("a", "bias")


def test_point_leaves_are_exact_and_cost_nothing():
    base = mean_field_normal(init_scale=0.3, prior_scale=2.0)
    family = partitioned(base, is_point)
    params = family.init(TREE)
    draw, log_q = family.sample_and_log_prob(jax.random.key(1), params)
    jax.tree.map(np.testing.assert_array_equal, draw["b"], TREE["b"])
    assert not np.allclose(draw["a"]["kernel"], TREE["a"]["kernel"])

    # the same numbers as the base family on the random half alone
    random_part = {"a": TREE["a"]}
    base_params = base.init(random_part)
    base_draw, base_log_q = base.sample_and_log_prob(jax.random.key(1), base_params)
    np.testing.assert_allclose(log_q, base_log_q, rtol=1e-6)
    jax.tree.map(np.testing.assert_allclose, draw["a"], base_draw["a"])
    np.testing.assert_allclose(family.kl(params), base.kl(base_params), rtol=1e-6)
    np.testing.assert_allclose(family.log_prior(draw), base.log_prior(base_draw), rtol=1e-6)
    np.testing.assert_allclose(
        family.log_prob(params, draw), base.log_prob(base_params, base_draw), rtol=1e-6
    )

    # moving a point leaf changes neither the KL, the prior nor the density
    moved = jax.tree.map(lambda x: x + 5.0, params.point)
    params_moved = params._replace(point=moved)
    assert family.kl(params_moved) == family.kl(params)
    draw_moved = merge(split(draw, is_point)[0], moved)
    assert family.log_prior(draw_moved) == family.log_prior(draw)
    assert family.log_prob(params_moved, draw_moved) == family.log_prob(params, draw)


def test_everything_deterministic_has_zero_kl():
    family = partitioned(mean_field_normal(), lambda path: True)
    params = family.init(TREE)
    assert float(family.kl(params)) == 0.0
    draw, log_q = family.sample_and_log_prob(jax.random.key(0), params)
    assert float(log_q) == 0.0
    jax.tree.map(np.testing.assert_array_equal, draw, TREE)


def test_kl_gradient_ignores_point_leaves():
    family = partitioned(mean_field_normal(prior_scale=0.5), is_point)
    params = family.init(TREE)
    grads = jax.grad(family.kl)(params)
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads.point))
    assert float(jnp.abs(grads.variational.loc["a"]["kernel"]).sum()) > 0


def test_jitted_sampling_matches_eager():
    family = partitioned(mean_field_normal(init_scale=0.1), is_point)
    params = family.init(TREE)
    eager, eager_log_q = family.sample_and_log_prob(jax.random.key(2), params)
    jitted, jitted_log_q = jax.jit(family.sample_and_log_prob)(jax.random.key(2), params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), eager, jitted)
    np.testing.assert_allclose(eager_log_q, jitted_log_q, rtol=1e-6)
