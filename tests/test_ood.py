"""ood: the generated sets are what they claim to be; scores agree with the rank AUROC."""

import numpy as np
import pytest

from samplepar import ood
from samplepar.data import load_dataset
from samplepar.data.base import Dataset
from samplepar.metrics import ood_auroc


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_image_sets(digits):
    sets = ood.ood_sets(digits, seed=3, size=50)
    assert sorted(sets) == ["inverted", "noise", "rotated"]
    for x in sets.values():
        assert x.shape == (50, 8, 8, 1) and x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
    # uniform noise: mean 1/2, variance 1/12 (3200 pixels: standard error 0.005)
    assert abs(sets["noise"].mean() - 0.5) < 0.03
    assert abs(sets["noise"].var() - 1 / 12) < 0.01
    # rotated and inverted come from the same test images: undo the transforms and find them
    unrotated = np.rot90(sets["rotated"], k=-1, axes=(1, 2))
    np.testing.assert_array_equal(unrotated, 1.0 - sets["inverted"])
    flat_test = digits.x_test.reshape(len(digits.x_test), -1)
    for image in unrotated.reshape(50, -1):
        assert np.any(np.all(flat_test == image, axis=1))
    again = ood.ood_sets(digits, seed=3, size=50)
    np.testing.assert_array_equal(again["noise"], sets["noise"])


def test_series_noise_and_regression():
    rng = np.random.default_rng(0)
    x_train = (3.0 + 2.0 * rng.standard_normal((400, 10, 1))).astype(np.float32)
    series = Dataset(x_train, np.zeros(400, np.int32), x_train[:20], np.zeros(20), 4, "toy")
    sets = ood.ood_sets(series, size=2000)
    assert list(sets) == ["noise"]
    assert abs(sets["noise"].mean() - 3.0) < 0.1 and abs(sets["noise"].std() - 2.0) < 0.1
    regression = series._replace(num_classes=0)
    assert ood.ood_sets(regression) == {}


def test_external_set(digits, tmp_path):
    path = tmp_path / "other.npy"
    np.save(path, np.full((7, 8, 8, 1), 0.25, np.float32))
    sets = ood.ood_sets(digits, size=5, external=path)
    np.testing.assert_array_equal(sets["external"], np.full((5, 8, 8, 1), 0.25))
    np.save(path, np.zeros((7, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"expects \(N, 8, 8, 1\)"):
        ood.ood_sets(digits, external=path)


def test_scores():
    rng = np.random.default_rng(1)
    inside = {"entropy": rng.uniform(0, 1, 300), "mutual_information": rng.uniform(0, 1, 300)}
    outside = {"entropy": rng.uniform(1, 2, 200), "mutual_information": rng.uniform(0, 1, 200)}
    result = ood.scores(inside, outside)
    assert result["ood_auroc_entropy"] == 1.0  # every OOD entropy is above every test one
    assert result["ood_auroc_mutual_information"] == pytest.approx(
        ood_auroc(inside["mutual_information"], outside["mutual_information"])
    )
    assert abs(result["ood_auroc_mutual_information"] - 0.5) < 0.1  # same distribution
    assert result["entropy_out"] == pytest.approx(outside["entropy"].mean())
