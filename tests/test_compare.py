"""SVI vs NUTS study: coverage and interval formulas, the comparison table, a tiny SVI fit."""

import jax
import numpy as np
import pytest

from samplepar import compare, mcmc


def test_coverage_equals_direct_count():
    rng = np.random.default_rng(0)
    lower = rng.normal(size=50)
    upper = lower + rng.uniform(0, 2, size=50)
    truth = rng.normal(size=50)
    truth[:3] = lower[:3]  # ends count as inside
    count = sum(1 for lo, hi, t in zip(lower, upper, truth, strict=True) if lo <= t <= hi)
    assert compare.coverage(lower, upper, truth) == count / 50


def test_central_interval_is_equal_tailed():
    draws = np.random.default_rng(1).normal(size=(10001, 3))
    lower, upper = compare.central_interval(draws, 0.9)
    for p in range(3):
        assert np.mean(draws[:, p] < lower[p]) == pytest.approx(0.05, abs=1e-3)
        assert np.mean(draws[:, p] > upper[p]) == pytest.approx(0.05, abs=1e-3)


def test_calibrated_draws_cover_ninety_percent():
    """Truth and draws from the same normal per product: coverage 0.9 +- 3 sd (sd ~ 0.0067)."""
    rng = np.random.default_rng(2)
    loc, scale = rng.normal(-2, 0.3, 2000), rng.uniform(0.1, 0.3, 2000)
    draws = loc + scale * rng.standard_normal((1000, 2000))
    truth = loc + scale * rng.standard_normal(2000)
    result = compare.summarize_draws("m", draws, truth, 0.9, 1.0)
    assert abs(result.coverage - 0.9) < 0.02
    np.testing.assert_allclose(result.sd, scale, rtol=0.1)
    shrunk = compare.summarize_draws("m", loc + 0.1 * (draws - loc), truth, 0.9, 1.0)
    assert shrunk.coverage < 0.2  # intervals 10x too narrow cover ~13%


def test_table_compares_with_reference():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=40)
    ref = compare.summarize_draws("nuts", truth + rng.normal(size=(500, 40)), truth, 0.9, 10.0)
    other_draws = truth + 0.5 + 0.5 * rng.normal(size=(500, 40))
    other = compare.summarize_draws("normal", other_draws, truth, 0.9, 1.0, khat=0.9)
    t = compare.table([ref, other])
    assert t.loc["nuts", "rmse_mean_vs_ref"] == 0.0
    expected = np.sqrt(np.mean((other.mean - ref.mean) ** 2))
    assert t.loc["normal", "rmse_mean_vs_ref"] == pytest.approx(expected)
    assert t.loc["normal", "corr_mean_vs_ref"] == pytest.approx(
        np.corrcoef(other.mean, ref.mean)[0, 1]
    )
    assert t.loc["normal", "sd_ratio_vs_ref"] == pytest.approx(np.mean(other.sd / ref.sd))
    assert t.loc["normal", "khat"] == 0.9


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": ("normal", "fullrank")}, "unknown method"),
        ({"interval": 1.5}, "interval"),
        ({"num_products": 0}, "num_products"),
        ({"nuts": mcmc.NUTSConfig(num_chains=0)}, "num_chains"),
        ({"nuts": mcmc.NUTSConfig(num_chains=1)}, r"needs num_chains >= 2 \(R-hat compares"),
    ],
)
def test_bad_config_names_the_setting(change, message):
    with pytest.raises(ValueError, match=message):
        compare.check_config(compare.StudyConfig()._replace(**change))


def test_tiny_svi_recovers_elasticities_and_plots(tmp_path):
    config = compare.StudyConfig(
        num_products=20,
        num_periods=10,
        num_categories=2,
        svi_steps=1500,
        num_draws=100,
        svi_layout="sample=1,data=1",
    )
    panel = compare.simulate_panel(config)
    result = compare.run_svi(jax.random.key(0), "normal-at-mean", panel, config)
    truth = panel.truth.product_elasticity
    assert result.mean.shape == (20,)
    # 10 periods identify each elasticity to ~0.3; the hierarchy shrinks toward the category.
    assert np.sqrt(np.mean((result.mean - truth) ** 2)) < 0.4
    assert result.coverage >= 0.6
    assert np.isfinite(result.khat) and "k-hat" in result.notes
    path = tmp_path / "elasticities.png"
    compare.plot([result, result], truth, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_header_states_rhat_and_ess_of_both_sets_of_latents():
    """The header gives max R-hat and min bulk ESS over all latents and over the elasticities
    (minima found, not thresholds); the methods' notes follow the table."""
    nuts = {"num_chains": 4, "num_samples": 500, "num_divergences": 0, "max_rhat": 1.0123}
    nuts |= {"min_ess_bulk": 10.2, "max_rhat_elasticity": 1.004, "min_ess_bulk_elasticity": 40.4}
    report = {"num_products": 8, "num_periods": 6, "num_categories": 2, "interval": 0.9}
    report |= {"nuts": nuts, "methods": {"nuts": {"coverage": 0.875}}}
    report["notes"] = {"nuts": "over all latents max R-hat 1.012, min bulk ESS 10; 0 divergent"}
    lines = compare.format_report(report).splitlines()
    assert lines[1] == (
        "NUTS: 4 chains x 500 draws, 0 divergences; max R-hat 1.012 and min bulk ESS 10 over all "
        "latents, 1.004 and 40 over the product elasticities"
    )
    assert lines[-1] == "  nuts: over all latents max R-hat 1.012, min bulk ESS 10; 0 divergent"
