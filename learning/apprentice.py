"""Apprentice mode: serve the caller's baseline, learn from it, and say when the learner is better.

In apprentice mode a slot serves the candidate the caller marked as its baseline with
probability 1 − ε and draws from the learned policy's own distribution with probability ε:

    μ(a) = (1 − ε)·[a = baseline] + ε·π(a)

μ is the probability logged for the served candidate (an honest propensity: the learner and
every off-policy estimate divide by it), and π — the slot model's probabilities *before* it
learned from this decision — is logged beside it. ε = 0 is logging only: the baseline is
always served and logged with probability 1.

The report (`apprentice_report`) estimates, on the newest decisions in logging order, by IPS
with the betting interval of `tacit.learning.ope` (valid under adaptive logging):

* the learned policy's value — weights π_t(a_t)/μ_t(a_t) ≤ 1/ε, with π_t the model as it was
  when decision t was made (progressive validation: no decision is scored by a model that
  learned from it), so on a converged model it is the value the model would have online;
* the baseline's value — weights [a_t = baseline]/μ_t(a_t) ≈ 1;
* how often the learned policy agrees with the baseline (the baseline is its most probable
  candidate) and how often the baseline was served.

With ε = 0 no candidate but the baseline is ever served: the learned policy's IPS then
counts only what it shares with the baseline, so its estimate is biased *down* — its lower
bound stays a valid lower bound (the automatic switch stays conservative), its upper bound
is not one.

`switch_decision` is the automatic switch rule: at least `min_decisions` decisions, both
estimates usable, and the learned policy's lower bound above the baseline's upper bound by
`margin`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tacit.learning.ope import DEFAULT_MIN_MATCHED_REWARDS, Estimate, RewardRange, ips_from_weights

__all__ = [
    "ApprenticeRecord",
    "ApprenticeReport",
    "SwitchDecision",
    "apprentice_report",
    "mixture",
    "switch_decision",
]

# Statuses whose interval holds (as the offline gate judges them).
USABLE_STATUSES = frozenset({"ok"})


def mixture(target: Sequence[float], baseline_index: int, epsilon: float) -> tuple[float, ...]:
    """The served distribution μ = (1 − ε)·δ_baseline + ε·π (sums to 1 when π does)."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError("epsilon must lie in [0, 1]")
    if not 0 <= baseline_index < len(target):
        raise ValueError("baseline_index is not a candidate")
    served = [epsilon * float(p) for p in target]
    served[baseline_index] += 1.0 - epsilon
    return tuple(served)


@dataclass(frozen=True)
class ApprenticeRecord:
    """One apprentice decision as logged: π before mixing, the baseline, the served one, μ, reward."""

    target: tuple[float, ...]
    baseline_index: int
    chosen_index: int
    logged_probability: float
    reward: float

    @property
    def agrees(self) -> bool:
        """True when the baseline is (one of) the learned policy's most probable candidates."""
        return self.target[self.baseline_index] >= max(self.target)


@dataclass(frozen=True)
class ApprenticeReport:
    """How the learned policy compares with the baseline on the newest apprentice decisions."""

    decisions: int
    baseline_served: float
    """Share of the decisions that served the baseline."""
    agreement: float
    """Share of the decisions where the learned policy's top candidate was the baseline."""
    learned: Estimate
    baseline: Estimate

    @property
    def lift_lower_bound(self) -> float:
        """Learned lower bound minus baseline upper bound (NaN when either has no interval)."""
        return self.learned.ci_low - self.baseline.ci_high

    @property
    def usable(self) -> bool:
        return self.learned.status.value in USABLE_STATUSES and self.baseline.status.value in USABLE_STATUSES


def apprentice_report(
    records: Sequence[ApprenticeRecord],
    reward_range: RewardRange,
    confidence: float = 0.95,
    min_matched_rewards: int = DEFAULT_MIN_MATCHED_REWARDS,
) -> ApprenticeReport:
    """IPS (betting interval) of the learned policy and of the baseline; records in logging order."""
    n = len(records)
    chosen_target = np.array([r.target[r.chosen_index] for r in records], dtype=np.float64)
    served_baseline = np.array([r.chosen_index == r.baseline_index for r in records], dtype=np.float64)
    logged = np.array([r.logged_probability for r in records], dtype=np.float64)
    rewards = np.array([r.reward for r in records], dtype=np.float64)
    # A logged probability outside (0, 1] makes the weight invalid: ope reports that status.
    safe = np.where(logged > 0.0, logged, math.nan) if n else logged

    def estimate(weights: np.ndarray) -> Estimate:
        return ips_from_weights(
            weights, rewards, reward_range=reward_range, confidence=confidence,
            min_matched_rewards=min_matched_rewards,
        )  # fmt: skip

    learned, baseline = estimate(chosen_target / safe), estimate(served_baseline / safe)
    return ApprenticeReport(
        decisions=n,
        baseline_served=float(served_baseline.mean()) if n else math.nan,
        agreement=float(np.mean([r.agrees for r in records])) if n else math.nan,
        learned=learned,
        baseline=baseline,
    )


@dataclass(frozen=True)
class SwitchDecision:
    """Whether the automatic switch rule holds, and why (a sentence with numbers, never request values)."""

    switch: bool
    reason: str


def switch_decision(report: ApprenticeReport, margin: float | None, min_decisions: int) -> SwitchDecision:
    """The automatic rule: enough decisions, usable estimates, learned.ci_low ≥ baseline.ci_high + margin."""
    if margin is None:
        return SwitchDecision(False, "no automatic switch is configured (switch_margin unset)")
    if report.decisions < min_decisions:
        return SwitchDecision(False, f"{report.decisions} apprentice decisions, {min_decisions} needed")
    if not report.usable:
        return SwitchDecision(
            False,
            f"estimates not usable (learned {report.learned.status.value}, "
            f"baseline {report.baseline.status.value})",
        )
    numbers = (
        f"learned lower bound {report.learned.ci_low:.4f}, baseline upper bound "
        f"{report.baseline.ci_high:.4f}, margin {margin:.4f}, {report.decisions} decisions"
    )
    if report.learned.ci_low >= report.baseline.ci_high + margin:
        return SwitchDecision(True, f"OPE lower bound beats the baseline by the margin: {numbers}")
    return SwitchDecision(False, f"OPE lower bound does not beat the baseline by the margin: {numbers}")
