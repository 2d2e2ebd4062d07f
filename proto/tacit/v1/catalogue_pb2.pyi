import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tacit.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CatalogueItem(_message.Message):
    __slots__ = ("id", "tags", "features", "available_from", "available_until", "feature_digest", "update_time", "stale")
    ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FROM_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_UNTIL_FIELD_NUMBER: _ClassVar[int]
    FEATURE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    id: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    features: _common_pb2.Features
    available_from: _timestamp_pb2.Timestamp
    available_until: _timestamp_pb2.Timestamp
    feature_digest: str
    update_time: _timestamp_pb2.Timestamp
    stale: bool
    def __init__(self, id: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., features: _Optional[_Union[_common_pb2.Features, _Mapping]] = ..., available_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., available_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., feature_digest: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stale: _Optional[bool] = ...) -> None: ...

class UpsertCatalogueItemsRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CatalogueItem]
    def __init__(self, items: _Optional[_Iterable[_Union[CatalogueItem, _Mapping]]] = ...) -> None: ...

class UpsertCatalogueItemsResponse(_message.Message):
    __slots__ = ("created", "updated", "unchanged", "dropped_fields")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    created: int
    updated: int
    unchanged: int
    dropped_fields: int
    def __init__(self, created: _Optional[int] = ..., updated: _Optional[int] = ..., unchanged: _Optional[int] = ..., dropped_fields: _Optional[int] = ...) -> None: ...

class GetCatalogueItemRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListCatalogueItemsRequest(_message.Message):
    __slots__ = ("tags", "available_only", "page_size", "page_token")
    TAGS_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tags: _containers.RepeatedScalarFieldContainer[str]
    available_only: bool
    page_size: int
    page_token: str
    def __init__(self, tags: _Optional[_Iterable[str]] = ..., available_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCatalogueItemsResponse(_message.Message):
    __slots__ = ("items", "next_page_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CatalogueItem]
    next_page_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[CatalogueItem, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteCatalogueItemRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class DeleteCatalogueItemResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
