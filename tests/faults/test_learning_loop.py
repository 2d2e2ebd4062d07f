"""Learning-loop footguns: namespace-checked vw_args, dropped-field counts, a seed, model
freshness and checkpoint retention — each through the real server or the real learner."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from sqlalchemy import func, select

from tacit.learning.freshness import learning_backlog
from tacit.learning.learner import Learner, SlotLearning
from tacit.learning.registry import bandit_task
from tacit.server.auth import Role
from tacit.server.config import ConfigError, load_settings
from tacit.sim.client import rank_request, to_features
from tacit.store.schema import ModelVersion
from tacit.v1 import decision_pb2, decision_pb2_grpc, event_pb2, event_pb2_grpc, model_pb2, model_pb2_grpc

CANDIDATES = [(f"c{i}", {"topic": f"t{i}"}) for i in range(5)]


# -- vw_args ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vw_args", "why"),
    [
        ("--cb_explore_adf -q ca", "-q must name only Tacit's namespaces"),
        ("--cb_explore_adf -qca", "-q must name only"),
        ("--cb_explore_adf --quadratic=Ux", "--quadratic must name only"),
        ("--cb_explore_adf --interactions UAc", "--interactions must name only"),
        ("--cb_explore_adf --cubic UAb", "--cubic must name only"),
        ("--cb_explore_adf --ignore c", "--ignore must name only"),
        ("--cb_explore_adf -q", "-q must name only"),
        ("--epsilon 0.1 -q UA", "must contain --cb_explore_adf"),
        ("--cb_explore_adf -t -q UA", "may not set -t"),
        ("--cb_explore_adf --cache_file x -q UA", "may not set --cache_file"),
        ("--cb_explore_adf -f model.vw", "may not set -f"),
        ("--cb_explore_adf --no_such_option", "Vowpal Wabbit refuses"),
    ],
)
def test_vw_args_that_would_learn_nothing_are_refused_at_config_load(vw_args: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(None, slots={"hero": {"vw_args": vw_args}})
    assert "slots.hero.vw_args" in str(refused.value) and why in str(refused.value)


@pytest.mark.parametrize(
    "vw_args",
    [
        "--cb_explore_adf -q UA",
        "--cb_explore_adf -qUA --cubic UUA",
        "--cb_explore_adf --interactions=UA",
        "--cb_explore_adf -q ::",
    ],
)
def test_vw_args_on_tacits_namespaces_are_accepted(vw_args: str) -> None:
    assert load_settings(None, slots={"hero": {"vw_args": vw_args}}).slots["hero"].vw_args == vw_args


# -- a signal for dropped fields -------------------------------------------------------------


def test_rank_and_track_events_count_the_undeclared_fields_they_dropped(start_server) -> None:  # type: ignore[no-untyped-def]
    handle = start_server()
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    context = {"device": "mobile", "favourite_colour": "green", "shoe_size": 43.0}
    candidates = [("a1", {"topic": "news", "supplier_margin": 0.3}), ("b2", {"topic": "tech"})]
    ranked = stub.Rank(rank_request("home", "user-1", context, candidates), metadata=handle.metadata())
    assert (ranked.dropped_context_fields, ranked.dropped_candidate_fields) == (2, 1)
    clean = stub.Rank(
        rank_request("home", "user-1", {"device": "mobile"}, CANDIDATES), metadata=handle.metadata()
    )
    assert (clean.dropped_context_fields, clean.dropped_candidate_fields) == (0, 0)

    events = event_pb2_grpc.EventServiceStub(handle.channel)
    batch = event_pb2.TrackEventsRequest(
        events=[
            event_pb2.Event(
                event_id=f"evt-drop-{i:04d}",
                subject_id="user-1",
                event_type="click",
                properties=to_features({"position": 1.0, "mood": "happy"}),
            )
            for i in range(3)
        ]
    )
    answer = events.TrackEvents(batch, metadata=handle.metadata())
    assert (answer.accepted, answer.dropped_property_fields) == (3, 3)


# -- seed ------------------------------------------------------------------------------------


def _choices(handle, count: int = 40) -> list[str]:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    return [
        stub.Rank(
            rank_request("home", f"user-{i}", {"device": "mobile"}, CANDIDATES), metadata=handle.metadata()
        ).chosen_id
        for i in range(count)
    ]


def test_two_servers_with_the_same_seed_make_the_same_choices(start_server) -> None:  # type: ignore[no-untyped-def]
    quiet = {"enabled": False}
    first = start_server(seed=None, server={"seed": 42}, learner=quiet)
    second = start_server(seed=None, server={"seed": 42}, learner=quiet)
    other = start_server(seed=None, server={"seed": 43}, learner=quiet)
    replay = _choices(first)
    assert len(set(replay)) > 1  # the policy explores: the choices depend on the sampler
    assert _choices(second) == replay
    assert _choices(other) != replay


# -- freshness -------------------------------------------------------------------------------


def _rank_and_reward(handle, count: int, prefix: str) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    for i in range(count):
        ranked = stub.Rank(
            rank_request("home", f"{prefix}-{i}", {"device": "mobile"}, CANDIDATES),
            metadata=handle.metadata(),
        )
        stub.Reward(
            decision_pb2.RewardRequest(event_id=ranked.event_id, value=1.0), metadata=handle.metadata()
        )


def _wait_for(predicate, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_get_model_reports_examples_per_version_and_the_learning_backlog(  # type: ignore[no-untyped-def]
    database_url, start_server, tmp_path
) -> None:
    data_dir = tmp_path / "shared"
    learning = start_server(database_url, data_dir=data_dir)
    _rank_and_reward(learning, 12, "fresh")
    models = model_pb2_grpc.ModelServiceStub(learning.channel)
    admin = learning.metadata(Role.ADMIN)

    def newest() -> model_pb2.Model | None:
        listed = models.ListModels(
            model_pb2.ListModelsRequest(task=bandit_task("home")), metadata=admin
        ).models
        return listed[0] if listed and listed[0].examples == 12 else None

    latest = _wait_for(newest)
    got = models.GetModel(model_pb2.GetModelRequest(name=latest.name), metadata=admin)
    listed = models.ListModels(model_pb2.ListModelsRequest(task=bandit_task("home")), metadata=admin).models
    previous = listed[1].examples if len(listed) > 1 else 0
    assert (got.examples, got.new_examples) == (12, 12 - previous)
    assert (got.pending_decisions, got.learning_lag_seconds) == (0, 0.0)
    learning.running.stop(grace=1)

    # A replica without a learner on the same database: rewarded decisions wait, and it shows.
    serving = start_server(database_url, data_dir=data_dir, learner={"enabled": False})
    _rank_and_reward(serving, 5, "waiting")
    time.sleep(0.3)
    models = model_pb2_grpc.ModelServiceStub(serving.channel)
    got = models.GetModel(model_pb2.GetModelRequest(name=latest.name), metadata=serving.metadata(Role.ADMIN))
    assert got.pending_decisions == 5 and got.learning_lag_seconds >= 0.3
    backlog = learning_backlog(serving.running.runtime.db, "home")
    assert backlog.pending_decisions == 5 and backlog.lag_seconds >= got.learning_lag_seconds


# -- checkpoint retention --------------------------------------------------------------------


def _checkpoint_rounds(handle, learner: Learner, rounds: int) -> None:  # type: ignore[no-untyped-def]
    for round_ in range(rounds):
        _rank_and_reward(handle, 3, f"round{round_}")
        handle.running.runtime.decision_log.flush()
        assert learner.run_until_idle() == 3


@pytest.mark.parametrize(("grace", "kept"), [(0.0, 2), (3600.0, 6)])
def test_old_checkpoints_lose_row_and_file_but_never_the_newest_or_a_young_one(  # type: ignore[no-untyped-def]
    database_url, start_server, tmp_path: Path, grace: float, kept: int
) -> None:
    handle = start_server(database_url, learner={"enabled": False})
    db = handle.running.runtime.db
    models_dir = tmp_path / "models"
    learner = Learner(
        db,
        {"home": SlotLearning(handle.settings.slots["home"].vw_args, 0.0)},
        models_dir=models_dir,
        keep_checkpoints=2,
        checkpoint_grace_seconds=grace,
    )
    try:
        _checkpoint_rounds(handle, learner, 6)
    finally:
        learner.stop()
    with db.transaction() as session:
        rows = (
            session.execute(
                select(ModelVersion).where(ModelVersion.task == "bandit:home").order_by(ModelVersion.id)
            )
            .scalars()
            .all()
        )
        total = session.execute(select(func.count()).select_from(ModelVersion)).scalar_one()
    assert [r.version for r in rows] == [f"v{n:06d}" for n in range(7 - kept, 7)]
    assert total == kept and all(r.active for r in rows)
    assert sorted(p.name for p in models_dir.rglob("*.vw")) == [f"{r.version}.vw" for r in rows]
    assert rows[-1].examples == 18
    # The serving process picks up the newest one, whose file is there and verified.
    _wait_for(lambda: handle.running.runtime.models.get("home").model_version == rows[-1].version)
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    ranked = stub.Rank(rank_request("home", "after", {}, CANDIDATES), metadata=handle.metadata())
    assert ranked.model_version == rows[-1].version
    if kept == 2:  # a deleted version is gone from the registry
        with pytest.raises(grpc.RpcError) as gone:
            model_pb2_grpc.ModelServiceStub(handle.channel).GetModel(
                model_pb2.GetModelRequest(name="models/bandit:home/versions/v000001"),
                metadata=handle.metadata(Role.ADMIN),
            )
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
