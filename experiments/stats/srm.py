"""Sample-ratio mismatch: a chi-square check of arm counts against the configured weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

from tacit.experiments.stats.core import NAN, Status, check_alpha


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
    check_alpha(threshold)
    if len(counts) != len(weights) or len(counts) < 2:
        raise ValueError("counts and weights need the same length, at least 2")
    if any(c < 0 for c in counts) or any(not w > 0 for w in weights):
        raise ValueError("counts must be non-negative and weights positive")
    observed = tuple(int(c) for c in counts)
    total = sum(observed)
    weight_sum = float(sum(weights))
    expected = tuple(total * w / weight_sum for w in weights)
    if total == 0:
        return SrmResult(Status.INSUFFICIENT_DATA, NAN, NAN, observed, expected, threshold, False)
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
