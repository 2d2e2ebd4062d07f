"""Decision rules of a controlled rollout, as one pure function of spec and statistics.

`evaluate` turns the current per-arm sufficient statistics at one stage into an
`Action` with human-readable reasons and the per-metric numbers that justify it, so that
every stage change can be recorded with its evidence (DESIGN invariant 5). Order of the
rules, first match wins:

1. HOLD_SRM — the arm counts do not match the weights (χ² p < srm_threshold): the data
   cannot be trusted, freeze the stage and alert.
2. ROLLBACK — a guardrail is confidently degraded beyond its tolerance, or the primary
   metric is significantly worse (both on always-valid bounds, so checking at every
   look is safe). Applies before the stage minimums: harm needs no patience.
3. CONTINUE — the stage's minimum sample per arm or minimum duration is not reached.
4. Primary metric wins (always-valid, multiplicity-adjusted p < alpha with the lift in the
   good direction):
   * last stage: SHIP only with a passing report — every guardrail *cleared*
     (non-inferiority shown) — otherwise CONTINUE;
   * earlier stage: ADVANCE when `auto_advance`, else RECOMMEND_ADVANCE.
5. CONTINUE otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import TypeAlias

from tacit.experiments.assignment import traffic_buckets, validate_arms
from tacit.experiments.errors import SpecError
from tacit.experiments.metrics import BUILTIN_METRICS, MetricDefinition, MetricKind
from tacit.experiments.stats import (
    Correction,
    CovariateStats,
    CupedResult,
    HarmResult,
    LiftResult,
    MeanStats,
    RatioStats,
    SampleStats,
    SequentialResult,
    SrmResult,
    Status,
    ToleranceKind,
    absolute_lift,
    adjust_p_values,
    cuped_adjust,
    harm_test,
    relative_lift,
    sequential_test,
    srm_check,
)

__all__ = [
    "Action",
    "Arm",
    "Covariate",
    "Evaluation",
    "ExperimentSpec",
    "Guardrail",
    "MetricResult",
    "MetricRole",
    "Stage",
    "evaluate",
    "validate_spec",
    "validate_traffic_range",
]


class Action(StrEnum):
    """What the rollout should do next."""

    HOLD_SRM = "hold_srm"
    ROLLBACK = "rollback"
    ADVANCE = "advance"
    SHIP = "ship"
    CONTINUE = "continue"
    RECOMMEND_ADVANCE = "recommend_advance"


class MetricRole(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    GUARDRAIL = "guardrail"


@dataclass(frozen=True)
class Arm:
    """An arm and its share of exposed subjects (weights sum to 1)."""

    name: str
    weight: float


@dataclass(frozen=True)
class Stage:
    """An exposure level and the evidence needed before leaving it."""

    percent: float
    min_sample: int = 0  # subjects per arm
    min_duration: timedelta = timedelta(0)


@dataclass(frozen=True)
class Guardrail:
    """A metric that must not degrade beyond `tolerance` (see `stats.harm_test`).

    `higher_is_better` overrides the registry's direction when set.
    """

    metric: str
    tolerance: float
    tolerance_kind: ToleranceKind = ToleranceKind.RELATIVE
    higher_is_better: bool | None = None


@dataclass(frozen=True)
class Covariate:
    """CUPED for `metric`: its own value over `lookback` before each subject's first exposure."""

    metric: str
    lookback: timedelta


# The longest pre-exposure window a covariate may read.
MAX_COVARIATE_LOOKBACK = timedelta(days=365)


@dataclass(frozen=True)
class ExperimentSpec:
    """A controlled rollout of one treatment against control."""

    arms: tuple[Arm, ...]
    stages: tuple[Stage, ...]
    primary_metric: str
    control_arm: str = "control"
    guardrails: tuple[Guardrail, ...] = ()
    secondary_metrics: tuple[str, ...] = ()
    auto_advance: bool = False
    alpha: float = 0.05
    srm_threshold: float = 0.001
    correction: Correction = Correction.HOLM
    sequential_tuning_n: float = 5000
    covariates: tuple[Covariate, ...] = ()

    @property
    def treatment_arm(self) -> str:
        return next(arm.name for arm in self.arms if arm.name != self.control_arm)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Primary, secondary and guardrail metrics, each once, in that order."""
        names = (self.primary_metric, *self.secondary_metrics, *(g.metric for g in self.guardrails))
        return tuple(dict.fromkeys(names))

    def covariate_for(self, metric: str) -> Covariate | None:
        return next((c for c in self.covariates if c.metric == metric), None)


@dataclass(frozen=True)
class MetricResult:
    """Every number behind one metric's part in a decision.

    With a covariate (CUPED), `absolute`, `relative`, `sequential` and `harm` are on the
    adjusted statistic, `cuped` says how, and `unadjusted_absolute`/`unadjusted_relative`
    give the same tests without the adjustment, for the report to show side by side.
    Without one, the unadjusted fields repeat `absolute`/`relative` and `cuped` is None.
    """

    metric: str
    role: MetricRole
    higher_is_better: bool
    control_mean: float
    treatment_mean: float
    absolute: LiftResult
    relative: LiftResult
    sequential: SequentialResult
    adjusted_p_value: float  # NaN for guardrails (not part of the corrected family)
    harm: HarmResult | None = None
    cuped: CupedResult | None = None
    unadjusted_absolute: LiftResult | None = None
    unadjusted_relative: LiftResult | None = None
    control_count: int = 0  # subjects (or decisions, for click_through) behind each arm's stats
    treatment_count: int = 0

    @property
    def wins(self) -> bool:
        """Significant (adjusted always-valid p < alpha) in the good direction."""
        return self._significant() and self._good_direction()

    @property
    def loses(self) -> bool:
        """Significant in the bad direction."""
        return self._significant() and not self._good_direction()

    def _significant(self) -> bool:
        return self.sequential.status is Status.OK and self.adjusted_p_value < self.sequential.alpha

    def _good_direction(self) -> bool:
        estimate = self.sequential.estimate
        return estimate > 0 if self.higher_is_better else estimate < 0


@dataclass(frozen=True)
class Evaluation:
    """The action, why, and the evidence (to be recorded with any stage change)."""

    action: Action
    reasons: tuple[str, ...]
    metrics: tuple[MetricResult, ...]
    srm: SrmResult
    stage_index: int


def _check_unit_interval(value: float, field: str) -> None:
    if not (isinstance(value, int | float) and 0 < value < 1):
        raise SpecError(field, "must be in (0, 1)")


def validate_traffic_range(traffic_start: float, traffic_end: float) -> None:
    """Refuse a slot traffic range unless 0 <= start < end <= 100 (percent of the slot's
    subjects) and it covers at least one layer bucket (0.01 %)."""

    def number(value: float) -> bool:
        return isinstance(value, int | float) and math.isfinite(value)

    if not (number(traffic_start) and 0 <= traffic_start < 100):
        raise SpecError("traffic_start", "must be in [0, 100)")
    if not (number(traffic_end) and 0 < traffic_end <= 100):
        raise SpecError("traffic_end", "must be in (0, 100]")
    if traffic_end <= traffic_start:
        raise SpecError("traffic_end", "must be greater than traffic_start")
    low, high = traffic_buckets(traffic_start, traffic_end)
    if high <= low:
        raise SpecError("traffic_end", "[traffic_start, traffic_end) must cover at least 0.01% of the slot")


def validate_spec(spec: ExperimentSpec, registry: Mapping[str, MetricDefinition] = BUILTIN_METRICS) -> None:
    """Raise `SpecError(field, message)` for the first problem found in `spec`."""
    validate_arms([(arm.name, arm.weight) for arm in spec.arms], field="arms")
    if len(spec.arms) != 2:
        raise SpecError("arms", "a rollout compares exactly 2 arms")
    if spec.control_arm not in {arm.name for arm in spec.arms}:
        raise SpecError("control_arm", "is not one of the arms")
    if not spec.stages:
        raise SpecError("stages", "at least one stage is required")
    previous = 0.0
    for index, stage in enumerate(spec.stages):
        percent = stage.percent
        if not (isinstance(percent, int | float) and 0 < percent <= 100):
            raise SpecError(f"stages[{index}].percent", "must be in (0, 100]")
        if percent <= previous:
            raise SpecError(f"stages[{index}].percent", "stages must strictly increase")
        previous = percent
        if isinstance(stage.min_sample, bool) or not (
            isinstance(stage.min_sample, int) and stage.min_sample >= 0
        ):
            raise SpecError(f"stages[{index}].min_sample", "must be a non-negative integer")
        if stage.min_duration < timedelta(0):
            raise SpecError(f"stages[{index}].min_duration", "must not be negative")
    if spec.stages[-1].percent != 100:
        raise SpecError("stages", "the last stage must be 100")
    if spec.primary_metric not in registry:
        raise SpecError("primary_metric", "names an unknown metric")
    for index, name in enumerate(spec.secondary_metrics):
        if name not in registry:
            raise SpecError(f"secondary_metrics[{index}]", "names an unknown metric")
        if name == spec.primary_metric or spec.secondary_metrics.count(name) > 1:
            raise SpecError(f"secondary_metrics[{index}]", "repeats the primary or an earlier metric")
    for index, guardrail in enumerate(spec.guardrails):
        if guardrail.metric not in registry:
            raise SpecError(f"guardrails[{index}].metric", "names an unknown metric")
        if not (math.isfinite(guardrail.tolerance) and guardrail.tolerance >= 0):
            raise SpecError(f"guardrails[{index}].tolerance", "must be finite and non-negative")
    seen: set[str] = set()
    for index, covariate in enumerate(spec.covariates):
        if covariate.metric not in spec.metric_names:
            raise SpecError(f"covariates[{index}].metric", "names none of the experiment's metrics")
        if covariate.metric in seen:
            raise SpecError(f"covariates[{index}].metric", "repeats an earlier covariate")
        seen.add(covariate.metric)
        if not registry[covariate.metric].supports_covariate:
            raise SpecError(
                f"covariates[{index}].metric",
                "is not one value per subject, so it has no pre-exposure covariate (CUPED)",
            )
        if not timedelta(0) < covariate.lookback <= MAX_COVARIATE_LOOKBACK:
            raise SpecError(f"covariates[{index}].lookback", "must be positive and at most 365 days")
    _check_unit_interval(spec.alpha, "alpha")
    _check_unit_interval(spec.srm_threshold, "srm_threshold")
    if not spec.sequential_tuning_n > 0:
        raise SpecError("sequential_tuning_n", "must be positive")


ArmStats: TypeAlias = MeanStats | CovariateStats


def _arm_stats(
    metric_stats: Mapping[str, Mapping[str, ArmStats]],
    definition: MetricDefinition,
    arm: str,
    with_covariate: bool = False,
) -> ArmStats:
    field = f"metric_stats.{definition.name}.{arm}"
    stats = metric_stats.get(definition.name, {}).get(arm)
    if stats is None:
        raise SpecError(field, "missing sufficient statistics")
    expected: type = RatioStats if definition.kind is MetricKind.RATIO else SampleStats
    if with_covariate:
        expected = CovariateStats
    if not isinstance(stats, expected):
        raise SpecError(field, f"{definition.kind.value} metric needs {expected.__name__}")
    return stats


@dataclass(frozen=True)
class _Compared:
    """One metric's arms as the tests see them (adjusted when CUPED applies)."""

    control: MeanStats
    treatment: MeanStats
    unadjusted_control: MeanStats
    unadjusted_treatment: MeanStats
    cuped: CupedResult | None


def _compared(
    spec: ExperimentSpec,
    metric_stats: Mapping[str, Mapping[str, ArmStats]],
    definition: MetricDefinition,
) -> _Compared:
    with_covariate = spec.covariate_for(definition.name) is not None
    control = _arm_stats(metric_stats, definition, spec.control_arm, with_covariate)
    treatment = _arm_stats(metric_stats, definition, spec.treatment_arm, with_covariate)
    if isinstance(control, CovariateStats) and isinstance(treatment, CovariateStats):
        cuped = cuped_adjust(control, treatment)
        return _Compared(cuped.control, cuped.treatment, control.post, treatment.post, cuped)
    assert not isinstance(control, CovariateStats) and not isinstance(treatment, CovariateStats)
    return _Compared(control, treatment, control, treatment, None)


def evaluate(
    spec: ExperimentSpec,
    *,
    stage_index: int,
    arm_counts: Mapping[str, int],
    metric_stats: Mapping[str, Mapping[str, ArmStats]],
    elapsed: timedelta,
    registry: Mapping[str, MetricDefinition] = BUILTIN_METRICS,
) -> Evaluation:
    """Decide the next action at stage `stage_index` (see the module docstring).

    `arm_counts` are subjects assigned per arm (for SRM and the stage minimum);
    `metric_stats[metric][arm]` are the sufficient statistics since the experiment
    started — `CovariateStats` for a metric with a covariate in `spec.covariates`, whose
    tests (and so decisions) then run on the CUPED-adjusted statistic; `elapsed` is the
    time spent at the current stage.
    """
    validate_spec(spec, registry)
    if not 0 <= stage_index < len(spec.stages):
        raise SpecError("stage_index", "must index one of the stages")
    control, treatment = spec.control_arm, spec.treatment_arm
    for arm in (control, treatment):
        if arm not in arm_counts:
            raise SpecError(f"arm_counts.{arm}", "missing count")
    stage = spec.stages[stage_index]
    is_last = stage_index == len(spec.stages) - 1
    alpha, tuning_n = spec.alpha, spec.sequential_tuning_n

    weights = {arm.name: arm.weight for arm in spec.arms}
    srm = srm_check(
        [arm_counts[control], arm_counts[treatment]],
        [weights[control], weights[treatment]],
        threshold=spec.srm_threshold,
    )

    def compare(name: str, role: MetricRole, higher_is_better: bool | None) -> MetricResult:
        definition = registry[name]
        arms = _compared(spec, metric_stats, definition)
        stats_c, stats_t = arms.control, arms.treatment
        direction = definition.higher_is_better if higher_is_better is None else higher_is_better
        sequential = sequential_test(stats_c, stats_t, alpha=alpha, tuning_n=tuning_n)
        absolute = absolute_lift(stats_c, stats_t, alpha=alpha)
        relative = relative_lift(stats_c, stats_t, alpha=alpha)
        if arms.cuped is None:
            unadjusted_absolute, unadjusted_relative = absolute, relative
        else:
            plain_c, plain_t = arms.unadjusted_control, arms.unadjusted_treatment
            unadjusted_absolute = absolute_lift(plain_c, plain_t, alpha=alpha)
            unadjusted_relative = relative_lift(plain_c, plain_t, alpha=alpha)
        return MetricResult(
            metric=name,
            role=role,
            higher_is_better=direction,
            control_mean=arms.unadjusted_control.mean,
            treatment_mean=arms.unadjusted_treatment.mean,
            absolute=absolute,
            relative=relative,
            sequential=sequential,
            adjusted_p_value=math.nan,
            cuped=arms.cuped,
            unadjusted_absolute=unadjusted_absolute,
            unadjusted_relative=unadjusted_relative,
            control_count=int(stats_c.n),
            treatment_count=int(stats_t.n),
        )

    family = [compare(spec.primary_metric, MetricRole.PRIMARY, None)]
    family += [compare(name, MetricRole.SECONDARY, None) for name in spec.secondary_metrics]
    adjusted = adjust_p_values([r.sequential.p_value for r in family], spec.correction)
    family = [_replace_adjusted(result, p_value) for result, p_value in zip(family, adjusted, strict=True)]
    guardrails = []
    for guardrail in spec.guardrails:
        result = compare(guardrail.metric, MetricRole.GUARDRAIL, guardrail.higher_is_better)
        arms = _compared(spec, metric_stats, registry[guardrail.metric])
        harm = harm_test(
            arms.control,
            arms.treatment,
            higher_is_better=result.higher_is_better,
            tolerance=guardrail.tolerance,
            tolerance_kind=guardrail.tolerance_kind,
            alpha=alpha,
            sequential_tuning_n=tuning_n,
        )
        guardrails.append(_with_harm(result, harm))
    metrics = tuple(family + guardrails)
    primary = family[0]

    def decide(action: Action, *reasons: str) -> Evaluation:
        return Evaluation(action, tuple(reasons), metrics, srm, stage_index)

    if srm.mismatch:
        return decide(
            Action.HOLD_SRM,
            f"sample ratio mismatch: counts {list(srm.observed)} vs expected "
            f"{[round(e, 1) for e in srm.expected]}, chi-square p={srm.p_value:.2e} "
            f"< {spec.srm_threshold}",
        )
    harmed = [g for g in guardrails if g.harm is not None and g.harm.harmed]
    if harmed or primary.loses:
        reasons = [
            f"guardrail {g.metric} degraded by {_describe(g.harm)}; lower bound "
            f"{g.harm.lower_bound:.4g} > tolerance {g.harm.tolerance:.4g}"
            for g in harmed
            if g.harm is not None
        ]
        if primary.loses:
            reasons.append(
                f"primary metric {primary.metric} significantly worse: effect "
                f"{primary.sequential.estimate:.4g}, always-valid p={primary.adjusted_p_value:.3g}"
            )
        return decide(Action.ROLLBACK, *reasons)

    smallest_arm = min(arm_counts[control], arm_counts[treatment])
    waiting = []
    if smallest_arm < stage.min_sample:
        waiting.append(f"min sample {stage.min_sample} per arm not reached ({smallest_arm})")
    if elapsed < stage.min_duration:
        waiting.append(f"min duration {stage.min_duration} not reached ({elapsed})")
    if waiting:
        return decide(Action.CONTINUE, *waiting)

    if not primary.wins:
        return decide(
            Action.CONTINUE,
            f"primary metric {primary.metric} not significant yet: always-valid "
            f"p={primary.adjusted_p_value:.3g} (alpha {alpha}), status {primary.sequential.status}",
        )
    win = (
        f"primary metric {primary.metric} wins: effect {primary.sequential.estimate:.4g} "
        f"[{primary.sequential.ci_lower:.4g}, {primary.sequential.ci_upper:.4g}], "
        f"always-valid p={primary.adjusted_p_value:.3g} < {alpha}"
    )
    if not is_last:
        action = Action.ADVANCE if spec.auto_advance else Action.RECOMMEND_ADVANCE
        return decide(action, win)
    uncleared = [g for g in guardrails if g.harm is None or not g.harm.cleared]
    if uncleared:
        return decide(
            Action.CONTINUE,
            win,
            *(
                f"guardrail {g.metric} not yet shown within tolerance "
                f"(status {g.harm.status if g.harm else 'missing'})"
                for g in uncleared
            ),
        )
    return decide(Action.SHIP, win, "all guardrails within tolerance; report passes")


def _replace_adjusted(result: MetricResult, p_value: float) -> MetricResult:
    return replace(result, adjusted_p_value=p_value)


def _with_harm(result: MetricResult, harm: HarmResult) -> MetricResult:
    return replace(result, harm=harm)


def _describe(harm: HarmResult | None) -> str:
    if harm is None:
        return "unknown"
    unit = "%" if harm.tolerance_kind is ToleranceKind.RELATIVE else ""
    factor = 100 if unit else 1
    return f"{harm.degradation * factor:.4g}{unit}"
