"""Guardrail tolerance kinds: absolute tolerances over the API, the CLI and the stored spec,
and what an absolute tolerance means to the rules (checked by hand)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tacit.cli import main
from tacit.cli.experiment import _guardrail
from tacit.experiments.rules import Action, Arm, ExperimentSpec, Guardrail, MetricRole, Stage, evaluate
from tacit.experiments.service import ArmConfig, ExperimentDefinition
from tacit.experiments.stats import SampleStats, ToleranceKind
from tacit.server.auth import Role
from tacit.v1 import experiment_pb2, experiment_pb2_grpc
from tests.conftest import ServerHandle


def _bad_fields(error: grpc.RpcError) -> list[str]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return [v.field for v in bad.field_violations]
    return []


def _request(
    experiment_id: str, *guardrails: experiment_pb2.Guardrail
) -> experiment_pb2.CreateExperimentRequest:
    return experiment_pb2.CreateExperimentRequest(
        experiment_id=experiment_id,
        experiment=experiment_pb2.Experiment(
            slot="home",
            arms=[
                experiment_pb2.Arm(name="control", policy="static:first", weight=0.5),
                experiment_pb2.Arm(name="treatment", policy="uniform", weight=0.5),
            ],
            primary_metric="click_through",
            guardrails=list(guardrails),
            stages=[experiment_pb2.Stage(percent=p, min_sample=10) for p in (10, 100)],
        ),
    )


@pytest.fixture
def experiments(start_server: Callable[..., ServerHandle]) -> tuple[ServerHandle, Any, Any]:
    handle = start_server(learner={"enabled": False})
    return (
        handle,
        experiment_pb2_grpc.ExperimentServiceStub(handle.channel),
        handle.metadata(Role.EXPERIMENTER),
    )


def test_an_absolute_guardrail_round_trips_and_unspecified_reads_as_relative(
    experiments: tuple[ServerHandle, Any, Any],
) -> None:
    handle, stub, metadata = experiments
    request = _request(
        "kinds",
        experiment_pb2.Guardrail(
            metric="conversion", tolerance=0.01, tolerance_kind=experiment_pb2.TOLERANCE_KIND_ABSOLUTE
        ),
        experiment_pb2.Guardrail(metric="dwell_time", tolerance=0.05),  # unspecified
        experiment_pb2.Guardrail(
            metric="revenue_per_click", tolerance=0.1, tolerance_kind=experiment_pb2.TOLERANCE_KIND_RELATIVE
        ),
    )
    created = stub.CreateExperiment(request, metadata=metadata)
    got = stub.GetExperiment(experiment_pb2.GetExperimentRequest(name="experiments/kinds"), metadata=metadata)
    for message in (created, got):
        assert [(g.metric, g.tolerance, g.tolerance_kind) for g in message.guardrails] == [
            ("conversion", 0.01, experiment_pb2.TOLERANCE_KIND_ABSOLUTE),
            ("dwell_time", 0.05, experiment_pb2.TOLERANCE_KIND_RELATIVE),
            ("revenue_per_click", 0.1, experiment_pb2.TOLERANCE_KIND_RELATIVE),
        ]
    # The stored spec is what the rules evaluate.
    stored = handle.running.runtime.experiments.get("kinds").definition.guardrails
    assert [g.tolerance_kind for g in stored] == [
        ToleranceKind.ABSOLUTE,
        ToleranceKind.RELATIVE,
        ToleranceKind.RELATIVE,
    ]


@pytest.mark.parametrize("value", [3, 7, -1])
def test_an_unknown_tolerance_kind_is_refused_naming_the_field(
    experiments: tuple[ServerHandle, Any, Any], value: int
) -> None:
    _, stub, metadata = experiments
    request = _request("bad-kind", experiment_pb2.Guardrail(metric="conversion", tolerance=0.01))
    request.experiment.guardrails[0].tolerance_kind = value  # type: ignore[assignment]  # open enum
    with pytest.raises(grpc.RpcError) as error:
        stub.CreateExperiment(request, metadata=metadata)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "experiment.guardrails[0].tolerance_kind" in error.value.details()
    assert _bad_fields(error.value) == ["experiment.guardrails[0].tolerance_kind"]
    with pytest.raises(grpc.RpcError) as missing:  # nothing was created
        stub.GetExperiment(
            experiment_pb2.GetExperimentRequest(name="experiments/bad-kind"), metadata=metadata
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_stored_spec_without_a_kind_reads_as_relative() -> None:
    definition = ExperimentDefinition(
        experiment_id="old",
        slot="home",
        arms=(ArmConfig("control", "static:first", 0.5), ArmConfig("treatment", "uniform", 0.5)),
        primary_metric="click_through",
        stages=(Stage(100),),
        control_arm="control",
        guardrails=(Guardrail("conversion", 0.02, ToleranceKind.ABSOLUTE),),
    )
    stored = json.loads(json.dumps(definition.to_json()))
    assert stored["guardrails"][0]["tolerance_kind"] == "absolute"
    assert ExperimentDefinition.from_json("old", "home", stored) == definition
    del stored["guardrails"][0]["tolerance_kind"]  # written before the kind existed
    old = ExperimentDefinition.from_json("old", "home", stored)
    assert old.guardrails == (Guardrail("conversion", 0.02, ToleranceKind.RELATIVE),)


@pytest.mark.parametrize(
    ("text", "tolerance", "kind"),
    [
        ("conversion:0.02", 0.02, experiment_pb2.TOLERANCE_KIND_RELATIVE),
        ("conversion:0.02:relative", 0.02, experiment_pb2.TOLERANCE_KIND_RELATIVE),
        ("conversion:0.005:absolute", 0.005, experiment_pb2.TOLERANCE_KIND_ABSOLUTE),
        ("dwell_time:1.5:ABSOLUTE", 1.5, experiment_pb2.TOLERANCE_KIND_ABSOLUTE),
    ],
)
def test_cli_guardrail_argument(text: str, tolerance: float, kind: int) -> None:
    guardrail = _guardrail(text)
    expected = (text.split(":")[0], tolerance, kind)
    assert (guardrail.metric, guardrail.tolerance, guardrail.tolerance_kind) == expected


@pytest.mark.parametrize("text", ["conversion", "conversion:abc", "conversion:0.01:percent"])
def test_cli_refuses_a_bad_guardrail_argument(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="METRIC:TOLERANCE"):
        _guardrail(text)


def test_cli_creates_an_absolute_guardrail(
    start_server: Callable[..., ServerHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    handle = start_server(learner={"enabled": False})
    base = ["experiment", "--target", handle.target, "--data-dir", str(handle.data_dir)]
    create = [
        "create", "cli-abs", "--slot", "home",
        "--arm", "control:static:first:0.5", "--arm", "treatment:uniform:0.5",
        "--primary", "click_through", "--guardrail", "conversion:0.005:absolute",
        "--guardrail", "dwell_time:0.1", "--stage", "100",
    ]  # fmt: skip
    assert main(base + create) == 0
    capsys.readouterr()
    assert main(base + ["get", "cli-abs"]) == 0
    guardrails = json.loads(capsys.readouterr().out)["guardrails"]
    assert guardrails == [
        {"metric": "conversion", "tolerance": 0.005, "tolerance_kind": "TOLERANCE_KIND_ABSOLUTE"},
        {"metric": "dwell_time", "tolerance": 0.1, "tolerance_kind": "TOLERANCE_KIND_RELATIVE"},
    ]


# ----------------------------------------------------------------------------- the rules
#
# dwell_time, n = 20 000 per arm, sd 10: control 30, treatment 29 (1 unit worse).
# Absolute SE s = sqrt(100/20 000 + 100/20 000) = 0.1.
# Always-valid CS (alpha 0.05, tuning n* = 20 000):
#   rho^2 = (-2 ln 0.05 + ln(1 - 2 ln 0.05)) / n* = (5.991465 + 1.944691) / 20 000 = 3.968078e-4
#   r = N rho^2 = 40 000 * 3.968078e-4 = 15.872309
#   half width = s sqrt(2 (1 + r)/r (0.5 ln(1 + r) - ln 0.05))
#              = 0.1 sqrt(2.126006 * (1.412836 + 2.995732)) = 0.1 * 3.061477 = 0.306148
# Degradation D = 1 (higher is better), bounds [0.693852, 1.306148].
#   absolute 0.5: lower 0.693852 > 0.5  -> harmed  -> ROLLBACK
#   absolute 1.0: 0.693852 < 1.0 < 1.306148 -> neither -> CONTINUE at the last stage
#   absolute 1.5: upper 1.306148 < 1.5 -> cleared -> SHIP (the primary wins)
# Read as relative, 0.5 would be 50 %: D = 1/30 = 3.33 %, relative SE
#   sqrt(0.005/900 + 29^2 * 0.005/30^4) = 0.0032782, bounds 0.033333 -+ 0.010036 -> cleared.

N = 20_000
RULES_SPEC = ExperimentSpec(
    arms=(Arm("control", 0.5), Arm("treatment", 0.5)),
    stages=(Stage(50, 1_000), Stage(100, 1_000)),
    primary_metric="conversion",
    sequential_tuning_n=N,
)


def _dwell(mean: float, sd: float = 10.0) -> SampleStats:
    total = N * mean
    return SampleStats(N, total, sd**2 * (N - 1) + total * total / N)


def _observations() -> dict[str, Any]:
    return {
        "arm_counts": {"control": N, "treatment": N},
        "metric_stats": {
            "conversion": {
                "control": SampleStats.from_proportion(2_000, N),  # 10 %
                "treatment": SampleStats.from_proportion(2_400, N),  # 12 %: the primary wins
            },
            "dwell_time": {"control": _dwell(30.0), "treatment": _dwell(29.0)},
        },
    }


@pytest.mark.parametrize(
    ("tolerance", "kind", "harmed", "cleared", "action"),
    [
        (0.5, ToleranceKind.ABSOLUTE, True, False, Action.ROLLBACK),
        (1.0, ToleranceKind.ABSOLUTE, False, False, Action.CONTINUE),
        (1.5, ToleranceKind.ABSOLUTE, False, True, Action.SHIP),
        (0.5, ToleranceKind.RELATIVE, False, True, Action.SHIP),
    ],
)
def test_an_absolute_tolerance_harms_and_clears_as_computed_by_hand(
    tolerance: float, kind: ToleranceKind, harmed: bool, cleared: bool, action: Action
) -> None:
    spec = replace(RULES_SPEC, guardrails=(Guardrail("dwell_time", tolerance, kind),))
    result = evaluate(spec, stage_index=1, elapsed=timedelta(days=1), **_observations())
    guardrail = next(m for m in result.metrics if m.role is MetricRole.GUARDRAIL)
    harm = guardrail.harm
    assert harm is not None and harm.tolerance_kind is kind
    if kind is ToleranceKind.ABSOLUTE:
        assert harm.degradation == pytest.approx(1.0)
        assert (round(harm.lower_bound, 6), round(harm.upper_bound, 6)) == (0.693852, 1.306148)
    else:
        assert harm.degradation == pytest.approx(1 / 30)
        assert harm.upper_bound == pytest.approx(1 / 30 + 0.010036, abs=1e-6)
    assert (harm.harmed, harm.cleared) == (harmed, cleared)
    assert result.action is action
    if harmed:
        assert "guardrail dwell_time degraded by 1;" in result.reasons[0]
        assert "lower bound 0.6939 > tolerance 0.5" in result.reasons[0]
