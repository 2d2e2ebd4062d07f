"""CUPED through the experiment service: covariates from the stored event history before each
subject's first exposure, adjusted and unadjusted lifts side by side, and the API shape."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import numpy as np
import pytest

from tacit.experiments.errors import SpecError
from tacit.experiments.report import Report
from tacit.experiments.rules import Covariate, Guardrail, Stage
from tacit.experiments.service import ArmConfig, ExperimentDefinition, ExperimentService
from tacit.server.auth import Role
from tacit.server.converters.experiment import report_from_proto, report_to_proto
from tacit.store.db import Database
from tacit.store.schema import TrackedEvent
from tacit.v1 import experiment_pb2, experiment_pb2_grpc
from tests.conftest import ServerHandle
from tests.experiments.test_service import _decision

START = datetime(2026, 3, 1, tzinfo=UTC)


def _definition(**changes: Any) -> ExperimentDefinition:
    values: dict[str, Any] = dict(
        experiment_id="widen",
        slot="home",
        arms=(ArmConfig("control", "static:first", 0.5), ArmConfig("treatment", "uniform", 0.5)),
        primary_metric="dwell_time",
        stages=(Stage(100, 0),),
        guardrails=(Guardrail("conversion", 0.5),),
        covariates=(Covariate("dwell_time", timedelta(days=14)), Covariate("conversion", timedelta(days=7))),
    )
    values.update(changes)
    return ExperimentDefinition(**values)


@pytest.fixture
def service(database_url: str) -> ExperimentService:
    db = Database.open(database_url)
    yield ExperimentService(db, slots={"home"}, refresh_seconds=3600)
    db.dispose()


def _event(event_id: str, subject: str, kind: str, at: datetime, **properties: float) -> TrackedEvent:
    return TrackedEvent(
        event_id=event_id,
        subject=subject,
        event_type=kind,
        occurred_at=at,
        received_at=at,
        properties=properties,
    )


def test_report_adjusts_with_the_pre_exposure_history(service: ExperimentService) -> None:
    rng = np.random.default_rng(3)
    n = 150
    service.create(_definition(), "experimenter", now=START)
    service.start("widen", "experimenter", now=START)
    pre: dict[str, list[float]] = {"control": [], "treatment": []}
    post: dict[str, list[float]] = {"control": [], "treatment": []}
    with service.db.transaction() as session:
        for arm, shift in (("control", 0.0), ("treatment", 4.0)):
            for i in range(n):
                subject = f"s-{arm}-{i}"
                exposed = START + timedelta(minutes=1, seconds=i)
                session.add(_decision(f"d-{arm}-{i}", subject, arm, None, exposed))
                before = float(rng.gamma(4.0, 5.0))  # seconds of dwell in the 14 days before
                after = 0.8 * before + shift + float(rng.normal(0, 6.0))
                after = max(after, 0.0)
                pre[arm].append(before)
                post[arm].append(after)
                session.add(
                    _event(
                        f"pre-{arm}-{i}",
                        subject,
                        "page_view",
                        exposed - timedelta(days=3),
                        dwell_ms=before * 1000,
                    )
                )
                # Outside the 14-day window and after the conversion window: ignored by both.
                session.add(
                    _event(f"old-{arm}-{i}", subject, "page_view", exposed - timedelta(days=20), dwell_ms=9e6)
                )
                session.add(
                    _event(
                        f"post-{arm}-{i}",
                        subject,
                        "page_view",
                        exposed + timedelta(minutes=5),
                        dwell_ms=after * 1000,
                    )
                )
                if i % 3 == 0:  # converted in the week before, and more likely after
                    session.add(_event(f"cpre-{arm}-{i}", subject, "conversion", exposed - timedelta(days=2)))
                if i % 3 == 0 or i % 7 == 0:
                    session.add(
                        _event(f"cpost-{arm}-{i}", subject, "conversion", exposed + timedelta(minutes=9))
                    )
    report = service.report("widen", now=START + timedelta(days=1))
    primary = report.primary
    assert primary is not None and primary.cuped and primary.status == "ok"

    # Independent reference: pooled OLS slope and the adjusted difference, with numpy.
    y = np.concatenate([post["control"], post["treatment"]])
    x = np.concatenate([pre["control"], pre["treatment"]])
    theta = float(np.cov(x, y, ddof=1)[0, 1] / np.var(x, ddof=1))
    adjusted = {arm: np.asarray(post[arm]) - theta * np.asarray(pre[arm]) for arm in post}
    difference = float(adjusted["treatment"].mean() - adjusted["control"].mean())
    raw = float(np.mean(post["treatment"]) - np.mean(post["control"]))
    var_adjusted = sum(float(np.var(adjusted[a], ddof=1)) / n for a in adjusted)
    var_raw = sum(float(np.var(post[a], ddof=1)) / n for a in post)
    assert primary.cuped_theta == pytest.approx(theta, rel=1e-6)
    assert primary.absolute_lift == pytest.approx(difference, rel=1e-6)
    assert primary.unadjusted_absolute_lift == pytest.approx(raw, rel=1e-6)
    assert primary.variance_reduction == pytest.approx(1 - var_adjusted / var_raw, rel=1e-6)
    assert primary.variance_reduction > 0.5
    assert primary.relative_lift == pytest.approx(difference / np.mean(post["control"]), rel=1e-6)
    # Adjusted interval narrower than the unadjusted one; each with its own p.
    assert (primary.absolute_ci_upper - primary.absolute_ci_lower) < (
        primary.unadjusted_absolute_ci_upper - primary.unadjusted_absolute_ci_lower
    )
    assert primary.absolute_p_value < primary.unadjusted_absolute_p_value
    assert (primary.relative_ci_lower > 0) == (primary.relative_p_value < 0.05)
    assert (primary.unadjusted_relative_ci_lower > 0) == (primary.unadjusted_relative_p_value < 0.05)
    assert "CUPED-adjusted" in report.summary
    # The always-valid test runs on the adjusted statistic: its band is centred on it.
    centre = (primary.always_valid_ci_lower + primary.always_valid_ci_upper) / 2
    assert centre == pytest.approx(difference, rel=1e-6)
    # The conversion guardrail is adjusted too, from conversions in the 7 days before.
    guard = report.metrics[1]
    assert guard.metric == "conversion" and guard.cuped
    assert guard.cuped_theta > 0 and guard.variance_reduction > 0
    # Stored JSON and the API carry every CUPED number.
    again = Report.from_dict(report.to_dict())
    assert again.metrics[0] == primary
    wire = report_from_proto(report_to_proto(report)).metrics[0]
    for name in (
        "cuped_theta",
        "variance_reduction",
        "unadjusted_relative_lift",
        "unadjusted_relative_p_value",
    ):
        assert getattr(wire, name) == pytest.approx(getattr(primary, name))
    assert wire.relative_p_value == pytest.approx(primary.relative_p_value)
    assert wire.absolute_p_value == pytest.approx(primary.absolute_p_value)


def test_reports_stored_before_each_interval_had_its_own_p_still_load() -> None:
    report = Report.from_dict(
        {
            "experiment_id": "old",
            "evaluated_at": START.isoformat(),
            "state": "running",
            "stage_index": 0,
            "exposure_percent": 1.0,
            "arm_counts": [["control", 3], ["treatment", 3]],
            "srm_p_value": 0.9,
            "action": "continue",
            "reasons": [],
            "summary": "",
            "metrics": [
                {
                    "metric": "click_through",
                    "role": "primary",
                    "higher_is_better": True,
                    "status": "ok",
                    "control_count": 3,
                    "treatment_count": 3,
                    "control_mean": 0.1,
                    "treatment_mean": 0.2,
                    "absolute_lift": 0.1,
                    "absolute_ci_lower": -0.1,
                    "absolute_ci_upper": 0.3,
                    "relative_lift": 1.0,
                    "relative_ci_lower": -1.0,
                    "relative_ci_upper": 3.0,
                    "p_value": 0.3,
                    "always_valid_p_value": 1.0,
                    "always_valid_ci_lower": None,
                    "always_valid_ci_upper": None,
                    "adjusted_p_value": 1.0,
                }
            ],
        }
    )
    metric = report.metrics[0]
    assert metric.absolute_p_value == 0.3  # the one Welch p old reports carried was absolute
    assert math.isnan(metric.relative_p_value) and not metric.cuped


@pytest.mark.parametrize(
    ("covariates", "field", "words"),
    [
        (
            (Covariate("click_through", timedelta(days=7)),),
            "covariates[0].metric",
            "not one value per subject",
        ),
        ((Covariate("dwell_time", timedelta(days=7)),), "covariates[0].metric", "none of the experiment's"),
        ((Covariate("conversion", timedelta(0)),), "covariates[0].lookback", "positive"),
        ((Covariate("conversion", timedelta(days=400)),), "covariates[0].lookback", "365"),
        (
            (Covariate("conversion", timedelta(days=1)), Covariate("conversion", timedelta(days=2))),
            "covariates[1].metric",
            "repeats",
        ),
    ],
)
def test_bad_covariates_are_refused_naming_the_field(
    service: ExperimentService, covariates: tuple[Covariate, ...], field: str, words: str
) -> None:
    definition = _definition(primary_metric="click_through", covariates=covariates)
    with pytest.raises(SpecError) as caught:
        service.create(definition, "experimenter", now=START)
    assert caught.value.field.endswith(field)
    assert words in str(caught.value)


def test_definition_round_trips_its_covariates() -> None:
    definition = _definition()
    again = ExperimentDefinition.from_json("widen", "home", definition.to_json())
    assert again.covariates == definition.covariates
    legacy = definition.to_json()
    del legacy["covariates"]  # stored before CUPED existed
    assert ExperimentDefinition.from_json("widen", "home", legacy).covariates == ()


@pytest.fixture
def experimenter(start_server: Callable[..., ServerHandle]) -> tuple[ServerHandle, Any, Any]:
    handle = start_server(learner={"enabled": False}, experiments={"refresh_seconds": 0.05})
    return (
        handle,
        experiment_pb2_grpc.ExperimentServiceStub(handle.channel),
        handle.metadata(Role.EXPERIMENTER),
    )


def _create(covariates: list[experiment_pb2.Covariate]) -> experiment_pb2.CreateExperimentRequest:
    return experiment_pb2.CreateExperimentRequest(
        experiment_id="cuped",
        experiment=experiment_pb2.Experiment(
            slot="home",
            arms=[
                experiment_pb2.Arm(name="control", policy="static:first", weight=0.5),
                experiment_pb2.Arm(name="treatment", policy="uniform", weight=0.5),
            ],
            primary_metric="conversion",
            stages=[experiment_pb2.Stage(percent=100)],
            covariates=covariates,
        ),
    )


def test_covariates_through_the_api(experimenter: tuple[ServerHandle, Any, Any]) -> None:
    _, stub, md = experimenter
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateExperiment(
            _create([experiment_pb2.Covariate(metric="conversion", lookback_seconds=-5)]), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "experiment.covariates[0].lookback_seconds" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateExperiment(
            _create([experiment_pb2.Covariate(metric="conversion", lookback_seconds=2**62)]), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    created = stub.CreateExperiment(
        _create([experiment_pb2.Covariate(metric="conversion", lookback_seconds=14 * 86400)]), metadata=md
    )
    assert [(c.metric, c.lookback_seconds) for c in created.covariates] == [("conversion", 14 * 86400)]
    stub.StartExperiment(experiment_pb2.ExperimentActionRequest(name="experiments/cuped"), metadata=md)
    report = stub.GetExperimentReport(
        experiment_pb2.GetExperimentReportRequest(name="experiments/cuped"), metadata=md
    )
    metric = report.metrics[0]
    assert metric.cuped and metric.status == "insufficient_data"  # nobody exposed yet
