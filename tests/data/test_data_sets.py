"""Data set loaders: shapes, ranges, determinism, and clear errors on bad files."""

import gzip

import numpy as np
import pytest

from samplepar.data import DataError, MissingDataError, default_augment, load_dataset
from samplepar.data.cifar import RECORD
from samplepar.data.idx import read_idx
from samplepar.data.registry import dataset_options


def test_digits_default_is_a_fixed_stratified_split():
    a, b = load_dataset(), load_dataset("digits")
    assert a.name == "digits" and a.num_classes == 10
    assert a.x_train.shape[1:] == (8, 8, 1) and a.x_train.dtype == np.float32
    assert len(a.x_train) + len(a.x_test) == 1797
    assert 0.0 <= a.x_train.min() and a.x_train.max() == 1.0
    np.testing.assert_array_equal(a.y_test, b.y_test)
    train_share = np.bincount(a.y_train) / len(a.y_train)
    test_share = np.bincount(a.y_test) / len(a.y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)
    other = load_dataset("digits", seed=1)
    assert not np.array_equal(other.y_test, a.y_test)


def test_mnist1d_is_deterministic_balanced_and_learnable_but_not_linear():
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    d = load_dataset("mnist1d", num_train=1000, num_test=500)
    assert d.x_train.shape == (1000, 40, 1) and d.x_train.dtype == np.float32
    np.testing.assert_array_equal(np.bincount(d.y_train), np.full(10, 100))
    again = load_dataset("mnist1d", num_train=1000, num_test=500)
    np.testing.assert_array_equal(d.x_test, again.x_test)
    x, xt = d.x_train[..., 0], d.x_test[..., 0]
    knn = KNeighborsClassifier(5).fit(x, d.y_train).score(xt, d.y_test)
    linear = LogisticRegression(max_iter=500).fit(x, d.y_train).score(xt, d.y_test)
    assert knn > 0.5  # far above chance (0.1): the digit shapes survive the transforms
    assert linear < 0.8  # but a linear model cannot solve it


# --- IDX (Fashion-MNIST) -------------------------------------------------------------------


def _idx(values: np.ndarray, magic_ndim: int | None = None) -> bytes:
    ndim = values.ndim if magic_ndim is None else magic_ndim
    header = bytes([0, 0, 0x08, ndim]) + b"".join(d.to_bytes(4, "big") for d in values.shape)
    return header + values.astype(np.uint8).tobytes()


def _write_fashion(directory, n_train=6, n_test=4, side=28, compress=False):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    for name, values in arrays.items():
        data = _idx(values)
        if compress:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data))
        else:
            (directory / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_fashion_mnist_reads_idx_files(tmp_path, compress):
    arrays = _write_fashion(tmp_path, compress=compress)
    d = load_dataset("fashion_mnist", data_dir=tmp_path)
    assert d.x_train.shape == (6, 28, 28, 1) and d.x_test.shape == (4, 28, 28, 1)
    np.testing.assert_allclose(d.x_train[..., 0] * 255, arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(d.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_fashion_mnist_missing_directory_and_files_are_named(tmp_path):
    with pytest.raises(MissingDataError, match=r"nowhere.*does not exist.*t10k-labels-idx1"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "nowhere")
    _write_fashion(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(MissingDataError, match=r"lacks t10k-images-idx3-ubyte or .*\.gz"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


def test_idx_label_count_and_range_are_checked(tmp_path):
    _write_fashion(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(5)))
    with pytest.raises(DataError, match=r"5 labels for 6 images in train-images-idx3-ubyte"):
        load_dataset("fashion_mnist", data_dir=tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(np.array([0, 1, 12, 0, 0, 0])))
    with pytest.raises(DataError, match=r"label 12 at record 2 is outside 0..9"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


def test_idx_wrong_magic_truncation_and_shape(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(_idx(np.zeros((2, 28, 28)), magic_ndim=1))
    with pytest.raises(DataError, match=r"wrong magic number 0x00000801, expected 0x00000803"):
        read_idx(path, 3)
    path.write_bytes(_idx(np.zeros((2, 28, 28)))[:-5])
    with pytest.raises(DataError, match=rf"{path.name}: truncated.*needs 1584 bytes.* has 1579"):
        read_idx(path, 3)
    _write_fashion(tmp_path, side=27)
    with pytest.raises(DataError, match=r"images of shape \(27, 27\), expected \(28, 28\)"):
        load_dataset("fashion_mnist", data_dir=tmp_path)


# --- CIFAR-10 binary -----------------------------------------------------------------------


def _write_cifar(directory, records=2):
    rng = np.random.default_rng(1)
    files = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    content = {}
    for name in files:
        labels = rng.integers(0, 10, records, dtype=np.uint8)
        pixels = rng.integers(0, 256, (records, 3, 32, 32), dtype=np.uint8)
        raw = np.concatenate([labels[:, None], pixels.reshape(records, -1)], axis=1)
        (directory / name).write_bytes(raw.tobytes())
        content[name] = labels, pixels
    return content


def test_cifar10_reads_binary_records_in_nhwc(tmp_path):
    content = _write_cifar(tmp_path)
    d = load_dataset("cifar10", data_dir=tmp_path)
    assert d.x_train.shape == (10, 32, 32, 3) and d.x_test.shape == (2, 32, 32, 3)
    labels, pixels = content["data_batch_2.bin"]
    np.testing.assert_array_equal(d.y_train[2:4], labels)
    np.testing.assert_allclose(d.x_train[2:4] * 255, pixels.transpose(0, 2, 3, 1), atol=1e-4)
    assert d.x_train[2, 5, 7, 1] * 255 == pytest.approx(pixels[0, 1, 5, 7], abs=1e-4)


def test_cifar10_errors_name_the_problem(tmp_path):
    with pytest.raises(MissingDataError, match=r"does not exist.*data_batch_1\.bin.*test_batch"):
        load_dataset("cifar10", data_dir=tmp_path / "missing")
    _write_cifar(tmp_path)
    path = tmp_path / "data_batch_3.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=rf"data_batch_3\.bin: {2 * RECORD - 10} bytes.*{RECORD}"):
        load_dataset("cifar10", data_dir=tmp_path)
    pickled = tmp_path / "py"
    pickled.mkdir()
    (pickled / "data_batch_1").write_bytes(b"\x80\x04")
    with pytest.raises(MissingDataError, match="pickle version"):
        load_dataset("cifar10", data_dir=pickled)


# --- CSV time series -----------------------------------------------------------------------


def _write_csv(path, values, times=None):
    lines = ["time,value"] if times is not None else ["value"]
    for i, v in enumerate(values):
        lines.append(f"{times[i]},{v}" if times is not None else f"{v}")
    path.write_text("\n".join(lines) + "\n")


def test_series_windows_split_chronologically_and_standardise_from_train(tmp_path):
    values = np.arange(20, dtype=float) ** 1.5
    order = np.random.default_rng(0).permutation(20)  # rows shuffled, times restore the order
    times = [f"2024-01-{d + 1:02d}" for d in range(20)]
    _write_csv(tmp_path / "s.csv", values[order], [times[i] for i in order])
    d = load_dataset(
        "series", data_dir=tmp_path, path="s.csv", time_column="time", history=4, horizon=2
    )
    mean, std = values[:16].mean(), values[:16].std()
    assert d.num_classes == 0 and d.meta["mean"] == pytest.approx(mean)
    assert d.x_train.shape == (11, 4, 1) and d.y_train.shape == (11, 2)
    assert d.x_test.shape == (3, 4, 1)
    z = (values - mean) / std
    np.testing.assert_allclose(d.x_train[0, :, 0], z[0:4], rtol=1e-5)
    np.testing.assert_allclose(d.y_train[-1], z[14:16], rtol=1e-5)  # last train target: row 15
    np.testing.assert_allclose(d.x_test[0, :, 0], z[12:16], rtol=1e-5)
    np.testing.assert_allclose(d.y_test[0], z[16:18], rtol=1e-5)  # first test target: row 16
    np.testing.assert_allclose(d.y_test[-1], z[18:20], rtol=1e-5)


def test_series_errors_name_column_row_and_window(tmp_path):
    path = tmp_path / "s.csv"
    _write_csv(path, [1.0, 2.0, "n/a", 4.0] + [5.0] * 20)
    with pytest.raises(DataError, match=r"column 'value' row 2 \(line 4\) holds 'n/a'"):
        load_dataset("series", path=path, value_column="value")
    with pytest.raises(DataError, match=r"no column 'price'; columns are \['value'\]"):
        load_dataset("series", path=path, value_column="price")
    _write_csv(path, np.arange(10.0))
    with pytest.raises(DataError, match=r"10 rows are too few for windows of 24 \+ 1"):
        load_dataset("series", path=path)
    _write_csv(path, np.arange(30.0), times=[1, 2, 3] + [3] + list(range(5, 31)))
    with pytest.raises(DataError, match=r"column 'time' row 3 \(line 5\) repeats the time"):
        load_dataset("series", path=path, time_column="time", history=3)
    _write_csv(path, np.arange(30.0), times=["2024-01-01", "soon"] + ["2024-02-01"] * 28)
    with pytest.raises(DataError, match=r"row 1 \(line 3\) holds 'soon', neither a number nor"):
        load_dataset("series", path=path, time_column="time", history=3)


def test_series_numeric_times_order_rows_numerically(tmp_path):
    path = tmp_path / "s.csv"
    times = [9, 10, 1, 2, 3, 4, 5, 6, 7, 8]  # as text, "10" < "9"
    _write_csv(path, [float(t) for t in times], times=times)
    d = load_dataset("series", path=path, time_column="time", history=2, test_fraction=0.3)
    restored = d.x_train[0, :, 0] * d.meta["std"] + d.meta["mean"]
    np.testing.assert_allclose(restored, [1.0, 2.0], rtol=1e-5)


def test_registry_errors_list_what_is_known():
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; known datasets: digits, mn"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['sed'\].*'seed'"):
        load_dataset("digits", sed=1)
    with pytest.raises(ValueError, match="reads local files: pass data_dir"):
        load_dataset("cifar10")


def test_dataset_options_are_typed_like_the_loader_defaults():
    # Command-line options arrive as text; numbers become the loader's types, names stay text.
    options = {"path": "s.csv", "value_column": "1", "history": "24", "test_fraction": "0.25"}
    typed = dataset_options("series", options)
    assert typed == {"path": "s.csv", "value_column": "1", "history": 24, "test_fraction": 0.25}
    assert type(typed["history"]) is int and type(typed["test_fraction"]) is float
    assert dataset_options("mnist1d", {"length": 40.0}) == {"length": 40}
    for option, value, message in [
        ("history", "x", "option history must be an integer, got 'x'"),
        ("horizon", "1.5", "option horizon must be an integer, got '1.5'"),
        ("horizon", 1.5, "option horizon must be an integer, got 1.5"),
        ("test_fraction", "x", "option test_fraction must be a number, got 'x'"),
        ("value_column", 3, r"option value_column must be text \(a name or a path\), got 3"),
    ]:
        with pytest.raises(ValueError, match=f"dataset 'series': {message}"):
            dataset_options("series", {"path": "s.csv", option: value})
    with pytest.raises(ValueError, match="dataset 'digits': option seed must be an integer"):
        load_dataset("digits", seed="x")
    assert default_augment("digits").flip is False
    assert default_augment("cifar10", mode="shared").mode == "shared"
