"""Challenger arms through the real server: Rank and Reward over gRPC on a real port, real VW,
the learner of the server process, the rollout rules run by the server's evaluator code.

The simulated content site (`tacit.sim.world`) knows every item's click probability, so each
arm's expected click rate is known exactly; `static:first` shows a random item (the site's
candidates come in random order), so its click rate is the site's random rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import vowpalwabbit
from sqlalchemy import select

from tacit.experiments.service import Challenger
from tacit.learning.bandit import SlotModel, build_example
from tacit.learning.registry import (
    PINNED,
    PROMOTED,
    ServingModels,
    bandit_task,
    challenger_task,
    register_checkpoint,
)
from tacit.server.auth import Role
from tacit.server.challengers import promoter
from tacit.sim.client import rank_request, visit_candidates, visit_context
from tacit.sim.world import ContentSite
from tacit.store.candidate_sets import decision_candidates
from tacit.store.db import Database
from tacit.store.schema import Decision, ModelVersion
from tacit.v1 import (
    decision_pb2,
    decision_pb2_grpc,
    experiment_pb2,
    experiment_pb2_grpc,
    model_pb2,
    model_pb2_grpc,
)
from tests.conftest import ServerHandle

REWARD_WINDOW = 0.3
GOOD = "--cb_explore_adf --squarecb -q UA --power_t 0.3"
# A plausible mistake: the action namespace ignored, so every candidate looks the same.
BLIND = "--cb_explore_adf --squarecb --ignore A"


@dataclass
class ArmTally:
    decisions: int = 0
    clicks: int = 0
    expected: float = 0.0  # sum of the chosen items' true click probabilities

    @property
    def click_rate(self) -> float:
        return self.expected / self.decisions if self.decisions else 0.0


@dataclass
class Driver:
    """Visits of the simulated site through Rank and Reward; tallies per arm."""

    handle: ServerHandle
    site: ContentSite
    arms: dict[str, ArmTally] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stub = decision_pb2_grpc.DecisionServiceStub(self.handle.channel)
        self.metadata = self.handle.metadata(Role.SERVICE)
        self.clicks = np.random.default_rng(3)

    def run(self, visits: int) -> None:
        batch = list(self.site.visits(visits))
        draws = self.clicks.random(visits)
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(self._visit, batch, draws))
        for arm, probability, clicked in results:
            tally = self.arms.setdefault(arm, ArmTally())
            tally.decisions += 1
            tally.clicks += clicked
            tally.expected += probability

    def _visit(self, visit: Any, draw: float) -> tuple[str, float, bool]:
        response = self.stub.Rank(
            rank_request("home", visit.subject_id, visit_context(visit), visit_candidates(visit)),
            metadata=self.metadata,
        )
        index = [item.item_id for item in visit.candidates].index(response.chosen_id)
        probability = visit.click_probabilities[index]
        clicked = bool(draw < probability)
        if clicked:
            self.stub.Reward(
                decision_pb2.RewardRequest(event_id=response.event_id, value=1.0), metadata=self.metadata
            )
        return response.arm, probability, clicked


def _start(start_server: Callable[..., ServerHandle], database_url: str, **learner: Any) -> ServerHandle:
    # The rules run when the test calls evaluate_running; the background evaluator waits an hour.
    return start_server(
        database_url,
        slots={"home": {"reward_window_seconds": REWARD_WINDOW}},
        learner={"checkpoint_interval_seconds": 0.2, "reload_interval_seconds": 0.1, **learner},
        experiments={
            "evaluation_interval_seconds": 3600,
            "refresh_seconds": 0.05,
            "sequential_tuning_n": 1000,
        },
    )


def _create(
    handle: ServerHandle,
    experiment_id: str,
    arms: list[tuple[str, str]],
    stages: list[tuple[float, int]],
) -> experiment_pb2_grpc.ExperimentServiceStub:
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    md = handle.metadata(Role.EXPERIMENTER)
    stub.CreateExperiment(
        experiment_pb2.CreateExperimentRequest(
            experiment_id=experiment_id,
            experiment=experiment_pb2.Experiment(
                slot="home",
                arms=[experiment_pb2.Arm(name=name, policy=policy, weight=0.5) for name, policy in arms],
                primary_metric="click_through",
                stages=[experiment_pb2.Stage(percent=p, min_sample=m) for p, m in stages],
                auto_advance=True,
            ),
        ),
        metadata=md,
    )
    stub.StartExperiment(
        experiment_pb2.ExperimentActionRequest(name=f"experiments/{experiment_id}"), metadata=md
    )
    return stub


def _drive_until_decided(
    handle: ServerHandle, stub: experiment_pb2_grpc.ExperimentServiceStub, experiment_id: str, driver: Driver
) -> list[tuple[int, str]]:
    """Runs visits and evaluations until the rules end the experiment; returns (visits, state) per look."""
    md = handle.metadata(Role.EXPERIMENTER)
    looks = []
    for _ in range(40):
        driver.run(200)
        time.sleep(REWARD_WINDOW + 0.1)  # windows close, decisions flushed
        handle.running.runtime.experiments.evaluate_running()
        experiment = stub.GetExperiment(
            experiment_pb2.GetExperimentRequest(name=f"experiments/{experiment_id}"), metadata=md
        )
        looks.append(
            (sum(t.decisions for t in driver.arms.values()), experiment.state, experiment.stage_index)
        )
        if experiment.state != experiment_pb2.EXPERIMENT_STATE_RUNNING:
            break
    return looks


def _changes(handle: ServerHandle, experiment_id: str) -> list[Any]:
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    return list(
        stub.ListExperimentChanges(
            experiment_pb2.ListExperimentChangesRequest(name=f"experiments/{experiment_id}", page_size=1000),
            metadata=handle.metadata(Role.EXPERIMENTER),
        ).changes
    )


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_learning_challenger_beats_static_first_ships_and_becomes_the_slots_policy(
    database_url: str, start_server: Callable[..., ServerHandle]
) -> None:
    handle = _start(start_server, database_url)
    stub = _create(
        handle,
        "squarecb",
        [("control", "static:first"), ("challenger", f"bandit:{GOOD}")],
        [(70, 100), (85, 150), (100, 200)],
    )
    driver = Driver(handle, ContentSite(seed=21))
    looks = _drive_until_decided(handle, stub, "squarecb", driver)
    rates = {arm: round(t.click_rate, 4) for arm, t in driver.arms.items()}
    print(f"\nlooks (decisions, state, stage): {looks}\nexpected click rate per arm: {rates}")
    assert looks[-1][1] == experiment_pb2.EXPERIMENT_STATE_SHIPPED, (looks, rates)
    assert driver.arms["challenger"].click_rate > 1.2 * driver.arms["control"].click_rate

    changes = _changes(handle, "squarecb")
    steps = [(c.action, c.to_stage_index) for c in changes]
    assert steps == [
        ("create", 0),
        ("start", 0),
        ("advance", 1),
        ("advance", 2),
        ("ship", 2),
        ("promote", 2),
    ], steps
    promote = changes[-1]
    assert promote.actor == "system" and f"bandit:{GOOD}" in promote.reason

    # The challenger learned only from its own arm's decisions, and it is reported like a slot model.
    db = handle.running.runtime.db
    task = challenger_task("squarecb", "challenger")
    with db.transaction() as session:
        own = session.execute(
            select(Decision.event_id).where(
                Decision.experiment_id == "squarecb", Decision.arm == "challenger"
            )
        ).all()
        newest_challenger = session.execute(
            select(ModelVersion).where(ModelVersion.task == task).order_by(ModelVersion.id.desc()).limit(1)
        ).scalar_one()
        slot_row = session.execute(
            select(ModelVersion)
            .where(ModelVersion.task == bandit_task("home"))
            .order_by(ModelVersion.id.desc())
            .limit(1)
        ).scalar_one()
    assert 0 < newest_challenger.examples <= len(own)
    models = model_pb2_grpc.ModelServiceStub(handle.channel)
    reported = models.GetModel(
        model_pb2.GetModelRequest(name=f"models/{task}/versions/{newest_challenger.version}"),
        metadata=handle.metadata(Role.EXPERIMENTER),
    )
    assert (
        reported.task == task and reported.vw_args == GOOD and reported.examples == newest_challenger.examples
    )

    report = stub.GetExperimentReport(
        experiment_pb2.GetExperimentReportRequest(name="experiments/squarecb"),
        metadata=handle.metadata(Role.EXPERIMENTER),
    )
    arm_models = {m.arm: m for m in report.arm_models}
    assert (arm_models["control"].task, arm_models["control"].version) == ("", "static:first")
    assert arm_models["challenger"].task == task and arm_models["challenger"].examples > 0
    assert arm_models["challenger"].version in {row.version for row in _versions(handle, task)}

    # The slot's policy is now the winner's: its arguments and a copy of its checkpoint.
    origin = slot_row.details[PROMOTED]
    assert slot_row.details["vw_args"] == GOOD
    assert origin["experiment_id"] == "squarecb" and origin["arm"] == "challenger" and origin["task"] == task
    source = next(r for r in _versions(handle, task) if r.version == origin["version"])
    assert slot_row.sha256 == source.sha256
    runtime = handle.running.runtime
    # Serving processes hot-reload the challenger's newest checkpoint (the metrics gauge reads this).
    _wait_for(lambda: runtime.models.versions().get(task) == _versions(handle, task)[-1].version)
    _wait_for(lambda: runtime.models.get("home").vw_args == GOOD)
    _wait_for(lambda: runtime.learner is not None and runtime.learner._models["home"].vw_args == GOOD)
    slot_model = models.GetModel(
        model_pb2.GetModelRequest(name=f"models/bandit:home/versions/{slot_row.version}"),
        metadata=handle.metadata(Role.EXPERIMENTER),
    )
    assert slot_model.promoted_from == "experiments/squarecb/arms/challenger" and slot_model.vw_args == GOOD

    # Concluded, the slot's default policy serves (and learns on from) the promoted model.
    stub.ConcludeExperiment(
        experiment_pb2.ExperimentActionRequest(name="experiments/squarecb"),
        metadata=handle.metadata(Role.EXPERIMENTER),
    )
    outside = driver.arms[""].decisions
    driver.run(50)
    assert driver.arms[""].decisions - outside == 50
    time.sleep(REWARD_WINDOW + 0.5)
    _wait_for(lambda: _versions(handle, bandit_task("home"))[-1].version != slot_row.version)
    later = _versions(handle, bandit_task("home"))[-1]
    assert later.details["vw_args"] == GOOD and later.details[PROMOTED] == origin


def _versions(handle: ServerHandle, task: str) -> list[ModelVersion]:
    with handle.running.runtime.db.transaction() as session:
        rows = session.execute(
            select(ModelVersion).where(ModelVersion.task == task).order_by(ModelVersion.id)
        ).scalars()
        return [row for row in rows]


def test_worse_challenger_is_rolled_back_and_a_pinned_model_serves_its_checkpoint_exactly(
    database_url: str, start_server: Callable[..., ServerHandle]
) -> None:
    # No grace: retention deletes every unpinned version beyond the newest 5 at once.
    handle = _start(start_server, database_url, checkpoint_grace_seconds=0)
    driver = Driver(handle, ContentSite(seed=22))
    driver.run(700)  # the slot's own bandit learns from traffic outside any experiment
    time.sleep(REWARD_WINDOW + 0.5)
    _wait_for(lambda: len(_versions(handle, bandit_task("home"))) > 0)
    pinned = _versions(handle, bandit_task("home"))[-1]
    warmed = driver.arms[""].click_rate

    stub = _create(
        handle,
        "blind",
        [("pinned", f"model:{pinned.version}"), ("blind", f"bandit:{BLIND}")],
        [(50, 100), (100, 200)],
    )
    driver.arms.clear()
    looks = _drive_until_decided(handle, stub, "blind", driver)
    rates = {arm: round(t.click_rate, 4) for arm, t in driver.arms.items()}
    print(f"\nwarm-up click rate {warmed:.4f}; looks (decisions, state, stage): {looks}\nper arm: {rates}")
    assert looks[-1][1] == experiment_pb2.EXPERIMENT_STATE_ROLLED_BACK, (looks, rates)
    assert driver.arms["blind"].click_rate < driver.arms["pinned"].click_rate
    rollback = next(c for c in _changes(handle, "blind") if c.action == "rollback")
    assert rollback.actor == "system" and "significantly worse" in rollback.reason
    assert not any(c.action == "promote" for c in _changes(handle, "blind"))
    # Rolled back: every subject in the experiment is served by the control arm, the pinned model.
    before = {arm: tally.decisions for arm, tally in driver.arms.items()}
    driver.run(100)
    assert driver.arms["pinned"].decisions - before["pinned"] == 100

    report = stub.GetExperimentReport(
        experiment_pb2.GetExperimentReportRequest(name="experiments/blind"),
        metadata=handle.metadata(Role.EXPERIMENTER),
    )
    pinned_model = next(m for m in report.arm_models if m.arm == "pinned")
    assert (pinned_model.task, pinned_model.version, pinned_model.examples) == (
        bandit_task("home"),
        pinned.version,
        pinned.examples,
    )

    # The pinned arm served exactly the checkpoint's probabilities: each logged probability vector
    # equals a raw VW workspace's prediction from that checkpoint file, for the same example.
    with handle.running.runtime.db.transaction() as session:
        decisions = (
            session.execute(
                select(Decision).where(Decision.experiment_id == "blind", Decision.arm == "pinned")
            )
            .scalars()
            .all()
        )
        offered = decision_candidates(session, decisions)
        pinned_row = session.execute(
            select(ModelVersion).where(
                ModelVersion.task == bandit_task("home"), ModelVersion.version == pinned.version
            )
        ).scalar_one()
    assert all(d.model_version == pinned.version for d in decisions) and len(decisions) >= 80
    # Retention kept the pinned version although 5 newer ones followed and every older one went.
    assert PINNED in pinned_row.details
    kept = [row.version for row in _versions(handle, bandit_task("home"))]
    assert kept[0] == pinned.version and len(kept) >= 6, kept
    raw = vowpalwabbit.Workspace(f"{pinned_row.details['vw_args']} --quiet -i {pinned_row.path}")
    try:
        worst = 0.0
        for decision, actions in zip(decisions, offered, strict=True):
            pmf = np.array(raw.predict(build_example(decision.context, actions)))
            worst = max(worst, float(np.max(np.abs(pmf / pmf.sum() - np.array(decision.probabilities)))))
    finally:
        raw.finish()
    print(f"pinned arm: {len(decisions)} decisions, largest |logged - raw VW| = {worst:.2e}")
    assert worst < 1e-6


@pytest.mark.parametrize(
    ("policy", "field", "message"),
    [
        ("bandit:--cb_explore_adf -q UX", "experiment.arms[1].policy", "namespaces"),
        ("bandit:--cb_explore_adf --cb 4", "experiment.arms[1].policy", "may not set --cb"),
        ("bandit:--epsilon 0.1", "experiment.arms[1].policy", "--cb_explore_adf"),
        ("bandit:--cb_explore_adf --no_such_flag", "experiment.arms[1].policy", "Vowpal Wabbit refuses"),
        ("model:v999999", "experiment.arms[1].policy", "no registered checkpoint"),
        ("model:latest", "experiment.arms[1].policy", "checkpoint version"),
        ("bandit:" + "--cb_explore_adf " * 10, "experiment.arms[1].policy", "longer than 128"),
        ("softmax", "experiment.arms[1].policy", "must be one of"),
    ],
)
def test_unusable_challenger_policies_are_refused_naming_the_field(
    start_server: Callable[..., ServerHandle], policy: str, field: str, message: str
) -> None:
    handle = start_server(learner={"enabled": False})
    stub = experiment_pb2_grpc.ExperimentServiceStub(handle.channel)
    with pytest.raises(grpc.RpcError) as caught:
        _create(handle, "bad", [("control", "static:first"), ("treatment", policy)], [(100, 10)])
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in caught.value.details() and message in caught.value.details(), caught.value.details()
    with pytest.raises(grpc.RpcError):
        stub.GetExperiment(
            experiment_pb2.GetExperimentRequest(name="experiments/bad"),
            metadata=handle.metadata(Role.EXPERIMENTER),
        )


def test_a_shipped_pinned_model_becomes_the_slots_policy_with_the_arguments_it_was_saved_with(
    database_url: str, tmp_path: Path
) -> None:
    saved_with = "--cb_explore_adf --epsilon 0.2 -q UA"
    db = Database.open(database_url)
    models_dir = tmp_path / "models"
    trained = SlotModel(saved_with)
    for i in range(20):
        trained.learn({"device": "mobile"}, [{"id": "a"}, {"id": "b"}], i % 2, float(i % 2), 0.5)
    with db.transaction() as session:
        source = register_checkpoint(session, trained, bandit_task("home"), models_dir)
    trained.close()
    winner = Challenger("pin", "home", "treatment", f"model:{source.version}")
    with db.transaction() as session:
        change = promoter(models_dir, lambda slot: "--cb_explore_adf --squarecb")(session, winner)
    promoted = _newest_row(db, bandit_task("home"))
    assert promoted.version != source.version and promoted.examples == 20
    assert promoted.details["vw_args"] == saved_with
    assert promoted.details[PROMOTED]["version"] == source.version
    assert f"model:{source.version}" in change and promoted.version in change
    # The slot's configured arguments differ: the promoted version is served with its own.
    serving = ServingModels(db, {"home": "--cb_explore_adf --squarecb"})
    assert serving.get("home").vw_args == saved_with
    assert serving.get("home").model_version == promoted.version
    serving.close()
    db.dispose()


def _newest_row(db: Database, task: str) -> ModelVersion:
    with db.transaction() as session:
        return session.execute(
            select(ModelVersion).where(ModelVersion.task == task).order_by(ModelVersion.id.desc()).limit(1)
        ).scalar_one()
