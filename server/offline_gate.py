"""The offline gate on experiment starts: off-policy estimates of every arm on the slot's log.

`experiments` and `learning` must not import each other, so the gate is composed here, at
the edge, from `learning.evaluation` (the estimates) and the experiment's definition (arms,
control, guardrails). When a draft is started, every arm whose policy can be evaluated
offline is estimated by IPS with a 95% betting interval clipped to the slot's reward range
(`tacit.learning.ope`) on the newer half of the slot's newest `max_decisions` decisions
with a final reward (the older half trains `bandit:<args>` challengers, as in
`EvaluatePolicies`). An arm is *refused* when its interval's lower bound is below the control
arm's lower bound by more than the tolerance:

    arm.ci_low < control.ci_low - tolerance

The tolerance is the experiment's tightest guardrail read on the reward scale: a relative
guardrail is that share of control's estimated value, an absolute one is reward units; an
experiment without guardrails has tolerance 0. A refused start needs `force`; the forced
start (and every gate outcome) is written into the start's history entry.

Which arms can be evaluated offline (`offline_policy`):

* `uniform` and `static:first` — exactly: the same probabilities Rank would give.
* `bandit` — the slot's newest checkpoint. It has learned from the log it is evaluated on,
  so its estimate is optimistic (see `learning.evaluation`).
* `bandit:<vw args>` (challenger arms) — approximately: a fresh model of those arguments
  replayed over the older half of the log, as `EvaluatePolicies` does for `vw:<args>`.
* anything else (e.g. `model:<version>`) cannot be evaluated here: the gate does not judge
  that arm, and the start's history entry says so. When the control arm cannot be
  evaluated, or the slot's log is too short, the gate judges nothing and the start goes
  ahead, recorded the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from tacit.experiments.service import Experiment
from tacit.experiments.stats import ToleranceKind
from tacit.learning.evaluation import EvaluationError, PolicyEstimate, evaluate_policies
from tacit.server.config import SlotSettings
from tacit.store.db import Database

logger = logging.getLogger("tacit.server")

REFUSED_REASON = "OFFLINE_EVALUATION_BELOW_CONTROL"
GATE_ESTIMATOR = "ips"
_JUDGED = frozenset({"ok", "insufficient"})  # statuses whose interval holds


def offline_policy(arm_policy: str) -> str | None:
    """The `evaluate_policies` name for an arm policy, or None when it cannot be evaluated offline."""
    if arm_policy == "bandit":
        return "current"
    if arm_policy in ("uniform", "static:first"):
        return arm_policy
    if arm_policy.startswith("bandit:") and arm_policy.removeprefix("bandit:").strip():
        return "vw:" + arm_policy.removeprefix("bandit:").strip()
    return None


@dataclass(frozen=True)
class ArmCheck:
    """One arm's offline estimate (None when its policy cannot be evaluated offline)."""

    arm: str
    policy: str
    estimate: PolicyEstimate | None
    refused: bool = False

    def describe(self) -> str:
        if self.estimate is None:
            return f"{self.arm} ({self.policy}) cannot be evaluated offline"
        e = self.estimate
        interval = f"[{e.ci_low:.4g}, {e.ci_high:.4g}]" if e.status in _JUDGED else "no interval"
        return f"{self.arm} ({self.policy}) {e.estimator} {e.value:.4g} {interval} {e.status}, n={e.n}"


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer for one start: `passed` unless an arm is refused."""

    passed: bool
    judged: bool
    """False when the gate could not judge at all (short log, control not evaluable)."""
    summary: str
    checks: tuple[ArmCheck, ...] = ()
    tolerance: float = math.nan

    @property
    def refused_arms(self) -> tuple[str, ...]:
        return tuple(check.arm for check in self.checks if check.refused)


class OfflineGate:
    """Judges a draft experiment's arms on the slot's logged decisions before it starts."""

    def __init__(
        self,
        db: Database,
        slots: Mapping[str, SlotSettings],
        max_decisions: int = 20_000,
        confidence: float = 0.95,
    ) -> None:
        self.db = db
        self.slots = slots
        self.max_decisions = max_decisions
        self.confidence = confidence

    def check(self, experiment: Experiment) -> GateVerdict:
        definition = experiment.definition
        slot = self.slots.get(definition.slot)
        if slot is None:
            return GateVerdict(True, False, "offline gate: not judged (the slot is not configured)")
        names = {arm.name: offline_policy(arm.policy) for arm in definition.arms}
        control = definition.control
        if names.get(control) is None:
            return GateVerdict(
                True, False, f"offline gate: not judged (control arm {control} cannot be evaluated offline)"
            )
        wanted = sorted({name for name in names.values() if name is not None})
        try:
            estimates = evaluate_policies(
                self.db,
                definition.slot,
                slot.vw_args,
                slot.default_reward,
                wanted,
                confidence=self.confidence,
                reward_range=slot.reward_range,
                limit=self.max_decisions,
                estimators=(GATE_ESTIMATOR,),
            )
        except EvaluationError as error:
            return GateVerdict(True, False, f"offline gate: not judged ({error})")
        by_policy = {e.policy: e for e in estimates}
        baseline = by_policy[names[control] or ""]
        if baseline.status not in _JUDGED:
            return GateVerdict(
                True, False, f"offline gate: not judged (control arm {control}: {baseline.status})"
            )
        tolerance = self._tolerance(experiment, baseline)
        floor = baseline.ci_low - tolerance
        checks = []
        for arm in definition.arms:
            name = names[arm.name]
            estimate = by_policy[name] if name is not None else None
            refused = (
                arm.name != control
                and estimate is not None
                and estimate.status in _JUDGED
                and estimate.ci_low < floor
            )
            checks.append(ArmCheck(arm.name, arm.policy, estimate, refused))
        refused_arms = [c for c in checks if c.refused]
        detail = "; ".join(c.describe() for c in checks)
        if refused_arms:
            summary = (
                f"offline gate refused: {', '.join(c.arm for c in refused_arms)} has an off-policy lower "
                f"bound below control {control}'s lower bound {baseline.ci_low:.4g} minus tolerance "
                f"{tolerance:.4g} ({detail})"
            )
        else:
            summary = f"offline gate passed with tolerance {tolerance:.4g} ({detail})"
        return GateVerdict(not refused_arms, True, summary, tuple(checks), tolerance)

    @staticmethod
    def _tolerance(experiment: Experiment, control: PolicyEstimate) -> float:
        """The tightest guardrail on the reward scale; 0 without guardrails."""
        tolerances = [
            g.tolerance * abs(control.value) if g.tolerance_kind is ToleranceKind.RELATIVE else g.tolerance
            for g in experiment.definition.guardrails
        ]
        return min(tolerances, default=0.0)
