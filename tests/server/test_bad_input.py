"""Bad input gets a clear status naming the field; nothing is half-written; no value is echoed."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from sqlalchemy import func, select

from tacit.sim.client import rank_request, to_features
from tacit.store.schema import AuditRecord, Decision, TrackedEvent
from tacit.v1 import common_pb2, decision_pb2, decision_pb2_grpc, event_pb2, event_pb2_grpc

CANDIDATES = [("a1", {"topic": "news"}), ("b2", {"topic": "sports"})]
SECRET = "jane.doe.secret@example.com"


def field_violations(error: grpc.RpcError) -> list[str]:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    return [v.field for v in bad.field_violations]
    return []


def _request(**changes):  # type: ignore[no-untyped-def]
    request = rank_request("home", "user-1", {"device": "mobile"}, CANDIDATES)
    for name, value in changes.items():
        if name == "candidates":
            del request.candidates[:]
            request.candidates.extend(value)
        else:
            setattr(request, name, value)
    return request


def _nan_context(key: str = "hour") -> decision_pb2.RankRequest:
    request = _request()
    request.context.values[key].number_value = float("nan")
    return request


def _nan_candidate() -> decision_pb2.RankRequest:
    request = _request()
    request.candidates[1].features.values["price"].number_value = float("inf")
    return request


def _huge_string() -> decision_pb2.RankRequest:
    request = _request()
    request.context.values["referrer"].string_value = SECRET + "x" * 5000
    return request


def _huge_map() -> decision_pb2.RankRequest:
    request = _request()
    for index in range(100):
        request.context.values[f"f{index}"].number_value = index
    return request


def _bad_key() -> decision_pb2.RankRequest:
    request = _request()
    request.context.values[SECRET].string_value = "x"
    return request


BAD_RANKS = [
    ("no candidates", lambda: _request(candidates=[]), grpc.StatusCode.INVALID_ARGUMENT, "candidates"),
    (
        "duplicate ids",
        lambda: _request(candidates=[decision_pb2.Candidate(id="a1"), decision_pb2.Candidate(id="a1")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "candidates[1].id",
    ),
    (
        "too many candidates",
        lambda: _request(candidates=[decision_pb2.Candidate(id=f"c{i}") for i in range(201)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "candidates",
    ),
    ("nan context", _nan_context, grpc.StatusCode.INVALID_ARGUMENT, "context.values[hour]"),
    # An undeclared key could itself be personal data: it is named by position (device, score).
    ("nan undeclared", lambda: _nan_context("score"), grpc.StatusCode.INVALID_ARGUMENT, "context.values[#1]"),
    (
        "inf candidate feature",
        _nan_candidate,
        grpc.StatusCode.INVALID_ARGUMENT,
        "candidates[1].features.values[price]",
    ),
    ("oversized string", _huge_string, grpc.StatusCode.INVALID_ARGUMENT, "context.values[referrer]"),
    ("oversized map", _huge_map, grpc.StatusCode.INVALID_ARGUMENT, "context"),
    (
        "personal data as a key",
        _bad_key,
        grpc.StatusCode.INVALID_ARGUMENT,
        "context.values[#1]",
    ),  # sorted: device, then the key
    ("unknown slot", lambda: _request(slot="nowhere"), grpc.StatusCode.NOT_FOUND, None),
    ("no subject", lambda: _request(subject_id=""), grpc.StatusCode.INVALID_ARGUMENT, "subject_id"),
    (
        "bad candidate id",
        lambda: _request(candidates=[decision_pb2.Candidate(id=SECRET)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "candidates[0].id",
    ),
    ("bad event id", lambda: _request(event_id="short"), grpc.StatusCode.INVALID_ARGUMENT, "event_id"),
]


@pytest.mark.parametrize(("case", "build", "code", "field"), BAD_RANKS, ids=[c[0] for c in BAD_RANKS])
def test_bad_rank_is_refused_with_the_field_named_and_nothing_written(
    server, case, build, code, field
) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.Rank(build(), metadata=server.metadata())
    assert error.value.code() == code, case
    if field is not None:
        assert field_violations(error.value) == [field]
    assert SECRET not in (error.value.details() or "")
    server.running.runtime.decision_log.flush()
    with server.running.runtime.db.transaction() as session:
        assert session.execute(select(func.count()).select_from(Decision)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(AuditRecord)).scalar_one() == 0


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        (decision_pb2.RewardRequest(event_id="evt_unknown_000", value=1), grpc.StatusCode.NOT_FOUND, None),
        (decision_pb2.RewardRequest(event_id="", value=1), grpc.StatusCode.INVALID_ARGUMENT, "event_id"),
        (
            decision_pb2.RewardRequest(event_id="evt_x_00000000", value=float("nan")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "value",
        ),
    ],
)
def test_bad_reward_gets_the_right_status(server, request_, code, field) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.Reward(request_, metadata=server.metadata())
    assert error.value.code() == code
    if field:
        assert field_violations(error.value) == [field]


def test_a_bad_event_in_a_batch_writes_nothing(server) -> None:  # type: ignore[no-untyped-def]
    stub = event_pb2_grpc.EventServiceStub(server.channel)
    good = event_pb2.Event(
        event_id="ev-good-0001",
        subject_id="u1",
        event_type="click",
        properties=to_features({"device": "mobile"}),
    )
    bad = event_pb2.Event(event_id="ev-bad-00001", subject_id="u1", event_type="teleport")
    with pytest.raises(grpc.RpcError) as error:
        stub.TrackEvents(event_pb2.TrackEventsRequest(events=[good, bad]), metadata=server.metadata())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == ["events[1].event_type"]
    with server.running.runtime.db.transaction() as session:
        assert session.execute(select(func.count()).select_from(TrackedEvent)).scalar_one() == 0


def test_raw_email_in_context_never_reaches_disk(start_server) -> None:  # type: ignore[no-untyped-def]
    handle = start_server()
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    request = rank_request(
        "home", SECRET, {"device": "mobile", "referrer": f"https://x.test/?u={SECRET}"}, CANDIDATES
    )
    request.context.values["email"].string_value = SECRET
    request.context.values["search_query"].string_value = f"contact me at {SECRET}"
    request.context.values["unknown_field"].string_value = SECRET
    response = stub.Rank(request, metadata=handle.metadata())
    stub.Reward(decision_pb2.RewardRequest(event_id=response.event_id, value=1), metadata=handle.metadata())
    handle.running.stop(grace=1)
    needle = SECRET.encode()
    for path in handle.data_dir.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), path.name


def test_storage_down_gives_unavailable(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    handle = start_server()
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    response = stub.Rank(rank_request("home", "u", {}, CANDIDATES), metadata=handle.metadata())
    handle.running.runtime.decision_log.flush()
    handle.running.runtime.db.engine.dispose()
    # Replace the database file by a directory: every new connection now fails to open it.
    for suffix in ("", "-wal", "-shm"):
        source = handle.data_dir / f"tacit.db{suffix}"
        if source.exists():
            source.rename(tmp_path / f"moved{suffix}")
    (handle.data_dir / "tacit.db").mkdir()
    with pytest.raises(grpc.RpcError) as error:
        stub.Reward(
            decision_pb2.RewardRequest(event_id=response.event_id, value=1), metadata=handle.metadata()
        )
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "retry" in error.value.details()


def test_value_without_kind_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    request = _request()
    request.context.values["country"].CopyFrom(common_pb2.Value())
    with pytest.raises(grpc.RpcError) as error:
        stub.Rank(request, metadata=server.metadata())
    assert field_violations(error.value) == ["context.values[country]"]
