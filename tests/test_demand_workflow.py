"""The demand workflow: settings refused before anything is written, simulated files in either
format, retries in the same workdir, and the steps a summary reports."""

import json

import numpy as np
import pandas as pd
import pytest

from samplepar import checkpoint, demand, svi
from samplepar.models import DemandDataError, demand_data


@pytest.fixture(scope="module")
def panel_csv(tmp_path_factory):
    """A simulated 12-product x 8-period CSV table with its truth beside it."""
    path = tmp_path_factory.mktemp("panel") / "panel.csv"
    demand.simulate_to_file(path, products=12, periods=8, categories=2, seed=0)
    return path


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"steps": 0}, r"^steps must be an integer >= 1, got 0$"),
        ({"steps": -5}, r"^steps must be an integer >= 1, got -5$"),
        ({"particles": 0}, r"^particles must be an integer >= 1, got 0$"),
        ({"draws": 0}, r"^draws must be an integer >= 1, got 0$"),
        ({"batch_size": 0}, r"^batch_size must be an integer >= 1, got 0$"),
        ({"alpha": -1.0}, r"^RenyiELBO alpha must be >= 0 \(got -1.0\)"),
        ({"alpha": 1.0}, r"^RenyiELBO alpha must differ from 1"),
        ({"guide": "flow"}, r"^unknown guide 'flow'; choose one of normal, lowrank, "),
        ({"layout": "rows=2"}, r"^layout 'rows=2': unknown axis 'rows'"),
        (
            {"particles": 3, "layout": "sample=2,data=4"},
            r"^particles: 3 samples cannot be split over sample=2 devices",
        ),
        (
            {"batch_size": 3, "layout": "data=2"},
            r"^batch of 3 examples cannot be split over data=2 devices",
        ),
        (
            {"batch_size": 2, "guide": "lowrank"},
            r"^guide 'lowrank' couples the products of different blocks",
        ),
    ],
)
def test_bad_settings_are_refused_before_the_workdir_is_made(
    panel_csv, tmp_path, settings, message
):
    workdir = tmp_path / "fit"
    with pytest.raises(ValueError, match=message):
        demand.fit_file(panel_csv, workdir, progress=False, **settings)
    assert not workdir.exists()


def test_simulate_writes_csv_or_parquet_by_suffix_with_truth_beside(panel_csv, tmp_path):
    parquet = tmp_path / "panel.parquet"
    assert demand.simulate_to_file(parquet, 12, 8, 2, seed=0) == {
        "rows": 96,
        "output": str(parquet),
    }
    from_csv, csv_truth = demand_data.load(panel_csv)
    from_parquet, parquet_truth = demand_data.load(parquet)
    assert panel_csv.read_text().startswith("product,category,period,price,units\n0,")
    pd.testing.assert_frame_equal(from_csv, from_parquet)  # CSV floats round-trip exactly
    np.testing.assert_array_equal(csv_truth.product_elasticity, parquet_truth.product_elasticity)
    assert csv_truth.product_elasticity.shape == (12,)


def test_simulate_refuses_another_suffix_before_simulating(tmp_path):
    with pytest.raises(DemandDataError, match=r"panel\.txt: expected a \.parquet or \.csv file"):
        demand.simulate_to_file(tmp_path / "panel.txt", 4, 3, 1, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_a_fit_that_failed_before_its_first_checkpoint_can_be_retried(
    panel_csv, tmp_path, monkeypatch
):
    """The failed run's config.json (particles 2) does not refuse the corrected one (4); once
    a checkpoint exists, a different configuration is refused."""
    workdir = tmp_path / "fit"

    def out_of_memory(*args, **kwargs):
        raise MemoryError("out of memory while compiling")

    with monkeypatch.context() as patch:
        patch.setattr(svi, "build", out_of_memory)
        with pytest.raises(MemoryError):
            demand.fit_file(panel_csv, workdir, particles=2, steps=10, progress=False)
    assert json.loads((workdir / "config.json").read_text())["particles"] == 2
    summary = demand.fit_file(panel_csv, workdir, particles=4, steps=10, progress=False)
    assert summary["steps"] == 10 and summary["observations"] == 96
    assert checkpoint.latest_step(workdir / "checkpoints") == 10
    with pytest.raises(checkpoint.CheckpointError, match=r"particles: stored 4 vs now 2\)"):
        demand.fit_file(panel_csv, workdir, particles=2, steps=10, progress=False)


def test_a_workdir_with_more_steps_reports_them(panel_csv, tmp_path, capsys):
    workdir = tmp_path / "fit"
    longer = demand.fit_file(panel_csv, workdir, steps=20, progress=False)
    capsys.readouterr()
    shorter = demand.fit_file(panel_csv, workdir, steps=10, progress=False)
    assert shorter["steps"] == longer["steps"] == 20
    assert shorter["final_loss"] == longer["final_loss"]
    assert capsys.readouterr().err == (
        f"samplepar: workdir {workdir} already holds a fit of 20 steps, more than the 10 asked: "
        "that fit is reported (use another --workdir for a shorter one)\n"
    )
