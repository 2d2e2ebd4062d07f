"""Offline (counterfactual) policy evaluation from logged bandit decisions.

Estimates how a *target* policy would have performed using only decisions
logged by another policy together with the probability the logging policy
gave the chosen action (DESIGN.md, loop step 5). Three estimators:

* ``ips`` — inverse propensity scoring, unbiased when the logged
  probabilities are right and the target's support is covered.
* ``snips`` — self-normalized IPS, slightly biased but far less variable when
  weights are large; interval by the delta method.
* ``doubly_robust`` — a direct-method reward model plus an IPS correction of
  its residual; unbiased if either the propensities or the model are right,
  usually much narrower than IPS. The reward model is cross-fitted so that no
  decision is scored by a model trained on it.

Intervals are normal approximations built from the sample variance of the
per-decision terms. Degenerate input returns an :class:`Estimate` with a
non-``OK`` :class:`EstimateStatus` instead of raising; a *target policy* that
returns an invalid probability vector is a programming error and raises.

Weight capping (``weight_cap``): each importance weight ``pi/p`` is replaced by
``min(pi/p, weight_cap)``. This trades variance for a bias that is
non-positive for non-negative rewards (the estimate is pulled towards zero) —
use it when the logging policy explored too little, and report it.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from sklearn.base import BaseEstimator, clone
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold

FloatArray = NDArray[np.float64]

__all__ = [
    "ActionRewardModel",
    "Estimate",
    "EstimateStatus",
    "GreedyPolicy",
    "LoggedDecision",
    "RewardModel",
    "TargetPolicy",
    "doubly_robust",
    "first_candidate_policy",
    "ips",
    "pair_features",
    "snips",
    "uniform_policy",
    "decisions_from_arrays",
]

_PROBABILITY_TOLERANCE = 1e-6


@dataclass(frozen=True, eq=False)
class LoggedDecision:
    """One logged bandit decision, as the evaluator needs it.

    ``action_features[j]`` describes candidate ``action_ids[j]``;
    ``logged_probability`` is the probability the *logging* policy gave the
    candidate at ``chosen_index`` (the one that was shown).
    """

    context: FloatArray
    action_ids: tuple[str, ...]
    action_features: FloatArray
    chosen_index: int
    logged_probability: float
    reward: float

    def __post_init__(self) -> None:
        context = np.asarray(self.context, dtype=np.float64).reshape(-1)
        features = np.asarray(self.action_features, dtype=np.float64)
        if features.ndim == 1:
            features = features.reshape(len(self.action_ids), -1)
        object.__setattr__(self, "context", context)
        object.__setattr__(self, "action_features", features)
        object.__setattr__(self, "action_ids", tuple(self.action_ids))
        if features.shape[0] != len(self.action_ids):
            raise ValueError(
                f"action_features has {features.shape[0]} rows for {len(self.action_ids)} action_ids"
            )
        if not 0 <= self.chosen_index < len(self.action_ids):
            raise ValueError(f"chosen_index {self.chosen_index} outside 0..{len(self.action_ids) - 1}")

    @property
    def n_candidates(self) -> int:
        """Number of candidate actions offered in this decision."""
        return len(self.action_ids)


TargetPolicy = Callable[[LoggedDecision], ArrayLike]
"""A policy to evaluate: the probability vector it would put on the candidates."""


class RewardModel(Protocol):
    """Direct-method model of the expected reward of every candidate."""

    def fit(self, decisions: Sequence[LoggedDecision]) -> Self: ...

    def predict(self, decisions: Sequence[LoggedDecision]) -> list[FloatArray]: ...


class EstimateStatus(enum.Enum):
    """Why an estimate is (or is not) usable."""

    OK = "ok"
    EMPTY_LOG = "empty_log"
    """No decisions: value and interval are NaN."""
    INVALID_PROBABILITY = "invalid_probability"
    """A logged probability is not in (0, 1]; IPS weights are undefined."""
    TOO_FEW_DECISIONS = "too_few_decisions"
    """Fewer than two decisions: a value but no variance, so no interval."""
    NO_OVERLAP = "no_overlap"
    """The target policy puts zero probability on every logged action."""


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate with a normal-approximation confidence interval."""

    estimator: str
    value: float
    ci_low: float
    ci_high: float
    standard_error: float
    n: int
    effective_sample_size: float
    """Kish ESS of the importance weights, (sum w)^2 / sum w^2; n when w is constant."""
    status: EstimateStatus
    confidence: float = 0.95
    n_capped: int = 0
    """How many weights the weight cap changed."""

    @property
    def width(self) -> float:
        """Width of the confidence interval."""
        return self.ci_high - self.ci_low


# --------------------------------------------------------------------------- policies


def uniform_policy(decision: LoggedDecision) -> FloatArray:
    """Uniform random choice among the candidates."""
    k = decision.n_candidates
    return np.full(k, 1.0 / k)


def first_candidate_policy(decision: LoggedDecision) -> FloatArray:
    """Always the first candidate (the static, editor-ordered baseline)."""
    probabilities = np.zeros(decision.n_candidates)
    probabilities[0] = 1.0
    return probabilities


class GreedyPolicy:
    """Pick the candidate with the highest predicted reward; ties split evenly.

    ``reward_model`` must already be fitted (on data other than the log being
    evaluated, or the evaluation is optimistic).
    """

    def __init__(self, reward_model: RewardModel) -> None:
        self.reward_model = reward_model

    def __call__(self, decision: LoggedDecision) -> FloatArray:
        predicted = self.reward_model.predict([decision])[0]
        best = np.isclose(predicted, predicted.max(), rtol=0.0, atol=1e-12)
        return best / best.sum()


# --------------------------------------------------------------------------- reward model


def pair_features(context: FloatArray, action_features: FloatArray) -> FloatArray:
    """Features of every (context, candidate) pair: [context, action, context ⊗ action].

    The interaction lets a linear model give each action its own response to
    the context; the main effects carry the reward level that DR needs.
    """
    k = action_features.shape[0]
    outer = (action_features[:, :, None] * context[None, None, :]).reshape(k, -1)
    return np.concatenate([np.tile(context, (k, 1)), action_features, outer], axis=1)


def _stacked_pair_features(decisions: Sequence[LoggedDecision]) -> tuple[FloatArray, list[int]]:
    """Pair features of all candidates of all decisions, and each decision's row count."""
    sizes = [d.n_candidates for d in decisions]
    shapes = {(d.action_features.shape, d.context.shape) for d in decisions}
    if len(shapes) == 1:  # every decision alike: one vectorized outer product
        contexts = np.stack([d.context for d in decisions])  # (n, d)
        actions = np.stack([d.action_features for d in decisions])  # (n, k, da)
        n, k, _ = actions.shape
        outer = (actions[:, :, :, None] * contexts[:, None, None, :]).reshape(n, k, -1)
        tiled = np.broadcast_to(contexts[:, None, :], (n, k, contexts.shape[1]))
        stacked = np.concatenate([tiled, actions, outer], axis=2).reshape(n * k, -1)
        return stacked, sizes
    return np.vstack([pair_features(d.context, d.action_features) for d in decisions]), sizes


class ActionRewardModel(BaseEstimator):
    """Linear direct-method reward model on context×action features.

    ``kind="ridge"`` fits the expected reward by ridge regression (any reward
    scale); ``kind="logistic"`` fits P(reward = 1) for 0/1 rewards. Only the
    chosen candidate of each decision is observed, so only it trains.
    """

    def __init__(self, kind: str = "ridge", alpha: float = 1.0) -> None:
        self.kind = kind
        self.alpha = alpha

    def fit(self, decisions: Sequence[LoggedDecision]) -> Self:
        """Fit on the chosen (context, action) pairs and their rewards."""
        if self.kind not in ("ridge", "logistic"):
            raise ValueError(f"kind must be 'ridge' or 'logistic', got {self.kind!r}")
        if not decisions:
            raise ValueError("cannot fit a reward model on an empty log")
        rows = np.vstack(
            [
                pair_features(d.context, d.action_features[d.chosen_index : d.chosen_index + 1])
                for d in decisions
            ]
        )
        rewards = np.array([d.reward for d in decisions], dtype=np.float64)
        self.n_features_in_ = rows.shape[1]
        self.constant_: float | None = None
        if self.kind == "ridge":
            self.model_: Ridge | LogisticRegression | None = Ridge(alpha=self.alpha).fit(rows, rewards)
        else:
            if not np.isin(rewards, (0.0, 1.0)).all():
                raise ValueError("kind='logistic' needs rewards in {0, 1}")
            if np.unique(rewards).size < 2:
                self.model_, self.constant_ = None, float(rewards[0])
            else:
                self.model_ = LogisticRegression(C=1.0 / self.alpha, max_iter=1000).fit(
                    rows, rewards.astype(int)
                )
        return self

    def predict(self, decisions: Sequence[LoggedDecision]) -> list[FloatArray]:
        """Predicted expected reward of every candidate of every decision."""
        if not decisions:
            return []
        stacked, sizes = _stacked_pair_features(decisions)
        if self.model_ is None:
            flat = np.full(stacked.shape[0], self.constant_, dtype=np.float64)
        elif isinstance(self.model_, LogisticRegression):
            flat = self.model_.predict_proba(stacked)[:, 1]
        else:
            flat = self.model_.predict(stacked)
        bounds = np.cumsum(sizes)[:-1]
        return [np.asarray(p, dtype=np.float64) for p in np.split(flat, bounds)]


# --------------------------------------------------------------------------- helpers


def decisions_from_arrays(
    contexts: ArrayLike,
    action_features: ArrayLike,
    chosen: ArrayLike,
    logged_probabilities: ArrayLike,
    rewards: ArrayLike,
    action_ids: Sequence[str] | None = None,
) -> list[LoggedDecision]:
    """Build decisions from arrays when every decision offers the same k actions.

    ``action_features`` is (k, d_a) shared by all decisions or (n, k, d_a).
    """
    context_matrix = np.atleast_2d(np.asarray(contexts, dtype=np.float64))
    n = context_matrix.shape[0]
    features = np.asarray(action_features, dtype=np.float64)
    if features.ndim == 2:
        features = np.broadcast_to(features, (n, *features.shape))
    k = features.shape[1]
    ids = tuple(action_ids) if action_ids is not None else tuple(str(j) for j in range(k))
    chosen_arr = np.asarray(chosen, dtype=int)
    probs = np.asarray(logged_probabilities, dtype=np.float64)
    reward_arr = np.asarray(rewards, dtype=np.float64)
    if not (len(chosen_arr) == len(probs) == len(reward_arr) == features.shape[0] == n):
        raise ValueError("contexts, action_features, chosen, probabilities, rewards differ in n")
    return [
        LoggedDecision(
            context=context_matrix[i],
            action_ids=ids,
            action_features=features[i],
            chosen_index=int(chosen_arr[i]),
            logged_probability=float(probs[i]),
            reward=float(reward_arr[i]),
        )
        for i in range(n)
    ]


@dataclass(frozen=True)
class _Weights:
    weights: FloatArray
    target: list[FloatArray] = field(repr=False)
    n_capped: int


def _target_probabilities(
    decisions: Sequence[LoggedDecision], target_policy: TargetPolicy
) -> list[FloatArray]:
    result = []
    for position, decision in enumerate(decisions):
        probabilities = np.asarray(target_policy(decision), dtype=np.float64).reshape(-1)
        if probabilities.shape[0] != decision.n_candidates:
            raise ValueError(
                f"target policy returned {probabilities.shape[0]} probabilities for "
                f"{decision.n_candidates} candidates (decision {position})"
            )
        if (
            not np.isfinite(probabilities).all()
            or (probabilities < -_PROBABILITY_TOLERANCE).any()
            or abs(probabilities.sum() - 1.0) > _PROBABILITY_TOLERANCE
        ):
            raise ValueError(f"target policy returned an invalid probability vector (decision {position})")
        result.append(np.clip(probabilities, 0.0, 1.0))
    return result


def _precheck(estimator: str, decisions: Sequence[LoggedDecision], confidence: float) -> Estimate | None:
    """The status estimate for degenerate input, or None when evaluation can proceed."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(decisions)
    if n == 0:
        return _degenerate(estimator, 0, EstimateStatus.EMPTY_LOG, confidence)
    probabilities = np.array([d.logged_probability for d in decisions], dtype=np.float64)
    if (
        not (np.isfinite(probabilities).all() and (probabilities > 0).all())
        or (probabilities > 1.0 + _PROBABILITY_TOLERANCE).any()
    ):
        return _degenerate(estimator, n, EstimateStatus.INVALID_PROBABILITY, confidence)
    return None


def _degenerate(
    estimator: str, n: int, status: EstimateStatus, confidence: float, value: float = math.nan
) -> Estimate:
    return Estimate(
        estimator=estimator,
        value=value,
        ci_low=math.nan,
        ci_high=math.nan,
        standard_error=math.nan,
        n=n,
        effective_sample_size=math.nan if n == 0 else 0.0,
        status=status,
        confidence=confidence,
    )


def _weights(
    decisions: Sequence[LoggedDecision], target_policy: TargetPolicy, weight_cap: float | None
) -> _Weights:
    if weight_cap is not None and not weight_cap > 0:
        raise ValueError(f"weight_cap must be positive, got {weight_cap}")
    target = _target_probabilities(decisions, target_policy)
    raw = np.array([t[d.chosen_index] / d.logged_probability for t, d in zip(target, decisions, strict=True)])
    if weight_cap is None:
        return _Weights(raw, target, 0)
    return _Weights(np.minimum(raw, weight_cap), target, int((raw > weight_cap).sum()))


def _kish_ess(weights: FloatArray) -> float:
    total_squares = float(np.sum(weights**2))
    return float(np.sum(weights) ** 2 / total_squares) if total_squares > 0 else 0.0


def _from_terms(
    estimator: str,
    value: float,
    influence: FloatArray,
    weights: _Weights,
    confidence: float,
) -> Estimate:
    """Estimate whose standard error is sd(influence) / sqrt(n)."""
    n = influence.shape[0]
    ess = _kish_ess(weights.weights)
    if n < 2:
        return Estimate(
            estimator, value, math.nan, math.nan, math.nan, n, ess,
            EstimateStatus.TOO_FEW_DECISIONS, confidence, weights.n_capped,
        )  # fmt: skip
    standard_error = float(np.std(influence, ddof=1) / math.sqrt(n))
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    return Estimate(
        estimator=estimator,
        value=value,
        ci_low=value - z * standard_error,
        ci_high=value + z * standard_error,
        standard_error=standard_error,
        n=n,
        effective_sample_size=ess,
        status=EstimateStatus.OK,
        confidence=confidence,
        n_capped=weights.n_capped,
    )


# --------------------------------------------------------------------------- estimators


def ips(
    decisions: Sequence[LoggedDecision],
    target_policy: TargetPolicy,
    *,
    weight_cap: float | None = None,
    confidence: float = 0.95,
) -> Estimate:
    """Inverse propensity scoring: mean of w_i * r_i, w_i = pi(a_i|x_i) / p_i."""
    degenerate = _precheck("ips", decisions, confidence)
    if degenerate is not None:
        return degenerate
    weights = _weights(decisions, target_policy, weight_cap)
    rewards = np.array([d.reward for d in decisions], dtype=np.float64)
    terms = weights.weights * rewards
    return _from_terms("ips", float(terms.mean()), terms, weights, confidence)


def snips(
    decisions: Sequence[LoggedDecision],
    target_policy: TargetPolicy,
    *,
    weight_cap: float | None = None,
    confidence: float = 0.95,
) -> Estimate:
    """Self-normalized IPS: sum(w r) / sum(w); standard error by the delta method.

    The delta-method influence of decision i is w_i (r_i - V) / mean(w).
    """
    degenerate = _precheck("snips", decisions, confidence)
    if degenerate is not None:
        return degenerate
    weights = _weights(decisions, target_policy, weight_cap)
    w = weights.weights
    if w.sum() <= 0:
        return _degenerate("snips", len(decisions), EstimateStatus.NO_OVERLAP, confidence)
    rewards = np.array([d.reward for d in decisions], dtype=np.float64)
    value = float(np.sum(w * rewards) / np.sum(w))
    influence = w * (rewards - value) / w.mean()
    return _from_terms("snips", value, influence, weights, confidence)


def doubly_robust(
    decisions: Sequence[LoggedDecision],
    target_policy: TargetPolicy,
    reward_model: RewardModel | None = None,
    *,
    n_folds: int = 2,
    prefit: bool = False,
    weight_cap: float | None = None,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
) -> Estimate:
    """Doubly robust estimate: sum_a pi(a|x) q(x,a) + w (r - q(x, a_logged)).

    ``reward_model`` (default :class:`ActionRewardModel`) is cloned and
    cross-fitted over ``n_folds`` random folds: the model that scores a
    decision never saw it. With ``prefit=True`` the given, already fitted
    model is used as is (fit it on a different log). Folds whose training
    part is empty fall back to no cross-fitting only when n < n_folds, in
    which case the status is ``TOO_FEW_DECISIONS``.
    """
    degenerate = _precheck("doubly_robust", decisions, confidence)
    if degenerate is not None:
        return degenerate
    weights = _weights(decisions, target_policy, weight_cap)
    n = len(decisions)
    if prefit:
        if reward_model is None:
            raise ValueError("prefit=True needs a fitted reward_model")
        predictions = reward_model.predict(decisions)
    else:
        if n_folds < 2:
            raise ValueError(f"n_folds must be >= 2 for cross-fitting, got {n_folds}")
        if n < n_folds:
            return _degenerate("doubly_robust", n, EstimateStatus.TOO_FEW_DECISIONS, confidence)
        template: RewardModel = reward_model if reward_model is not None else ActionRewardModel()
        predictions = _cross_fit(decisions, template, n_folds, random_state)
    rewards = np.array([d.reward for d in decisions], dtype=np.float64)
    direct = np.array([float(t @ q) for t, q in zip(weights.target, predictions, strict=True)])
    predicted_logged = np.array([q[d.chosen_index] for q, d in zip(predictions, decisions, strict=True)])
    terms = direct + weights.weights * (rewards - predicted_logged)
    return _from_terms("doubly_robust", float(terms.mean()), terms, weights, confidence)


def _cross_fit(
    decisions: Sequence[LoggedDecision],
    template: RewardModel,
    n_folds: int,
    random_state: int | np.random.Generator | None,
) -> list[FloatArray]:
    rng = np.random.default_rng(random_state)
    seed = int(rng.integers(2**31 - 1))
    predictions: list[FloatArray | None] = [None] * len(decisions)
    folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for train_index, score_index in folds.split(np.zeros(len(decisions))):
        model = _fresh(template)
        model.fit([decisions[i] for i in train_index])
        scored = model.predict([decisions[i] for i in score_index])
        for i, q in zip(score_index, scored, strict=True):
            predictions[i] = np.asarray(q, dtype=np.float64)
    return [q for q in predictions if q is not None]


def _fresh(template: RewardModel) -> RewardModel:
    """An unfitted copy of the template (sklearn clone when it is an estimator)."""
    if isinstance(template, BaseEstimator):
        return clone(template)  # type: ignore[return-value]
    return copy.deepcopy(template)
