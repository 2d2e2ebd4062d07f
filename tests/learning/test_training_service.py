"""Train → register → predict through a real server: events go in with TrackEvents only.

One simulated history (300 subjects, 12 weeks) is sent once per test module;
`tacit train` reads it from the events table, and every answer is checked
through the public gRPC API.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from tacit.cli import main as tacit_main
from tacit.learning.classifiers import Task
from tacit.learning.features import FEATURE_NAMES
from tacit.learning.registry_models import active_record
from tacit.learning.training import TrainJob, build_training_set
from tacit.server.auth import Role
from tacit.v1 import common_pb2, model_pb2, model_pb2_grpc, prediction_pb2, prediction_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
from sim_events import send_events, simulate_events  # noqa: E402


def error_reason(error: grpc.RpcError) -> str:
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                info = error_details_pb2.ErrorInfo()
                if detail.Unpack(info):
                    return info.reason
    return ""


def train(data_dir: Path, task: str, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    real = sys.stdout
    sys.stdout = out
    try:
        code = tacit_main(["train", task, "--data-dir", str(data_dir), *extra])
    finally:
        sys.stdout = real
    return code, out.getvalue()


@pytest.fixture
def trained(start_server: Callable[..., object]):  # type: ignore[no-untyped-def]
    handle = start_server()
    events = simulate_events(n_subjects=300, days=84, seed=3)
    assert send_events(handle.channel, handle.metadata(Role.SERVICE), events) == len(events)
    code, output = train(handle.data_dir, "conversion")
    assert code == 0, output
    return handle, events, output


def test_train_register_and_predict_conversion_through_the_server(trained) -> None:  # type: ignore[no-untyped-def]
    handle, events, output = trained
    print(output)
    assert "unweighted" in output and "balanced" in output  # the class-weight comparison is shown
    db = handle.running.runtime.db
    record = active_record(db, "conversion")
    assert record is not None and record.version == "v000001"
    assert record.metrics["test_roc_auc"] > 0.65
    assert record.details["feature_names"] == list(FEATURE_NAMES)
    assert len(record.details["data_hash"]) == 64
    assert Path(record.path) == handle.data_dir / "models" / "conversion" / "v000001.joblib"

    stub = prediction_pb2_grpc.PredictionServiceStub(handle.channel)
    service = handle.metadata(Role.SERVICE)
    active = events[-1].subject_id
    known = stub.PredictConversion(prediction_pb2.PredictRequest(subject_id=active), metadata=service)
    assert 0.0 < known.probability < 1.0
    assert known.model_version == "v000001" and not known.default_profile

    unknown = stub.PredictConversion(
        prediction_pb2.PredictRequest(subject_id="never-seen-subject"), metadata=service
    )
    assert unknown.default_profile and 0.0 < unknown.probability < 1.0

    # Overrides pass the boundary: an email-referred desktop visitor outscores the default.
    context = common_pb2.Features()
    context.values["device"].string_value = "desktop"
    context.values["referral_source"].string_value = "email"
    context.values["visits_7d"].number_value = 5
    boosted = stub.PredictConversion(
        prediction_pb2.PredictRequest(subject_id="never-seen-subject", context=context), metadata=service
    )
    assert boosted.probability > unknown.probability

    bad = common_pb2.Features()
    bad.values["visits_7d"].string_value = "many"
    with pytest.raises(grpc.RpcError) as invalid:
        stub.PredictConversion(prediction_pb2.PredictRequest(subject_id="x1", context=bad), metadata=service)
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "context.values[visits_7d]" in invalid.value.details()

    # No churn model yet: a clear FAILED_PRECONDITION naming the task.
    with pytest.raises(grpc.RpcError) as missing:
        stub.PredictChurn(prediction_pb2.PredictRequest(subject_id=active), metadata=service)
    assert missing.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "churn" in missing.value.details() and error_reason(missing.value) == "MODEL_NOT_FOUND"

    # The registry over ModelService, with page tokens.
    models = model_pb2_grpc.ModelServiceStub(handle.channel)
    experimenter = handle.metadata(Role.EXPERIMENTER)
    listed = models.ListModels(model_pb2.ListModelsRequest(task="conversion"), metadata=experimenter)
    assert [m.name for m in listed.models] == ["models/conversion/versions/v000001"]
    got = models.GetModel(model_pb2.GetModelRequest(name=listed.models[0].name), metadata=experimenter)
    assert got.active and got.metrics["test_roc_auc"] == pytest.approx(record.metrics["test_roc_auc"])

    # A newer version is served without a restart.
    code, _ = train(handle.data_dir, "conversion", "--seed", "1")
    assert code == 0
    deadline = time.monotonic() + 10
    version = ""
    while time.monotonic() < deadline and version != "v000002":
        version = stub.PredictConversion(
            prediction_pb2.PredictRequest(subject_id=active), metadata=service
        ).model_version
        time.sleep(0.05)
    assert version == "v000002"
    first = models.ListModels(model_pb2.ListModelsRequest(page_size=1), metadata=experimenter)
    assert first.next_page_token and first.models[0].version == "v000002" and first.models[0].active
    second = models.ListModels(
        model_pb2.ListModelsRequest(page_size=1, page_token=first.next_page_token), metadata=experimenter
    )
    assert second.models[0].version == "v000001" and not second.models[0].active
    assert not second.next_page_token

    drift = models.GetDriftReport(model_pb2.GetDriftReportRequest(task="conversion"), metadata=experimenter)
    names = {f.feature for f in drift.features}
    assert {"recency_days", "visits_7d", "device"} <= names and "hour" not in names

    # One server and one simulated history serve the remaining checks (each needs a trained model).
    check_the_pseudonym_is_never_a_feature_nor_in_a_model_file(handle, events)
    check_a_model_file_that_does_not_match_its_record_is_not_served(handle, events)


def check_a_model_file_that_does_not_match_its_record_is_not_served(handle, events) -> None:  # type: ignore[no-untyped-def]
    code, output = train(handle.data_dir, "churn")
    assert code == 0, output
    record = active_record(handle.running.runtime.db, "churn")
    assert record is not None
    with record.path.open("ab") as handle_file:
        handle_file.write(b"tampered")
    stub = prediction_pb2_grpc.PredictionServiceStub(handle.channel)
    with pytest.raises(grpc.RpcError) as refused:
        stub.PredictChurn(
            prediction_pb2.PredictRequest(subject_id=events[-1].subject_id), metadata=handle.metadata()
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(refused.value) == "MODEL_INTEGRITY"
    assert "sha256" in refused.value.details()


def check_the_pseudonym_is_never_a_feature_nor_in_a_model_file(handle, events) -> None:  # type: ignore[no-untyped-def]
    record = active_record(handle.running.runtime.db, "conversion")
    assert record is not None
    assert not any("subject" in name or name.startswith("ps1") for name in record.details["feature_names"])
    blob = record.path.read_bytes()
    assert b"ps1:" not in blob
    assert not any(e.subject_id.encode() in blob for e in events[:50])
    data = build_training_set(handle.running.runtime.db, TrainJob(Task.CONVERSION))
    assert all("ps1:" not in str(value) for row in data.rows[:200] for value in row.values())


def test_training_with_too_few_positives_is_a_clear_error(start_server, capsys) -> None:  # type: ignore[no-untyped-def]
    handle = start_server()
    events = simulate_events(n_subjects=40, days=60, seed=5, conversion_intercept=-9.0)
    send_events(handle.channel, handle.metadata(), events)
    code, _ = train(handle.data_dir, "conversion")
    assert code == 1
    message = capsys.readouterr().err
    assert "too few positive conversion labels" in message
    assert active_record(handle.running.runtime.db, "conversion") is None
