"""MetricService: convert, call the experiments layer's `MetricCatalog`, convert back."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import grpc

from tacit.experiments.errors import MetricNotFound, SpecError
from tacit.experiments.metric_catalog import MetricCatalog
from tacit.server.converters import event_id_or_empty
from tacit.server.converters import metric as convert
from tacit.server.errors import InvalidArgument, NotFound
from tacit.v1 import metric_pb2, metric_pb2_grpc


@contextmanager
def _domain_errors() -> Iterator[None]:
    try:
        yield
    except SpecError as error:
        raise InvalidArgument(error.field, error.message, "INVALID_METRIC") from None
    except MetricNotFound:
        raise NotFound("name: no metric definition with this name and version", "METRIC_NOT_FOUND") from None


class MetricServicer(metric_pb2_grpc.MetricServiceServicer):
    def __init__(
        self,
        catalog: MetricCatalog,
        role_of: Callable[[grpc.ServicerContext], str],
        request_digest: Callable[[str], str] | None = None,
    ) -> None:
        self._catalog = catalog
        self._role_of = role_of
        self._request_digest = request_digest  # client request ids are kept only as keyed digests

    def CreateMetric(  # noqa: N802
        self, request: metric_pb2.CreateMetricRequest, context: grpc.ServicerContext
    ) -> metric_pb2.Metric:
        if not request.HasField("metric"):
            raise InvalidArgument("metric", "is required")
        spec = convert.spec_from_proto(request.metric)
        request_id = event_id_or_empty("request_id", request.request_id)
        if request_id and self._request_digest is not None:
            request_id = self._request_digest(request_id)
        with _domain_errors():
            return convert.spec_to_proto(self._catalog.create(spec, self._role_of(context), request_id))

    def GetMetric(  # noqa: N802
        self, request: metric_pb2.GetMetricRequest, context: grpc.ServicerContext
    ) -> metric_pb2.Metric:
        name = convert.metric_name("name", request.name)
        if request.version < 0:
            raise InvalidArgument("version", "must not be negative")
        with _domain_errors():
            return convert.spec_to_proto(self._catalog.get(name, request.version))

    def ListMetrics(  # noqa: N802
        self, request: metric_pb2.ListMetricsRequest, context: grpc.ServicerContext
    ) -> metric_pb2.ListMetricsResponse:
        with _domain_errors():
            items, token = self._catalog.list_metrics(request.page_size, request.page_token)
        return metric_pb2.ListMetricsResponse(
            metrics=[convert.spec_to_proto(item) for item in items], next_page_token=token
        )
