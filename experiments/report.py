"""The significance report: every number behind a decision, a summary in words, a chart.

A `Report` is built from a `rules.Evaluation` (nothing is re-derived here). Every
interval sits beside the p-value of its own test: the absolute and relative lifts each
carry their Welch t p (`stats.absolute_lift` / `stats.relative_lift`), the always-valid
band its always-valid p. With a covariate (CUPED) the lifts and the always-valid test are
on the adjusted statistic, and the unadjusted lifts with their own p-values sit beside
them with the variance reduction achieved. It round-trips through plain JSON so that each
stored state change carries the numbers that justified it. `render_chart` draws lift and
its bands over time per metric with the stage changes marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

from tacit.experiments.rules import Action, Evaluation, ExperimentSpec, MetricResult

__all__ = ["ChangeEntry", "MetricReport", "Report", "build_report", "render_chart"]


@dataclass(frozen=True)
class MetricReport:
    """One metric's comparison, treatment against control."""

    metric: str
    role: str  # primary, secondary, guardrail
    higher_is_better: bool
    status: str
    control_count: int
    treatment_count: int
    control_mean: float
    treatment_mean: float
    absolute_lift: float
    absolute_ci_lower: float
    absolute_ci_upper: float
    absolute_p_value: float  # Welch t of the absolute lift (the test of its CI)
    relative_lift: float
    relative_ci_lower: float
    relative_ci_upper: float
    relative_p_value: float  # Welch t of the relative lift (the test of its CI)
    always_valid_p_value: float
    always_valid_ci_lower: float
    always_valid_ci_upper: float
    adjusted_p_value: float  # always-valid, Holm/BH across primary + secondary; NaN for guardrails
    harmed: bool = False
    cleared: bool = False
    tolerance: float = math.nan
    # CUPED: the lifts above are adjusted; these are the same tests without the covariate.
    cuped: bool = False
    covariate_lookback_seconds: float = math.nan
    cuped_theta: float = math.nan
    variance_reduction: float = math.nan  # 1 − Var(adjusted difference)/Var(unadjusted)
    unadjusted_absolute_lift: float = math.nan
    unadjusted_absolute_ci_lower: float = math.nan
    unadjusted_absolute_ci_upper: float = math.nan
    unadjusted_absolute_p_value: float = math.nan
    unadjusted_relative_lift: float = math.nan
    unadjusted_relative_ci_lower: float = math.nan
    unadjusted_relative_ci_upper: float = math.nan
    unadjusted_relative_p_value: float = math.nan


@dataclass(frozen=True)
class Report:
    """What the rules saw at one evaluation and what they recommend."""

    experiment_id: str
    evaluated_at: datetime
    state: str
    stage_index: int
    exposure_percent: float
    arm_counts: tuple[tuple[str, int], ...]
    srm_p_value: float
    action: str
    reasons: tuple[str, ...]
    metrics: tuple[MetricReport, ...]
    summary: str

    @property
    def primary(self) -> MetricReport | None:
        return next((m for m in self.metrics if m.role == "primary"), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (NaN and infinities become null: PostgreSQL JSON refuses them)."""
        data = asdict(self)
        data["evaluated_at"] = self.evaluated_at.isoformat()
        return _json_safe(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        metrics = tuple(_metric_from_dict(item) for item in data.get("metrics", ()))
        return cls(
            experiment_id=data["experiment_id"],
            evaluated_at=datetime.fromisoformat(data["evaluated_at"]),
            state=data["state"],
            stage_index=int(data["stage_index"]),
            exposure_percent=float(data["exposure_percent"]),
            arm_counts=tuple((str(arm), int(count)) for arm, count in data["arm_counts"]),
            srm_p_value=_nan_if_none(data["srm_p_value"]),
            action=data["action"],
            reasons=tuple(data["reasons"]),
            metrics=metrics,
            summary=data["summary"],
        )


def _metric_from_dict(item: Mapping[str, Any]) -> MetricReport:
    names = {f.name for f in fields(MetricReport)}
    values = {k: _nan_if_none(v) for k, v in item.items() if k in names}
    # Reports stored before each interval had its own p carried one Welch p (absolute).
    if "p_value" in item and "absolute_p_value" not in item:
        values["absolute_p_value"] = _nan_if_none(item["p_value"])
    values.setdefault("relative_p_value", math.nan)
    return MetricReport(**values)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _nan_if_none(value: Any) -> Any:
    return math.nan if value is None else value


@dataclass(frozen=True)
class ChangeEntry:
    """One stored step of an experiment's history (a state change or an evaluation)."""

    sequence: int
    occurred_at: datetime
    actor: str
    action: str
    from_state: str
    to_state: str
    from_stage: int
    to_stage: int
    reason: str
    report: Report | None


def _metric_report(result: MetricResult, spec: ExperimentSpec) -> MetricReport:
    harm = result.harm
    cuped = result.cuped
    plain_absolute = result.unadjusted_absolute or result.absolute
    plain_relative = result.unadjusted_relative or result.relative
    covariate = spec.covariate_for(result.metric)
    return MetricReport(
        metric=result.metric,
        role=result.role.value,
        higher_is_better=result.higher_is_better,
        status=result.sequential.status.value,
        control_count=result.control_count,
        treatment_count=result.treatment_count,
        control_mean=result.control_mean,
        treatment_mean=result.treatment_mean,
        absolute_lift=result.absolute.estimate,
        absolute_ci_lower=result.absolute.ci_lower,
        absolute_ci_upper=result.absolute.ci_upper,
        absolute_p_value=result.absolute.p_value,
        relative_lift=result.relative.estimate,
        relative_ci_lower=result.relative.ci_lower,
        relative_ci_upper=result.relative.ci_upper,
        relative_p_value=result.relative.p_value,
        always_valid_p_value=result.sequential.p_value,
        always_valid_ci_lower=result.sequential.ci_lower,
        always_valid_ci_upper=result.sequential.ci_upper,
        adjusted_p_value=result.adjusted_p_value,
        harmed=bool(harm and harm.harmed),
        cleared=bool(harm and harm.cleared),
        tolerance=harm.tolerance if harm is not None else math.nan,
        cuped=cuped is not None,
        covariate_lookback_seconds=covariate.lookback.total_seconds() if covariate else math.nan,
        cuped_theta=cuped.theta if cuped is not None else math.nan,
        variance_reduction=cuped.variance_reduction if cuped is not None else math.nan,
        unadjusted_absolute_lift=plain_absolute.estimate,
        unadjusted_absolute_ci_lower=plain_absolute.ci_lower,
        unadjusted_absolute_ci_upper=plain_absolute.ci_upper,
        unadjusted_absolute_p_value=plain_absolute.p_value,
        unadjusted_relative_lift=plain_relative.estimate,
        unadjusted_relative_ci_lower=plain_relative.ci_lower,
        unadjusted_relative_ci_upper=plain_relative.ci_upper,
        unadjusted_relative_p_value=plain_relative.p_value,
    )


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4g}"


def _percent(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value * 100:+.2f}%"


def _summary(
    spec: ExperimentSpec,
    evaluation: Evaluation,
    metrics: Sequence[MetricReport],
    state: str,
    auto_applied: bool,
) -> str:
    stage = spec.stages[evaluation.stage_index]
    where = f"stage {evaluation.stage_index + 1} of {len(spec.stages)} ({stage.percent:g}% exposure)"
    primary = next(m for m in metrics if m.role == "primary")
    confidence = f"{(1 - spec.alpha) * 100:g}%"
    adjusted = ""
    if primary.cuped:
        adjusted = (
            f" CUPED-adjusted (variance {_percent(-primary.variance_reduction)}; unadjusted "
            f"{_percent(primary.unadjusted_relative_lift)}, {confidence} CI "
            f"{_percent(primary.unadjusted_relative_ci_lower)} to "
            f"{_percent(primary.unadjusted_relative_ci_upper)}, "
            f"p={_number(primary.unadjusted_relative_p_value)})."
        )
    lift = (
        f"{primary.metric}: treatment {_number(primary.treatment_mean)} vs control "
        f"{_number(primary.control_mean)}, "
        f"relative lift {_percent(primary.relative_lift)} "
        f"({confidence} CI {_percent(primary.relative_ci_lower)} to {_percent(primary.relative_ci_upper)}, "
        f"p={_number(primary.relative_p_value)}), "
        f"always-valid p={_number(primary.always_valid_p_value)}.{adjusted}"
    )
    guardrails = [m for m in metrics if m.role == "guardrail"]
    guard_words = ""
    if guardrails:
        parts = []
        for g in guardrails:
            verdict = (
                "HARMED beyond tolerance"
                if g.harmed
                else "within tolerance"
                if g.cleared
                else "not yet shown safe"
            )
            parts.append(f"{g.metric} {_percent(g.relative_lift)} ({verdict})")
        guard_words = " Guardrails: " + "; ".join(parts) + "."
    action = Action(evaluation.action)
    if state not in ("running",):
        nxt = f"The experiment is {state.replace('_', ' ')}; no automatic change will follow."
    elif action is Action.HOLD_SRM:
        nxt = (
            f"Sample ratio mismatch (p={evaluation.srm.p_value:.2e}): the arm counts do not match the "
            f"weights, so no lift can be trusted. The rollout is held at {where} until assignment or "
            "logging is fixed."
        )
    elif action is Action.ROLLBACK:
        done = "has been rolled back" if auto_applied else "should be rolled back"
        nxt = f"The treatment does harm; the rollout {done}: all traffic goes to control."
    elif action is Action.ADVANCE:
        target = spec.stages[evaluation.stage_index + 1].percent
        nxt = f"The primary metric wins at {where}; the rollout advances to {target:g}%."
    elif action is Action.RECOMMEND_ADVANCE:
        target = spec.stages[evaluation.stage_index + 1].percent
        nxt = (
            f"The primary metric wins at {where}; advancing to {target:g}% is recommended "
            "(auto-advance is off: run `tacit experiment advance`)."
        )
    elif action is Action.SHIP:
        verb = "ships" if auto_applied else "can ship (run `tacit experiment advance`)"
        nxt = f"The primary metric wins at 100% with every guardrail within tolerance: the treatment {verb}."
    else:
        nxt = f"Not conclusive yet at {where}; keep collecting ({'; '.join(evaluation.reasons)})."
    return f"{lift}{guard_words} {nxt}"


def build_report(
    *,
    experiment_id: str,
    spec: ExperimentSpec,
    evaluation: Evaluation,
    arm_counts: Mapping[str, int],
    evaluated_at: datetime,
    state: str,
    auto_applied: bool = False,
) -> Report:
    """The report for one evaluation; `auto_applied` says the action was carried out."""
    metrics = tuple(_metric_report(result, spec) for result in evaluation.metrics)
    return Report(
        experiment_id=experiment_id,
        evaluated_at=evaluated_at,
        state=state,
        stage_index=evaluation.stage_index,
        exposure_percent=spec.stages[evaluation.stage_index].percent,
        arm_counts=tuple((arm.name, int(arm_counts.get(arm.name, 0))) for arm in spec.arms),
        srm_p_value=evaluation.srm.p_value,
        action=evaluation.action.value,
        reasons=evaluation.reasons,
        metrics=metrics,
        summary=_summary(spec, evaluation, metrics, state, auto_applied),
    )


STAGE_ACTIONS = frozenset({"start", "resume", "advance", "pause", "rollback", "ship", "conclude", "hold"})


def render_chart(history: Sequence[ChangeEntry], path: Path | str) -> Path:
    """PNG of lift (treatment − control) over time per metric, with the always-valid band,
    the fixed-horizon CI, and the stage changes marked as vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    points = [(entry.occurred_at, entry.report) for entry in history if entry.report is not None]
    names = list(dict.fromkeys(m.metric for _, report in points for m in report.metrics))
    rows = max(len(names), 1)
    figure, axes = plt.subplots(rows, 1, figsize=(9, 2.8 * rows), sharex=True, squeeze=False)
    changes = [entry for entry in history if entry.action in STAGE_ACTIONS]
    for axis, name in zip(axes[:, 0], names or ["(no data)"], strict=False):
        series = [
            (moment, metric)
            for moment, report in points
            for metric in report.metrics
            if metric.metric == name
        ]
        times = [moment for moment, _ in series]
        lift = [m.absolute_lift for _, m in series]
        axis.fill_between(
            times,
            [m.always_valid_ci_lower for _, m in series],
            [m.always_valid_ci_upper for _, m in series],
            alpha=0.2,
            color="tab:blue",
            label="always-valid band",
        )
        axis.plot(
            times, [m.absolute_ci_lower for _, m in series], ":", color="tab:blue", lw=0.8, label="95% CI"
        )
        axis.plot(times, [m.absolute_ci_upper for _, m in series], ":", color="tab:blue", lw=0.8)
        axis.plot(times, lift, marker=".", color="tab:blue", label="lift")
        axis.axhline(0.0, color="black", lw=0.6)
        role = series[0][1].role if series else ""
        axis.set_title(f"{name} ({role})" if role else name, fontsize=10)
        axis.set_ylabel("treatment − control")
        for change in changes:
            color = {"rollback": "tab:red", "ship": "tab:green", "hold": "tab:orange"}.get(
                change.action, "gray"
            )
            axis.axvline(change.occurred_at, color=color, ls="--", lw=0.9)
            axis.annotate(
                f"{change.action} → stage {change.to_stage + 1}"
                if change.action != "rollback"
                else "rollback",
                (change.occurred_at, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                rotation=90,
                va="top",
                ha="right",
                color=color,
            )
        axis.legend(fontsize=7, loc="lower left")
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    plt.close(figure)
    return path
