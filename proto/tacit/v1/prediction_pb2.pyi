from tacit.v1 import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("subject_id", "context")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    context: _common_pb2.Features
    def __init__(self, subject_id: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.Features, _Mapping]] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("probability", "model_version", "default_profile")
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    probability: float
    model_version: str
    default_profile: bool
    def __init__(self, probability: _Optional[float] = ..., model_version: _Optional[str] = ..., default_profile: _Optional[bool] = ...) -> None: ...

class PredictEngagementRequest(_message.Message):
    __slots__ = ("subject_id", "context")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    context: _common_pb2.Features
    def __init__(self, subject_id: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.Features, _Mapping]] = ...) -> None: ...

class PredictEngagementResponse(_message.Message):
    __slots__ = ("expected_dwell_seconds", "model_version", "default_profile", "baseline_dwell_seconds")
    EXPECTED_DWELL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    BASELINE_DWELL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    expected_dwell_seconds: float
    model_version: str
    default_profile: bool
    baseline_dwell_seconds: float
    def __init__(self, expected_dwell_seconds: _Optional[float] = ..., model_version: _Optional[str] = ..., default_profile: _Optional[bool] = ..., baseline_dwell_seconds: _Optional[float] = ...) -> None: ...
