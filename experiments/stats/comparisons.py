"""Fixed-horizon tests of treatment − control: Welch's t, the z-test, the two-proportion z-test."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as scipy_stats

from tacit.experiments.stats.core import NAN, Alternative, Status, check_alpha
from tacit.experiments.stats.lifts import pair_status
from tacit.experiments.stats.sufficient import MeanStats, SampleStats


@dataclass(frozen=True)
class ComparisonResult:
    """A fixed-horizon test of ``treatment − control``.

    The CI matches the alternative: two-sided, or one-sided ``[lower, inf)`` for GREATER
    and ``(-inf, upper]`` for LESS, so that ``p < alpha`` iff the CI excludes 0.
    """

    status: Status
    estimate: float
    std_error: float
    statistic: float
    p_value: float
    ci_lower: float
    ci_upper: float
    degrees_of_freedom: float
    alternative: Alternative
    alpha: float


def _interval(
    estimate: float, std_error: float, critical: float, alternative: Alternative
) -> tuple[float, float]:
    if alternative is Alternative.GREATER:
        return estimate - critical * std_error, math.inf
    if alternative is Alternative.LESS:
        return -math.inf, estimate + critical * std_error
    return estimate - critical * std_error, estimate + critical * std_error


def _degenerate(status: Status, estimate: float, alternative: Alternative, alpha: float) -> ComparisonResult:
    return ComparisonResult(status, estimate, NAN, NAN, NAN, NAN, NAN, NAN, alternative, alpha)


def welch_t_test(
    control: MeanStats,
    treatment: MeanStats,
    *,
    alternative: Alternative = Alternative.TWO_SIDED,
    alpha: float = 0.05,
) -> ComparisonResult:
    """Welch's unequal-variance t-test of m_t − m_c (scipy `ttest_ind_from_stats`).

    t = (m_t − m_c) / sqrt(v_t + v_c), Welch–Satterthwaite
    df = (v_t + v_c)² / (v_t²/(n_t − 1) + v_c²/(n_c − 1)), v = variance of an arm's mean.
    Ratio metrics enter through their delta-method v.
    """
    check_alpha(alpha)
    alternative = Alternative(alternative)
    status = pair_status(control, treatment)
    estimate = treatment.mean - control.mean
    if status is not Status.OK:
        return _degenerate(status, estimate, alternative, alpha)
    var_t, var_c = treatment.mean_variance, control.mean_variance
    # scipy wants per-observation standard deviations: std = sqrt(v * n).
    result = scipy_stats.ttest_ind_from_stats(
        treatment.mean,
        math.sqrt(var_t * treatment.n),
        treatment.n,
        control.mean,
        math.sqrt(var_c * control.n),
        control.n,
        equal_var=False,
        alternative=alternative.value,
    )
    std_error = math.sqrt(var_t + var_c)
    df = (var_t + var_c) ** 2 / (var_t**2 / (treatment.n - 1) + var_c**2 / (control.n - 1))
    tail = alpha if alternative is not Alternative.TWO_SIDED else alpha / 2
    critical = float(scipy_stats.t.ppf(1 - tail, df))
    lower, upper = _interval(estimate, std_error, critical, alternative)
    return ComparisonResult(
        status,
        estimate,
        std_error,
        float(result.statistic),
        float(result.pvalue),
        lower,
        upper,
        df,
        alternative,
        alpha,
    )


def _normal_test(
    estimate: float, std_error: float, alternative: Alternative, alpha: float
) -> ComparisonResult:
    statistic = estimate / std_error
    if alternative is Alternative.GREATER:
        p_value = float(scipy_stats.norm.sf(statistic))
    elif alternative is Alternative.LESS:
        p_value = float(scipy_stats.norm.cdf(statistic))
    else:
        p_value = float(2 * scipy_stats.norm.sf(abs(statistic)))
    tail = alpha if alternative is not Alternative.TWO_SIDED else alpha / 2
    critical = float(scipy_stats.norm.ppf(1 - tail))
    lower, upper = _interval(estimate, std_error, critical, alternative)
    return ComparisonResult(
        Status.OK,
        estimate,
        std_error,
        statistic,
        p_value,
        lower,
        upper,
        math.inf,
        alternative,
        alpha,
    )


def z_test(
    control: MeanStats,
    treatment: MeanStats,
    *,
    alternative: Alternative = Alternative.TWO_SIDED,
    alpha: float = 0.05,
) -> ComparisonResult:
    """Two-sample z-test with unpooled variances: z = (m_t − m_c) / sqrt(v_t + v_c).

    Matches statsmodels ``ztest(x_t, x_c, usevar='unequal')``; the large-sample test
    for means and ratio metrics (degrees_of_freedom is inf).
    """
    check_alpha(alpha)
    alternative = Alternative(alternative)
    status = pair_status(control, treatment)
    estimate = treatment.mean - control.mean
    if status is not Status.OK:
        return _degenerate(status, estimate, alternative, alpha)
    std_error = math.sqrt(treatment.mean_variance + control.mean_variance)
    return _normal_test(estimate, std_error, alternative, alpha)


def proportion_z_test(
    control: SampleStats,
    treatment: SampleStats,
    *,
    alternative: Alternative = Alternative.TWO_SIDED,
    alpha: float = 0.05,
    pooled: bool = True,
) -> ComparisonResult:
    """Two-proportion z-test on 0/1 outcomes (sum = number of successes).

    Pooled (the textbook test, statsmodels ``proportions_ztest`` default):
    SE = sqrt(p̄(1 − p̄)(1/n_t + 1/n_c)), p̄ = (x_t + x_c)/(n_t + n_c).
    Unpooled: SE = sqrt(p_t(1 − p_t)/n_t + p_c(1 − p_c)/n_c). The CI always uses the
    unpooled SE (the pooled one is only right under the null).
    """
    check_alpha(alpha)
    alternative = Alternative(alternative)
    if control.n < 1 or treatment.n < 1:
        return _degenerate(Status.INSUFFICIENT_DATA, NAN, alternative, alpha)
    p_c, p_t = control.mean, treatment.mean
    estimate = p_t - p_c
    unpooled_se = math.sqrt(p_t * (1 - p_t) / treatment.n + p_c * (1 - p_c) / control.n)
    if pooled:
        p_bar = (control.sum + treatment.sum) / (control.n + treatment.n)
        test_se = math.sqrt(p_bar * (1 - p_bar) * (1 / treatment.n + 1 / control.n))
    else:
        test_se = unpooled_se
    if test_se <= 0:
        return _degenerate(Status.ZERO_VARIANCE, estimate, alternative, alpha)
    result = _normal_test(estimate, test_se, alternative, alpha)
    tail = alpha if alternative is not Alternative.TWO_SIDED else alpha / 2
    lower, upper = _interval(estimate, unpooled_se, float(scipy_stats.norm.ppf(1 - tail)), alternative)
    return ComparisonResult(
        Status.OK,
        estimate,
        test_se,
        result.statistic,
        result.p_value,
        lower,
        upper,
        math.inf,
        alternative,
        alpha,
    )
