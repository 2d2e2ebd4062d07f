"""MetricService protobuf <-> `MetricSpec` conversions, validated at the edge (fields named, never values)."""

from __future__ import annotations

import math
import re

from tacit.experiments.metric_specs import BUILTIN_SPECS, Aggregation, MetricSpec, Side
from tacit.server.errors import InvalidArgument
from tacit.v1 import metric_pb2

NAME = re.compile(r"^metrics/([a-z][a-z0-9_]{0,63})$")
MAX_EVENT_TYPES = 8

AGGREGATION_TO_PROTO = {
    Aggregation.ANY: metric_pb2.METRIC_AGGREGATION_ANY,
    Aggregation.SINGLE: metric_pb2.METRIC_AGGREGATION_SINGLE,
    Aggregation.COUNT: metric_pb2.METRIC_AGGREGATION_COUNT,
    Aggregation.SUM: metric_pb2.METRIC_AGGREGATION_SUM,
    Aggregation.MEAN: metric_pb2.METRIC_AGGREGATION_MEAN,
    Aggregation.MAX: metric_pb2.METRIC_AGGREGATION_MAX,
    Aggregation.QUANTILE: metric_pb2.METRIC_AGGREGATION_QUANTILE,
}
AGGREGATION_FROM_PROTO = {value: key for key, value in AGGREGATION_TO_PROTO.items()}


def metric_name(field: str, name: str) -> str:
    """`metrics/{name}` -> name; a bare name is accepted too (CLI convenience)."""
    if not name:
        raise InvalidArgument(field, "is required")
    match = NAME.match(name) or NAME.match(f"metrics/{name}")
    if match is None:
        raise InvalidArgument(field, f"must match {NAME.pattern}")
    return match.group(1)


def _side(field: str, side: metric_pb2.MetricSide) -> Side:
    if side.aggregation not in AGGREGATION_FROM_PROTO:
        raise InvalidArgument(f"{field}.aggregation", "must be set to a known aggregation")
    if len(side.event_types) > MAX_EVENT_TYPES:
        raise InvalidArgument(f"{field}.event_types", f"at most {MAX_EVENT_TYPES} event types")
    aggregation = AGGREGATION_FROM_PROTO[side.aggregation]
    return Side(
        event_types=tuple(side.event_types),
        aggregation=aggregation,
        value_property=side.property,
        quantile=side.quantile if aggregation is Aggregation.QUANTILE or side.quantile else math.nan,
        scale=side.scale or 1.0,
    )


def spec_from_proto(metric: metric_pb2.Metric) -> MetricSpec:
    """The domain definition of a CreateMetric request's metric (validated by `MetricSpec.validate`)."""
    if not metric.HasField("value"):
        raise InvalidArgument("metric.value", "is required")
    return MetricSpec(
        name=metric_name("metric.name", metric.name),
        value=_side("metric.value", metric.value),
        denominator=_side("metric.denominator", metric.denominator)
        if metric.HasField("denominator")
        else None,
        window_seconds=metric.window_seconds,
        higher_is_better=metric.direction != metric_pb2.METRIC_DIRECTION_LOWER_IS_BETTER,
        cap_lower=metric.cap_lower if metric.HasField("cap_lower") else math.nan,
        cap_upper=metric.cap_upper if metric.HasField("cap_upper") else math.nan,
        description=metric.description,
    )


def _side_to_proto(side: Side) -> metric_pb2.MetricSide:
    return metric_pb2.MetricSide(
        event_types=list(side.event_types),
        aggregation=AGGREGATION_TO_PROTO[side.aggregation],
        property=side.value_property,
        quantile=0.0 if math.isnan(side.quantile) else side.quantile,
        scale=side.scale,
    )


def spec_to_proto(spec: MetricSpec) -> metric_pb2.Metric:
    message = metric_pb2.Metric(
        name=spec.name,
        version=spec.version,
        value=_side_to_proto(spec.value),
        window_seconds=spec.window_seconds,
        direction=metric_pb2.METRIC_DIRECTION_HIGHER_IS_BETTER
        if spec.higher_is_better
        else metric_pb2.METRIC_DIRECTION_LOWER_IS_BETTER,
        description=spec.description,
        builtin=BUILTIN_SPECS.get(spec.name) == spec,
    )
    if spec.denominator is not None:
        message.denominator.CopyFrom(_side_to_proto(spec.denominator))
    if not math.isnan(spec.cap_lower):
        message.cap_lower = spec.cap_lower
    if not math.isnan(spec.cap_upper):
        message.cap_upper = spec.cap_upper
    return message
