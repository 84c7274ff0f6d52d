"""Sharded SVI for unmodified NumPyro models.

The ELBO particles lie on the ``sample`` mesh axis and the observations on ``data``. One particle
(:func:`make_particle`) traces the guide with its key, replays the model against it and splits
the model's log-density in two: the observed sites inside the *data plate* give a per-example
log-likelihood ``[B_local]`` (summed over ``data`` shards by the engine), everything else (the
latent sites and observed sites outside the plate, minus the guide's log-density) is the
particle's global term. :func:`samplepar.engine.make_loss` then reduces the objective exactly,
so Trace_ELBO (``ELBO(analytic_kl=False)``) and ``RenyiELBO(alpha)`` equal NumPyro's in value
and gradient on every layout.

The model sees only its shard's rows. Its data plate either takes its size from the arrays
(``numpyro.plate("obs", x.shape[0])``: observed sites only), or is declared with the data set's
full size and the rows as its subsample (``numpyro.plate("rows", num_rows,
subsample_size=x.shape[0])``, NumPyro's mini-batch idiom): then latent sites may lie inside it
too (*local latents*, one per row). The engine gives such a plate the global indices of the
rows it holds and takes a guide's full-size parameters of local sites (AutoNormal's, for
instance) at them before the particles' copies (:func:`take_rows`); each row's
``log p(z_i) - log q(z_i)`` joins its log-likelihood, so that the sampling, scoring and
gradient of local latents are split over the data shards and, with mini-batches, cost the
batch's rows only. The steps keep such parameters, and the optimizer's state of them, laid
out like the padded rows and split over ``data``: a device holds and updates its own rows'
(``SVI.params_of`` gives them back at the data set's rows); the optimizer still updates all
of a shard's rows every step.
Parameters are kept unconstrained (as in ``numpyro.infer.SVI``); ``SVI.constrain`` maps them
back. Rows are padded to a multiple of the data axis by repeating the last row, masked out.
With ``batch_size`` each step draws its mini-batch on device: every data shard draws
``batch_size / data`` rows (with replacement) of its own rows from the step key, and the data
term is scaled by (padded rows) / ``batch_size``, an unbiased estimate of the full-data term.
Posterior draws of a fitted problem, and their ArviZ form, are in :mod:`samplepar.svi_draws`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from numpyro.distributions import biject_to, constraints
from numpyro.distributions.distribution import validation_enabled
from numpyro.handlers import replay, seed, substitute, trace
from numpyro.infer.autoguide import AutoContinuous, AutoNormal

from samplepar import checkpoint, engine, progress
from samplepar import random as sp_random
from samplepar.checks import check_count
from samplepar.dispatch import BoundedDispatch
from samplepar.mesh import DATA, Layout, global_batch, layout_of, make_mesh, replicated
from samplepar.objectives import ELBO, Objective
from samplepar.svi_draws import guide_draws, local_draws
from samplepar.svi_rows import (
    Rows,
    check_data,
    drop_padding,
    make_subsample,
    pad_rows,
    row_indices,
    row_param_specs,
)
from samplepar.svi_sites import (
    constrain,
    data_plate_scale,
    data_rows,
    local_param_axes,
    normal_draws,
    observed_data,
    per_example,
    plate_frame,
    site_log_prob,
    take_rows,
    varies_over,
)

PyTree = Any
# The default objective. The article's IW-ELBO (``RenyiELBO(0.0)``) barely moves a guide's scales:
# on tests/test_svi_posterior.py's regression its sds were up to 2.1x the exact ones, these 1.02x.
TRACE_ELBO = ELBO(analytic_kl=False)
# Steps per compiled call in :func:`fit`. ``python benchmarks/local_latents.py`` on 2 CPU
# devices, a call per step and then 10, run one after the other: a full-batch step 24.2 -> 26.8
# it/s, a step on 2 rows (the cost that does not shrink with the batch) 858 -> 1315 it/s.
STEPS_PER_CALL = 10


class SVI(NamedTuple):
    """A sharded SVI problem: its initial parameters, pure functions and resident data."""

    params: dict  # initial unconstrained parameters, by param site name
    init: Callable  # params -> TrainState (local params split over ``data``; ``params`` stay valid)
    step: Callable  # (seed_key, state, data) -> (state, StepInfo); jitted, donates state;
    # the step's key is ``step_key(seed_key, state.step)``, drawn on device; at most two calls
    # in flight (``dispatch.BoundedDispatch``), as for ``steps``
    steps: Callable  # (seed_key, state, data, num_steps) -> (state, StepInfo of [num_steps]):
    # ``num_steps`` (static) steps in one call, as ``step`` takes them one by one
    loss: Callable  # (params, rng_key, batch) -> (loss, {"log_likelihood", "kl"})
    subsample: Callable | None  # (rng_key, data) -> mini-batch; None for full-batch steps
    data: Rows  # every row, padded to N_padded
    constrain: Callable  # unconstrained params -> constrained params
    guide: Any  # set up on the first (up to 256) rows; with local latents, tools that run a
    # guide on every row (guides.psis_khat, numpyro's Predictive) need a fresh one, e.g.
    # AutoNormal(model), with the fitted params
    draw: Callable  # (rng_key, constrained params, num_draws) -> {site: [num_draws, ...]}
    params_of: Callable  # TrainState.params -> unconstrained params, laid out as ``params``


class FitResult(NamedTuple):
    state: engine.TrainState
    params: dict  # constrained, ready for ``guide.sample_posterior``
    losses: np.ndarray  # [num_steps] loss of every step taken


def default_optimizer(
    learning_rate: float = 0.01,
    decay_steps: int = 1000,
    decay_rate: float = 0.5,
    weight_decay: float = 1e-4,
    b2: float = 0.99,
) -> optax.GradientTransformation:
    """AdamW with an exponentially decaying step size (halved every 1000 steps by default).

    ``b2`` is 0.99, not optax's 0.999: with 0.999 the memory of large first gradients kept
    Adam's steps small for thousands of steps. Of 8 fits of tests/test_svi_posterior.py's
    regression (3,000 steps), one ended 34 sds from the exact mean; with 0.99 all came within 0.11.
    """
    schedule = optax.exponential_decay(learning_rate, decay_steps, decay_rate)
    return optax.adamw(schedule, b2=b2, weight_decay=weight_decay)


def init_params(
    rng_key, model, guide, model_kwargs: dict, data_plate: str, rows, num_rows: int
) -> tuple[dict, dict, dict]:
    """(unconstrained initial params, bijections to their constraints, row axes) of the params.

    Traces the guide and the model replayed against it, as ``numpyro.infer.SVI.init`` does,
    on the rows ``rows`` (global indices among ``num_rows``) of the data. Values are strongly
    typed, so the first step's outputs match its inputs (no recompile). The row axes are those
    of the local params (:func:`local_param_axes`).
    """
    model_key, guide_key = jax.random.split(rng_key)
    # the model alone first: an autoguide traces it out of reach of the handlers, and a data
    # plate of the wrong size would fail there with a bare broadcasting error
    trace(seed(data_rows(model, data_plate, rows, num_rows), model_key)).get_trace(**model_kwargs)
    guide_trace = trace(seed(data_rows(guide, data_plate, rows, num_rows), guide_key)).get_trace(
        **model_kwargs
    )
    guide_params = {n: s["value"] for n, s in guide_trace.items() if s["type"] == "param"}
    model_trace = trace(
        substitute(
            replay(seed(data_rows(model, data_plate, rows, num_rows), model_key), guide_trace),
            guide_params,
        )
    ).get_trace(**model_kwargs)
    data_plate_scale(model_trace, data_plate)  # the plate exists: named now, not at a step
    local = [
        name
        for name, site in model_trace.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and plate_frame(site, data_plate) is not None
    ]
    if local and isinstance(guide, AutoContinuous):
        raise ValueError(
            f"{type(guide).__name__} flattens every latent into one vector, so it cannot hold "
            f"the per-row latents {local} of plate {data_plate!r}; use AutoNormal or another "
            "mean-field guide"
        )
    params, transforms = {}, {}
    for site in list(model_trace.values()) + list(guide_trace.values()):
        if site["type"] == "param":
            if not isinstance(site["value"], (jax.Array, np.ndarray, float, int)):
                raise ValueError(
                    f"param site {site['name']!r} holds a {type(site['value']).__name__}, not "
                    "an array: pytree-valued params (numpyro.contrib.module's flax_module, "
                    "AutoIAFNormal, AutoBNAFNormal) are not supported; use array params and a "
                    "guide such as AutoNormal or AutoLowRankMultivariateNormal"
                )
            transform = biject_to(site["kwargs"].get("constraint", constraints.real))
            transforms[site["name"]] = transform
            value = jnp.asarray(transform.inv(site["value"]))
            params[site["name"]] = jnp.array(value, dtype=value.dtype)  # not weakly typed
    return params, transforms, local_param_axes(guide_trace, data_plate)


def make_particle(
    model,
    guide,
    transforms: dict,
    data_plate: str,
    model_kwargs: dict,
    num_rows: int,
    rows_argument: str | None = None,
):
    """A particle function ``(params, rng_key, rows: Rows) -> (per_row [B], global [])``.

    ``per_row`` is each row's log-likelihood plus, for local latents, ``log p - log q``;
    ``num_rows`` is the data set's row count. The local params come already taken at the rows
    (:func:`take_rows`, done by the engine before the particles' copies). The key is split into
    (model, guide) keys as NumPyro's ELBOs split a particle's key. With ``rows_argument``, a
    mini-batch's ``Rows.positions`` go to the model as that argument besides the shard's whole
    arrays.
    """

    # NumPyro checks distribution arguments under jax.ensure_compile_time_eval, where a
    # MultivariateNormal's check (a tril) cannot follow the device-varying parameters of a
    # sharded step ("pvary should be called under jax.shard_map"); traced values are never
    # refused by those checks anyway, so they are off while the particle is traced.
    @validation_enabled(False)
    def particle(params, rng_key, batch: Rows):
        mask, rows = batch.mask, batch.index
        kwargs = {**model_kwargs, **batch.arrays}
        if rows_argument is not None and batch.positions is not None:
            kwargs[rows_argument] = batch.positions
        model_key, guide_key = jax.random.split(rng_key)
        constrained = constrain(params, transforms)
        guide_trace = trace(
            substitute(
                normal_draws(
                    seed(
                        data_rows(guide, data_plate, rows, num_rows, params_taken=True), guide_key
                    ),
                    data_plate,
                    rows,
                    num_rows,
                ),
                data=constrained,
            )
        ).get_trace(**kwargs)
        model_trace = trace(
            substitute(
                replay(seed(data_rows(model, data_plate, rows, num_rows), model_key), guide_trace),
                data=constrained,
            )
        ).get_trace(**kwargs)
        scale, full_size = data_plate_scale(model_trace, data_plate)
        per_row = jnp.zeros(mask.shape[0])
        global_term = jnp.zeros(())
        for sign, tr in ((1.0, model_trace), (-1.0, guide_trace)):
            for site in tr.values():
                if site["type"] != "sample":
                    continue
                frame = plate_frame(site, data_plate)
                if frame is None:
                    if site["is_observed"] and varies_over(observed_data(site), DATA):
                        raise ValueError(
                            f"observed site {site['name']!r} holds the rows' data but lies "
                            f"outside the data plate {data_plate!r}: declare it inside "
                            f"numpyro.plate({data_plate!r}, ...), so that the devices' rows "
                            "are summed and a mini-batch is scaled to the data set (outside "
                            "it, its log-likelihood would be averaged over the devices)"
                        )
                    global_term = global_term + sign * jnp.sum(site_log_prob(site))
                elif site["is_observed"] or full_size:
                    per_row = per_row + sign * per_example(site, frame, mask.shape[0], scale)
                else:
                    raise ValueError(
                        f"latent site {site['name']!r} lies in the data plate {data_plate!r}, "
                        "which takes its size from the rows: for local latents declare it with "
                        f"the data set's, numpyro.plate({data_plate!r}, {num_rows}, "
                        "subsample_size=<rows given to the model>)"
                    )
        return jnp.where(mask, per_row, 0.0), global_term

    return particle


def build(
    rng_key,
    model,
    data: dict,
    *,
    guide=None,
    model_kwargs: dict | None = None,
    data_plate: str = "obs",
    mesh=None,
    objective: Objective = TRACE_ELBO,
    num_particles: int = 4,
    batch_size: int | None = None,
    optimizer: optax.GradientTransformation | None = None,
    rows_argument: str | None = None,
) -> SVI:
    """Sets up sharded SVI of ``model`` on ``data`` (arrays ``[N, ...]``) over ``mesh``.

    ``model(**model_kwargs, **data)`` must run; ``model_kwargs`` are replicated (static sizes,
    small arrays). ``guide`` defaults to ``AutoNormal(model)``; ``mesh`` (a Mesh or a layout
    such as ``"sample=2,data=4"``) to every device on ``data``; ``objective`` to NumPyro's
    Trace_ELBO; ``optimizer`` to :func:`default_optimizer`. ``rng_key`` draws the initial
    params. In a multi-process run each process passes its own consecutive slice of the rows.
    With ``rows_argument``, mini-batch steps give the model its shard's arrays whole and the
    drawn rows' positions in them as that keyword argument, for a model that reads its rows
    itself (without gathering the batch first; full-batch steps and draws do not pass it).
    """
    check_count("num_particles", num_particles)
    if batch_size is not None:
        check_count("batch_size", batch_size)
    model_kwargs = dict(model_kwargs or {})
    guide = AutoNormal(model) if guide is None else guide
    if mesh is None or isinstance(mesh, str):
        mesh = make_mesh(Layout(1, jax.device_count()) if mesh is None else mesh)
    optimizer = default_optimizer() if optimizer is None else optimizer
    check_data(data)
    arrays, mask = pad_rows(data, layout_of(mesh).data)
    rows, num_rows, num_rows_padded = row_indices(int(mask.sum()), len(mask), mesh)
    num_head = max(1, min(int(mask.sum()), 256))  # real rows: a plate's subsample fits it
    head = {k: a[:num_head] for k, a in arrays.items()}
    params, transforms, local_axes = init_params(
        rng_key,
        model,
        guide,
        {**model_kwargs, **head},
        data_plate,
        jnp.asarray(rows[:num_head]),
        num_rows,
    )
    particle = make_particle(
        model, guide, transforms, data_plate, model_kwargs, num_rows, rows_argument
    )
    device_data = global_batch(Rows(mask, rows, arrays), mesh)
    make_loss = functools.partial(
        engine.make_loss,
        particle,
        objective,
        mesh,
        num_particles,
        dataset_size=num_rows_padded,
        fan_out_flat=True,
    )
    # For the user: every param whole, the local ones taken at the rows' global indices.
    loss = jax.jit(make_loss(slice_params=lambda p, batch: take_rows(p, local_axes, batch.index)))
    # For the steps: the local params (and their optimizer state) laid out like the padded rows,
    # split over ``data``: a shard reads its own rows' slice, at a mini-batch's positions, and
    # no device holds, sums or updates the others'.
    specs = row_param_specs(params, local_axes)
    state_loss = make_loss(
        param_specs=specs,
        slice_params=lambda p, batch: (
            p if batch.positions is None else take_rows(p, local_axes, batch.positions)
        ),
    )
    state_params = jax.jit(
        lambda p, index: take_rows(p, local_axes, index),
        out_shardings={name: NamedSharding(mesh, spec) for name, spec in specs.items()},
    )
    params_of = jax.jit(
        lambda p, data: drop_padding(p, local_axes, data, num_rows),
        out_shardings=replicated(mesh),
    )
    shardings = engine.state_shardings(
        jax.eval_shape(state_params, params, device_data.index), optimizer, mesh, specs
    )
    subsample = None
    if batch_size is not None:
        subsample = jax.jit(make_subsample(mesh, batch_size, rows_argument is not None))

    def step_loss(params, rng_key, data):
        if subsample is not None:
            data_key, rng_key = jax.random.split(rng_key)
            data = subsample(data_key, data)
        return state_loss(params, rng_key, data)

    engine_step = engine.build_step(step_loss, optimizer, mesh, state_sharding=shardings)

    def step(seed_key, state, data):
        # The step key is drawn inside the program: an eager fold_in per step and its copy to
        # every device made a demand-small step on 2 CPU cores 12.2 ms instead of 11.7.
        return engine_step(sp_random.step_key(seed_key, state.step), state, data)

    def steps(seed_key, state, data, num_steps: int):
        return jax.lax.scan(lambda s, _: step(seed_key, s, data), state, length=num_steps)

    return SVI(
        params=params,
        init=lambda p: engine.init(
            state_params(p, device_data.index), optimizer, mesh, param_specs=specs
        ),
        step=BoundedDispatch(jax.jit(step, donate_argnums=(1,)), donated=1),
        steps=BoundedDispatch(
            jax.jit(
                steps,
                static_argnums=(3,),
                donate_argnums=(1,),
                out_shardings=(shardings, replicated(mesh)),
            ),
            donated=1,
        ),
        loss=loss,
        subsample=subsample,
        data=device_data,
        constrain=lambda p: constrain(p, transforms),
        guide=guide,
        draw=(
            local_draws(model, guide, model_kwargs, data_plate, device_data, num_rows)
            if local_axes
            else guide_draws(guide)
        ),
        params_of=lambda p: params_of(p, device_data),
    )


def fit(
    seed_key,
    svi: SVI,
    num_steps: int,
    *,
    progress_bar: bool = True,
    checkpoint_dir=None,
    checkpoint_every: int = 1000,
    steps_per_call: int = STEPS_PER_CALL,
) -> FitResult:
    """Runs ``num_steps`` steps in all; step ``t`` uses ``step_key(seed_key, t)``.

    Steps are taken ``steps_per_call`` at a time in one compiled loop (``SVI.steps``) wherever
    that many fit before the next checkpoint or the end, one by one otherwise: the same steps,
    without the host's dispatch between them (:data:`STEPS_PER_CALL`). With ``checkpoint_dir``
    the state and loss history are saved every ``checkpoint_every`` steps and at the end, and a
    run finds its latest checkpoint there and resumes from it, ending where an uninterrupted
    run ends. Raises FloatingPointError on a non-finite loss.
    """
    check_count("num_steps", num_steps, minimum=0)
    check_count("checkpoint_every", checkpoint_every)
    check_count("steps_per_call", steps_per_call)
    state = svi.init(svi.params)
    losses: list[float] = []
    problem = fit_identity(seed_key, svi)
    start = None if checkpoint_dir is None else checkpoint.latest_step(checkpoint_dir)
    if start is not None:
        meta = checkpoint.restore_meta(checkpoint_dir, start)
        if meta.get("problem", problem) != problem:  # older checkpoints hold none
            raise checkpoint.CheckpointError(
                f"{checkpoint_dir} holds a fit of another problem (stored {meta['problem']}, "
                f"now {problem}); use another checkpoint_dir, or delete it to start again"
            )
        state = checkpoint.restore(checkpoint_dir, start, state)
        losses = list(meta["losses"])
    first = int(state.step)
    if first > num_steps:
        warnings.warn(
            f"the checkpoint in {checkpoint_dir} is at step {first}, past the {num_steps} steps "
            "asked: its state is returned",
            stacklevel=2,
        )
    seed_key = jax.device_put(seed_key, state.step.sharding)  # replicated once, not per step
    bar = progress.bar(num_steps, first, "svi", enabled=progress_bar)
    smoothed = progress.Smoothed()
    pending = None  # the previous call's losses, read after the next call is dispatched

    def record(step_losses):
        nonlocal smoothed
        for value in np.atleast_1d(np.asarray(step_losses, np.float64)):
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"SVI loss is {value} at step {len(losses) + 1} of {num_steps}; lower the "
                    "learning rate, or check the data and the model's priors for extreme values"
                )
            losses.append(float(value))
            smoothed = smoothed.update(float(value))
        bar.update(np.size(step_losses))
        bar.set_postfix(loss=f"{smoothed.mean:.4g}", refresh=False)

    done = first
    while done < num_steps:
        until = num_steps
        if checkpoint_dir is not None:
            until = min(until, (done // checkpoint_every + 1) * checkpoint_every)
        if until - done >= steps_per_call > 1:
            state, info = svi.steps(seed_key, state, svi.data, steps_per_call)
            done += steps_per_call
        else:
            state, info = svi.step(seed_key, state, svi.data)  # key: step_key(seed_key, done)
            done += 1
        if pending is not None:
            record(pending)
        pending = info.loss
        if checkpoint_dir is not None and done == until:
            record(pending)
            pending = None
            checkpoint.save(checkpoint_dir, done, state, {"losses": losses, "problem": problem})
    if pending is not None:
        record(pending)
    bar.close()
    return FitResult(
        state, svi.constrain(svi.params_of(state.params)), np.asarray(losses, np.float32)
    )


def fit_identity(seed_key, svi: SVI) -> dict:
    """What a resumed fit must share with the checkpoint's: the seed, the row count and every
    param's shape (the same model, guide and data size; the layout may differ)."""
    return {
        "seed": np.asarray(jax.random.key_data(seed_key)).ravel().tolist(),
        "rows": int(jnp.sum(svi.data.mask)),
        "params": {name: list(np.shape(value)) for name, value in sorted(svi.params.items())},
    }
