"""scikit-learn's 8x8 handwritten digits (ships with scikit-learn, no download).

The file scikit-learn ships is read directly: importing ``sklearn.datasets`` pulls in scipy and
pandas, about 2 s of every training process's start-up on 2 CPU cores, for a 1,797-row CSV.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from samplepar.data.base import Dataset

NUM_CLASSES = 10


def digits_file() -> Path:
    """The gzipped CSV of scikit-learn's digits: 64 pixel values (0..16), then the label."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("digits: scikit-learn, which ships the digits file, is missing")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices, each class split ``test_fraction`` to test; both sorted."""
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        test.append(rows[: int(round(test_fraction * rows.size))])
    test = np.sort(np.concatenate(test))
    return np.setdiff1d(np.arange(labels.size), test), test


def digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """1,797 digits as ``[N, 8, 8, 1]`` float32 in [0, 1], labels 0..9.

    The train/test split is stratified by class and fixed by ``seed``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits: test_fraction must lie in (0, 1), got {test_fraction}")
    table = np.loadtxt(digits_file(), delimiter=",", dtype=np.float32)
    images = (table[:, :-1] / 16.0).reshape(-1, 8, 8, 1)
    labels = table[:, -1].astype(np.int32)
    train, test = stratified_split(labels, test_fraction, seed)
    return Dataset(images[train], labels[train], images[test], labels[test], NUM_CLASSES, "digits")
