"""Fixed-horizon tests of treatment − control: Welch's t, the z-test, the two-proportion z-test."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as scipy_stats

from tacit.experiments.stats.core import NAN, Alternative, LiftScale, Status, check_alpha
from tacit.experiments.stats.lifts import interval, pair_status, t_test
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


def _degenerate(status: Status, estimate: float, alternative: Alternative, alpha: float) -> ComparisonResult:
    return ComparisonResult(status, estimate, NAN, NAN, NAN, NAN, NAN, NAN, alternative, alpha)


def welch_t_test(
    control: MeanStats,
    treatment: MeanStats,
    *,
    alternative: Alternative = Alternative.TWO_SIDED,
    alpha: float = 0.05,
) -> ComparisonResult:
    """Welch's unequal-variance t-test of m_t − m_c (equals scipy `ttest_ind_from_stats`).

    t = (m_t − m_c) / sqrt(v_t + v_c), Welch–Satterthwaite
    df = (v_t + v_c)² / (v_t²/(n_t − 1) + v_c²/(n_c − 1)), v = variance of an arm's mean.
    Ratio metrics enter through their delta-method v, CUPED arms through their adjusted v.
    """
    result = t_test(control, treatment, LiftScale.ABSOLUTE, alternative=alternative, alpha=alpha)
    if result.status is not Status.OK:
        return _degenerate(result.status, result.estimate, result.alternative, alpha)
    return ComparisonResult(
        result.status,
        result.estimate,
        result.std_error,
        result.statistic,
        result.p_value,
        result.ci_lower,
        result.ci_upper,
        result.degrees_of_freedom,
        result.alternative,
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
    lower, upper = interval(estimate, std_error, critical, alternative)
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
    unpooled SE (the pooled one is only right under the null). An arm below 2 subjects is
    INSUFFICIENT_DATA; a zero unpooled SE (every arm constant) is DEGENERATE, not a
    zero-width interval; a sum outside [0, n] is not a proportion and raises ValueError.
    """
    check_alpha(alpha)
    alternative = Alternative(alternative)
    for name, arm in (("control", control), ("treatment", treatment)):
        if not 0 <= arm.sum <= arm.n:
            raise ValueError(f"{name}: a proportion needs 0 <= successes (sum) <= n")
    if control.n < 2 or treatment.n < 2:
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
    if unpooled_se <= 0:
        # Every outcome within each arm is the same (0/50 vs 50/50): the pooled test has an
        # error under the null, but the interval would have zero width. Say so.
        return _degenerate(Status.DEGENERATE, estimate, alternative, alpha)
    result = _normal_test(estimate, test_se, alternative, alpha)
    tail = alpha if alternative is not Alternative.TWO_SIDED else alpha / 2
    lower, upper = interval(estimate, unpooled_se, float(scipy_stats.norm.ppf(1 - tail)), alternative)
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
