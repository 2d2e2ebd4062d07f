"""CUPED: regression adjustment on a pre-exposure covariate, as gbstats' `RegressionAdjustedStatistic`.

Each subject has a post-exposure value y (the metric) and a pre-exposure value x (the
same metric over a window before its first exposure). With one θ for both arms,

    θ = Cov(x, y) / Var(x)        over both arms pooled (gbstats `compute_theta`)
    ȳ_adj = ȳ − θ·x̄,   s²_adj = s_y² + θ²·s_x² − 2θ·s_xy   per arm

and the usual tests run on the adjusted arms (`AdjustedStats`); the relative lift keeps
the unadjusted control mean as its baseline. Because randomization makes E[x̄_t − x̄_c] = 0,
the adjusted difference is unbiased and its variance shrinks by about ρ²(x, y).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tacit.experiments.stats.core import NAN, Status
from tacit.experiments.stats.sufficient import AdjustedStats, ProportionStats, SampleStats


@dataclass(frozen=True)
class CovariateStats:
    """One arm's post (metric) and pre (covariate) sufficient statistics, and Σ x·y.

    `post` and `pre` are `ProportionStats` for 0/1 metrics (gbstats' p(1 − p) variance)
    or `SampleStats` for real-valued ones; both count the same `n` subjects.
    """

    post: SampleStats
    pre: SampleStats
    sum_products: float

    def __post_init__(self) -> None:
        if self.post.n != self.pre.n:
            raise ValueError("covariate stats: post and pre must count the same subjects")
        if not math.isfinite(self.sum_products):
            raise ValueError("covariate stats: sum_products must be finite")
        if type(self.post) is not type(self.pre):
            raise ValueError("covariate stats: post and pre must be the same kind of statistic")
        bound = math.sqrt(self.post.sum_squares * self.pre.sum_squares)
        if abs(self.sum_products) > bound * (1 + 1e-9) + 1e-12:
            raise ValueError("covariate stats: |sum of x*y| exceeds sqrt(sum x^2 * sum y^2)")

    @property
    def n(self) -> int:
        return self.post.n

    @property
    def covariance(self) -> float:
        """Unbiased sample covariance of post and pre; NaN below two subjects."""
        if self.n < 2:
            return NAN
        return (self.sum_products - self.post.sum * self.pre.sum / self.n) / (self.n - 1)

    @classmethod
    def from_values(
        cls, post: npt.ArrayLike, pre: npt.ArrayLike, *, proportion: bool = False
    ) -> CovariateStats:
        """Sufficient statistics of paired per-subject (post, pre) values."""
        y = np.asarray(post, dtype=float).ravel()
        x = np.asarray(pre, dtype=float).ravel()
        if y.shape != x.shape:
            raise ValueError("post and pre must have the same length")
        kind = ProportionStats if proportion else SampleStats
        return cls(
            kind(int(y.size), float(y.sum()), float(np.square(y).sum())),
            kind(int(x.size), float(x.sum()), float(np.square(x).sum())),
            float((x * y).sum()),
        )


@dataclass(frozen=True)
class CupedResult:
    """Both arms adjusted with one θ, and how much the variance of the difference shrank.

    `variance_reduction` = 1 − (v_t,adj + v_c,adj)/(v_t + v_c), the share of the absolute
    difference's variance removed (≈ ρ² for a covariate correlated ρ with the metric).
    """

    status: Status
    theta: float
    control: AdjustedStats
    treatment: AdjustedStats
    variance_reduction: float


def _joint(a: SampleStats, b: SampleStats) -> SampleStats:
    kind = (
        ProportionStats if isinstance(a, ProportionStats) and isinstance(b, ProportionStats) else SampleStats
    )
    return kind(a.n + b.n, a.sum + b.sum, a.sum_squares + b.sum_squares)


def cuped_theta(control: CovariateStats, treatment: CovariateStats) -> float:
    """θ = Cov(x, y)/Var(x) over both arms pooled; 0 when either pooled variance is 0
    (gbstats then falls back to the unadjusted statistic, and so does θ = 0 here)."""
    n = control.n + treatment.n
    if n < 2:
        return 0.0
    pre = _joint(control.pre, treatment.pre)
    post = _joint(control.post, treatment.post)
    if not (pre.variance > 0 and post.variance > 0):
        return 0.0
    covariance = (control.sum_products + treatment.sum_products - post.sum * pre.sum / n) / (n - 1)
    return covariance / pre.variance


def _adjusted(arm: CovariateStats, theta: float) -> AdjustedStats:
    if arm.n < 2:
        return AdjustedStats(arm.n, arm.post.mean, arm.post.mean, NAN)
    variance = arm.post.variance + theta**2 * arm.pre.variance - 2 * theta * arm.covariance
    return AdjustedStats(arm.n, arm.post.mean - theta * arm.pre.mean, arm.post.mean, max(variance, 0.0))


def cuped_adjust(control: CovariateStats, treatment: CovariateStats) -> CupedResult:
    """Adjust both arms with the pooled θ (see the module docstring)."""
    if control.n < 2 or treatment.n < 2:
        theta = 0.0
        status = Status.INSUFFICIENT_DATA
    else:
        theta = cuped_theta(control, treatment)
        status = Status.OK
    adjusted_c, adjusted_t = _adjusted(control, theta), _adjusted(treatment, theta)
    reduction = NAN
    if status is Status.OK:
        before = control.post.mean_variance + treatment.post.mean_variance
        after = adjusted_c.mean_variance + adjusted_t.mean_variance
        if before > 0:
            reduction = 1 - after / before
    return CupedResult(status, theta, adjusted_c, adjusted_t, reduction)
