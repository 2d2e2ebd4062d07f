"""Engagement regression: beats the mean baseline, approaches the simulator's true expectation,
and is served by PredictEngagement through a real server.

The simulator draws each page view's dwell_ms from lognormal(9 + 0.3 * engagement, 0.5), so the
true expected dwell of a subject is exp(9 + 0.3 * engagement + 0.125) ms whatever the number of
views: the oracle that knows every subject's latent engagement is the best any model can do.
"""

from __future__ import annotations

import io
import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error

from tacit.cli import main as tacit_main
from tacit.learning.engagement import engagement_label, engagement_rows, train_engagement
from tacit.learning.features import Event
from tacit.learning.registry_models import active_record
from tacit.server.auth import Role
from tacit.v1 import common_pb2, model_pb2, model_pb2_grpc, prediction_pb2, prediction_pb2_grpc
from tests.conftest import ServerHandle
from tests.server.test_bad_input import field_violations

sys.path.insert(0, str(Path(__file__).parent))
from sim_events import expected_dwell_seconds, send_events, simulate_events  # noqa: E402
from test_training_service import error_reason  # noqa: E402

T0 = datetime(2026, 1, 5, tzinfo=UTC)


def run_cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    real, sys.stdout = sys.stdout, out
    try:
        code = tacit_main(list(argv))
    finally:
        sys.stdout = real
    return code, out.getvalue()


def view(hours: float, dwell_ms: float | str | None) -> Event:
    properties: dict[str, str | float] = {"device": "mobile"}
    if dwell_ms is not None:
        properties["dwell_ms"] = dwell_ms
    return Event(T0 + timedelta(hours=hours), "page_view", properties)


@pytest.mark.parametrize(
    ("events", "as_of_hours", "observed_hours", "expected"),
    [
        ([view(1, 2000), view(2, 4000)], 0, 200, 3.0),  # mean of both, in seconds
        ([view(1, 2000), view(2, 4000)], 1, 200, 4.0),  # the window is (as_of, as_of + 7 d]
        ([view(1, 2000), view(200, 9000)], 0, 200, 2.0),  # after the window: not in the label
        ([view(1, None), view(2, "n/a")], 0, 200, None),  # nothing to average
        ([view(1, 2000)], 0, 100, None),  # the window runs past what is observed: censored
        ([view(1, -5), view(2, 6000)], 0, 200, 6.0),  # a negative dwell is not a duration
    ],
)
def test_engagement_label_is_the_mean_dwell_in_the_window(
    events: list[Event], as_of_hours: float, observed_hours: float, expected: float | None
) -> None:
    label = engagement_label(
        events, T0 + timedelta(hours=as_of_hours), timedelta(days=7), T0 + timedelta(hours=observed_hours)
    )
    assert label == (pytest.approx(expected) if expected is not None else None)


def test_engagement_regression_beats_the_mean_baseline_and_nears_the_true_expected_dwell() -> None:
    truth: dict[str, tuple[float, str]] = {}
    end = datetime(2026, 6, 1, tzinfo=UTC)
    events = simulate_events(n_subjects=300, days=84, seed=3, end=end, truth=truth)
    histories: dict[str, list[Event]] = {}
    for e in events:
        histories.setdefault(e.subject_id, []).append(Event(e.occurred_at, e.event_type, e.properties))
    data = engagement_rows(histories, timedelta(days=7), timedelta(days=7), events[-1].occurred_at)
    model = train_engagement(data.rows, data.labels, data.times)

    # The test window by hand: the newest 20 % of snapshots (ties go to the later window).
    seconds = np.array([t.timestamp() for t in data.times])
    test = seconds >= np.sort(seconds)[int(seconds.size * 0.8)]
    labels = data.labels[test]
    predicted = model.predict([row for row, keep in zip(data.rows, test, strict=True) if keep])
    baseline = np.full(labels.size, model.baseline)
    true_mean = np.array(
        [expected_dwell_seconds(truth[s][0]) for s, keep in zip(data.subjects, test, strict=True) if keep]
    )
    train_mask = seconds < np.sort(seconds)[int(seconds.size * 0.6)]
    figures = {
        "rmse_model": math.sqrt(mean_squared_error(labels, predicted)),
        "rmse_baseline": math.sqrt(mean_squared_error(labels, baseline)),
        "rmse_true_expectation": math.sqrt(mean_squared_error(labels, true_mean)),
        "mae_model": mean_absolute_error(labels, predicted),
        "mae_baseline": mean_absolute_error(labels, baseline),
        "mae_true_expectation": mean_absolute_error(labels, true_mean),
        "rmse_model_vs_true": math.sqrt(mean_squared_error(true_mean, predicted)),
        "rmse_baseline_vs_true": math.sqrt(mean_squared_error(true_mean, baseline)),
    }
    print({k: round(v, 3) for k, v in figures.items()}, "test rows", labels.size)

    # The registered metrics are sklearn's numbers on the same window and the training mean.
    assert model.baseline == pytest.approx(float(data.labels[train_mask].mean()))
    assert model.metrics["test_rmse"] == pytest.approx(figures["rmse_model"])
    assert model.metrics["test_mae"] == pytest.approx(figures["mae_model"])
    assert model.metrics["test_baseline_rmse"] == pytest.approx(figures["rmse_baseline"])
    assert model.metrics["test_baseline_mae"] == pytest.approx(figures["mae_baseline"])
    # It beats the mean baseline clearly, on both metrics and against the truth itself...
    assert figures["rmse_model"] < 0.85 * figures["rmse_baseline"]
    assert figures["mae_model"] < 0.85 * figures["mae_baseline"]
    assert figures["rmse_model_vs_true"] < 0.6 * figures["rmse_baseline_vs_true"]
    # ...and comes within 10 % of the true expectation's RMSE, the floor set by the label noise
    # (on a finite test window a model may tie it by chance; in expectation none beats it).
    assert figures["rmse_model"] < 1.10 * figures["rmse_true_expectation"]
    assert figures["rmse_true_expectation"] < 0.8 * figures["rmse_baseline"]


def test_predict_engagement_through_the_server(server: ServerHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TACIT_STORAGE__URL", server.settings.storage.url)  # the CLI reads the same database
    stub = prediction_pb2_grpc.PredictionServiceStub(server.channel)
    service = server.metadata(Role.SERVICE)
    with pytest.raises(grpc.RpcError) as missing:
        stub.PredictEngagement(prediction_pb2.PredictEngagementRequest(subject_id="u1"), metadata=service)
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(missing.value) == "MODEL_NOT_FOUND" and "engagement" in missing.value.details()

    events = simulate_events(n_subjects=80, days=63, seed=4)
    assert send_events(server.channel, service, events) == len(events)
    code, output = run_cli(
        "train", "engagement", "--snapshot-every-days", "3.5", "--data-dir", str(server.data_dir)
    )
    assert code == 0, output
    assert "mean baseline" in output and "registered models/engagement/versions/v000001" in output
    record = active_record(server.running.runtime.db, "engagement")
    assert record is not None and record.details["kind"] == "regressor"
    assert record.metrics["test_rmse"] < record.metrics["test_baseline_rmse"]

    known = stub.PredictEngagement(
        prediction_pb2.PredictEngagementRequest(subject_id=events[-1].subject_id), metadata=service
    )
    assert known.model_version == "v000001" and not known.default_profile
    assert 1.0 < known.expected_dwell_seconds < 100.0
    assert known.baseline_dwell_seconds == pytest.approx(record.metrics["baseline_mean"])
    unknown = stub.PredictEngagement(
        prediction_pb2.PredictEngagementRequest(subject_id="never-seen"), metadata=service
    )
    # No history: the model never saw such a subject; the answer is the baseline, context or not.
    assert unknown.default_profile and unknown.expected_dwell_seconds == known.baseline_dwell_seconds

    def with_dwell(dwell_ms: float) -> float:
        context = common_pb2.Features()
        context.values["dwell_mean"].number_value = dwell_ms
        request = prediction_pb2.PredictEngagementRequest(subject_id=events[-1].subject_id, context=context)
        return stub.PredictEngagement(request, metadata=service).expected_dwell_seconds

    # A subject whose past views were long is expected to dwell longer (the context overrides the profile).
    assert with_dwell(30_000.0) > with_dwell(4_000.0)

    with pytest.raises(grpc.RpcError) as empty:
        stub.PredictEngagement(prediction_pb2.PredictEngagementRequest(), metadata=service)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(empty.value) == ["subject_id"]
    bad = common_pb2.Features()
    bad.values["visits_7d"].string_value = "secret-value-7"
    with pytest.raises(grpc.RpcError) as text:
        stub.PredictEngagement(
            prediction_pb2.PredictEngagementRequest(subject_id="u", context=bad), metadata=service
        )
    assert text.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(text.value) == ["context.values[visits_7d]"]
    assert "secret-value-7" not in text.value.details()
    with pytest.raises(grpc.RpcError) as wrong_role:
        stub.PredictEngagement(
            prediction_pb2.PredictEngagementRequest(subject_id="u1"),
            metadata=server.metadata(Role.EXPERIMENTER),
        )
    assert wrong_role.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # Registered like the classifiers: listed, and its drift reported (same figures as `tacit drift`).
    models = model_pb2_grpc.ModelServiceStub(server.channel)
    experimenter = server.metadata(Role.EXPERIMENTER)
    listed = models.ListModels(model_pb2.ListModelsRequest(task="engagement"), metadata=experimenter)
    assert [(m.name, m.active) for m in listed.models] == [("models/engagement/versions/v000001", True)]
    drift = models.GetDriftReport(model_pb2.GetDriftReportRequest(task="engagement"), metadata=experimenter)
    assert drift.model_version == "v000001" and drift.HasField("prediction_psi")
    assert {"dwell_mean", "visits_30d"} <= {f.feature for f in drift.features}
    code, output = run_cli("drift", "engagement", "--data-dir", str(server.data_dir))
    assert code == (3 if drift.stale else 0), output
    assert "dwell_mean" in output
