"""One request cannot buy unbounded Presidio time: the anonymization budget refuses it before any work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from test_malformed import _reason

from tacit.v1 import common_pb2, decision_pb2, decision_pb2_grpc, event_pb2, event_pb2_grpc


def _text(seed: int) -> str:
    return (f"call me at 555 010 {seed:04d} or write to someone{seed}@example.org. " * 60)[:2000]


def test_rank_with_heavy_scrubbed_candidates_is_refused_before_any_work(
    start_server: Callable[..., Any],
) -> None:
    server = start_server()
    stub = decision_pb2_grpc.DecisionServiceStub(server.channel)
    candidates = [
        decision_pb2.Candidate(
            id=f"c{index}",
            features=common_pb2.Features(
                values={
                    "title": common_pb2.Value(string_value=_text(index)),
                    "description": common_pb2.Value(string_value=_text(index + 1000)),
                }
            ),
        )
        for index in range(200)
    ]
    request = decision_pb2.RankRequest(slot="home", subject_id="user-1", candidates=candidates)
    with pytest.raises(grpc.RpcError) as refused:
        stub.Rank(request, metadata=server.metadata(), timeout=10)  # 18 CPU-seconds of Presidio before
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(refused.value) == "ANONYMIZATION_BUDGET_EXCEEDED"
    assert "max_scrub_chars_per_request" in refused.value.details()
    assert "555" not in refused.value.details()
    # Within the budget the same shape is served.
    small = decision_pb2.RankRequest(slot="home", subject_id="user-1", candidates=candidates[:10])
    assert stub.Rank(small, metadata=server.metadata(), timeout=60).chosen_id


def test_track_events_over_the_budget_is_refused(start_server: Callable[..., Any]) -> None:
    server = start_server(limits={"max_scrub_chars_per_request": 5_000})
    stub = event_pb2_grpc.EventServiceStub(server.channel)
    events = [
        event_pb2.Event(
            event_id=f"budget-{index:04d}",
            subject_id="user-1",
            event_type="click",
            properties=common_pb2.Features(values={"text": common_pb2.Value(string_value=_text(index))}),
        )
        for index in range(3)
    ]
    with pytest.raises(grpc.RpcError) as refused:
        stub.TrackEvents(event_pb2.TrackEventsRequest(events=events), metadata=server.metadata(), timeout=10)
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _reason(refused.value) == "ANONYMIZATION_BUDGET_EXCEEDED"
    accepted = stub.TrackEvents(
        event_pb2.TrackEventsRequest(events=events[:2]), metadata=server.metadata(), timeout=60
    ).accepted
    assert accepted == 2
