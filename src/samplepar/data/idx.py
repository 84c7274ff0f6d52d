"""Fashion-MNIST (and MNIST) from the standard IDX files in a local directory.

An IDX file is a big-endian header ``0x00 0x00 <type> <ndim>``, ``ndim`` int32 sizes, then the
raw values; images are type 0x08 (unsigned byte) with 3 dims, labels with 1. Files may be
gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from samplepar.data.base import DataError, Dataset, check_labels, require_files

UBYTE = 0x08
SPLITS = {"train": "train", "test": "t10k"}
KINDS = {"images": 3, "labels": 1}


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                return f.read()
        except (OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable gzip file ({err})") from err
    return path.read_bytes()


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """The uint8 array stored in the IDX file ``path``, checked to have ``ndim`` dimensions."""
    path = Path(path)
    raw = _read_bytes(path)
    expected_magic = (UBYTE << 8) | ndim
    if len(raw) < 4:
        raise DataError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise DataError(
            f"{path}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header: expected {header} bytes, got {len(raw)}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(
            f"{path}: {'truncated' if len(raw) < expected else 'too long'}: shape {shape} "
            f"needs {expected} bytes, the file has {len(raw)}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _file_names(split: str, kind: str) -> list[str]:
    dims = KINDS[kind]
    base = f"{SPLITS[split]}-{kind}-idx{dims}-ubyte"
    return [base, base + ".gz"]


def _load_split(paths: list[Path], image_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = paths
    images = read_idx(images_path, KINDS["images"])
    if images.shape[1:] != image_shape:
        raise DataError(
            f"{images_path}: images of shape {images.shape[1:]}, expected {image_shape}"
        )
    labels = read_idx(labels_path, KINDS["labels"])
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images "
            f"in {images_path.name}"
        )
    x = (images.astype(np.float32) / 255.0)[..., None]
    return x, check_labels(labels, 10, str(labels_path))


def fashion_mnist(data_dir: str | Path, name: str = "fashion_mnist") -> Dataset:
    """28x28 grey images ``[N, 28, 28, 1]`` in [0, 1], labels 0..9, from IDX files in ``data_dir``.

    Expects ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte``, each optionally ``.gz``. MNIST uses the same files.
    """
    names = [_file_names(split, kind) for split in SPLITS for kind in KINDS]
    paths = require_files(data_dir, names, name)
    x_train, y_train = _load_split(paths[0:2], (28, 28))
    x_test, y_test = _load_split(paths[2:4], (28, 28))
    return Dataset(x_train, y_train, x_test, y_test, 10, name)
