"""Idempotent Rank (issue 10 #5): eight identical calls at once, retries, restarts — on SQLite and PostgreSQL.

Like PostgreSQL's isolation tester: the calls race through a barrier against a
real server, and the final rows are spelled out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from tacit.server.auth import Role
from tacit.sim.client import rank_request
from tacit.store.schema import AuditRecord, Decision
from tacit.v1 import decision_pb2, decision_pb2_grpc

CALLS = 8
CANDIDATES = [("a1", {"topic": "news"}), ("b2", {"topic": "sports"}), ("c3", {"topic": "tech"})]


def _lost() -> float:
    return REGISTRY.get_sample_value("tacit_decisions_lost_total") or 0.0


def _request(subject: str = "racer", **fields: str) -> decision_pb2.RankRequest:
    request = rank_request("home", subject, {"device": "mobile"}, CANDIDATES)
    for name, value in fields.items():
        setattr(request, name, value)
    return request


def _race(handle: object, request: decision_pb2.RankRequest) -> list[object]:
    """CALLS identical Ranks released together; each result is a response or an RpcError."""
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)  # type: ignore[attr-defined]
    metadata = handle.metadata(Role.SERVICE)  # type: ignore[attr-defined]
    barrier = threading.Barrier(CALLS)
    results: list[object] = [None] * CALLS

    def call(index: int) -> None:
        barrier.wait()
        try:
            results[index] = stub.Rank(request, metadata=metadata, timeout=60)
        except grpc.RpcError as error:
            results[index] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CALLS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _answer(response: decision_pb2.RankResponse) -> tuple[object, ...]:
    return (
        response.event_id,
        response.chosen_id,
        tuple((c.id, c.probability) for c in response.ranking),
        response.model_version,
        response.arm,
    )


def _stored(handle: object) -> tuple[list[tuple[str, str | None]], int]:
    """(event_id, request_id) of every decision row, and the number of `rank` audit records."""
    runtime = handle.running.runtime  # type: ignore[attr-defined]
    runtime.decision_log.flush()
    with runtime.db.transaction() as session:
        rows = [tuple(row) for row in session.execute(select(Decision.event_id, Decision.request_id))]
        audits = session.execute(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.payload_kind == "rank")
        ).scalar_one()
    return rows, audits  # type: ignore[return-value]


@pytest.mark.parametrize("with_event_id", [False, True], ids=["tacit-event-id", "caller-event-id"])
def test_eight_identical_ranks_with_one_request_id_are_answered_once(
    server, with_event_id: bool  # type: ignore[no-untyped-def]
) -> None:
    lost_before = _lost()
    fields = {"request_id": "checkout-req-0001"}
    if with_event_id:
        fields["event_id"] = "checkout-evt-0001"
    results = _race(server, _request(**fields))
    assert all(isinstance(r, decision_pb2.RankResponse) for r in results), results
    answers = {_answer(r) for r in results}  # type: ignore[arg-type]
    assert len(answers) == 1  # every caller got the same decision
    event_id = results[0].event_id  # type: ignore[attr-defined]
    assert event_id == "checkout-evt-0001" if with_event_id else event_id.startswith("evt_")
    keyring = server.running.runtime.keyring
    # Exactly one stored decision, one audit record, nothing dropped at commit.
    assert _stored(server) == ([(keyring.digest(event_id), keyring.digest("checkout-req-0001"))], 1)
    assert _lost() == lost_before
    # A later retry (now answered from the database) is still the same decision.
    again = decision_pb2_grpc.DecisionServiceStub(server.channel).Rank(
        _request(**fields), metadata=server.metadata(Role.SERVICE)
    )
    assert _answer(again) == answers.pop()
    assert _stored(server)[0] == [(keyring.digest(event_id), keyring.digest("checkout-req-0001"))]


def test_eight_ranks_with_one_caller_event_id_give_one_ok(server) -> None:  # type: ignore[no-untyped-def]
    lost_before = _lost()
    results = _race(server, _request(event_id="checkout-evt-0002"))
    ok = [r for r in results if isinstance(r, decision_pb2.RankResponse)]
    refused = [r for r in results if isinstance(r, grpc.RpcError)]
    assert len(ok) == 1 and len(refused) == CALLS - 1
    assert {e.code() for e in refused} == {grpc.StatusCode.INVALID_ARGUMENT}  # type: ignore[attr-defined]
    assert all("event_id" in e.details() for e in refused)  # type: ignore[attr-defined]
    keyring = server.running.runtime.keyring
    assert _stored(server) == ([(keyring.digest("checkout-evt-0002"), None)], 1)
    assert _lost() == lost_before


def test_a_retry_after_a_restart_returns_the_stored_decision(
    start_server: Callable[..., object], database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "shared-data"
    first = start_server(database_url, data_dir=data_dir)  # type: ignore[operator]
    stub = decision_pb2_grpc.DecisionServiceStub(first.channel)  # type: ignore[attr-defined]
    original = stub.Rank(_request(request_id="restart-req-0001"), metadata=first.metadata())  # type: ignore[attr-defined]
    first.running.stop(grace=1)  # type: ignore[attr-defined]
    second = start_server(database_url, data_dir=data_dir, seed=99)  # type: ignore[operator]
    stub = decision_pb2_grpc.DecisionServiceStub(second.channel)  # type: ignore[attr-defined]
    retried = stub.Rank(_request(request_id="restart-req-0001"), metadata=second.metadata())  # type: ignore[attr-defined]
    assert _answer(retried) == _answer(original)
    assert len(_stored(second)[0]) == 1
    # The event id Tacit made still joins a reward.
    reward = stub.Reward(
        decision_pb2.RewardRequest(event_id=retried.event_id, value=1.0),
        metadata=second.metadata(),  # type: ignore[attr-defined]
    )
    assert reward.outcome == decision_pb2.REWARD_OUTCOME_JOINED


@pytest.mark.parametrize(
    "changed",
    [{"subject": "someone-else"}, {"event_id": "another-evt-0001"}, {"slot": "other"}],
    ids=["subject", "event_id", "slot"],
)
def test_a_request_id_reused_for_another_rank_is_refused(
    start_server: Callable[..., object], changed: dict[str, str]
) -> None:
    handle = start_server(slots={"home": {}, "other": {}})  # type: ignore[operator]
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)  # type: ignore[attr-defined]
    metadata = handle.metadata()  # type: ignore[attr-defined]
    stub.Rank(_request(request_id="reused-req-0001"), metadata=metadata)
    request = _request(changed.get("subject", "racer"), request_id="reused-req-0001")
    if "event_id" in changed:
        request.event_id = changed["event_id"]
    if "slot" in changed:
        request.slot = changed["slot"]
    with pytest.raises(grpc.RpcError) as error:
        stub.Rank(request, metadata=metadata)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id" in error.value.details() and "reused-req-0001" not in error.value.details()
    assert len(_stored(handle)[0]) == 1


def test_a_retry_on_another_replica_gets_the_flushed_decision(
    start_server: Callable[..., object], database_url: str, tmp_path: Path
) -> None:
    keys = {"keys_file": str(tmp_path / "shared-keys.json")}  # replicas share the pseudonym keys
    one = start_server(database_url, privacy=keys)  # type: ignore[operator]
    two = start_server(database_url, privacy=keys, seed=7)  # type: ignore[operator]
    request = _request(request_id="replica-req-0001")
    original = decision_pb2_grpc.DecisionServiceStub(one.channel).Rank(  # type: ignore[attr-defined]
        request, metadata=one.metadata()  # type: ignore[attr-defined]
    )
    one.running.runtime.decision_log.flush()  # type: ignore[attr-defined]
    results = _race(two, request)
    assert {_answer(r) for r in results} == {_answer(original)}  # type: ignore[arg-type]
    assert len(_stored(two)[0]) == 1
