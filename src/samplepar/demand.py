"""The demand workflow behind ``samplepar demand``: simulate a panel, fit it by sharded SVI.

The fit uses the fast (dense panel) formulation of the price-elasticity model, the article's
Renyi objective with its particle count, and writes the guide's posterior draws as ArviZ
InferenceData (netCDF) with a summary of the product elasticities.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import numpy as np
import pandas as pd

from samplepar import checkpoint, mesh, objectives, preflight, svi
from samplepar.models import demand_data
from samplepar.models.demand import fast_inputs, fast_model


def simulate_to_file(path, products: int, periods: int, categories: int, seed: int) -> dict:
    """Writes a simulated panel (Parquet or CSV) with its true parameters beside it."""
    if min(products, periods, categories) < 1:
        raise ValueError("products, periods and categories must each be >= 1")
    table, truth = demand_data.simulate(seed, products, periods, categories)
    demand_data.save(path, table, truth)
    return {"rows": len(table), "output": str(path)}


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
    progress: bool = True,
) -> dict:
    """Fits the demand model to the table at ``path``; results and checkpoints in ``workdir``.

    A workdir holding a fit of other data or settings is refused rather than resumed.
    """
    table = demand_data.read_table(path)
    obs = demand_data.observations(table)
    workdir = preflight.check_workdir(workdir)
    fingerprint = hashlib.sha256(pd.util.hash_pandas_object(table, index=False).values).hexdigest()
    run_identity = {"data_sha256": fingerprint, "particles": particles, "alpha": alpha}
    run_identity |= {"batch_size": batch_size, "seed": seed}
    checkpoint.check_config(workdir, run_identity)
    mesh_ = mesh.make_mesh(layout)
    data, kwargs = fast_inputs(obs, demand_data.panel(obs, num_shards=mesh.layout_of(mesh_).data))
    key = jax.random.key(seed)
    problem = svi.build(
        jax.random.fold_in(key, 0),
        fast_model,
        data,
        model_kwargs=kwargs,
        data_plate="rows",
        mesh=mesh_,
        objective=objectives.RenyiELBO(alpha),
        num_particles=particles,
        batch_size=batch_size,
    )
    result = svi.fit(
        jax.random.fold_in(key, 1),
        problem,
        steps,
        progress_bar=progress,
        checkpoint_dir=workdir / "checkpoints",
        checkpoint_every=max(1, min(1000, steps // 4)),
    )
    posterior = svi.posterior_draws(jax.random.fold_in(key, 2), problem, result.params, draws)
    temporary = workdir / "posterior.nc.tmp"
    svi.to_inference_data(posterior, temporary)
    os.replace(temporary, workdir / "posterior.nc")
    elasticity = posterior.get("product_elasticity")
    summary = {
        "observations": len(table),
        "steps": steps,
        "final_loss": float(result.losses[-1]),
        "posterior": str(workdir / "posterior.nc"),
    }
    if elasticity is not None:
        summary["elasticity_mean"] = float(np.mean(elasticity))
        summary["elasticity_posterior_sd_mean"] = float(np.mean(np.std(elasticity, axis=0)))
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
