"""Monte Carlo checks: peeking is safe with the sequential test, power predictions hold.

Data are generated with numpy in one shot and reduced to per-look sufficient statistics;
the tests under study are the public functions. Run with ``-s`` to see the rates.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats as scipy_stats

from tacit.experiments.stats import (
    SampleStats,
    power_means,
    power_proportions,
    proportion_z_test,
    required_sample_size_means,
    required_sample_size_proportions,
    sequential_test,
    z_test,
)

ALPHA = 0.05
RUNS = 4_000
LOOKS = 5
PER_LOOK = 200  # subjects per arm added between looks


def _cumulative_stats(
    values: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per-look (sum, sum of squares, n) of values shaped (runs, arms, looks * PER_LOOK)."""
    batches = values.reshape(values.shape[0], values.shape[1], LOOKS, PER_LOOK)
    sums = batches.sum(axis=3).cumsum(axis=2)
    squares = np.square(batches).sum(axis=3).cumsum(axis=2)
    counts = PER_LOOK * np.arange(1, LOOKS + 1)
    return sums, squares, counts


def test_aa_peeking_keeps_sequential_false_positives_below_alpha() -> None:
    rng = np.random.default_rng(20240601)
    # Skewed metric (exponential, like dwell time) to exercise the CLT, identical arms.
    values = rng.exponential(3.0, size=(RUNS, 2, LOOKS * PER_LOOK))
    sums, squares, counts = _cumulative_stats(values)

    sequential_hits = 0
    for run in range(RUNS):
        p_value = 1.0
        for look in range(LOOKS):
            n = int(counts[look])
            control = SampleStats(n, float(sums[run, 0, look]), float(squares[run, 0, look]))
            treatment = SampleStats(n, float(sums[run, 1, look]), float(squares[run, 1, look]))
            p_value = sequential_test(
                control,
                treatment,
                alpha=ALPHA,
                tuning_n=2 * LOOKS * PER_LOOK,
                previous_p_value=p_value,
            ).p_value
        sequential_hits += p_value < ALPHA  # p is running-min: ever significant
    sequential_rate = sequential_hits / RUNS

    # Contrast: a fixed-horizon Welch t-test repeated at every look (vectorized scipy).
    means = sums / counts
    variances = (squares - sums**2 / counts) / (counts - 1)
    naive = scipy_stats.ttest_ind_from_stats(
        means[:, 1],
        np.sqrt(variances[:, 1]),
        counts,
        means[:, 0],
        np.sqrt(variances[:, 0]),
        counts,
        equal_var=False,
    )
    naive_rate = float((naive.pvalue < ALPHA).any(axis=1).mean())
    single_look_rate = float((naive.pvalue[:, -1] < ALPHA).mean())

    print(
        f"\nA/A {RUNS} runs x {LOOKS} looks, alpha={ALPHA}: sequential ever-significant "
        f"{sequential_rate:.4f}, naive repeated t-test {naive_rate:.4f}, "
        f"single final t-test {single_look_rate:.4f}"
    )
    assert sequential_rate <= ALPHA + 0.01
    assert naive_rate > ALPHA + 0.03  # peeking inflates the fixed-horizon test (~0.14)
    assert abs(single_look_rate - ALPHA) < 0.015  # one look is calibrated


def test_ab_detection_rate_matches_predicted_power_for_proportions() -> None:
    baseline, effect = 0.10, 0.02
    n = required_sample_size_proportions(baseline, effect, alpha=ALPHA, power=0.8)
    predicted = power_proportions(baseline, effect, n, alpha=ALPHA)
    runs = 4_000
    rng = np.random.default_rng(7)
    control = rng.binomial(n, baseline, size=runs)
    treatment = rng.binomial(n, baseline + effect, size=runs)
    detected = sum(
        proportion_z_test(
            SampleStats.from_proportion(int(c), n),
            SampleStats.from_proportion(int(t), n),
            alpha=ALPHA,
        ).p_value
        < ALPHA
        for c, t in zip(control, treatment, strict=True)
    )
    observed = detected / runs
    print(f"\nA/B proportions n={n}/arm: power predicted {predicted:.4f}, observed {observed:.4f}")
    assert abs(observed - predicted) < 0.025  # Monte Carlo SE ~ 0.0063


def test_ab_detection_rate_matches_predicted_power_for_means() -> None:
    effect, std_dev = 1.0, 4.0
    n = required_sample_size_means(effect, std_dev, alpha=ALPHA, power=0.8)
    predicted = power_means(effect, std_dev, n, alpha=ALPHA)
    runs = 4_000
    rng = np.random.default_rng(8)
    control = rng.normal(20.0, std_dev, size=(runs, n))
    treatment = rng.normal(20.0 + effect, std_dev, size=(runs, n))
    detected = 0
    for c, t in zip(control, treatment, strict=True):
        result = z_test(SampleStats.from_values(c), SampleStats.from_values(t), alpha=ALPHA)
        detected += result.p_value < ALPHA
    observed = detected / runs
    print(f"\nA/B means n={n}/arm: power predicted {predicted:.4f}, observed {observed:.4f}")
    assert abs(observed - predicted) < 0.025
