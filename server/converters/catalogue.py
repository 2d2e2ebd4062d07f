"""CatalogueService protobuf <-> domain conversions, and the catalogue side of a Rank request."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Container, Mapping

from tacit.privacy.identifiers import personal_data_in_content_id
from tacit.server.catalogue import MAX_BATCH, ItemInput, TagFilter, encoded_personal_data, require_tags
from tacit.server.config import LimitSettings
from tacit.server.converters import CONTENT_ID, features_to_dict, timestamp_or_none, to_timestamp
from tacit.server.errors import InvalidArgument
from tacit.store.catalogue import ItemRow
from tacit.v1 import catalogue_pb2, common_pb2, decision_pb2


def require_item_id(field: str, value: str, stored: bool = False) -> str:
    """A content id, the rule of Candidate.id; the error names the field, never the id.

    `stored`: the id is about to be stored, so an encoded token in it must not decode to
    personal data either."""
    if not CONTENT_ID.match(value):
        raise InvalidArgument(field, f"must match {CONTENT_ID.pattern}")
    if personal_data_in_content_id(value) or (stored and encoded_personal_data(value)):
        raise InvalidArgument(
            field,
            "looks like personal data (a phone, SSN, card number, IBAN, IP or e-mail address);"
            " use an opaque content id",
        )
    return value


def upsert_items(
    request: catalogue_pb2.UpsertCatalogueItemsRequest, limits: LimitSettings, known_names: Container[str]
) -> list[ItemInput]:
    if not request.items:
        raise InvalidArgument("items", "at least one item is required")
    if len(request.items) > MAX_BATCH:
        raise InvalidArgument("items", f"more than {MAX_BATCH} items in one request")
    seen: set[str] = set()
    out: list[ItemInput] = []
    for index, item in enumerate(request.items):
        where = f"items[{index}]"
        item_id = require_item_id(f"{where}.id", item.id, stored=True)
        if item_id in seen:
            raise InvalidArgument(f"{where}.id", "duplicates an earlier item id")
        seen.add(item_id)
        start = timestamp_or_none(
            f"{where}.available_from", item.available_from, item.HasField("available_from")
        )
        end = timestamp_or_none(
            f"{where}.available_until", item.available_until, item.HasField("available_until")
        )
        if start is not None and end is not None and end <= start:
            raise InvalidArgument(f"{where}.available_until", "must be later than available_from")
        out.append(
            ItemInput(
                item_id=item_id,
                tags=require_tags(f"{where}.tags", list(item.tags)),
                features=features_to_dict(f"{where}.features", item.features, limits, known_names),
                available_from=start,
                available_until=end,
            )
        )
    return out


def features_message(values: Mapping[str, object]) -> common_pb2.Features:
    """A plain feature map as the Features message (bool, number, else string)."""
    features = common_pb2.Features()
    for name, value in values.items():
        if isinstance(value, bool):
            features.values[name].bool_value = value
        elif isinstance(value, int | float):
            features.values[name].number_value = float(value)
        else:
            features.values[name].string_value = str(value)
    return features


def item_message(row: ItemRow, stale: bool) -> catalogue_pb2.CatalogueItem:
    message = catalogue_pb2.CatalogueItem(
        id=row.item_id,
        tags=list(row.tags),
        features=features_message(row.features),
        feature_digest=row.feature_digest,
        update_time=to_timestamp(row.updated_at),
        stale=stale,
    )
    if row.available_from is not None:
        message.available_from.CopyFrom(to_timestamp(row.available_from))
    if row.available_until is not None:
        message.available_until.CopyFrom(to_timestamp(row.available_until))
    return message


_TOKEN_PREFIX = "after:"


def encode_page_token(after_id: str) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{after_id}".encode()).decode()


def decode_page_token(token: str) -> str | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        text = ""
    if not text.startswith(_TOKEN_PREFIX) or not CONTENT_ID.match(text[len(_TOKEN_PREFIX) :]):
        raise InvalidArgument("page_token", "is not a token returned by ListCatalogueItems")
    return text[len(_TOKEN_PREFIX) :]


NO_TAG_FILTER = TagFilter()


def rank_tag_filter(request: decision_pb2.RankRequest) -> TagFilter:
    if not (request.tags or request.any_tags or request.excluded_tags):
        return NO_TAG_FILTER
    return TagFilter(
        required=frozenset(require_tags("tags", list(request.tags))),
        any_of=frozenset(require_tags("any_tags", list(request.any_tags))),
        excluded=frozenset(require_tags("excluded_tags", list(request.excluded_tags))),
    )


def rank_catalogue_ids(
    request: decision_pb2.RankRequest, max_candidates: int, known: Container[str] = frozenset()
) -> list[str]:
    """The candidate ids of a use_catalogue Rank: ids only, valid, distinct, within the limit.

    An id in `known` (the catalogue) was checked when it was stored and is not checked again."""
    candidates = request.candidates
    if len(candidates) > max_candidates:
        raise InvalidArgument("candidates", f"more than {max_candidates} candidates for this slot")
    ids = [candidate.id for candidate in candidates]
    for index, item_id in enumerate(ids):
        if item_id not in known:
            require_item_id(f"candidates[{index}].id", item_id)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for index, item_id in enumerate(ids):
            if item_id in seen:
                raise InvalidArgument(f"candidates[{index}].id", "duplicates an earlier candidate id")
            seen.add(item_id)
    for index, candidate in enumerate(candidates):
        if candidate.HasField("features") and candidate.features.values:
            raise InvalidArgument(
                f"candidates[{index}].features",
                "must be empty with use_catalogue (features come from the catalogue)",
            )
    return ids
