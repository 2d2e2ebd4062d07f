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

Intervals. Given a ``reward_range`` (rewards known to lie in [low, high], e.g.
[0, 1] for clicks) intervals are bounded ones, clipped to the range, and the value is
clipped to the range too (so DR never estimates a negative click rate):

* IPS: a betting confidence interval (Waudby-Smith & Ramdas 2024, "Estimating means of
  bounded random variables by betting"; for off-policy values Karampatziakis, Mineiro &
  Ramdas 2021, "Off-policy confidence sequences"). Its lower side uses only w r >= 0 and
  so needs no bound on the importance weights; it is valid in finite samples and under
  adaptive logging when the decisions are in logging order.
* SNIPS and DR: an empirical-Bernstein bound (Maurer & Pontil 2009, Theorem 4) on the
  per-decision terms, whose span follows from the range and the largest weight; an
  approximation for these two (delta method, cross-fitting).

Unlike the normal approximation both keep a positive width when no matched decision
has a reward, so a sparse log gives a wide interval, not [0, 0]. Without a range,
intervals are normal approximations built from the sample variance of the
per-decision terms. An estimate with fewer than ``min_matched_rewards`` matched
rewards is ``INSUFFICIENT``; a zero-width interval is never reported with status
``OK``. Degenerate input returns an :class:`Estimate` with a non-``OK``
:class:`EstimateStatus` instead of raising; a *target policy* that returns an invalid
probability vector is a programming error and raises. The ``*_from_weights`` /
``*_from_terms`` functions take the arrays directly (simulations, large logs).

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
    "DEFAULT_MIN_MATCHED_REWARDS",
    "RewardRange",
    "doubly_robust",
    "doubly_robust_from_terms",
    "betting_lower_bound",
    "empirical_bernstein_half_width",
    "first_candidate_policy",
    "ips",
    "ips_from_weights",
    "pair_features",
    "snips",
    "snips_from_weights",
    "uniform_policy",
    "decisions_from_arrays",
]

_PROBABILITY_TOLERANCE = 1e-6

RewardRange = tuple[float, float]
"""(low, high): every reward of the log lies in [low, high]."""


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
    """The target policy puts zero probability on every logged action (SNIPS)."""
    INSUFFICIENT = "insufficient"
    """Too few matched rewards (``matched_rewards`` < the minimum) to trust the value; the
    interval is still given (with a reward range it is still valid, and it is the whole
    range when no logged action matches the target at all)."""
    DEGENERATE_INTERVAL = "degenerate_interval"
    """The interval would have no width (every per-decision term equal under the normal
    approximation, or a log that contradicts the reward range): value only, interval NaN."""
    REWARD_OUT_OF_RANGE = "reward_out_of_range"
    """A logged reward lies outside the given reward range (or is not finite)."""


@dataclass(frozen=True)
class Estimate:
    """A policy-value estimate with its confidence interval and how it was built."""

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
    matched: int = 0
    """Decisions whose logged action the target policy could have taken (weight > 0)."""
    matched_rewards: int = 0
    """Matched decisions whose reward is not the range's low end (not 0 without a range):
    the clicks that inform the estimate."""
    reward_range: RewardRange | None = None
    interval: str = "normal"
    """"betting" or "empirical_bernstein" (a reward range was given), "normal", or "none"."""

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


DEFAULT_MIN_MATCHED_REWARDS = 5
"""Fewer matched rewards than this and an estimate is ``INSUFFICIENT`` (the np >= 5 rule of thumb)."""


def _reward_range(reward_range: RewardRange | None) -> RewardRange | None:
    if reward_range is None:
        return None
    low, high = float(reward_range[0]), float(reward_range[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"reward_range must be finite with low < high, got {reward_range}")
    return low, high


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
        interval="none",
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


def empirical_bernstein_half_width(terms: ArrayLike, span: float, confidence: float = 0.95) -> float:
    """Half-width of a two-sided empirical-Bernstein interval for the mean of ``terms``.

    Maurer & Pontil (2009), "Empirical Bernstein bounds and sample variance penalization",
    Theorem 4: for i.i.d. variables in an interval of length ``span``, with probability at
    least 1 - d the mean is within sqrt(2 V ln(2/d) / n) + 7 span ln(2/d) / (3 (n - 1)) of
    the sample mean on one side (V the unbiased sample variance). Each side is taken at
    d = (1 - confidence) / 2. The second term keeps the width positive when every term is
    equal (no matched reward), which is where normal intervals collapse to a point.
    """
    values = np.asarray(terms, dtype=np.float64)
    n = values.shape[0]
    if n < 2:
        return math.nan
    log_term = math.log(4.0 / (1.0 - confidence))
    variance = float(np.var(values, ddof=1))
    return math.sqrt(2.0 * variance * log_term / n) + 7.0 * span * log_term / (3.0 * (n - 1))


def betting_lower_bound(values: ArrayLike, alpha: float, prior_variance: float = 0.25) -> float:
    """One-sided (1 - alpha) lower confidence bound for the mean of non-negative variables.

    A betting (test-martingale) bound: for each candidate mean m the capital
    prod_t (1 + lambda_t (X_t - m)) is a non-negative martingale when the mean is m, so by
    Ville's inequality it exceeds 1/alpha with probability at most alpha; the bound is the
    smallest m whose capital stays below 1/alpha. Because X >= 0 the bets need no upper
    bound on X (importance weights can be large). Bets are predictable plug-ins, from the
    data before t only: lambda_t = min(sqrt(2 ln(1/alpha) / (n sigma2_{t-1})), 1 / (2m)).
    Waudby-Smith & Ramdas (2024), "Estimating means of bounded random variables by
    betting", JRSS-B; for off-policy values (X = w r >= 0, valid under adaptive logging
    in the log's order): Karampatziakis, Mineiro & Ramdas (2021), "Off-policy confidence
    sequences", ICML.
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    if n == 0 or float(x.max(initial=0.0)) <= 0.0:
        return 0.0
    if (x < 0).any():
        raise ValueError("betting_lower_bound needs non-negative values")
    steps = np.arange(1, n + 1, dtype=np.float64)
    running_mean = np.cumsum(x) / steps
    squared = np.concatenate(([0.0], np.cumsum((x - running_mean) ** 2)[:-1]))
    past_variance = (prior_variance + squared) / steps  # sigma2_{t-1}, a prior before any data
    threshold = math.log(1.0 / alpha)
    bets = np.sqrt(2.0 * threshold / (n * past_variance))

    def log_capital(m: float) -> float:
        lam = np.minimum(bets, 0.5 / m) if m > 0 else bets
        return float(np.sum(np.log1p(lam * (x - m))))

    if log_capital(0.0) < threshold:
        return 0.0
    low, high = 0.0, float(x.mean())
    if log_capital(high) >= threshold:
        high = float(x.max())  # at m >= max(x) every factor is <= 1: capital < 1/alpha
    while high - low > 1e-6 * high:  # bisection to a relative precision of 1e-6
        middle = 0.5 * (low + high)
        if log_capital(middle) >= threshold:
            low = middle
        else:
            high = middle
    return low


def _betting_interval(
    weights: FloatArray,
    rewards: FloatArray,
    reward_range: RewardRange,
    weight_bound: float,
    confidence: float,
) -> tuple[float, float]:
    """Two-sided betting interval of the target's value from X = w (r - low), 0 <= X <= W (high - low).

    Lower side: the betting bound of X >= 0, which needs no bound on the weights. Upper side:
    the betting bound of W (high - low) - X >= 0, with W the plug-in weight bound. The value
    is low + E[X] when E[w] = 1 (the logging policy covers the target; exact when low = 0).
    Each side is taken at (1 - confidence) / 2.
    """
    low, high = reward_range
    alpha = (1.0 - confidence) / 2.0
    prior = (high - low) ** 2 / 4.0
    shifted = weights * (rewards - low)
    ceiling = weight_bound * (high - low)
    lower = low + betting_lower_bound(shifted, alpha, prior)
    upper = low + ceiling - betting_lower_bound(np.maximum(ceiling - shifted, 0.0), alpha, prior)
    return lower, upper


def _summarize(
    estimator: str,
    value: float,
    terms: FloatArray,
    weights: FloatArray,
    rewards: FloatArray,
    *,
    span: float,
    reward_range: RewardRange | None,
    confidence: float,
    min_matched_rewards: int,
    n_capped: int,
    betting: bool = False,
    weight_bound: float = math.nan,
) -> Estimate:
    """The estimate, its interval and its status from the per-decision terms.

    With a ``reward_range`` the interval is the betting interval (``betting``) or
    empirical-Bernstein on terms of width ``span``, clipped to the range (and so is the
    value); without one it is the normal approximation.
    """
    n = terms.shape[0]
    ess = _kish_ess(weights)
    matched_mask = weights > 0
    floor = reward_range[0] if reward_range is not None else 0.0
    matched = int(matched_mask.sum())
    matched_rewards = int((matched_mask & (rewards != floor)).sum())
    counts = {"matched": matched, "matched_rewards": matched_rewards, "n_capped": n_capped}
    if n < 2:
        return Estimate(
            estimator, value, math.nan, math.nan, math.nan, n, ess,
            EstimateStatus.TOO_FEW_DECISIONS, confidence,
            reward_range=reward_range, interval="none", **counts,
        )  # fmt: skip
    standard_error = float(np.std(terms, ddof=1) / math.sqrt(n))
    status = EstimateStatus.INSUFFICIENT if matched_rewards < min_matched_rewards else EstimateStatus.OK
    if reward_range is not None:
        low, high = reward_range
        if matched == 0:
            # The target never agrees with a logged action: the data say nothing about it.
            ci_low, ci_high, status = low, high, EstimateStatus.INSUFFICIENT
            method = "empirical_bernstein" if not betting else "betting"
        elif (
            betting
            and (bet := _betting_interval(weights, rewards, reward_range, weight_bound, confidence))[1]
            > bet[0]
        ):
            ci_low, ci_high = min(max(bet[0], low), high), max(min(bet[1], high), low)
            method = "betting"
        else:  # asked for, or the betting set was empty (the weights' mean far from 1)
            half = empirical_bernstein_half_width(terms, span, confidence)
            ci_low = min(max(value - half, low), high)
            ci_high = max(min(value + half, high), low)
            method = "empirical_bernstein"
        value = min(max(value, low), high)
    else:
        z = float(stats.norm.ppf(0.5 + confidence / 2.0))
        ci_low, ci_high = value - z * standard_error, value + z * standard_error
        method = "normal"
    if not ci_high > ci_low:  # all terms equal (normal), or the log contradicts the range
        ci_low, ci_high, status = math.nan, math.nan, EstimateStatus.DEGENERATE_INTERVAL
    return Estimate(
        estimator=estimator,
        value=value,
        ci_low=ci_low,
        ci_high=ci_high,
        standard_error=standard_error,
        n=n,
        effective_sample_size=ess,
        status=status,
        confidence=confidence,
        reward_range=reward_range,
        interval=method,
        **counts,
    )


def _array_precheck(
    estimator: str,
    weights: FloatArray,
    rewards: FloatArray,
    reward_range: RewardRange | None,
    confidence: float,
) -> Estimate | None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if weights.shape != rewards.shape or weights.ndim != 1:
        raise ValueError("weights and rewards must be 1-d arrays of the same length")
    n = weights.shape[0]
    if n == 0:
        return _degenerate(estimator, 0, EstimateStatus.EMPTY_LOG, confidence)
    if not (np.isfinite(weights).all() and (weights >= 0).all()):
        return _degenerate(estimator, n, EstimateStatus.INVALID_PROBABILITY, confidence)
    if not np.isfinite(rewards).all() or (
        reward_range is not None and ((rewards < reward_range[0]) | (rewards > reward_range[1])).any()
    ):
        return _degenerate(estimator, n, EstimateStatus.REWARD_OUT_OF_RANGE, confidence)
    return None


def _weight_bound(weights: FloatArray, weight_cap: float | None) -> float:
    """Largest weight the interval allows for: the cap, else the largest seen (at least 1).

    A plug-in bound, as in Thomas et al. (2015), "High confidence off-policy evaluation",
    which bounds truncated importance weights by their threshold.
    """
    if weight_cap is not None:
        return float(weight_cap)
    return max(float(weights.max(initial=0.0)), 1.0)


def _span(reward_range: RewardRange | None) -> float:
    return reward_range[1] - reward_range[0] if reward_range is not None else math.nan


def ips_from_weights(
    weights: ArrayLike,
    rewards: ArrayLike,
    *,
    reward_range: RewardRange | None = None,
    weight_cap: float | None = None,
    confidence: float = 0.95,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
    n_capped: int = 0,
    interval: str = "betting",
) -> Estimate:
    """IPS from importance weights pi(a_i|x_i) / p_i (already capped) and rewards, in log order.

    With a reward range the interval is ``"betting"`` (default: no bound on the weights
    needed, see :func:`betting_lower_bound`) or ``"empirical_bernstein"``.
    """
    if interval not in ("betting", "empirical_bernstein"):
        raise ValueError(f"interval must be 'betting' or 'empirical_bernstein', got {interval!r}")
    w = np.asarray(weights, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    bounds = _reward_range(reward_range)
    degenerate = _array_precheck("ips", w, r, bounds, confidence)
    if degenerate is not None:
        return degenerate
    terms = w * r
    span = math.nan
    if bounds is not None:  # w r lies in [min(0, W low), max(0, W high)] for w in [0, W]
        span = _weight_bound(w, weight_cap) * (max(bounds[1], 0.0) - min(bounds[0], 0.0))
    return _summarize(
        "ips", float(terms.mean()), terms, w, r, span=span, reward_range=bounds,
        confidence=confidence, min_matched_rewards=min_matched_rewards, n_capped=n_capped,
        betting=bounds is not None and interval == "betting", weight_bound=_weight_bound(w, weight_cap),
    )  # fmt: skip


def snips_from_weights(
    weights: ArrayLike,
    rewards: ArrayLike,
    *,
    reward_range: RewardRange | None = None,
    weight_cap: float | None = None,
    confidence: float = 0.95,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
    n_capped: int = 0,
) -> Estimate:
    """SNIPS from importance weights and rewards; the influence is w_i (r_i - V) / mean(w).

    With a reward range the empirical-Bernstein bound is applied to that linearized
    influence (span W (high - low) / mean(w)): an approximation, as the delta method is.
    """
    w = np.asarray(weights, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    bounds = _reward_range(reward_range)
    degenerate = _array_precheck("snips", w, r, bounds, confidence)
    if degenerate is not None:
        return degenerate
    if w.sum() <= 0:
        return _degenerate("snips", w.shape[0], EstimateStatus.NO_OVERLAP, confidence)
    value = float(np.sum(w * r) / np.sum(w))
    influence = w * (r - value) / w.mean()
    span = _weight_bound(w, weight_cap) * _span(bounds) / float(w.mean())
    return _summarize(
        "snips", value, influence, w, r, span=span, reward_range=bounds,
        confidence=confidence, min_matched_rewards=min_matched_rewards, n_capped=n_capped,
    )  # fmt: skip


def doubly_robust_from_terms(
    weights: ArrayLike,
    rewards: ArrayLike,
    direct: ArrayLike,
    predicted_logged: ArrayLike,
    *,
    reward_range: RewardRange | None = None,
    weight_cap: float | None = None,
    confidence: float = 0.95,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
    n_capped: int = 0,
) -> Estimate:
    """DR from weights, rewards, the direct part sum_a pi(a|x) q(x, a) and q(x, a_logged).

    With a reward range, the caller's predictions must already lie in it (``doubly_robust``
    clips them); terms then lie in an interval of length (high - low)(1 + 2W), the
    empirical-Bernstein span, and the value and interval are clipped to the range.
    """
    w = np.asarray(weights, dtype=np.float64)
    r = np.asarray(rewards, dtype=np.float64)
    bounds = _reward_range(reward_range)
    degenerate = _array_precheck("doubly_robust", w, r, bounds, confidence)
    if degenerate is not None:
        return degenerate
    terms = np.asarray(direct, dtype=np.float64) + w * (r - np.asarray(predicted_logged, dtype=np.float64))
    span = _span(bounds) * (1.0 + 2.0 * _weight_bound(w, weight_cap))
    return _summarize(
        "doubly_robust", float(terms.mean()), terms, w, r, span=span, reward_range=bounds,
        confidence=confidence, min_matched_rewards=min_matched_rewards, n_capped=n_capped,
    )  # fmt: skip


# --------------------------------------------------------------------------- estimators


def ips(
    decisions: Sequence[LoggedDecision],
    target_policy: TargetPolicy,
    *,
    weight_cap: float | None = None,
    confidence: float = 0.95,
    reward_range: RewardRange | None = None,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
    interval: str = "betting",
) -> Estimate:
    """Inverse propensity scoring: mean of w_i * r_i, w_i = pi(a_i|x_i) / p_i.

    With a ``reward_range`` the interval is a betting interval (``interval="betting"``,
    valid under adaptive logging, in the order of ``decisions``) or empirical-Bernstein.
    """
    degenerate = _precheck("ips", decisions, confidence)
    if degenerate is not None:
        return degenerate
    weights = _weights(decisions, target_policy, weight_cap)
    rewards = np.array([d.reward for d in decisions], dtype=np.float64)
    return ips_from_weights(
        weights.weights, rewards, reward_range=reward_range, weight_cap=weight_cap,
        confidence=confidence, min_matched_rewards=min_matched_rewards, n_capped=weights.n_capped,
        interval=interval,
    )  # fmt: skip


def snips(
    decisions: Sequence[LoggedDecision],
    target_policy: TargetPolicy,
    *,
    weight_cap: float | None = None,
    confidence: float = 0.95,
    reward_range: RewardRange | None = None,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
) -> Estimate:
    """Self-normalized IPS: sum(w r) / sum(w); standard error by the delta method.

    The delta-method influence of decision i is w_i (r_i - V) / mean(w).
    """
    degenerate = _precheck("snips", decisions, confidence)
    if degenerate is not None:
        return degenerate
    weights = _weights(decisions, target_policy, weight_cap)
    rewards = np.array([d.reward for d in decisions], dtype=np.float64)
    return snips_from_weights(
        weights.weights, rewards, reward_range=reward_range, weight_cap=weight_cap,
        confidence=confidence, min_matched_rewards=min_matched_rewards, n_capped=weights.n_capped,
    )  # fmt: skip


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
    reward_range: RewardRange | None = None,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
) -> Estimate:
    """Doubly robust estimate: sum_a pi(a|x) q(x,a) + w (r - q(x, a_logged)).

    ``reward_model`` (default :class:`ActionRewardModel`) is cloned and
    cross-fitted over ``n_folds`` random folds: the model that scores a
    decision never saw it. With ``prefit=True`` the given, already fitted
    model is used as is (fit it on a different log). Folds whose training
    part is empty fall back to no cross-fitting only when n < n_folds, in
    which case the status is ``TOO_FEW_DECISIONS``. With a ``reward_range`` the
    model's predictions are clipped to it, so the estimate stays inside the range.
    """
    degenerate = _precheck("doubly_robust", decisions, confidence)
    if degenerate is not None:
        return degenerate
    bounds = _reward_range(reward_range)
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
    if bounds is not None:
        predictions = [np.clip(q, bounds[0], bounds[1]) for q in predictions]
    rewards = np.array([d.reward for d in decisions], dtype=np.float64)
    direct = np.array([float(t @ q) for t, q in zip(weights.target, predictions, strict=True)])
    predicted_logged = np.array([q[d.chosen_index] for q, d in zip(predictions, decisions, strict=True)])
    return doubly_robust_from_terms(
        weights.weights, rewards, direct, predicted_logged, reward_range=bounds, weight_cap=weight_cap,
        confidence=confidence, min_matched_rewards=min_matched_rewards, n_capped=weights.n_capped,
    )  # fmt: skip


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
