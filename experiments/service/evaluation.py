"""Reports: the rules applied to an experiment's stored evidence, computed on demand (never cached)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from tacit.experiments import repository
from tacit.experiments.metric_catalog import MetricCatalog
from tacit.experiments.metric_specs import DECISION_METRICS, MetricSpec
from tacit.experiments.metrics import MetricDefinition
from tacit.experiments.report import Report, build_report
from tacit.experiments.rules import Action, Evaluation, ExperimentSpec, evaluate
from tacit.experiments.service import records
from tacit.experiments.service.definitions import ExperimentDefinition
from tacit.experiments.sql_stats import DECISION_COMPUTERS, report_stats, tune_session
from tacit.experiments.stats import CovariateStats, MeanStats
from tacit.store.schema import ExperimentRecord

PINNED = "metric_versions"
"""Key of a started experiment's stored spec: metric name -> the definition it started with."""


class Evaluator:
    """The rules over an experiment's stored evidence (decisions, rewards, events), and its report."""

    def __init__(
        self,
        *,
        default_rewards: Mapping[str, float],
        conversion_window: timedelta,
        sequential_tuning_n: float,
        registry: Mapping[str, MetricDefinition],
        catalog: MetricCatalog,
        work_mem_mb: int = 0,
        parallel_workers: int = -1,
        statement_timeout_seconds: float = 0.0,
    ) -> None:
        self.default_rewards = default_rewards
        self.conversion_window = conversion_window
        self.sequential_tuning_n = sequential_tuning_n
        self.registry = registry  # the decision-log metrics (click_through, revenue_per_click)
        self.catalog = catalog
        self.work_mem_mb = work_mem_mb  # PostgreSQL memory per sort/hash of the report queries
        self.parallel_workers = parallel_workers  # PostgreSQL workers per scan (-1: the server's)
        self.statement_timeout_seconds = statement_timeout_seconds  # 0: storage's statement timeout

    def resolve(self, session: Session, row: ExperimentRecord) -> dict[str, MetricSpec]:
        """The event metrics' definitions: the versions pinned at start, else the newest."""
        pinned = row.spec.get(PINNED) or {}
        names = self.spec(row).metric_names
        latest = self.catalog.latest(session) if any(n not in pinned for n in names) else {}
        out = {}
        for name in names:
            if name in pinned:
                out[name] = MetricSpec.from_json(pinned[name])
            elif name in latest and name not in DECISION_METRICS:
                out[name] = latest[name]
        return out

    def pin(self, session: Session, row: ExperimentRecord) -> None:
        """Stores in the experiment's spec the metric versions it starts with."""
        pinned = {name: spec.to_json() for name, spec in self.resolve(session, row).items()}
        row.spec = {**row.spec, PINNED: pinned}

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
        definitions = self.resolve(session, row)
        tune_session(session, self.work_mem_mb, self.parallel_workers, self.statement_timeout_seconds)
        # All event metrics from one statement (one scan of exposures ⋈ events).
        found = report_stats(
            session, inputs, [(metric, covariates.get(name)) for name, metric in definitions.items()]
        )
        stats: dict[str, dict[str, MeanStats | CovariateStats]] = dict(zip(definitions, found, strict=True))
        for name in spec.metric_names:
            if name not in definitions:  # a decision-log metric (no covariate: validated at create)
                stats[name] = dict(DECISION_COMPUTERS[name](session, inputs))
        registry = {**self.registry, **{name: m.definition() for name, m in definitions.items()}}
        counts = repository.arm_counts(session, inputs)
        started = records.as_utc(row.stage_started_at) or now
        evaluation = evaluate(
            spec,
            stage_index=row.stage_index,
            arm_counts=counts,
            metric_stats=stats,
            elapsed=(ended or now) - started,
            registry=registry,
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
