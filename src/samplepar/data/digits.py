"""scikit-learn's 8x8 handwritten digits (ships with scikit-learn, no download)."""

from __future__ import annotations

import numpy as np

from samplepar.data.base import Dataset


def digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """1,797 digits as ``[N, 8, 8, 1]`` float32 in [0, 1], labels 0..9.

    The train/test split is stratified by class and fixed by ``seed``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"digits: test_fraction must lie in (0, 1), got {test_fraction}")
    # scikit-learn pulls in scipy and pandas (2 s of start-up): imported only for this set
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[..., None]
    labels = bunch.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_fraction, stratify=labels, random_state=seed
    )
    return Dataset(x_train, y_train, x_test, y_test, 10, "digits")
