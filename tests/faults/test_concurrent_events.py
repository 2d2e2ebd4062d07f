"""Eight identical TrackEvents calls at once: all OK, one stored row per event id, one audit record each.

Runs on SQLite and PostgreSQL through the real server.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import grpc
from sqlalchemy import func, select

from tacit.sim.client import to_features
from tacit.store.schema import AuditRecord, TrackedEvent
from tacit.v1 import event_pb2, event_pb2_grpc

CALLERS = 8
ROUNDS = 6


def _batch(round_: int, overlap: bool) -> event_pb2.TrackEventsRequest:
    ids = [f"evt-{round_:03d}-{i:04d}" for i in range(5)]
    if overlap:  # a later batch re-sends two of these ids with one new one, in another order
        ids = [ids[3], f"evt-{round_:03d}-new0", ids[1]]
    return event_pb2.TrackEventsRequest(
        events=[
            event_pb2.Event(
                event_id=event_id,
                subject_id=f"user-{round_}",
                event_type="click",
                properties=to_features({"device": "mobile"}),
            )
            for event_id in ids
        ]
    )


def _all_at_once(stub, request, metadata):  # type: ignore[no-untyped-def]
    barrier = threading.Barrier(CALLERS)

    def call(_: int):  # type: ignore[no-untyped-def]
        barrier.wait()
        try:
            return stub.TrackEvents(request, metadata=metadata)
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(CALLERS) as pool:
        return list(pool.map(call, range(CALLERS)))


def test_concurrent_identical_track_events_all_ok_and_stored_once(server) -> None:  # type: ignore[no-untyped-def]
    stub = event_pb2_grpc.EventServiceStub(server.channel)
    db = server.running.runtime.db
    with db.transaction() as session:
        audits_before = session.execute(select(func.count()).select_from(AuditRecord)).scalar_one()
    for round_ in range(ROUNDS):
        for overlap, size, fresh in ((False, 5, 5), (True, 3, 1)):
            answers = _all_at_once(stub, _batch(round_, overlap), server.metadata())
            errors = [(a.code(), a.details()) for a in answers if isinstance(a, grpc.RpcError)]
            assert errors == []
            # Exactly one caller stored each new event; every other caller saw it as a duplicate.
            assert sum(a.accepted for a in answers) == fresh
            assert all(a.accepted + a.duplicates == size for a in answers)
    with db.transaction() as session:
        rows = session.execute(select(TrackedEvent.event_id)).scalars().all()
        audits = session.execute(select(func.count()).select_from(AuditRecord)).scalar_one()
    digest = server.running.runtime.keyring.digest  # event ids are stored as keyed digests
    assert sorted(rows) == sorted(
        [digest(f"evt-{r:03d}-{i:04d}") for r in range(ROUNDS) for i in range(5)]
        + [digest(f"evt-{r:03d}-new0") for r in range(ROUNDS)]
    )
    # One anonymization audit record per stored event, none for the duplicates.
    assert audits - audits_before == len(rows)
