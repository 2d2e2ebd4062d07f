"""Drift: PSI checked by hand, reward-rate z-test checked against statsmodels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.proportion import proportions_ztest

from tacit.learning.drift import (
    DriftMonitor,
    DriftStatus,
    categorical_psi,
    numeric_psi,
    psi_from_shares,
    quantile_edges,
    reward_rate_drift,
)
from tacit.learning.features import FeatureError


def test_psi_from_shares_by_hand() -> None:
    # (0.3-0.5) ln(0.3/0.5) + (0.7-0.5) ln(0.7/0.5) = 0.1021651 + 0.0672944 = 0.1694596
    assert round(psi_from_shares([0.5, 0.5], [0.3, 0.7]), 5) == 0.16946


def test_identical_distributions_have_zero_psi() -> None:
    values = np.random.default_rng(0).normal(size=500)
    assert numeric_psi(values, values) == 0.0
    assert categorical_psi(["a", "b", "b"], ["b", "a", "b"]) == 0.0


def test_numeric_psi_by_hand_with_reference_median_bins() -> None:
    # bins=2 on 1..10: one cut at the median 5.5; reference shares [0.5, 0.5].
    # current: 3 values <= 5.5, 7 above -> [0.3, 0.7]; PSI 0.16946 as above.
    reference = np.arange(1.0, 11.0)
    current = np.array([1, 2, 3, 9, 10, 10, 10, 10, 10, 10], dtype=float)
    assert quantile_edges(reference, bins=2).tolist() == [5.5]
    assert round(numeric_psi(reference, current, bins=2), 5) == 0.16946


def test_numeric_psi_uses_epsilon_for_empty_bins() -> None:
    # cut at 5.5; current all above -> shares [0, 1] -> [1e-4, 1].
    # (1e-4 - 0.5) ln(1e-4/0.5) + (1 - 0.5) ln(1/0.5)
    #   = (-0.4999)(-8.5171932) + 0.5 (0.6931472) = 4.2577449 + 0.3465736 = 4.6043185
    reference = np.arange(1.0, 11.0)
    assert round(numeric_psi(reference, np.full(10, 8.0), bins=2), 5) == 4.60432


def test_categorical_psi_by_hand_with_a_new_category() -> None:
    # reference a .5, b .5, c 0 -> 1e-4; current a .2, b .6, c .2
    # (-0.3) ln(0.4) + 0.1 ln(1.2) + 0.1999 ln(2000)
    #   = 0.274887 + 0.018232 + 1.519420 = 1.812540
    reference = ["a"] * 50 + ["b"] * 50
    current = ["a"] * 20 + ["b"] * 60 + ["c"] * 20
    assert round(categorical_psi(reference, current), 5) == 1.81254


def test_ties_in_the_reference_collapse_bins() -> None:
    reference = np.array([0.0] * 80 + [1.0, 2.0, 3.0, 4.0] * 5)
    edges = quantile_edges(reference, bins=10)
    assert len(edges) == len(set(edges.tolist())) < 9


def test_empty_window_psi_is_nan() -> None:
    assert math.isnan(numeric_psi([1.0, 2.0], []))
    assert math.isnan(categorical_psi([], ["a"]))


@pytest.mark.parametrize(
    ("reference", "current"), [((30, 100), (45, 100)), ((500, 1000), (520, 1000)), ((3, 40), (9, 50))]
)
def test_reward_rate_drift_matches_statsmodels(reference: tuple[int, int], current: tuple[int, int]) -> None:
    drift = reward_rate_drift(*reference, *current)
    z, p_value = proportions_ztest(
        [current[0], reference[0]], [current[1], reference[1]], alternative="two-sided"
    )
    assert drift.status is DriftStatus.OK
    assert round(drift.z, 8) == round(float(z), 8)
    assert round(drift.p_value, 8) == round(float(p_value), 8)


def test_reward_rate_drift_by_hand() -> None:
    # 30/100 vs 45/100: pooled 0.375; var 0.375*0.625*(2/100) = 0.0046875;
    # z = 0.15 / 0.0684653 = 2.190890; two-sided p = 0.028460
    drift = reward_rate_drift(30, 100, 45, 100, alpha=0.05)
    assert round(drift.z, 6) == 2.19089
    assert round(drift.p_value, 6) == 0.02846
    assert drift.significant
    assert not reward_rate_drift(30, 100, 45, 100, alpha=0.01).significant


@pytest.mark.parametrize(
    ("args", "status"),
    [((0, 0, 5, 10), DriftStatus.EMPTY_WINDOW), ((0, 10, 0, 10), DriftStatus.NO_VARIANCE)],
)
def test_degenerate_reward_windows_return_a_status(
    args: tuple[int, int, int, int], status: DriftStatus
) -> None:
    drift = reward_rate_drift(*args)
    assert drift.status is status and not drift.significant


def _rows(rng: np.random.Generator, n: int, shift: float, mobile: float) -> list[dict[str, object]]:
    return [
        {"recency_days": float(r), "device": "mobile" if m else "desktop"}
        for r, m in zip(rng.exponential(5.0, n) + shift, rng.random(n) < mobile, strict=True)
    ]


def test_monitor_is_not_stale_on_a_sample_of_the_same_population() -> None:
    rng = np.random.default_rng(1)
    monitor = DriftMonitor().fit(_rows(rng, 3000, 0.0, 0.5), rng.random(3000), reward=(300, 3000))
    report = monitor.report(_rows(rng, 3000, 0.0, 0.5), rng.random(3000), reward=(310, 3000))
    assert report.status is DriftStatus.OK
    assert max(report.feature_psi.values()) < 0.02
    assert report.prediction_psi is not None and report.prediction_psi < 0.02
    assert not report.stale and report.drifted_features == ()


def test_monitor_flags_shifted_features_scores_and_rewards() -> None:
    rng = np.random.default_rng(2)
    monitor = DriftMonitor(threshold=0.2).fit(
        _rows(rng, 3000, 0.0, 0.5), rng.random(3000), reward=(300, 3000)
    )
    shifted = monitor.report(_rows(rng, 3000, 5.0, 0.5), rng.random(3000))
    assert shifted.stale and shifted.drifted_features == ("recency_days",)
    devices = monitor.report(_rows(rng, 3000, 0.0, 0.9))
    assert devices.stale and devices.drifted_features == ("device",)
    scores = monitor.report(_rows(rng, 3000, 0.0, 0.5), rng.random(3000) ** 3)
    assert scores.stale and scores.drifted_features == ()
    assert scores.prediction_psi is not None and scores.prediction_psi >= 0.2
    rewards = monitor.report(_rows(rng, 3000, 0.0, 0.5), reward=(450, 3000))
    assert rewards.stale and rewards.reward is not None and rewards.reward.significant


def test_monitor_empty_current_window_returns_status() -> None:
    monitor = DriftMonitor().fit([{"x": 1.0}, {"x": 2.0}])
    report = monitor.report([])
    assert report.status is DriftStatus.EMPTY_WINDOW and not report.stale


def test_monitor_missing_feature_in_current_window_is_named() -> None:
    monitor = DriftMonitor().fit([{"x": 1.0, "y": 2.0}, {"x": 2.0, "y": 3.0}])
    with pytest.raises(FeatureError, match="'y'"):
        monitor.report([{"x": 1.0}])
