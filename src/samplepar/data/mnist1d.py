"""A procedurally generated 1-D digit set in the style of MNIST-1D.

Ten hand-made 12-point templates, one per digit, are stretched, scaled, shifted and sheared on a
canvas of ``length`` samples, then covered with smooth and white noise. Everything comes from one
seed, so the set is the same on every machine and needs no download. Linear models do poorly on it
and convolutional models well, which makes it a small but non-trivial benchmark.
"""

from __future__ import annotations

import numpy as np

from samplepar.data.base import Dataset

TEMPLATES = np.array(
    [
        [0.0, 0.6, 1.0, 0.6, 0.0, -0.6, -1.0, -0.6, 0.0, 0.6, 1.0, 0.6],
        [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0, 0.0],
        [1.0, 0.5, 0.0, -0.5, -1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0, 1.0],
        [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        [-1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0],
        [1.0, 1.0, 1.0, 0.5, 0.0, -0.5, -1.0, -0.5, 0.0, 0.5, 1.0, 0.0],
        [-1.0, -0.8, -0.6, -0.4, -0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0],
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0],
        [0.0, 1.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0, 0.0, 1.0, 0.0, -1.0],
        [0.0, 0.0, 1.0, 0.0, 0.0, -1.0, -1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
    ],
    dtype=np.float64,
)  # [10 digits, 12 control points]


def _render(rng: np.random.Generator, labels: np.ndarray, length: int) -> np.ndarray:
    """Random transformed templates ``[N, length]`` for ``labels [N]``."""
    n = labels.shape[0]
    width = 0.6 * length * rng.uniform(0.75, 1.25, n)  # template span in samples
    shift = rng.integers(-length // 8, length // 8 + 1, n)
    amplitude = rng.uniform(0.7, 1.3, n)
    shear = rng.normal(0.0, 0.5, n)
    t = np.arange(length) - (length - 1) / 2.0
    u = (t[None, :] - shift[:, None]) / width[:, None]  # template coordinate, [-0.5, 0.5] inside
    grid = np.linspace(-0.5, 0.5, TEMPLATES.shape[1])
    out = np.zeros((n, length))
    for digit in range(TEMPLATES.shape[0]):
        rows = labels == digit
        out[rows] = np.interp(u[rows], grid, TEMPLATES[digit], left=0.0, right=0.0)
    out = amplitude[:, None] * out + shear[:, None] * t[None, :] / length
    from scipy.ndimage import gaussian_filter1d  # 0.5 s to import: only for this set

    smooth = gaussian_filter1d(rng.normal(0.0, 1.0, (n, length)), sigma=2.0, axis=1)
    smooth /= smooth.std()
    return out + 0.25 * smooth + 0.1 * rng.normal(0.0, 1.0, (n, length))


def mnist1d(
    num_train: int = 4000, num_test: int = 1000, length: int = 40, seed: int = 0
) -> Dataset:
    """1-D digits, balanced per split: ``x`` float32 ``[N, length, 1]``, ``y`` int32 ``[N]``."""
    if num_train < 1 or num_test < 1:
        raise ValueError(
            f"mnist1d: num_train and num_test must be >= 1, got {num_train}, {num_test}"
        )
    if length < 12:
        raise ValueError(f"mnist1d: length must be >= 12 (the template size), got {length}")
    rng = np.random.default_rng(seed)
    labels = np.concatenate([rng.permutation(np.arange(n) % 10) for n in (num_train, num_test)])
    labels = labels.astype(np.int32)
    x = _render(rng, labels, length).astype(np.float32)[..., None]
    return Dataset(
        x[:num_train], labels[:num_train], x[num_train:], labels[num_train:], 10, "mnist1d"
    )
