"""The always-valid sequential test: a normal-mixture p-value and confidence sequence, safe to peek at."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tacit.experiments.stats.core import NAN, LiftScale, Status, check_alpha
from tacit.experiments.stats.lifts import effect
from tacit.experiments.stats.sufficient import MeanStats


@dataclass(frozen=True)
class SequentialResult:
    """An always-valid p-value and confidence sequence for ``treatment − control``.

    Valid at every look, however often one peeks (asymptotically, as the CLT kicks in).
    """

    status: Status
    scale: LiftScale
    estimate: float
    std_error: float
    p_value: float
    ci_lower: float
    ci_upper: float
    rho: float
    n_total: int
    alpha: float


def sequential_rho(alpha: float, tuning_n: float) -> float:
    """Mixture scale ρ making the confidence sequence tightest at `tuning_n` total subjects.

    ρ = sqrt((−2·ln α + ln(−2·ln α + 1)) / n*)  (Howard et al. 2021, eq. for the
    normal-mixture boundary; the same choice as GrowthBook's sequential tuning parameter).
    """
    check_alpha(alpha)
    if tuning_n <= 0:
        raise ValueError("tuning_n must be positive")
    log_term = -2 * math.log(alpha)
    return math.sqrt((log_term + math.log(log_term + 1)) / tuning_n)


def sequential_test(
    control: MeanStats,
    treatment: MeanStats,
    *,
    alpha: float = 0.05,
    tuning_n: float = 5000,
    scale: LiftScale = LiftScale.ABSOLUTE,
    previous_p_value: float = 1.0,
) -> SequentialResult:
    """Normal-mixture sequential test (mSPRT / asymptotic confidence sequence).

    With effect estimate θ̂ (on `scale`), its standard error s (as in `absolute_lift` /
    `relative_lift`), N = n_c + n_t and r = N·ρ² (ρ from `sequential_rho`):

    * mixture likelihood ratio against θ = θ₀, mixing θ over N(θ₀, τ²) with τ² = r·s²
      (Johari et al. 2017; Optimizely's mSPRT)::

          Λ(θ₀) = (1 + r)^(−1/2) · exp( r / (1 + r) · (θ̂ − θ₀)² / (2 s²) )

    * always-valid p-value: p = min(previous_p_value, 1, 1/Λ(0)) — Ville's inequality
      makes P(∃ look: p ≤ α | θ = 0) ≤ α; pass the previous look's p to keep it monotone.
    * confidence sequence {θ₀ : Λ(θ₀) < 1/α}, identical to the asymptotic CS of
      Waudby-Smith et al. 2021 built on Howard et al. 2021 (σ̂²/N = s²)::

          θ̂ ± s · sqrt( 2·(1 + r)/r · ln( sqrt(1 + r) / α ) )

    so p < α exactly when the interval excludes 0. τ² = r·s² keeps ρ dimensionless;
    `tuning_n` is the total sample size at which the interval is tightest.
    """
    rho = sequential_rho(alpha, tuning_n)
    scale = LiftScale(scale)
    n_total = int(control.n + treatment.n)
    status, estimate, std_error = effect(control, treatment, scale)
    if status is not Status.OK:
        return SequentialResult(status, scale, estimate, std_error, NAN, NAN, NAN, rho, n_total, alpha)
    r = n_total * rho**2
    z = estimate / std_error
    log_lambda = -0.5 * math.log1p(r) + r / (1 + r) * z * z / 2
    p_value = min(previous_p_value, 1.0, math.exp(-log_lambda))
    half_width = std_error * math.sqrt(2 * (1 + r) / r * (0.5 * math.log1p(r) - math.log(alpha)))
    return SequentialResult(
        status,
        scale,
        estimate,
        std_error,
        p_value,
        estimate - half_width,
        estimate + half_width,
        rho,
        n_total,
        alpha,
    )
