"""MLflow through a real server: `tacit train` logs its run to a local file store, MLflow's own
client reads it back, and the logged model reproduces what PredictConversion serves.

Events go in with TrackEvents; `tacit --config … train` reads the tracking URI from the
config file (`training.mlflow_tracking_uri`); every check on the logged run uses MLflow's
client (`MlflowClient`, `mlflow.sklearn.load_model`), never Tacit's code.
"""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tacit.cli import main as tacit_main
from tacit.learning.features import CATEGORICAL_FEATURES, FEATURE_NAMES, build_features, default_features
from tacit.learning.mlflow_models import MlflowUnavailableError, require_mlflow
from tacit.learning.profiles import load_history
from tacit.learning.registry_models import active_record
from tacit.server.auth import Role
from tacit.v1 import common_pb2, model_pb2, model_pb2_grpc, prediction_pb2, prediction_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
from sim_events import send_events, simulate_events  # noqa: E402


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # MLflow 3 keeps its file store behind an opt-in; loading a model behind another.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    return (tmp_path / "mlruns").as_uri()


def tacit(config: Path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    real = sys.stdout
    sys.stdout = out
    try:
        code = tacit_main(["--config", str(config), *argv])
    finally:
        sys.stdout = real
    return code, out.getvalue()


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """Rows in the logged signature's shape: one column per feature, in FEATURE_NAMES order."""
    data = pd.DataFrame([[row[n] for n in FEATURE_NAMES] for row in rows], columns=list(FEATURE_NAMES))
    for name in FEATURE_NAMES:
        data[name] = data[name].astype(str if name in CATEGORICAL_FEATURES else "float64")
    return data


def predict(stub, service, subject: str, context: common_pb2.Features | None = None):  # type: ignore[no-untyped-def]
    request = prediction_pb2.PredictRequest(subject_id=subject, context=context)
    return stub.PredictConversion(request, metadata=service)


def test_training_run_is_logged_to_mlflow_and_its_model_serves_the_same_scores(
    start_server, database_url: str, mlflow_uri: str, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    handle = start_server(database_url)
    events = simulate_events(n_subjects=250, days=70, seed=3)
    assert send_events(handle.channel, handle.metadata(Role.SERVICE), events) == len(events)
    config = tmp_path / "tacit.toml"
    config.write_text(
        f'[storage]\nurl = "{database_url}"\n'
        f'[training]\nmlflow_tracking_uri = "{mlflow_uri}"\nmlflow_experiment = "churn-and-conversion"\n'
    )
    code, output = tacit(config, "train", "conversion", "--data-dir", str(handle.data_dir),
                         "--search-iterations", "2")  # fmt: skip
    assert code == 0, output
    db = handle.running.runtime.db
    record = active_record(db, "conversion")
    assert record is not None and record.version == "v000001"

    # The run, read back with MLflow's own client.
    client = MlflowClient(mlflow_uri)
    experiment = client.get_experiment_by_name("churn-and-conversion")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id in output
    assert run.data.tags["tacit.model"] == "models/conversion/versions/v000001"
    assert run.data.tags["tacit.sha256"] == record.sha256
    params = run.data.params
    assert params["data_hash"] == record.details["data_hash"] and len(params["data_hash"]) == 64
    assert params["training_window_start"] == record.details["training_window"][0]
    assert params["training_window_end"] == record.details["training_window"][1]
    assert params["observed_until"] == record.details["observed_until"]
    assert params["search"] == "randomized" and params["search_iterations"] == "2"
    assert params["candidate"] == record.details["candidate"]
    for name in ("cv_pr_auc", "validation_pr_auc", "test_roc_auc", "test_pr_auc", "test_brier", "threshold"):
        assert run.data.metrics[name] == pytest.approx(record.metrics[name]), name
    assert any(k.startswith("candidates.") and k.endswith(".test_pr_auc") for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert "calibration.png" in artifacts
    plot = Path(client.download_artifacts(run.info.run_id, "calibration.png", str(tmp_path)))
    assert plot.read_bytes().startswith(b"\x89PNG")

    # The logged model: sklearn flavour, a signature naming every feature, loadable by MLflow.
    (logged,) = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert logged.source_run_id == run.info.run_id
    info = mlflow.models.get_model_info(logged.model_uri)
    assert "sklearn" in info.flavors
    assert info.signature is not None and info.signature.inputs.input_names() == list(FEATURE_NAMES)
    estimator = mlflow.sklearn.load_model(logged.model_uri)

    # It reproduces the served scores: a subject with history, and an unknown one with overrides.
    stub = prediction_pb2_grpc.PredictionServiceStub(handle.channel)
    service = handle.metadata(Role.SERVICE)
    known_subject = events[-1].subject_id
    served_known = predict(stub, service, known_subject)
    now = datetime.now(UTC)
    pseudonym = handle.running.runtime.boundary.pseudonymize_subject(known_subject)
    known_row = build_features(load_history(db, pseudonym), now).as_dict()
    assert estimator.predict_proba(frame([known_row]))[0, 1] == pytest.approx(
        served_known.probability, abs=1e-6
    )

    context = common_pb2.Features()
    context.values["device"].string_value = "desktop"
    context.values["referral_source"].string_value = "email"
    context.values["visits_7d"].number_value = 5
    for _ in range(3):  # the default profile's hour is the hour of the call: retry across an hour change
        before = datetime.now(UTC)
        served = predict(stub, service, "never-seen-subject", context)
        after = datetime.now(UTC)
        if before.hour == after.hour:
            break
    assert served.default_profile and served.model_version == "v000001"
    row = {
        **default_features(after).as_dict(),
        "device": "desktop",
        "referral_source": "email",
        "visits_7d": 5.0,
    }
    assert estimator.predict_proba(frame([row]))[0, 1] == pytest.approx(served.probability, abs=1e-12)

    # Export → import: the version comes back as v000002, serves the same scores, and keeps its
    # drift reference.
    models = model_pb2_grpc.ModelServiceStub(handle.channel)
    experimenter = handle.metadata(Role.EXPERIMENTER)
    drift_request = model_pb2.GetDriftReportRequest(task="conversion")
    drift_before = models.GetDriftReport(drift_request, metadata=experimenter)
    exported = tmp_path / "exported"
    code, output = tacit(config, "model", "export-mlflow", record.name, str(exported),
                         "--data-dir", str(handle.data_dir))  # fmt: skip
    assert code == 0, output
    exported_estimator = mlflow.sklearn.load_model(str(exported))
    same = exported_estimator.predict_proba(frame([row]))[0, 1]
    assert same == pytest.approx(served.probability, abs=1e-12)
    code, _ = tacit(config, "model", "import-mlflow", str(exported), "--data-dir", str(handle.data_dir))
    assert code == 2  # refused without --trust
    code, output = tacit(config, "model", "import-mlflow", str(exported), "--trust",
                         "--data-dir", str(handle.data_dir))  # fmt: skip
    assert code == 0, output
    imported = active_record(db, "conversion")
    assert imported is not None and imported.version == "v000002"
    assert imported.details["imported_from"] == {
        "format": "mlflow",
        "task": "conversion",
        "version": "v000001",
    }
    assert imported.details["data_hash"] == record.details["data_hash"]
    assert imported.metrics["test_roc_auc"] == pytest.approx(record.metrics["test_roc_auc"])
    version = ""
    for _ in range(200):  # served within the registry's check interval, without a restart
        again = predict(stub, service, known_subject)
        version = again.model_version
        if version == "v000002":
            break
    assert version == "v000002"
    assert again.probability == pytest.approx(served_known.probability, abs=1e-6)
    drift = models.GetDriftReport(drift_request, metadata=experimenter)
    assert drift.model_version == "v000002" and drift_before.model_version == "v000001"
    assert drift.reference_count == drift_before.reference_count > 0
    assert {f.feature for f in drift.features} >= {"recency_days", "visits_7d", "device", "referral_source"}
    assert [f.feature for f in drift.features] == [f.feature for f in drift_before.features]
    np.testing.assert_allclose([f.psi for f in drift.features], [f.psi for f in drift_before.features])


def test_a_configured_tracking_uri_without_mlflow_installed_is_a_clear_error_before_training(
    start_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    handle = start_server()
    send_events(handle.channel, handle.metadata(), simulate_events(n_subjects=60, days=40, seed=4))
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets when it is not installed
    with pytest.raises(MlflowUnavailableError, match=r"pip install 'tacit\[mlflow\]'"):
        require_mlflow()
    config = tmp_path / "tacit.toml"
    config.write_text(f'[training]\nmlflow_tracking_uri = "{(tmp_path / "mlruns").as_uri()}"\n')
    code, _ = tacit(config, "train", "conversion", "--data-dir", str(handle.data_dir))
    assert code == 1
    assert "training.mlflow_tracking_uri needs MLflow" in capsys.readouterr().err
    assert active_record(handle.running.runtime.db, "conversion") is None
