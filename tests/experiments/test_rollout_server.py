"""Simulated rollouts through the real server: Rank, Reward and TrackEvents over gRPC,
the experiment lifecycle over ExperimentService, the rules run by the server's evaluator.

A tiny site with known truth: each item has a click probability and a conversion
probability given a click. `static:first` always shows the first candidate, `uniform`
shows each with equal probability, so every arm's true click and conversion rates are
known and the tests can say what the rules must conclude.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from tacit.server.auth import Role
from tacit.store.schema import ExperimentChange
from tacit.v1 import (
    decision_pb2,
    decision_pb2_grpc,
    event_pb2,
    event_pb2_grpc,
    experiment_pb2,
    experiment_pb2_grpc,
)
from tests.conftest import ServerHandle

REWARD_WINDOW = 0.3  # seconds; a decision without a click counts the default reward 0 after it


@dataclass(frozen=True)
class Item:
    item_id: str
    click: float
    convert_given_click: float


class Site:
    """Drives visitors (one visit per new subject) through Rank, Reward and TrackEvents."""

    def __init__(self, handle: ServerHandle, items: tuple[Item, ...], seed: int) -> None:
        self.items = {item.item_id: item for item in items}
        self.order = [item.item_id for item in items]
        self.rank = decision_pb2_grpc.DecisionServiceStub(handle.channel)
        self.events = event_pb2_grpc.EventServiceStub(handle.channel)
        self.metadata = handle.metadata(Role.SERVICE)
        self.rng = np.random.default_rng(seed)
        self.visitors = 0
        self.arms: dict[str, int] = {}

    def _visit(self, subject: str, click_draw: float, convert_draw: float) -> tuple[str, bool]:
        response = self.rank.Rank(
            decision_pb2.RankRequest(
                slot="home",
                subject_id=subject,
                candidates=[decision_pb2.Candidate(id=cid) for cid in self.order],
            ),
            metadata=self.metadata,
        )
        item = self.items[response.chosen_id]
        converted = False
        if click_draw < item.click:
            self.rank.Reward(
                decision_pb2.RewardRequest(event_id=response.event_id, value=1.0), metadata=self.metadata
            )
            converted = convert_draw < item.convert_given_click
        return response.arm, converted

    def run(self, visits: int) -> None:
        subjects = [f"visitor-{self.visitors + i}" for i in range(visits)]
        self.visitors += visits
        draws = self.rng.random((visits, 2))
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(self._visit, subjects, draws[:, 0], draws[:, 1]))
        conversions = []
        for subject, (arm, converted) in zip(subjects, results, strict=True):
            self.arms[arm] = self.arms.get(arm, 0) + 1
            if converted:
                conversions.append(
                    event_pb2.Event(
                        event_id=f"conv-{uuid.uuid4().hex}", subject_id=subject, event_type="conversion"
                    )
                )
        for start in range(0, len(conversions), 400):
            self.events.TrackEvents(
                event_pb2.TrackEventsRequest(events=conversions[start : start + 400]), metadata=self.metadata
            )


def _experiment(
    experiment_id: str,
    arms: list[tuple[str, str, float]],
    stages: list[tuple[float, int]],
    guardrail_tolerance: float,
    auto_advance: bool = True,
) -> experiment_pb2.CreateExperimentRequest:
    return experiment_pb2.CreateExperimentRequest(
        experiment_id=experiment_id,
        experiment=experiment_pb2.Experiment(
            slot="home",
            arms=[experiment_pb2.Arm(name=n, policy=p, weight=w) for n, p, w in arms],
            primary_metric="click_through",
            guardrails=[experiment_pb2.Guardrail(metric="conversion", tolerance=guardrail_tolerance)],
            stages=[experiment_pb2.Stage(percent=p, min_sample=m) for p, m in stages],
            auto_advance=auto_advance,
        ),
    )


@pytest.fixture
def rollout_server(start_server: Callable[..., ServerHandle]) -> ServerHandle:
    # The rules are run by the test (runtime.experiments.evaluate_running) at known moments;
    # the background evaluator is slowed down so it cannot interleave.
    return start_server(
        slots={"home": {"reward_window_seconds": REWARD_WINDOW}},
        learner={"enabled": False},
        experiments={
            "evaluation_interval_seconds": 3600,
            "refresh_seconds": 0.05,
            "sequential_tuning_n": 1000,
        },
    )


def _evaluate(handle: ServerHandle) -> None:
    time.sleep(REWARD_WINDOW + 0.1)  # reward windows close, decision log flushed
    handle.running.runtime.experiments.evaluate_running()


def _history(handle: ServerHandle, experiment_id: str, evaluations: bool = True) -> list[Any]:
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    response = stub.ListExperimentChanges(
        experiment_pb2.ListExperimentChangesRequest(
            name=f"experiments/{experiment_id}", include_evaluations=evaluations, page_size=1000
        ),
        metadata=handle.metadata(Role.EXPERIMENTER),
    )
    return list(response.changes)


def test_winner_goes_through_every_stage_and_ships(rollout_server: ServerHandle, tmp_path: Path) -> None:
    handle = rollout_server
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    md = handle.metadata(Role.EXPERIMENTER)
    items = (Item("good", 0.40, 0.8), Item("meh", 0.05, 0.3))
    stages = [(20, 100), (40, 150), (70, 200), (100, 300)]
    stub.CreateExperiment(
        _experiment(
            "winner", [("control", "uniform", 0.5), ("treatment", "static:first", 0.5)], stages, 0.25
        ),
        metadata=md,
    )
    stub.StartExperiment(experiment_pb2.ExperimentActionRequest(name="experiments/winner"), metadata=md)
    site = Site(handle, items, seed=11)
    state = experiment_pb2.EXPERIMENT_STATE_RUNNING
    for _ in range(40):
        site.run(200)
        _evaluate(handle)
        experiment = stub.GetExperiment(
            experiment_pb2.GetExperimentRequest(name="experiments/winner"), metadata=md
        )
        state = experiment.state
        if state != experiment_pb2.EXPERIMENT_STATE_RUNNING:
            break
    report = stub.GetExperimentReport(
        experiment_pb2.GetExperimentReportRequest(name="experiments/winner"), metadata=md
    )
    assert state == experiment_pb2.EXPERIMENT_STATE_SHIPPED, (site.visitors, report.summary)

    changes = _history(handle, "winner", evaluations=False)
    steps = [(c.action, c.to_stage_index) for c in changes]
    assert steps == [("create", 0), ("start", 0), ("advance", 1), ("advance", 2), ("advance", 3), ("ship", 3)]
    for change in changes[2:]:
        report = change.report
        assert change.actor == "system"
        assert report.recommended_action in {"ADVANCE", "SHIP"}
        primary = next(m for m in report.metrics if m.role == "primary")
        # The numbers that justified the step: a significant always-valid win and enough subjects.
        assert primary.always_valid_p_value < 0.05 and primary.always_valid_ci_low > 0
        minimum = stages[change.from_stage_index][1]
        assert min(c.subjects for c in report.arm_counts) >= minimum
        assert "wins" in report.summary
    ship = changes[-1].report
    guard = next(m for m in ship.metrics if m.role == "guardrail")
    assert guard.cleared and not guard.harmed  # a passing report: the guardrail shown within tolerance

    # Once shipped, every subject is served by the treatment.
    arms_before = dict(site.arms)
    site.run(40)
    assert site.arms.get("treatment", 0) - arms_before.get("treatment", 0) == 40

    # The chart of the stored history.
    from tacit.experiments.report import render_chart
    from tacit.server.converters.experiment import change_from_proto

    chart = render_chart([change_from_proto(c) for c in _history(handle, "winner")], tmp_path / "winner.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_guardrail_harm_is_rolled_back_in_the_stage_it_is_detected(rollout_server: ServerHandle) -> None:
    handle = rollout_server
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    md = handle.metadata(Role.EXPERIMENTER)
    # Clickbait first: the treatment gets more clicks but nobody converts after the bait.
    items = (Item("bait", 0.45, 0.05), Item("good", 0.30, 0.8))
    stages = [(20, 60), (50, 150), (100, 400)]
    stub.CreateExperiment(
        _experiment("bait", [("control", "uniform", 0.5), ("treatment", "static:first", 0.5)], stages, 0.05),
        metadata=md,
    )
    stub.StartExperiment(experiment_pb2.ExperimentActionRequest(name="experiments/bait"), metadata=md)
    site = Site(handle, items, seed=5)
    for _ in range(30):
        site.run(150)
        _evaluate(handle)
        experiment = stub.GetExperiment(
            experiment_pb2.GetExperimentRequest(name="experiments/bait"), metadata=md
        )
        if experiment.state != experiment_pb2.EXPERIMENT_STATE_RUNNING:
            break
    assert experiment.state == experiment_pb2.EXPERIMENT_STATE_ROLLED_BACK
    assert experiment.exposure_percent == 0

    history = _history(handle, "bait")
    evaluations = [c for c in history if c.action == "evaluate"]
    harmed = [any(m.harmed for m in c.report.metrics if m.role == "guardrail") for c in evaluations]
    first = harmed.index(True)
    assert not any(harmed[:first])  # nothing was detectable before ...
    rollback = next(c for c in history if c.action == "rollback")
    # ... and the rollback happened at that very evaluation, in that stage, by the rules.
    assert rollback.actor == "system"
    assert rollback.from_stage_index == evaluations[first].from_stage_index
    assert rollback.change_time == evaluations[first].change_time
    assert rollback.report.recommended_action == "ROLLBACK"
    assert "guardrail conversion degraded" in rollback.reason
    assert "rolled back" in rollback.report.summary

    # After the rollback all traffic goes to control.
    before = dict(site.arms)
    site.run(40)
    assert site.arms.get("control", 0) - before.get("control", 0) == 40

    # The stored rows carry the same numbers.
    with handle.running.runtime.db.transaction() as session:
        rows = session.query(ExperimentChange).filter_by(experiment_id="bait", action="rollback").all()
    assert len(rows) == 1 and rows[0].report["action"] == "rollback"


def test_skewed_assignment_triggers_srm_and_holds(rollout_server: ServerHandle) -> None:
    handle = rollout_server
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    md = handle.metadata(Role.EXPERIMENTER)
    items = (Item("good", 0.30, 0.8), Item("meh", 0.10, 0.3))
    stub.CreateExperiment(
        _experiment(
            "skewed",
            [("control", "uniform", 0.5), ("treatment", "static:first", 0.5)],
            [(50, 50), (100, 100)],
            0.5,
        ),
        metadata=md,
    )
    stub.StartExperiment(experiment_pb2.ExperimentActionRequest(name="experiments/skewed"), metadata=md)
    # A deliberately broken assignment: a third of the treatment's subjects are logged as control.
    engine = handle.running.runtime.engine
    honest = engine.assigner
    assert honest is not None

    def skewed(slot: str, subject: str):  # type: ignore[no-untyped-def]
        assignment = honest(slot, subject)
        if assignment is not None and assignment.arm == "treatment" and hash(subject) % 3 == 0:
            return type(assignment)(assignment.experiment_id, "control", "uniform")
        return assignment

    engine.assigner = skewed
    site = Site(handle, items, seed=3)
    site.run(800)
    _evaluate(handle)

    report = stub.GetExperimentReport(
        experiment_pb2.GetExperimentReportRequest(name="experiments/skewed"), metadata=md
    )
    assert report.recommended_action == "HOLD_SRM"
    assert report.srm_p_value < 0.001
    assert "mismatch" in report.summary.lower() and "held" in report.summary
    experiment = stub.GetExperiment(
        experiment_pb2.GetExperimentRequest(name="experiments/skewed"), metadata=md
    )
    assert experiment.state == experiment_pb2.EXPERIMENT_STATE_RUNNING and experiment.stage_index == 0
    holds = [c for c in _history(handle, "skewed", evaluations=False) if c.action == "hold"]
    assert len(holds) == 1 and "sample ratio mismatch" in holds[0].reason
    # A manual advance is refused too: the report does not pass.
    with pytest.raises(grpc.RpcError) as caught:
        stub.AdvanceExperiment(experiment_pb2.ExperimentActionRequest(name="experiments/skewed"), metadata=md)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "hold_srm" in caught.value.details()
