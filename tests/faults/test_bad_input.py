"""Malformed inputs: each gives a clear error naming the problem, exit code 2, and no debris.

Every case runs the real command line (``samplepar.cli.main``) in this process, except the CSV
case, which the ``train`` command cannot reach (it has no CSV path setting): that one runs the
data loader. The table of cases is docs/troubleshooting.md.
"""

import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from fault_runs import TINY, flags

from samplepar import checkpoint, cli, train
from samplepar.data import load_dataset
from samplepar.data.base import DataError


def _idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">i", n) for n in array.shape
    )
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _mnist_dir(root, image_shape=(28, 28), truncate: int = 0):
    """A tiny MNIST folder; ``truncate`` bytes cut from the training images."""
    root.mkdir()
    for split, n in (("train", 8), ("t10k", 4)):
        _idx(root / f"{split}-images-idx3-ubyte", np.zeros((n, *image_shape)))
        _idx(root / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    if truncate:
        images = root / "train-images-idx3-ubyte"
        images.write_bytes(images.read_bytes()[:-truncate])
    return root


def _file(root, name: str, text: str):
    path = root / name
    path.write_text(text)
    return path


def _config(root, text: str, suffix=".json"):
    return ["--config", str(_file(root, "settings" + suffix, text))]


# (case, argv builder(tmp_path) -> extra argv, expected phrase in the error)
CASES = {
    "config: bad JSON": (
        lambda d: _config(d, '{"samples": 2,}'),
        r"settings\.json cannot be parsed",
    ),
    "config: bad TOML": (
        lambda d: _config(d, "samples = = 2", ".toml"),
        r"settings\.toml cannot be parsed",
    ),
    "config: unknown key": (
        lambda d: _config(d, '{"sampels": 4}'),
        r"unknown setting\(s\) \['sampels'\]",
    ),
    "config: wrong type (text for a count)": (
        lambda d: _config(d, '{"eval_batch_size": "ten"}'),
        r"setting eval_batch_size must be an integer >= 1, got 'ten'",
    ),
    "config: wrong type (text for a rate)": (
        lambda d: _config(d, '{"learning_rate": "fast"}'),
        r"setting learning_rate must be a positive number, got 'fast'",
    ),
    "config: wrong type (text for the seed)": (
        lambda d: _config(d, '{"seed": "1"}'),
        r"setting seed must be an integer >= 0, got '1'",
    ),
    "config: wrong type (fraction for the seed)": (
        lambda d: _config(d, "seed = 1.5", ".toml"),
        r"setting seed must be an integer >= 0, got 1\.5",
    ),
    "config: wrong type (number for the objective)": (
        lambda d: _config(d, '{"objective": 3}'),
        r"setting objective must be a string, got 3",
    ),
    "config: wrong type (text for alpha)": (
        lambda d: _config(d, '{"alpha": "x"}'),
        r"setting alpha must be a number, got 'x'",
    ),
    "config: wrong type (number for the data dir)": (
        lambda d: _config(d, '{"data_dir": 5}'),
        r"setting data_dir must be a string \(a directory\), got 5",
    ),
    "config: unsupported format": (
        lambda d: _config(d, "samples: 2", ".yaml"),
        r"settings\.yaml must be JSON or TOML, named \*\.json or \*\.toml",
    ),
    "config: not a table": (lambda d: _config(d, "[1, 2]"), r"must hold a table of settings"),
    "config: file missing": (
        lambda d: ["--config", str(d / "nowhere.toml")],
        r"nowhere\.toml does not exist",
    ),
    "args: bad layout": (
        lambda d: ["--layout", "sample=2,model=2"],
        r"unknown axis 'model'",
    ),
    "args: layout size not a number": (
        lambda d: ["--layout", "sample=two"],
        r"size of 'sample' must be a positive integer, got 'two'",
    ),
    "args: empty layout": (lambda d: ["--layout", ""], r"layout is empty"),
    "args: samples not divisible by the sample axis": (
        lambda d: ["--samples", "3"],
        r"samples: 3 samples cannot be split over sample=2 devices",
    ),
    "args: evaluation samples not divisible by the sample axis": (
        lambda d: ["--eval-samples", "3"],
        r"eval_samples: 3 samples cannot be split over sample=2 devices; .* sizes \[1\] would",
    ),
    "args: no samples per pass": (
        lambda d: ["--samples-per-pass", "0"],
        r"setting samples_per_pass must be an integer >= 1, got 0",
    ),
    "args: no augmentation groups": (
        lambda d: ["--augment-groups", "0"],
        r"setting augment_groups must be an integer >= 1, got 0",
    ),
    "args: negative initial scale": (
        lambda d: ["--init-scale", "-1"],
        r"setting init_scale must be a positive number, got -1\.0",
    ),
    "args: zero prior scale": (
        lambda d: ["--prior-scale", "0"],
        r"setting prior_scale must be a positive number, got 0\.0",
    ),
    "args: negative epochs": (
        lambda d: ["--epochs", "-1"],
        r"setting epochs must be an integer >= 1, got -1",
    ),
    "args: learning rate not finite": (
        lambda d: ["--learning-rate", "nan"],
        r"setting learning_rate must be a positive number, got nan",
    ),
    "args: unknown model": (lambda d: ["--model", "resnet9000"], r"resnet9000"),
    "args: unknown dataset": (
        lambda d: ["--dataset", "imagenet"],
        r"unknown dataset 'imagenet'",
    ),
    "args: unknown objective": (
        lambda d: ["--objective", "kl-magic"],
        r"unknown objective 'kl-magic'",
    ),
    "args: alpha out of range": (
        lambda d: ["--objective", "renyi", "--alpha", "-0.5"],
        r"alpha must be >= 0 \(got -0.5\)",
    ),
    "args: unknown augmentation": (
        lambda d: ["--augment", "sometimes"],
        r"augment='sometimes' is unknown",
    ),
    "data: file-based dataset without data dir": (
        lambda d: ["--dataset", "mnist"],
        r"dataset 'mnist' reads local files: pass data_dir \(--data-dir\)",
    ),
    "data: series without its CSV file": (
        lambda d: ["--dataset", "series", "--model", "forecaster"],
        r"dataset 'series' needs the option path=<CSV file> \(command line: --data-option",
    ),
    "data: dataset option of the wrong type": (
        lambda d: ["--data-option", "seed=x"],
        r"dataset 'digits': option seed must be an integer, got 'x'",
    ),
    "data: missing data dir": (
        lambda d: ["--dataset", "mnist", "--data-dir", str(d / "no-such-dir")],
        r"no-such-dir",
    ),
    "data: truncated IDX file": (
        lambda d: ["--dataset", "mnist", "--data-dir", str(_mnist_dir(d / "m", truncate=5))],
        r"train-images-idx3-ubyte: truncated: shape \(8, 28, 28\) needs 6288 bytes",
    ),
    "data: wrong image shape": (
        lambda d: ["--dataset", "mnist", "--data-dir", str(_mnist_dir(d / "m", (20, 20)))],
        r"images of shape \(20, 20\), expected \(28, 28\)",
    ),
    "data: gzip file that is not gzip": (
        lambda d: [
            "--dataset",
            "mnist",
            "--data-dir",
            str(_gz_garbage(_mnist_dir(d / "m"))),
        ],
        r"train-labels-idx1-ubyte\.gz: not a readable gzip file",
    ),
}


def _gz_garbage(root):
    (root / "train-labels-idx1-ubyte").unlink()
    (root / "train-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    return root


def _main(argv, capsys) -> tuple[int, str]:
    code = cli.main(["--host-devices", "0", "train", *argv])
    return code, capsys.readouterr().err


def _files(path) -> list:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_input_is_refused(case, tmp_path, capsys):
    build_argv, message = CASES[case]
    workdir = tmp_path / "run"
    code, err = _main(["--workdir", str(workdir), *flags(), *build_argv(tmp_path)], capsys)
    assert code == cli.EXIT_BAD_INPUT, err
    assert err.startswith("samplepar: error: "), err
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not workdir.exists()  # nothing written, not even an empty workdir


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--samples", "x"], "--samples: invalid int value: 'x'"),
        (["train", "--data-option", "path"], "--data-option: expected NAME=VALUE, got 'path'"),
        # argparse would take --lr for --lr-decay, the learning rate's decay, silently
        (["train", "--lr", "0.5"], "unrecognized arguments: --lr 0.5"),
        (["--host-devices", "-2", "train"], "--host-devices: expected an integer >= 0, got '-2'"),
    ],
)
def test_malformed_argument_is_an_argument_error(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([*argv, "--workdir", str(tmp_path / "run")])
    assert info.value.code == cli.EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_workdir_of_another_configuration_is_refused(tmp_path, capsys):
    workdir = tmp_path / "run"
    other = train.TrainConfig(**{**TINY, "model": "lenet"})
    checkpoint.check_config(workdir, other.identity())
    checkpoint.save(workdir / "checkpoints", 1, {"w": np.zeros(2)}, {"step": 1})
    before = {p: p.read_bytes() for p in _files(workdir)}
    code, err = _main(["--workdir", str(workdir), *flags()], capsys)
    assert code == cli.EXIT_BAD_INPUT
    assert "holds a run with a different configuration (model: stored 'lenet5' vs now 'mlp')" in err
    assert {p: p.read_bytes() for p in _files(workdir)} == before


def test_csv_with_a_non_numeric_value_names_row_and_column(tmp_path):
    rows = [str(float(i)) for i in range(60)]
    rows[41] = "12,5"
    path = _file(tmp_path, "sales.csv", "value\n" + "\n".join(f'"{r}"' for r in rows) + "\n")
    with pytest.raises(DataError, match=r"column 'value' row 41 \(line 43\) holds '12,5'"):
        load_dataset("series", path=str(path), history=4)


def test_gzip_helper_really_writes_gzip(tmp_path):
    # The gzip case above must fail because the file is not gzip, not because .gz is unread.
    root = _mnist_dir(tmp_path / "m")
    labels = root / "train-labels-idx1-ubyte"
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels.read_bytes()))
    labels.unlink()
    assert load_dataset("mnist", root).x_train.shape == (8, 28, 28, 1)


def test_case_table_is_documented():
    table = (Path(__file__).parents[2] / "docs" / "troubleshooting.md").read_text()
    for case in CASES:
        assert f"| {case} |" in table, case


def test_configuration_of_a_run_without_checkpoints_is_replaced(tmp_path, capsys):
    # A run refused or stopped before its first checkpoint left only its config.json: the
    # corrected command starts instead of being refused for the difference.
    workdir = tmp_path / "run"
    checkpoint.check_config(workdir, train.TrainConfig(**{**TINY, "seed": 5}).identity())
    code, err = _main(["--workdir", str(workdir), *flags(epochs=1)], capsys)
    assert code == 0, err
    stored = json.loads((workdir / "config.json").read_text())
    assert stored == train.TrainConfig(**{**TINY, "epochs": 1}).identity()
