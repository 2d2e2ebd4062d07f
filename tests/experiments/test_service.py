"""ExperimentService: bad input is refused naming the problem, the lifecycle is recorded,
widening a stage never moves an exposed subject, reports and charts come from stored data."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tacit.experiments.errors import ExperimentConflict, SpecError
from tacit.experiments.report import render_chart
from tacit.experiments.rules import Guardrail, Stage
from tacit.experiments.service import ArmConfig, ExperimentDefinition, ExperimentService, ExperimentState
from tacit.experiments.stats import SampleStats, Status, relative_lift
from tacit.server.auth import Role
from tacit.store.db import Database
from tacit.store.schema import Decision
from tacit.v1 import experiment_pb2, experiment_pb2_grpc
from tests.conftest import ServerHandle


def _details(error: grpc.RpcError) -> tuple[str, list[str]]:
    """(ErrorInfo reason, BadRequest fields) from the rich status."""
    reason, fields = "", []
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    reason = info.reason
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    fields = [v.field for v in bad.field_violations]
    return reason, fields


def _message(experiment_id: str = "exp-a", **changes: Any) -> experiment_pb2.CreateExperimentRequest:
    experiment = experiment_pb2.Experiment(
        slot="home",
        arms=[
            experiment_pb2.Arm(name="control", policy="static:first", weight=0.5),
            experiment_pb2.Arm(name="treatment", policy="uniform", weight=0.5),
        ],
        primary_metric="click_through",
        secondary_metrics=["dwell_time"],
        guardrails=[experiment_pb2.Guardrail(metric="conversion", tolerance=0.05)],
        stages=[experiment_pb2.Stage(percent=p, min_sample=10) for p in (1, 5, 25, 50, 100)],
    )
    for name, value in changes.items():
        if isinstance(value, list):
            del getattr(experiment, name)[:]
            getattr(experiment, name).extend(value)
        else:
            setattr(experiment, name, value)
    return experiment_pb2.CreateExperimentRequest(experiment_id=experiment_id, experiment=experiment)


def _weights(*weights: float) -> list[experiment_pb2.Arm]:
    return [experiment_pb2.Arm(name=f"arm{i}", policy="uniform", weight=w) for i, w in enumerate(weights)]


BAD_CREATES = [
    pytest.param(_message(arms=_weights(0.5, 0.6)), "experiment.arms", "sum to 1", id="weights-not-summing"),
    pytest.param(_message(arms=_weights(50, 50)), "experiment.arms", "sum to 1", id="percent-weights"),
    pytest.param(
        _message(primary_metric="revenue"),
        "experiment.primary_metric",
        "unknown metric",
        id="unknown-primary",
    ),
    pytest.param(
        _message(secondary_metrics=["scroll_rate"]),
        "experiment.secondary_metrics[0]",
        "unknown metric",
        id="unknown-secondary",
    ),
    pytest.param(
        _message(guardrails=[experiment_pb2.Guardrail(metric="latency", tolerance=0.1)]),
        "experiment.guardrails[0].metric",
        "unknown metric",
        id="unknown-guardrail",
    ),
    pytest.param(
        _message(stages=[experiment_pb2.Stage(percent=p) for p in (5, 25, 25, 100)]),
        "experiment.stages[2].percent",
        "strictly increase",
        id="stages-not-increasing",
    ),
    pytest.param(
        _message(stages=[experiment_pb2.Stage(percent=p) for p in (50, 10, 100)]),
        "experiment.stages[1].percent",
        "strictly increase",
        id="stages-decreasing",
    ),
    pytest.param(
        _message(stages=[experiment_pb2.Stage(percent=p) for p in (5, 50)]),
        "experiment.stages",
        "last stage",
        id="no-100",
    ),
    pytest.param(
        _message(stages=[experiment_pb2.Stage(percent=100, min_sample=-1)]),
        "experiment.stages[0].min_sample",
        "negative",
        id="negative-min-sample",
    ),
    pytest.param(
        _message(
            arms=[
                experiment_pb2.Arm(name="control", policy="magic", weight=0.5),
                experiment_pb2.Arm(name="t", policy="uniform", weight=0.5),
            ]
        ),
        "experiment.arms[0].policy",
        "must be one of",
        id="unknown-policy",
    ),
    pytest.param(_message(slot="nowhere"), "experiment.slot", "not a configured slot", id="unknown-slot"),
    pytest.param(_message("Bad Id!"), "experiment_id", "must match", id="bad-id"),
    pytest.param(
        _message(control_arm="nobody"), "experiment.control_arm", "not one of the arms", id="bad-control"
    ),
]


@pytest.fixture
def experimenter(start_server: Callable[..., ServerHandle]) -> tuple[ServerHandle, Any, Any]:
    handle = start_server(learner={"enabled": False}, experiments={"refresh_seconds": 0.05})
    return (
        handle,
        experiment_pb2_grpc.ExperimentServiceStub(handle.channel),
        handle.metadata(Role.EXPERIMENTER),
    )


@pytest.mark.parametrize(("request_message", "field", "words"), BAD_CREATES)
def test_bad_experiment_is_refused_naming_the_field(
    experimenter: tuple[ServerHandle, Any, Any],
    request_message: experiment_pb2.CreateExperimentRequest,
    field: str,
    words: str,
) -> None:
    _, stub, md = experimenter
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateExperiment(request_message, metadata=md)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reason, fields = _details(caught.value)
    assert fields == [field]
    assert words in caught.value.details()
    # Nothing was half-written.
    listed = stub.ListExperiments(experiment_pb2.ListExperimentsRequest(), metadata=md)
    assert list(listed.experiments) == []


def test_overlapping_experiment_on_a_running_slot_is_refused(
    experimenter: tuple[ServerHandle, Any, Any],
) -> None:
    _, stub, md = experimenter
    stub.CreateExperiment(_message("first"), metadata=md)
    stub.CreateExperiment(_message("second"), metadata=md)  # drafts do not hold the slot
    stub.StartExperiment(experiment_pb2.ExperimentActionRequest(name="experiments/first"), metadata=md)
    for call in (
        lambda: stub.CreateExperiment(_message("third"), metadata=md),
        lambda: stub.StartExperiment(
            experiment_pb2.ExperimentActionRequest(name="experiments/second"), metadata=md
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert _details(caught.value)[0] == "SLOT_OCCUPIED"
        # The holder is named; the slot (a value of this request) is not echoed.
        assert "experiment first" in caught.value.details() and "home" not in caught.value.details()
    # Once the first is concluded, the slot is free again.
    stub.ConcludeExperiment(experiment_pb2.ExperimentActionRequest(name="experiments/first"), metadata=md)
    started = stub.StartExperiment(
        experiment_pb2.ExperimentActionRequest(name="experiments/second"), metadata=md
    )
    assert started.state == experiment_pb2.EXPERIMENT_STATE_RUNNING


def test_advance_without_a_passing_report_is_refused(experimenter: tuple[ServerHandle, Any, Any]) -> None:
    _, stub, md = experimenter
    stub.CreateExperiment(_message(), metadata=md)
    action = experiment_pb2.ExperimentActionRequest(name="experiments/exp-a")
    with pytest.raises(grpc.RpcError) as caught:
        stub.AdvanceExperiment(action, metadata=md)  # a draft
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "draft" in caught.value.details()
    stub.StartExperiment(action, metadata=md)
    with pytest.raises(grpc.RpcError) as caught:
        stub.AdvanceExperiment(action, metadata=md)  # running, no evidence
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _details(caught.value)[0] == "REPORT_NOT_PASSING"
    assert "passing report" in caught.value.details() and "min sample" in caught.value.details()
    got = stub.GetExperiment(experiment_pb2.GetExperimentRequest(name="experiments/exp-a"), metadata=md)
    assert got.stage_index == 0 and got.exposure_percent == 1


def test_lifecycle_is_recorded_with_actor_and_idempotent(experimenter: tuple[ServerHandle, Any, Any]) -> None:
    handle, stub, md = experimenter
    created = stub.CreateExperiment(_message(), metadata=md)
    assert created.name == "experiments/exp-a" and created.state == experiment_pb2.EXPERIMENT_STATE_DRAFT
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateExperiment(_message(), metadata=md)
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    name = "experiments/exp-a"
    stub.StartExperiment(
        experiment_pb2.ExperimentActionRequest(name=name, request_id="start-0001"), metadata=md
    )
    stub.PauseExperiment(experiment_pb2.ExperimentActionRequest(name=name, reason="holiday"), metadata=md)
    # A retried start with the same request id changes nothing (it stays paused).
    again = stub.StartExperiment(
        experiment_pb2.ExperimentActionRequest(name=name, request_id="start-0001"), metadata=md
    )
    assert again.state == experiment_pb2.EXPERIMENT_STATE_PAUSED
    stub.StartExperiment(experiment_pb2.ExperimentActionRequest(name=name), metadata=md)
    stub.RollbackExperiment(experiment_pb2.ExperimentActionRequest(name=name, reason="by hand"), metadata=md)
    with pytest.raises(grpc.RpcError) as caught:
        stub.PauseExperiment(experiment_pb2.ExperimentActionRequest(name=name), metadata=md)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    stub.ConcludeExperiment(experiment_pb2.ExperimentActionRequest(name=name), metadata=md)
    history = stub.ListExperimentChanges(experiment_pb2.ListExperimentChangesRequest(name=name), metadata=md)
    steps = [(c.action, c.actor) for c in history.changes]
    assert steps == [
        ("create", "experimenter"),
        ("start", "experimenter"),
        ("pause", "experimenter"),
        ("resume", "experimenter"),
        ("rollback", "experimenter"),
        ("conclude", "experimenter"),
    ]
    pause = history.changes[2]
    assert pause.reason == "holiday" and pause.HasField("report") and pause.report.summary
    assert all(c.change_time.seconds > 0 for c in history.changes)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetExperiment(experiment_pb2.GetExperimentRequest(name="experiments/missing"), metadata=md)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetExperiment(
            experiment_pb2.GetExperimentRequest(name="experiments/exp-a"),
            metadata=handle.metadata(Role.SERVICE),
        )
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_list_pages_through_every_experiment(experimenter: tuple[ServerHandle, Any, Any]) -> None:
    _, stub, md = experimenter
    for index in range(7):
        stub.CreateExperiment(_message(f"exp-{index}"), metadata=md)
    seen, token = [], ""
    while True:
        page = stub.ListExperiments(
            experiment_pb2.ListExperimentsRequest(page_size=3, page_token=token), metadata=md
        )
        seen += [e.name for e in page.experiments]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"experiments/exp-{i}" for i in range(7)]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListExperiments(experiment_pb2.ListExperimentsRequest(page_token="%%%"), metadata=md)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---------------------------------------------------------------------- the service directly


def _definition(**changes: Any) -> ExperimentDefinition:
    values: dict[str, Any] = dict(
        experiment_id="widen",
        slot="home",
        arms=(ArmConfig("control", "static:first", 0.5), ArmConfig("treatment", "uniform", 0.5)),
        primary_metric="click_through",
        stages=(Stage(1, 0), Stage(5, 0), Stage(25, 0), Stage(50, 0), Stage(100, 0)),
        guardrails=(Guardrail("conversion", 0.05),),
    )
    values.update(changes)
    return ExperimentDefinition(**values)


@pytest.fixture
def service(database_url: str) -> ExperimentService:
    db = Database.open(database_url)
    yield ExperimentService(db, slots={"home"}, refresh_seconds=3600)
    db.dispose()


def _force_advance(service: ExperimentService, experiment_id: str) -> None:
    """Moves to the next stage as the rules would (the evidence is not the point here)."""
    from tacit.store.schema import ExperimentRecord

    with service.db.transaction() as session:
        row = session.get(ExperimentRecord, experiment_id)
        assert row is not None
        row.stage_index += 1
    service.refresh_routes()


def test_widening_a_stage_never_moves_an_exposed_subject(service: ExperimentService) -> None:
    service.create(_definition(), "experimenter")
    service.start("widen", "experimenter")
    subjects = [f"pseudonym-{i}" for i in range(20_000)]
    exposed: dict[str, str] = {}
    for stage, percent in enumerate((1, 5, 25, 50, 100)):
        if stage:
            _force_advance(service, "widen")
        assert service.get("widen").exposure_percent == percent
        now = {}
        for subject in subjects:
            assignment = service.assigner("home", subject)
            if assignment is not None:
                assert assignment.experiment_id == "widen"
                assert (
                    assignment.policy == {"control": "static:first", "treatment": "uniform"}[assignment.arm]
                )
                now[subject] = assignment.arm
        # Everyone exposed before is still exposed, in the same arm.
        assert all(now.get(subject) == arm for subject, arm in exposed.items())
        assert abs(len(now) / len(subjects) - percent / 100) < 0.01
        exposed = now
    arms = list(exposed.values())
    assert abs(arms.count("control") / len(arms) - 0.5) < 0.02
    # Rolled back: everybody gets control (and its policy); concluded: nobody is assigned.
    service.rollback("widen", "experimenter")
    assert {service.assigner("home", s).arm for s in subjects[:500]} == {"control"}  # type: ignore[union-attr]
    service.conclude("widen", "experimenter")
    assert all(service.assigner("home", s) is None for s in subjects[:500])


def test_paused_experiment_exposes_nobody_and_other_slots_are_untouched(service: ExperimentService) -> None:
    service.create(_definition(stages=(Stage(100, 0),)), "experimenter")
    service.start("widen", "experimenter")
    assert service.assigner("home", "someone") is not None
    assert service.assigner("other", "someone") is None
    service.pause("widen", "experimenter")
    assert service.assigner("home", "someone") is None
    assert service.get("widen").state is ExperimentState.PAUSED


def _decision(event_id: str, subject: str, arm: str, reward: float | None, at: datetime) -> Decision:
    return Decision(
        event_id=event_id,
        slot="home",
        subject=subject,
        arm=arm,
        experiment_id="widen",
        policy="uniform",
        model_version="uniform",
        context={},
        candidate_ids=["a", "b"],
        candidate_features=[{}, {}],
        probabilities=[0.5, 0.5],
        chosen_index=0,
        created_at=at,
        reward_deadline=at + timedelta(seconds=1),
        deferred=False,
        reward=reward,
        reward_count=0 if reward is None else 1,
        learn_state=0,
    )


def test_report_numbers_come_from_the_stored_decisions(service: ExperimentService, tmp_path: Path) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    service.create(_definition(stages=(Stage(100, 0),)), "experimenter", now=start)
    service.start("widen", "experimenter", now=start)
    # control: 40 of 100 clicked; treatment: 55 of 100; 10 treatment decisions still in their window.
    with service.db.transaction() as session:
        for i in range(100):
            session.add(_decision(f"c-{i:04d}", f"sc{i}", "control", 1.0 if i < 40 else None, start))
            session.add(_decision(f"t-{i:04d}", f"st{i}", "treatment", 1.0 if i < 55 else None, start))
        for i in range(10):
            late = start + timedelta(minutes=10)
            session.add(_decision(f"w-{i:04d}", f"sw{i}", "treatment", None, late))
    report = service.report("widen", now=start + timedelta(minutes=10, seconds=0.5))
    primary = report.primary
    assert primary is not None
    assert dict(report.arm_counts) == {"control": 100, "treatment": 110}
    assert (primary.control_count, primary.treatment_count) == (100, 100)  # pending decisions left out
    assert (primary.control_mean, primary.treatment_mean) == (0.4, 0.55)
    expected = relative_lift(SampleStats.from_proportion(40, 100), SampleStats.from_proportion(55, 100))
    assert primary.relative_lift == pytest.approx(expected.estimate)
    assert primary.relative_ci_lower == pytest.approx(expected.ci_lower)
    # Each interval beside the p of its own test (the relative p is the delta-method Welch t).
    assert primary.relative_p_value == pytest.approx(expected.p_value)
    # 40/100 -> 55/100: the absolute difference is significant, the relative lift (whose CI
    # contains 0) is not; the old report printed the absolute p beside the relative CI.
    assert primary.relative_ci_lower < 0 < primary.absolute_ci_lower
    assert 0 < primary.absolute_p_value < 0.05 < primary.relative_p_value
    assert primary.always_valid_p_value > primary.absolute_p_value
    assert "click_through" in report.summary
    # Reports round-trip through their stored JSON form (NaN survives as null).
    from tacit.experiments.report import Report

    again = Report.from_dict(report.to_dict())
    assert again.metrics[0].relative_lift == pytest.approx(primary.relative_lift)
    guard = again.metrics[1]
    assert guard.role == "guardrail" and guard.control_mean == 0 and math.isnan(guard.relative_lift)
    service.evaluate_running(now=start + timedelta(minutes=11))
    history, _ = service.history("widen", include_evaluations=True)
    assert [h.action for h in history] == ["create", "start", "evaluate"]
    path = render_chart(history, tmp_path / "chart.png")
    assert path.stat().st_size > 1000


def test_spec_errors_and_conflicts_in_the_domain(service: ExperimentService) -> None:
    with pytest.raises(SpecError) as caught:
        service.create(
            _definition(arms=(ArmConfig("control", "uniform", 0.7), ArmConfig("t", "uniform", 0.7))), "x"
        )
    assert caught.value.field == "experiment.arms"
    service.create(_definition(), "x")
    with pytest.raises(ExperimentConflict) as conflict:
        service.report("widen")
    assert conflict.value.reason == "NOT_STARTED"


def test_relative_lift_of_a_constant_zero_treatment_falls_back_to_the_absolute_error() -> None:
    # Control 10/100: v_c = 0.1*0.9/100 = 9e-4 (gbstats' p(1-p), changed on purpose from the
    # unbiased 9.0909e-4), SE(d) = 0.03; /0.1 = 0.3.
    result = relative_lift(SampleStats.from_proportion(10, 100), SampleStats.from_proportion(0, 100))
    assert result.status is Status.OK and result.estimate == -1
    assert round(result.std_error, 5) == 0.3
    assert result.ci_upper < 0
