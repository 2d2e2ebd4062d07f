import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tacit.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("event_id", "subject_id", "event_type", "occurred_at", "properties")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    subject_id: str
    event_type: str
    occurred_at: _timestamp_pb2.Timestamp
    properties: _common_pb2.Features
    def __init__(self, event_id: _Optional[str] = ..., subject_id: _Optional[str] = ..., event_type: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., properties: _Optional[_Union[_common_pb2.Features, _Mapping]] = ...) -> None: ...

class TrackEventsRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class TrackEventsResponse(_message.Message):
    __slots__ = ("accepted", "duplicates", "dropped_property_fields")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PROPERTY_FIELDS_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    duplicates: int
    dropped_property_fields: int
    def __init__(self, accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., dropped_property_fields: _Optional[int] = ...) -> None: ...
