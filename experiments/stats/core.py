"""Vocabulary shared by every statistic: result status, alternatives, effect scales, alpha check."""

from __future__ import annotations

from enum import StrEnum

NAN = float("nan")  # the number of every degenerate result


class Status(StrEnum):
    """Why a result is (or is not) usable; anything but OK carries NaN numbers."""

    OK = "ok"
    INSUFFICIENT_DATA = "insufficient_data"  # an arm has fewer than 2 observations
    ZERO_VARIANCE = "zero_variance"  # the standard error of the difference is 0
    ZERO_BASELINE = "zero_baseline"  # relative lift with a control mean of 0
    ZERO_DENOMINATOR = "zero_denominator"  # ratio metric whose denominator sums to 0
    # The interval would have zero width although the test has a positive standard error
    # (e.g. 0/50 vs 50/50 under the pooled two-proportion test): no honest interval exists.
    DEGENERATE = "degenerate"


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


def check_alpha(alpha: float) -> None:
    """Refuses a significance level outside (0, 1): invalid input, not a degenerate result."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
