"""Reports: the rules applied to an experiment's stored evidence, computed on demand (never cached)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from tacit.experiments import repository
from tacit.experiments.metrics import MetricDefinition
from tacit.experiments.report import Report, build_report
from tacit.experiments.rules import Action, Evaluation, ExperimentSpec, evaluate
from tacit.experiments.service import records
from tacit.experiments.service.definitions import ExperimentDefinition
from tacit.store.schema import ExperimentRecord


class Evaluator:
    """The rules over an experiment's stored evidence (decisions, rewards, events), and its report."""

    def __init__(
        self,
        *,
        default_rewards: Mapping[str, float],
        conversion_window: timedelta,
        sequential_tuning_n: float,
        registry: Mapping[str, MetricDefinition],
    ) -> None:
        self.default_rewards = default_rewards
        self.conversion_window = conversion_window
        self.sequential_tuning_n = sequential_tuning_n
        self.registry = registry

    def spec(self, row: ExperimentRecord) -> ExperimentSpec:
        return ExperimentDefinition.from_json(row.experiment_id, row.slot, row.spec).spec(
            self.sequential_tuning_n
        )

    def evaluate(
        self, session: Session, row: ExperimentRecord, now: datetime, applies: frozenset[Action] = frozenset()
    ) -> tuple[Evaluation, Report]:
        """Rules over the stored evidence; actions in `applies` are worded as carried out."""
        spec = self.spec(row)
        ended = records.as_utc(row.ended_at)
        inputs = repository.MetricInputs(
            experiment_id=row.experiment_id,
            arms=tuple(arm.name for arm in spec.arms),
            until=ended or now,
            now=now,
            default_reward=self.default_rewards.get(row.slot, 0.0),
            conversion_window=self.conversion_window,
        )
        covariates = {c.metric: c.lookback for c in spec.covariates}
        stats = repository.metric_stats(session, inputs, spec.metric_names, covariates)
        counts = repository.arm_counts(session, inputs)
        started = records.as_utc(row.stage_started_at) or now
        evaluation = evaluate(
            spec,
            stage_index=row.stage_index,
            arm_counts=counts,
            metric_stats=stats,
            elapsed=(ended or now) - started,
            registry=self.registry,
        )
        report = build_report(
            experiment_id=row.experiment_id,
            spec=spec,
            evaluation=evaluation,
            arm_counts=counts,
            evaluated_at=now,
            state=row.state,
            auto_applied=evaluation.action in applies,
        )
        return evaluation, report

    def report(self, session: Session, row: ExperimentRecord, now: datetime) -> Report:
        return self.evaluate(session, row, now)[1]
