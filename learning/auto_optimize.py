"""Auto-optimize: candidate VW configurations judged offline on a slot's own logged decisions.

Each configuration is replayed over the log in logging order by *progressive validation*: a fresh
workspace learns every decision exactly as the learner would (cost = -reward, the logged
probability), and before it learns a decision its probability vector for that decision is the
target policy's. Decisions after the warm-up part (``warmup_fraction`` of the log, learned but
not scored) are scored by IPS with the betting interval of ``tacit.learning.ope``: the target
policy of each decision depends only on earlier decisions, which is the setting in which that
interval holds (Karampatziakis, Mineiro & Ramdas 2021, off-policy confidence sequences).

The current configuration (the slot's arguments, or those of the policy an experiment shipped)
is replayed the same way, so every configuration is compared on the same footing: a fresh model
learning the same stream. A candidate is *proposed* when its lower bound beats the current
configuration's lower bound by at least ``margin``:

    best.ci_low >= current.ci_low + margin

``best`` is the candidate with the highest estimate among those with status "ok" whose lower bound
clears that floor; when none does, the one with the highest estimate (reported, not proposed).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Protocol

import numpy as np

from tacit.learning.bandit import SlotModel
from tacit.learning.evaluation import EvaluationError, load_slot_decisions
from tacit.learning.ope import (
    DEFAULT_MIN_MATCHED_REWARDS,
    Estimate,
    EstimateStatus,
    RewardRange,
    ips_from_weights,
)
from tacit.store.db import Database

__all__ = [
    "DEFAULT_GRID",
    "MIN_SCORED_DECISIONS",
    "ConfigEstimate",
    "OptimizeResult",
    "evaluate_configs",
    "optimize_slot",
    "progressive_estimate",
]

# A small grid around the default: interactions on/off, exploration algorithm, learning rate.
DEFAULT_GRID = (
    "--cb_explore_adf --squarecb -q UA",
    "--cb_explore_adf --squarecb -q UA -l 2",
    "--cb_explore_adf --squarecb -q UA -l 0.1",
    "--cb_explore_adf --squarecb -q UA --gamma_scale 100",
    "--cb_explore_adf --epsilon 0.05 -q UA",
    "--cb_explore_adf --squarecb",
)
MIN_SCORED_DECISIONS = 20
ESTIMATOR = "ips"


class _Logged(Protocol):
    context: Mapping[str, Any]
    candidates: Sequence[Mapping[str, Any]]
    chosen_index: int
    probability: float
    reward: float


@dataclass(frozen=True)
class ConfigEstimate:
    """One configuration's progressive-validation estimate (IPS, betting interval)."""

    vw_args: str
    estimate: Estimate
    current: bool = False

    @property
    def judged(self) -> bool:
        """Only an "ok" estimate may be proposed or serve as the current one's bound."""
        return self.estimate.status is EstimateStatus.OK and math.isfinite(self.estimate.ci_low)


@dataclass(frozen=True)
class OptimizeResult:
    """Every configuration's estimate and the verdict against the current one."""

    current: ConfigEstimate
    candidates: tuple[ConfigEstimate, ...]
    best: ConfigEstimate | None
    proposed: bool
    margin: float
    decisions: int
    scored: int
    reason: str


def progressive_estimate(
    decisions: Sequence[_Logged],
    vw_args: str,
    *,
    warmup_fraction: float = 0.5,
    reward_range: RewardRange | None = (0.0, 1.0),
    confidence: float = 0.95,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
    random_seed: int = 0,
) -> Estimate:
    """IPS of ``vw_args`` learning the log in order, each decision scored before it is learned."""
    start = int(len(decisions) * warmup_fraction)
    weights = np.empty(len(decisions) - start)
    rewards = np.empty(len(decisions) - start)
    model = SlotModel(vw_args, random_seed=random_seed)
    try:
        for index, decision in enumerate(decisions):
            context, candidates = dict(decision.context), list(decision.candidates)
            if index >= start:
                target = model.predict(context, candidates).probabilities[decision.chosen_index]
                weights[index - start] = target / decision.probability
                rewards[index - start] = decision.reward
            model.learn(context, candidates, decision.chosen_index, decision.reward, decision.probability)
    finally:
        model.close()
    return ips_from_weights(
        weights, rewards, reward_range=reward_range, confidence=confidence,
        min_matched_rewards=min_matched_rewards,
    )  # fmt: skip


def evaluate_configs(
    decisions: Sequence[_Logged],
    current_args: str,
    candidates: Sequence[str] = DEFAULT_GRID,
    *,
    margin: float = 0.01,
    warmup_fraction: float = 0.5,
    reward_range: RewardRange | None = (0.0, 1.0),
    confidence: float = 0.95,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
    random_seed: int = 0,
) -> OptimizeResult:
    """The current configuration and every candidate by progressive validation; the verdict."""
    if not 0.0 <= warmup_fraction < 1.0:
        raise EvaluationError("warmup_fraction must be in [0, 1)")
    scored = len(decisions) - int(len(decisions) * warmup_fraction)
    if scored < MIN_SCORED_DECISIONS:
        needed = math.ceil(MIN_SCORED_DECISIONS / (1.0 - warmup_fraction)) + 1
        raise EvaluationError(
            f"the slot has {len(decisions)} decisions with a final reward; at least {needed} are needed"
        )
    estimate = partial(
        progressive_estimate, decisions, warmup_fraction=warmup_fraction, reward_range=reward_range,
        confidence=confidence, min_matched_rewards=min_matched_rewards, random_seed=random_seed,
    )  # fmt: skip
    current = ConfigEstimate(current_args, estimate(current_args), True)
    others = tuple(
        ConfigEstimate(args, estimate(args)) for args in dict.fromkeys(candidates) if args != current_args
    )
    judged = [c for c in others if c.judged]
    floor = current.estimate.ci_low + margin
    clearing = [c for c in judged if c.estimate.ci_low >= floor]
    best = max(clearing or judged, key=lambda c: c.estimate.value, default=None)
    proposed = current.judged and bool(clearing)
    if not current.judged:
        reason = f"the current configuration has no usable estimate ({current.estimate.status.value})"
    elif best is None:
        reason = "no candidate has a usable estimate"
    else:
        verb = "beats" if proposed else "does not beat"
        reason = (
            f"best candidate's {ESTIMATOR} lower bound {best.estimate.ci_low:.4f} {verb} the current "
            f"configuration's lower bound {current.estimate.ci_low:.4f} plus margin {margin:g}"
        )
    return OptimizeResult(current, others, best, proposed, margin, len(decisions), scored, reason)


def optimize_slot(
    db: Database,
    slot: str,
    current_args: str,
    default_reward: float,
    candidates: Sequence[str] = DEFAULT_GRID,
    *,
    limit: int = 20_000,
    now: datetime | None = None,
    **settings: Any,
) -> OptimizeResult:
    """`evaluate_configs` on the slot's newest ``limit`` decisions with a final reward, oldest first."""
    decisions = load_slot_decisions(db, slot, default_reward, now, limit)
    return evaluate_configs(decisions, current_args, candidates, **settings)
