"""Predictions of a trained BNN: per-example mixture uncertainty, and ``predict_main`` over files.

``predictive(run, params, config, x)`` evaluates ``config.eval_samples`` posterior weight samples
spread over the ``sample`` mesh axis and the inputs over ``data`` (padded, masked batches, any
layout) and returns, per input, the Bayesian model average and its uncertainty.
``predict_main`` loads a run from its workdir (``config.json`` and the newest checkpoint), reads
inputs from ``.npy``, ``.npz``, ``.csv`` or Parquet and writes one row per input to CSV or Parquet.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from samplepar import checkpoint, mesh, train
from samplepar.bnn.predictive import sample_outputs
from samplepar.data import eval_batches, process_rows
from samplepar.metrics import uncertainty

INPUT_SUFFIXES = (".npy", ".npz", ".csv", ".parquet")
OUTPUT_SUFFIXES = (".csv", ".parquet")


def _summary(outputs: jax.Array, likelihood: str) -> dict[str, jax.Array]:
    """Per-example summary of ``outputs [S, B, ...]``."""
    if likelihood == "categorical":
        u = uncertainty(outputs, log_space=True)
        return {
            "probabilities": jnp.exp(u["log_mean"]),
            "entropy": u["entropy"],
            "mutual_information": u["mutual_information"],
        }
    return {"mean": jnp.mean(outputs, axis=0), "std": jnp.std(outputs, axis=0)}


@functools.lru_cache(maxsize=8)
def _summariser(bayesian, mesh_, num_samples: int, likelihood: str, per_pass: int | None):
    """Jitted ``(params, rng_key, x) -> summary``, replicated on every device; one per run."""
    outputs = sample_outputs(bayesian, mesh_, num_samples, likelihood, per_pass)
    return jax.jit(
        lambda params, key, x: _summary(outputs(params, key, x), likelihood),
        out_shardings=mesh.replicated(mesh_),
    )


def predictive(run, params, config, x: np.ndarray) -> dict[str, np.ndarray]:
    """The model average over ``config.eval_samples`` draws for every row of ``x [N, ...]``.

    Classification: ``probabilities [N, C]``, ``entropy [N]`` and ``mutual_information [N]``
    (nats). Regression: ``mean [N, H]`` and ``std [N, H]`` of the predictive draws. The draws
    use the same key as ``train.evaluate_dataset``; batches of ``config.eval_batch_size``.
    """
    if len(x) == 0:
        raise ValueError(f"no inputs to predict: x has shape {np.shape(x)}")
    likelihood = "categorical" if run.dataset.num_classes else "gaussian"
    summarise = _summariser(
        run.model, run.mesh, config.eval_samples, likelihood, config.samples_per_pass
    )
    params = jax.device_put(params, mesh.replicated(run.mesh))
    key = jax.random.fold_in(jax.random.key(config.seed), 1)
    multiple = mesh.layout_of(run.mesh).data
    parts = []
    dummy = np.zeros(len(x), np.int32)
    for batch in eval_batches(np.asarray(x, np.float32), dummy, config.eval_batch_size, multiple):
        rows = int(batch["mask"].sum())
        x_global = mesh.global_batch(process_rows({"x": batch["x"]}, run.mesh), run.mesh)["x"]
        out = summarise(params, key, x_global)
        parts.append({k: np.asarray(v)[:rows] for k, v in out.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _as_inputs(array: np.ndarray, input_shape: tuple[int, ...], source: str) -> np.ndarray:
    """``array`` as float32 ``[N, *input_shape]``; flat rows ``[N, prod(shape)]`` are accepted."""
    array = np.asarray(array)
    size = int(np.prod(input_shape))
    if array.ndim >= 1 and array.shape[1:] in (tuple(input_shape), (size,)):
        if array.shape[0] == 0:
            raise ValueError(f"{source}: holds no input rows (shape {array.shape})")
        if not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"{source}: inputs must be numeric, got dtype {array.dtype}")
        array = array.reshape((array.shape[0],) + tuple(input_shape)).astype(np.float32)
        bad = np.flatnonzero(~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1))
        if bad.size:
            raise ValueError(
                f"{source}: row {int(bad[0])} holds NaN or infinite values ({bad.size} such rows)"
            )
        return array
    raise ValueError(
        f"{source}: inputs have shape {array.shape} but the model expects "
        f"(N, {', '.join(map(str, input_shape))}) or flattened (N, {size})"
    )


def feature_columns(input_shape: tuple[int, ...]) -> list[str]:
    """Table columns of one input, ``x0 .. x{D-1}``, in row-major order of ``input_shape``."""
    return [f"x{i}" for i in range(int(np.prod(input_shape)))]


def _from_table(frame: pd.DataFrame, input_shape, source: str) -> np.ndarray:
    columns = feature_columns(input_shape)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source}: lacks column(s) {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''} ({len(missing)} missing); the model reads "
            f"{len(columns)} columns {columns[0]}..{columns[-1]} (input shape {tuple(input_shape)})"
        )
    for column in columns:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if bad.size:
            raise ValueError(
                f"{source}: column {column} row {int(bad[0])} is not a number "
                f"({frame[column].iloc[bad[0]]!r}; {bad.size} bad rows in that column)"
            )
    return frame[columns].to_numpy(np.float64)


def read_inputs(path: str | Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """Inputs ``[N, *input_shape]`` float32 from ``.npy``, ``.npz`` (key ``x``, or its only
    array), ``.csv`` or ``.parquet`` (columns ``x0..x{D-1}``, see ``feature_columns``).

    Never unpickles. Raises ValueError naming the file and the problem.
    """
    path = Path(path)
    source, suffix = str(path), path.suffix.lower()
    if suffix not in INPUT_SUFFIXES:
        raise ValueError(f"{source}: unknown input format; use one of {', '.join(INPUT_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{source}: no such input file")
    if suffix == ".npy":
        array = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.keys())
            if "x" not in names and len(names) != 1:
                raise ValueError(
                    f"{source}: holds arrays {names}; name the inputs 'x' or store only one"
                )
            array = archive["x" if "x" in names else names[0]]
    else:
        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        array = _from_table(frame, input_shape, source)
    return _as_inputs(array, tuple(input_shape), source)


def prediction_table(summary: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per input: ``predicted_class``, ``prob_<c>``, ``entropy``, ``mutual_information``
    (classification) or ``mean_<h>``, ``std_<h>`` (regression)."""
    if "probabilities" in summary:
        probs = summary["probabilities"]
        columns = {"predicted_class": np.argmax(probs, axis=1)}
        columns.update({f"prob_{c}": probs[:, c] for c in range(probs.shape[1])})
        columns["entropy"] = summary["entropy"]
        columns["mutual_information"] = summary["mutual_information"]
    else:
        mean = summary["mean"].reshape(len(summary["mean"]), -1)
        std = summary["std"].reshape(len(summary["std"]), -1)
        columns = {f"mean_{h}": mean[:, h] for h in range(mean.shape[1])}
        columns.update({f"std_{h}": std[:, h] for h in range(std.shape[1])})
    return pd.DataFrame(columns)


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Writes ``frame`` to ``.csv`` or ``.parquet`` atomically (temporary file, then rename)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"{path}: output must end in {' or '.join(OUTPUT_SUFFIXES)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        if suffix == ".csv":
            frame.to_csv(temporary, index=False)
        else:
            frame.to_parquet(temporary, index=False)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def default_layout(num_samples: int, num_devices: int) -> str:
    """The layout for ``num_samples`` draws on ``num_devices``: the largest sample axis that
    divides both, the remaining devices on ``data`` (prediction pads inputs to any data size)."""
    sample = math.gcd(num_samples, num_devices)
    return f"sample={sample},data={num_devices // sample}"


def _build_config(config, layout: mesh.Layout):
    """``config`` for ``train.build``, which also checks the training samples, batch and
    augmentation groups; prediction uses none of them, so they become the draws, the data axis
    size and no augmentation."""
    return dataclasses.replace(
        config, samples=config.eval_samples, batch_size=layout.data, augment="none"
    )


def load_run(workdir: str | Path, layout: str | None = None, samples: int | None = None):
    """``(run, params, config)`` of the trained run in ``workdir`` from its ``config.json`` and
    newest checkpoint, on mesh ``layout`` (default: ``default_layout``), evaluating ``samples``
    posterior draws (default: the run's ``eval_samples``). Only those draws must split over the
    layout's sample axis; the training sample count and batch size are not checked."""
    if samples is not None and not (type(samples) is int and samples >= 1):  # bool excluded
        raise ValueError(f"--samples must be an integer >= 1, got {samples!r}")
    workdir = Path(workdir)
    config_path = workdir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{workdir}: no config.json; is this a training workdir?")
    stored = json.loads(config_path.read_text())
    settings = {f.name for f in dataclasses.fields(train.TrainConfig)}
    unknown = sorted(set(stored) - settings)
    if unknown:
        raise ValueError(f"{config_path}: unknown setting(s) {unknown}")
    config = train.TrainConfig(**stored, progress=False)
    if samples is not None:
        config = dataclasses.replace(config, eval_samples=samples)
    if layout is None:
        layout = default_layout(config.eval_samples, jax.device_count())
    config = dataclasses.replace(config, layout=layout)
    parsed = mesh.parse_layout(layout)
    named = "--samples" if samples is not None else "the run's eval_samples (see --samples)"
    mesh.check_num_samples(config.eval_samples, parsed, named)
    ckpt_dir = workdir / "checkpoints"
    step = checkpoint.latest_step(ckpt_dir)
    if step is None:
        raise FileNotFoundError(f"{ckpt_dir}: no checkpoint; train the run first")
    run = train.build(_build_config(config, parsed))
    return run, checkpoint.restore(ckpt_dir, step, run.state).params, config


def predict_file(
    workdir, inputs, output, layout: str | None = None, samples: int | None = None
) -> dict[str, Any]:
    """Predicts every row of ``inputs`` with the run in ``workdir``; writes ``output``.

    Returns ``{"rows", "output", "samples"}``. The output is never the input file, and is
    written only after every check passed and every row was predicted.
    """
    inputs, output = Path(inputs), Path(output)
    if output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"{output}: output must end in {' or '.join(OUTPUT_SUFFIXES)}")
    if output.resolve() == inputs.resolve():
        raise ValueError(f"{output}: the output would overwrite the input; choose another path")
    run, params, config = load_run(workdir, layout, samples)
    x = read_inputs(inputs, run.dataset.x_train.shape[1:])
    frame = prediction_table(predictive(run, params, config, x))
    if jax.process_index() == 0:
        write_table(frame, output)
    return {"rows": len(frame), "output": str(output), "samples": config.eval_samples}


def predict_main(args) -> dict[str, Any]:
    """CLI entry: ``args`` with ``workdir``, ``inputs``, ``output``, ``layout``, ``samples``."""
    return predict_file(args.workdir, args.inputs, args.output, args.layout, args.samples)
