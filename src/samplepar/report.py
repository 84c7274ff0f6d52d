"""The training report: PNG plots and ``report.json`` in a run's workdir.

Classification: learning curves (train loss, test accuracy, NLL and ECE per epoch, from
``metrics.jsonl``), the reliability diagram of the test set, and histograms of the predictive
entropy on the test set and on each out-of-distribution set (see ``samplepar.ood``).
Regression: learning curves (train loss, CRPS, RMSE, coverage) and test forecasts with their
intervals against the truth. Only process 0 writes; every file is written to a temporary name
and renamed, so a killed run never leaves half a report.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from samplepar import ood, predict
from samplepar.metrics import LEVELS, ClassificationStats

CLASSIFICATION_CURVES = ("train_loss", "test_accuracy", "test_nll", "test_ece")
REGRESSION_CURVES = ("train_loss", "test_crps", "test_rmse", "test_coverage")
FORECASTS_SHOWN = 4


def _write_atomic(path: Path, data: bytes) -> Path:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return path


def _save(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return _write_atomic(path, buffer.getvalue())


def read_metrics(workdir: str | Path) -> list[dict]:
    """The per-epoch records of ``metrics.jsonl``; for an epoch logged twice (a run resumed
    after a kill) the later record wins."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number} is not JSON: {error}") from error
            records[record.get("epoch", number)] = record
    return [records[k] for k in sorted(records)]


def _learning_curves(records: list[dict], names: tuple[str, ...]) -> Figure:
    figure = Figure(figsize=(4 * len(names), 3.2))
    epochs = [r["epoch"] for r in records]
    for i, name in enumerate(names):
        axis = figure.add_subplot(1, len(names), i + 1)
        values = np.asarray([r.get(name, np.nan) for r in records], dtype=float)
        values = values.reshape(len(records), -1)
        for column in range(values.shape[1]):
            label = f"{LEVELS[column]:.0%}" if values.shape[1] == len(LEVELS) > 1 else None
            axis.plot(epochs, values[:, column], marker="o", label=label)
        if values.shape[1] > 1:
            axis.legend(title="interval")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_title(name.replace("_", " "))
        axis.grid(alpha=0.3)
    return figure


def _reliability(stats: ClassificationStats) -> Figure:
    diagram = {k: np.asarray(v) for k, v in stats.reliability().items()}
    ece = float(stats.compute()["ece"])
    edges = diagram["edges"]
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    figure = Figure(figsize=(4.5, 4.5))
    axis = figure.add_subplot()
    filled = diagram["count"] > 0
    axis.bar(centres[filled], diagram["accuracy"][filled], width[filled], edgecolor="black")
    axis.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    axis.plot(centres[filled], diagram["confidence"][filled], "r.", label="mean confidence")
    axis.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    axis.set_title(f"reliability (ECE {ece:.3f}, {int(diagram['count'].sum())} examples)")
    axis.legend(loc="upper left")
    return figure


def _entropy_histograms(entropies: dict[str, np.ndarray], num_classes: int | None) -> Figure:
    top = np.log(num_classes) if num_classes else max(float(np.max(v)) for v in entropies.values())
    figure = Figure(figsize=(6, 4))
    axis = figure.add_subplot()
    bins = np.linspace(0.0, max(top, 1e-6), 31)
    for name, values in entropies.items():
        axis.hist(values, bins=bins, alpha=0.5, density=True, label=f"{name} ({len(values)})")
    axis.set(xlabel="predictive entropy (nats)", ylabel="density")
    axis.set_title("predictive entropy in and out of distribution")
    axis.legend()
    return figure


def _forecasts(history, truth, mean, std, coverage: float) -> Figure:
    shown = min(FORECASTS_SHOWN, len(truth))
    figure = Figure(figsize=(4 * shown, 3.2))
    z = 1.6448536  # 90% central interval of a normal
    for i in range(shown):
        axis = figure.add_subplot(1, shown, i + 1)
        past = np.arange(-len(history[i]), 0)
        ahead = np.arange(len(truth[i]))
        axis.plot(past, history[i], "k-", label="history")
        axis.plot(ahead, truth[i], "k.", label="truth")
        axis.plot(ahead, mean[i], "b-", label="mean")
        axis.fill_between(ahead, mean[i] - z * std[i], mean[i] + z * std[i], alpha=0.3)
        axis.set_xlabel("step")
    figure.suptitle(f"test forecasts with 90% intervals (coverage {coverage:.2f})")
    figure.axes[0].legend()
    return figure


def write_report(
    workdir: str | Path,
    metrics: dict[str, Any],
    stats: ClassificationStats | None = None,
    entropies: dict[str, np.ndarray] | None = None,
    forecasts: dict[str, np.ndarray] | None = None,
) -> list[Path]:
    """Writes the plots and ``report.json`` (``metrics``) into ``workdir``; returns their paths.

    ``stats``: test-set ClassificationStats (reliability diagram); ``entropies``: per-example
    predictive entropies ``{set name: [N]}``; ``forecasts``: ``history [N, L]``, ``truth``,
    ``mean`` and ``std`` ``[N, H]`` of a regression run. Learning curves come from
    ``metrics.jsonl``. Returns ``[]`` on processes other than 0.
    """
    if jax.process_index() != 0:
        return []
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    records = read_metrics(workdir)
    regression = forecasts is not None
    written = []
    if records:
        curves = REGRESSION_CURVES if regression else CLASSIFICATION_CURVES
        written.append(_save(_learning_curves(records, curves), workdir / "learning_curves.png"))
    if stats is not None:
        written.append(_save(_reliability(stats), workdir / "reliability.png"))
    if entropies:
        figure = _entropy_histograms(entropies, metrics.get("num_classes"))
        written.append(_save(figure, workdir / "entropy_histograms.png"))
    if regression:
        coverage = float(np.atleast_1d(metrics.get("test_coverage", [np.nan]))[-1])
        figure = _forecasts(**forecasts, coverage=coverage)
        written.append(_save(figure, workdir / "forecasts.png"))
    record = {**metrics, "epochs_logged": len(records), "files": [p.name for p in written]}
    text = json.dumps(record, indent=2, sort_keys=True, default=float)
    written.append(_write_atomic(workdir / "report.json", text.encode()))
    return written


def report_run(
    run, params, config, workdir: str | Path, stats, ood_external: str | Path | None = None
) -> list[Path]:
    """Evaluates OOD detection (classification) or test forecasts (regression) of the trained
    ``params`` and writes the report; ``stats`` are the test set's statistics from
    ``train.evaluate_dataset``. ``ood_external``: optional ``.npy``/``.npz`` OOD images."""
    metrics = {f"test_{k}": np.asarray(v).tolist() for k, v in stats.compute().items()}
    metrics.update(model=config.model, dataset=config.dataset, eval_samples=config.eval_samples)
    x_test = run.dataset.x_test
    if not run.dataset.num_classes:
        summary = predict.predictive(run, params, config, x_test[:FORECASTS_SHOWN])
        forecasts = {
            "history": x_test[:FORECASTS_SHOWN].reshape(len(summary["mean"]), -1),
            "truth": run.dataset.y_test[:FORECASTS_SHOWN],
            "mean": summary["mean"],
            "std": summary["std"],
        }
        return write_report(workdir, metrics, forecasts=forecasts)
    metrics["num_classes"] = run.dataset.num_classes
    summary_in = predict.predictive(run, params, config, x_test)
    entropies = {"test": summary_in["entropy"]}
    for name, x_ood in ood.ood_sets(run.dataset, config.seed, external=ood_external).items():
        summary_out = predict.predictive(run, params, config, x_ood)
        entropies[name] = summary_out["entropy"]
        metrics[f"ood_{name}"] = ood.scores(summary_in, summary_out)
    return write_report(workdir, metrics, stats=stats, entropies=entropies)
