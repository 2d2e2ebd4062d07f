"""Edge cases from issue 11: impossible statistics, zero-width intervals, negative baselines,
large effects, p-values outside [0, 1], and a p-value for every interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from tacit.experiments.stats import (
    LiftScale,
    ProportionStats,
    RatioStats,
    SampleStats,
    Status,
    ToleranceKind,
    absolute_lift,
    adjust_p_values,
    harm_test,
    power_means,
    proportion_z_test,
    relative_lift,
    required_sample_size_means,
    sequential_test,
    welch_t_test,
)


def test_one_of_one_against_none_of_one_is_insufficient_not_a_zero_width_interval() -> None:
    result = proportion_z_test(SampleStats.from_proportion(0, 1), SampleStats.from_proportion(1, 1))
    assert result.status is Status.INSUFFICIENT_DATA
    assert math.isnan(result.ci_lower) and math.isnan(result.ci_upper) and math.isnan(result.p_value)


@pytest.mark.parametrize("pooled", [True, False])
def test_all_or_nothing_arms_are_degenerate_not_ok(pooled: bool) -> None:
    # 0/50 vs 50/50: every outcome in each arm is the same; the unpooled SE is 0.
    result = proportion_z_test(
        SampleStats.from_proportion(0, 50), SampleStats.from_proportion(50, 50), pooled=pooled
    )
    assert result.status is not Status.OK
    assert result.status in (Status.DEGENERATE, Status.ZERO_VARIANCE)
    assert math.isnan(result.ci_lower) and math.isnan(result.ci_upper)
    assert result.estimate == 1.0
    pooled_result = proportion_z_test(SampleStats.from_proportion(0, 50), SampleStats.from_proportion(50, 50))
    assert pooled_result.status is Status.DEGENERATE


@pytest.mark.parametrize(
    ("control", "treatment", "arm"),
    [
        (SampleStats(10, -1.0, 1.0), SampleStats(10, 3.0, 3.0), "control"),  # negative successes
        (SampleStats(10, 3.0, 3.0), SampleStats(10, 12.0, 20.0), "treatment"),  # mean above 1
    ],
)
def test_impossible_proportions_are_refused_with_a_clear_error(
    control: SampleStats, treatment: SampleStats, arm: str
) -> None:
    with pytest.raises(ValueError, match=f"{arm}: a proportion needs 0 <= successes"):
        proportion_z_test(control, treatment)


def test_proportion_stats_refuse_a_mean_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError, match=r"successes must lie in \[0, n\]"):
        ProportionStats(10, 12.0, 12.0)
    with pytest.raises(ValueError, match=r"successes must lie in \[0, n\]"):
        ProportionStats(10, -1.0, -1.0)
    with pytest.raises(ValueError, match="sum of squares equal to sum"):
        ProportionStats(10, 3.0, 5.0)


def test_sums_no_data_can_produce_are_refused() -> None:
    # sum of squares below sum**2 / n: Cauchy-Schwarz says no real values give it.
    with pytest.raises(ValueError, match="below sum"):
        SampleStats(4, 10.0, 20.0)
    with pytest.raises(ValueError, match="empty arm"):
        SampleStats(0, 1.0, 1.0)
    with pytest.raises(ValueError, match="ratio numerator"):
        RatioStats(3, 9.0, 3.0, 1.0, 3.0, 3.0)
    # Negative values are fine for a mean metric; rounding noise at the bound is fine too.
    assert SampleStats.from_values([-1.0, -2.0, -3.0]).mean == -2.0
    assert SampleStats.from_values([0.1] * 7).variance == 0.0


def test_proportions_use_the_gbstats_variance_p_times_one_minus_p() -> None:
    stats = SampleStats.from_proportion(30, 100)
    assert isinstance(stats, ProportionStats)
    assert stats.variance == pytest.approx(0.21, abs=1e-15)
    assert stats.mean_variance == pytest.approx(0.0021, abs=1e-15)
    # The documented switch: plain SampleStats keeps the unbiased n/(n - 1) convention.
    assert SampleStats(100, 30.0, 30.0).variance == pytest.approx(0.21 * 100 / 99, abs=1e-15)


@pytest.mark.parametrize("sequential_tuning_n", [None, 500.0])
def test_higher_is_better_guardrail_on_a_negative_baseline_is_improved_not_harmed(
    sequential_tuning_n: float | None,
) -> None:
    rng = np.random.default_rng(11)
    control = SampleStats.from_values(rng.normal(-5.0, 1.0, 400))
    treatment = SampleStats.from_values(rng.normal(-4.0, 1.0, 400))  # -5 -> -4: better
    kwargs = {
        "tolerance": 0.02,
        "tolerance_kind": ToleranceKind.RELATIVE,
        "sequential_tuning_n": sequential_tuning_n,
    }
    better = harm_test(control, treatment, higher_is_better=True, **kwargs)  # type: ignore[arg-type]
    assert better.status is Status.OK
    assert not better.harmed
    assert better.cleared
    # Relative change is (m_t - m_c)/|m_c| ~ +20 %; degradation is its negative.
    expected = (treatment.mean - control.mean) / abs(control.mean)
    assert better.degradation == pytest.approx(-expected, abs=1e-12)
    assert better.degradation < -0.15
    # The same move on a lower-is-better metric is harm.
    worse = harm_test(control, treatment, higher_is_better=False, **kwargs)  # type: ignore[arg-type]
    assert worse.harmed and not worse.cleared
    assert worse.degradation == pytest.approx(expected, abs=1e-12)


def test_positive_baseline_guardrail_direction_is_unchanged() -> None:
    rng = np.random.default_rng(12)
    control = SampleStats.from_values(rng.normal(5.0, 1.0, 400))
    treatment = SampleStats.from_values(rng.normal(4.0, 1.0, 400))
    result = harm_test(control, treatment, higher_is_better=True, tolerance=0.02)
    assert result.harmed
    assert result.degradation == pytest.approx(1 - treatment.mean / control.mean, abs=1e-12)


@pytest.mark.parametrize("effect", [3.0, -3.0, 5.0, 10.0])
def test_sample_size_for_large_effects_does_not_crash(effect: float) -> None:
    n = required_sample_size_means(effect, 1.0)
    assert n == 2  # the minimum every test here needs
    assert power_means(effect, 1.0, n) >= 0.8


@pytest.mark.parametrize("effect", [0.1, 0.5, 1.0, 1.5])
def test_sample_size_is_the_smallest_n_with_the_power(effect: float) -> None:
    n = required_sample_size_means(effect, 1.0)
    assert power_means(effect, 1.0, n) >= 0.8
    if n > 2:
        assert power_means(effect, 1.0, n - 1) < 0.8
    # Closed form (z_{.975} + z_{.8})^2 * 2 / d^2, up to the other tail's tiny share.
    closed = (scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)) ** 2 * 2 / effect**2
    assert abs(n - math.ceil(closed)) <= 1


@pytest.mark.parametrize("bad", [1.2, -0.1, math.inf, -math.inf])
def test_adjust_p_values_refuses_values_outside_the_unit_interval(bad: float) -> None:
    with pytest.raises(ValueError, match=r"p_values\[1\] is outside \[0, 1\]"):
        adjust_p_values([0.01, bad, 0.5])
    assert adjust_p_values([0.0, 1.0, math.nan])[2] != adjust_p_values([0.0, 1.0, math.nan])[2]  # NaN stays


def test_every_interval_has_its_own_p_value_from_the_same_statistic() -> None:
    rng = np.random.default_rng(5)
    for _ in range(200):
        n_c, n_t = rng.integers(5, 200, size=2)
        control = SampleStats.from_values(rng.exponential(2.0, n_c))
        treatment = SampleStats.from_values(rng.exponential(rng.uniform(1.5, 3.0), n_t))
        for result in (absolute_lift(control, treatment), relative_lift(control, treatment)):
            excludes_zero = result.ci_lower > 0 or result.ci_upper < 0
            assert (result.p_value < 0.05) == excludes_zero, result
        # The absolute lift is the Welch t test itself.
        welch = welch_t_test(control, treatment)
        assert absolute_lift(control, treatment).p_value == pytest.approx(welch.p_value, abs=1e-12)


def _stats_with(n: int, mean: float, variance: float) -> SampleStats:
    total = n * mean
    return SampleStats(n, total, variance * (n - 1) + total * total / n)


def test_relative_p_value_differs_from_the_absolute_one_when_it_should() -> None:
    # Lift 1 -> 1.5 with a noisy control: z_abs = 0.5/sqrt(v_t + v_c) = 2.2 but the delta
    # method gives z_rel = 0.5/sqrt(v_t + 1.5**2 v_c) ~ 1.47. The old report printed the
    # absolute p (< 0.05) beside the relative interval (which contains 0).
    control = _stats_with(100, 1.0, (0.5 / 2.2) ** 2 * 100)
    treatment = _stats_with(100, 1.5, 1e-4)
    absolute, relative = absolute_lift(control, treatment), relative_lift(control, treatment)
    assert absolute.p_value < 0.05 < relative.p_value
    assert absolute.ci_lower > 0 > relative.ci_lower
    assert relative.statistic == pytest.approx(0.5 / math.sqrt(1e-6 + 2.25 * (0.5 / 2.2) ** 2), abs=1e-9)


def test_sequential_relative_scale_stays_consistent_with_its_interval() -> None:
    control = SampleStats.from_proportion(100, 1000)
    treatment = SampleStats.from_proportion(140, 1000)
    result = sequential_test(control, treatment, scale=LiftScale.RELATIVE)
    assert result.status is Status.OK
    assert (result.p_value < 0.05) == (result.ci_lower > 0)
