"""The ``Dataset`` every loader returns, and the errors bad data files raise."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np


class DataError(ValueError):
    """A data file or table that cannot be read as the data set it claims to be."""


class MissingDataError(DataError, FileNotFoundError):
    """A data directory or file that is not there."""


class Dataset(NamedTuple):
    """A train/test pair of numpy arrays.

    Classification: ``x`` float32 ``[N, H, W, C]`` images in [0, 1] or ``[N, L, C]`` series,
    ``y`` int32 ``[N]`` labels in ``[0, num_classes)``.
    Regression (``num_classes == 0``): ``x`` float32 ``[N, history, 1]``, ``y`` float32
    ``[N, horizon]``.
    ``meta`` holds what is needed to interpret the arrays (e.g. the standardisation of a series).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    meta: Mapping[str, Any] = MappingProxyType({})


def require_files(directory, names: list[list[str]], what: str) -> list[Path]:
    """The path of one existing file per entry of ``names`` (alternatives, first found wins).

    Raises ``MissingDataError`` naming the directory and every expected file.
    """
    directory = Path(directory)
    expected = "; ".join(" or ".join(alternatives) for alternatives in names)
    if not directory.is_dir():
        raise MissingDataError(
            f"{what}: directory {str(directory)!r} does not exist; it must hold {expected}"
        )
    found, missing = [], []
    for alternatives in names:
        hits = [directory / n for n in alternatives if (directory / n).is_file()]
        found.append(hits[0] if hits else None)
        if not hits:
            missing.append(" or ".join(alternatives))
    if missing:
        raise MissingDataError(
            f"{what}: directory {str(directory)!r} lacks {', '.join(missing)}; "
            f"it must hold {expected}"
        )
    return found


def check_labels(labels: np.ndarray, num_classes: int, source: str) -> np.ndarray:
    """Labels as int32, after checking that they lie in ``[0, num_classes)``."""
    labels = np.asarray(labels)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(
            f"{source}: label {int(labels[bad[0]])} at record {int(bad[0])} is outside "
            f"0..{num_classes - 1} ({bad.size} bad labels)"
        )
    return labels.astype(np.int32)
