"""Metric definitions as versioned resources: the catalog, the pinned version of a running
experiment, MetricService's promises (metric.proto) through a real server, and `tacit metric`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from tacit.cli import main
from tacit.experiments.errors import MetricNotFound, SpecError
from tacit.experiments.metric_specs import BUILTIN_SPECS, Aggregation, MetricSpec, Side
from tacit.experiments.rules import Stage
from tacit.experiments.service import ArmConfig, ExperimentDefinition, ExperimentService
from tacit.server.auth import Role
from tacit.store.db import Database
from tacit.store.schema import TrackedEvent
from tacit.v1 import metric_pb2, metric_pb2_grpc
from tests.experiments.test_service import _decision
from tests.faults.test_contract_drift import call

START = datetime(2026, 4, 1, tzinfo=UTC)
SENTINEL = "zqsentinel"


@pytest.fixture
def service(database_url: str) -> Iterator[ExperimentService]:
    db = Database.open(database_url)
    yield ExperimentService(db, slots={"home"}, refresh_seconds=3600, clock=lambda: START)
    db.dispose()


def test_a_running_experiment_keeps_the_metric_version_it_started_with(service: ExperimentService) -> None:
    v1 = service.metrics.create(MetricSpec("actions", Side(("click",), Aggregation.COUNT)), "experimenter")
    assert v1.version == 1
    service.create(
        ExperimentDefinition(
            experiment_id="widen",
            slot="home",
            arms=(ArmConfig("control", "static:first", 0.5), ArmConfig("treatment", "uniform", 0.5)),
            primary_metric="actions",
            stages=(Stage(100, 0),),
        ),
        "experimenter",
        now=START,
    )
    service.start("widen", "experimenter", now=START)
    v2 = service.metrics.create(
        MetricSpec("actions", Side(("page_view",), Aggregation.COUNT)), "experimenter"
    )
    assert v2.version == 2
    assert service.metrics.get("actions").value.event_types == ("page_view",)
    assert service.metrics.get("actions", 1).value.event_types == ("click",)
    with service.db.transaction() as session:
        for i in range(40):
            arm = ("control", "treatment")[i % 2]
            at = START + timedelta(seconds=i)
            session.add(_decision(f"d{i}", f"s{i}", arm, None, at))
            for k, kind in enumerate(["click"] * 2 + ["page_view"] * (5 + i % 2)):
                session.add(
                    TrackedEvent(
                        event_id=f"e{i}-{k}", subject=f"s{i}", event_type=kind,
                        occurred_at=at + timedelta(seconds=k + 1), received_at=at, properties={},
                    )
                )  # fmt: skip
    report = service.report("widen", now=START + timedelta(hours=1))
    primary = report.primary
    assert primary is not None
    # Version 1 counts clicks (2 per subject); version 2 would count page views (5 or 6).
    assert (primary.control_mean, primary.treatment_mean) == (2.0, 2.0)
    assert (primary.control_count, primary.treatment_count) == (20, 20)


def test_catalog_refuses_builtin_names_and_bad_definitions(service: ExperimentService) -> None:
    with pytest.raises(SpecError) as caught:
        service.metrics.create(MetricSpec("bounce_rate", Side(("click",), Aggregation.ANY)), "x")
    assert caught.value.field == "metric.name"
    bad = [
        (MetricSpec("m", Side((), Aggregation.ANY)), "metric.value.event_types"),
        (MetricSpec("m", Side(("tap",), Aggregation.ANY)), "metric.value.event_types[0]"),
        (MetricSpec("m", Side(("click",), Aggregation.SUM)), "metric.value.property"),
        (MetricSpec("m", Side(("click",), Aggregation.COUNT, "value")), "metric.value.property"),
        (MetricSpec("m", Side(("click",), Aggregation.QUANTILE, "value", 1.5)), "metric.value.quantile"),
        (
            MetricSpec("m", Side(("click",), Aggregation.COUNT), Side(("click",), Aggregation.MEAN, "v")),
            "metric.denominator.aggregation",
        ),
        (MetricSpec("m", Side(("click",), Aggregation.ANY), cap_upper=1.0), "metric.cap_upper"),
        (MetricSpec("m", Side(("click",), Aggregation.COUNT), cap_lower=3, cap_upper=1), "metric.cap_upper"),
        (MetricSpec("m", Side(("click",), Aggregation.COUNT), window_seconds=-1), "metric.window_seconds"),
        (MetricSpec("Bad Name", Side(("click",), Aggregation.COUNT)), "metric.name"),
    ]
    for spec, field in bad:
        with pytest.raises(SpecError) as caught:
            service.metrics.create(spec, "x")
        assert caught.value.field == field, spec
    with pytest.raises(MetricNotFound):
        service.metrics.get("nothing")
    assert [s.name for s in service.metrics.list_metrics()[0]] == sorted(BUILTIN_SPECS)


def _bounce(name: str, **extra: float) -> metric_pb2.Metric:
    return metric_pb2.Metric(
        name=name,
        value=metric_pb2.MetricSide(
            event_types=["page_view"], aggregation=metric_pb2.METRIC_AGGREGATION_SINGLE
        ),
        denominator=metric_pb2.MetricSide(
            event_types=["page_view"], aggregation=metric_pb2.METRIC_AGGREGATION_ANY
        ),
        direction=metric_pb2.METRIC_DIRECTION_LOWER_IS_BETTER,
        **extra,
    )


def test_metric_service_keeps_its_promises(start_server: Callable[..., object]) -> None:
    handle = start_server(learner={"enabled": False})
    stub = metric_pb2_grpc.MetricServiceStub(handle.channel)  # type: ignore[attr-defined]
    md = handle.metadata(Role.EXPERIMENTER)  # type: ignore[attr-defined]

    # A new name is version 1, the same name again version 2; a retried request id changes nothing.
    order = metric_pb2.Metric(
        name="order_value",
        value=metric_pb2.MetricSide(
            event_types=["conversion"], aggregation=metric_pb2.METRIC_AGGREGATION_SUM, property="value"
        ),
        cap_upper=500.0,
    )
    first = stub.CreateMetric(
        metric_pb2.CreateMetricRequest(metric=order, request_id="req-00000001"), metadata=md
    )
    again = stub.CreateMetric(
        metric_pb2.CreateMetricRequest(metric=order, request_id="req-00000001"), metadata=md
    )
    assert (first.version, again.version) == (1, 1)
    order.window_seconds = 3600
    second = stub.CreateMetric(metric_pb2.CreateMetricRequest(metric=order), metadata=md)
    assert second.version == 2 and second.cap_upper == 500.0 and not second.builtin
    assert (
        stub.GetMetric(
            metric_pb2.GetMetricRequest(name="metrics/order_value", version=1), metadata=md
        ).window_seconds
        == 0
    )
    assert stub.GetMetric(metric_pb2.GetMetricRequest(name="metrics/order_value"), metadata=md).version == 2

    # `version` is assigned (the one sent is ignored), scale 0 means 1, no direction means higher is better.
    plain = stub.CreateMetric(
        metric_pb2.CreateMetricRequest(
            metric=metric_pb2.Metric(
                name="visits",
                version=7,
                value=metric_pb2.MetricSide(event_types=["page_view"], aggregation=3),
            )
        ),
        metadata=md,
    )
    assert (plain.version, plain.value.scale, plain.direction) == (
        1, 1.0, metric_pb2.METRIC_DIRECTION_HIGHER_IS_BETTER
    )  # fmt: skip
    gone = call(
        lambda: stub.GetMetric(metric_pb2.GetMetricRequest(name="metrics/visits", version=2), metadata=md)
    )
    assert gone is not None and gone.code == grpc.StatusCode.NOT_FOUND

    # The newest version of every metric, built-ins included, ordered by name, across pages.
    names, token = [], ""
    while True:
        page = stub.ListMetrics(metric_pb2.ListMetricsRequest(page_size=2, page_token=token), metadata=md)
        names += [(m.name, m.version, m.builtin) for m in page.metrics]
        token = page.next_page_token
        if not token:
            break
    assert [n for n, _, _ in names] == sorted([*BUILTIN_SPECS, "order_value", "visits"])
    assert ("order_value", 2, False) in names and ("bounce_rate", 1, True) in names

    # INVALID_ARGUMENT names the field and never echoes the value; built-in names are refused.
    cases = [
        (_bounce("bounce_rate"), "metric.name"),
        (_bounce(SENTINEL + "_x", cap_upper=0.0), "metric.cap_upper"),  # a ratio cannot be capped
        (
            metric_pb2.Metric(name="m", value=metric_pb2.MetricSide(event_types=[SENTINEL])),
            "metric.value.aggregation",
        ),
        (
            metric_pb2.Metric(
                name="m",
                value=metric_pb2.MetricSide(
                    event_types=[SENTINEL], aggregation=metric_pb2.METRIC_AGGREGATION_ANY
                ),
            ),
            "metric.value.event_types[0]",
        ),
        (
            metric_pb2.Metric(
                name="m",
                value=metric_pb2.MetricSide(
                    event_types=["click"],
                    aggregation=metric_pb2.METRIC_AGGREGATION_QUANTILE,
                    property="value",
                ),
            ),
            "metric.value.quantile",
        ),
        (metric_pb2.Metric(name=f"{SENTINEL} !", value=order.value), "metric.name"),
        (metric_pb2.Metric(name="m", value=order.value, description=SENTINEL * 60), "metric.description"),
        (
            metric_pb2.Metric(
                name="m", value=metric_pb2.MetricSide(event_types=["click", "click"], aggregation=1)
            ),
            "metric.value.event_types",
        ),
        (metric_pb2.Metric(name="m", value=order.value, window_seconds=math.inf), "metric.window_seconds"),
    ]
    for metric, field in cases:
        failure = call(
            lambda m=metric: stub.CreateMetric(metric_pb2.CreateMetricRequest(metric=m), metadata=md)
        )
        assert failure is not None and failure.code == grpc.StatusCode.INVALID_ARGUMENT, field
        assert [f for f, _ in failure.violations] == [field]
        assert SENTINEL not in failure.caller_visible_text()

    # NOT_FOUND with a ResourceInfo of the type; only the experimenter (or admin) role may call.
    missing = call(
        lambda: stub.GetMetric(metric_pb2.GetMetricRequest(name=f"metrics/{SENTINEL}"), metadata=md)
    )
    assert missing is not None and missing.code == grpc.StatusCode.NOT_FOUND
    assert missing.resource is not None and missing.resource.resource_type == "tacit.v1.Metric"
    assert SENTINEL not in missing.caller_visible_text()
    denied = call(
        lambda: stub.ListMetrics(metric_pb2.ListMetricsRequest(), metadata=handle.metadata(Role.SERVICE))
    )  # type: ignore[attr-defined]
    assert denied is not None and denied.code == grpc.StatusCode.PERMISSION_DENIED


def test_cli_creates_lists_and_shows_metrics(
    start_server: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    handle = start_server(learner={"enabled": False})
    base = ["metric", "--target", handle.target, "--data-dir", str(handle.data_dir)]  # type: ignore[attr-defined]
    create = ["create", "p90_dwell", "--event", "page_view", "--aggregation", "quantile",
              "--property", "dwell_ms", "--quantile", "0.9", "--scale", "0.001",
              "--lower-is-better"]  # fmt: skip
    assert main(base + create) == 0
    out = capsys.readouterr().out
    assert '"version": 1' in out and "METRIC_AGGREGATION_QUANTILE" in out and "LOWER_IS_BETTER" in out
    assert main(base + ["list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("p90_dwell\tv1\tquantile\tdefined") for line in listed)
    assert any(line.startswith("bounce_rate\tv1\tratio\tbuilt-in") for line in listed)
    assert main(base + ["show", "p90_dwell"]) == 0
    assert '"quantile": 0.9' in capsys.readouterr().out
    assert main(base + ["show", "nothing_here"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(base + ["create", "bad", "--event", "tap", "--aggregation", "any"]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err


def test_concurrent_creates_of_one_name_get_distinct_versions(service: ExperimentService) -> None:
    """Eight creates of one name at once: versions 1..8, each stored once; a retried request id
    racing its twin makes no second version."""
    from concurrent.futures import ThreadPoolExecutor

    spec = MetricSpec("visits", Side(("page_view",), Aggregation.COUNT))
    with ThreadPoolExecutor(max_workers=8) as pool:
        versions = list(pool.map(lambda _: service.metrics.create(spec, "x").version, range(8)))
        retried = list(pool.map(lambda _: service.metrics.create(spec, "x", "req-twin").version, range(4)))
    assert sorted(versions) == list(range(1, 9))
    assert len(set(retried)) == 1 and retried[0] == 9
    assert service.metrics.get("visits").version == 9
