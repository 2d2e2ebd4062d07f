import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tacit.v1 import common_pb2 as _common_pb2
from tacit.v1 import slot_pb2 as _slot_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RewardOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REWARD_OUTCOME_UNSPECIFIED: _ClassVar[RewardOutcome]
    REWARD_OUTCOME_JOINED: _ClassVar[RewardOutcome]
    REWARD_OUTCOME_LATE: _ClassVar[RewardOutcome]
    REWARD_OUTCOME_DUPLICATE: _ClassVar[RewardOutcome]
REWARD_OUTCOME_UNSPECIFIED: RewardOutcome
REWARD_OUTCOME_JOINED: RewardOutcome
REWARD_OUTCOME_LATE: RewardOutcome
REWARD_OUTCOME_DUPLICATE: RewardOutcome

class Candidate(_message.Message):
    __slots__ = ("id", "features")
    ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    id: str
    features: _common_pb2.Features
    def __init__(self, id: _Optional[str] = ..., features: _Optional[_Union[_common_pb2.Features, _Mapping]] = ...) -> None: ...

class RankRequest(_message.Message):
    __slots__ = ("slot", "subject_id", "context", "candidates", "excluded_ids", "event_id", "defer_activation", "request_id", "baseline_id", "use_catalogue", "tags", "any_tags", "excluded_tags")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_IDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DEFER_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    BASELINE_ID_FIELD_NUMBER: _ClassVar[int]
    USE_CATALOGUE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ANY_TAGS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_TAGS_FIELD_NUMBER: _ClassVar[int]
    slot: str
    subject_id: str
    context: _common_pb2.Features
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    excluded_ids: _containers.RepeatedScalarFieldContainer[str]
    event_id: str
    defer_activation: bool
    request_id: str
    baseline_id: str
    use_catalogue: bool
    tags: _containers.RepeatedScalarFieldContainer[str]
    any_tags: _containers.RepeatedScalarFieldContainer[str]
    excluded_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, slot: _Optional[str] = ..., subject_id: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.Features, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., excluded_ids: _Optional[_Iterable[str]] = ..., event_id: _Optional[str] = ..., defer_activation: _Optional[bool] = ..., request_id: _Optional[str] = ..., baseline_id: _Optional[str] = ..., use_catalogue: _Optional[bool] = ..., tags: _Optional[_Iterable[str]] = ..., any_tags: _Optional[_Iterable[str]] = ..., excluded_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class RankedCandidate(_message.Message):
    __slots__ = ("id", "probability")
    ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    probability: float
    def __init__(self, id: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class RankResponse(_message.Message):
    __slots__ = ("event_id", "chosen_id", "ranking", "model_version", "arm", "dropped_context_fields", "dropped_candidate_fields", "slot_mode", "served_baseline", "unknown_candidates", "unavailable_candidates", "matched_items")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_ID_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CONTEXT_FIELDS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CANDIDATE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    SLOT_MODE_FIELD_NUMBER: _ClassVar[int]
    SERVED_BASELINE_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    UNAVAILABLE_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    MATCHED_ITEMS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    chosen_id: str
    ranking: _containers.RepeatedCompositeFieldContainer[RankedCandidate]
    model_version: str
    arm: str
    dropped_context_fields: int
    dropped_candidate_fields: int
    slot_mode: _slot_pb2.SlotMode
    served_baseline: bool
    unknown_candidates: int
    unavailable_candidates: int
    matched_items: int
    def __init__(self, event_id: _Optional[str] = ..., chosen_id: _Optional[str] = ..., ranking: _Optional[_Iterable[_Union[RankedCandidate, _Mapping]]] = ..., model_version: _Optional[str] = ..., arm: _Optional[str] = ..., dropped_context_fields: _Optional[int] = ..., dropped_candidate_fields: _Optional[int] = ..., slot_mode: _Optional[_Union[_slot_pb2.SlotMode, str]] = ..., served_baseline: _Optional[bool] = ..., unknown_candidates: _Optional[int] = ..., unavailable_candidates: _Optional[int] = ..., matched_items: _Optional[int] = ...) -> None: ...

class RewardRequest(_message.Message):
    __slots__ = ("event_id", "value", "request_id", "occurred_at", "slot")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    value: float
    request_id: str
    occurred_at: _timestamp_pb2.Timestamp
    slot: str
    def __init__(self, event_id: _Optional[str] = ..., value: _Optional[float] = ..., request_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., slot: _Optional[str] = ...) -> None: ...

class RewardResponse(_message.Message):
    __slots__ = ("outcome",)
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    outcome: RewardOutcome
    def __init__(self, outcome: _Optional[_Union[RewardOutcome, str]] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class ActivateResponse(_message.Message):
    __slots__ = ("already_active",)
    ALREADY_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    already_active: bool
    def __init__(self, already_active: _Optional[bool] = ...) -> None: ...

class MultiSlotSlot(_message.Message):
    __slots__ = ("slot", "features")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    slot: str
    features: _common_pb2.Features
    def __init__(self, slot: _Optional[str] = ..., features: _Optional[_Union[_common_pb2.Features, _Mapping]] = ...) -> None: ...

class MultiSlotRankRequest(_message.Message):
    __slots__ = ("subject_id", "context", "slots", "candidates", "excluded_ids", "event_id", "request_id")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_IDS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    context: _common_pb2.Features
    slots: _containers.RepeatedCompositeFieldContainer[MultiSlotSlot]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    excluded_ids: _containers.RepeatedScalarFieldContainer[str]
    event_id: str
    request_id: str
    def __init__(self, subject_id: _Optional[str] = ..., context: _Optional[_Union[_common_pb2.Features, _Mapping]] = ..., slots: _Optional[_Iterable[_Union[MultiSlotSlot, _Mapping]]] = ..., candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., excluded_ids: _Optional[_Iterable[str]] = ..., event_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class MultiSlotDecision(_message.Message):
    __slots__ = ("slot", "chosen_id", "ranking", "model_version", "arm")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    CHOSEN_ID_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    slot: str
    chosen_id: str
    ranking: _containers.RepeatedCompositeFieldContainer[RankedCandidate]
    model_version: str
    arm: str
    def __init__(self, slot: _Optional[str] = ..., chosen_id: _Optional[str] = ..., ranking: _Optional[_Iterable[_Union[RankedCandidate, _Mapping]]] = ..., model_version: _Optional[str] = ..., arm: _Optional[str] = ...) -> None: ...

class MultiSlotRankResponse(_message.Message):
    __slots__ = ("event_id", "decisions", "dropped_context_fields", "dropped_candidate_fields")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CONTEXT_FIELDS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CANDIDATE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    decisions: _containers.RepeatedCompositeFieldContainer[MultiSlotDecision]
    dropped_context_fields: int
    dropped_candidate_fields: int
    def __init__(self, event_id: _Optional[str] = ..., decisions: _Optional[_Iterable[_Union[MultiSlotDecision, _Mapping]]] = ..., dropped_context_fields: _Optional[int] = ..., dropped_candidate_fields: _Optional[int] = ...) -> None: ...
