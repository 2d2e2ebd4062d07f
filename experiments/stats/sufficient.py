"""Sufficient statistics (count, sum, sum of squares) of one arm, and ratio metrics' delta method."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tacit.experiments.stats.core import NAN, Status

# Variances below this share of the raw second moment are floating-point noise from
# ``sum_squares - sum**2 / n`` and are treated as exactly zero.
_RELATIVE_VARIANCE_FLOOR = 1e-12


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
        return NAN
    variance = (total_squares - total * total / n) / (n - 1)
    if variance <= _RELATIVE_VARIANCE_FLOOR * abs(total_squares) / n:
        return 0.0
    return variance


def _check_moments(name: str, n: int, total: float, total_squares: float) -> None:
    """Refuse moments no data set can have: a sum without observations, or a sum of
    squares below sum²/n (Cauchy–Schwarz), beyond floating-point rounding."""
    if n == 0:
        if total != 0 or total_squares != 0:
            raise ValueError(f"{name}: an empty arm (n = 0) must have zero sums")
        return
    floor = total * total / n
    if total_squares < floor - 1e-9 * max(abs(floor), 1.0):
        raise ValueError(f"{name}: sum of squares is below sum**2 / n, which no data can give")


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
        _check_moments("sample stats", self.n, self.sum, self.sum_squares)

    @property
    def unadjusted_mean(self) -> float:
        """The mean before any covariate adjustment (the same as `mean` here)."""
        return self.mean

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> SampleStats:
        """Sufficient statistics of raw per-subject values."""
        array = np.asarray(values, dtype=float).ravel()
        return cls(int(array.size), float(array.sum()), float(np.square(array).sum()))

    @classmethod
    def from_proportion(cls, successes: int, n: int) -> ProportionStats:
        """n 0/1 outcomes with `successes` ones, with gbstats' variance p(1 − p).

        For the unbiased convention p(1 − p)·n/(n − 1) build ``SampleStats(n, s, s)``.
        """
        _check_count(successes)
        if successes > n:
            raise ValueError("successes must not exceed n")
        return ProportionStats(n, float(successes), float(successes))

    @property
    def mean(self) -> float:
        """Sample mean; NaN for an empty arm."""
        return self.sum / self.n if self.n > 0 else NAN

    @property
    def variance(self) -> float:
        """Unbiased sample variance; NaN below two observations."""
        return _sample_variance(self.n, self.sum, self.sum_squares)

    @property
    def mean_variance(self) -> float:
        """Variance of the sample mean, variance / n."""
        return self.variance / self.n if self.n >= 2 else NAN


@dataclass(frozen=True)
class ProportionStats(SampleStats):
    """0/1 outcomes per subject (sum = successes = sum of squares), variance p(1 − p).

    This is gbstats' `ProportionStatistic` convention (the maximum-likelihood variance),
    so proportion results equal GrowthBook's; `SampleStats(n, s, s)` keeps the unbiased
    p(1 − p)·n/(n − 1). A sum outside [0, n] is refused: no 0/1 data can give it.
    """

    def __post_init__(self) -> None:
        _check_count(self.n)
        _check_finite(sum=self.sum, sum_squares=self.sum_squares)
        if not 0 <= self.sum <= self.n:
            raise ValueError("proportion stats: successes must lie in [0, n] (a mean in [0, 1])")
        if self.sum_squares != self.sum:
            raise ValueError("proportion stats: 0/1 outcomes have sum of squares equal to sum")

    @property
    def variance(self) -> float:
        """p(1 − p) (gbstats); NaN below two observations, like every arm here."""
        if self.n < 2:
            return NAN
        p = self.sum / self.n
        return p * (1 - p)


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
        _check_moments("ratio numerator", self.n, self.sum_num, self.sum_num_sq)
        _check_moments("ratio denominator", self.n, self.sum_den, self.sum_den_sq)

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
            return NAN
        return (self.sum_num_den - self.sum_num * self.sum_den / self.n) / (self.n - 1)

    @property
    def mean(self) -> float:
        """The ratio sum_num / sum_den; NaN when the denominator sums to zero."""
        return self.sum_num / self.sum_den if self.sum_den != 0 else NAN

    @property
    def unadjusted_mean(self) -> float:
        return self.mean

    @property
    def mean_variance(self) -> float:
        """Delta-method variance of the ratio R = X̄ / Ȳ.

        Var(R) ≈ (1/n) · (σ_x²/μ_y² − 2·μ_x·σ_xy/μ_y³ + μ_x²·σ_y²/μ_y⁴), with μ, σ the
        per-subject means, variances and covariance (unbiased).
        """
        if self.n < 2 or self.sum_den == 0:
            return NAN
        mean_x = self.sum_num / self.n
        mean_y = self.sum_den / self.n
        var_x = self.numerator.variance
        var_y = self.denominator.variance
        variance = (
            var_x / mean_y**2 - 2 * mean_x * self.covariance / mean_y**3 + mean_x**2 * var_y / mean_y**4
        ) / self.n
        return max(variance, 0.0)


@dataclass(frozen=True)
class AdjustedStats:
    """One arm's covariate-adjusted (CUPED) mean, built by `stats.cuped.cuped_adjust`.

    `mean` = ȳ − θ·x̄ and `variance` = s_y² + θ²·s_x² − 2θ·s_xy (per subject, as gbstats'
    `RegressionAdjustedStatistic`); `unadjusted_mean` = ȳ is the relative lift's baseline.
    """

    n: int
    mean: float
    unadjusted_mean: float
    variance: float

    @property
    def mean_variance(self) -> float:
        """Variance of the adjusted mean, variance / n."""
        return self.variance / self.n if self.n >= 2 else NAN


MeanStats = SampleStats | RatioStats | AdjustedStats


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
        return MeanEstimate(Status.INSUFFICIENT_DATA, stats.mean, NAN, NAN)
    if stats.sum_den == 0:
        return MeanEstimate(Status.ZERO_DENOMINATOR, NAN, NAN, NAN)
    variance = stats.mean_variance
    return MeanEstimate(Status.OK, stats.mean, variance, math.sqrt(variance))
