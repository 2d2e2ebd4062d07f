from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetricAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_AGGREGATION_UNSPECIFIED: _ClassVar[MetricAggregation]
    METRIC_AGGREGATION_ANY: _ClassVar[MetricAggregation]
    METRIC_AGGREGATION_SINGLE: _ClassVar[MetricAggregation]
    METRIC_AGGREGATION_COUNT: _ClassVar[MetricAggregation]
    METRIC_AGGREGATION_SUM: _ClassVar[MetricAggregation]
    METRIC_AGGREGATION_MEAN: _ClassVar[MetricAggregation]
    METRIC_AGGREGATION_MAX: _ClassVar[MetricAggregation]
    METRIC_AGGREGATION_QUANTILE: _ClassVar[MetricAggregation]

class MetricDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METRIC_DIRECTION_UNSPECIFIED: _ClassVar[MetricDirection]
    METRIC_DIRECTION_HIGHER_IS_BETTER: _ClassVar[MetricDirection]
    METRIC_DIRECTION_LOWER_IS_BETTER: _ClassVar[MetricDirection]
METRIC_AGGREGATION_UNSPECIFIED: MetricAggregation
METRIC_AGGREGATION_ANY: MetricAggregation
METRIC_AGGREGATION_SINGLE: MetricAggregation
METRIC_AGGREGATION_COUNT: MetricAggregation
METRIC_AGGREGATION_SUM: MetricAggregation
METRIC_AGGREGATION_MEAN: MetricAggregation
METRIC_AGGREGATION_MAX: MetricAggregation
METRIC_AGGREGATION_QUANTILE: MetricAggregation
METRIC_DIRECTION_UNSPECIFIED: MetricDirection
METRIC_DIRECTION_HIGHER_IS_BETTER: MetricDirection
METRIC_DIRECTION_LOWER_IS_BETTER: MetricDirection

class MetricSide(_message.Message):
    __slots__ = ("event_types", "aggregation", "property", "quantile", "scale")
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_FIELD_NUMBER: _ClassVar[int]
    QUANTILE_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    event_types: _containers.RepeatedScalarFieldContainer[str]
    aggregation: MetricAggregation
    property: str
    quantile: float
    scale: float
    def __init__(self, event_types: _Optional[_Iterable[str]] = ..., aggregation: _Optional[_Union[MetricAggregation, str]] = ..., property: _Optional[str] = ..., quantile: _Optional[float] = ..., scale: _Optional[float] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("name", "version", "value", "denominator", "window_seconds", "direction", "cap_lower", "cap_upper", "description", "builtin")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DENOMINATOR_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    CAP_LOWER_FIELD_NUMBER: _ClassVar[int]
    CAP_UPPER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    value: MetricSide
    denominator: MetricSide
    window_seconds: float
    direction: MetricDirection
    cap_lower: float
    cap_upper: float
    description: str
    builtin: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., value: _Optional[_Union[MetricSide, _Mapping]] = ..., denominator: _Optional[_Union[MetricSide, _Mapping]] = ..., window_seconds: _Optional[float] = ..., direction: _Optional[_Union[MetricDirection, str]] = ..., cap_lower: _Optional[float] = ..., cap_upper: _Optional[float] = ..., description: _Optional[str] = ..., builtin: _Optional[bool] = ...) -> None: ...

class CreateMetricRequest(_message.Message):
    __slots__ = ("metric", "request_id")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    metric: Metric
    request_id: str
    def __init__(self, metric: _Optional[_Union[Metric, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetMetricRequest(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListMetricsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListMetricsResponse(_message.Message):
    __slots__ = ("metrics", "next_page_token")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[Metric]
    next_page_token: str
    def __init__(self, metrics: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
