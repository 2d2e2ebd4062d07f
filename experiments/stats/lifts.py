"""Treatment effects (absolute and relative lift) with their standard errors and normal intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats as scipy_stats

from tacit.experiments.stats.core import NAN, LiftScale, Status, check_alpha
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
    """A treatment effect with its standard error and two-sided (1 − alpha) normal CI."""

    status: Status
    scale: LiftScale
    estimate: float
    std_error: float
    ci_lower: float
    ci_upper: float
    alpha: float


def effect(control: MeanStats, treatment: MeanStats, scale: LiftScale) -> tuple[Status, float, float]:
    """(status, estimate, std_error) of the effect on the given scale.

    Absolute: d = m_t − m_c, Var(d) = v_t + v_c (v = variance of each arm's mean).
    Relative (delta method, as gbstats): r = m_t/m_c − 1,
    Var(r) ≈ v_t/m_c² + m_t²·v_c/m_c⁴.
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
    if mean_c == 0:
        return Status.ZERO_BASELINE, NAN, NAN
    estimate = mean_t / mean_c - 1
    if status is not Status.OK:
        return status, estimate, NAN
    variance = var_t / mean_c**2 + mean_t**2 * var_c / mean_c**4
    if not variance > 0:
        # A treatment constant at 0 (no conversions at all) collapses the delta method to 0.
        # Fall back to the absolute-scale error carried to the relative scale, SE(d)/|m_c|,
        # so that the worst harm (a metric falling to zero) is still detected.
        variance = (var_t + var_c) / mean_c**2
        if not variance > 0:
            return Status.ZERO_VARIANCE, estimate, NAN
    return status, estimate, math.sqrt(variance)


def _lift(control: MeanStats, treatment: MeanStats, scale: LiftScale, alpha: float) -> LiftResult:
    check_alpha(alpha)
    status, estimate, std_error = effect(control, treatment, scale)
    if status is not Status.OK:
        return LiftResult(status, scale, estimate, std_error, NAN, NAN, alpha)
    half_width = float(scipy_stats.norm.ppf(1 - alpha / 2)) * std_error
    return LiftResult(status, scale, estimate, std_error, estimate - half_width, estimate + half_width, alpha)


def absolute_lift(control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05) -> LiftResult:
    """m_t − m_c with a normal CI: ± z_{1−α/2} · sqrt(v_t + v_c)."""
    return _lift(control, treatment, LiftScale.ABSOLUTE, alpha)


def relative_lift(control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05) -> LiftResult:
    """m_t/m_c − 1 with a delta-method normal CI (Var ≈ v_t/m_c² + m_t²·v_c/m_c⁴)."""
    return _lift(control, treatment, LiftScale.RELATIVE, alpha)
