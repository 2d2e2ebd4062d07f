"""Decision rules: SRM holds, harm rolls back, wins advance or ship, bad specs are refused."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tacit.experiments.errors import SpecError
from tacit.experiments.metrics import BUILTIN_METRICS, MetricKind
from tacit.experiments.rules import (
    Action,
    Arm,
    ExperimentSpec,
    Guardrail,
    MetricRole,
    Stage,
    evaluate,
    validate_spec,
)
from tacit.experiments.stats import RatioStats, SampleStats, Status, ToleranceKind

SPEC = ExperimentSpec(
    arms=(Arm("control", 0.5), Arm("treatment", 0.5)),
    stages=(
        Stage(5, 1_000, timedelta(days=1)),
        Stage(25, 1_000, timedelta(days=1)),
        Stage(100, 5_000, timedelta(days=2)),
    ),
    primary_metric="conversion",
    guardrails=(Guardrail("dwell_time", 0.05, ToleranceKind.RELATIVE),),
    secondary_metrics=("click_through",),
    auto_advance=True,
    sequential_tuning_n=20_000,
)
LAST = len(SPEC.stages) - 1
LONG_ENOUGH = timedelta(days=3)


def _mean_stats(n: int, mean: float, std_dev: float) -> SampleStats:
    if n == 0:
        return SampleStats(0, 0.0, 0.0)
    total = n * mean
    return SampleStats(n, total, std_dev**2 * (n - 1) + total * total / n)


def observe(
    *,
    n: int = 20_000,
    n_treatment: int | None = None,
    conversion: tuple[float, float] = (0.10, 0.10),
    dwell: tuple[float, float] = (30.0, 30.0),
    dwell_sd: float = 10.0,
) -> dict[str, Any]:
    """Keyword arguments for `evaluate`: counts and per-metric, per-arm statistics."""
    counts = {"control": n, "treatment": n if n_treatment is None else n_treatment}
    stats: dict[str, dict[str, SampleStats]] = {
        "conversion": {},
        "click_through": {},
        "dwell_time": {},
    }
    for index, arm in enumerate(("control", "treatment")):
        size = counts[arm]
        stats["conversion"][arm] = SampleStats.from_proportion(round(conversion[index] * size), size)
        stats["click_through"][arm] = SampleStats.from_proportion(round(0.3 * size), size)
        stats["dwell_time"][arm] = _mean_stats(size, dwell[index], dwell_sd)
    return {"arm_counts": counts, "metric_stats": stats}


def test_sample_ratio_mismatch_holds_even_when_a_guardrail_is_harmed() -> None:
    # 20 000 vs 21 000 at 50/50: chi2 = 2 * 500^2 / 20 500 = 24.39, p = 7.9e-7 < 0.001
    result = evaluate(
        SPEC,
        stage_index=1,
        elapsed=LONG_ENOUGH,
        **observe(n_treatment=21_000, dwell=(30.0, 27.0)),
    )
    assert result.action is Action.HOLD_SRM
    assert result.srm.mismatch and result.srm.p_value < 1e-6
    assert "sample ratio mismatch" in result.reasons[0]


def test_harmed_guardrail_rolls_back_before_the_stage_minimums() -> None:
    # dwell 30 -> 27 is a 10 % drop; always-valid bound on the drop ~ 10 % -+ 1 % > 5 %.
    result = evaluate(
        SPEC,
        stage_index=0,
        elapsed=timedelta(hours=1),
        **observe(conversion=(0.10, 0.12), dwell=(30.0, 27.0)),
    )
    assert result.action is Action.ROLLBACK
    guardrail = next(m for m in result.metrics if m.role is MetricRole.GUARDRAIL)
    assert guardrail.harm is not None and guardrail.harm.harmed
    assert guardrail.harm.lower_bound > 0.05
    assert "guardrail dwell_time" in result.reasons[0]


def test_significantly_worse_primary_rolls_back() -> None:
    result = evaluate(SPEC, stage_index=1, elapsed=LONG_ENOUGH, **observe(conversion=(0.10, 0.08)))
    assert result.action is Action.ROLLBACK
    assert "significantly worse" in result.reasons[0]


@pytest.mark.parametrize(
    ("auto_advance", "stage_index", "action"),
    [
        (True, 0, Action.ADVANCE),
        (True, 1, Action.ADVANCE),
        (False, 0, Action.RECOMMEND_ADVANCE),
        (True, LAST, Action.SHIP),
        (False, LAST, Action.SHIP),
    ],
)
def test_winning_primary_advances_and_ships_at_the_last_stage(
    auto_advance: bool, stage_index: int, action: Action
) -> None:
    spec = replace(SPEC, auto_advance=auto_advance)
    result = evaluate(spec, stage_index=stage_index, elapsed=LONG_ENOUGH, **observe(conversion=(0.10, 0.12)))
    assert result.action is action
    primary = result.metrics[0]
    assert primary.role is MetricRole.PRIMARY and primary.wins
    assert primary.adjusted_p_value < 0.05
    assert primary.sequential.ci_lower > 0


def test_nothing_ships_while_a_guardrail_is_not_shown_within_tolerance() -> None:
    # dwell sd 200: relative SE ~ 6.7 %, the bound cannot exclude a 5 % degradation.
    result = evaluate(
        SPEC,
        stage_index=LAST,
        elapsed=LONG_ENOUGH,
        **observe(conversion=(0.10, 0.12), dwell_sd=200.0),
    )
    assert result.action is Action.CONTINUE
    assert any("not yet shown within tolerance" in reason for reason in result.reasons)


@pytest.mark.parametrize(
    ("stage_index", "elapsed", "n", "reason"),
    [
        (0, timedelta(hours=2), 20_000, "min duration"),
        (LAST, LONG_ENOUGH, 4_000, "min sample"),
    ],
)
def test_win_before_the_stage_minimums_continues(
    stage_index: int, elapsed: timedelta, n: int, reason: str
) -> None:
    result = evaluate(SPEC, stage_index=stage_index, elapsed=elapsed, **observe(n=n, conversion=(0.10, 0.13)))
    assert result.action is Action.CONTINUE
    assert reason in result.reasons[0]


def test_no_effect_continues_and_reports_every_metric() -> None:
    result = evaluate(SPEC, stage_index=1, elapsed=LONG_ENOUGH, **observe())
    assert result.action is Action.CONTINUE
    assert [(m.metric, m.role) for m in result.metrics] == [
        ("conversion", MetricRole.PRIMARY),
        ("click_through", MetricRole.SECONDARY),
        ("dwell_time", MetricRole.GUARDRAIL),
    ]
    assert math.isnan(result.metrics[2].adjusted_p_value)
    # Holm over the two non-guardrail metrics never lowers a p-value.
    assert all(m.adjusted_p_value >= m.sequential.p_value for m in result.metrics[:2])


def test_empty_arms_continue_instead_of_crashing() -> None:
    empty = SampleStats(0, 0.0, 0.0)
    stats = {m: {"control": empty, "treatment": empty} for m in BUILTIN_METRICS}
    result = evaluate(
        SPEC,
        stage_index=0,
        elapsed=LONG_ENOUGH,
        arm_counts={"control": 0, "treatment": 0},
        metric_stats=stats,
    )
    assert result.action is Action.CONTINUE
    assert result.metrics[0].sequential.status is Status.INSUFFICIENT_DATA


def test_ratio_metric_as_primary() -> None:
    spec = replace(SPEC, primary_metric="revenue_per_click", secondary_metrics=(), guardrails=())
    assert BUILTIN_METRICS["revenue_per_click"].kind is MetricKind.RATIO
    clicks = 40_000.0  # 2 clicks per subject, constant
    stats = {
        "revenue_per_click": {
            # revenue per subject mean 1.0 vs 1.2, sd 1.0; clicks constant -> ratio = mean / 2
            "control": RatioStats(20_000, 20_000.0, clicks, 20_000 * 2.0, 80_000.0, 40_000.0),
            "treatment": RatioStats(20_000, 24_000.0, clicks, 20_000 * 2.44, 80_000.0, 48_000.0),
        }
    }
    result = evaluate(
        spec,
        stage_index=0,
        elapsed=LONG_ENOUGH,
        arm_counts={"control": 20_000, "treatment": 20_000},
        metric_stats=stats,
    )
    assert result.metrics[0].control_mean == pytest.approx(0.5)
    assert result.action is Action.ADVANCE


@settings(max_examples=150, deadline=None)
@given(
    stage_index=st.integers(min_value=0, max_value=LAST),
    n=st.integers(min_value=0, max_value=50_000),
    extra=st.integers(min_value=-600, max_value=600),
    rates=st.tuples(st.floats(0.05, 0.2), st.floats(0.05, 0.2)),
    dwell=st.tuples(st.floats(20, 40), st.floats(20, 40)),
    days=st.floats(0, 5),
)
def test_nothing_reaches_full_rollout_without_a_passing_report(
    stage_index: int,
    n: int,
    extra: int,
    rates: tuple[float, float],
    dwell: tuple[float, float],
    days: float,
) -> None:
    result = evaluate(
        SPEC,
        stage_index=stage_index,
        elapsed=timedelta(days=days),
        **observe(n=n, n_treatment=max(0, n + extra), conversion=rates, dwell=dwell),
    )
    if result.action in (Action.ADVANCE, Action.RECOMMEND_ADVANCE, Action.SHIP):
        assert not result.srm.mismatch
        assert result.metrics[0].wins
        assert not any(m.harm is not None and m.harm.harmed for m in result.metrics)
    if result.action is Action.SHIP:
        assert stage_index == LAST
        assert all(m.harm is not None and m.harm.cleared for m in result.metrics[2:])
    else:
        assert result.action is not Action.SHIP


def _stages(*percents: float) -> tuple[Stage, ...]:
    return tuple(Stage(p) for p in percents)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"arms": (Arm("control", 0.5), Arm("treatment", 0.4))}, "arms"),
        ({"arms": (Arm("control", 50), Arm("treatment", 50))}, "arms"),
        ({"arms": (Arm("control", 1.0),)}, "arms"),
        ({"control_arm": "baseline"}, "control_arm"),
        ({"primary_metric": "happiness"}, "primary_metric"),
        ({"secondary_metrics": ("conversion",)}, "secondary_metrics[0]"),
        ({"secondary_metrics": ("click_through", "bounce")}, "secondary_metrics[1]"),
        ({"guardrails": (Guardrail("latency", 0.1),)}, "guardrails[0].metric"),
        ({"guardrails": (Guardrail("dwell_time", -0.1),)}, "guardrails[0].tolerance"),
        ({"stages": ()}, "stages"),
        ({"stages": _stages(5, 25, 25, 100)}, "stages[2].percent"),
        ({"stages": _stages(25, 5, 100)}, "stages[1].percent"),
        ({"stages": _stages(5, 25, 50)}, "stages"),
        ({"stages": _stages(0, 50, 100)}, "stages[0].percent"),
        ({"stages": _stages(5, 150)}, "stages[1].percent"),
        ({"stages": (Stage(100, -1),)}, "stages[0].min_sample"),
        ({"alpha": 0.0}, "alpha"),
        ({"srm_threshold": 1.5}, "srm_threshold"),
        ({"sequential_tuning_n": 0}, "sequential_tuning_n"),
    ],
)
def test_invalid_specs_are_refused_with_the_field_named(change: dict[str, Any], field: str) -> None:
    spec = replace(SPEC, **change)
    with pytest.raises(SpecError) as error:
        validate_spec(spec)
    assert error.value.field == field
    with pytest.raises(SpecError):
        evaluate(spec, stage_index=0, elapsed=LONG_ENOUGH, **observe())


def test_valid_spec_passes_and_bad_inputs_name_the_field() -> None:
    validate_spec(SPEC)
    inputs = observe()
    del inputs["metric_stats"]["dwell_time"]["treatment"]
    with pytest.raises(SpecError) as error:
        evaluate(SPEC, stage_index=0, elapsed=LONG_ENOUGH, **inputs)
    assert error.value.field == "metric_stats.dwell_time.treatment"
    with pytest.raises(SpecError) as error:
        evaluate(SPEC, stage_index=3, elapsed=LONG_ENOUGH, **observe())
    assert error.value.field == "stage_index"
    ratio_spec = replace(SPEC, secondary_metrics=("revenue_per_click",))
    inputs = observe()
    inputs["metric_stats"]["revenue_per_click"] = inputs["metric_stats"]["conversion"]
    with pytest.raises(SpecError, match="RatioStats") as error:
        evaluate(ratio_spec, stage_index=0, elapsed=LONG_ENOUGH, **inputs)
    assert error.value.field == "metric_stats.revenue_per_click.control"
