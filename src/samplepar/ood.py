"""Out-of-distribution sets made in code, and how well uncertainty tells them apart.

For an image data set (``[N, H, W, C]`` in [0, 1]) the sets are ``noise`` (uniform pixels),
``rotated`` (the test images turned 90 degrees counter-clockwise) and ``inverted`` (``1 - x``, ink
and paper swapped); for other inputs (e.g. ``[N, L, C]`` series) ``noise`` is Gaussian with the
training set's per-feature mean and standard deviation. ``external`` images (e.g. another set
for CIFAR-10) come from a ``.npy`` / ``.npz`` file of the test images' shape. Regression runs
have no OOD sets. The score of an input is the predictive entropy, or the mutual information, of
the sample mixture; AUROC 1 means every OOD input scores above every test input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samplepar import predict
from samplepar.metrics import ood_auroc


def _is_image(x: np.ndarray) -> bool:
    return x.ndim == 4 and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def ood_sets(
    dataset, seed: int = 0, size: int | None = None, external: str | Path | None = None
) -> dict[str, np.ndarray]:
    """OOD inputs ``{name: [N, ...]}`` shaped like ``dataset.x_test`` (``size`` rows, default
    as many as the test set); ``{}`` for a regression data set."""
    if not dataset.num_classes:
        return {}
    x = dataset.x_test
    size = len(x) if size is None else int(size)
    rng = np.random.default_rng(seed)
    shape = (size,) + x.shape[1:]
    sets = {}
    if _is_image(x):
        sets["noise"] = rng.uniform(0.0, 1.0, shape).astype(np.float32)
        base = x[rng.choice(len(x), size, replace=size > len(x))]
        if x.shape[1] == x.shape[2]:
            sets["rotated"] = np.ascontiguousarray(np.rot90(base, k=1, axes=(1, 2)))
        sets["inverted"] = (1.0 - base).astype(np.float32)
    else:
        mean, std = dataset.x_train.mean(axis=0), dataset.x_train.std(axis=0)
        sets["noise"] = (mean + std * rng.standard_normal(shape)).astype(np.float32)
    if external is not None:
        sets["external"] = predict.read_inputs(external, x.shape[1:])[:size]
    return sets


def scores(summary_in: dict, summary_out: dict) -> dict[str, float]:
    """AUROC of entropy and of mutual information, and their means in and out, from two
    ``predict.predictive`` results."""
    result = {}
    for name in ("entropy", "mutual_information"):
        result[f"ood_auroc_{name}"] = ood_auroc(summary_in[name], summary_out[name])
        result[f"{name}_in"] = float(np.mean(summary_in[name]))
        result[f"{name}_out"] = float(np.mean(summary_out[name]))
    return result


def ood_metrics(run, params, config, x_ood: np.ndarray, x_in: np.ndarray | None = None):
    """Scores (see ``scores``) of ``x_ood [N, ...]`` against ``x_in`` (default: the test set),
    both evaluated over ``config.eval_samples`` posterior samples on ``run.mesh``."""
    x_in = run.dataset.x_test if x_in is None else x_in
    return scores(
        predict.predictive(run, params, config, x_in),
        predict.predictive(run, params, config, x_ood),
    )
