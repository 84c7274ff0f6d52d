"""The demo's targets: accuracy and calibration after 30 epochs, the same on every layout.

Two full demo runs (about 5 minutes on 2 cores), so marked slow: ``pytest -m slow``.
"""

import dataclasses

import jax
import numpy as np
import pytest

from samplepar import train


@pytest.mark.slow
def test_demo_meets_its_targets_on_the_hybrid_layout_and_on_one_device(tmp_path):
    def run(layout):
        config = dataclasses.replace(train.demo_config(layout), progress=False)
        return train.train(config, tmp_path / layout)

    hybrid, single = run("sample=4,data=2"), run("none")
    for result in (hybrid, single):
        assert result.metrics["test_accuracy"] >= 0.97
        assert result.metrics["test_ece"] <= 0.03
    pairs = zip(
        jax.tree.leaves(hybrid.state.params), jax.tree.leaves(single.state.params), strict=True
    )
    for a, b in pairs:  # 330 Adam steps carry float32 reduction-order differences to ~3e-4
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-2, atol=1e-3)
    assert hybrid.metrics["test_accuracy"] == pytest.approx(
        single.metrics["test_accuracy"], abs=1 / 450
    )
