"""Treatment effects (absolute and relative lift), each with its own Welch t interval and p-value."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as scipy_stats

from tacit.experiments.stats.core import NAN, Alternative, LiftScale, Status, check_alpha
from tacit.experiments.stats.sufficient import MeanStats, RatioStats


def pair_status(control: MeanStats, treatment: MeanStats) -> Status:
    """Status shared by every two-arm comparison, before any scale-specific check."""
    if control.n < 2 or treatment.n < 2:
        return Status.INSUFFICIENT_DATA
    for arm in (control, treatment):
        if isinstance(arm, RatioStats) and arm.sum_den == 0:
            return Status.ZERO_DENOMINATOR
    if control.mean_variance + treatment.mean_variance <= 0:
        return Status.ZERO_VARIANCE
    return Status.OK


@dataclass(frozen=True)
class LiftResult:
    """A treatment effect with its own test: Welch t statistic, p-value and (1 − alpha) CI.

    The p-value and the interval come from the same statistic on the same scale, so
    ``p < alpha`` exactly when the interval excludes 0 (never a p from another test).
    """

    status: Status
    scale: LiftScale
    estimate: float
    std_error: float
    ci_lower: float
    ci_upper: float
    alpha: float
    statistic: float = NAN
    p_value: float = NAN
    degrees_of_freedom: float = NAN
    alternative: Alternative = Alternative.TWO_SIDED


def welch_df(control: MeanStats, treatment: MeanStats) -> float:
    """Welch–Satterthwaite df = (v_t + v_c)² / (v_t²/(n_t − 1) + v_c²/(n_c − 1)), v = Var(mean).

    gbstats uses this df for both the absolute and the delta-method relative statistic.
    """
    var_t, var_c = treatment.mean_variance, control.mean_variance
    return float((var_t + var_c) ** 2 / (var_t**2 / (treatment.n - 1) + var_c**2 / (control.n - 1)))


def effect(control: MeanStats, treatment: MeanStats, scale: LiftScale) -> tuple[Status, float, float]:
    """(status, estimate, std_error) of the effect on the given scale.

    Absolute: d = m_t − m_c, Var(d) = v_t + v_c (v = variance of each arm's mean).
    Relative (delta method, as gbstats): r = (m_t − m_c)/u_c with u the unadjusted means
    (u = m without CUPED, so r = m_t/m_c − 1), Var(r) ≈ v_t/u_c² + u_t²·v_c/u_c⁴.
    """
    status = pair_status(control, treatment)
    mean_c, mean_t = control.mean, treatment.mean
    var_c, var_t = control.mean_variance, treatment.mean_variance
    if scale is LiftScale.ABSOLUTE:
        estimate = mean_t - mean_c
        if status is not Status.OK:
            return status, estimate, NAN
        return status, estimate, math.sqrt(var_t + var_c)
    if status is Status.INSUFFICIENT_DATA or status is Status.ZERO_DENOMINATOR:
        return status, NAN, NAN
    base_c, base_t = control.unadjusted_mean, treatment.unadjusted_mean
    if base_c == 0:
        return Status.ZERO_BASELINE, NAN, NAN
    estimate = (mean_t - mean_c) / base_c
    if status is not Status.OK:
        return status, estimate, NAN
    variance = var_t / base_c**2 + base_t**2 * var_c / base_c**4
    if not variance > 0:
        # A treatment constant at 0 (no conversions at all) collapses the delta method to 0.
        # Fall back to the absolute-scale error carried to the relative scale, SE(d)/|m_c|,
        # so that the worst harm (a metric falling to zero) is still detected.
        variance = (var_t + var_c) / base_c**2
        if not variance > 0:
            return Status.ZERO_VARIANCE, estimate, NAN
    return status, estimate, math.sqrt(variance)


def interval(
    estimate: float, std_error: float, critical: float, alternative: Alternative
) -> tuple[float, float]:
    """Two-sided ``estimate ± critical·SE`` or the matching one-sided bound."""
    if alternative is Alternative.GREATER:
        return estimate - critical * std_error, math.inf
    if alternative is Alternative.LESS:
        return -math.inf, estimate + critical * std_error
    return estimate - critical * std_error, estimate + critical * std_error


def t_test(
    control: MeanStats,
    treatment: MeanStats,
    scale: LiftScale,
    *,
    alternative: Alternative = Alternative.TWO_SIDED,
    alpha: float = 0.05,
) -> LiftResult:
    """Welch t on `scale`: t = θ̂/SE, df from `welch_df`, CI θ̂ ± t_{df}·SE (gbstats' TTest)."""
    check_alpha(alpha)
    alternative = Alternative(alternative)
    scale = LiftScale(scale)
    status, estimate, std_error = effect(control, treatment, scale)
    if status is not Status.OK:
        return LiftResult(status, scale, estimate, std_error, NAN, NAN, alpha, alternative=alternative)
    df = welch_df(control, treatment)
    statistic = estimate / std_error
    if alternative is Alternative.GREATER:
        p_value = float(scipy_stats.t.sf(statistic, df))
    elif alternative is Alternative.LESS:
        p_value = float(scipy_stats.t.cdf(statistic, df))
    else:
        p_value = float(2 * scipy_stats.t.sf(abs(statistic), df))
    tail = alpha if alternative is not Alternative.TWO_SIDED else alpha / 2
    lower, upper = interval(estimate, std_error, float(scipy_stats.t.ppf(1 - tail, df)), alternative)
    return LiftResult(
        status, scale, estimate, std_error, lower, upper, alpha, statistic, p_value, df, alternative
    )


def absolute_lift(control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05) -> LiftResult:
    """m_t − m_c with its Welch t test: CI ± t_{1−α/2, df} · sqrt(v_t + v_c), and its p."""
    return t_test(control, treatment, LiftScale.ABSOLUTE, alpha=alpha)


def relative_lift(control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05) -> LiftResult:
    """(m_t − m_c)/m_c with a delta-method SE, the Welch df and t critical value (gbstats),
    and the p-value of that same statistic."""
    return t_test(control, treatment, LiftScale.RELATIVE, alpha=alpha)
