"""Simulated subjects whose conversion and churn probabilities are known exactly.

Features are drawn directly (in the shape ``build_features`` produces) at
snapshot times spread over six months; labels are Bernoulli draws from a known
function of the features, so the best achievable ROC AUC and Brier score on
any sample are those of the true probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from numpy.typing import NDArray

from tacit.learning.features import RECENCY_CAP_DAYS

FloatArray = NDArray[np.float64]

START = datetime(2025, 1, 1, tzinfo=UTC)
DEVICES = ("mobile", "desktop", "tablet")
REFERRALS = ("search", "social", "direct", "email")


@dataclass(frozen=True)
class Population:
    rows: list[dict[str, float | str]]
    times: list[datetime]
    conversion_probability: FloatArray
    churn_probability: FloatArray

    def labels(self, task: str, seed: int) -> NDArray[np.int64]:
        """Bernoulli labels drawn from the true probabilities of ``task``."""
        p = self.conversion_probability if task == "conversion" else self.churn_probability
        return (np.random.default_rng(seed).random(p.size) < p).astype(np.int64)


def _sigmoid(z: FloatArray) -> FloatArray:
    return 1.0 / (1.0 + np.exp(-z))


def simulate_population(
    n: int,
    seed: int = 0,
    conversion_intercept: float = -3.6,
    churn_intercept: float = -1.6,
) -> Population:
    """n subject snapshots; lower intercepts make rarer labels."""
    rng = np.random.default_rng(seed)
    has_history = rng.random(n) < 0.9
    recency = np.where(has_history, np.minimum(rng.exponential(8.0, n), 200.0), RECENCY_CAP_DAYS)
    activity = np.where(has_history, rng.gamma(2.0, 1.5, n) * np.exp(-recency / 30.0), 0.0)
    visits_30d = np.minimum(rng.poisson(activity * 4.0), 30)
    visits_7d = rng.binomial(visits_30d, 0.3)
    clicks_30d = rng.poisson(visits_30d * 1.5)
    sessions_30d = visits_30d + rng.poisson(0.3 * visits_30d)
    dwell_mean = np.where(visits_30d > 0, rng.lognormal(9.0, 0.6, n), 0.0)
    scroll_mean = np.where(visits_30d > 0, rng.beta(2.0, 2.0, n), 0.0)
    device_index = rng.choice(3, size=n, p=[0.55, 0.35, 0.10])
    referral_index = rng.choice(4, size=n, p=[0.4, 0.25, 0.25, 0.10])
    offsets = np.sort(rng.uniform(0, 180 * 86_400, n))
    times = [START + timedelta(seconds=float(s)) for s in offsets]

    desktop = (device_index == 1).astype(float)
    email = (referral_index == 3).astype(float)
    social = (referral_index == 1).astype(float)
    conversion_logit = (
        conversion_intercept
        + 1.6 * np.exp(-recency / 5.0)
        + 0.25 * np.log1p(clicks_30d)
        + 0.15 * visits_7d
        + 1.0 * scroll_mean
        + 0.6 * desktop
        + 0.9 * email
        - 0.4 * social
    )
    churn_logit = (
        churn_intercept
        + 2.0 * (recency > 14.0)
        + 0.02 * np.minimum(recency, 60.0)
        - 0.35 * np.sqrt(sessions_30d)
        - 0.6 * scroll_mean
        + 0.5 * (device_index == 2)
        + 1.0 * (~has_history)
    )
    rows = [
        {
            "has_history": float(has_history[i]),
            "recency_days": float(recency[i]),
            "visits_7d": float(visits_7d[i]),
            "visits_30d": float(visits_30d[i]),
            "clicks_30d": float(clicks_30d[i]),
            "sessions_30d": float(sessions_30d[i]),
            "dwell_mean": float(dwell_mean[i]),
            "scroll_mean": float(scroll_mean[i]),
            "hour": float(times[i].hour),
            "day_of_week": float(times[i].weekday()),
            "device": DEVICES[device_index[i]],
            "referral_source": REFERRALS[referral_index[i]],
        }
        for i in range(n)
    ]
    return Population(rows, times, _sigmoid(conversion_logit), _sigmoid(churn_logit))
