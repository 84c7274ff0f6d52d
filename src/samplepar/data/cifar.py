"""CIFAR-10 from its binary version (``cifar-10-batches-bin``), never the pickle version.

Each file is a sequence of 3,073-byte records: one label byte, then 1,024 red, 1,024 green and
1,024 blue bytes of a 32x32 image in row-major order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from samplepar.data.base import DataError, Dataset, MissingDataError, check_labels, require_files

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILES = ["test_batch.bin"]
SUBDIR = "cifar-10-batches-bin"


def read_records(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``[N, 32, 32, 3]`` float32 in [0, 1] and labels ``[N]`` int32 from one batch file."""
    path = Path(path)
    raw = path.read_bytes()
    whole, extra = divmod(len(raw), RECORD)
    if extra or whole == 0:
        raise DataError(
            f"{path}: {len(raw)} bytes is not a whole number of {RECORD}-byte records "
            f"(expected {max(whole, 1) * RECORD} bytes for {max(whole, 1)} records); "
            "the file is truncated or is not CIFAR-10 binary"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(whole, RECORD)
    labels = check_labels(records[:, 0], 10, str(path))
    images = records[:, 1:].reshape(whole, 3, 32, 32).transpose(0, 2, 3, 1)
    return images.astype(np.float32) / 255.0, labels


def _resolve(data_dir: Path) -> Path:
    """``data_dir`` or its ``cifar-10-batches-bin`` subdirectory; rejects the pickle version."""
    if (data_dir / SUBDIR).is_dir() and not (data_dir / TEST_FILES[0]).is_file():
        data_dir = data_dir / SUBDIR
    if (data_dir / "data_batch_1").is_file() and not (data_dir / TRAIN_FILES[0]).is_file():
        raise MissingDataError(
            f"cifar10: {str(data_dir)!r} holds the Python pickle version of CIFAR-10, which "
            "samplepar never reads; download the binary version (cifar-10-binary.tar.gz) "
            f"holding {', '.join(TRAIN_FILES + TEST_FILES)}"
        )
    return data_dir


def _concat(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    parts = [read_records(p) for p in paths]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def cifar10(data_dir: str | Path) -> Dataset:
    """32x32 colour images ``[N, 32, 32, 3]`` in [0, 1], labels 0..9, from the binary files."""
    data_dir = _resolve(Path(data_dir))
    paths = require_files(data_dir, [[n] for n in TRAIN_FILES + TEST_FILES], "cifar10")
    x_train, y_train = _concat(paths[: len(TRAIN_FILES)])
    x_test, y_test = _concat(paths[len(TRAIN_FILES) :])
    return Dataset(x_train, y_train, x_test, y_test, 10, "cifar10")
