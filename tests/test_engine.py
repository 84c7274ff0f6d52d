"""The training step: layout-independent trajectories, kept shardings, one compilation."""

import re

import jax
import numpy as np
import optax
import pytest
import toy_model

from samplepar import engine, mesh, objectives, random

NUM_SAMPLES, DATASET_SIZE, NUM_STEPS = 8, 100, 20


RENYI = objectives.RenyiELBO(0.5)


def build(layout, objective=RENYI, compiler_options=None):
    """(step, initial state, global batch) of the toy model on ``layout``."""
    family, params, particle, batch = toy_model.make()
    m = mesh.make_mesh(layout)
    optimizer = optax.adam(0.05)
    loss = engine.make_loss(particle, objective, m, NUM_SAMPLES, DATASET_SIZE, kl_fn=family.kl)
    step = engine.build_step(loss, optimizer, m, compiler_options)
    return step, engine.init(params, optimizer, m), mesh.global_batch(batch, m)


def run(layout, objective=RENYI, num_steps=NUM_STEPS, compiler_options=None):
    step, state, batch = build(layout, objective, compiler_options)
    seed_key = jax.random.key(3)
    infos = []
    for t in range(num_steps):
        state, info = step(random.step_key(seed_key, t), state, batch)
        infos.append(info)
    return state, infos, step


def flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def reference():
    state, infos, _ = run("none")
    return flat(state.params), np.array([float(i.loss) for i in infos])


@pytest.mark.parametrize("layout", ["sample=4,data=2", "data=8"])
def test_trajectory_does_not_depend_on_layout(layout, reference):
    state, infos, _ = run(layout)
    ref_params, ref_losses = reference
    np.testing.assert_allclose(flat(state.params), ref_params, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([float(i.loss) for i in infos], ref_losses, rtol=1e-4)
    assert int(state.step) == NUM_STEPS


def test_weight_sample_compiler_options_keep_the_trajectory(reference):
    m = mesh.make_mesh("sample=4,data=2")
    options = engine.weight_sample_compiler_options(m)
    assert options == {engine.YNN_FUSION_OPTION: "LIBRARY_FUSION_TYPE_DOT"}  # CPU devices
    state, _, _ = run("sample=4,data=2", compiler_options=options)
    np.testing.assert_allclose(flat(state.params), reference[0], rtol=1e-4, atol=1e-5)


def test_weight_sample_compiler_options_defer_to_xla_flags(monkeypatch):
    flags = f"--{engine.YNN_FUSION_OPTION}=LIBRARY_FUSION_TYPE_REDUCE"
    monkeypatch.setenv("XLA_FLAGS", flags)
    assert engine.weight_sample_compiler_options(mesh.make_mesh("none")) == {}


def test_training_reduces_the_loss(reference):
    _, losses = reference
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_state_keeps_its_sharding_and_step_compiles_once():
    state, infos, step = run("sample=4,data=2", num_steps=3)
    for leaf in jax.tree.leaves(state):
        assert leaf.sharding.is_fully_replicated
        assert leaf.sharding.mesh.shape == {"sample": 4, "data": 2}
    assert step._cache_size() == 1
    assert np.isfinite(float(infos[-1].loss))


def test_gradient_is_summed_by_one_all_reduce():
    step, state, batch = build("sample=4,data=2")
    key = random.step_key(jax.random.key(3), 0)
    hlo = step.lower(key, state, batch).compile().as_text()
    sizes = [leaf.size for leaf in jax.tree.leaves(state.params)]
    # Each all-reduce's result shapes; XLA may combine several into one tuple all-reduce.
    results = re.findall(r"= (\(?[^=]*?\)?) all-reduce(?:-start)?\(", hlo)
    all_reduces = [n for result in results for n in re.findall(r"f32\[(\d*)\]", result)]
    assert all_reduces.count(str(sum(sizes))) == 1  # the raveled gradient, once
    assert not any(int(n or 1) in sizes and int(n or 1) > 1 for n in all_reduces)  # no leaf's


def test_step_info_splits_the_elbo():
    _, infos, _ = run("sample=2,data=4", objective=objectives.ELBO(), num_steps=1)
    info = infos[0]
    assert float(info.loss) == pytest.approx(float(info.kl) - float(info.log_likelihood), rel=1e-5)
    assert float(info.kl) > 0


def test_samples_not_divisible_by_layout_is_refused_early():
    family, params, particle, _ = toy_model.make()
    with pytest.raises(mesh.LayoutError, match="6 samples cannot be split over sample=4"):
        engine.make_loss(particle, objectives.ELBO(), mesh.make_mesh("sample=4,data=2"), 6)


def test_dataset_size_must_be_a_positive_count():
    # 0 had dropped the data term and a negative size had reversed the gradient, silently.
    family, params, particle, _ = toy_model.make()
    m = mesh.make_mesh("sample=2")
    for bad in (0, -1000, 2.5, True):
        with pytest.raises(ValueError, match="dataset_size must be the number of examples"):
            engine.make_loss(particle, objectives.ELBO(), m, 8, dataset_size=bad)


def test_batch_not_divisible_by_data_axis_is_refused():
    family, params, particle, batch = toy_model.make()
    m = mesh.make_mesh("sample=2,data=4")
    loss = engine.make_loss(particle, objectives.ELBO(), m, 8)
    odd = {k: v[:10] for k, v in batch.items()}
    with pytest.raises(mesh.LayoutError, match="batch of 10 examples cannot be split over data=4"):
        loss(params, jax.random.key(0), odd)


def test_a_consumed_state_is_refused_instead_of_crashing():
    # The step donates its state; on several devices reusing it had ended the process with a
    # segmentation fault.
    step, state, batch = build("sample=2,data=2")
    key = jax.random.key(0)
    new_state, _ = step(key, state, batch)
    with pytest.raises(ValueError, match="this state was consumed by an earlier step"):
        step(key, state, batch)
    _, info = step(key, new_state, batch)
    assert np.isfinite(float(info.loss))


def test_fan_out_gradient_is_the_sum_of_the_copies_gradients():
    x = jax.numpy.arange(6.0).reshape(2, 3)
    weights = jax.random.normal(jax.random.key(0), (5, 2, 3))
    copies = engine.fan_out(x, 5)
    np.testing.assert_array_equal(copies, np.broadcast_to(np.asarray(x), (5, 2, 3)))
    grad = jax.grad(lambda v: jax.numpy.sum(weights * engine.fan_out(v, 5) ** 2))(x)
    np.testing.assert_allclose(grad, np.sum(2 * weights * np.asarray(x), axis=0), rtol=1e-6)


@pytest.mark.parametrize("layout", ["none", "sample=4,data=2"])
def test_parameter_copies_flat_by_leaf_or_mapped_give_one_loss_and_gradient(layout):
    family, params, particle, batch = toy_model.make()
    m = mesh.make_mesh(layout)
    key = jax.random.key(5)
    results = []
    for options in ({}, {"fan_out_flat": True}, {"samples_per_pass": 2}):
        loss = engine.make_loss(
            particle, RENYI, m, NUM_SAMPLES, DATASET_SIZE, kl_fn=family.kl, **options
        )
        value_and_grad = jax.jit(jax.value_and_grad(lambda p, f=loss: f(p, key, batch)[0]))
        results.append(value_and_grad(params))
    (value, grads), others = results[0], results[1:]
    for other_value, other_grads in others:
        np.testing.assert_allclose(other_value, value, rtol=1e-6)
        np.testing.assert_allclose(flat(other_grads), flat(grads), rtol=1e-5, atol=1e-6)
