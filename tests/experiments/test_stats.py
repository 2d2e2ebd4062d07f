"""Statistics pinned against hand arithmetic and cross-checked with scipy / statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower, zt_ind_solve_power
from statsmodels.stats.proportion import (
    proportion_effectsize,
    proportions_ztest,
)
from statsmodels.stats.proportion import (
    test_proportions_2indep as two_proportions_test,
)
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ztest

from tacit.experiments.stats import (
    Alternative,
    Correction,
    LiftScale,
    RatioStats,
    SampleStats,
    Status,
    ToleranceKind,
    absolute_lift,
    adjust_p_values,
    harm_test,
    power_means,
    power_proportions,
    proportion_z_test,
    ratio_mean,
    relative_lift,
    required_sample_size_means,
    required_sample_size_proportions,
    sequential_rho,
    sequential_test,
    srm_check,
    welch_t_test,
    z_test,
)

# Textbook pair used throughout:
#   control   = [1, 2, 3, 4]      n=4, sum=10, sum_sq=30,  mean=2.5, var=(30-100/4)/3 = 5/3
#   treatment = [2, 4, 6, 8, 10]  n=5, sum=30, sum_sq=220, mean=6,   var=(220-900/5)/4 = 10
#   v_c = (5/3)/4 = 5/12, v_t = 10/5 = 2, SE = sqrt(29/12) = 1.554563
CONTROL = SampleStats.from_values([1, 2, 3, 4])
TREATMENT = SampleStats.from_values([2, 4, 6, 8, 10])


def _stats_with(n: int, mean: float, variance: float) -> SampleStats:
    """SampleStats whose mean and unbiased variance are exactly the given ones."""
    total = n * mean
    return SampleStats(n, total, variance * (n - 1) + total * total / n)


def test_sample_stats_mean_and_unbiased_variance_by_hand() -> None:
    assert SampleStats(4, 10.0, 30.0) == CONTROL
    assert round(CONTROL.mean, 6) == 2.5
    assert round(CONTROL.variance, 6) == round(5 / 3, 6)
    assert round(TREATMENT.variance, 6) == 10.0
    assert round(TREATMENT.mean_variance, 6) == 2.0
    values = np.random.default_rng(7).normal(3, 2, size=500)
    stats = SampleStats.from_values(values)
    assert round(stats.variance, 9) == round(float(np.var(values, ddof=1)), 9)


def test_sample_stats_refuses_invalid_counts() -> None:
    with pytest.raises(ValueError, match="n must be"):
        SampleStats(-1, 0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        SampleStats(3, math.nan, 1.0)


def test_welch_t_test_by_hand() -> None:
    # t = 3.5 / 1.554563 = 2.251436
    # df = (29/12)^2 / (2^2/4 + (5/12)^2/3) = 5.840278 / 1.057870 = 5.520788
    result = welch_t_test(CONTROL, TREATMENT)
    assert result.status is Status.OK
    assert round(result.estimate, 6) == 3.5
    assert round(result.std_error, 6) == 1.554563
    assert round(result.statistic, 6) == 2.251436
    assert round(result.degrees_of_freedom, 4) == 5.5208
    assert round(result.p_value, 4) == 0.0691  # 2 * t.sf(2.251436, 5.5208)


@pytest.mark.parametrize("alternative", list(Alternative))
def test_welch_t_test_matches_scipy_on_raw_arrays(alternative: Alternative) -> None:
    rng = np.random.default_rng(11)
    control = rng.normal(10, 3, size=40)
    treatment = rng.normal(11.5, 5, size=55)
    expected = scipy_stats.ttest_ind(treatment, control, equal_var=False, alternative=alternative.value)
    interval = expected.confidence_interval(0.95)
    result = welch_t_test(
        SampleStats.from_values(control),
        SampleStats.from_values(treatment),
        alternative=alternative,
    )
    assert round(result.statistic, 9) == round(float(expected.statistic), 9)
    assert round(result.p_value, 9) == round(float(expected.pvalue), 9)
    assert round(result.degrees_of_freedom, 6) == round(float(expected.df), 6)
    assert round(result.ci_lower, 6) == round(float(interval.low), 6)
    assert round(result.ci_upper, 6) == round(float(interval.high), 6)


@pytest.mark.parametrize("alternative", list(Alternative))
def test_z_test_matches_statsmodels_unequal_variance_ztest(alternative: Alternative) -> None:
    rng = np.random.default_rng(12)
    control = rng.normal(0, 1, size=300)
    treatment = rng.normal(0.2, 2, size=250)
    statistic, p_value = ztest(treatment, control, usevar="unequal", alternative=alternative.statsmodels_name)
    result = z_test(
        SampleStats.from_values(control),
        SampleStats.from_values(treatment),
        alternative=alternative,
    )
    assert round(result.statistic, 9) == round(float(statistic), 9)
    assert round(result.p_value, 9) == round(float(p_value), 9)
    if alternative is Alternative.TWO_SIDED:
        compare = CompareMeans(DescrStatsW(treatment), DescrStatsW(control))
        low, high = compare.zconfint_diff(usevar="unequal")
        assert (round(result.ci_lower, 9), round(result.ci_upper, 9)) == (
            round(float(low), 9),
            round(float(high), 9),
        )


def test_z_test_by_hand() -> None:
    # z = 3.5 / 1.554563 = 2.251436; p = 2 * (1 - Phi(2.251436)) = 0.024358
    result = z_test(CONTROL, TREATMENT)
    assert round(result.p_value, 5) == 0.02436
    one_sided = z_test(CONTROL, TREATMENT, alternative=Alternative.GREATER)
    assert round(one_sided.p_value, 5) == 0.01218
    assert one_sided.ci_upper == math.inf
    # lower bound 3.5 - 1.6448536 * 1.5545632 = 3.5 - 2.557029 = 0.942971
    assert round(one_sided.ci_lower, 5) == 0.94297


def test_proportion_z_test_by_hand_and_against_statsmodels() -> None:
    # 100/1000 vs 130/1000: p_bar = 0.115, SE = sqrt(0.115 * 0.885 * 0.002) = 0.0142671
    # z = 0.03 / 0.0142671 = 2.102737, p = 0.035485
    control = SampleStats.from_proportion(100, 1000)
    treatment = SampleStats.from_proportion(130, 1000)
    result = proportion_z_test(control, treatment)
    assert round(result.statistic, 5) == 2.10274
    assert round(result.p_value, 5) == 0.03549
    statistic, p_value = proportions_ztest([130, 100], [1000, 1000])
    assert round(result.statistic, 9) == round(float(statistic), 9)
    assert round(result.p_value, 9) == round(float(p_value), 9)
    unpooled = proportion_z_test(control, treatment, pooled=False)
    wald = two_proportions_test(130, 1000, 100, 1000, method="wald")
    assert round(unpooled.statistic, 9) == round(float(wald.statistic), 9)
    assert round(unpooled.p_value, 9) == round(float(wald.pvalue), 9)
    wald_se = math.sqrt(0.13 * 0.87 / 1000 + 0.1 * 0.9 / 1000)  # 0.0142794
    assert round(unpooled.statistic, 6) == round(0.03 / wald_se, 6)
    # The CI is the unpooled Wald interval: 0.03 +- 1.959964 * 0.0142794
    assert round(result.ci_lower, 5) == round(0.03 - 1.959964 * wald_se, 5)


def test_absolute_and_relative_lift_by_hand() -> None:
    absolute = absolute_lift(CONTROL, TREATMENT)
    # Welch t, as gbstats (changed on purpose from the normal critical value 1.959964):
    # 3.5 +- t_{0.975, df=5.520788} * 1.554563 = 3.5 +- 2.499331 * 1.554563 = 3.5 +- 3.885368
    assert round(absolute.ci_lower, 4) == -0.3854
    assert round(absolute.ci_upper, 4) == 7.3854
    assert round(absolute.p_value, 4) == 0.0691  # the same Welch t as welch_t_test
    relative = relative_lift(CONTROL, TREATMENT)
    # r = 6/2.5 - 1 = 1.4; Var = v_t/m_c^2 + m_t^2 v_c/m_c^4 = 2/6.25 + 36*(5/12)/39.0625
    #   = 0.32 + 0.384 = 0.704, SE = 0.839047
    assert relative.scale is LiftScale.RELATIVE
    assert round(relative.estimate, 6) == 1.4
    assert round(relative.std_error, 6) == 0.839047
    # CI 1.4 - 2.499331 * 0.839047 = -0.697056; its own p: 2 * t.sf(1.4 / 0.839047, 5.520788)
    assert round(relative.ci_lower, 4) == round(1.4 - 2.499331 * math.sqrt(0.704), 4)
    assert round(relative.p_value, 4) == 0.1505
    assert round(relative.degrees_of_freedom, 6) == 5.520788


def test_relative_lift_delta_method_matches_numeric_gradient() -> None:
    # Var(m_t/m_c) = g' diag(v_t, v_c) g with g = (1/m_c, -m_t/m_c^2), evaluated numerically.
    rng = np.random.default_rng(3)
    control = SampleStats.from_values(rng.exponential(2.0, size=400))
    treatment = SampleStats.from_values(rng.exponential(2.3, size=380))
    eps = 1e-6
    gradient = (
        np.array(
            [
                (treatment.mean + eps) / control.mean - treatment.mean / control.mean,
                treatment.mean / (control.mean + eps) - treatment.mean / control.mean,
            ]
        )
        / eps
    )
    variance = gradient @ np.diag([treatment.mean_variance, control.mean_variance]) @ gradient
    assert round(relative_lift(control, treatment).std_error, 5) == round(math.sqrt(variance), 5)


def test_ratio_mean_delta_method_by_hand() -> None:
    # (num, den) per subject: (1,1) (2,2) (3,1) (0,2)
    # n=4, mu_x = mu_y = 1.5, var_x = (14-9)/3 = 5/3, var_y = (10-9)/3 = 1/3, cov = (8-9)/3
    # Var(R) = (1/4)[(5/3)/2.25 + 2*1.5*(1/3)/3.375 + 2.25*(1/3)/5.0625]
    #        = (1/4)[0.740741 + 0.296296 + 0.148148] = 0.296296
    stats = RatioStats.from_values([1, 2, 3, 0], [1, 2, 1, 2])
    assert stats == RatioStats(4, 6.0, 6.0, 14.0, 10.0, 8.0)
    estimate = ratio_mean(stats)
    assert estimate.status is Status.OK
    assert round(estimate.mean, 6) == 1.0
    assert round(estimate.variance, 6) == 0.296296


def test_ratio_mean_matches_gradient_times_covariance() -> None:
    rng = np.random.default_rng(5)
    den = rng.poisson(3, size=1000) + 1
    num = rng.gamma(2.0, 1.5, size=1000) * den
    estimate = ratio_mean(RatioStats.from_values(num, den))
    gradient = np.array([1 / den.mean(), -num.mean() / den.mean() ** 2])
    expected = gradient @ np.cov(np.vstack([num, den])) @ gradient / den.size
    assert round(estimate.variance, 10) == round(float(expected), 10)


def test_ratio_metrics_flow_through_the_tests() -> None:
    rng = np.random.default_rng(6)
    arms = []
    for lift in (1.0, 1.1):
        den = rng.poisson(2, size=2000) + 1
        arms.append(RatioStats.from_values(rng.gamma(2, lift, size=2000) * den, den))
    result = z_test(arms[0], arms[1])
    assert result.status is Status.OK
    assert round(result.std_error, 9) == round(math.sqrt(arms[0].mean_variance + arms[1].mean_variance), 9)


def test_sequential_rho_and_confidence_sequence_by_hand() -> None:
    # alpha = 0.05, n* = 10: -2 ln 0.05 = 5.991465, ln(6.991465) = 1.944691
    # rho^2 = 7.936156 / 10 = 0.7936156 -> rho = 0.890851
    assert round(sequential_rho(0.05, 10), 6) == 0.890851
    # N = 9, r = 9 * 0.7936156 = 7.142540, z = 2.251436, z^2 = 5.068964
    # ln Lambda = -0.5 ln(8.142540) + (7.142540/8.142540) * 5.068964/2
    #           = -1.048511 + 0.877188 * 2.534482 = 1.174708 -> p = exp(-1.174708) = 0.3089
    # half width = 1.554563 * sqrt(2 * 8.142540/7.142540 * (0.5 ln 8.142540 + 2.995732))
    #            = 1.554563 * sqrt(2.280012 * 4.044243) = 1.554563 * 3.036606 = 4.720597
    result = sequential_test(CONTROL, TREATMENT, alpha=0.05, tuning_n=10)
    assert result.status is Status.OK
    assert result.n_total == 9
    assert round(result.p_value, 4) == 0.3089
    assert round(result.ci_lower, 3) == round(3.5 - 4.720597, 3)
    assert round(result.ci_upper, 3) == round(3.5 + 4.720597, 3)


def test_sequential_p_below_alpha_iff_interval_excludes_zero() -> None:
    rng = np.random.default_rng(8)
    for shift in np.linspace(0.0, 0.4, 21):
        control = SampleStats.from_values(rng.normal(0, 1, size=300))
        treatment = SampleStats.from_values(rng.normal(shift, 1, size=300))
        result = sequential_test(control, treatment, tuning_n=600)
        assert (result.p_value < 0.05) == (result.ci_lower > 0 or result.ci_upper < 0)


def test_sequential_interval_is_wider_than_fixed_horizon_and_p_is_monotone() -> None:
    fixed = absolute_lift(CONTROL, TREATMENT)
    sequential = sequential_test(CONTROL, TREATMENT, tuning_n=9)
    assert sequential.ci_upper - sequential.ci_lower > fixed.ci_upper - fixed.ci_lower
    assert sequential_test(CONTROL, TREATMENT, previous_p_value=0.01).p_value == 0.01


def test_srm_check_by_hand() -> None:
    # expected 5100 each: chi2 = 2 * 100^2 / 5100 = 3.921569, p = 0.0477 -> no alert
    fine = srm_check([5000, 5200], [0.5, 0.5])
    assert round(fine.statistic, 6) == 3.921569
    assert round(fine.p_value, 4) == 0.0477
    assert not fine.mismatch
    # expected 5200 each: chi2 = 2 * 200^2 / 5200 = 15.384615, p = 8.8e-5 < 0.001 -> alert
    broken = srm_check([5000, 5400], [50, 50])
    assert round(broken.statistic, 6) == 15.384615
    assert broken.mismatch
    # unequal weights: expected 2500 / 7500, chi2 = 50^2/2500 + 50^2/7500 = 1.333333
    assert round(srm_check([2550, 7450], [0.25, 0.75]).statistic, 6) == 1.333333


def test_holm_and_benjamini_hochberg_by_hand() -> None:
    # Holm: sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> cummax 0.03, 0.06, 0.06
    assert adjust_p_values([0.01, 0.04, 0.03]) == pytest.approx((0.03, 0.06, 0.06))
    # BH: 0.01*3/1, 0.03*3/2, 0.04*3/3 = 0.03, 0.045, 0.04 -> cummin from top 0.03, 0.04, 0.04
    assert adjust_p_values([0.01, 0.04, 0.03], Correction.BENJAMINI_HOCHBERG) == pytest.approx(
        (0.03, 0.04, 0.04)
    )
    rng = np.random.default_rng(2)
    for p_values in (rng.uniform(size=12), rng.uniform(0, 0.1, size=7), np.array([0.5, 0.5])):
        for method in Correction:
            assert adjust_p_values(p_values, method) == pytest.approx(
                tuple(multipletests(p_values, method=method.value)[1]), abs=1e-12
            )


def test_nan_p_values_stay_out_of_the_family() -> None:
    adjusted = adjust_p_values([0.01, math.nan, 0.04])
    assert math.isnan(adjusted[1])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)


# Harm fixtures: n = 10 000 per arm, variance 4, control mean 10, treatment mean 9.5.
# Absolute SE = sqrt(2 * 4 / 10 000) = 0.0282843, z_0.95 = 1.644854 -> half width
# 1.6448536 * 0.02828427 = 0.0465235.
# Relative: r = -0.05, Var = 0.0004/100 + 90.25 * 0.0004/10 000 = 7.61e-6, SE = 0.00275862,
# half width = 0.00453757.
HARM_CONTROL = _stats_with(10_000, 10.0, 4.0)
HARM_TREATMENT = _stats_with(10_000, 9.5, 4.0)


@pytest.mark.parametrize(
    ("higher_is_better", "tolerance", "kind", "harmed", "cleared", "lower", "upper"),
    [
        # higher is better: degradation 0.5, bounds 0.5 -+ 0.0465235
        (True, 0.3, ToleranceKind.ABSOLUTE, True, False, 0.453477, 0.546523),
        (True, 0.6, ToleranceKind.ABSOLUTE, False, True, 0.453477, 0.546523),
        (True, 0.5, ToleranceKind.ABSOLUTE, False, False, 0.453477, 0.546523),
        # relative: degradation 5 % -+ 0.453757 %
        (True, 0.02, ToleranceKind.RELATIVE, True, False, 0.045462, 0.054538),
        (True, 0.06, ToleranceKind.RELATIVE, False, True, 0.045462, 0.054538),
        # lower is better: the drop is an improvement, degradation -0.5
        (False, 0.0, ToleranceKind.ABSOLUTE, False, True, -0.546523, -0.453477),
    ],
)
def test_harm_test_by_hand(
    higher_is_better: bool,
    tolerance: float,
    kind: ToleranceKind,
    harmed: bool,
    cleared: bool,
    lower: float,
    upper: float,
) -> None:
    result = harm_test(
        HARM_CONTROL,
        HARM_TREATMENT,
        higher_is_better=higher_is_better,
        tolerance=tolerance,
        tolerance_kind=kind,
    )
    assert (result.harmed, result.cleared) == (harmed, cleared)
    assert (round(result.lower_bound, 6), round(result.upper_bound, 6)) == (lower, upper)


def test_sequential_harm_bounds_are_the_confidence_sequence() -> None:
    result = harm_test(
        HARM_CONTROL,
        HARM_TREATMENT,
        higher_is_better=True,
        tolerance=0.3,
        tolerance_kind=ToleranceKind.ABSOLUTE,
        sequential_tuning_n=20_000,
    )
    sequence = sequential_test(HARM_CONTROL, HARM_TREATMENT, tuning_n=20_000)
    assert result.lower_bound == pytest.approx(-sequence.ci_upper)
    assert result.upper_bound == pytest.approx(-sequence.ci_lower)
    assert result.harmed


def test_sample_size_for_means_by_hand_and_statsmodels() -> None:
    # d = 1/4; n = (1.959964 + 0.841621)^2 * 2 / 0.0625 = 7.848879 * 32 = 251.16 -> 252
    n = required_sample_size_means(1.0, 4.0)
    assert n == 252
    assert n == math.ceil(zt_ind_solve_power(effect_size=0.25, alpha=0.05, power=0.8))
    assert round(power_means(1.0, 4.0, 252), 3) == 0.801
    # one-sided, ratio 2: n = (1.644854 + 0.841621)^2 * (1 + 1/2) / 0.0625 = 148.4 -> 149
    assert required_sample_size_means(1.0, 4.0, ratio=2.0, alternative=Alternative.GREATER) == 149


def test_sample_size_for_proportions_against_cohens_h() -> None:
    # h = 2 asin(sqrt 0.12) - 2 asin(sqrt 0.10); n = (z_0.975 + z_0.8)^2 * 2 / h^2
    h = 2 * math.asin(math.sqrt(0.12)) - 2 * math.asin(math.sqrt(0.10))
    assert round(h, 6) == round(float(proportion_effectsize(0.12, 0.10)), 6)
    by_formula = (scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)) ** 2 * 2 / h**2
    n = required_sample_size_proportions(0.10, 0.02)
    assert abs(n - by_formula) <= 1
    assert n == math.ceil(NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8))
    assert round(power_proportions(0.10, 0.02, n), 2) == 0.80
    assert power_proportions(0.10, 0.02, 2 * n) > 0.97


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: required_sample_size_proportions(0.10, 0.0), "non-zero"),
        (lambda: required_sample_size_proportions(0.95, 0.10), r"\(0, 1\)"),
        (lambda: required_sample_size_means(1.0, 0.0), "std_dev"),
        (lambda: power_means(1.0, 1.0, 100, alpha=1.5), "alpha"),
        (lambda: srm_check([1, 2], [0.5]), "same length"),
        (lambda: srm_check([1, 2], [0.5, 0.0]), "positive"),
    ],
)
def test_invalid_arguments_raise_value_error(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]


EMPTY = SampleStats(0, 0.0, 0.0)
SINGLE = SampleStats.from_values([3.0])
CONSTANT = SampleStats.from_values([0.1] * 50)
CONSTANT_OTHER = SampleStats.from_values([0.3] * 40)
ZERO_MEAN = SampleStats.from_values([-1.0, 1.0, 0.0])


@pytest.mark.parametrize(
    ("control", "treatment", "status"),
    [
        (EMPTY, TREATMENT, Status.INSUFFICIENT_DATA),
        (CONTROL, EMPTY, Status.INSUFFICIENT_DATA),
        (SINGLE, TREATMENT, Status.INSUFFICIENT_DATA),
        (CONSTANT, CONSTANT_OTHER, Status.ZERO_VARIANCE),
    ],
)
def test_degenerate_arms_return_a_status_not_an_exception(
    control: SampleStats, treatment: SampleStats, status: Status
) -> None:
    for test in (welch_t_test, z_test):
        result = test(control, treatment)
        assert result.status is status
        assert math.isnan(result.p_value)
    assert absolute_lift(control, treatment).status is status
    assert sequential_test(control, treatment).status is status
    assert math.isnan(sequential_test(control, treatment).p_value)
    harm = harm_test(control, treatment, higher_is_better=True, tolerance=0.1)
    assert harm.status is status and not harm.harmed and not harm.cleared


def test_zero_variance_is_detected_despite_rounding() -> None:
    assert CONSTANT.variance == 0.0


def test_zero_baseline_and_zero_denominator_statuses() -> None:
    assert relative_lift(ZERO_MEAN, TREATMENT).status is Status.ZERO_BASELINE
    assert sequential_test(ZERO_MEAN, TREATMENT, scale=LiftScale.RELATIVE).status is Status.ZERO_BASELINE
    no_denominator = RatioStats(3, 0.0, 0.0, 0.0, 0.0, 0.0)
    some = RatioStats.from_values([1, 2, 3], [1, 1, 2])
    assert ratio_mean(no_denominator).status is Status.ZERO_DENOMINATOR
    assert z_test(no_denominator, some).status is Status.ZERO_DENOMINATOR


def test_empty_proportions_and_srm_return_statuses() -> None:
    none_clicked = SampleStats.from_proportion(0, 100)
    assert proportion_z_test(none_clicked, none_clicked).status is Status.ZERO_VARIANCE
    assert proportion_z_test(EMPTY, none_clicked).status is Status.INSUFFICIENT_DATA
    empty = srm_check([0, 0], [0.5, 0.5])
    assert empty.status is Status.INSUFFICIENT_DATA and not empty.mismatch


def test_guardrail_that_falls_to_zero_is_harmed_on_the_relative_scale() -> None:
    # Control converts 100/1000 (p = 0.1); treatment converts 0/1000. The delta-method
    # variance collapses to 0 (m_t = 0, v_t = 0); the fallback SE is SE(d)/m_c with
    # v_c = 0.1*0.9*1000/999/1000 = 9.009e-5, SE(d) = 0.009492, SE = 0.09492.
    # Degradation = 1.0 (−100%); lower bound 1 − 1.645*0.0949 = 0.844 > tolerance 0.05.
    from tacit.experiments.stats import SampleStats, ToleranceKind, harm_test

    control = SampleStats.from_proportion(100, 1000)
    treatment = SampleStats.from_proportion(0, 1000)
    result = harm_test(control, treatment, higher_is_better=True, tolerance=0.05,
                       tolerance_kind=ToleranceKind.RELATIVE)
    assert result.harmed
    assert round(result.degradation, 6) == 1.0
    assert 0.8 < result.lower_bound < 0.9
