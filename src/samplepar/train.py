"""The Bayesian-neural-network training loop: ``train(config, workdir)``.

One step draws ``samples`` weight samples spread over the ``sample`` mesh axis and a batch spread
over ``data``; the loop shows progress, evaluates the Bayesian model average each epoch, logs
metrics to ``metrics.jsonl``, checkpoints (state, data position, step) with orbax every epoch and
resumes from the newest checkpoint by itself. A run on any layout follows the same trajectory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

from samplepar import checkpoint, engine, mesh, objectives, preflight, progress
from samplepar import random as sp_random
from samplepar.bnn import bayesianize, get_model, model_likelihood
from samplepar.bnn.predictive import sample_outputs
from samplepar.bnn.registry import model_name
from samplepar.checks import check_count
from samplepar.data import default_augment, eval_batches, load_dataset, next_batch, process_rows
from samplepar.data.augment import MODES as AUGMENT_MODES
from samplepar.data.augment import batch_augmenter
from samplepar.data.loader import LoaderState
from samplepar.data.registry import dataset_name, dataset_options
from samplepar.metrics import ClassificationStats, RegressionStats

# Settings that may change between a run and its resumption.
RESUMABLE = ("layout", "epochs", "progress", "report")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A BNN training run. ``layout`` and ``epochs`` may change when a run is resumed.

    The learning rate decays by ``lr_decay`` per epoch (Adam), which does not depend on the
    number of epochs, so a run can be extended. Augmentation is opt-in (``augment`` per-sample,
    per-shard or shared applies the data set's suited transforms): on the 8x8 digits a one-pixel
    shift lowers LeNet's 30-epoch test accuracy from 0.976 to 0.969. ``report`` writes the plots
    and report.json of :mod:`samplepar.report` at the end (a few seconds of OOD evaluation).
    """

    model: str = "lenet"
    dataset: str = "digits"
    data_dir: str | None = None
    data_options: dict = dataclasses.field(default_factory=dict)
    samples: int = 16
    layout: str = "sample"
    batch_size: int = 128
    epochs: int = 30
    learning_rate: float = 1e-2
    lr_decay: float = 0.93
    objective: str = "elbo"
    alpha: float = 0.5
    init_scale: float = 1e-3
    prior_scale: float = 1.0
    augment: str = "none"
    augment_groups: int = 1
    samples_per_pass: int | None = 4
    eval_samples: int = 16
    eval_batch_size: int = 512
    seed: int = 0
    progress: bool = True
    report: bool = True

    def __post_init__(self):
        for name in ("model", "dataset", "layout", "objective", "augment"):
            _check_type(name, getattr(self, name), str, "a string")
        _check_type("data_dir", self.data_dir, str | None, "a string (a directory)")
        _check_type("data_options", self.data_options, dict, "a table of dataset options")
        for name in ("progress", "report"):
            _check_type(name, getattr(self, name), bool, "true or false")
        counts = ("samples", "batch_size", "epochs", "eval_samples", "eval_batch_size")
        for name in (*counts, "augment_groups"):
            check_count(f"setting {name}", getattr(self, name), minimum=1)
        if self.samples_per_pass is not None:
            check_count("setting samples_per_pass", self.samples_per_pass, minimum=1)
        check_count("setting seed", self.seed, minimum=0)
        for name in ("learning_rate", "init_scale", "prior_scale"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"setting {name} must be a positive number, got {value!r}")
        decay = self.lr_decay
        if not (_is_number(decay) and 0 < decay <= 1):
            raise ValueError(f"setting lr_decay (per epoch) must lie in (0, 1], got {decay!r}")
        _check_type("alpha", self.alpha, int | float, "a number")
        if self.augment not in ("none", *AUGMENT_MODES):
            raise ValueError(
                f"setting augment={self.augment!r} is unknown; choose none, "
                + ", ".join(AUGMENT_MODES)
            )
        objectives.get_objective(self.objective, self.alpha)
        model_likelihood(self.model)  # an unknown model, dataset or option is named at once
        object.__setattr__(self, "data_options", dataset_options(self.dataset, self.data_options))
        mesh.parse_layout(self.layout)

    def identity(self) -> dict:
        """The settings that define the run (a resumed run must match them), with the model's
        and the dataset's names as their registries spell them (``lenet`` is ``lenet5``)."""
        return canonical_identity(dataclasses.asdict(self))


def canonical_identity(settings: dict) -> dict:
    """``settings`` without the resumable ones, model and dataset names canonical; applied to
    stored configurations too, so that a run started as ``--model lenet`` resumes as ``lenet5``.
    """
    identity = {k: v for k, v in settings.items() if k not in RESUMABLE}
    if not identity.get("data_options"):  # runs from before the setting existed had none
        identity.pop("data_options", None)
    for key, canonical in (("model", model_name), ("dataset", dataset_name)):
        try:
            identity[key] = canonical(identity[key])
        except (KeyError, TypeError, ValueError, AttributeError):
            pass  # a stored setting this version does not know stays as written, and differs
    return identity


def demo_config(layout: str, epochs: int = 30) -> TrainConfig:
    """The demo run: Bayesian LeNet-5 on digits, 16 weight samples per step on ``layout``.

    Targets (checked by ``tests/test_demo.py``, marked slow): test accuracy at least 0.97 and
    ECE at most 0.03 after 30 epochs, the same on every layout.
    """
    return TrainConfig(model="lenet", dataset="digits", samples=16, layout=layout, epochs=epochs)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_type(name: str, value, kind, described: str) -> None:
    """Raises ValueError naming setting ``name`` unless ``value`` is a ``kind`` (a boolean is
    no number here, though Python counts it as an int)."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ValueError(f"setting {name} must be {described}, got {value!r}")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class TrainResult(NamedTuple):
    """The final state, what was built to train it, and the last evaluation's metrics."""

    state: engine.TrainState
    run: Run
    metrics: dict[str, Any]


class Run(NamedTuple):
    """Everything ``train`` builds before the first step."""

    dataset: Any
    model: Any
    mesh: Any
    step: Any
    evaluate: Any
    state: engine.TrainState
    steps_per_epoch: int
    seed_key: jax.Array  # jax.random.key(config.seed): steps' keys fold into it


def _augment_fn(config: TrainConfig):
    if config.augment == "none":
        return None
    settings = default_augment(
        config.dataset,
        mode=config.augment,
        groups=config.augment_groups,
        num_samples=config.samples,
    )
    return batch_augmenter(settings) if settings.enabled else None


def _make_evaluate(bayesian, mesh_, num_samples: int, likelihood: str, per_pass: int | None):
    """``evaluate(params, rng_key, batch) -> stats`` over the mixture of ``num_samples`` draws."""
    outputs = sample_outputs(bayesian, mesh_, num_samples, likelihood, per_pass)

    @jax.jit
    def evaluate(params, rng_key, batch):
        predictions = outputs(params, rng_key, batch["x"])
        if likelihood == "categorical":
            return ClassificationStats.from_predictions(
                predictions, batch["y"], batch["mask"], log_space=True
            )
        return RegressionStats.from_samples(predictions, batch["y"], batch["mask"])

    return evaluate


def build(config: TrainConfig) -> Run:
    """Data, model, mesh, compiled step and evaluation, and the initial state."""
    layout = mesh.parse_layout(config.layout)
    mesh.check_num_samples(config.samples, layout, "samples", other=config.eval_samples)
    mesh.check_num_samples(config.eval_samples, layout, "eval_samples", other=config.samples)
    mesh.check_batch_size(config.batch_size, layout)
    dataset = load_dataset(config.dataset, config.data_dir, **config.data_options)
    likelihood = model_likelihood(config.model)
    if (likelihood == "categorical") != (dataset.num_classes > 0):
        raise ValueError(
            f"model {config.model!r} is a {likelihood} model but dataset {config.dataset!r} is "
            f"{'a classification' if dataset.num_classes else 'a regression'} task"
        )
    num_outputs = dataset.num_classes or int(np.prod(dataset.y_train.shape[1:]))
    model = get_model(config.model, dataset.x_train.shape[1:], num_outputs)
    bayesian = bayesianize(
        model, likelihood, init_scale=config.init_scale, prior_scale=config.prior_scale
    )
    mesh_ = mesh.make_mesh(layout)
    seed_key = jax.random.key(config.seed)
    params = bayesian.init_params(jax.random.fold_in(seed_key, 0), dataset.x_train[:1])
    steps_per_epoch = -(-len(dataset.x_train) // config.batch_size)
    schedule = optax.exponential_decay(config.learning_rate, steps_per_epoch, config.lr_decay)
    optimizer = optax.adam(schedule)
    loss = engine.make_loss(
        engine.bayesian_particle(bayesian.family, bayesian.log_lik_fn),
        objectives.get_objective(config.objective, config.alpha),
        mesh_,
        config.samples,
        dataset_size=len(dataset.x_train),
        kl_fn=bayesian.family.kl,
        augment_fn=_augment_fn(config),
        samples_per_pass=config.samples_per_pass,
    )
    return Run(
        dataset=dataset,
        model=bayesian,
        mesh=mesh_,
        step=engine.build_step(
            loss, optimizer, mesh_, engine.weight_sample_compiler_options(mesh_)
        ),
        evaluate=_make_evaluate(
            bayesian, mesh_, config.eval_samples, likelihood, config.samples_per_pass
        ),
        state=engine.init(params, optimizer, mesh_),
        steps_per_epoch=steps_per_epoch,
        seed_key=seed_key,
    )


def evaluate_dataset(run: Run, params, config: TrainConfig, x, y) -> dict[str, Any]:
    """Exact metrics of the model average over ``x, y`` (padded, masked batches)."""
    key = jax.random.fold_in(jax.random.key(config.seed), 1)
    layout = mesh.layout_of(run.mesh)
    stats = previous = None
    for batch in eval_batches(x, y, config.eval_batch_size, multiple=layout.data):
        batch_stats = run.evaluate(
            params, key, mesh.global_batch(process_rows(batch, run.mesh), run.mesh)
        )
        jax.block_until_ready(previous)  # at most two batches in flight (samplepar.dispatch)
        previous = batch_stats
        stats = batch_stats if stats is None else stats.merge(batch_stats)
    return {k: np.asarray(v).tolist() for k, v in stats.compute().items()}, stats


def step_inputs(run: Run, config: TrainConfig, loader: LoaderState, step: int):
    """``(rng_key, global_batch, next_loader)`` of training step ``step`` from ``loader``."""
    arrays = (run.dataset.x_train, run.dataset.y_train)
    batch, next_loader = next_batch(arrays, loader, config.batch_size, config.seed)
    global_batch = mesh.global_batch(process_rows(batch, run.mesh), run.mesh)
    return sp_random.step_key(run.seed_key, step), global_batch, next_loader


def _write_jsonl(path: Path, record: dict) -> None:
    if jax.process_index() == 0:
        with path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def _drop_records_after(path: Path, step: int) -> None:
    """Drops the records of ``path`` past ``step``, and a torn last line.

    A run killed after logging an epoch but before checkpointing it logs that epoch again when
    resumed; without this the log would hold it twice.
    """
    if jax.process_index() != 0 or not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    if len(kept) != len(lines):
        temporary = path.with_suffix(".tmp")
        temporary.write_text("".join(line + "\n" for line in kept))
        os.replace(temporary, path)


def train(config: TrainConfig, workdir: str | Path) -> TrainResult:
    """Trains (or resumes) the run in ``workdir``; returns the final state and test metrics.

    The workdir is checked first (it must be writable); settings, data and model are checked
    before anything is written there.
    """
    workdir = preflight.check_workdir(workdir)
    run = build(config)
    preflight.check_free_space(workdir, preflight.checkpoint_bytes(run.state))
    ckpt_dir = workdir / "checkpoints"
    latest = checkpoint.latest_step(ckpt_dir)
    checkpoint.check_config(
        workdir, config.identity(), resumable=latest is not None, normalise=canonical_identity
    )
    state, loader, step, seconds_before = run.state, LoaderState(), 0, 0.0
    if latest is not None:
        state = checkpoint.restore(ckpt_dir, latest, run.state)
        meta = checkpoint.restore_meta(ckpt_dir, latest)
        loader, step = LoaderState(*meta["loader"]), int(meta["step"])
        seconds_before = float(meta.get("seconds", 0.0))
    total = config.epochs * run.steps_per_epoch
    n_train = len(run.dataset.x_train)
    metrics_path = workdir / "metrics.jsonl"
    _drop_records_after(metrics_path, step)
    title = f"train {config.model}/{config.dataset}"
    bar = progress.bar(total, step, title, config.progress and step < total)
    smoothed, epoch_losses, test, test_stats = progress.Smoothed(), [], {}, None
    started = epoch_started = time.perf_counter()
    pending = None
    if step > total:
        progress.status(
            f"{workdir} already holds {step / run.steps_per_epoch:g} epochs, more than the "
            f"{config.epochs} asked for: evaluating that state, not training"
        )
    while step < total:
        key, global_batch, next_loader = step_inputs(run, config, loader, step)
        new_state, info = run.step(key, state, global_batch)
        loss = float(info.loss) / n_train
        if not math.isfinite(loss):
            bar.close()
            kept = (
                f"the last good checkpoint is kept in {ckpt_dir} (a run with other settings "
                "needs another --workdir)"
                if checkpoint.latest_step(ckpt_dir) is not None
                else "no checkpoint was written yet"
            )
            raise TrainingDiverged(
                f"loss became {loss} at step {step + 1}; {kept}. Hint: lower learning_rate "
                f"(now {config.learning_rate}) or init_scale, or check the inputs for NaN"
            )
        state, loader, step = new_state, next_loader, step + 1
        smoothed = smoothed.update(loss)
        epoch_losses.append(loss)
        bar.update(1)
        bar.set_postfix(
            loss=f"{smoothed.mean:.4f}", test_acc=test.get("accuracy", "-"), refresh=False
        )
        if step % run.steps_per_epoch == 0 or step == total:
            train_seconds = time.perf_counter() - epoch_started
            metrics, test_stats = evaluate_dataset(
                run, state.params, config, run.dataset.x_test, run.dataset.y_test
            )
            test = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
            pending = {
                "epoch": step / run.steps_per_epoch,
                "step": step,
                "train_loss": float(np.mean(epoch_losses)),
                "seconds": seconds_before + time.perf_counter() - started,
                "steps_per_second": len(epoch_losses) / train_seconds,
                **{f"test_{k}": v for k, v in metrics.items()},
            }
            _write_jsonl(metrics_path, pending)
            epoch_losses = []
            meta = {"loader": list(loader), "step": step, "seconds": pending["seconds"]}
            checkpoint.save(ckpt_dir, step, state, meta)
            epoch_started = time.perf_counter()
    bar.close()
    if pending is None:  # resumed at the end: nothing trained, evaluate the stored state
        metrics, test_stats = evaluate_dataset(
            run, state.params, config, run.dataset.x_test, run.dataset.y_test
        )
        pending = {f"test_{k}": v for k, v in metrics.items()}
    if config.report:
        from samplepar import report  # matplotlib, pandas: only for runs that write a report

        report.report_run(run, state.params, config, workdir, test_stats)
    return TrainResult(state, run, pending)
