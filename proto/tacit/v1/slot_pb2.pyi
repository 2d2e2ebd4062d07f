import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SlotMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SLOT_MODE_UNSPECIFIED: _ClassVar[SlotMode]
    SLOT_MODE_ONLINE: _ClassVar[SlotMode]
    SLOT_MODE_APPRENTICE: _ClassVar[SlotMode]
SLOT_MODE_UNSPECIFIED: SlotMode
SLOT_MODE_ONLINE: SlotMode
SLOT_MODE_APPRENTICE: SlotMode

class PolicyValue(_message.Message):
    __slots__ = ("value", "ci_low", "ci_high", "status", "matched")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    value: float
    ci_low: float
    ci_high: float
    status: str
    matched: int
    def __init__(self, value: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., status: _Optional[str] = ..., matched: _Optional[int] = ...) -> None: ...

class GetSlotStatusRequest(_message.Message):
    __slots__ = ("slot",)
    SLOT_FIELD_NUMBER: _ClassVar[int]
    slot: str
    def __init__(self, slot: _Optional[str] = ...) -> None: ...

class GetSlotStatusResponse(_message.Message):
    __slots__ = ("slot", "mode", "epsilon", "has_switch_margin", "switch_margin", "confidence", "decisions", "baseline_served", "agreement", "learned", "baseline", "lift_lower_bound", "switch_ready", "switch_reason")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    HAS_SWITCH_MARGIN_FIELD_NUMBER: _ClassVar[int]
    SWITCH_MARGIN_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_SERVED_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    LEARNED_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    LIFT_LOWER_BOUND_FIELD_NUMBER: _ClassVar[int]
    SWITCH_READY_FIELD_NUMBER: _ClassVar[int]
    SWITCH_REASON_FIELD_NUMBER: _ClassVar[int]
    slot: str
    mode: SlotMode
    epsilon: float
    has_switch_margin: bool
    switch_margin: float
    confidence: float
    decisions: int
    baseline_served: float
    agreement: float
    learned: PolicyValue
    baseline: PolicyValue
    lift_lower_bound: float
    switch_ready: bool
    switch_reason: str
    def __init__(self, slot: _Optional[str] = ..., mode: _Optional[_Union[SlotMode, str]] = ..., epsilon: _Optional[float] = ..., has_switch_margin: _Optional[bool] = ..., switch_margin: _Optional[float] = ..., confidence: _Optional[float] = ..., decisions: _Optional[int] = ..., baseline_served: _Optional[float] = ..., agreement: _Optional[float] = ..., learned: _Optional[_Union[PolicyValue, _Mapping]] = ..., baseline: _Optional[_Union[PolicyValue, _Mapping]] = ..., lift_lower_bound: _Optional[float] = ..., switch_ready: _Optional[bool] = ..., switch_reason: _Optional[str] = ...) -> None: ...

class SetSlotModeRequest(_message.Message):
    __slots__ = ("slot", "mode", "reason")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    slot: str
    mode: SlotMode
    reason: str
    def __init__(self, slot: _Optional[str] = ..., mode: _Optional[_Union[SlotMode, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class SetSlotModeResponse(_message.Message):
    __slots__ = ("mode", "changed", "change")
    MODE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    mode: SlotMode
    changed: bool
    change: SlotModeChange
    def __init__(self, mode: _Optional[_Union[SlotMode, str]] = ..., changed: _Optional[bool] = ..., change: _Optional[_Union[SlotModeChange, _Mapping]] = ...) -> None: ...

class ListSlotModeChangesRequest(_message.Message):
    __slots__ = ("slot", "page_size", "page_token")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    slot: str
    page_size: int
    page_token: str
    def __init__(self, slot: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SlotModeChange(_message.Message):
    __slots__ = ("sequence", "change_time", "actor", "from_mode", "to_mode", "reason", "decisions", "learned", "baseline")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    FROM_MODE_FIELD_NUMBER: _ClassVar[int]
    TO_MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    LEARNED_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    change_time: _timestamp_pb2.Timestamp
    actor: str
    from_mode: SlotMode
    to_mode: SlotMode
    reason: str
    decisions: int
    learned: PolicyValue
    baseline: PolicyValue
    def __init__(self, sequence: _Optional[int] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., from_mode: _Optional[_Union[SlotMode, str]] = ..., to_mode: _Optional[_Union[SlotMode, str]] = ..., reason: _Optional[str] = ..., decisions: _Optional[int] = ..., learned: _Optional[_Union[PolicyValue, _Mapping]] = ..., baseline: _Optional[_Union[PolicyValue, _Mapping]] = ...) -> None: ...

class ListSlotModeChangesResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[SlotModeChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[SlotModeChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
