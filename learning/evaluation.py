"""Offline policy evaluation of a slot's logged decisions, and drift of the classifiers.

``evaluate_policies`` reads the slot's newest ``limit`` decisions whose reward is
final, in logging order, and splits them: the first ``train_fraction`` trains candidate
VW configurations (``vw:<args>``) by replaying the log exactly as the learner
would; every policy is then evaluated on the *rest* with IPS, SNIPS and doubly
robust estimates. ``current`` is the slot's newest checkpoint (it has usually
learned from the evaluation part too, so its estimate is optimistic: compare
candidate configurations with each other, and ``current`` with care).

With the slot's reward range (``reward_range``, [0, 1] for clicks by default in the
server's config) every interval is bounded as ``tacit.learning.ope`` describes (IPS:
betting, SNIPS and DR: empirical-Bernstein) and clipped to the range, and an estimate with
fewer than ``min_matched_rewards`` matched rewards has status "insufficient" (see ``ope.EstimateStatus``).

Context and candidate features are one-hot/numeric encoded (vocabulary from
the training part) for the doubly robust reward model only; policies see the
features exactly as they were logged.

``drift_report`` compares the features (and scores) of the active model's
training window with those of subjects active in a recent window.
``bandit_drift_report`` compares a slot's logged decisions in a recent window
with those before it: the reward (success) rate with a two-proportion z-test,
and the PSI of the context features every decision carried.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sqlalchemy import or_, select

from tacit.learning.bandit import BanditConfigError, SlotModel, validate_arguments
from tacit.learning.drift import DriftMonitor, DriftReport, DriftStatus, reward_rate_drift
from tacit.learning.features import FeatureVector, build_features
from tacit.learning.ope import (
    DEFAULT_MIN_MATCHED_REWARDS,
    Estimate,
    LoggedDecision,
    RewardRange,
    TargetPolicy,
    doubly_robust,
    first_candidate_policy,
    ips,
    snips,
    uniform_policy,
)
from tacit.learning.profiles import as_utc, iter_histories
from tacit.learning.registry import ModelIntegrityError, bandit_task, load_slot_model, newest_checkpoint
from tacit.learning.registry_models import ServedModel
from tacit.store.candidate_sets import decision_candidates
from tacit.store.db import Database
from tacit.store.schema import Decision

__all__ = [
    "DEFAULT_POLICIES",
    "DriftSummary",
    "EvaluationError",
    "PolicyEstimate",
    "SlotDecision",
    "bandit_drift_report",
    "drift_report",
    "evaluate_policies",
    "load_slot_decisions",
]

logger = logging.getLogger("tacit.learning")

DEFAULT_POLICIES = ("current", "static:first", "uniform")
ESTIMATORS = ("ips", "snips", "doubly_robust")
MIN_DECISIONS = 20


class EvaluationError(ValueError):
    """The request cannot be evaluated; ``policy_index`` names the offending policy if any."""

    def __init__(self, message: str, policy_index: int | None = None) -> None:
        super().__init__(message)
        self.policy_index = policy_index


@dataclass(frozen=True, eq=False)
class SlotDecision(LoggedDecision):
    """A logged decision with the features its policy saw (for VW target policies)."""

    raw_context: Mapping[str, Any] = field(default_factory=dict)
    raw_candidates: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class PolicyEstimate:
    """One policy's estimate by one estimator; fields as in ``ope.Estimate``."""

    policy: str
    estimator: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    status: str
    effective_sample_size: float
    matched: int = 0
    matched_rewards: int = 0
    interval: str = "normal"


class _Encoder:
    """Numeric features as values, strings as one-hot name=value indicators."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    @staticmethod
    def _keys(features: Mapping[str, Any]) -> list[tuple[str, float]]:
        out = []
        for name, value in features.items():
            if name == "id":
                continue
            if isinstance(value, bool):
                out.append((name, float(value)))
            elif isinstance(value, int | float):
                if math.isfinite(float(value)):
                    out.append((name, float(value)))
            else:
                out.append((f"{name}={value}", 1.0))
        return out

    def fit(self, maps: Sequence[Mapping[str, Any]]) -> _Encoder:
        for features in maps:
            for key, _ in self._keys(features):
                self.index.setdefault(key, len(self.index))
        return self

    def encode(self, features: Mapping[str, Any]) -> np.ndarray:
        vector = np.zeros(max(len(self.index), 1))
        for key, value in self._keys(features):
            position = self.index.get(key)
            if position is not None:
                vector[position] = value
        return vector


@dataclass(frozen=True)
class _RawDecision:
    context: dict[str, Any]
    candidates: list[dict[str, Any]]
    candidate_ids: list[str]
    chosen_index: int
    probability: float
    reward: float


def load_slot_decisions(
    db: Database, slot: str, default_reward: float, now: datetime | None = None, limit: int = 200_000
) -> list[_RawDecision]:
    """The newest ``limit`` decisions of ``slot`` whose reward is final, oldest first."""
    now = now or datetime.now(UTC)
    query = (
        select(
            Decision.context,
            Decision.candidate_features,
            Decision.candidate_refs,
            Decision.candidate_ids,
            Decision.chosen_index,
            Decision.probabilities,
            Decision.reward,
        )
        .where(Decision.slot == slot)
        .where(or_(Decision.reward.is_not(None), Decision.reward_deadline <= now))
        .order_by(Decision.created_at.desc(), Decision.event_id.desc())
        .limit(limit)
    )
    with db.transaction() as session:
        rows = list(reversed(session.execute(query).all()))
        candidates = decision_candidates(session, rows)
    return [
        _RawDecision(
            context=dict(row.context or {}),
            candidates=actions,
            candidate_ids=list(row.candidate_ids),
            chosen_index=int(row.chosen_index),
            probability=float(row.probabilities[row.chosen_index]),
            reward=float(row.reward) if row.reward is not None else default_reward,
        )
        for row, actions in zip(rows, candidates, strict=True)
    ]


def _to_logged(
    raw: Sequence[_RawDecision], context_encoder: _Encoder, action_encoder: _Encoder
) -> list[SlotDecision]:
    return [
        SlotDecision(
            context=context_encoder.encode(d.context),
            action_ids=tuple(d.candidate_ids),
            action_features=np.vstack([action_encoder.encode(c) for c in d.candidates]),
            chosen_index=d.chosen_index,
            logged_probability=d.probability,
            reward=d.reward,
            raw_context=d.context,
            raw_candidates=tuple(d.candidates),
        )
        for d in raw
    ]


def _vw_policy(model: SlotModel) -> TargetPolicy:
    def policy(decision: LoggedDecision) -> np.ndarray:
        assert isinstance(decision, SlotDecision)
        probabilities = model.predict(dict(decision.raw_context), list(decision.raw_candidates)).probabilities
        return np.asarray(probabilities, dtype=np.float64)

    return policy


def _candidate_model(vw_args: str, training: Sequence[_RawDecision]) -> SlotModel:
    model = SlotModel(vw_args)
    for d in training:
        model.learn(d.context, d.candidates, d.chosen_index, d.reward, d.probability)
    return model


def _estimate(policy: str, estimate: Estimate) -> PolicyEstimate:
    return PolicyEstimate(
        policy=policy,
        estimator=estimate.estimator,
        value=estimate.value,
        ci_low=estimate.ci_low,
        ci_high=estimate.ci_high,
        n=estimate.n,
        status=estimate.status.value,
        effective_sample_size=estimate.effective_sample_size,
        matched=estimate.matched,
        matched_rewards=estimate.matched_rewards,
        interval=estimate.interval,
    )


def evaluate_policies(
    db: Database,
    slot: str,
    slot_vw_args: str,
    default_reward: float,
    policies: Sequence[str] = DEFAULT_POLICIES,
    train_fraction: float = 0.5,
    confidence: float = 0.95,
    seed: int = 0,
    now: datetime | None = None,
    reward_range: RewardRange | None = None,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
    limit: int = 200_000,
    estimators: Sequence[str] = ESTIMATORS,
) -> list[PolicyEstimate]:
    """IPS, SNIPS and DR estimates of every policy on the evaluation part of the slot's log.

    ``reward_range`` (low, high) bounds every reward (a default reward included): intervals are
    then bounded (IPS: betting, SNIPS and DR: empirical-Bernstein) and clipped to it; None
    keeps the normal approximation.
    """
    if not 0.0 < train_fraction < 1.0:
        raise EvaluationError("train_fraction must be in (0, 1)")
    if not estimators or not set(estimators) <= set(ESTIMATORS):
        raise EvaluationError(f"estimators must be a non-empty subset of {list(ESTIMATORS)}")
    policies = tuple(policies) or DEFAULT_POLICIES
    for index, name in enumerate(policies):
        if name.startswith("vw:"):
            try:
                validate_arguments(name.removeprefix("vw:").strip())
            except BanditConfigError as error:
                raise EvaluationError(str(error), index) from None
        elif name not in DEFAULT_POLICIES:
            raise EvaluationError("must be 'current', 'static:first', 'uniform' or 'vw:<arguments>'", index)
    raw = load_slot_decisions(db, slot, default_reward, now, limit)
    split = int(len(raw) * train_fraction)
    training, evaluation = raw[:split], raw[split:]
    if len(evaluation) < MIN_DECISIONS or len(training) < 1:
        raise EvaluationError(
            f"slot {slot} has {len(raw)} decisions with a final reward; "
            f"at least {int(MIN_DECISIONS / (1 - train_fraction)) + 1} are needed"
        )
    context_encoder = _Encoder().fit([d.context for d in training])
    action_encoder = _Encoder().fit([c for d in training for c in d.candidates])
    logged = _to_logged(evaluation, context_encoder, action_encoder)

    results: list[PolicyEstimate] = []
    opened: list[SlotModel] = []
    try:
        for name in policies:
            target: TargetPolicy
            if name == "uniform":
                target = uniform_policy
            elif name == "static:first":
                target = first_candidate_policy
            elif name == "current":
                with db.transaction() as session:
                    checkpoint = newest_checkpoint(session, bandit_task(slot))
                try:
                    model = load_slot_model(slot_vw_args, checkpoint)
                except ModelIntegrityError as error:
                    raise EvaluationError(str(error), policies.index(name)) from None
                opened.append(model)
                target = _vw_policy(model)
            else:
                model = _candidate_model(name.removeprefix("vw:").strip(), training)
                opened.append(model)
                target = _vw_policy(model)
            # Compute the target's probabilities once; the three estimators reuse them.
            cached = [np.asarray(target(d), dtype=np.float64) for d in logged]
            by_id = {id(d): p for d, p in zip(logged, cached, strict=True)}

            def frozen(decision: LoggedDecision, table: dict[int, np.ndarray] = by_id) -> np.ndarray:
                return table[id(decision)]

            bounded = {"confidence": confidence, "min_matched_rewards": min_matched_rewards}
            if "ips" in estimators:
                results.append(_estimate(name, ips(logged, frozen, reward_range=reward_range, **bounded)))
            if "snips" in estimators:
                results.append(_estimate(name, snips(logged, frozen, reward_range=reward_range, **bounded)))
            if "doubly_robust" in estimators:
                dr = doubly_robust(logged, frozen, reward_range=reward_range, random_state=seed, **bounded)
                results.append(_estimate(name, dr))
    finally:
        for model in opened:
            model.close()
    return results


# --------------------------------------------------------------------------- drift

# The defaults of a drift check, shared by `tacit drift` and GetDriftReport.
DRIFT_RECENT = timedelta(days=7)  # the current window: subjects (or decisions) of the last week
DRIFT_THRESHOLD = 0.2  # PSI at or above which a feature has drifted
DRIFT_REWARD_ALPHA = 0.01  # significance level of the reward-rate test


@dataclass(frozen=True)
class DriftSummary:
    """A drift report and the windows it compares.

    The current window is ``(window_start, window_end]``; the reference window
    spans ``reference_start``..``reference_end`` (the classifier's training
    snapshots, or a slot's decisions before the current window; None when empty).
    """

    task: str
    version: str
    report: DriftReport
    window_start: datetime
    window_end: datetime
    reference_start: datetime | None = None
    reference_end: datetime | None = None


def drift_report(
    db: Database,
    task: str,
    served: ServedModel,
    recent: timedelta = DRIFT_RECENT,
    threshold: float = DRIFT_THRESHOLD,
    now: datetime | None = None,
) -> DriftSummary:
    """PSI per feature (and of the scores): training window vs subjects active in ``recent``.

    ``now`` defaults to the newest stored event, so that a replayed or
    simulated history is compared at its own present.
    """
    return model_drift(
        db,
        task,
        served.version,
        served.bundle.drift_reference,
        served.bundle.model.training_window,
        lambda rows: served.predict_proba([row.as_dict() for row in rows]),
        recent,
        threshold,
        now,
    )


def model_drift(
    db: Database,
    task: str,
    version: str,
    reference: DriftMonitor,
    training_window: tuple[float, float],
    score: Callable[[list[FeatureVector]], ArrayLike],
    recent: timedelta = DRIFT_RECENT,
    threshold: float = DRIFT_THRESHOLD,
    now: datetime | None = None,
) -> DriftSummary:
    """`drift_report` for any model of the point-in-time features (classifier or regressor)."""
    histories = dict(iter_histories(db))
    latest = max((events[-1].occurred_at for events in histories.values()), default=datetime.now(UTC))
    end = as_utc(now) if now is not None else latest
    start = end - recent
    rows = [
        build_features(events, end)
        for events in histories.values()
        if any(start < e.occurred_at <= end for e in events)
    ]
    monitor = copy.copy(reference)  # the served bundle is shared
    monitor.threshold = threshold
    scores = score(rows) if rows else None
    report = monitor.report(rows, scores=scores)
    first, last = training_window
    return DriftSummary(
        task,
        version,
        report,
        start,
        end,
        reference_start=datetime.fromtimestamp(first, UTC),
        reference_end=datetime.fromtimestamp(last, UTC),
    )


@dataclass(frozen=True)
class _TimedDecision:
    created_at: datetime
    context: dict[str, Any]
    success: bool


def _load_timed_decisions(db: Database, slot: str, default_reward: float, limit: int) -> list[_TimedDecision]:
    """The newest ``limit`` decisions of ``slot`` whose reward is final, oldest first."""
    query = (
        select(Decision.created_at, Decision.context, Decision.reward)
        .where(Decision.slot == slot)
        .where(or_(Decision.reward.is_not(None), Decision.reward_deadline <= datetime.now(UTC)))
        .order_by(Decision.created_at.desc(), Decision.event_id.desc())
        .limit(limit)
    )
    with db.transaction() as session:
        rows = session.execute(query).all()
    return [
        _TimedDecision(
            as_utc(created_at),
            dict(context or {}),
            (float(reward) if reward is not None else default_reward) > 0,
        )
        for created_at, context, reward in reversed(rows)
    ]


def _comparable_context_features(
    contexts: Sequence[Mapping[str, Any]],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(features, categorical ones): keys every context carries, all finite numbers or all strings."""
    if not contexts:
        return (), ()
    common = set(contexts[0]).intersection(*contexts[1:])
    features, categorical = [], []
    for name in sorted(common):
        values = [c[name] for c in contexts]
        if all(isinstance(v, str) for v in values):
            features.append(name)
            categorical.append(name)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            features.append(name)
    return tuple(features), tuple(categorical)


def bandit_drift_report(
    db: Database,
    slot: str,
    default_reward: float,
    recent: timedelta = DRIFT_RECENT,
    threshold: float = DRIFT_THRESHOLD,
    alpha: float = DRIFT_REWARD_ALPHA,
    now: datetime | None = None,
    limit: int = 200_000,
) -> DriftSummary:
    """Reward-rate and context drift of a slot's decisions: ``recent`` window vs the ones before.

    The bandit learns online from every decision, so its "training window" is
    the slot's log before the current window. A decision succeeds when its
    final reward (``default_reward`` when none arrived in time) is positive;
    the success rates are compared with a pooled two-proportion z-test at
    ``alpha``. Context features present in every decision of both windows (all
    numbers, or all strings) are compared by PSI. ``now`` defaults to the
    newest decision with a final reward. There are no scores: prediction drift
    is not computed.
    """
    decisions = _load_timed_decisions(db, slot, default_reward, limit)
    if not decisions:
        raise EvaluationError(f"slot {slot} has no decisions with a final reward")
    end = as_utc(now) if now is not None else decisions[-1].created_at
    start = end - recent
    reference = [d for d in decisions if d.created_at <= start]
    current = [d for d in decisions if start < d.created_at <= end]
    with db.transaction() as session:
        checkpoint = newest_checkpoint(session, bandit_task(slot))
    version = checkpoint.version if checkpoint is not None else ""
    reference_reward = (sum(d.success for d in reference), len(reference))
    current_reward = (sum(d.success for d in current), len(current))
    reward = reward_rate_drift(*reference_reward, *current_reward, alpha=alpha)
    if not reference:
        report = DriftReport(
            feature_psi={}, prediction_psi=None, reward=reward, threshold=threshold,
            drifted_features=(), stale=False, status=DriftStatus.EMPTY_WINDOW,
            n_reference=0, n_current=len(current),
            notes=("no decisions before the current window: nothing to compare",),
        )  # fmt: skip
    else:
        features, categorical = _comparable_context_features([d.context for d in reference + current])
        monitor = DriftMonitor(
            threshold=threshold, reward_alpha=alpha, features=features, categorical_features=categorical
        )
        monitor.fit([d.context for d in reference], reward=reference_reward)
        report = monitor.report([d.context for d in current], reward=current_reward)
        if report.reward is None:  # an empty current window: still say why there is no z
            report = replace(report, reward=reward)
    return DriftSummary(
        bandit_task(slot),
        version,
        report,
        start,
        end,
        reference_start=reference[0].created_at if reference else None,
        reference_end=reference[-1].created_at if reference else None,
    )
