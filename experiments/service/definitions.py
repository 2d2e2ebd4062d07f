"""What an experiment is: its definition (arms, metrics, stages, traffic range), state and exposure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tacit.experiments.assignment import WHOLE_SLOT
from tacit.experiments.rules import Arm, Covariate, ExperimentSpec, Guardrail, Stage
from tacit.experiments.stats import ToleranceKind

EXPERIMENT_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


POLICIES = ("bandit", "static:first", "uniform")
# Challenger policies: "bandit:<VW arguments>" (a second VW workspace for the slot, learning
# online) and "model:<version>" (a pinned checkpoint of the slot, never learning). The server
# checks their content (the experiments layer knows nothing of VW: `PolicyCheck`).
BANDIT_CHALLENGER = "bandit:"
PINNED_MODEL = "model:"
CHALLENGER_PREFIXES = (BANDIT_CHALLENGER, PINNED_MODEL)
# Decisions store the policy in 128 characters.
MAX_POLICY_CHARS = 128
# A challenger's checkpoints are registered as `challenger:<experiment id>:<arm>` (96 characters
# at most), so its arm name is short and file-name safe.
CHALLENGER_ARM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,20}$")


def is_challenger(policy: str) -> bool:
    return policy.startswith(CHALLENGER_PREFIXES)


SYSTEM_ACTOR = "system"


class ExperimentState(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    ROLLED_BACK = "rolled_back"
    SHIPPED = "shipped"
    STOPPED = "stopped"


# States in which the experiment routes its slot's traffic (so no other may start on an
# overlapping traffic range of that slot).
HOLDS_SLOT = frozenset(
    {ExperimentState.RUNNING, ExperimentState.PAUSED, ExperimentState.ROLLED_BACK, ExperimentState.SHIPPED}
)


ENDED = frozenset({ExperimentState.ROLLED_BACK, ExperimentState.SHIPPED, ExperimentState.STOPPED})


@dataclass(frozen=True)
class ArmAssignment:
    """The experiment arm that serves a subject on a slot, and that arm's policy.

    Policies: "bandit" (the slot's VW model), "static:first" (the first eligible
    candidate), "uniform" (uniform random over eligible candidates), "bandit:<VW arguments>"
    (this arm's own VW workspace) and "model:<version>" (a pinned checkpoint of the slot).
    """

    experiment_id: str
    arm: str
    policy: str


@dataclass(frozen=True)
class ArmConfig:
    name: str
    policy: str
    weight: float
    # bandit:<config> only: learn from every decision of the slot (importance-weighted by
    # its logged probability) instead of only the decisions this arm made.
    learn_from_all: bool = False


@dataclass(frozen=True)
class Challenger:
    """An arm with a challenger policy, in an experiment that routes its slot's traffic."""

    experiment_id: str
    slot: str
    arm: str
    policy: str
    learn_from_all: bool = False

    @property
    def vw_args(self) -> str:
        """The VW arguments of a bandit:<config> challenger ("" for a pinned model)."""
        return (
            self.policy.removeprefix(BANDIT_CHALLENGER) if self.policy.startswith(BANDIT_CHALLENGER) else ""
        )

    @property
    def pinned_version(self) -> str:
        """The checkpoint version of a model:<version> arm ("" for a bandit challenger)."""
        return self.policy.removeprefix(PINNED_MODEL) if self.policy.startswith(PINNED_MODEL) else ""


@dataclass(frozen=True)
class ExperimentDefinition:
    """What an experimenter creates: a slot, two arms with policies, metrics and stages.

    `traffic_start`/`traffic_end`: the experiment's range [start, end) in percent of the
    slot's subjects (its layer); the default is the whole slot.
    """

    experiment_id: str
    slot: str
    arms: tuple[ArmConfig, ...]
    primary_metric: str
    stages: tuple[Stage, ...]
    control_arm: str = ""  # empty: the first arm
    secondary_metrics: tuple[str, ...] = ()
    guardrails: tuple[Guardrail, ...] = ()
    auto_advance: bool = False
    traffic_start: float = WHOLE_SLOT[0]
    traffic_end: float = WHOLE_SLOT[1]
    covariates: tuple[Covariate, ...] = ()  # CUPED: per metric, a pre-exposure lookback

    @property
    def traffic(self) -> tuple[float, float]:
        return self.traffic_start, self.traffic_end

    @property
    def control(self) -> str:
        return self.control_arm or (self.arms[0].name if self.arms else "")

    @property
    def treatment(self) -> str:
        """The arm that takes all traffic when the experiment ships (the first non-control arm)."""
        return next((a.name for a in self.arms if a.name != self.control), "")

    def challengers(self) -> tuple[Challenger, ...]:
        return tuple(
            Challenger(self.experiment_id, self.slot, a.name, a.policy, a.learn_from_all)
            for a in self.arms
            if is_challenger(a.policy)
        )

    def spec(self, sequential_tuning_n: float = 5000) -> ExperimentSpec:
        return ExperimentSpec(
            arms=tuple(Arm(arm.name, arm.weight) for arm in self.arms),
            stages=self.stages,
            primary_metric=self.primary_metric,
            control_arm=self.control,
            guardrails=self.guardrails,
            secondary_metrics=self.secondary_metrics,
            auto_advance=self.auto_advance,
            sequential_tuning_n=sequential_tuning_n,
            covariates=self.covariates,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "arms": [
                {"name": a.name, "policy": a.policy, "weight": a.weight}
                | ({"learn_from_all": True} if a.learn_from_all else {})
                for a in self.arms
            ],
            "control_arm": self.control,
            "primary_metric": self.primary_metric,
            "secondary_metrics": list(self.secondary_metrics),
            "guardrails": [
                {"metric": g.metric, "tolerance": g.tolerance, "tolerance_kind": g.tolerance_kind.value}
                for g in self.guardrails
            ],
            "stages": [
                {
                    "percent": s.percent,
                    "min_sample": s.min_sample,
                    "min_duration_seconds": s.min_duration.total_seconds(),
                }
                for s in self.stages
            ],
            "auto_advance": self.auto_advance,
            "traffic_start": self.traffic_start,
            "traffic_end": self.traffic_end,
            "covariates": [
                {"metric": c.metric, "lookback_seconds": c.lookback.total_seconds()} for c in self.covariates
            ],
        }

    @classmethod
    def from_json(cls, experiment_id: str, slot: str, data: Mapping[str, Any]) -> ExperimentDefinition:
        return cls(
            experiment_id=experiment_id,
            slot=slot,
            arms=tuple(
                ArmConfig(a["name"], a["policy"], float(a["weight"]), bool(a.get("learn_from_all", False)))
                for a in data["arms"]
            ),
            control_arm=data["control_arm"],
            primary_metric=data["primary_metric"],
            secondary_metrics=tuple(data["secondary_metrics"]),
            guardrails=tuple(
                # Specs stored before the kind existed have none: their tolerances are relative.
                Guardrail(
                    g["metric"],
                    float(g["tolerance"]),
                    ToleranceKind(g.get("tolerance_kind", ToleranceKind.RELATIVE.value)),
                )
                for g in data["guardrails"]
            ),
            stages=tuple(
                Stage(
                    float(s["percent"]),
                    int(s["min_sample"]),
                    timedelta(seconds=float(s["min_duration_seconds"])),
                )
                for s in data["stages"]
            ),
            auto_advance=bool(data["auto_advance"]),
            # Specs stored before traffic ranges existed have none: the whole slot.
            traffic_start=float(data.get("traffic_start", WHOLE_SLOT[0])),
            traffic_end=float(data.get("traffic_end", WHOLE_SLOT[1])),
            # Specs stored before CUPED existed have no covariates.
            covariates=tuple(
                Covariate(c["metric"], timedelta(seconds=float(c["lookback_seconds"])))
                for c in data.get("covariates", ())
            ),
        )


@dataclass(frozen=True)
class Experiment:
    """A stored experiment: its definition and where it stands."""

    definition: ExperimentDefinition
    state: ExperimentState
    stage_index: int
    created_at: datetime
    updated_at: datetime
    created_by: str
    stage_started_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    salt: str = field(default="", repr=False)

    @property
    def experiment_id(self) -> str:
        return self.definition.experiment_id

    @property
    def exposure_percent(self) -> float:
        if self.state is ExperimentState.SHIPPED:
            return 100.0
        if self.state is not ExperimentState.RUNNING:
            return 0.0
        return self.definition.stages[self.stage_index].percent
