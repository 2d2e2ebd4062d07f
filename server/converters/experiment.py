"""ExperimentService protobuf <-> domain conversions, with edge validation naming fields.

Both directions live here: the servicer converts requests in and resources out, the CLI
converts stored history back to domain objects to draw the chart.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, timedelta

from tacit.experiments.assignment import WHOLE_SLOT
from tacit.experiments.report import ChangeEntry, MetricReport, Report
from tacit.experiments.rules import MAX_COVARIATE_LOOKBACK, Covariate, Guardrail, Stage
from tacit.experiments.service import ArmConfig, Experiment, ExperimentDefinition, ExperimentState
from tacit.experiments.stats import ToleranceKind
from tacit.server.converters import to_timestamp
from tacit.server.errors import InvalidArgument
from tacit.v1 import experiment_pb2

NAME = re.compile(r"^experiments/([a-z][a-z0-9-]{0,62})$")
MAX_ITEMS = 32
MAX_LOOKBACK_SECONDS = int(MAX_COVARIATE_LOOKBACK.total_seconds())

STATE_TO_PROTO = {
    ExperimentState.DRAFT: experiment_pb2.EXPERIMENT_STATE_DRAFT,
    ExperimentState.RUNNING: experiment_pb2.EXPERIMENT_STATE_RUNNING,
    ExperimentState.PAUSED: experiment_pb2.EXPERIMENT_STATE_PAUSED,
    ExperimentState.ROLLED_BACK: experiment_pb2.EXPERIMENT_STATE_ROLLED_BACK,
    ExperimentState.SHIPPED: experiment_pb2.EXPERIMENT_STATE_SHIPPED,
    ExperimentState.STOPPED: experiment_pb2.EXPERIMENT_STATE_STOPPED,
}
STATE_FROM_PROTO = {value: key for key, value in STATE_TO_PROTO.items()}

TOLERANCE_KIND_TO_PROTO = {
    ToleranceKind.RELATIVE: experiment_pb2.TOLERANCE_KIND_RELATIVE,
    ToleranceKind.ABSOLUTE: experiment_pb2.TOLERANCE_KIND_ABSOLUTE,
}
TOLERANCE_KIND_FROM_PROTO: dict[int, ToleranceKind] = {
    # Unspecified is relative, the meaning `tolerance` had before the kind existed.
    experiment_pb2.TOLERANCE_KIND_UNSPECIFIED: ToleranceKind.RELATIVE,
    **{value: key for key, value in TOLERANCE_KIND_TO_PROTO.items()},
}


def experiment_id_from_name(field: str, name: str) -> str:
    """`experiments/{id}` -> id; a bare id is accepted too (CLI convenience)."""
    if not name:
        raise InvalidArgument(field, "is required")
    match = NAME.match(name) or NAME.match(f"experiments/{name}")
    if match is None:
        raise InvalidArgument(field, f"must match {NAME.pattern}")
    return match.group(1)


def _finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, "must be a finite number")
    return value


def _tolerance_kind(field: str, value: int) -> ToleranceKind:
    kind = TOLERANCE_KIND_FROM_PROTO.get(value)
    if kind is None:
        raise InvalidArgument(field, "must be TOLERANCE_KIND_RELATIVE or TOLERANCE_KIND_ABSOLUTE")
    return kind


def _names(field: str, values: list[str]) -> tuple[str, ...]:
    if len(values) > MAX_ITEMS:
        raise InvalidArgument(field, f"has more than {MAX_ITEMS} entries")
    return tuple(values)


def definition_from_proto(experiment_id: str, message: experiment_pb2.Experiment) -> ExperimentDefinition:
    """Shape checks only (counts, finite numbers, non-negative integers); the domain
    validates meaning (weights, metrics, stage order) and names the field itself."""
    for field, items in (
        ("arms", message.arms),
        ("stages", message.stages),
        ("guardrails", message.guardrails),
        ("covariates", message.covariates),
    ):
        if len(items) > MAX_ITEMS:
            raise InvalidArgument(f"experiment.{field}", f"has more than {MAX_ITEMS} entries")
    arms = tuple(
        ArmConfig(
            arm.name,
            arm.policy,
            _finite(f"experiment.arms[{i}].weight", arm.weight),
            arm.learn_from_all_decisions,
        )
        for i, arm in enumerate(message.arms)
    )
    stages = []
    for i, stage in enumerate(message.stages):
        where = f"experiment.stages[{i}]"
        if stage.min_sample < 0:
            raise InvalidArgument(f"{where}.min_sample", "must not be negative")
        if stage.min_duration_seconds < 0:
            raise InvalidArgument(f"{where}.min_duration_seconds", "must not be negative")
        stages.append(
            Stage(
                _finite(f"{where}.percent", stage.percent),
                int(stage.min_sample),
                timedelta(seconds=stage.min_duration_seconds),
            )
        )
    guardrails = tuple(
        Guardrail(
            guardrail.metric,
            _finite(f"experiment.guardrails[{i}].tolerance", guardrail.tolerance),
            _tolerance_kind(f"experiment.guardrails[{i}].tolerance_kind", guardrail.tolerance_kind),
        )
        for i, guardrail in enumerate(message.guardrails)
    )
    covariates = []
    for i, covariate in enumerate(message.covariates):
        # The domain checks the metric; the window is range-checked here so that no int64
        # overflows a timedelta.
        if not 0 < covariate.lookback_seconds <= MAX_LOOKBACK_SECONDS:
            raise InvalidArgument(f"experiment.covariates[{i}].lookback_seconds", "must be in (0, 365 days]")
        covariates.append(Covariate(covariate.metric, timedelta(seconds=covariate.lookback_seconds)))
    traffic_start = _finite("experiment.traffic_start", message.traffic_start)
    traffic_end = _finite("experiment.traffic_end", message.traffic_end)
    if traffic_start == 0 and traffic_end == 0:
        traffic_start, traffic_end = WHOLE_SLOT  # unset: the whole slot
    return ExperimentDefinition(
        experiment_id=experiment_id,
        slot=message.slot,
        arms=arms,
        primary_metric=message.primary_metric,
        stages=tuple(stages),
        control_arm=message.control_arm,
        secondary_metrics=_names("experiment.secondary_metrics", list(message.secondary_metrics)),
        guardrails=guardrails,
        auto_advance=message.auto_advance,
        traffic_start=traffic_start,
        traffic_end=traffic_end,
        covariates=tuple(covariates),
    )


def experiment_to_proto(experiment: Experiment) -> experiment_pb2.Experiment:
    definition = experiment.definition
    message = experiment_pb2.Experiment(
        name=f"experiments/{definition.experiment_id}",
        slot=definition.slot,
        arms=[
            experiment_pb2.Arm(
                name=a.name, policy=a.policy, weight=a.weight, learn_from_all_decisions=a.learn_from_all
            )
            for a in definition.arms
        ],
        primary_metric=definition.primary_metric,
        secondary_metrics=list(definition.secondary_metrics),
        guardrails=[
            experiment_pb2.Guardrail(
                metric=g.metric,
                tolerance=g.tolerance,
                tolerance_kind=TOLERANCE_KIND_TO_PROTO[g.tolerance_kind],
            )
            for g in definition.guardrails
        ],
        stages=[
            experiment_pb2.Stage(
                percent=s.percent,
                min_sample=s.min_sample,
                min_duration_seconds=int(s.min_duration.total_seconds()),
            )
            for s in definition.stages
        ],
        state=STATE_TO_PROTO[experiment.state],
        stage_index=experiment.stage_index,
        auto_advance=definition.auto_advance,
        create_time=to_timestamp(experiment.created_at),
        control_arm=definition.control,
        update_time=to_timestamp(experiment.updated_at),
        exposure_percent=experiment.exposure_percent,
        traffic_start=definition.traffic_start,
        traffic_end=definition.traffic_end,
        covariates=[
            experiment_pb2.Covariate(metric=c.metric, lookback_seconds=int(c.lookback.total_seconds()))
            for c in definition.covariates
        ],
    )
    if experiment.stage_started_at is not None:
        message.stage_start_time.CopyFrom(to_timestamp(experiment.stage_started_at))
    return message


def _metric_to_proto(metric: MetricReport, treatment_arm: str) -> experiment_pb2.MetricResult:
    return experiment_pb2.MetricResult(
        metric=metric.metric,
        arm=treatment_arm,
        control_mean=metric.control_mean,
        treatment_mean=metric.treatment_mean,
        relative_lift=metric.relative_lift,
        ci_low=metric.relative_ci_lower,
        ci_high=metric.relative_ci_upper,
        p_value=metric.relative_p_value,
        absolute_p_value=metric.absolute_p_value,
        always_valid_p_value=metric.always_valid_p_value,
        guardrail=metric.role == "guardrail",
        harmed=metric.harmed,
        role=metric.role,
        absolute_lift=metric.absolute_lift,
        absolute_ci_low=metric.absolute_ci_lower,
        absolute_ci_high=metric.absolute_ci_upper,
        always_valid_ci_low=metric.always_valid_ci_lower,
        always_valid_ci_high=metric.always_valid_ci_upper,
        adjusted_p_value=metric.adjusted_p_value,
        cleared=metric.cleared,
        control_count=metric.control_count,
        treatment_count=metric.treatment_count,
        status=metric.status,
        cuped=metric.cuped,
        cuped_theta=metric.cuped_theta,
        variance_reduction=metric.variance_reduction,
        unadjusted_relative_lift=metric.unadjusted_relative_lift,
        unadjusted_ci_low=metric.unadjusted_relative_ci_lower,
        unadjusted_ci_high=metric.unadjusted_relative_ci_upper,
        unadjusted_p_value=metric.unadjusted_relative_p_value,
        unadjusted_absolute_lift=metric.unadjusted_absolute_lift,
        unadjusted_absolute_ci_low=metric.unadjusted_absolute_ci_lower,
        unadjusted_absolute_ci_high=metric.unadjusted_absolute_ci_upper,
        unadjusted_absolute_p_value=metric.unadjusted_absolute_p_value,
    )


def report_to_proto(report: Report) -> experiment_pb2.ExperimentReport:
    treatment = report.arm_counts[-1][0] if report.arm_counts else ""
    return experiment_pb2.ExperimentReport(
        name=f"experiments/{report.experiment_id}",
        metrics=[_metric_to_proto(m, treatment) for m in report.metrics],
        srm_p_value=report.srm_p_value,
        recommended_action=report.action.upper(),
        summary=report.summary,
        stage_index=report.stage_index,
        exposure_percent=report.exposure_percent,
        arm_counts=[experiment_pb2.ArmCount(arm=arm, subjects=count) for arm, count in report.arm_counts],
        reasons=list(report.reasons),
        evaluate_time=to_timestamp(report.evaluated_at),
        state=STATE_TO_PROTO[ExperimentState(report.state)],
    )


def report_from_proto(message: experiment_pb2.ExperimentReport) -> Report:
    return Report(
        experiment_id=experiment_id_from_name("name", message.name),
        evaluated_at=message.evaluate_time.ToDatetime(tzinfo=UTC),
        state=STATE_FROM_PROTO.get(message.state, ExperimentState.RUNNING).value,
        stage_index=message.stage_index,
        exposure_percent=message.exposure_percent,
        arm_counts=tuple((c.arm, c.subjects) for c in message.arm_counts),
        srm_p_value=message.srm_p_value,
        action=message.recommended_action.lower(),
        reasons=tuple(message.reasons),
        metrics=tuple(
            MetricReport(
                metric=m.metric,
                role=m.role,
                higher_is_better=True,
                status=m.status,
                control_count=m.control_count,
                treatment_count=m.treatment_count,
                control_mean=m.control_mean,
                treatment_mean=m.treatment_mean,
                absolute_lift=m.absolute_lift,
                absolute_ci_lower=m.absolute_ci_low,
                absolute_ci_upper=m.absolute_ci_high,
                relative_lift=m.relative_lift,
                relative_ci_lower=m.ci_low,
                relative_ci_upper=m.ci_high,
                relative_p_value=m.p_value,
                absolute_p_value=m.absolute_p_value,
                always_valid_p_value=m.always_valid_p_value,
                always_valid_ci_lower=m.always_valid_ci_low,
                always_valid_ci_upper=m.always_valid_ci_high,
                adjusted_p_value=m.adjusted_p_value,
                harmed=m.harmed,
                cleared=m.cleared,
                cuped=m.cuped,
                cuped_theta=m.cuped_theta,
                variance_reduction=m.variance_reduction,
                unadjusted_relative_lift=m.unadjusted_relative_lift,
                unadjusted_relative_ci_lower=m.unadjusted_ci_low,
                unadjusted_relative_ci_upper=m.unadjusted_ci_high,
                unadjusted_relative_p_value=m.unadjusted_p_value,
                unadjusted_absolute_lift=m.unadjusted_absolute_lift,
                unadjusted_absolute_ci_lower=m.unadjusted_absolute_ci_low,
                unadjusted_absolute_ci_upper=m.unadjusted_absolute_ci_high,
                unadjusted_absolute_p_value=m.unadjusted_absolute_p_value,
            )
            for m in message.metrics
        ),
        summary=message.summary,
    )


def change_to_proto(entry: ChangeEntry) -> experiment_pb2.ExperimentChange:
    message = experiment_pb2.ExperimentChange(
        sequence=entry.sequence,
        change_time=to_timestamp(entry.occurred_at),
        actor=entry.actor,
        action=entry.action,
        from_state=STATE_TO_PROTO[ExperimentState(entry.from_state)],
        to_state=STATE_TO_PROTO[ExperimentState(entry.to_state)],
        from_stage_index=entry.from_stage,
        to_stage_index=entry.to_stage,
        reason=entry.reason,
    )
    if entry.report is not None:
        message.report.CopyFrom(report_to_proto(entry.report))
    return message


def change_from_proto(message: experiment_pb2.ExperimentChange) -> ChangeEntry:
    return ChangeEntry(
        sequence=message.sequence,
        occurred_at=message.change_time.ToDatetime(tzinfo=UTC),
        actor=message.actor,
        action=message.action,
        from_state=STATE_FROM_PROTO.get(message.from_state, ExperimentState.DRAFT).value,
        to_state=STATE_FROM_PROTO.get(message.to_state, ExperimentState.DRAFT).value,
        from_stage=message.from_stage_index,
        to_stage=message.to_stage_index,
        reason=message.reason,
        report=report_from_proto(message.report) if message.HasField("report") else None,
    )
