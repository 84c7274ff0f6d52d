"""Exactness of the sharded objectives: every layout equals one device, and a float64 reference.

The reference is written independently of the engine: a loop over samples in float64, with the
weights drawn from the documented key scheme ``fold_in(rng_key, s)``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_model
from scipy.special import logsumexp

from samplepar import engine, mesh, objectives

LAYOUTS = ["none", "sample=8", "data=8", "sample=4,data=2", "sample=2,data=4"]
OBJECTIVES = [
    objectives.ELBO(),
    objectives.ELBO(analytic_kl=False),
    objectives.IWELBO(),
    objectives.RenyiELBO(alpha=0.5),
    objectives.RenyiELBO(alpha=2.0),
    objectives.PredictiveNLL(),
    objectives.PredictiveNLL(kl_weight=0.1),
]
NUM_SAMPLES, DATASET_SIZE = 8, 100
KEY = jax.random.key(7)


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def sharded_values_and_grads(layout, objective_list=OBJECTIVES):
    """{objective: (-objective value, flat gradient)} on ``layout``, all in one compiled call."""
    family, params, particle, batch = toy_model.make()
    m = mesh.make_mesh(layout)
    losses = [
        engine.make_loss(particle, obj, m, NUM_SAMPLES, DATASET_SIZE, kl_fn=family.kl)
        for obj in objective_list
    ]

    @jax.jit
    def evaluate(params, key, batch):
        return [jax.value_and_grad(loss, has_aux=True)(params, key, batch) for loss in losses]

    results = evaluate(params, KEY, mesh.global_batch(batch, m))
    return {
        obj: (float(value), flat(grad))
        for obj, ((value, _), grad) in zip(objective_list, results, strict=True)
    }


@pytest.fixture(scope="module")
def single_device():
    return sharded_values_and_grads("none")


@pytest.mark.parametrize("layout", LAYOUTS[1:])
def test_sharded_equals_single_device(layout, single_device):
    sharded = sharded_values_and_grads(layout)
    for objective in OBJECTIVES:
        value, grad = sharded[objective]
        ref_value, ref_grad = single_device[objective]
        assert value == pytest.approx(ref_value, rel=1e-5), objective
        np.testing.assert_allclose(
            grad, ref_grad, rtol=1e-5, atol=1e-5 * np.abs(ref_grad).max(), err_msg=str(objective)
        )


def reference_loss(objective, loc, raw_scale, eps, x, y):
    """-objective in float64, one sample at a time; eps[s] are the standard-normal draws."""
    scale = {k: jnp.log1p(jnp.exp(raw_scale[k])) for k in loc}
    data_terms, global_terms, per_example = [], [], []
    for s in range(NUM_SAMPLES):
        w = {k: loc[k] + scale[k] * eps[s][k] for k in loc}
        logp = jax.nn.log_softmax(x @ w["w"] + w["b"])[jnp.arange(len(y)), y]
        per_example.append(logp)
        data_terms.append(DATASET_SIZE / len(y) * jnp.sum(logp))
        log_prior = sum(jnp.sum(-0.5 * w[k] ** 2 - 0.5 * math.log(2 * math.pi)) for k in w)
        log_q = sum(
            jnp.sum(-0.5 * eps[s][k] ** 2 - jnp.log(scale[k]) - 0.5 * math.log(2 * math.pi))
            for k in w
        )
        global_terms.append(log_prior - log_q)
    data_terms, global_terms = jnp.stack(data_terms), jnp.stack(global_terms)
    kl = sum(jnp.sum(0.5 * (scale[k] ** 2 + loc[k] ** 2 - 1.0) - jnp.log(scale[k])) for k in loc)
    if isinstance(objective, objectives.RenyiELBO):
        a = objective.alpha
        lw = (1 - a) * (data_terms + global_terms)
        return -(jax.nn.logsumexp(lw) - math.log(NUM_SAMPLES)) / (1 - a)
    if isinstance(objective, objectives.PredictiveNLL):
        mixture = jax.nn.logsumexp(jnp.stack(per_example), axis=0) - math.log(NUM_SAMPLES)
        return -(DATASET_SIZE / len(y) * jnp.sum(mixture)) + objective.kl_weight * kl
    divergence = kl if objective.analytic_kl else -jnp.mean(global_terms)
    return -(jnp.mean(data_terms) - divergence)


def draws(params):
    """The standard-normal draws of each global sample, by the documented key scheme."""
    leaves, treedef = jax.tree.flatten(params.loc)
    out = []
    for s in range(NUM_SAMPLES):
        weight_key, _ = jax.random.split(jax.random.fold_in(KEY, s))
        keys = jax.random.split(weight_key, len(leaves))
        eps = [
            jax.random.normal(k, leaf.shape, leaf.dtype)
            for k, leaf in zip(keys, leaves, strict=True)
        ]
        out.append({k: np.asarray(v, np.float64) for k, v in treedef.unflatten(eps).items()})
    return out


@pytest.mark.parametrize("objective", OBJECTIVES, ids=str)
def test_float64_reference_agrees(objective, single_device):
    family, params, particle, batch = toy_model.make()
    eps = draws(params)
    with jax.enable_x64(True):
        loc = {k: jnp.asarray(v, jnp.float64) for k, v in params.loc.items()}
        raw = {k: jnp.asarray(v, jnp.float64) for k, v in params.raw_scale.items()}
        x = jnp.asarray(batch["x"], jnp.float64)
        fn = jax.jit(jax.value_and_grad(reference_loss, argnums=(1, 2)), static_argnums=0)
        value, (g_loc, g_raw) = fn(objective, loc, raw, eps, x, jnp.asarray(batch["y"]))
        ref_grad = flat(type(params)(g_loc, g_raw))
        value = float(value)
    got_value, got_grad = single_device[objective]
    assert got_value == pytest.approx(value, rel=1e-5)
    np.testing.assert_allclose(got_grad, ref_grad, rtol=1e-4, atol=1e-4 * np.abs(ref_grad).max())


def test_scipy_logsumexp_agrees_on_renyi_value():
    """The Renyi value by scipy's logsumexp over per-sample log-weights, as a second reference."""
    family, params, particle, batch = toy_model.make()
    m = mesh.make_mesh("sample=8")
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(KEY, jnp.arange(NUM_SAMPLES))
    log_lik, global_term = jax.vmap(particle, in_axes=(None, 0, None))(params, keys, batch)
    log_w = DATASET_SIZE / toy_model.BATCH * np.asarray(log_lik, np.float64).sum(1) + np.asarray(
        global_term, np.float64
    )
    expected = -(logsumexp(0.5 * log_w) - math.log(NUM_SAMPLES)) / 0.5
    loss = engine.make_loss(particle, objectives.RenyiELBO(0.5), m, NUM_SAMPLES, DATASET_SIZE)
    value, _ = jax.jit(loss)(params, KEY, mesh.global_batch(batch, m))
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_renyi_tends_to_elbo_and_is_ordered():
    """L_alpha is non-increasing in alpha, and near alpha=1 it approaches the MC ELBO."""
    chain = [objectives.RenyiELBO(a) for a in (0.0, 0.5, 0.999)]
    chain.append(objectives.ELBO(analytic_kl=False))
    values = [-v for v, _ in sharded_values_and_grads("none", chain).values()]
    assert values[0] >= values[1] >= values[2]
    near_one, elbo = values[2], values[3]
    assert near_one == pytest.approx(elbo, abs=0.05)


@pytest.mark.parametrize(
    ("alpha", "message"),
    [(1.0, "differ from 1"), (-0.5, ">= 0"), (float("nan"), "finite"), ("x", "finite")],
)
def test_alpha_out_of_range(alpha, message):
    with pytest.raises(ValueError, match=message):
        objectives.RenyiELBO(alpha)


def test_unknown_objective_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown objective 'kl'.*elbo, iwelbo, renyi"):
        objectives.get_objective("kl")
    assert objectives.get_objective("renyi", 0.3) == objectives.RenyiELBO(0.3)
    assert objectives.get_objective("IWELBO") == objectives.RenyiELBO(0.0)


def test_negative_kl_weight_refused():
    with pytest.raises(ValueError, match="kl_weight"):
        objectives.PredictiveNLL(kl_weight=-1.0)


@pytest.mark.parametrize("layout", ["none", "sample=4"])
def test_iw_weights_exact_at_large_log_weights(layout):
    """Log-weights ~ -1.3e7 (a large data set) in float32: the particle weights are the float64
    softmax, here one-hot on the best particle. (Subtracting a rounded log-mean-exp instead, as
    a surrogate ``exp(log_w - logmeanexp)`` does, scales the gradient by e^(+-0.5): the float32
    spacing at 1.3e7 is 1.)"""
    m = mesh.make_mesh(layout)
    log_w = jnp.array([-45876068.0, -88871200.0, -28152728.0, -13050805.0])

    def value(log_w):
        def shard(log_w):
            log_lik = jnp.zeros((log_w.shape[0], 1))
            return objectives.reduce_objective(
                objectives.RenyiELBO(0.0), log_lik, log_w, None, 4, 1.0
            )[0]

        return jax.shard_map(
            shard,
            mesh=m,
            in_specs=jax.sharding.PartitionSpec("sample"),
            out_specs=jax.sharding.PartitionSpec(),
        )(log_w)

    grad = jax.jit(jax.grad(value))(log_w)
    np.testing.assert_array_equal(grad, [0.0, 0.0, 0.0, 1.0])
    assert float(jax.jit(value)(log_w)) == pytest.approx(-13050805.0 - math.log(4), abs=1.0)
