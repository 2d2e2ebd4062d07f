"""Power and sample size for proportions and means (statsmodels `NormalIndPower`)."""

from __future__ import annotations

import math

import numpy as np
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
