"""Guardrail harm: whether a metric degraded beyond (or stayed within) its tolerance."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from scipy import stats as scipy_stats

from tacit.experiments.stats.core import NAN, LiftScale, Status, check_alpha
from tacit.experiments.stats.lifts import effect
from tacit.experiments.stats.sequential import sequential_test
from tacit.experiments.stats.sufficient import MeanStats


class ToleranceKind(StrEnum):
    """Whether a guardrail tolerance is a relative share (0.02 = 2 %) or metric units."""

    RELATIVE = "relative"
    ABSOLUTE = "absolute"


@dataclass(frozen=True)
class HarmResult:
    """Degradation of a guardrail and whether it is confidently beyond (or within) tolerance.

    `degradation` is the change in the bad direction (positive = worse), on the
    tolerance's scale; `lower_bound`/`upper_bound` are its confidence bounds.
    """

    status: Status
    degradation: float
    lower_bound: float
    upper_bound: float
    tolerance: float
    tolerance_kind: ToleranceKind
    harmed: bool
    cleared: bool


def harm_test(
    control: MeanStats,
    treatment: MeanStats,
    *,
    higher_is_better: bool,
    tolerance: float,
    tolerance_kind: ToleranceKind = ToleranceKind.RELATIVE,
    alpha: float = 0.05,
    sequential_tuning_n: float | None = None,
) -> HarmResult:
    """One-sided test that a guardrail degraded by more than the tolerated harm.

    Definitions (θ = m_t − m_c for ABSOLUTE tolerance, (m_t − m_c)/|m_c| for RELATIVE, so
    a relative tolerance 0.02 means "2 % of the control mean's magnitude" — dividing by
    |m_c| keeps the direction right on a negative baseline: −5 → −4 is +20 %, an improvement
    when higher is better):

    * degradation D = −θ if `higher_is_better` else θ (positive = worse);
    * harmed  ⇔ lower bound of D > tolerance: we are confident the metric got worse by
      more than tolerated (rejects H0: D ≤ tolerance at level α — for a higher-is-better
      metric, the *upper* bound of its lift is below −tolerance);
    * cleared ⇔ upper bound of D < tolerance: non-inferiority shown (rejects
      H0: D ≥ tolerance), required before shipping.

    Bounds are one-sided normal bounds D ∓ z_{1−α}·s, or, when `sequential_tuning_n` is
    given, the always-valid confidence sequence of `sequential_test` at level α (its
    one-sided error is ≤ α, conservatively), so guardrails may be checked at every look.
    """
    check_alpha(alpha)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError("tolerance must be a finite non-negative number")
    tolerance_kind = ToleranceKind(tolerance_kind)
    scale = LiftScale.RELATIVE if tolerance_kind is ToleranceKind.RELATIVE else LiftScale.ABSOLUTE
    sign = -1.0 if higher_is_better else 1.0
    if scale is LiftScale.RELATIVE and control.unadjusted_mean < 0:
        sign = -sign  # θ/|m_c| = −θ/m_c when the baseline is negative
    if sequential_tuning_n is None:
        status, estimate, std_error = effect(control, treatment, scale)
        half_width = float(scipy_stats.norm.ppf(1 - alpha)) * std_error
        low, high = estimate - half_width, estimate + half_width
    else:
        sequential = sequential_test(
            control, treatment, alpha=alpha, tuning_n=sequential_tuning_n, scale=scale
        )
        status, estimate = sequential.status, sequential.estimate
        low, high = sequential.ci_lower, sequential.ci_upper
    degradation = sign * estimate
    if status is not Status.OK:
        return HarmResult(status, degradation, NAN, NAN, tolerance, tolerance_kind, False, False)
    lower_bound, upper_bound = sorted((sign * low, sign * high))
    return HarmResult(
        status,
        degradation,
        lower_bound,
        upper_bound,
        tolerance,
        tolerance_kind,
        lower_bound > tolerance,
        upper_bound < tolerance,
    )
