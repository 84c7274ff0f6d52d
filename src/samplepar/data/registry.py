"""``load_dataset(name, data_dir=None, **options)``: every data set by name."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from pathlib import Path

from samplepar.data.augment import AugmentConfig
from samplepar.data.base import Dataset
from samplepar.data.cifar import cifar10
from samplepar.data.digits import digits
from samplepar.data.idx import fashion_mnist
from samplepar.data.mnist1d import mnist1d
from samplepar.data.series import csv_series

# name -> (loader, whether it reads files from data_dir)
LOADERS: dict[str, tuple[Callable[..., Dataset], bool]] = {
    "digits": (digits, False),
    "mnist1d": (mnist1d, False),
    "fashion_mnist": (fashion_mnist, True),
    "mnist": (functools.partial(fashion_mnist, name="mnist"), True),
    "cifar10": (cifar10, True),
    "series": (csv_series, False),
}
DEFAULT = "digits"


def dataset_name(name: str, table: dict = LOADERS) -> str:
    """``name`` normalised (``Fashion-MNIST`` -> ``fashion_mnist``), checked against ``table``."""
    key = name.strip().lower().replace("-", "_")
    if key not in table:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(table)}")
    return key


def _options(loader: Callable) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(loader).parameters
    return {n: p for n, p in parameters.items() if n not in ("data_dir", "name")}


def dataset_options(name: str, options: dict) -> dict:
    """``options`` of dataset ``name`` checked against its loader's parameters and typed like
    their defaults: text from the command line (``history=24``) becomes the int or float the
    loader takes; options without a numeric default (paths, column names) stay text.
    Raises ValueError naming an unknown option or a value of the wrong type."""
    key = dataset_name(name, LOADERS)
    accepted = _options(LOADERS[key][0])
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"dataset {key!r}: unknown option(s) {unknown}; it accepts {list(accepted)}"
        )
    return {
        option: _typed(key, option, value, accepted[option].default)
        for option, value in options.items()
    }


def _typed(key: str, option: str, value, default):
    kind = type(default) if type(default) in (int, float) else str
    if isinstance(value, str) and kind is not str:
        try:
            value = kind(value)
        except ValueError:
            pass
    number = isinstance(value, int | float) and not isinstance(value, bool)
    fits = {
        int: number and float(value).is_integer(),
        float: number,
        str: isinstance(value, str | os.PathLike),
    }
    if not fits[kind]:
        described = {int: "an integer", float: "a number", str: "text (a name or a path)"}
        raise ValueError(
            f"dataset {key!r}: option {option} must be {described[kind]}, got {value!r}"
        )
    return kind(value) if kind is not str else value


def load_dataset(name: str = DEFAULT, data_dir: str | Path | None = None, **options) -> Dataset:
    """The data set ``name`` (see ``LOADERS``) built with ``options`` (:func:`dataset_options`).

    File-based sets read ``data_dir``; ``series`` reads ``options["path"]``, relative to
    ``data_dir`` when that is given.
    """
    key = dataset_name(name, LOADERS)
    loader, reads_dir = LOADERS[key]
    options = dataset_options(key, options)
    if reads_dir:
        if data_dir is None:
            raise ValueError(f"dataset {key!r} reads local files: pass data_dir (--data-dir)")
        return loader(data_dir, **options)
    if key == "series":
        if "path" not in options:
            raise ValueError(
                "dataset 'series' needs the option path=<CSV file> (command line: "
                "--data-option path=FILE; value_column=NAME names the column of values)"
            )
        if data_dir is not None:
            options["path"] = Path(data_dir) / options["path"]
    return loader(**options)


# name -> AugmentConfig settings suited to it (no flips for digits: a mirrored 2 is no 2)
AUGMENTATIONS: dict[str, dict] = {
    "digits": {"max_shift": 1},
    "mnist1d": {"max_shift": 2, "scale_std": 0.1, "jitter_std": 0.05},
    "fashion_mnist": {"max_shift": 2, "flip": True},
    "mnist": {"max_shift": 2},
    "cifar10": {"max_shift": 4, "flip": True},
    "series": {"scale_std": 0.05, "jitter_std": 0.05},
}


def default_augment(name: str = DEFAULT, **settings) -> AugmentConfig:
    """The augmentation suited to data set ``name``, ``settings`` (mode, groups, ...) on top."""
    return AugmentConfig(**{**AUGMENTATIONS[dataset_name(name, AUGMENTATIONS)], **settings})
