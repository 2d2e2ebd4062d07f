"""Layers: experiments on one slot with disjoint traffic ranges run side by side, a subject's
slot-level layer bucket puts it in at most one of them, overlapping ranges are refused, and
specs stored before ranges existed keep assigning exactly as before."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tacit.cli import main
from tacit.cli.experiment import _traffic
from tacit.experiments.assignment import BUCKETS, assign, layer_bucket
from tacit.experiments.errors import ExperimentConflict, SpecError
from tacit.experiments.rules import Guardrail, Stage
from tacit.experiments.service import ArmConfig, ExperimentDefinition, ExperimentService
from tacit.server.auth import Role
from tacit.server.converters.experiment import definition_from_proto
from tacit.store.db import Database
from tacit.store.schema import Decision, ExperimentRecord
from tacit.v1 import decision_pb2, decision_pb2_grpc, experiment_pb2, experiment_pb2_grpc
from tests.conftest import ServerHandle

SUBJECTS = [f"pseudonym-{i}" for i in range(20_000)]
WIDENING = (Stage(1, 0), Stage(5, 0), Stage(25, 0), Stage(50, 0), Stage(100, 0))


def _definition(
    experiment_id: str, traffic: tuple[float, float] | None = None, **changes: Any
) -> ExperimentDefinition:
    values: dict[str, Any] = dict(
        experiment_id=experiment_id,
        slot="home",
        arms=(ArmConfig("control", "static:first", 0.5), ArmConfig("treatment", "uniform", 0.5)),
        primary_metric="click_through",
        stages=(Stage(100, 0),),
        guardrails=(Guardrail("conversion", 0.05),),
    )
    if traffic is not None:
        values["traffic_start"], values["traffic_end"] = traffic
    values.update(changes)
    return ExperimentDefinition(**values)


@pytest.fixture
def service(database_url: str) -> Iterator[ExperimentService]:
    db = Database.open(database_url)
    yield ExperimentService(db, slots={"home", "other"}, refresh_seconds=3600)
    db.dispose()


def _in(subject: str, traffic: tuple[float, float], slot: str = "home") -> bool:
    """The expected membership, straight from the documented rule."""
    return traffic[0] * BUCKETS / 100 <= layer_bucket(subject, slot) < traffic[1] * BUCKETS / 100


def _force_advance(service: ExperimentService, experiment_id: str) -> None:
    """Moves to the next stage as the rules would (the evidence is not the point here)."""
    with service.db.transaction() as session:
        row = session.get(ExperimentRecord, experiment_id)
        assert row is not None
        row.stage_index += 1
    service.refresh_routes()


# ---------------------------------------------------------------------- the service directly


def test_disjoint_experiments_share_a_slot_and_never_a_subject(service: ExperimentService) -> None:
    ranges = {"left": (0.0, 30.0), "right": (50.0, 100.0)}  # [30, 50) belongs to nobody
    for experiment_id, traffic in ranges.items():
        service.create(_definition(experiment_id, traffic), "experimenter")
        service.start(experiment_id, "experimenter")
    assert {e.experiment_id: e.definition.traffic for e in service.list_experiments()[0]} == ranges
    counts = {"left": 0, "right": 0, None: 0}
    arms: dict[str, list[str]] = {"left": [], "right": []}
    for subject in SUBJECTS:
        assignment = service.assigner("home", subject)
        owner = assignment.experiment_id if assignment is not None else None
        # At most one experiment, and exactly the one whose range holds the layer bucket.
        expected = next((e for e, traffic in ranges.items() if _in(subject, traffic)), None)
        assert owner == expected, subject
        counts[owner] += 1
        if assignment is not None:
            arms[assignment.experiment_id].append(assignment.arm)
        assert service.assigner("other", subject) is None
    shares = {key: count / len(SUBJECTS) for key, count in counts.items()}
    assert shares["left"] == pytest.approx(0.30, abs=0.015)
    assert shares["right"] == pytest.approx(0.50, abs=0.015)
    assert shares[None] == pytest.approx(0.20, abs=0.015)
    # Inside each range the arm split is the experiment's own (50/50).
    for names in arms.values():
        assert names.count("control") / len(names) == pytest.approx(0.5, abs=0.03)


def test_overlapping_range_is_refused_naming_the_other_experiment(service: ExperimentService) -> None:
    service.create(_definition("left", (0, 50)), "experimenter")
    service.create(_definition("middle", (40, 60)), "experimenter")  # drafts hold nothing
    service.create(_definition("whole"), "experimenter")
    service.start("left", "experimenter")
    for attempt in (
        lambda: service.start("middle", "experimenter"),
        lambda: service.create(_definition("late", (49.5, 70)), "experimenter"),
        lambda: service.start("whole", "experimenter"),
    ):
        with pytest.raises(ExperimentConflict) as caught:
            attempt()
        assert caught.value.reason == "SLOT_OCCUPIED"
        # The holder and its range are named; the slot and range of this request never are.
        assert "experiment left" in caught.value.message and "home" not in caught.value.message
    with pytest.raises(ExperimentConflict) as caught:
        service.start("middle", "experimenter")
    assert "[0%, 50%)" in caught.value.message and "40%" not in caught.value.message
    # Half-open ranges: [50, 100) only touches [0, 50) and may run beside it; another slot is free.
    service.create(_definition("right", (50, 100)), "experimenter")
    assert service.start("right", "experimenter").state.value == "running"
    service.create(_definition("elsewhere", slot="other"), "experimenter")
    service.start("elsewhere", "experimenter")
    # Paused and rolled back experiments still hold their range; concluded ones free it.
    service.pause("left", "experimenter")
    with pytest.raises(ExperimentConflict):
        service.start("middle", "experimenter")
    service.rollback("left", "experimenter")
    with pytest.raises(ExperimentConflict):
        service.start("middle", "experimenter")
    service.conclude("left", "experimenter")
    with pytest.raises(ExperimentConflict) as caught:
        service.start("middle", "experimenter")  # [50, 60) is still "right"'s
    assert "experiment right" in caught.value.message and "[50%, 100%)" in caught.value.message
    service.create(_definition("low", (0, 50)), "experimenter")
    assert service.start("low", "experimenter").state.value == "running"


@pytest.mark.parametrize(
    ("traffic", "field"),
    [
        pytest.param((-1, 50), "experiment.traffic_start", id="negative-start"),
        pytest.param((100, 100), "experiment.traffic_start", id="start-100"),
        pytest.param((math.nan, 50), "experiment.traffic_start", id="nan-start"),
        pytest.param((0, 101), "experiment.traffic_end", id="end-over-100"),
        pytest.param((50, 50), "experiment.traffic_end", id="empty"),
        pytest.param((60, 40), "experiment.traffic_end", id="reversed"),
        pytest.param((10, 10.001), "experiment.traffic_end", id="under-one-bucket"),
    ],
)
def test_invalid_range_is_refused_naming_the_field(
    service: ExperimentService, traffic: tuple[float, float], field: str
) -> None:
    with pytest.raises(SpecError) as caught:
        service.create(_definition("bad", traffic), "experimenter")
    assert caught.value.field == field
    assert service.list_experiments()[0] == []


def test_widening_a_stage_inside_a_layer_never_moves_an_exposed_subject(service: ExperimentService) -> None:
    traffic = (20.0, 70.0)
    service.create(_definition("widen", traffic, stages=WIDENING), "experimenter")
    service.start("widen", "experimenter")
    service.create(_definition("neighbour", (70, 100)), "experimenter")
    service.start("neighbour", "experimenter")
    exposed: dict[str, str] = {}
    for stage, percent in enumerate(s.percent for s in WIDENING):
        if stage:
            _force_advance(service, "widen")
        now: dict[str, str] = {}
        for subject in SUBJECTS:
            assignment = service.assigner("home", subject)
            if assignment is not None and assignment.experiment_id == "widen":
                assert _in(subject, traffic)
                now[subject] = assignment.arm
        # Everyone exposed before is still exposed, in the same arm; the neighbour never is.
        assert all(now.get(subject) == arm for subject, arm in exposed.items())
        # The stage percent is a share of the range (half the slot here).
        assert len(now) / len(SUBJECTS) == pytest.approx(0.5 * percent / 100, abs=0.01)
        exposed = now
    assert all(service.assigner("home", s).experiment_id == "widen" for s in exposed)  # type: ignore[union-attr]


def test_old_specs_without_a_range_assign_as_before(service: ExperimentService) -> None:
    service.create(_definition("old", stages=WIDENING[:2] + WIDENING[4:]), "experimenter")
    service.start("old", "experimenter")
    _force_advance(service, "old")  # 5 %
    with service.db.transaction() as session:
        row = session.get(ExperimentRecord, "old")
        assert row is not None
        spec = dict(row.spec)
        assert (spec.pop("traffic_start"), spec.pop("traffic_end")) == (0.0, 100.0)
        row.spec = spec  # as stored before ranges existed
        salt = row.salt
    service.refresh_routes()
    stored = service.get("old")
    assert stored.definition.traffic == (0.0, 100.0)
    arms = (("control", 0.5), ("treatment", 0.5))
    for subject in SUBJECTS:
        assignment = service.assigner("home", subject)
        before = assign(subject, salt, arms, 5)  # the assignment with no layers at all
        assert (assignment.arm if assignment is not None else None) == before
    # It holds the whole slot, so any range overlaps it.
    with pytest.raises(ExperimentConflict) as caught:
        service.create(_definition("ranged", (90, 100)), "experimenter")
    assert "experiment old" in caught.value.message and "[0%, 100%)" in caught.value.message
    assert "90%" not in caught.value.message


def test_range_round_trips_through_proto_and_the_cli_parser() -> None:
    whole = definition_from_proto("x", experiment_pb2.Experiment(slot="home"))  # 0/0 = unset
    assert whole.traffic == (0.0, 100.0)
    ranged = definition_from_proto(
        "x", experiment_pb2.Experiment(slot="home", traffic_start=25, traffic_end=75)
    )
    assert ranged.traffic == (25.0, 75.0)
    assert ExperimentDefinition.from_json("x", "home", ranged.to_json()).traffic == (25.0, 75.0)
    assert _traffic("0:50") == (0.0, 50.0)
    assert _traffic("12.5:37.5") == (12.5, 37.5)
    for bad in ("50", "a:b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _traffic(bad)


# ---------------------------------------------------------------------- through the real server


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


def _create(experiment_id: str, traffic: tuple[float, float]) -> experiment_pb2.CreateExperimentRequest:
    return experiment_pb2.CreateExperimentRequest(
        experiment_id=experiment_id,
        experiment=experiment_pb2.Experiment(
            slot="home",
            arms=[
                experiment_pb2.Arm(name="control", policy="static:first", weight=0.5),
                experiment_pb2.Arm(name="treatment", policy="uniform", weight=0.5),
            ],
            primary_metric="click_through",
            stages=[experiment_pb2.Stage(percent=100)],
            traffic_start=traffic[0],
            traffic_end=traffic[1],
        ),
    )


def test_rank_logs_the_experiment_whose_range_holds_the_subject(
    start_server: Callable[..., ServerHandle], capsys: pytest.CaptureFixture[str]
) -> None:
    handle = start_server(learner={"enabled": False}, experiments={"refresh_seconds": 0.05})
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    md = handle.metadata(Role.EXPERIMENTER)
    created = stub.CreateExperiment(_create("left", (0, 40)), metadata=md)
    assert (created.traffic_start, created.traffic_end) == (0, 40)
    # The second layer through the CLI.
    base = ["experiment", "--target", handle.target, "--data-dir", str(handle.data_dir)]
    create = [
        "create", "right", "--slot", "home",
        "--arm", "control:static:first:0.5", "--arm", "treatment:uniform:0.5",
        "--primary", "click_through", "--stage", "100", "--traffic", "40:100",
    ]  # fmt: skip
    assert main(base + create) == 0
    assert '"traffic_start": 40.0' in capsys.readouterr().out
    for name in ("left", "right"):
        stub.StartExperiment(experiment_pb2.ExperimentActionRequest(name=f"experiments/{name}"), metadata=md)
    # An overlapping range is refused naming the holder; a bad range naming the field.
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateExperiment(_create("overlap", (30, 50)), metadata=md)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _details(caught.value)[0] == "SLOT_OCCUPIED"
    assert "experiment left" in caught.value.details() and "[0%, 40%)" in caught.value.details()
    assert "30%" not in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateExperiment(_create("reversed", (60, 20)), metadata=md)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _details(caught.value)[1] == ["experiment.traffic_end"]
    got = stub.GetExperiment(experiment_pb2.GetExperimentRequest(name="experiments/right"), metadata=md)
    assert (got.traffic_start, got.traffic_end) == (40, 100)

    rank = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    service_md = handle.metadata(Role.SERVICE)
    arms = {}
    for i in range(300):
        response = rank.Rank(
            decision_pb2.RankRequest(
                slot="home",
                subject_id=f"visitor-{i}",
                candidates=[decision_pb2.Candidate(id=cid) for cid in ("a", "b")],
            ),
            metadata=service_md,
        )
        arms[response.event_id] = response.arm
    runtime = handle.running.runtime
    runtime.decision_log.flush()
    # Event ids are stored as keyed digests of the ids Rank returned.
    arms = {runtime.keyring.digest(event_id): arm for event_id, arm in arms.items()}
    with runtime.db.transaction() as session:
        logged = [
            (row.event_id, row.subject, row.experiment_id, row.arm)
            for row in session.query(Decision).filter(Decision.event_id.in_(list(arms)))
        ]
    assert len(logged) == 300
    seen = {"left": 0, "right": 0}
    for event_id, subject, experiment_id, arm in logged:
        # The logged subject is the pseudonym; its layer bucket on the slot decides the experiment.
        assert subject != "" and not subject.startswith("visitor-")
        expected = "left" if layer_bucket(subject, "home") < 4000 else "right"
        assert experiment_id == expected, (subject, layer_bucket(subject, "home"))
        assert arm == arms[event_id] and arm in {"control", "treatment"}
        seen[experiment_id] += 1
    assert 0.25 < seen["left"] / 300 < 0.55 and seen["left"] + seen["right"] == 300
