"""Metrics against direct numpy / scipy / scikit-learn references, and the merge property."""

import jax
import numpy as np
import pytest
from scipy import integrate
from sklearn.metrics import roc_auc_score

from samplepar.data.loader import eval_batches
from samplepar.metrics import (
    ClassificationStats,
    RegressionStats,
    crps_ensemble,
    ood_auroc,
    uncertainty,
)

S, B, C = 5, 37, 4
class_stats = jax.jit(
    ClassificationStats.from_predictions, static_argnames=("log_space", "num_bins")
)
regression_stats = jax.jit(RegressionStats.from_samples, static_argnames=("levels",))


def _probs(seed=0, s=S, b=B, c=C):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (s, b, c))
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return probs.astype(np.float32), rng.integers(0, c, b).astype(np.int32)


def _reference(probs, labels, num_bins=15):
    """Direct float64 numpy formulas."""
    probs = probs.astype(np.float64)
    mean = probs.mean(0)
    onehot = np.eye(probs.shape[-1])[labels]
    conf, pred = mean.max(-1), mean.argmax(-1)
    correct = pred == labels
    entropy = -(mean * np.log(mean)).sum(-1)
    expected = -(probs * np.log(probs)).sum(-1).mean(0)
    edges = np.linspace(0, 1, num_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return {
        "accuracy": correct.mean(),
        "nll": -np.log(mean[np.arange(len(labels)), labels]).mean(),
        "brier": ((mean - onehot) ** 2).sum(-1).mean(),
        "ece": ece,
        "entropy": entropy.mean(),
        "mutual_information": (entropy - expected).mean(),
    }


def test_classification_matches_numpy_reference():
    probs, labels = _probs()
    got = class_stats(probs, labels).compute()
    want = _reference(probs, labels)
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_log_space_input_gives_the_same_statistics():
    probs, labels = _probs(1)
    a = class_stats(probs, labels)
    b = class_stats(np.log(probs), labels, log_space=True)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)


def test_exact_zeros_and_ones_give_finite_statistics():
    probs = np.zeros((2, 3, 4), np.float32)
    probs[:, np.arange(3), [0, 1, 2]] = 1.0  # confident and right on all three examples
    got = class_stats(probs, np.array([0, 1, 2])).compute()
    for name, value in got.items():
        np.testing.assert_allclose(
            value, 0.0 if name != "accuracy" else 1.0, atol=1e-7, err_msg=name
        )
    wrong = class_stats(probs, np.array([3, 1, 2])).compute()
    assert np.isinf(wrong["nll"]) and np.isfinite(wrong["brier"])  # log 0 for the first label


def test_mutual_information_zero_for_agreeing_samples_positive_otherwise():
    probs, _ = _probs(2, s=1)
    same = jax.jit(uncertainty)(np.repeat(probs, 4, axis=0))["mutual_information"]
    np.testing.assert_allclose(same, 0.0, atol=1e-6)
    differ = jax.jit(uncertainty)(_probs(3)[0])["mutual_information"]
    assert np.all(differ > 1e-3)


def test_reliability_bins_count_every_example_with_their_mean_confidence():
    probs, labels = _probs(4, b=200)
    stats = class_stats(probs, labels)
    diagram = stats.reliability()
    conf = probs.mean(0).max(-1)
    bins = np.digitize(conf, np.linspace(0, 1, 16), right=True) - 1
    np.testing.assert_array_equal(diagram["count"], np.bincount(bins, minlength=15))
    full = np.flatnonzero(np.bincount(bins, minlength=15))
    for b in full:
        np.testing.assert_allclose(diagram["confidence"][b], conf[bins == b].mean(), rtol=1e-5)
    assert np.all(np.isnan(np.asarray(diagram["accuracy"])[np.bincount(bins, minlength=15) == 0]))


def test_merging_padded_masked_batches_equals_the_whole_set():
    probs, labels = _probs(5, b=53)
    whole = class_stats(probs, labels)
    merged = ClassificationStats.empty()
    x = np.transpose(probs, (1, 0, 2))  # examples first for the batcher
    for batch in eval_batches(x, labels, batch_size=10, multiple=4):
        padded = np.transpose(batch["x"], (1, 0, 2))
        padded[:, ~batch["mask"]] = np.nan  # padding must not leak into the sums
        merged = merged.merge(class_stats(padded, batch["y"], batch["mask"]))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), merged, whole)
    assert float(merged.count) == 53


def _crps_integral(x, y):
    """CRPS as the integral of (F_ens(z) - 1[z >= y])^2, piecewise between the jump points."""
    points = np.sort(np.append(x, y))
    square = lambda z: ((x <= z).mean() - (z >= y)) ** 2  # noqa: E731
    return sum(
        integrate.quad(square, a, b)[0] for a, b in zip(points[:-1], points[1:], strict=True)
    )


def test_crps_matches_pairwise_formula_and_integral_form():
    rng = np.random.default_rng(6)
    samples = rng.normal(size=(7, 3)).astype(np.float32)
    targets = rng.normal(size=3).astype(np.float32)
    got = np.asarray(crps_ensemble(samples, targets))
    x = samples.astype(np.float64)
    pairwise = np.abs(x - targets).mean(0) - 0.5 * np.abs(x[:, None] - x[None]).mean((0, 1))
    np.testing.assert_allclose(got, pairwise, rtol=1e-5, atol=1e-6)
    for j in range(3):
        np.testing.assert_allclose(got[j], _crps_integral(x[:, j], float(targets[j])), rtol=1e-4)


def test_regression_stats_match_numpy_and_merge_exactly():
    rng = np.random.default_rng(7)
    samples = rng.normal(size=(40, 23, 2)).astype(np.float32)
    targets = (1.3 * rng.normal(size=(23, 2))).astype(np.float32)
    whole = regression_stats(samples, targets, levels=(0.5, 0.9))
    got = whole.compute()
    x = samples.astype(np.float64)
    pairwise = np.abs(x - targets).mean(0) - 0.5 * np.abs(x[:, None] - x[None]).mean((0, 1))
    np.testing.assert_allclose(got["crps"], pairwise.mean(), rtol=1e-5)
    np.testing.assert_allclose(got["rmse"], np.sqrt(((x.mean(0) - targets) ** 2).mean()), rtol=1e-5)
    for k, level in enumerate((0.5, 0.9)):
        lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2], axis=0)
        np.testing.assert_allclose(got["coverage"][k], ((lo <= targets) & (targets <= hi)).mean())
    merged = RegressionStats.empty()
    for start in range(0, 23, 8):
        rows = slice(start, start + 8)
        s, t = samples[:, rows], targets[rows]
        pad = 8 - t.shape[0]
        s = np.pad(s, [(0, 0), (0, pad), (0, 0)], constant_values=np.nan)
        t = np.pad(t, [(0, pad), (0, 0)])
        mask = np.arange(8) < 8 - pad
        merged = merged.merge(regression_stats(s, t, mask, levels=(0.5, 0.9)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), merged, whole)


def test_coverage_is_calibrated_for_the_true_predictive():
    samples = jax.random.normal(jax.random.key(0), (200, 4000))
    targets = jax.random.normal(jax.random.key(1), (4000,))
    coverage = regression_stats(samples, targets).compute()["coverage"]
    np.testing.assert_allclose(coverage, [0.5, 0.9], atol=0.03)  # 4000 draws: 3 sigma < 0.025


@pytest.mark.parametrize("ties", [False, True])
def test_auroc_matches_sklearn(ties):
    rng = np.random.default_rng(8)
    in_scores, out_scores = rng.normal(size=50), rng.normal(0.7, 1.0, size=30)
    if ties:
        in_scores, out_scores = np.round(in_scores), np.round(out_scores)
    labels = np.r_[np.zeros(50), np.ones(30)]
    want = roc_auc_score(labels, np.r_[in_scores, out_scores])
    assert ood_auroc(in_scores, out_scores) == pytest.approx(want, abs=1e-12)
    assert ood_auroc([1.0, 1.0], [1.0]) == 0.5


def test_auroc_rejects_empty_and_non_finite_scores():
    with pytest.raises(ValueError, match="both kinds"):
        ood_auroc([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        ood_auroc([np.nan], [1.0])


def test_stats_reduce_across_devices_with_psum():
    probs, labels = _probs(9, b=16)
    mesh = jax.make_mesh((8,), ("data",))
    spec = jax.sharding.PartitionSpec

    def shard(p, y):
        stats = ClassificationStats.from_predictions(p, y)
        return jax.tree.map(lambda v: jax.lax.psum(v, "data"), stats)

    fn = jax.jit(
        jax.shard_map(
            shard, mesh=mesh, in_specs=(spec(None, "data"), spec("data")), out_specs=spec()
        )
    )
    put = lambda a, p: jax.device_put(a, jax.sharding.NamedSharding(mesh, p))  # noqa: E731
    got = fn(put(probs, spec(None, "data")), put(labels, spec("data")))
    want = class_stats(probs, labels)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


def test_out_of_range_labels_raise_when_concrete_and_give_nan_nll_when_traced():
    probs, labels = _probs(10, b=8)
    labels[[1, 4]] = [-1, C]
    with pytest.raises(
        ValueError, match=r"labels must lie in 0\.\.3; got \[-1, 4\] at positions \[1, 4\]"
    ):
        ClassificationStats.from_predictions(probs, labels)
    assert np.isnan(class_stats(probs, labels).nll)
    # masked-out rows may hold anything
    mask = np.ones(8, bool)
    mask[[1, 4]] = False
    got = ClassificationStats.from_predictions(probs, labels, mask).compute()
    want = _reference(probs[:, mask], labels[mask])
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_predictions_in_the_other_space_than_log_space_says_are_refused():
    probs, labels = _probs(11)
    with pytest.raises(
        ValueError, match=r"in \[-.*, 0\]: these look like log-probabilities; pass log_space=True"
    ):
        ClassificationStats.from_predictions(np.log(probs), labels)
    with pytest.raises(ValueError, match="look like probabilities; pass log_space=False"):
        ClassificationStats.from_predictions(probs, labels, log_space=True)
    with pytest.raises(ValueError, match="pass log_space=True"):
        uncertainty(np.log(probs))
    # valid inputs, rounding included, pass eagerly and give the jitted statistics
    eager = ClassificationStats.from_predictions(probs * (1 + 1e-7), labels)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), eager, class_stats(probs, labels)
    )
    np.testing.assert_allclose(
        uncertainty(np.log(probs), log_space=True)["entropy"],
        uncertainty(probs)["entropy"],
        rtol=1e-5,
    )


def test_regression_refuses_mismatched_shapes_and_levels():
    samples, targets = np.zeros((5, 6, 1), np.float32), np.zeros(6, np.float32)
    for fn in (RegressionStats.from_samples, regression_stats):
        with pytest.raises(
            ValueError, match=r"targets of shape \(6,\) do not match samples of shape \(5, 6, 1\)"
        ):
            fn(samples, targets)
    with pytest.raises(ValueError, match=r"levels must lie in \(0, 1\), got \(1\.5,\)"):
        RegressionStats.from_samples(samples, targets[:, None], levels=(1.5,))
    one_level = RegressionStats.from_samples(samples, targets[:, None], levels=(0.8,))
    with pytest.raises(ValueError, match="cannot merge RegressionStats of 2 and 1 levels"):
        RegressionStats.empty().merge(one_level)
    np.testing.assert_array_equal(RegressionStats.empty(1).merge(one_level).covered, [6.0])
