"""The demand workflow behind ``samplepar demand``: simulate a panel, fit it by sharded SVI.

The fit uses the fast (blocked panel) formulation of the price-elasticity model, the article's
Renyi objective with its particle count and, by default, the recommended guide (mean-field with
the product effect at the product's mean log price, :mod:`samplepar.compare`). Mini-batch fits
use the formulation whose product latents are local to the blocks (``local_model``), so that a
step samples, scores and differentiates the products of its batch's blocks only. It writes the
guide's posterior draws as ArviZ InferenceData (netCDF) and a summary of the product
elasticities; when the table was simulated (its truth file beside it), the summary also says how
well the truth is recovered: correlation of posterior medians, 90% interval coverage.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import jax
import numpy as np
import pandas as pd

from samplepar import (
    checkpoint,
    compare,
    guides,
    mcmc,
    mesh,
    objectives,
    preflight,
    svi,
    svi_draws,
)
from samplepar.checks import check_count
from samplepar.models import demand_data
from samplepar.models.demand import (
    BLOCK_INDEX,
    draws_by_product,
    fast_inputs,
    fast_model,
    local_inputs,
    local_model,
    slot_mean_log_price,
)
from samplepar.progress import status
from samplepar.svi_methods import RECOMMENDED, SVI_METHODS


def simulate_to_file(path, products: int, periods: int, categories: int, seed: int) -> dict:
    """Writes a simulated panel (Parquet or CSV, by the suffix of ``path``) with its true
    parameters beside it (:func:`samplepar.models.demand_data.save`)."""
    demand_data.check_table_path(path)  # before the simulation, which may take a while
    if min(products, periods, categories) < 1:
        raise ValueError("products, periods and categories must each be >= 1")
    table, truth = demand_data.simulate(seed, products, periods, categories)
    demand_data.save(path, table, truth)
    return {"rows": len(table), "output": str(path)}


def checkpoint_interval(steps: int) -> int:
    """Steps between a fit's checkpoints: a quarter of the run, at most 1000, rounded down to
    whole compiled calls of ``svi.STEPS_PER_CALL`` steps where the run is that long."""
    every = max(1, min(1000, steps // 4))
    return every - every % svi.STEPS_PER_CALL if every >= svi.STEPS_PER_CALL else every


def check_fit_settings(
    *,
    layout: str,
    particles: int,
    steps: int,
    alpha: float,
    batch_size: int | None,
    draws: int,
    guide: str,
) -> tuple[mesh.Layout, objectives.RenyiELBO]:
    """The fit's layout and objective, or ``ValueError`` naming the first bad setting.

    Run before anything is written, so that a refused fit leaves nothing behind.
    """
    if guide not in SVI_METHODS:
        raise ValueError(f"unknown guide {guide!r}; choose one of {', '.join(SVI_METHODS)}")
    counts = {"steps": steps, "particles": particles, "draws": draws}
    if batch_size is not None:
        counts["batch_size"] = batch_size
    for name, value in counts.items():
        check_count(name, value)
    if batch_size is not None and SVI_METHODS[guide][0] != "normal":
        raise ValueError(
            f"guide {guide!r} couples the products of different blocks; mini-batches "
            "(batch_size) need a mean-field guide: normal or normal-at-mean"
        )
    objective = objectives.RenyiELBO(alpha)
    layout_ = mesh.parse_layout(layout)
    mesh.check_num_samples(particles, layout_, "particles")
    if batch_size is not None:
        mesh.check_batch_size(batch_size, layout_)
    return layout_, objective


def fit_file(
    path,
    workdir,
    *,
    layout: str = "data",
    particles: int = 4,
    steps: int = 2000,
    alpha: float = 0.0,
    batch_size: int | None = None,
    seed: int = 0,
    draws: int = 500,
    guide: str = RECOMMENDED,
    progress: bool = True,
) -> dict:
    """Fits the demand model to the table at ``path``; results and checkpoints in ``workdir``.

    ``guide`` is one of :data:`samplepar.svi_methods.SVI_METHODS`. Settings and table are checked
    before the workdir is touched. A workdir holding checkpoints of other data or settings is
    refused rather than resumed; one holding more steps than ``steps`` gives that longer fit
    (the summary's ``steps`` are those of the returned state).
    """
    layout_, objective = check_fit_settings(
        layout=layout,
        particles=particles,
        steps=steps,
        alpha=alpha,
        batch_size=batch_size,
        draws=draws,
        guide=guide,
    )
    guide_name, at_mean = SVI_METHODS[guide]
    table, truth = demand_data.load(path)
    obs = demand_data.observations(table)
    workdir = preflight.check_workdir(workdir)
    fingerprint = hashlib.sha256(pd.util.hash_pandas_object(table, index=False).values).hexdigest()
    run_identity = {"data_sha256": fingerprint, "particles": particles, "alpha": alpha}
    run_identity |= {"batch_size": batch_size, "seed": seed, "guide": guide}
    done = checkpoint.latest_step(workdir / "checkpoints")
    checkpoint.check_config(workdir, run_identity, resumable=done is not None)
    if done is not None and done > steps:
        status(
            f"workdir {workdir} already holds a fit of {done} steps, more than the {steps} "
            "asked: that fit is reported (use another --workdir for a shorter one)"
        )
    mesh_ = mesh.make_mesh(layout_)
    blocks = demand_data.panel(obs, num_shards=mesh.layout_of(mesh_).data)
    key = jax.random.key(seed)
    if batch_size is None:
        data, kwargs = fast_inputs(obs, blocks)
        model, mean_log_price = fast_model, demand_data.mean_log_price(obs)
    else:
        data, kwargs = local_inputs(obs, blocks)
        model, mean_log_price = local_model, slot_mean_log_price
    if at_mean:
        model = mcmc.effect_at_mean(model, mean_log_price)
    status(
        f"{len(table)} rows ({len(obs.product_category)} products x {len(obs.encoding.periods)} "
        f"periods): setting up guide {guide!r} and compiling the step on layout {layout!r} "
        "(tens of seconds on a first run; the command line's compile cache keeps the programs)",
        progress,
    )
    problem = svi.build(
        jax.random.fold_in(key, 0),
        model,
        data,
        guide=guides.get_guide(guide_name, model),
        model_kwargs=kwargs,
        data_plate="rows",
        mesh=mesh_,
        objective=objective,
        num_particles=particles,
        batch_size=batch_size,
        rows_argument=None if batch_size is None else BLOCK_INDEX,
    )
    with warnings.catch_warnings():  # a checkpoint past ``steps``: the summary says so
        warnings.filterwarnings("ignore", "the checkpoint in .* past the", UserWarning)
        result = svi.fit(
            jax.random.fold_in(key, 1),
            problem,
            steps,
            progress_bar=progress,
            checkpoint_dir=workdir / "checkpoints",
            checkpoint_every=checkpoint_interval(steps),
        )
    posterior = svi_draws.posterior_draws(jax.random.fold_in(key, 2), problem, result.params, draws)
    if batch_size is not None:
        posterior = draws_by_product(posterior, blocks)
    temporary = workdir / "posterior.nc.tmp"
    svi_draws.to_inference_data(posterior, temporary)
    os.replace(temporary, workdir / "posterior.nc")
    elasticity = posterior.get("product_elasticity")
    summary = {
        "observations": len(table),
        "steps": int(result.state.step),
        "final_loss": float(result.losses[-1]),
        "posterior": str(workdir / "posterior.nc"),
    }
    if elasticity is not None:
        summary["elasticity_mean"] = float(np.mean(elasticity))
        summary["elasticity_posterior_sd_mean"] = float(np.mean(np.std(elasticity, axis=0)))
        if truth is not None and truth.product_elasticity.shape == elasticity.shape[1:]:
            summary["truth"] = recovery(elasticity, truth.product_elasticity)
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def recovery(draws: np.ndarray, truth: np.ndarray, prob: float = 0.9) -> dict:
    """How posterior draws ``[S, P]`` recover ``truth [P]``: median correlation, coverage."""
    lower, upper = compare.central_interval(draws, prob)
    median = np.median(draws, axis=0)
    return {
        "elasticity_median_corr": float(np.corrcoef(median, truth)[0, 1]),
        "elasticity_median_rmse": float(np.sqrt(np.mean((median - truth) ** 2))),
        f"coverage_{round(100 * prob)}": compare.coverage(lower, upper, truth),
    }
