"""Sharded SVI: NumPyro's own ELBOs as reference, layout independence, unbiased mini-batches."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from jax.sharding import PartitionSpec
from numpyro.infer import RenyiELBO as NumpyroRenyi
from numpyro.infer import Trace_ELBO
from numpyro.infer.autoguide import AutoDiagonalNormal, AutoMultivariateNormal, AutoNormal

from samplepar import checkpoint, svi, svi_draws
from samplepar import random as sp_random
from samplepar.guides import AutoPairedNormal
from samplepar.mesh import make_mesh
from samplepar.models import observations, published_inputs, published_model, simulate, validate
from samplepar.models.grouped import TRUE_WEIGHT, grouped_model, simulate_groups
from samplepar.objectives import ELBO, RenyiELBO

S = 4


@pytest.fixture(scope="module")
def demand():
    """A 12-product x 7-period demand table with three cells missing (81 rows)."""
    table, _ = simulate(0, 12, 7, 3)
    table = table.drop(index=[3, 10, 40]).reset_index(drop=True)
    return published_inputs(observations(validate(table)))


def _perturbed(params, seed=1):
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noise = [0.3 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(tree, [x + n for x, n in zip(leaves, noise, strict=True)])


def _build(demand, layout="none", **kwargs):
    data, model_kwargs = demand
    return svi.build(
        jax.random.key(0),
        published_model,
        data,
        model_kwargs=model_kwargs,
        mesh=make_mesh(layout),
        num_particles=S,
        **kwargs,
    )


def _numpyro_loss(problem, numpyro_elbo, demand, rng_key):
    """NumPyro's loss of the unconstrained params, its particles drawn with our particle keys.

    Returned unjitted: callers jit it (one compiled program instead of hundreds of eager ops).
    """
    data, model_kwargs = demand
    keys = sp_random.sample_keys(rng_key, jnp.arange(S))
    numpyro_elbo.vectorize_particles_fn = lambda fn, _keys: jax.vmap(fn)(keys)

    def loss(params):
        return numpyro_elbo.loss(
            rng_key,
            problem.constrain(params),
            published_model,
            problem.guide,
            **model_kwargs,
            **data,
        )

    return loss


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (ELBO(analytic_kl=False), Trace_ELBO(num_particles=S)),
        (RenyiELBO(0.5), NumpyroRenyi(alpha=0.5, num_particles=S)),
        (RenyiELBO(0.0), NumpyroRenyi(alpha=0.0, num_particles=S)),  # the default, IW-ELBO
    ],
)
def test_matches_numpyro_elbos(demand, ours, theirs):
    problem = _build(demand, objective=ours)
    params = _perturbed(problem.params)
    key = jax.random.key(7)
    (value, _), grads = jax.value_and_grad(problem.loss, has_aux=True)(params, key, problem.data)
    reference = jax.jit(jax.value_and_grad(_numpyro_loss(problem, theirs, demand, key)))
    ref_value, ref_grads = reference(params)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    # Renyi weights softmax((1 - alpha) log w_s) amplify float32 rounding of log w ~ 1e4: 2e-3.
    rtol = 1e-4 if isinstance(ours, ELBO) else 2e-3
    for name in params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=rtol, atol=1e-3, err_msg=name)


def test_sharded_equals_single_device(demand):
    """The default objective (IW-ELBO) on sample=4,data=2 and data=8 equals one device."""
    problems = {layout: _build(demand, layout) for layout in ("none", "sample=4,data=2", "data=8")}
    params = _perturbed(problems["none"].params)
    key = jax.random.key(3)
    results = {
        layout: jax.jit(jax.value_and_grad(lambda p, prob=prob: prob.loss(p, key, prob.data)[0]))(
            params
        )
        for layout, prob in problems.items()
    }
    value, grads = results.pop("none")
    for layout, (value_sharded, grads_sharded) in results.items():
        np.testing.assert_allclose(value_sharded, value, rtol=1e-5, err_msg=layout)
        for name in params:
            np.testing.assert_allclose(
                grads_sharded[name], grads[name], rtol=1e-4, atol=1e-3, err_msg=f"{layout} {name}"
            )


def test_normal_draws_are_numpyros_draws(monkeypatch):
    drawn = []
    fast_normal = sp_random.normal

    def recorded_normal(key, shape, dtype):
        drawn.append(shape)
        return fast_normal(key, shape, dtype)

    monkeypatch.setattr(sp_random, "normal", recorded_normal)

    def guide():
        numpyro.sample("vector", dist.Normal(jnp.arange(5.0), jnp.full(5, 2.0)))
        numpyro.sample("event", dist.Normal(jnp.zeros((2, 3)), 0.5).to_event(2))
        with numpyro.plate("rows", 4):
            numpyro.sample("broadcast", dist.Normal(1.0, 3.0))  # an expanded distribution
            numpyro.sample("positive", dist.LogNormal(0.0, 1.0))
        numpyro.sample("observed", dist.Normal(0.0, 1.0), obs=jnp.ones(2))

    key = jax.random.key(3)
    theirs = numpyro.handlers.trace(numpyro.handlers.seed(guide, key)).get_trace()
    ours = numpyro.handlers.trace(svi.normal_draws(numpyro.handlers.seed(guide, key))).get_trace()
    assert list(ours) == list(theirs)
    for name in theirs:
        np.testing.assert_array_equal(ours[name]["value"], theirs[name]["value"], err_msg=name)
    assert drawn == [(5,), (2, 3)]  # the Normal sites; the expanded and log-normal ones as before


@pytest.mark.parametrize(
    "make_guide", [AutoDiagonalNormal, AutoMultivariateNormal, AutoPairedNormal]
)
def test_any_autoguide(demand, make_guide):
    """Other guides (NumPyro's, ours) run sharded and agree with NumPyro."""
    guide = make_guide(published_model)
    problem = _build(demand, layout="data=2", guide=guide, objective=ELBO(analytic_kl=False))
    params = _perturbed(problem.params)
    key = jax.random.key(5)
    value = problem.loss(params, key, problem.data)[0]
    ref = jax.jit(_numpyro_loss(problem, Trace_ELBO(num_particles=S), demand, key))(params)
    np.testing.assert_allclose(value, ref, rtol=1e-5)


@pytest.mark.parametrize(("model", "batch_size"), [("demand", 16), ("local-latents", 32)])
def test_minibatch_loss_is_unbiased(demand, groups, model, batch_size):
    """Mean of mini-batch losses over 400 draws equals the full-data loss within 4 SE."""
    kwargs = {"layout": "sample=2,data=2", "objective": ELBO(False), "batch_size": batch_size}
    problem = _build(demand, **kwargs) if model == "demand" else _build_grouped(groups, **kwargs)
    params = _perturbed(problem.params)
    particle_key = jax.random.key(11)

    @jax.jit
    def minibatch_loss(data_key):
        return problem.loss(params, particle_key, problem.subsample(data_key, problem.data))[0]

    draws = np.array([minibatch_loss(jax.random.key(i)) for i in range(400)])
    full = float(problem.loss(params, particle_key, problem.data)[0])
    standard_error = draws.std(ddof=1) / np.sqrt(len(draws))
    assert draws.std() > 0
    assert abs(draws.mean() - full) < 4 * standard_error, (draws.mean(), full, standard_error)


def test_fit_resumes_and_writes_posterior(demand, tmp_path):
    """A run stopped at step 16 and resumed ends where the uninterrupted 24-step run ends."""
    problem = _build(demand, "data=2")
    seed_key = jax.random.key(2)
    whole = svi.fit(seed_key, problem, 24, progress_bar=False)
    kwargs = {"progress_bar": False, "checkpoint_dir": tmp_path / "ckpt", "checkpoint_every": 8}
    first = svi.fit(seed_key, problem, 16, **kwargs)
    assert len(first.losses) == 16
    resumed = svi.fit(seed_key, problem, 24, **kwargs)
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-5)
    for name in whole.params:
        np.testing.assert_allclose(resumed.params[name], whole.params[name], rtol=1e-5)
    assert whole.losses[-4:].mean() < whole.losses[:4].mean()
    draws = svi_draws.posterior_draws(jax.random.key(0), problem, whole.params, 50)
    assert draws["product_elasticity"].shape == (50, 12)
    idata = svi_draws.to_inference_data(draws, tmp_path / "posterior.nc")
    assert idata.posterior["global_elasticity"].shape == (1, 50)
    assert (tmp_path / "posterior.nc").stat().st_size > 0


def _plain_plate_model(x, y=None):
    with numpyro.plate("obs", x.shape[0]):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(z * x, 1.0), obs=y)


def test_rejects_latents_in_data_plate_and_missing_plate():
    data = {"x": np.ones(4, np.float32), "y": np.zeros(4, np.float32)}
    problem = svi.build(jax.random.key(0), _plain_plate_model, data, mesh=make_mesh("none"))
    with pytest.raises(
        ValueError, match=r"latent site 'z' lies in the data plate 'obs'.*plate\('obs', 4"
    ):
        problem.loss(problem.params, jax.random.key(0), problem.data)
    with pytest.raises(
        ValueError, match=r"no plate named 'rows' \(data_plate\); its plates: \['obs'\]"
    ):
        svi.build(
            jax.random.key(0), _plain_plate_model, data, mesh=make_mesh("none"), data_plate="rows"
        )


def _flax_model(x, y=None):
    from flax import linen
    from numpyro.contrib.module import flax_module

    net = flax_module("net", linen.Dense(1), input_shape=(1, 1))
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("y", dist.Normal(net(x[:, None])[:, 0], 1.0), obs=y)


def test_pytree_params_are_refused_by_name():
    data = {"x": np.ones(4, np.float32), "y": np.zeros(4, np.float32)}
    with pytest.raises(ValueError, match=r"param site 'net\$params' holds a dict, not an array"):
        svi.build(jax.random.key(0), _flax_model, data, mesh=make_mesh("none"))


def _likelihood_outside_plate(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("obs", x.shape[0]):
        mean = numpyro.deterministic("mean", w * x)
    numpyro.sample("y", dist.Normal(mean, 1.0).to_event(1), obs=y)


def _factor_outside_plate(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("obs", x.shape[0]):
        pass
    numpyro.factor("y", dist.Normal(w * x, 1.0).log_prob(y).sum())


def _global_observation(x, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    numpyro.sample("w_measured", dist.Normal(w, 1.0), obs=0.5)  # not the rows' data
    with numpyro.plate("obs", x.shape[0]):
        numpyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


@pytest.mark.parametrize("model", [_likelihood_outside_plate, _factor_outside_plate])
@pytest.mark.parametrize("layout", ["none", "data=4"])
def test_rows_scored_outside_the_data_plate_are_refused(model, layout):
    # Averaged over the devices and unscaled in mini-batches, such a likelihood had silently
    # widened the posterior with the device count.
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    problem = svi.build(jax.random.key(0), model, {"x": x, "y": 2 * x}, mesh=make_mesh(layout))
    with pytest.raises(ValueError, match="observed site 'y' holds the rows' data but lies outside"):
        problem.loss(problem.params, jax.random.key(1), problem.data)


def test_a_global_observation_outside_the_data_plate_is_counted_once():
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    losses = []
    for layout in ("none", "data=4"):
        problem = svi.build(
            jax.random.key(0), _global_observation, {"x": x, "y": 2 * x}, mesh=make_mesh(layout)
        )
        losses.append(float(problem.loss(problem.params, jax.random.key(1), problem.data)[0]))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)


def test_counts_are_checked_by_name_and_a_layout_may_name_the_mesh():
    data = {"x": np.ones(8, np.float32), "y": np.zeros(8, np.float32)}
    for settings, message in [
        ({"num_particles": 0}, "num_particles must be an integer >= 1, got 0"),
        ({"batch_size": 4.0}, "batch_size must be an integer >= 1, got 4.0"),
    ]:
        with pytest.raises(ValueError, match=message):
            svi.build(jax.random.key(0), _global_observation, data, **settings)
    problem = svi.build(jax.random.key(0), _global_observation, data, mesh="sample=2,data=2")
    assert dict(problem.data.mask.sharding.mesh.shape) == {"sample": 2, "data": 2}
    for settings, message in [
        ({"num_steps": -5}, "num_steps must be an integer >= 0, got -5"),
        ({"num_steps": 5, "checkpoint_every": 0}, "checkpoint_every must be an integer >= 1"),
    ]:
        with pytest.raises(ValueError, match=message):
            svi.fit(jax.random.key(1), problem, progress_bar=False, **settings)


def test_fit_refuses_a_checkpoint_of_another_problem_and_warns_past_the_steps(tmp_path):
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    problem = svi.build(jax.random.key(0), _global_observation, {"x": x, "y": 2 * x})
    svi.fit(jax.random.key(1), problem, 20, progress_bar=False, checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match="is at step 20, past the 10 steps asked"):
        result = svi.fit(
            jax.random.key(1), problem, 10, progress_bar=False, checkpoint_dir=tmp_path
        )
    assert int(result.state.step) == 20
    with pytest.raises(checkpoint.CheckpointError, match="holds a fit of another problem"):
        svi.fit(jax.random.key(2), problem, 30, progress_bar=False, checkpoint_dir=tmp_path)
    other = svi.build(jax.random.key(0), _global_observation, {"x": x[:8], "y": 2 * x[:8]})
    with pytest.raises(checkpoint.CheckpointError, match="'rows': 16.*'rows': 8"):
        svi.fit(jax.random.key(1), other, 30, progress_bar=False, checkpoint_dir=tmp_path)


def test_data_with_nan_is_named_with_its_rows():
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    y = 2 * x
    y[[3, 9]] = np.nan
    with pytest.raises(ValueError, match=r"data array 'y' holds NaN .* rows \[3, 9\] \(2 in all\)"):
        svi.build(jax.random.key(0), _global_observation, {"x": x, "y": y})


@pytest.mark.parametrize(
    ("value", "kind"),
    [(np.float32(2.0), r"float32 of shape \(\)"), (None, "None"), (["a"] * 16, "<U1 of shape")],
)
def test_data_that_are_not_row_arrays_are_named(value, kind):
    """A scalar or None among the data had failed with a bare TypeError or IndexError."""
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    with pytest.raises(ValueError, match=rf"data 'scale' is {kind}.*in model_kwargs"):
        svi.build(jax.random.key(0), _global_observation, {"x": x, "y": x, "scale": value})


def test_fit_names_the_step_of_a_non_finite_loss(demand):
    problem = _build(demand, optimizer=optax.sgd(float("nan")))  # step 1 makes params NaN
    with pytest.raises(FloatingPointError, match=r"nan at step 2 of 3; lower the learning rate"):
        svi.fit(jax.random.key(0), problem, 3, progress_bar=False)


# Local latents: groups (rows) with a latent offset each, four observations per group.
NUM_GROUPS = 300  # more than the 256 rows the guide's prototype is traced on


@pytest.fixture(scope="module")
def groups():
    return simulate_groups(NUM_GROUPS, 4)


def _build_grouped(groups, layout="none", **kwargs):
    return svi.build(
        jax.random.key(0),
        grouped_model,
        groups,
        model_kwargs={"num_rows": len(groups["x"])},
        data_plate="rows",
        mesh=make_mesh(layout),
        num_particles=S,
        **kwargs,
    )


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (ELBO(analytic_kl=False), Trace_ELBO(num_particles=S)),
        (RenyiELBO(0.0), NumpyroRenyi(alpha=0.0, num_particles=S)),
    ],
)
@pytest.mark.parametrize("layout", ["none", "sample=2,data=2", "data=8"])
def test_local_latents_match_numpyro(groups, layout, ours, theirs):
    """Full-size guide parameters of a latent per row, sliced to each shard's rows: the loss
    and gradient equal NumPyro's on the whole data (its plate not subsampled)."""
    problem = _build_grouped(groups, layout, objective=ours)
    assert problem.params["offset_auto_loc"].shape == (NUM_GROUPS, 1)
    params = _perturbed(problem.params)
    key = jax.random.key(7)
    (value, _), grads = jax.jit(jax.value_and_grad(problem.loss, has_aux=True))(
        params, key, problem.data
    )
    reference_guide = AutoNormal(grouped_model)  # its prototype sees every row: no subsample
    keys = sp_random.sample_keys(key, jnp.arange(S))
    theirs.vectorize_particles_fn = lambda fn, _keys: jax.vmap(fn)(keys)

    def reference(params):
        constrained = problem.constrain(params)
        kwargs = {"num_rows": NUM_GROUPS, **groups}
        return theirs.loss(key, constrained, grouped_model, reference_guide, **kwargs)

    numpyro.handlers.seed(reference_guide, 0)(num_rows=NUM_GROUPS, **groups)  # its prototype
    ref_value, ref_grads = jax.jit(jax.value_and_grad(reference))(params)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for name in params:
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("layout", ["sample=2,data=2", "data=8"])
def test_local_params_split_over_data_step_as_on_one_device(groups, layout):
    """The steps keep the local params and their AdamW moments split over ``data`` (the 300
    rows padded to 304 on data=8), and take the same steps as one device."""

    def run(layout):
        problem = _build_grouped(groups, layout, objective=ELBO(False))
        state = problem.init(_perturbed(problem.params))
        for _ in range(3):
            state, _ = problem.step(jax.random.key(5), state, problem.data)
        return problem, state

    reference, reference_state = run("none")
    problem, state = run(layout)
    data_shards = dict(state.params["offset_auto_loc"].sharding.mesh.shape)["data"]
    padded_rows = -(-NUM_GROUPS // data_shards) * data_shards
    for leaf in (state.params["offset_auto_loc"], state.opt_state[0].mu["offset_auto_loc"]):
        assert leaf.sharding.spec == PartitionSpec("data")
        assert leaf.addressable_shards[0].data.shape == (padded_rows // data_shards, 1)
    assert state.params["weight_auto_loc"].sharding.is_fully_replicated
    ours = problem.params_of(state.params)
    theirs = reference.params_of(reference_state.params)
    assert ours["offset_auto_loc"].shape == (NUM_GROUPS, 1)
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_fit_with_local_params_split_over_data_resumes(groups, tmp_path):
    """Mini-batch steps of local latents on data=8 (300 rows padded to 304), stopped at step 6
    and resumed from their checkpoint (local params and moments split over ``data``), end where
    the uninterrupted 9-step run ends."""
    problem = _build_grouped(groups, "data=8", objective=ELBO(False), batch_size=16)
    seed_key = jax.random.key(2)
    whole = svi.fit(seed_key, problem, 9, progress_bar=False)
    kwargs = {"progress_bar": False, "checkpoint_dir": tmp_path / "ckpt", "checkpoint_every": 3}
    svi.fit(seed_key, problem, 6, **kwargs)
    resumed = svi.fit(seed_key, problem, 9, **kwargs)
    np.testing.assert_allclose(resumed.losses, whole.losses, rtol=1e-5)
    assert resumed.params["offset_auto_loc"].shape == (NUM_GROUPS, 1)
    for name in whole.params:
        np.testing.assert_allclose(resumed.params[name], whole.params[name], rtol=1e-5)


def test_fit_steps_per_call_as_one_by_one(groups, tmp_path):
    """Steps taken four to a compiled call (local params split over ``data=8``, mini-batches,
    checkpoints every 6 steps: calls of 4 and single steps mixed) give the one-by-one run's
    losses and parameters, and keep the state's layout."""
    problem = _build_grouped(groups, "data=8", objective=ELBO(False), batch_size=16)
    seed_key = jax.random.key(2)
    one_by_one = svi.fit(seed_key, problem, 12, progress_bar=False, steps_per_call=1)
    kwargs = {"progress_bar": False, "checkpoint_dir": tmp_path / "ckpt", "checkpoint_every": 6}
    batched = svi.fit(seed_key, problem, 12, steps_per_call=4, **kwargs)
    assert checkpoint.latest_step(tmp_path / "ckpt") == 12
    np.testing.assert_allclose(batched.losses, one_by_one.losses, rtol=1e-6)
    for name in one_by_one.params:
        np.testing.assert_allclose(batched.params[name], one_by_one.params[name], rtol=1e-6)
    assert batched.state.params["offset_auto_loc"].sharding.spec == PartitionSpec("data")
    with pytest.raises(ValueError, match="steps_per_call"):
        svi.fit(seed_key, problem, 2, progress_bar=False, steps_per_call=0)


def test_local_latents_recover_offsets(groups):
    """A mini-batch fit recovers the weight and each row's offset; the posterior has every row."""
    problem = _build_grouped(
        groups,
        "data=2",
        objective=ELBO(False),
        batch_size=64,
        optimizer=svi.default_optimizer(0.05),
    )
    result = svi.fit(jax.random.key(1), problem, 1500, progress_bar=False)
    draws = svi_draws.posterior_draws(jax.random.key(0), problem, result.params, 200)
    assert draws["offset"].shape == (200, NUM_GROUPS, 1)
    # a deterministic site of the local latents, from every row's own data (300 > the 256 rows
    # the guide was set up on)
    mean_x = groups["x"].mean(axis=1, keepdims=True)
    expected = draws["offset"] + draws["weight"][:, None, None] * mean_x
    np.testing.assert_allclose(draws["row_mean"], expected, rtol=1e-5, atol=1e-5)
    assert abs(draws["weight"].mean() - TRUE_WEIGHT) < 0.1
    x, y = groups["x"], groups["y"]
    least_squares = (y - TRUE_WEIGHT * x).mean(axis=1)  # each group's offset given the weight
    estimate = draws["offset"].mean(axis=0)[:, 0]
    assert np.corrcoef(estimate, least_squares)[0, 1] > 0.95


@pytest.mark.parametrize("num_groups", [203, 301])  # below and above the guide's 256 rows
def test_local_latents_on_rows_that_do_not_split_evenly(num_groups):
    """Rows padded to a multiple of the data axis: the same loss as on one device, and
    posterior draws of every real row (both had failed on the padding)."""
    groups = simulate_groups(num_groups, 4)
    problems = {layout: _build_grouped(groups, layout) for layout in ("none", "data=8")}
    key = jax.random.key(3)
    losses = [float(p.loss(p.params, key, p.data)[0]) for p in problems.values()]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    for problem in problems.values():
        params = problem.constrain(problem.params)
        draws = svi_draws.posterior_draws(jax.random.key(0), problem, params, 5)
        assert draws["offset"].shape == (5, num_groups, 1)
        mean_x = groups["x"].mean(axis=1, keepdims=True)
        expected = draws["offset"] + draws["weight"][:, None, None] * mean_x
        np.testing.assert_allclose(draws["row_mean"], expected, rtol=1e-5, atol=1e-5)


def test_a_flattening_guide_is_refused_for_local_latents():
    # With up to 256 rows NumPyro's own check does not see them as local; on 2 devices the
    # step had failed with a broadcasting error.
    groups = simulate_groups(200, 4)
    with pytest.raises(ValueError, match=r"AutoDiagonalNormal flattens .* latents \['offset'\]"):
        _build_grouped(groups, "data=2", guide=AutoDiagonalNormal(grouped_model))


def test_local_params_are_taken_at_the_rows_before_the_particles_copies():
    """On data=8, a step on 8 rows holds an eighth of the local params and their AdamW moments
    per device (argument bytes: under the local params' size, data shard included; replicated,
    3.5x), and its temporaries are a quarter of that size: the shard's gradient, not a full-size
    copy and gradient per particle."""
    num_rows = 20_000
    problem = svi.build(
        jax.random.key(0),
        grouped_model,
        simulate_groups(num_rows, 4),
        model_kwargs={"num_rows": num_rows},
        data_plate="rows",
        mesh=make_mesh("data=8"),
        num_particles=4,
        batch_size=8,
    )
    local_bytes = sum(problem.params[f"offset_auto_{p}"].nbytes for p in ("loc", "scale"))
    state = problem.init(problem.params)
    compiled = problem.step.lower(jax.random.key(1), state, problem.data).compile()
    memory = compiled.memory_analysis()
    assert memory.argument_size_in_bytes < local_bytes
    assert memory.temp_size_in_bytes < 0.5 * local_bytes


def test_full_size_data_plate_must_match_the_rows(groups):
    message = "plate 'rows' is declared with size 299, but the data have 300 rows"
    with pytest.raises(ValueError, match=message):
        svi.build(
            jax.random.key(0),
            grouped_model,
            groups,
            model_kwargs={"num_rows": 299},
            data_plate="rows",
            mesh=make_mesh("none"),
        )


def _plate_sized_by_argument(x, y=None, num_rows=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("obs", num_rows):
        numpyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


@pytest.mark.parametrize(("rows", "layout", "given"), [(100, "data=4", 25), (300, "none", 256)])
def test_data_plate_sized_by_an_argument_is_named(rows, layout, given):
    """The model sees a device's rows (and is set up on at most 256): a plate sized from the
    data set's size without ``subsample_size`` had failed with a bare broadcasting error, at
    ``build`` or at the first step."""
    x = np.ones(rows, np.float32)
    message = rf"plate 'obs' has size {rows}, but the model was given {given} rows .*x.shape\[0\]"
    with pytest.raises(ValueError, match=message):
        problem = svi.build(
            jax.random.key(0),
            _plate_sized_by_argument,
            {"x": x, "y": x},
            model_kwargs={"num_rows": rows},
            mesh=layout,
        )
        svi.fit(jax.random.key(1), problem, 1, progress_bar=False)
