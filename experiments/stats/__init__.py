"""Pure statistics over sufficient statistics, so that every number can be checked by hand.

Conventions (gbstats-like):

* Inputs are frozen dataclasses of sufficient statistics (`SampleStats`, `RatioStats`).
* Differences are always ``treatment - control``; relative lift is
  ``mean_t / mean_c - 1``.
* Degenerate but valid input (an empty arm, one observation, zero variance, a zero
  baseline) returns a result whose `status` says so, with NaN numbers; only *invalid*
  input (negative counts, alpha outside (0, 1), mismatched lengths) raises `ValueError`.
* scipy and statsmodels do the distribution arithmetic; the closed forms (delta method,
  normal-mixture confidence sequence) are written out in the docstrings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

__all__ = [
    "Alternative",
    "ComparisonResult",
    "Correction",
    "HarmResult",
    "LiftResult",
    "LiftScale",
    "MeanEstimate",
    "MeanStats",
    "RatioStats",
    "SampleStats",
    "SequentialResult",
    "SrmResult",
    "Status",
    "ToleranceKind",
    "absolute_lift",
    "adjust_p_values",
    "harm_test",
    "power_means",
    "power_proportions",
    "proportion_z_test",
    "ratio_mean",
    "relative_lift",
    "required_sample_size_means",
    "required_sample_size_proportions",
    "sequential_rho",
    "sequential_test",
    "srm_check",
    "welch_t_test",
    "z_test",
]

# Variances below this share of the raw second moment are floating-point noise from
# ``sum_squares - sum**2 / n`` and are treated as exactly zero.
_RELATIVE_VARIANCE_FLOOR = 1e-12
_NAN = float("nan")


class Status(StrEnum):
    """Why a result is (or is not) usable; anything but OK carries NaN numbers."""

    OK = "ok"
    INSUFFICIENT_DATA = "insufficient_data"  # an arm has fewer than 2 observations
    ZERO_VARIANCE = "zero_variance"  # the standard error of the difference is 0
    ZERO_BASELINE = "zero_baseline"  # relative lift with a control mean of 0
    ZERO_DENOMINATOR = "zero_denominator"  # ratio metric whose denominator sums to 0


class Alternative(StrEnum):
    """Alternative hypothesis about ``treatment - control`` (scipy's spelling)."""

    TWO_SIDED = "two-sided"
    GREATER = "greater"  # treatment > control
    LESS = "less"  # treatment < control

    @property
    def statsmodels_name(self) -> str:
        """statsmodels spells one-sided alternatives 'larger' / 'smaller'."""
        return {"two-sided": "two-sided", "greater": "larger", "less": "smaller"}[self.value]


class LiftScale(StrEnum):
    """Scale on which a treatment effect is expressed."""

    ABSOLUTE = "absolute"  # mean_t - mean_c
    RELATIVE = "relative"  # mean_t / mean_c - 1


class ToleranceKind(StrEnum):
    """Whether a guardrail tolerance is a relative share (0.02 = 2 %) or metric units."""

    RELATIVE = "relative"
    ABSOLUTE = "absolute"


class Correction(StrEnum):
    """Multiple-testing corrections; values are statsmodels `multipletests` method names."""

    HOLM = "holm"
    BENJAMINI_HOCHBERG = "fdr_bh"


# --------------------------------------------------------------------------------------
# Sufficient statistics
# --------------------------------------------------------------------------------------


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


def _check_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")


def _sample_variance(n: int, total: float, total_squares: float) -> float:
    """Unbiased variance from (n, sum, sum of squares); NaN below two observations."""
    if n < 2:
        return _NAN
    variance = (total_squares - total * total / n) / (n - 1)
    if variance <= _RELATIVE_VARIANCE_FLOOR * abs(total_squares) / n:
        return 0.0
    return variance


@dataclass(frozen=True)
class SampleStats:
    """Count, sum and sum of squares of one arm's per-subject values (mean/proportion)."""

    n: int
    sum: float
    sum_squares: float

    def __post_init__(self) -> None:
        _check_count(self.n)
        _check_finite(sum=self.sum, sum_squares=self.sum_squares)
        if self.sum_squares < 0:
            raise ValueError("sum_squares must be non-negative")

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> SampleStats:
        """Sufficient statistics of raw per-subject values."""
        array = np.asarray(values, dtype=float).ravel()
        return cls(int(array.size), float(array.sum()), float(np.square(array).sum()))

    @classmethod
    def from_proportion(cls, successes: int, n: int) -> SampleStats:
        """Sufficient statistics of n 0/1 outcomes with `successes` ones (x == x**2)."""
        _check_count(successes)
        if successes > n:
            raise ValueError("successes must not exceed n")
        return cls(n, float(successes), float(successes))

    @property
    def mean(self) -> float:
        """Sample mean; NaN for an empty arm."""
        return self.sum / self.n if self.n > 0 else _NAN

    @property
    def variance(self) -> float:
        """Unbiased sample variance; NaN below two observations."""
        return _sample_variance(self.n, self.sum, self.sum_squares)

    @property
    def mean_variance(self) -> float:
        """Variance of the sample mean, variance / n."""
        return self.variance / self.n if self.n >= 2 else _NAN


@dataclass(frozen=True)
class RatioStats:
    """Per-subject numerator/denominator sums for a ratio metric sum(num) / sum(den).

    Subjects are the randomization unit, so the ratio's variance needs the delta method
    over the joint (numerator, denominator) moments, not a per-event variance.
    """

    n: int
    sum_num: float
    sum_den: float
    sum_num_sq: float
    sum_den_sq: float
    sum_num_den: float

    def __post_init__(self) -> None:
        _check_count(self.n)
        _check_finite(
            sum_num=self.sum_num,
            sum_den=self.sum_den,
            sum_num_sq=self.sum_num_sq,
            sum_den_sq=self.sum_den_sq,
            sum_num_den=self.sum_num_den,
        )
        if self.sum_num_sq < 0 or self.sum_den_sq < 0:
            raise ValueError("sums of squares must be non-negative")

    @classmethod
    def from_values(cls, numerators: npt.ArrayLike, denominators: npt.ArrayLike) -> RatioStats:
        """Sufficient statistics of paired per-subject numerators and denominators."""
        num = np.asarray(numerators, dtype=float).ravel()
        den = np.asarray(denominators, dtype=float).ravel()
        if num.shape != den.shape:
            raise ValueError("numerators and denominators must have the same length")
        return cls(
            int(num.size),
            float(num.sum()),
            float(den.sum()),
            float(np.square(num).sum()),
            float(np.square(den).sum()),
            float((num * den).sum()),
        )

    @property
    def numerator(self) -> SampleStats:
        return SampleStats(self.n, self.sum_num, self.sum_num_sq)

    @property
    def denominator(self) -> SampleStats:
        return SampleStats(self.n, self.sum_den, self.sum_den_sq)

    @property
    def covariance(self) -> float:
        """Unbiased sample covariance of numerator and denominator."""
        if self.n < 2:
            return _NAN
        return (self.sum_num_den - self.sum_num * self.sum_den / self.n) / (self.n - 1)

    @property
    def mean(self) -> float:
        """The ratio sum_num / sum_den; NaN when the denominator sums to zero."""
        return self.sum_num / self.sum_den if self.sum_den != 0 else _NAN

    @property
    def mean_variance(self) -> float:
        """Delta-method variance of the ratio R = X̄ / Ȳ.

        Var(R) ≈ (1/n) · (σ_x²/μ_y² − 2·μ_x·σ_xy/μ_y³ + μ_x²·σ_y²/μ_y⁴), with μ, σ the
        per-subject means, variances and covariance (unbiased).
        """
        if self.n < 2 or self.sum_den == 0:
            return _NAN
        mean_x = self.sum_num / self.n
        mean_y = self.sum_den / self.n
        var_x = self.numerator.variance
        var_y = self.denominator.variance
        variance = (
            var_x / mean_y**2 - 2 * mean_x * self.covariance / mean_y**3 + mean_x**2 * var_y / mean_y**4
        ) / self.n
        return max(variance, 0.0)


MeanStats = SampleStats | RatioStats


@dataclass(frozen=True)
class MeanEstimate:
    """A mean (or ratio) with the variance and standard error of the estimate."""

    status: Status
    mean: float
    variance: float
    std_error: float


def ratio_mean(stats: RatioStats) -> MeanEstimate:
    """The ratio metric's value with its delta-method variance (see `RatioStats`)."""
    if stats.n < 2:
        return MeanEstimate(Status.INSUFFICIENT_DATA, stats.mean, _NAN, _NAN)
    if stats.sum_den == 0:
        return MeanEstimate(Status.ZERO_DENOMINATOR, _NAN, _NAN, _NAN)
    variance = stats.mean_variance
    return MeanEstimate(Status.OK, stats.mean, variance, math.sqrt(variance))


def _pair_status(control: MeanStats, treatment: MeanStats) -> Status:
    """Status shared by every two-arm comparison, before any scale-specific check."""
    if control.n < 2 or treatment.n < 2:
        return Status.INSUFFICIENT_DATA
    for arm in (control, treatment):
        if isinstance(arm, RatioStats) and arm.sum_den == 0:
            return Status.ZERO_DENOMINATOR
    if control.mean_variance + treatment.mean_variance <= 0:
        return Status.ZERO_VARIANCE
    return Status.OK


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


# --------------------------------------------------------------------------------------
# Lifts
# --------------------------------------------------------------------------------------


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


def _effect(control: MeanStats, treatment: MeanStats, scale: LiftScale) -> tuple[Status, float, float]:
    """(status, estimate, std_error) of the effect on the given scale.

    Absolute: d = m_t − m_c, Var(d) = v_t + v_c (v = variance of each arm's mean).
    Relative (delta method, as gbstats): r = m_t/m_c − 1,
    Var(r) ≈ v_t/m_c² + m_t²·v_c/m_c⁴.
    """
    status = _pair_status(control, treatment)
    mean_c, mean_t = control.mean, treatment.mean
    var_c, var_t = control.mean_variance, treatment.mean_variance
    if scale is LiftScale.ABSOLUTE:
        estimate = mean_t - mean_c
        if status is not Status.OK:
            return status, estimate, _NAN
        return status, estimate, math.sqrt(var_t + var_c)
    if status is Status.INSUFFICIENT_DATA or status is Status.ZERO_DENOMINATOR:
        return status, _NAN, _NAN
    if mean_c == 0:
        return Status.ZERO_BASELINE, _NAN, _NAN
    estimate = mean_t / mean_c - 1
    if status is not Status.OK:
        return status, estimate, _NAN
    variance = var_t / mean_c**2 + mean_t**2 * var_c / mean_c**4
    if not variance > 0:
        # A treatment constant at 0 (no conversions at all) collapses the delta method to 0.
        # Fall back to the absolute-scale error carried to the relative scale, SE(d)/|m_c|,
        # so that the worst harm (a metric falling to zero) is still detected.
        variance = (var_t + var_c) / mean_c**2
        if not variance > 0:
            return Status.ZERO_VARIANCE, estimate, _NAN
    return status, estimate, math.sqrt(variance)


def _lift(control: MeanStats, treatment: MeanStats, scale: LiftScale, alpha: float) -> LiftResult:
    _check_alpha(alpha)
    status, estimate, std_error = _effect(control, treatment, scale)
    if status is not Status.OK:
        return LiftResult(status, scale, estimate, std_error, _NAN, _NAN, alpha)
    half_width = float(scipy_stats.norm.ppf(1 - alpha / 2)) * std_error
    return LiftResult(status, scale, estimate, std_error, estimate - half_width, estimate + half_width, alpha)


def absolute_lift(control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05) -> LiftResult:
    """m_t − m_c with a normal CI: ± z_{1−α/2} · sqrt(v_t + v_c)."""
    return _lift(control, treatment, LiftScale.ABSOLUTE, alpha)


def relative_lift(control: MeanStats, treatment: MeanStats, *, alpha: float = 0.05) -> LiftResult:
    """m_t/m_c − 1 with a delta-method normal CI (Var ≈ v_t/m_c² + m_t²·v_c/m_c⁴)."""
    return _lift(control, treatment, LiftScale.RELATIVE, alpha)


# --------------------------------------------------------------------------------------
# Fixed-horizon tests
# --------------------------------------------------------------------------------------


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
    return ComparisonResult(status, estimate, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, alternative, alpha)


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
    _check_alpha(alpha)
    alternative = Alternative(alternative)
    status = _pair_status(control, treatment)
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
    _check_alpha(alpha)
    alternative = Alternative(alternative)
    status = _pair_status(control, treatment)
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
    _check_alpha(alpha)
    alternative = Alternative(alternative)
    if control.n < 1 or treatment.n < 1:
        return _degenerate(Status.INSUFFICIENT_DATA, _NAN, alternative, alpha)
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


# --------------------------------------------------------------------------------------
# Always-valid sequential test
# --------------------------------------------------------------------------------------


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
    _check_alpha(alpha)
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
    status, estimate, std_error = _effect(control, treatment, scale)
    if status is not Status.OK:
        return SequentialResult(status, scale, estimate, std_error, _NAN, _NAN, _NAN, rho, n_total, alpha)
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


# --------------------------------------------------------------------------------------
# Sample-ratio mismatch
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SrmResult:
    """Chi-square goodness of fit of arm counts against the configured weights."""

    status: Status
    statistic: float
    p_value: float
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    threshold: float
    mismatch: bool


def srm_check(counts: Sequence[int], weights: Sequence[float], *, threshold: float = 0.001) -> SrmResult:
    """Sample-ratio mismatch: χ² = Σ (o − e)²/e, df = k − 1; mismatch when p < threshold.

    `weights` are normalized, so fractions or percentages both work. A mismatch means the
    assignment or logging is broken and no effect estimate can be trusted.
    """
    _check_alpha(threshold)
    if len(counts) != len(weights) or len(counts) < 2:
        raise ValueError("counts and weights need the same length, at least 2")
    if any(c < 0 for c in counts) or any(not w > 0 for w in weights):
        raise ValueError("counts must be non-negative and weights positive")
    observed = tuple(int(c) for c in counts)
    total = sum(observed)
    weight_sum = float(sum(weights))
    expected = tuple(total * w / weight_sum for w in weights)
    if total == 0:
        return SrmResult(Status.INSUFFICIENT_DATA, _NAN, _NAN, observed, expected, threshold, False)
    result = scipy_stats.chisquare(observed, expected)
    p_value = float(result.pvalue)
    return SrmResult(
        Status.OK,
        float(result.statistic),
        p_value,
        observed,
        expected,
        threshold,
        p_value < threshold,
    )


# --------------------------------------------------------------------------------------
# Multiple testing
# --------------------------------------------------------------------------------------


def adjust_p_values(
    p_values: Sequence[float] | npt.NDArray[np.float64], method: Correction = Correction.HOLM
) -> tuple[float, ...]:
    """Holm (family-wise) or Benjamini–Hochberg (FDR) adjusted p-values, same order.

    NaN p-values (degenerate metrics) stay NaN and do not count toward the family.
    Holm is p_(i)·(m − i + 1) with a running maximum, capped at 1, computed here with
    numpy because statsmodels' Holm branch runs a full ``gc.collect()`` per call (~100 ms
    in a large process); tests check it equals ``multipletests(method="holm")``.
    Benjamini–Hochberg comes from statsmodels ``multipletests(method="fdr_bh")``.
    """
    method = Correction(method)
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    if not finite.any():
        return tuple(float(v) for v in adjusted)
    family = values[finite]
    if method is Correction.HOLM:
        order = np.argsort(family, kind="stable")
        multipliers = np.arange(family.size, 0, -1)
        stepped = np.minimum(np.maximum.accumulate(family[order] * multipliers), 1.0)
        corrected = np.empty_like(family)
        corrected[order] = stepped
    else:
        corrected = multipletests(family, method=method.value)[1]
    adjusted[finite] = corrected
    return tuple(float(v) for v in adjusted)


# --------------------------------------------------------------------------------------
# Guardrail harm
# --------------------------------------------------------------------------------------


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

    Definitions (θ = m_t − m_c for ABSOLUTE tolerance, m_t/m_c − 1 for RELATIVE, so a
    relative tolerance 0.02 means "2 % of the control mean"):

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
    _check_alpha(alpha)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError("tolerance must be a finite non-negative number")
    tolerance_kind = ToleranceKind(tolerance_kind)
    scale = LiftScale.RELATIVE if tolerance_kind is ToleranceKind.RELATIVE else LiftScale.ABSOLUTE
    sign = -1.0 if higher_is_better else 1.0
    if sequential_tuning_n is None:
        status, estimate, std_error = _effect(control, treatment, scale)
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
        return HarmResult(status, degradation, _NAN, _NAN, tolerance, tolerance_kind, False, False)
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


# --------------------------------------------------------------------------------------
# Power and sample size
# --------------------------------------------------------------------------------------


def _check_power_inputs(alpha: float, power: float | None, ratio: float) -> None:
    _check_alpha(alpha)
    if power is not None and not 0 < power < 1:
        raise ValueError("power must be in (0, 1)")
    if not ratio > 0:
        raise ValueError("ratio must be positive")


def _proportion_effect(baseline_rate: float, minimum_detectable_effect: float) -> float:
    treated = baseline_rate + minimum_detectable_effect
    if not (0 < baseline_rate < 1 and 0 < treated < 1):
        raise ValueError("baseline_rate and baseline_rate + effect must lie in (0, 1)")
    if minimum_detectable_effect == 0:
        raise ValueError("minimum_detectable_effect must be non-zero")
    return float(proportion_effectsize(treated, baseline_rate))


def _means_effect(minimum_detectable_effect: float, std_dev: float) -> float:
    if not std_dev > 0:
        raise ValueError("std_dev must be positive")
    if minimum_detectable_effect == 0:
        raise ValueError("minimum_detectable_effect must be non-zero")
    return minimum_detectable_effect / std_dev


def _solve_n(effect: float, alpha: float, power: float, ratio: float, alt: Alternative) -> int:
    n = NormalIndPower().solve_power(
        effect_size=effect,
        alpha=alpha,
        power=power,
        ratio=ratio,
        alternative=Alternative(alt).statsmodels_name,
    )
    return math.ceil(float(np.asarray(n).item()) - 1e-9)


def _solve_power(effect: float, n: float, alpha: float, ratio: float, alt: Alternative) -> float:
    if not n > 0:
        raise ValueError("n_control must be positive")
    power = NormalIndPower().power(
        effect_size=effect,
        nobs1=n,
        alpha=alpha,
        ratio=ratio,
        alternative=Alternative(alt).statsmodels_name,
    )
    return float(np.asarray(power).item())


def required_sample_size_proportions(
    baseline_rate: float,
    minimum_detectable_effect: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    alternative: Alternative = Alternative.TWO_SIDED,
) -> int:
    """Control-arm size (treatment = ratio × it) to detect an absolute rate change.

    Cohen's h = 2·asin(√p_t) − 2·asin(√p_c) (statsmodels `proportion_effectsize`),
    solved with `NormalIndPower`; rounded up.
    """
    _check_power_inputs(alpha, power, ratio)
    effect = _proportion_effect(baseline_rate, minimum_detectable_effect)
    return _solve_n(effect, alpha, power, ratio, alternative)


def power_proportions(
    baseline_rate: float,
    minimum_detectable_effect: float,
    n_control: float,
    *,
    alpha: float = 0.05,
    ratio: float = 1.0,
    alternative: Alternative = Alternative.TWO_SIDED,
) -> float:
    """Power of the two-proportion z-test at `n_control` (Cohen's h, `NormalIndPower`)."""
    _check_power_inputs(alpha, None, ratio)
    effect = _proportion_effect(baseline_rate, minimum_detectable_effect)
    return _solve_power(effect, n_control, alpha, ratio, alternative)


def required_sample_size_means(
    minimum_detectable_effect: float,
    std_dev: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    alternative: Alternative = Alternative.TWO_SIDED,
) -> int:
    """Control-arm size to detect a mean difference (effect size d = effect / std_dev).

    n_c = (z_{1−α/2} + z_{power})² · (1 + 1/ratio) / d² for the two-sided z-test
    (statsmodels `NormalIndPower`), rounded up.
    """
    _check_power_inputs(alpha, power, ratio)
    effect = _means_effect(minimum_detectable_effect, std_dev)
    return _solve_n(effect, alpha, power, ratio, alternative)


def power_means(
    minimum_detectable_effect: float,
    std_dev: float,
    n_control: float,
    *,
    alpha: float = 0.05,
    ratio: float = 1.0,
    alternative: Alternative = Alternative.TWO_SIDED,
) -> float:
    """Power of the two-sample z-test for means at `n_control` (`NormalIndPower`)."""
    _check_power_inputs(alpha, None, ratio)
    effect = _means_effect(minimum_detectable_effect, std_dev)
    return _solve_power(effect, n_control, alpha, ratio, alternative)
