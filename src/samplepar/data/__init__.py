"""Data sets, augmentation and batching for the Bayesian-neural-network front-end.

Every loader returns a :class:`Dataset` of numpy arrays; :func:`load_dataset` finds one by name.
Augmentation (:mod:`samplepar.data.augment`) runs in JAX and is keyed by (step, sample, example),
never by device; batching (:mod:`samplepar.data.loader`) is a pure, checkpointable iterator.
"""

from samplepar.data.augment import AugmentConfig, augment, augment_batch, batch_augmenter
from samplepar.data.base import DataError, Dataset, MissingDataError
from samplepar.data.cifar import cifar10
from samplepar.data.digits import digits
from samplepar.data.idx import fashion_mnist, read_idx
from samplepar.data.loader import LoaderState, eval_batches, next_batch, process_rows
from samplepar.data.mnist1d import mnist1d
from samplepar.data.registry import LOADERS, default_augment, load_dataset
from samplepar.data.series import csv_series

__all__ = [
    "LOADERS",
    "AugmentConfig",
    "DataError",
    "Dataset",
    "LoaderState",
    "MissingDataError",
    "augment",
    "augment_batch",
    "batch_augmenter",
    "cifar10",
    "csv_series",
    "default_augment",
    "digits",
    "eval_batches",
    "fashion_mnist",
    "load_dataset",
    "mnist1d",
    "next_batch",
    "process_rows",
    "read_idx",
]
