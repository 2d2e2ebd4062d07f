"""Eight identical experiment mutations or erasures at once, with one request_id: one effect.

On the code before this test, twins raced past the idempotency check (an IntegrityError surfaced
as INTERNAL, or a twin saw the first's row but not its key and answered ALREADY_EXISTS), and
every erasure appended its own audit record (PostgreSQL: concurrent VACUUMs answered
UNAVAILABLE). Creates and state changes now take the write lock first (SQLite) and look twice
(PostgreSQL); erasures are serialized and remembered by a keyed request digest.

The idempotent RPCs not covered by the reward, event and Rank tests: CreateExperiment,
StartExperiment and EraseSubject. Runs on SQLite and PostgreSQL through the real server;
the expected final rows are spelled out.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from sqlalchemy import func, select

from tacit.server.auth import Role
from tacit.store.schema import AuditRecord, Decision, ExperimentRecord, IdempotencyKey
from tacit.v1 import (
    audit_pb2,
    audit_pb2_grpc,
    decision_pb2,
    decision_pb2_grpc,
    experiment_pb2,
    experiment_pb2_grpc,
)

CALLERS = 8


def _all_at_once(call: Any) -> list[Any]:
    barrier = threading.Barrier(CALLERS)

    def one(_index: int) -> Any:
        barrier.wait()
        try:
            return call()
        except grpc.RpcError as error:
            return error

    with ThreadPoolExecutor(CALLERS) as pool:
        return list(pool.map(one, range(CALLERS)))


def _codes(answers: list[Any]) -> Counter[str]:
    return Counter(a.code().name if isinstance(a, grpc.RpcError) else "OK" for a in answers)


def _experiment() -> experiment_pb2.Experiment:
    return experiment_pb2.Experiment(
        slot="home",
        arms=[
            experiment_pb2.Arm(name="control", policy="static:first", weight=0.5),
            experiment_pb2.Arm(name="treatment", policy="uniform", weight=0.5),
        ],
        primary_metric="click_through",
        stages=[experiment_pb2.Stage(percent=p) for p in (5, 50, 100)],
    )


def test_concurrent_identical_create_and_start_apply_once(server) -> None:  # type: ignore[no-untyped-def]
    stub = experiment_pb2_grpc.ExperimentServiceStub(server.channel)
    metadata = server.metadata(Role.EXPERIMENTER)
    create = experiment_pb2.CreateExperimentRequest(
        experiment_id="hero-race", experiment=_experiment(), request_id="create-hero-race-0001"
    )
    created = _all_at_once(lambda: stub.CreateExperiment(create, metadata=metadata, timeout=30))
    assert _codes(created) == Counter({"OK": CALLERS}), [
        (a.code(), a.details()) for a in created if isinstance(a, grpc.RpcError)
    ]
    assert len({a.name for a in created}) == 1
    start = experiment_pb2.ExperimentActionRequest(
        name="experiments/hero-race", reason="go", request_id="start-hero-race-0001"
    )
    started = _all_at_once(lambda: stub.StartExperiment(start, metadata=metadata, timeout=30))
    assert _codes(started) == Counter({"OK": CALLERS}), [
        (a.code(), a.details()) for a in started if isinstance(a, grpc.RpcError)
    ]
    changes = stub.ListExperimentChanges(
        experiment_pb2.ListExperimentChangesRequest(name="experiments/hero-race"), metadata=metadata
    ).changes
    with server.running.runtime.db.transaction() as session:
        rows = session.execute(select(ExperimentRecord.state, ExperimentRecord.stage_index)).all()
    assert [tuple(row) for row in rows] == [("running", 0)]
    # One creation and one start in the history, whatever the number of callers.
    assert Counter(change.action for change in changes) == Counter({"create": 1, "start": 1})


def test_concurrent_identical_erasures_erase_once_and_audit_once(server) -> None:  # type: ignore[no-untyped-def]
    decisions = decision_pb2_grpc.DecisionServiceStub(server.channel)
    for _ in range(5):
        decisions.Rank(
            decision_pb2.RankRequest(
                slot="home", subject_id="leaving-user", candidates=[decision_pb2.Candidate(id="a-1")]
            ),
            metadata=server.metadata(),
        )
    server.running.runtime.decision_log.flush()
    audit = audit_pb2_grpc.AuditServiceStub(server.channel)
    request = audit_pb2.EraseSubjectRequest(subject_id="leaving-user", request_id="erase-leaving-0001")
    answers = _all_at_once(
        lambda: audit.EraseSubject(request, metadata=server.metadata(Role.AUDITOR), timeout=60)
    )
    assert _codes(answers) == Counter({"OK": CALLERS}), [
        (a.code(), a.details()) for a in answers if isinstance(a, grpc.RpcError)
    ]
    # The rows went once; every twin is answered with that one erasure's counts.
    assert [a.decisions_erased for a in answers] == [5] * CALLERS
    with server.running.runtime.db.transaction() as session:
        left = session.execute(select(func.count()).select_from(Decision)).scalar_one()
        erasures = session.execute(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.payload_kind == "erasure")
        ).scalar_one()
    assert left == 0
    assert erasures == 1, "one erasure audit record for one request id"

    # A later retry is answered the same way, still without a second record.
    again = audit.EraseSubject(request, metadata=server.metadata(Role.AUDITOR), timeout=60)
    assert again.decisions_erased == 5
    # The same request id for another subject is another erasure, not a replay.
    decisions.Rank(
        decision_pb2.RankRequest(
            slot="home", subject_id="other-user", candidates=[decision_pb2.Candidate(id="a-1")]
        ),
        metadata=server.metadata(),
    )
    server.running.runtime.decision_log.flush()
    other = audit.EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id="other-user", request_id="erase-leaving-0001"),
        metadata=server.metadata(Role.AUDITOR),
    )
    assert other.decisions_erased == 1
    with server.running.runtime.db.transaction() as session:
        erasures = session.execute(
            select(func.count()).select_from(AuditRecord).where(AuditRecord.payload_kind == "erasure")
        ).scalar_one()
        keys = session.execute(select(IdempotencyKey.request_id)).scalars().all()
    assert erasures == 2
    # Nothing stored names the request id or a subject in the clear.
    assert not any("leaving" in key or "other-user" in key for key in keys)
