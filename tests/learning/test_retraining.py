"""Retraining that runs itself, through a real server: the scheduler thread (learner process)
checks drift and age, trains a candidate on fresh data, scores both versions on a fresh holdout
and promotes only a candidate that is not worse beyond the tolerance.

Both scenarios use one simulated history of 13 weeks (80 subjects) sent with TrackEvents; the active version
is trained on what was known six weeks ago. Then either
* the site changes (dwell on mobile x2.5, on desktop x0.67 for the last six weeks): the drift
  triggers a retrain, the candidate that learned the new behaviour wins on the holdout; or
* a client bug logs dwell_ms 100 times too small for four weeks, then is fixed: the candidate
  learned from that bad window, the clean holdout shows it, and it is refused.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from tacit.cli import main as tacit_main
from tacit.learning.engagement import EngagementJob, run_engagement_training
from tacit.learning.registry import needs_retraining
from tacit.learning.registry_models import active_record, get_record
from tacit.server.auth import Role
from tacit.v1 import audit_pb2, audit_pb2_grpc, model_pb2, model_pb2_grpc, prediction_pb2, prediction_pb2_grpc
from tests.conftest import ServerHandle
from tests.server.test_bad_input import field_violations

sys.path.insert(0, str(Path(__file__).parent))
from sim_events import DwellShift, send_events, simulate_events  # noqa: E402

RETRAINING = {
    "interval_seconds": 3600.0,  # the test wakes the scheduler instead of waiting an hour
    "max_model_age_days": None,
    "training_days": 28.0,
    "holdout_days": 7.0,
    "snapshot_every_days": 3.5,
    "tolerance": 0.02,
}


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        code = tacit_main(list(argv))
    finally:
        sys.stdout = real
    return code, out.getvalue()


def first_finished_run(handle: ServerHandle, timeout: float = 50.0) -> model_pb2.RetrainingRun:
    stub = model_pb2_grpc.ModelServiceStub(handle.channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = stub.ListRetrainingRuns(
            model_pb2.ListRetrainingRunsRequest(task="engagement"),
            metadata=handle.metadata(Role.EXPERIMENTER),
        ).runs
        done = [r for r in runs if r.outcome != "running"]
        if done:
            return done[-1]
        time.sleep(0.2)
    raise AssertionError("no retraining run finished")


def history_with_active_model(
    start_server: Callable[..., ServerHandle], database_url: str, shift: DwellShift, known_until: datetime,
    now: datetime, **retraining: object,
) -> ServerHandle:  # fmt: skip
    handle = start_server(database_url, retraining={**RETRAINING, **retraining})
    events = simulate_events(n_subjects=80, days=91, seed=11, end=now, dwell_shift=shift)
    assert send_events(handle.channel, handle.metadata(Role.SERVICE), events) == len(events)
    run_engagement_training(
        handle.running.runtime.db,
        handle.data_dir / "models",
        EngagementJob(observed_until=known_until, snapshot_every=timedelta(days=3.5)),
    )
    return handle


def steps(run: model_pb2.RetrainingRun) -> dict[str, model_pb2.RetrainingStep]:
    return {step.name: step for step in run.steps}


def test_injected_drift_triggers_a_retrain_and_the_better_candidate_is_promoted(
    database_url: str, start_server: Callable[..., ServerHandle]
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    change = now - timedelta(days=42)

    def redesign(at: datetime, device: str) -> float:
        return {"mobile": 0.9, "desktop": -0.4}.get(device, 0.0) if at >= change else 0.0

    handle = history_with_active_model(start_server, database_url, redesign, change, now)
    retrainer = handle.running.runtime.retrainer
    assert retrainer is not None
    retrainer.wake()
    run = first_finished_run(handle)
    print(run)

    assert run.outcome == "promoted" and list(run.triggers) == ["drift"]
    assert [s.name for s in run.steps] == ["drift", "age", "train", "validate", "promote"]
    drift = steps(run)["drift"]
    assert "dwell_mean" in drift.note and drift.figures["max_feature_psi"] >= 0.2
    assert (run.active_version, run.candidate_version) == ("v000001", "v000002")
    # Promoted because it scores better on the drifted holdout, and both figures are the validate step's.
    assert run.metric == "rmse" and run.candidate_score < run.active_score
    validate = steps(run)["validate"].figures
    assert validate["candidate_rmse"] == pytest.approx(run.candidate_score)
    assert validate["active_rmse"] == pytest.approx(run.active_score)
    assert run.holdout_rows == validate["holdout_rows"] >= 30
    db = handle.running.runtime.db
    active = active_record(db, "engagement")
    assert active is not None and active.version == "v000002"
    assert not get_record(db, "engagement", "v000001").active
    assert active.details["retraining_run"] == run.id

    # Served without a restart.
    stub = prediction_pb2_grpc.PredictionServiceStub(handle.channel)
    deadline, version = time.monotonic() + 10, ""
    while time.monotonic() < deadline and version != "v000002":
        version = stub.PredictEngagement(
            prediction_pb2.PredictEngagementRequest(subject_id="sim-user-11-00001"),
            metadata=handle.metadata(),
        ).model_version
        time.sleep(0.1)
    assert version == "v000002"


def test_a_candidate_from_a_bad_training_window_is_refused(
    database_url: str, start_server: Callable[..., ServerHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    bug = (now - timedelta(days=42), now - timedelta(days=14))

    def unit_bug(at: datetime, device: str) -> float:
        return -4.6 if bug[0] <= at < bug[1] else 0.0  # dwell_ms logged x0.01

    # Any age is too old here: the age trigger fires as well as the drift the bug causes.
    handle = history_with_active_model(
        start_server, database_url, unit_bug, bug[0], now, max_model_age_days=1e-9
    )
    retrainer = handle.running.runtime.retrainer
    assert retrainer is not None
    retrainer.wake()
    run = first_finished_run(handle)
    print(run)

    assert run.outcome == "refused" and set(run.triggers) == {"drift", "age"}
    assert [s.name for s in run.steps] == ["drift", "age", "train", "validate", "refuse"]
    assert run.candidate_score > run.active_score * (1 + run.tolerance)
    assert steps(run)["refuse"].figures["limit"] == pytest.approx(run.active_score * 1.02)
    db = handle.running.runtime.db
    active = active_record(db, "engagement")
    assert active is not None and active.version == "v000001"
    candidate = get_record(db, "engagement", run.candidate_version)
    assert not candidate.active and candidate.details["retraining_run"] == run.id

    # The CLI shows the same run and its steps.
    monkeypatch.setenv("TACIT_STORAGE__URL", handle.settings.storage.url)
    code, output = run_cli("retraining", "list", "--steps", "--data-dir", str(handle.data_dir))
    assert code == 0 and "refused" in output and "run 1 refuse:" in output


def test_the_scheduler_runs_on_its_cadence_in_the_learner_process_only(
    database_url: str, start_server: Callable[..., ServerHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    # No trigger can fire: every run ends "fresh" after its drift and age steps.
    handle = start_server(
        database_url, retraining={"interval_seconds": 0.3, "psi_threshold": 1e9, "max_model_age_days": None}
    )
    events = simulate_events(n_subjects=60, days=56, seed=2)
    send_events(handle.channel, handle.metadata(), events)
    monkeypatch.setenv("TACIT_STORAGE__URL", handle.settings.storage.url)
    code, output = run_cli(
        "train", "engagement", "--snapshot-every-days", "3.5", "--data-dir", str(handle.data_dir)
    )
    assert code == 0, output
    stub = model_pb2_grpc.ModelServiceStub(handle.channel)
    experimenter = handle.metadata(Role.EXPERIMENTER)
    deadline = time.monotonic() + 40
    runs: list[model_pb2.RetrainingRun] = []
    while time.monotonic() < deadline and len(runs) < 2:
        runs = [
            r
            for r in stub.ListRetrainingRuns(
                model_pb2.ListRetrainingRunsRequest(), metadata=experimenter
            ).runs
            if r.outcome != "running"
        ]
        time.sleep(0.2)
    assert len(runs) >= 2
    assert all(r.outcome == "fresh" and not r.triggers and not r.candidate_version for r in runs)
    assert all([s.name for s in r.steps] == ["drift", "age"] for r in runs)
    assert not runs[0].HasField("active_score") and runs[0].HasField("end_time")

    first = stub.ListRetrainingRuns(model_pb2.ListRetrainingRunsRequest(page_size=1), metadata=experimenter)
    assert len(first.runs) == 1 and first.next_page_token
    second = stub.ListRetrainingRuns(
        model_pb2.ListRetrainingRunsRequest(page_size=1, page_token=first.next_page_token),
        metadata=experimenter,
    )
    assert second.runs[0].id < first.runs[0].id
    for request, field in (
        (model_pb2.ListRetrainingRunsRequest(task="no such task"), "task"),
        (model_pb2.ListRetrainingRunsRequest(page_size=-1), "page_size"),
        (model_pb2.ListRetrainingRunsRequest(page_token="garbage!"), "page_token"),
    ):
        with pytest.raises(grpc.RpcError) as bad:
            stub.ListRetrainingRuns(request, metadata=experimenter)
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(bad.value) == [field]
    with pytest.raises(grpc.RpcError) as denied:
        stub.ListRetrainingRuns(model_pb2.ListRetrainingRunsRequest(), metadata=handle.metadata(Role.SERVICE))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # A process without the learner (workers 1..n) has no scheduler.
    serving_only = start_server(
        database_url, learner={"enabled": False}, privacy={"keys_file": str(handle.settings.keys_path)}
    )
    assert serving_only.running.runtime.retrainer is None


def test_an_erasure_in_the_active_versions_data_triggers_a_retrain(
    database_url: str, start_server: Callable[..., ServerHandle]
) -> None:
    handle = start_server(database_url, retraining={**RETRAINING, "psi_threshold": 1e9})
    events = simulate_events(n_subjects=60, days=56, seed=2)
    send_events(handle.channel, handle.metadata(), events)
    db = handle.running.runtime.db
    run_engagement_training(db, handle.data_dir / "models", EngagementJob(snapshot_every=timedelta(days=3.5)))
    erased = audit_pb2_grpc.AuditServiceStub(handle.channel).EraseSubject(
        audit_pb2.EraseSubjectRequest(subject_id=events[0].subject_id), metadata=handle.metadata(Role.AUDITOR)
    )
    assert erased.events_erased > 0
    before = active_record(db, "engagement")
    assert before is not None and needs_retraining(before.details)
    retrainer = handle.running.runtime.retrainer
    assert retrainer is not None
    retrainer.wake()
    run = first_finished_run(handle)
    assert list(run.triggers) == ["erasure"] and steps(run)["age"].figures["erasure_marked"] == 1.0
    assert run.outcome in {"promoted", "refused"} and run.candidate_version == "v000002"
    # The candidate was trained after the erasure: it is not marked.
    assert not needs_retraining(get_record(db, "engagement", "v000002").details)
