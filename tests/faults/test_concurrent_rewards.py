"""Eight identical or competing Reward calls at once, through the real server (isolation-tester style).

Every aggregation rule gets 8 concurrent JOINED rewards per decision on 12 decisions; the
final `reward` and `reward_count` are spelled out. `first` and `last` are defined by commit
order, which the stored reward rows record in their ids (each is inserted while the
decision row is held). Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from grpc_status import rpc_status
from sqlalchemy import select

from tacit.sim.client import rank_request
from tacit.store.schema import Decision, Reward
from tacit.v1 import decision_pb2, decision_pb2_grpc

RULES = ("first", "last", "sum", "max")
DECISIONS = 12
CALLERS = 8
VALUES = [float(v) for v in range(1, CALLERS + 1)]  # 1.0 … 8.0: sum 36, max 8
CANDIDATES = [("a1", {"topic": "news"}), ("b2", {"topic": "sports"})]


def _all_at_once(calls: list[Callable[[], Any]]) -> list[Any]:
    """Runs the calls on their own threads, released together by a barrier; returns results or errors."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return call()
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


@pytest.fixture
def reward_server(database_url, start_server):  # type: ignore[no-untyped-def]
    # One slot per aggregation rule; no learner, so nothing consumes a decision mid-test.
    slots = {rule: {"reward_aggregation": rule} for rule in RULES}
    return start_server(database_url, slots=slots, learner={"enabled": False})


def _rank(stub, handle, slot: str, subject: str) -> str:  # type: ignore[no-untyped-def]
    request = rank_request(slot, subject, {"device": "mobile"}, CANDIDATES)
    return stub.Rank(request, metadata=handle.metadata()).event_id


def test_concurrent_rewards_aggregate_exactly_for_every_rule(reward_server) -> None:  # type: ignore[no-untyped-def]
    handle = reward_server
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    events = {
        rule: [_rank(stub, handle, rule, f"user-{rule}-{i}") for i in range(DECISIONS)] for rule in RULES
    }
    for rule in RULES:
        for event_id in events[rule]:
            calls = [
                (
                    lambda e=event_id, i=i: stub.Reward(
                        decision_pb2.RewardRequest(event_id=e, value=VALUES[i], request_id=f"req-{i:04d}"),
                        metadata=handle.metadata(),
                    )
                )
                for i in range(CALLERS)
            ]
            answers = _all_at_once(calls)
            assert all(not isinstance(a, grpc.RpcError) for a in answers), [
                a.code() for a in answers if isinstance(a, grpc.RpcError)
            ]
            assert [a.outcome for a in answers] == [decision_pb2.REWARD_OUTCOME_JOINED] * CALLERS

    digest = handle.running.runtime.keyring.digest  # ids are stored as keyed digests
    with handle.running.runtime.db.transaction() as session:
        for rule in RULES:
            for event_id in events[rule]:
                decision = session.get(Decision, digest(event_id))
                assert decision is not None
                stored = [
                    r.value
                    for r in session.execute(
                        select(Reward).where(Reward.event_id == digest(event_id)).order_by(Reward.id)
                    ).scalars()
                ]
                assert sorted(stored) == VALUES
                expected = {"first": stored[0], "last": stored[-1], "sum": 36.0, "max": 8.0}[rule]
                assert (rule, decision.reward_count, decision.reward) == (rule, CALLERS, expected)


def test_concurrent_identical_rewards_store_one(reward_server) -> None:  # type: ignore[no-untyped-def]
    handle = reward_server
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    event_ids = [_rank(stub, handle, "sum", f"dup-{i}") for i in range(DECISIONS)]
    for event_id in event_ids:
        request = decision_pb2.RewardRequest(event_id=event_id, value=2.5, request_id="retry-0001")
        answers = _all_at_once([lambda r=request: stub.Reward(r, metadata=handle.metadata())] * CALLERS)
        assert all(not isinstance(a, grpc.RpcError) for a in answers), [
            (a.code(), a.details()) for a in answers if isinstance(a, grpc.RpcError)
        ]
        outcomes = sorted(a.outcome for a in answers)
        assert outcomes == [decision_pb2.REWARD_OUTCOME_JOINED] + [decision_pb2.REWARD_OUTCOME_DUPLICATE] * (
            CALLERS - 1
        )
    digest = handle.running.runtime.keyring.digest  # ids are stored as keyed digests
    with handle.running.runtime.db.transaction() as session:
        for event_id in event_ids:
            decision = session.get(Decision, digest(event_id))
            assert decision is not None and (decision.reward, decision.reward_count) == (2.5, 1)
            stored_id = digest(event_id)
            rows = session.execute(select(Reward.value).where(Reward.event_id == stored_id)).scalars().all()
            assert rows == [2.5]


def _already_exists_names_request_id(error: grpc.RpcError) -> bool:
    if error.code() != grpc.StatusCode.ALREADY_EXISTS or "request_id" not in (error.details() or ""):
        return False
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    return status is not None and any(
        "REQUEST_ID_REUSED" in d.value.decode("latin-1") for d in status.details
    )


def test_request_id_reused_with_another_value_is_refused(reward_server) -> None:  # type: ignore[no-untyped-def]
    handle = reward_server
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    event_id = _rank(stub, handle, "sum", "reuse-1")
    first = stub.Reward(
        decision_pb2.RewardRequest(event_id=event_id, value=1.0, request_id="click-0001"),
        metadata=handle.metadata(),
    )
    assert first.outcome == decision_pb2.REWARD_OUTCOME_JOINED
    same = stub.Reward(
        decision_pb2.RewardRequest(event_id=event_id, value=1.0, request_id="click-0001"),
        metadata=handle.metadata(),
    )
    assert same.outcome == decision_pb2.REWARD_OUTCOME_DUPLICATE
    with pytest.raises(grpc.RpcError) as caught:
        stub.Reward(
            decision_pb2.RewardRequest(event_id=event_id, value=5.0, request_id="click-0001"),
            metadata=handle.metadata(),
        )
    assert _already_exists_names_request_id(caught.value)
    assert "5" not in (caught.value.details() or "")  # the value is not echoed

    # Concurrently: eight different values under one request id → one stored, the rest refused.
    event_id = _rank(stub, handle, "sum", "reuse-2")
    calls = [
        (
            lambda v=v: stub.Reward(
                decision_pb2.RewardRequest(event_id=event_id, value=v, request_id="conv-00001"),
                metadata=handle.metadata(),
            )
        )
        for v in VALUES
    ]
    answers = _all_at_once(calls)
    ok = [a for a in answers if not isinstance(a, grpc.RpcError)]
    refused = [a for a in answers if isinstance(a, grpc.RpcError)]
    assert [a.outcome for a in ok] == [decision_pb2.REWARD_OUTCOME_JOINED]
    assert len(refused) == CALLERS - 1 and all(_already_exists_names_request_id(e) for e in refused)
    digest = handle.running.runtime.keyring.digest  # ids are stored as keyed digests
    with handle.running.runtime.db.transaction() as session:
        decision = session.get(Decision, digest(event_id))
        stored_id = digest(event_id)
        stored = session.execute(select(Reward.value).where(Reward.event_id == stored_id)).scalars().all()
        assert decision is not None and len(stored) == 1
        assert (decision.reward, decision.reward_count) == (stored[0], 1)


def test_concurrent_activates_and_first_rewards_leave_a_final_decision_learnable_now(reward_server) -> None:  # type: ignore[no-untyped-def]
    handle = reward_server
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    event_ids = []
    for i in range(DECISIONS):
        request = rank_request("first", f"deferred-{i}", {"device": "mobile"}, CANDIDATES)
        request.defer_activation = True
        event_ids.append(stub.Rank(request, metadata=handle.metadata()).event_id)
    for event_id in event_ids:
        activate = decision_pb2.ActivateRequest(event_id=event_id)
        reward = decision_pb2.RewardRequest(event_id=event_id, value=1.0, request_id="click-0001")
        calls = [lambda activate=activate: stub.Activate(activate, metadata=handle.metadata())] * (
            CALLERS // 2
        ) + [lambda reward=reward: stub.Reward(reward, metadata=handle.metadata())] * (CALLERS // 2)
        answers = _all_at_once(calls)
        assert all(not isinstance(a, grpc.RpcError) for a in answers)
        # Exactly one Activate made it learnable; exactly one Reward joined.
        assert sorted(a.already_active for a in answers[: CALLERS // 2]) == [False] + [True] * (
            CALLERS // 2 - 1
        )
        assert sorted(a.outcome for a in answers[CALLERS // 2 :]) == [decision_pb2.REWARD_OUTCOME_JOINED] + [
            decision_pb2.REWARD_OUTCOME_DUPLICATE
        ] * (CALLERS // 2 - 1)
    digest = handle.running.runtime.keyring.digest  # ids are stored as keyed digests
    with handle.running.runtime.db.transaction() as session:
        for event_id in event_ids:
            decision = session.get(Decision, digest(event_id))
            assert decision is not None and decision.activated_at is not None
            # A `first` reward on an activated decision is final: learnable at once, whichever
            # of Activate and Reward committed first — not only at the end of the window.
            assert decision.learn_after is not None and decision.learn_after < decision.reward_deadline
            assert (decision.reward, decision.reward_count) == (1.0, 1)
