"""report: plots and report.json from synthetic statistics, and from a real (tiny) training run."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from samplepar import report, train
from samplepar.metrics import ClassificationStats

PNG = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG) and data.endswith(b"IEND\xaeB`\x82")


def _log(workdir, records):
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_classification_report(tmp_path):
    records = [
        {
            "epoch": e,
            "train_loss": 2.0 / e,
            "test_accuracy": 0.5 + 0.1 * e,
            "test_nll": 1.0 / e,
            "test_ece": 0.1 / e,
        }
        for e in (1, 2, 3)
    ]
    _log(tmp_path, records + [{**records[1], "test_accuracy": 0.99}])  # epoch 2 logged again
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=(4, 64))
    stats = ClassificationStats.from_predictions(
        jnp.asarray(probs), jnp.asarray(rng.integers(0, 10, 64))
    )
    entropies = {"test": rng.uniform(0, 1, 64), "noise": rng.uniform(1, 2, 32)}
    metrics = {"test_accuracy": 0.7, "num_classes": 10, "ood_noise": {"ood_auroc_entropy": 1.0}}
    written = report.write_report(tmp_path, metrics, stats=stats, entropies=entropies)
    names = [p.name for p in written]
    assert names == [
        "learning_curves.png",
        "reliability.png",
        "entropy_histograms.png",
        "report.json",
    ]
    assert all(_is_png(p) for p in written[:-1])
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["test_accuracy"] == 0.7 and saved["ood_noise"]["ood_auroc_entropy"] == 1.0
    assert saved["epochs_logged"] == 3 and saved["files"] == names[:-1]
    assert not list(tmp_path.glob(".*.tmp"))  # every temporary file was renamed
    assert [r["test_accuracy"] for r in report.read_metrics(tmp_path)] == [0.6, 0.99, 0.8]


def test_regression_report(tmp_path):
    _log(
        tmp_path,
        [
            {
                "epoch": 1,
                "train_loss": 1.0,
                "test_crps": 0.5,
                "test_rmse": 0.7,
                "test_coverage": [0.4, 0.85],
            }
        ],
    )
    rng = np.random.default_rng(0)
    forecasts = {
        "history": rng.normal(size=(3, 12)),
        "truth": rng.normal(size=(3, 4)),
        "mean": np.zeros((3, 4)),
        "std": np.ones((3, 4)),
    }
    written = report.write_report(tmp_path, {"test_coverage": [0.4, 0.85]}, forecasts=forecasts)
    assert [p.name for p in written] == ["learning_curves.png", "forecasts.png", "report.json"]
    assert all(_is_png(p) for p in written[:-1])


def test_bad_metrics_log(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, \n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        report.read_metrics(tmp_path)


def test_training_writes_report(tmp_path):
    """Two epochs of the MLP on digits (about 90% test accuracy): the report is complete, and
    uniform-noise images have a higher predictive entropy than test digits, AUROC >= 0.8
    (0.87 measured; an untrained model scores about 0.5)."""
    config = train.TrainConfig(
        model="mlp",
        samples=4,
        eval_samples=4,
        layout="none",
        batch_size=64,
        epochs=2,
        learning_rate=1e-2,
        progress=False,
    )
    result = train.train(config, tmp_path)
    for name in ("learning_curves.png", "reliability.png", "entropy_histograms.png"):
        assert _is_png(tmp_path / name)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["test_accuracy"] == pytest.approx(result.metrics["test_accuracy"], abs=1e-6)
    assert saved["epochs_logged"] == 2
    assert saved["test_accuracy"] > 0.8
    assert saved["ood_noise"]["ood_auroc_entropy"] >= 0.8
    assert saved["ood_noise"]["entropy_out"] > saved["ood_noise"]["entropy_in"]
    assert set(saved) >= {"ood_rotated", "ood_inverted", "test_ece", "test_nll"}
