"""The command line, end to end with tiny settings: train, predict, demo."""

import json
import os
import subprocess
import sys

import arviz as az
import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from samplepar import cli, demand, svi

TINY = ["--model", "mlp", "--samples", "4", "--batch-size", "64", "--epochs", "1"]
TINY += ["--eval-samples", "4", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    code = cli.main(["train", *TINY, "--layout", "sample=2,data=2", "--workdir", str(workdir)])
    assert code == 0
    return workdir


def test_train_writes_metrics_checkpoints_and_report(trained, capsys):
    assert (trained / "metrics.jsonl").is_file()
    assert (trained / "config.json").is_file()
    assert any((trained / "checkpoints").iterdir())
    assert (trained / "report.json").is_file()


def test_predict_writes_one_row_per_input(trained, tmp_path, capsys):
    images = load_digits().images[:7, :, :, None].astype(np.float32) / 16.0
    inputs = tmp_path / "x.npy"
    np.save(inputs, images)
    output = tmp_path / "pred.csv"
    args = ["predict", "--workdir", str(trained), "--inputs", str(inputs), "--output", str(output)]
    assert cli.main(args) == 0
    table = pd.read_csv(output)
    assert len(table) == 7
    probs = table[[f"prob_{c}" for c in range(10)]].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)


def test_bad_layout_exits_2_and_writes_nothing(tmp_path, capsys):
    workdir = tmp_path / "bad"
    code = cli.main(["train", *TINY, "--layout", "sample=3", "--workdir", str(workdir)])
    assert code == 2
    assert "4 samples cannot be split over sample=3" in capsys.readouterr().err
    assert not workdir.exists()


def test_train_forecaster_on_a_csv_series(tmp_path, capsys):
    hours = np.arange(400)
    series = 10 + np.sin(2 * np.pi * hours / 24) + 0.1 * np.random.default_rng(0).normal(size=400)
    pd.DataFrame({"hour": hours, "load": series}).to_csv(tmp_path / "load.csv", index=False)
    options = ["path=load.csv", "value_column=load", "history=24", "horizon=3"]
    argv = ["train", "--model", "forecaster", "--dataset", "series", "--data-dir", str(tmp_path)]
    argv += [arg for option in options for arg in ("--data-option", option)]
    argv += ["--samples", "4", "--batch-size", "32", "--epochs", "2", "--eval-samples", "4"]
    argv += ["--layout", "sample=2,data=2"]
    argv += ["--no-progress", "--no-report", "--workdir", str(tmp_path / "run")]
    assert cli.main(argv) == 0
    stored = json.loads((tmp_path / "run" / "config.json").read_text())
    assert stored["data_options"] == {
        "path": "load.csv",
        "value_column": "load",
        "history": 24,
        "horizon": 3,
    }
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert len(metrics) == 2
    assert np.isfinite(metrics[-1]["test_crps"])


def test_demo_runs(tmp_path, capsys):
    assert cli.main(["demo", "--epochs", "1", "--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "16 weight samples per step over 8 devices (layout sample=4,data=2)" in out
    assert "test_accuracy" in out


def test_demand_simulate_then_fit(tmp_path, capsys):
    data = tmp_path / "panel.csv"
    args = ["demand", "simulate", "--products", "12", "--periods", "8", "--categories", "2"]
    assert cli.main([*args, "-o", str(data)]) == 0
    assert data.is_file() and data.with_suffix(".truth.npz").is_file()
    assert json.loads(capsys.readouterr().out)["rows"] == 96
    workdir = tmp_path / "fit"
    fit = ["demand", "fit", str(data), "--steps", "10", "--layout", "sample=2,data=4"]
    assert cli.main([*fit, "--workdir", str(workdir), "--no-progress"]) == 0
    assert (workdir / "posterior.nc").is_file()
    summary = json.loads(capsys.readouterr().out)
    assert summary["observations"] == 96 and summary["steps"] == 10
    assert 0.0 <= summary["truth"]["coverage_90"] <= 1.0  # the simulated truth sits beside it
    assert -1.0 <= summary["truth"]["elasticity_median_corr"] <= 1.0


def test_demand_checkpoint_interval_is_whole_calls_of_steps():
    """A quarter of the run, at most 1000 steps, in whole calls of ``svi.STEPS_PER_CALL`` where
    the run is long enough, so that ``svi.fit`` never breaks a call at a checkpoint."""
    assert svi.STEPS_PER_CALL == 10
    assert demand.checkpoint_interval(20_000) == 1000
    assert demand.checkpoint_interval(500) == 120
    assert demand.checkpoint_interval(40) == 10
    assert demand.checkpoint_interval(30) == 7
    assert demand.checkpoint_interval(2) == 1


def test_demand_minibatch_fit_reports_products(tmp_path, capsys):
    """A mini-batch fit (product latents local to the blocks) writes per-product draws."""
    data = tmp_path / "panel.parquet"
    args = ["demand", "simulate", "--products", "40", "--periods", "6", "--categories", "2"]
    assert cli.main([*args, "-o", str(data)]) == 0
    capsys.readouterr()
    fit = ["demand", "fit", str(data), "--steps", "10", "--layout", "data=2", "--batch-size", "2"]
    assert cli.main([*fit, "--workdir", str(tmp_path / "fit"), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert 0.0 <= summary["truth"]["coverage_90"] <= 1.0  # draws per product, as the truth
    posterior = az.from_netcdf(tmp_path / "fit" / "posterior.nc").posterior
    assert posterior["product_elasticity"].shape == (1, 500, 40)


def test_demand_minibatch_fit_refuses_a_joint_guide(tmp_path, capsys):
    data = tmp_path / "panel.parquet"
    assert (
        cli.main(["demand", "simulate", "--products", "8", "--periods", "3", "-o", str(data)]) == 0
    )
    fit = ["demand", "fit", str(data), "--batch-size", "2", "--guide", "lowrank"]
    assert cli.main([*fit, "--workdir", str(tmp_path / "w")]) == 2
    assert "mini-batches (batch_size) need a mean-field guide" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_demand_fit_names_an_unknown_guide(tmp_path, capsys):
    data = tmp_path / "panel.parquet"
    assert (
        cli.main(["demand", "simulate", "--products", "4", "--periods", "3", "-o", str(data)]) == 0
    )
    fit = ["demand", "fit", str(data), "--guide", "flow", "--workdir", str(tmp_path / "w")]
    assert cli.main(fit) == 2
    assert "unknown guide 'flow'" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_demand_fit_refuses_bad_steps_before_writing(tmp_path, capsys, steps):
    data = tmp_path / "panel.csv"
    assert (
        cli.main(["demand", "simulate", "--products", "4", "--periods", "3", "-o", str(data)]) == 0
    )
    fit = ["demand", "fit", str(data), "--steps", steps, "--workdir", str(tmp_path / "w")]
    assert cli.main(fit) == 2
    assert capsys.readouterr().err == (
        f"samplepar: error: steps must be an integer >= 1, got {steps}\n"
    )
    assert not (tmp_path / "w").exists()


def test_demand_simulate_refuses_another_suffix(tmp_path, capsys):
    assert cli.main(["demand", "simulate", "-o", str(tmp_path / "panel.txt")]) == 2
    assert capsys.readouterr().err == (
        f"samplepar: error: {tmp_path / 'panel.txt'}: expected a .parquet or .csv file\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["fit", "compare"])
def test_demand_help_lists_every_svi_method(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # argparse wraps help to the terminal's width
    with pytest.raises(SystemExit):
        cli.main(["demand", command, "--help"])
    help_text = capsys.readouterr().out
    assert "normal, lowrank, paired, normal-at-mean, lowrank-at-mean; default normal-at-mean" in (
        help_text
    )


def test_demand_fit_refuses_a_bad_table(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("product,category,period,price,units\na,x,1,2.0,3\na,x,2,-1.0,4\n")
    assert cli.main(["demand", "fit", str(bad), "--workdir", str(tmp_path / "w")]) == 2
    assert "price" in capsys.readouterr().err


def test_demand_compare_writes_report_plot_and_nuts_run(tmp_path, capsys):
    out = tmp_path / "compare"
    args = ["demand", "compare", "--products", "8", "--periods", "6", "--categories", "2"]
    args += ["--methods", "normal", "--svi-steps", "50", "--draws", "50"]
    args += ["--warmup", "30", "--nuts-samples", "30", "--chains", "2"]
    assert cli.main([*args, "--out", str(out)]) == 0
    report = json.loads((out / "compare_8.json").read_text())
    assert set(report["methods"]) == {"nuts", "normal"}
    assert report["nuts"]["num_transitions"] == 60 and report["nuts"]["max_rhat_elasticity"] > 0.9
    assert 0.0 <= report["methods"]["normal"]["coverage"] <= 1.0
    assert (out / "elasticities_8.png").stat().st_size > 0 and (out / "nuts_8.nc").is_file()
    nuts = report["nuts"]  # the note and the header state the same all-latents values
    assert report["notes"]["nuts"].startswith(
        f"over all latents max R-hat {nuts['max_rhat']:.3f}, min bulk ESS "
        f"{nuts['min_ess_bulk']:.0f}; "
    )
    assert f"max R-hat {nuts['max_rhat']:.3f} and min bulk ESS" in capsys.readouterr().out


def test_demand_compare_names_an_unknown_method(tmp_path, capsys):
    args = ["demand", "compare", "--methods", "fullrank", "--out", str(tmp_path / "c")]
    assert cli.main(args) == 2
    assert "fullrank" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_compile_cache_settings():
    settings = cli.compile_cache_settings("/c", None)
    assert settings["jax_compilation_cache_dir"] == "/c"
    assert settings["jax_persistent_cache_min_compile_time_secs"] == 0.0
    assert cli.compile_cache_settings("none", None) == {}
    assert cli.compile_cache_settings("/c", "/mine") == {}  # the user's own cache wins


def test_compile_cache_keeps_programs_for_the_next_run(tmp_path):
    """A fresh process configured by the CLI writes its compiled programs to the cache."""
    cache = tmp_path / "cache"
    script = (
        "import sys; from samplepar import cli; "
        "cli._configure_jax(cli._global_parser().parse_known_args(sys.argv[1:])[0]); "
        "import jax; print(float(jax.jit(lambda x: 2 * x + 1)(3.0)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    command = [sys.executable, "-c", script, "--compile-cache", str(cache), "--host-devices", "1"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "7.0"
    assert any(p.name.endswith("-cache") for p in cache.iterdir()), list(cache.iterdir())
