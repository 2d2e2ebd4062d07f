"""Drift between a reference window and a current window: is a model stale?

* Population stability index (PSI) per feature. Numeric features are cut at
  quantiles of the *reference* window (so each reference bin holds about the
  same share); categorical ones compare category shares. A bin or category
  empty on one side gets share ``epsilon`` instead of 0 so the logarithm stays
  finite (shares are not renormalized).
  PSI = sum_i (current_i - reference_i) * ln(current_i / reference_i).
* Prediction drift: the PSI of the model's scores, binned the same way.
* Reward-rate drift: a pooled two-proportion z-test between the windows.

A :class:`DriftReport` is ``stale`` when any PSI reaches ``threshold`` (0.2 is
the customary "significant shift" level; 0.1–0.2 is usually read as "watch")
or the reward rate changed significantly at ``reward_alpha``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from tacit.learning.features import CATEGORICAL_FEATURES, FeatureError, FeatureVector

__all__ = [
    "DriftMonitor",
    "DriftReport",
    "DriftStatus",
    "RewardRateDrift",
    "categorical_psi",
    "numeric_psi",
    "psi_from_shares",
    "quantile_edges",
    "reward_rate_drift",
]

FloatArray = NDArray[np.float64]
DEFAULT_EPSILON = 1e-4


class DriftStatus(enum.Enum):
    """Whether a drift figure could be computed."""

    OK = "ok"
    EMPTY_WINDOW = "empty_window"
    """A window has no rows (or no trials): nothing to compare."""
    NO_VARIANCE = "no_variance"
    """Both windows have a reward rate of exactly 0 or 1: z is undefined."""


def psi_from_shares(reference: ArrayLike, current: ArrayLike, epsilon: float = DEFAULT_EPSILON) -> float:
    """PSI of two share vectors over the same bins; zero shares become ``epsilon``."""
    ref = np.maximum(np.asarray(reference, dtype=np.float64), epsilon)
    cur = np.maximum(np.asarray(current, dtype=np.float64), epsilon)
    if ref.shape != cur.shape:
        raise ValueError(f"share vectors differ in shape: {ref.shape} vs {cur.shape}")
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def quantile_edges(reference: ArrayLike, bins: int = 10) -> FloatArray:
    """Interior cut points at the reference quantiles (duplicates from ties removed)."""
    values = np.asarray(reference, dtype=np.float64)
    if values.size == 0:
        raise ValueError("reference window is empty")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    cuts = np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    return np.unique(cuts)


def _binned_shares(values: FloatArray, edges: FloatArray) -> FloatArray:
    """Shares per bin; bin i holds edges[i-1] < x <= edges[i] (open-ended at both ends)."""
    index = np.searchsorted(edges, values, side="left")
    return np.bincount(index, minlength=edges.size + 1) / values.size


def numeric_psi(
    reference: ArrayLike, current: ArrayLike, bins: int = 10, epsilon: float = DEFAULT_EPSILON
) -> float:
    """PSI of a numeric feature with quantile bins of the reference window."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.size == 0 or cur.size == 0:
        return math.nan
    edges = quantile_edges(ref, bins)
    return psi_from_shares(_binned_shares(ref, edges), _binned_shares(cur, edges), epsilon)


def _category_shares(values: Sequence[str], categories: Sequence[str]) -> FloatArray:
    counts = dict.fromkeys(categories, 0)
    for value in values:
        counts[value] += 1
    total = max(len(values), 1)
    return np.array([counts[c] / total for c in categories], dtype=np.float64)


def categorical_psi(
    reference: Sequence[str], current: Sequence[str], epsilon: float = DEFAULT_EPSILON
) -> float:
    """PSI of a categorical feature over the union of both windows' categories."""
    if len(reference) == 0 or len(current) == 0:
        return math.nan
    categories = sorted(set(reference) | set(current))
    return psi_from_shares(
        _category_shares(reference, categories), _category_shares(current, categories), epsilon
    )


@dataclass(frozen=True)
class RewardRateDrift:
    """Pooled two-proportion z-test of the reward (success) rate, current vs reference."""

    reference_rate: float
    current_rate: float
    difference: float
    z: float
    p_value: float
    significant: bool
    status: DriftStatus


def reward_rate_drift(
    reference_successes: int,
    reference_trials: int,
    current_successes: int,
    current_trials: int,
    alpha: float = 0.01,
) -> RewardRateDrift:
    """Two-sided pooled z-test; degenerate windows return a status, not an exception."""
    if reference_trials <= 0 or current_trials <= 0:
        nan = math.nan
        return RewardRateDrift(nan, nan, nan, nan, nan, False, DriftStatus.EMPTY_WINDOW)
    for successes, trials in ((reference_successes, reference_trials),
                              (current_successes, current_trials)):  # fmt: skip
        if not 0 <= successes <= trials:
            raise ValueError(f"successes {successes} outside 0..{trials}")
    p_ref = reference_successes / reference_trials
    p_cur = current_successes / current_trials
    pooled = (reference_successes + current_successes) / (reference_trials + current_trials)
    variance = pooled * (1 - pooled) * (1 / reference_trials + 1 / current_trials)
    if variance <= 0:
        return RewardRateDrift(p_ref, p_cur, p_cur - p_ref, math.nan, 1.0, False, DriftStatus.NO_VARIANCE)
    z = (p_cur - p_ref) / math.sqrt(variance)
    p_value = float(2 * stats.norm.sf(abs(z)))
    return RewardRateDrift(p_ref, p_cur, p_cur - p_ref, z, p_value, p_value < alpha, DriftStatus.OK)


@dataclass(frozen=True)
class DriftReport:
    """PSI per feature and of predictions, reward drift, and the verdict."""

    feature_psi: Mapping[str, float]
    prediction_psi: float | None
    reward: RewardRateDrift | None
    threshold: float
    drifted_features: tuple[str, ...]
    """Features whose PSI reached the threshold, worst first."""
    stale: bool
    status: DriftStatus
    n_reference: int
    n_current: int
    notes: tuple[str, ...] = field(default=())


def _column(rows: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    values = []
    for row in rows:
        if name not in row:
            raise FeatureError(name, "missing")
        values.append(row[name])
    return values


def _as_mappings(rows: Sequence[Mapping[str, Any] | FeatureVector]) -> list[Mapping[str, Any]]:
    return [r.as_dict() if isinstance(r, FeatureVector) else r for r in rows]


class DriftMonitor:
    """Learns reference bins and shares in ``fit``; ``report`` compares a current window.

    ``features`` defaults to every key of the first reference row; those in
    ``categorical_features`` are compared by category share, the rest by
    quantile bins.
    """

    def __init__(
        self,
        threshold: float = 0.2,
        bins: int = 10,
        epsilon: float = DEFAULT_EPSILON,
        reward_alpha: float = 0.01,
        features: Sequence[str] | None = None,
        categorical_features: Sequence[str] = CATEGORICAL_FEATURES,
    ) -> None:
        self.threshold = threshold
        self.bins = bins
        self.epsilon = epsilon
        self.reward_alpha = reward_alpha
        self.features = features
        self.categorical_features = categorical_features

    def fit(
        self,
        rows: Sequence[Mapping[str, Any] | FeatureVector],
        scores: ArrayLike | None = None,
        reward: tuple[int, int] | None = None,
    ) -> Self:
        """Record the reference window: feature bins, score bins, reward (successes, trials)."""
        mappings = _as_mappings(rows)
        if not mappings:
            raise ValueError("reference window is empty")
        names = tuple(self.features) if self.features is not None else tuple(mappings[0])
        self.feature_names_in_ = names
        self.edges_: dict[str, FloatArray] = {}
        self.reference_shares_: dict[str, FloatArray] = {}
        self.categories_: dict[str, list[str]] = {}
        self.reference_columns_: dict[str, list[str]] = {}
        for name in names:
            column = _column(mappings, name)
            if name in self.categorical_features:
                self.reference_columns_[name] = [str(v) for v in column]
            else:
                values = np.asarray(column, dtype=np.float64)
                self.edges_[name] = quantile_edges(values, self.bins)
                self.reference_shares_[name] = _binned_shares(values, self.edges_[name])
        self.score_edges_: FloatArray | None = None
        self.score_shares_: FloatArray | None = None
        if scores is not None:
            score_values = np.asarray(scores, dtype=np.float64)
            self.score_edges_ = quantile_edges(score_values, self.bins)
            self.score_shares_ = _binned_shares(score_values, self.score_edges_)
        self.reward_ = reward
        self.n_reference_ = len(mappings)
        return self

    def report(
        self,
        rows: Sequence[Mapping[str, Any] | FeatureVector],
        scores: ArrayLike | None = None,
        reward: tuple[int, int] | None = None,
    ) -> DriftReport:
        """Compare a current window with the reference; an empty one gets a status."""
        mappings = _as_mappings(rows)
        notes: list[str] = []
        if not mappings:
            return DriftReport({}, None, None, self.threshold, (), False,
                               DriftStatus.EMPTY_WINDOW, self.n_reference_, 0)  # fmt: skip
        feature_psi: dict[str, float] = {}
        for name in self.feature_names_in_:
            column = _column(mappings, name)
            if name in self.reference_columns_:
                feature_psi[name] = categorical_psi(
                    self.reference_columns_[name], [str(v) for v in column], self.epsilon
                )
            else:
                current = _binned_shares(np.asarray(column, dtype=np.float64), self.edges_[name])
                feature_psi[name] = psi_from_shares(self.reference_shares_[name], current, self.epsilon)
        prediction_psi = None
        if scores is not None:
            if self.score_edges_ is None or self.score_shares_ is None:
                notes.append("no reference scores: prediction drift not computed")
            else:
                current_scores = np.asarray(scores, dtype=np.float64)
                if current_scores.size:
                    prediction_psi = psi_from_shares(
                        self.score_shares_,
                        _binned_shares(current_scores, self.score_edges_),
                        self.epsilon,
                    )
        reward_drift = None
        if reward is not None:
            if self.reward_ is None:
                notes.append("no reference reward: reward drift not computed")
            else:
                reward_drift = reward_rate_drift(*self.reward_, *reward, alpha=self.reward_alpha)
        drifted = tuple(
            sorted(
                (n for n, v in feature_psi.items() if v >= self.threshold),
                key=lambda n: -feature_psi[n],
            )
        )
        stale = (
            bool(drifted)
            or (prediction_psi is not None and prediction_psi >= self.threshold)
            or (reward_drift is not None and reward_drift.significant)
        )
        return DriftReport(
            feature_psi=feature_psi,
            prediction_psi=prediction_psi,
            reward=reward_drift,
            threshold=self.threshold,
            drifted_features=drifted,
            stale=stale,
            status=DriftStatus.OK,
            n_reference=self.n_reference_,
            n_current=len(mappings),
            notes=tuple(notes),
        )
