"""The Rank -> Reward -> learn loop through a real server on a real port."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import grpc
import pytest
from sqlalchemy import select

from tacit.learning.registry import bandit_task
from tacit.server.auth import Role
from tacit.sim.client import rank_request, to_features
from tacit.store.candidate_sets import decision_candidates
from tacit.store.schema import Decision, ModelVersion, Reward
from tacit.v1 import decision_pb2, decision_pb2_grpc

CANDIDATES = [("a1", {"topic": "news"}), ("b2", {"topic": "sports"}), ("c3", {"topic": "tech"})]


def rank(stub, handle, **kwargs):  # type: ignore[no-untyped-def]
    request = rank_request("home", kwargs.pop("subject", "user-1"), {"device": "mobile"}, CANDIDATES)
    for key, value in kwargs.items():
        setattr(request, key, value) if not isinstance(value, list) else getattr(request, key).extend(value)
    return stub.Rank(request, metadata=handle.metadata())


def stored_id(handle, client_id: str) -> str:  # type: ignore[no-untyped-def]
    """The digest a client's event id is stored under (ids never reach disk raw)."""
    return handle.running.runtime.keyring.digest(client_id)


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def test_rank_returns_every_candidate_with_probabilities_summing_to_one(server) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    response = rank(stub, server)
    assert sorted(c.id for c in response.ranking) == ["a1", "b2", "c3"]
    assert response.ranking[0].id == response.chosen_id
    assert sum(c.probability for c in response.ranking) == pytest.approx(1.0, abs=1e-6)
    assert response.event_id.startswith("evt_")
    assert response.model_version


def test_decision_is_logged_replayably_and_reward_joins(server) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    response = rank(stub, server, subject="alice@example.com")
    reward = stub.Reward(
        decision_pb2.RewardRequest(event_id=response.event_id, value=1.0), metadata=server.metadata()
    )
    assert reward.outcome == decision_pb2.REWARD_OUTCOME_JOINED
    again = stub.Reward(
        decision_pb2.RewardRequest(event_id=response.event_id, value=1.0), metadata=server.metadata()
    )
    assert again.outcome == decision_pb2.REWARD_OUTCOME_DUPLICATE
    db = server.running.runtime.db
    with db.transaction() as session:
        decision = session.get(Decision, stored_id(server, response.event_id))
        assert decision is not None
        assert decision.subject.startswith("ps1:") and "alice" not in decision.subject
        assert decision.candidate_ids == ["a1", "b2", "c3"]
        assert len(decision.probabilities) == 3 and sum(decision.probabilities) == pytest.approx(1.0)
        assert decision.candidate_ids[decision.chosen_index] == response.chosen_id
        assert decision.context == {"device": "mobile"}
        # The row references each feature map by digest; the maps are stored once.
        assert decision.candidate_features is None and len(decision.candidate_refs) == 3
        features = decision_candidates(session, [decision])[0]
        assert features[0] == {"topic": "news", "id": "a1"}
        assert [f["id"] for f in features] == ["a1", "b2", "c3"]
        assert decision.reward == 1.0 and decision.reward_count == 1
        assert decision.model_version == response.model_version
        stored = stored_id(server, response.event_id)
        rewards = session.execute(select(Reward).where(Reward.event_id == stored)).scalars().all()
        assert len(rewards) == 1


def test_learner_checkpoints_and_server_serves_the_new_version(server) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    first = rank(stub, server)
    for index in range(30):
        response = rank(stub, server, subject=f"user-{index}")
        stub.Reward(
            decision_pb2.RewardRequest(event_id=response.event_id, value=1.0), metadata=server.metadata()
        )
    db = server.running.runtime.db

    def has_checkpoint() -> bool:
        with db.transaction() as session:
            return (
                session.execute(select(ModelVersion).where(ModelVersion.task == bandit_task("home"))).first()
                is not None
            )

    wait_for(has_checkpoint)
    wait_for(lambda: rank(stub, server).model_version != first.model_version)
    with db.transaction() as session:
        row = session.execute(select(ModelVersion).order_by(ModelVersion.id.desc())).scalars().first()
        assert row is not None and row.examples >= 1
        assert (server.data_dir / "models").exists()


def test_late_reward_is_recorded_but_not_learned(start_server) -> None:  # type: ignore[no-untyped-def]
    handle = start_server(slots={"home": {"reward_window_seconds": 0.2}})
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    response = rank(stub, handle)
    time.sleep(0.4)
    late = stub.Reward(
        decision_pb2.RewardRequest(event_id=response.event_id, value=1.0), metadata=handle.metadata()
    )
    assert late.outcome == decision_pb2.REWARD_OUTCOME_LATE
    with handle.running.runtime.db.transaction() as session:
        decision = session.get(Decision, stored_id(handle, response.event_id))
        assert decision is not None and decision.reward is None
        assert session.execute(select(Reward.late)).scalar_one() is True


@pytest.mark.parametrize(
    ("rule", "values", "expected"),
    [
        ("first", [1.0, 3.0], 1.0),
        ("last", [1.0, 3.0], 3.0),
        ("sum", [1.0, 3.0], 4.0),
        ("max", [2.0, 1.0], 2.0),
    ],
)
def test_repeated_rewards_follow_the_slot_aggregation_rule(start_server, rule, values, expected) -> None:  # type: ignore[no-untyped-def]
    handle = start_server(slots={"home": {"reward_aggregation": rule}})
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    response = rank(stub, handle)
    for index, value in enumerate(values):
        stub.Reward(
            decision_pb2.RewardRequest(
                event_id=response.event_id, value=value, request_id=f"request-{index}"
            ),
            metadata=handle.metadata(),
        )
    with handle.running.runtime.db.transaction() as session:
        decision = session.get(Decision, stored_id(handle, response.event_id))
        assert decision is not None and decision.reward == expected and decision.reward_count == 2


def test_deferred_decision_is_learnable_only_after_activation(server) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    response = rank(stub, server, defer_activation=True)
    stub.Reward(decision_pb2.RewardRequest(event_id=response.event_id, value=1.0), metadata=server.metadata())
    db = server.running.runtime.db
    with db.transaction() as session:
        decision = session.get(Decision, stored_id(server, response.event_id))
        assert decision is not None and decision.learn_after is None
    activated = stub.Activate(
        decision_pb2.ActivateRequest(event_id=response.event_id), metadata=server.metadata()
    )
    assert activated.already_active is False
    with db.transaction() as session:
        decision = session.get(Decision, stored_id(server, response.event_id))
        assert decision is not None and decision.learn_after is not None
    again = stub.Activate(
        decision_pb2.ActivateRequest(event_id=response.event_id), metadata=server.metadata()
    )
    assert again.already_active is True


def test_excluded_candidates_are_never_ranked(server) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    for _ in range(20):
        response = rank(stub, server, excluded_ids=["a1", "b2"])
        assert [c.id for c in response.ranking] == ["c3"]
        assert response.ranking[0].probability == pytest.approx(1.0)


def test_caller_event_id_is_used_and_a_reused_one_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    response = rank(stub, server, event_id="order-page-000001")
    assert response.event_id == "order-page-000001"
    with pytest.raises(grpc.RpcError) as error:
        rank(stub, server, event_id="order-page-000001")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "event_id" in error.value.details()


def test_unflushed_decision_is_found_by_an_immediate_reward(start_server) -> None:  # type: ignore[no-untyped-def]
    # A long flush interval: the reward must force the flush, not get NOT_FOUND.
    handle = start_server(decision_log={"flush_interval_ms": 60_000, "max_batch": 10_000})
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    response = rank(stub, handle)
    reward = stub.Reward(
        decision_pb2.RewardRequest(event_id=response.event_id, value=0.5), metadata=handle.metadata()
    )
    assert reward.outcome == decision_pb2.REWARD_OUTCOME_JOINED


def test_shutdown_flushes_pending_decisions(start_server) -> None:  # type: ignore[no-untyped-def]
    handle = start_server(decision_log={"flush_interval_ms": 60_000, "max_batch": 10_000})
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    event_ids = [rank(stub, handle, subject=f"u{i}").event_id for i in range(25)]
    digest = handle.running.runtime.keyring.digest
    db_url = handle.settings.database_url
    handle.running.stop(grace=1)
    from tacit.store.db import Database

    db = Database.open(db_url)
    with db.transaction() as session:
        stored = set(session.execute(select(Decision.event_id)).scalars())
    db.dispose()
    assert {digest(event_id) for event_id in event_ids} <= stored


def test_events_are_stored_once_per_event_id(server) -> None:  # type: ignore[no-untyped-def]
    from tacit.store.schema import TrackedEvent
    from tacit.v1 import event_pb2, event_pb2_grpc

    stub = event_pb2_grpc.EventServiceStub(server.channel)
    event = event_pb2.Event(
        event_id="ev-00000001",
        subject_id="user-9",
        event_type="page_view",
        properties=to_features({"device": "desktop", "dwell_ms": 1200.0}),
    )
    first = stub.TrackEvents(event_pb2.TrackEventsRequest(events=[event]), metadata=server.metadata())
    second = stub.TrackEvents(event_pb2.TrackEventsRequest(events=[event]), metadata=server.metadata())
    assert (first.accepted, first.duplicates) == (1, 0)
    assert (second.accepted, second.duplicates) == (0, 1)
    with server.running.runtime.db.transaction() as session:
        rows = session.execute(select(TrackedEvent)).scalars().all()
        assert len(rows) == 1 and rows[0].properties == {"device": "desktop", "dwell_ms": 1200.0}
        assert rows[0].subject.startswith("ps1:")


def test_roles_are_enforced(server) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    request = rank_request("home", "user-1", {}, CANDIDATES)
    with pytest.raises(grpc.RpcError) as missing:
        stub.Rank(request)
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as wrong:
        stub.Rank(request, metadata=(("authorization", "Bearer not-a-token"),))
    assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as denied:
        stub.Rank(request, metadata=server.metadata(Role.AUDITOR))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stub.Rank(request, metadata=server.metadata(Role.ADMIN)).chosen_id


@pytest.mark.parametrize(
    "vw_args",
    [
        "--cb_explore_adf --epsilon 0.2 -q UA",
        "--cb_explore_adf --squarecb -q UA",
        "--cb_explore_adf --bag 3 -q UA",
        "--cb_explore_adf --cover 3 -q UA",
        "--cb_explore_adf --softmax --lambda 5 -q UA",
    ],
)
def test_each_exploration_algorithm_serves_a_full_distribution_and_learns(start_server, vw_args) -> None:  # type: ignore[no-untyped-def]
    handle = start_server(slots={"home": {"vw_args": vw_args}})
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    for index in range(20):
        response = rank(stub, handle, subject=f"u{index}")
        assert sum(c.probability for c in response.ranking) == pytest.approx(1.0, abs=1e-6)
        assert all(c.probability >= 0 for c in response.ranking)
        value = 1.0 if response.chosen_id == "b2" else 0.0
        stub.Reward(
            decision_pb2.RewardRequest(event_id=response.event_id, value=value), metadata=handle.metadata()
        )
    learner = handle.running.runtime.learner
    assert learner is not None
    wait_for(lambda: handle.running.runtime.models.get("home").model_version != "v000000")
    with handle.running.runtime.db.transaction() as session:
        checkpoint = session.execute(select(ModelVersion).order_by(ModelVersion.id.desc())).scalars().first()
        assert checkpoint is not None and checkpoint.details["vw_args"] == vw_args


def test_profile_features_reach_the_model_without_rank_waiting_for_them(start_server) -> None:  # type: ignore[no-untyped-def]
    from google.protobuf.timestamp_pb2 import Timestamp

    from tacit.v1 import event_pb2, event_pb2_grpc

    handle = start_server(slots={"home": {"profile_features": ["visits_7d", "device"]}})
    events = event_pb2_grpc.EventServiceStub(handle.channel)
    stamp = Timestamp()
    stamp.GetCurrentTime()
    events.TrackEvents(
        event_pb2.TrackEventsRequest(
            events=[
                event_pb2.Event(
                    event_id=f"ev-profile-{i:04d}",
                    subject_id="returning-user",
                    event_type="page_view",
                    occurred_at=stamp,
                    properties=to_features({"device": "tablet"}),
                )
                for i in range(3)
            ]
        ),
        metadata=handle.metadata(),
    )
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    first = rank(stub, handle, subject="returning-user")
    # The first Rank misses the cache and starts a background fill; a later one sees the profile.
    wait_for(
        lambda: (
            handle.running.runtime.profiles.cached(  # type: ignore[union-attr]
                handle.running.runtime.boundary.pseudonymize_subject("returning-user"), datetime.now(UTC)
            )
            is not None
        )
    )
    second = rank(stub, handle, subject="returning-user")
    handle.running.runtime.decision_log.flush()
    with handle.running.runtime.db.transaction() as session:
        cold = session.get(Decision, stored_id(handle, first.event_id))
        warm = session.get(Decision, stored_id(handle, second.event_id))
        assert cold is not None and cold.context["profile.known"] is False
        assert warm is not None and warm.context["profile.known"] is True
        assert warm.context["profile.device"] == "tablet"
        assert warm.context["profile.visits_7d"] >= 1


def test_erasure_empties_the_profile_cache_and_the_stored_rows(start_server) -> None:  # type: ignore[no-untyped-def]
    from tacit.v1 import audit_pb2, audit_pb2_grpc

    # A long flush interval: the decision is still in memory when the erasure arrives.
    handle = start_server(
        slots={"home": {"profile_features": ["visits_7d"]}},
        decision_log={"flush_interval_ms": 60_000, "max_batch": 10_000},
    )
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    runtime = handle.running.runtime
    pseudonym = runtime.boundary.pseudonymize_subject("leaving-user")
    rank(stub, handle, subject="leaving-user")
    wait_for(lambda: runtime.profiles.cached(pseudonym, datetime.now(UTC)) is not None)  # type: ignore[union-attr]
    audit = audit_pb2_grpc.AuditServiceStub(handle.channel)
    erased = audit.EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id="leaving-user"), metadata=handle.metadata(Role.AUDITOR)
    )
    assert erased.decisions_erased == 1
    assert runtime.profiles.cached(pseudonym, datetime.now(UTC)) is None  # type: ignore[union-attr]
    runtime.decision_log.flush()
    with runtime.db.transaction() as session:
        assert session.execute(select(Decision).where(Decision.subject == pseudonym)).first() is None


def test_the_subject_pseudonym_is_never_a_model_feature(server) -> None:  # type: ignore[no-untyped-def]
    from tacit.learning.bandit import build_example

    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    response = rank(stub, server, subject="feature-leak-check")
    pseudonym = server.running.runtime.boundary.pseudonymize_subject("feature-leak-check")
    server.running.runtime.decision_log.flush()
    with server.running.runtime.db.transaction() as session:
        decision = session.get(Decision, stored_id(server, response.event_id))
        assert decision is not None and decision.subject == pseudonym
        # What the learner feeds VW for this decision: no trace of the subject.
        candidates = decision_candidates(session, [decision])[0]
        lines = build_example(decision.context, candidates)
        assert not any(pseudonym in line or "ps1:" in line for line in lines)
        assert "feature-leak-check" not in str(decision.context) + str(candidates)
