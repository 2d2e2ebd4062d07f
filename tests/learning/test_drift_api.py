"""GetDriftReport through a real server: every figure the library computes reaches the wire.

A conversion classifier is trained on a simulated history sent with TrackEvents;
then a wave of recent tablet-only visitors shifts the device mix, and the report
(over gRPC and from `tacit drift`) must flag ``device``. For a bandit slot the
reward rate and the context of decisions logged through Rank/Reward are compared
between the recent window and the decisions before it.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from sqlalchemy import select

from tacit.cli import main as tacit_main
from tacit.learning.evaluation import drift_report
from tacit.learning.registry_models import ServingClassifiers
from tacit.server.auth import Role
from tacit.sim.client import rank_request
from tacit.store.schema import Decision
from tacit.v1 import decision_pb2, decision_pb2_grpc, model_pb2, model_pb2_grpc
from tests.conftest import ServerHandle

sys.path.insert(0, str(Path(__file__).parent))
from sim_events import SimEvent, send_events, simulate_events  # noqa: E402

THRESHOLD = 0.2
EPSILON = 1e-4


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        code = tacit_main(list(argv))
    finally:
        sys.stdout = real
    return code, out.getvalue()


def psi_by_hand(reference: dict[str, int], current: dict[str, int]) -> float:
    """sum (c - r) ln(c / r) over the union of categories, empty shares as EPSILON."""
    n_ref, n_cur = sum(reference.values()), sum(current.values())
    total = 0.0
    for category in set(reference) | set(current):
        r = max(reference.get(category, 0) / n_ref, EPSILON)
        c = max(current.get(category, 0) / n_cur, EPSILON)
        total += (c - r) * math.log(c / r)
    return total


def psi_of(report: model_pb2.DriftReport, feature: str) -> float:
    return next(f.psi for f in report.features if f.feature == feature)


def assert_consistent(report: model_pb2.DriftReport) -> None:
    """drifted_features are exactly the features at or above threshold, worst first."""
    assert report.threshold == THRESHOLD
    flagged = sorted((f for f in report.features if f.psi >= report.threshold), key=lambda f: -f.psi)
    assert list(report.drifted_features) == [f.feature for f in flagged]
    prediction_drift = report.HasField("prediction_psi") and report.prediction_psi >= report.threshold
    reward_drift = report.HasField("reward_rate_drift") and report.reward_rate_drift.drifted
    assert report.stale == (bool(flagged) or prediction_drift or reward_drift)


def test_classifier_drift_report_carries_prediction_psi_windows_and_flags_a_device_shift(
    start_server: Callable[..., ServerHandle],
) -> None:
    handle = start_server()
    events = simulate_events(n_subjects=300, days=84, seed=3)
    assert send_events(handle.channel, handle.metadata(Role.SERVICE), events) == len(events)
    code, output = run_cli("train", "conversion", "--data-dir", str(handle.data_dir))
    assert code == 0, output
    stub = model_pb2_grpc.ModelServiceStub(handle.channel)
    experimenter = handle.metadata(Role.EXPERIMENTER)
    request = model_pb2.GetDriftReportRequest(task="conversion")

    before = stub.GetDriftReport(request, metadata=experimenter)
    assert_consistent(before)
    assert before.model_version == "v000001"
    assert before.HasField("prediction_psi") and 0.0 <= before.prediction_psi < 10.0
    assert not before.HasField("reward_rate_drift")  # a classifier keeps no reference label rate
    latest = max(e.occurred_at for e in events)
    assert before.current_end_time.ToDatetime(tzinfo=UTC) == latest
    assert before.current_end_time.ToDatetime(tzinfo=UTC) - before.current_start_time.ToDatetime(
        tzinfo=UTC
    ) == timedelta(days=7)
    reference_start = before.reference_start_time.ToDatetime(tzinfo=UTC)
    reference_end = before.reference_end_time.ToDatetime(tzinfo=UTC)
    assert min(e.occurred_at for e in events) < reference_start < reference_end < latest
    assert before.reference_count > 100 and before.current_count > 50
    # The simulated device mix (55/35/10 %) is the same in both windows.
    assert psi_of(before, "device") < 0.05 and "device" not in before.drifted_features

    # The wire carries the library's numbers.
    db = handle.running.runtime.db
    summary = drift_report(db, "conversion", ServingClassifiers(db).get("conversion"))
    assert summary.report.prediction_psi == pytest.approx(before.prediction_psi)
    assert {f.feature: f.psi for f in before.features} == pytest.approx(dict(summary.report.feature_psi))

    # 400 new visitors on tablets during the last day: tablets go from ~10 % to most of the window.
    shift = []
    for s in range(400):
        at = latest - timedelta(hours=20) + timedelta(seconds=60 * s)
        subject = f"shift-{s:04d}"
        shift.append(SimEvent(f"shift-{s:04d}-1", subject, "session_start", at,
                              {"device": "tablet", "referrer_class": "direct"}))  # fmt: skip
        shift.append(SimEvent(f"shift-{s:04d}-2", subject, "page_view", at + timedelta(seconds=30),
                              {"device": "tablet", "dwell_ms": 8000.0, "scroll_depth": 0.5}))  # fmt: skip
    assert send_events(handle.channel, handle.metadata(Role.SERVICE), shift) == len(shift)

    after = stub.GetDriftReport(request, metadata=experimenter)
    assert_consistent(after)
    assert after.current_count == before.current_count + 400
    assert after.current_end_time == before.current_end_time  # the newest event did not move
    assert psi_of(after, "device") > THRESHOLD > psi_of(before, "device")
    assert "device" in after.drifted_features and after.stale
    assert after.HasField("prediction_psi")

    code, output = run_cli("drift", "conversion", "--data-dir", str(handle.data_dir))
    print(output)
    assert code == 3  # stale
    drifted_line = next(line for line in output.splitlines() if line.startswith("drifted features"))
    assert "device" in drifted_line
    assert "predictions" in output and "reference:" in output and "STALE" in output


def _rank_and_reward(
    handle: ServerHandle, rng: np.random.Generator, n: int, devices: dict[str, float], click_rate: float
) -> tuple[dict[str, int], int]:
    """n Rank + Reward round trips; returns (device counts, clicks)."""
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    service = handle.metadata(Role.SERVICE)
    names, weights = list(devices), list(devices.values())
    counts: dict[str, int] = {}
    clicks = 0
    for i in range(n):
        device = names[int(rng.choice(len(names), p=weights))]
        counts[device] = counts.get(device, 0) + 1
        context: dict[str, str | float] = {"device": device, "hour": float(rng.integers(0, 24))}
        candidates: list[tuple[str, dict[str, str | float]]] = [
            (f"item-{k}", {"topic": f"t{k}", "length": float(k)}) for k in range(3)
        ]
        response = stub.Rank(rank_request("home", f"visitor-{i}", context, candidates), metadata=service)
        clicked = bool(rng.random() < click_rate)
        clicks += clicked
        stub.Reward(
            decision_pb2.RewardRequest(event_id=response.event_id, value=1.0 if clicked else 0.0),
            metadata=service,
        )
    return counts, clicks


def test_bandit_drift_report_compares_reward_rate_and_context_of_logged_decisions(
    start_server: Callable[..., ServerHandle],
) -> None:
    handle = start_server(seed=5)
    stub = model_pb2_grpc.ModelServiceStub(handle.channel)
    experimenter = handle.metadata(Role.EXPERIMENTER)
    request = model_pb2.GetDriftReportRequest(task="bandit:home")
    rng = np.random.default_rng(12)

    with pytest.raises(grpc.RpcError) as empty:
        stub.GetDriftReport(request, metadata=experimenter)
    assert empty.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    n = 300
    old_devices, old_clicks = _rank_and_reward(handle, rng, n, {"mobile": 0.6, "desktop": 0.4}, 0.5)

    # Everything is recent so far: no reference window, nothing to compare, not stale.
    only_recent = stub.GetDriftReport(request, metadata=experimenter)
    assert only_recent.reward_rate_drift.status == "empty_window"
    assert not only_recent.reward_rate_drift.drifted and not only_recent.stale
    assert only_recent.reference_count == 0 and only_recent.current_count == n
    assert not only_recent.HasField("reference_start_time")

    # Those decisions move two weeks back: they become the reference window.
    db = handle.running.runtime.db
    with db.transaction() as session:
        for decision in session.scalars(select(Decision)):
            created = decision.created_at.replace(tzinfo=decision.created_at.tzinfo or UTC)
            deadline = decision.reward_deadline.replace(tzinfo=decision.reward_deadline.tzinfo or UTC)
            decision.created_at = created - timedelta(days=14)
            decision.reward_deadline = deadline - timedelta(days=14)

    new_devices, new_clicks = _rank_and_reward(handle, rng, n, {"tablet": 0.8, "mobile": 0.2}, 0.25)
    report = stub.GetDriftReport(request, metadata=experimenter)
    print(report)
    assert_consistent(report)
    assert report.task == "bandit:home"
    assert not report.HasField("prediction_psi")  # a bandit has no scores to compare

    reward = report.reward_rate_drift
    assert reward.status == "ok" and reward.alpha == 0.01
    assert (reward.reference_count, reward.current_count) == (n, n)
    assert reward.reference_rate == pytest.approx(old_clicks / n)
    assert reward.current_rate == pytest.approx(new_clicks / n)
    pooled = (old_clicks + new_clicks) / (2 * n)
    z = (new_clicks / n - old_clicks / n) / math.sqrt(pooled * (1 - pooled) * 2 / n)
    assert reward.z == pytest.approx(z) and z < -4
    assert reward.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)))
    assert reward.drifted and report.stale

    assert psi_of(report, "device") == pytest.approx(psi_by_hand(old_devices, new_devices))
    assert psi_of(report, "device") > THRESHOLD
    assert "device" in report.drifted_features and "hour" not in report.drifted_features

    end = report.current_end_time.ToDatetime(tzinfo=UTC)
    start = report.current_start_time.ToDatetime(tzinfo=UTC)
    assert end - start == timedelta(days=7)
    assert report.reference_start_time.ToDatetime(tzinfo=UTC) <= report.reference_end_time.ToDatetime(
        tzinfo=UTC
    ) <= start
    assert (report.reference_count, report.current_count) == (n, n)

    code, output = run_cli("drift", "bandit:home", "--data-dir", str(handle.data_dir))
    print(output)
    assert code == 3
    assert "reward rate" in output and "DRIFTED" in output and "device" in output


@pytest.mark.parametrize(
    ("task", "code"),
    [
        ("bandit:nowhere", grpc.StatusCode.NOT_FOUND),
        ("bandit:Bad Slot", grpc.StatusCode.INVALID_ARGUMENT),
        ("revenue", grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_a_bad_drift_task_is_refused(
    start_server: Callable[..., ServerHandle], task: str, code: grpc.StatusCode
) -> None:
    handle = start_server()
    stub = model_pb2_grpc.ModelServiceStub(handle.channel)
    with pytest.raises(grpc.RpcError) as error:
        stub.GetDriftReport(
            model_pb2.GetDriftReportRequest(task=task), metadata=handle.metadata(Role.EXPERIMENTER)
        )
    assert error.value.code() == code
