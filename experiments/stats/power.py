"""Power and sample size for proportions and means (statsmodels `NormalIndPower`)."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from tacit.experiments.stats.core import Alternative, check_alpha


def _check_power_inputs(alpha: float, power: float | None, ratio: float) -> None:
    check_alpha(alpha)
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


# Every test here needs two subjects per arm, so no sample size is below this.
MIN_SAMPLE_SIZE = 2


def _solve_n(effect: float, alpha: float, power: float, ratio: float, alt: Alternative) -> int:
    """Smallest control size whose `NormalIndPower` power reaches `power`, at least 2.

    Solved with scipy's brentq on statsmodels' power function over a bracket that always
    holds the root (statsmodels' own `solve_power` fails when the answer is below ~2, as
    for an effect of 3 standard deviations).
    """
    alt = Alternative(alt)
    if alt is not Alternative.TWO_SIDED and (effect > 0) != (alt is Alternative.GREATER):
        raise ValueError("minimum_detectable_effect points away from the one-sided alternative")

    def shortfall(n: float) -> float:
        return _solve_power(effect, n, alpha, ratio, alt) - power

    if shortfall(MIN_SAMPLE_SIZE) >= 0:
        return MIN_SAMPLE_SIZE
    high = 2.0 * MIN_SAMPLE_SIZE
    while shortfall(high) < 0:
        high *= 2
    n = brentq(shortfall, MIN_SAMPLE_SIZE, high, xtol=1e-10, rtol=1e-12)
    return max(MIN_SAMPLE_SIZE, math.ceil(float(n) - 1e-9))


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
    solved on `NormalIndPower`'s power function; rounded up, never below 2.
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
    (statsmodels `NormalIndPower`), rounded up, never below 2 (so a 3-SD effect gives 2).
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
