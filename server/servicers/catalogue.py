"""CatalogueService: upsert, get, list, delete content items; and Rank's catalogue hook."""

from __future__ import annotations

from collections.abc import Callable, Container

import grpc

from tacit.server.catalogue import Catalogue, Selection, TagFilter, require_tags
from tacit.server.config import Settings
from tacit.server.converters import catalogue as convert
from tacit.server.decisions import PreparedCandidate
from tacit.server.errors import InvalidArgument
from tacit.v1 import catalogue_pb2, catalogue_pb2_grpc, decision_pb2

DEFAULT_PAGE = 100
MAX_PAGE = 1_000


class CatalogueServicer(catalogue_pb2_grpc.CatalogueServiceServicer):
    def __init__(
        self,
        catalogue: Catalogue,
        settings: Settings,
        known_names: Container[str],
        role_of: Callable[[grpc.ServicerContext], str],
    ):
        self._catalogue = catalogue
        self._settings = settings
        self._known_names = known_names
        self._role_of = role_of

    def UpsertCatalogueItems(  # noqa: N802
        self, request: catalogue_pb2.UpsertCatalogueItemsRequest, context: grpc.ServicerContext
    ) -> catalogue_pb2.UpsertCatalogueItemsResponse:
        items = convert.upsert_items(request, self._settings.limits, self._known_names)
        outcome = self._catalogue.upsert(items, self._role_of(context))
        return catalogue_pb2.UpsertCatalogueItemsResponse(
            created=outcome.created,
            updated=outcome.updated,
            unchanged=outcome.unchanged,
            dropped_fields=outcome.dropped_fields,
        )

    def GetCatalogueItem(  # noqa: N802
        self, request: catalogue_pb2.GetCatalogueItemRequest, context: grpc.ServicerContext
    ) -> catalogue_pb2.CatalogueItem:
        row = self._catalogue.get(convert.require_item_id("id", request.id, stored=True))
        return convert.item_message(row, self._catalogue.is_stale(row))

    def ListCatalogueItems(  # noqa: N802
        self, request: catalogue_pb2.ListCatalogueItemsRequest, context: grpc.ServicerContext
    ) -> catalogue_pb2.ListCatalogueItemsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        page_size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        tags = frozenset(require_tags("tags", list(request.tags)))
        after = convert.decode_page_token(request.page_token)
        found, cursor = self._catalogue.list(tags, request.available_only, page_size, after)
        return catalogue_pb2.ListCatalogueItemsResponse(
            items=[convert.item_message(row, self._catalogue.is_stale(row)) for row in found],
            next_page_token=convert.encode_page_token(cursor) if cursor is not None else "",
        )

    def DeleteCatalogueItem(  # noqa: N802
        self, request: catalogue_pb2.DeleteCatalogueItemRequest, context: grpc.ServicerContext
    ) -> catalogue_pb2.DeleteCatalogueItemResponse:
        self._catalogue.delete(convert.require_item_id("id", request.id, stored=True), self._role_of(context))
        return catalogue_pb2.DeleteCatalogueItemResponse()


class CatalogueRank:
    """Rank's hook: with use_catalogue, the candidates come from the catalogue."""

    def __init__(self, catalogue: Catalogue):
        self._catalogue = catalogue

    def call(self, request: decision_pb2.RankRequest, max_candidates: int) -> CatalogueCall | None:
        """None for an inline Rank (a tag filter without use_catalogue is refused)."""
        if not request.use_catalogue:
            if request.tags or request.any_tags or request.excluded_tags:
                raise InvalidArgument("tags", "a tag filter needs use_catalogue")
            return None
        return CatalogueCall(
            self._catalogue,
            convert.rank_catalogue_ids(request, max_candidates, self._catalogue.item_ids()),
            convert.rank_tag_filter(request),
            frozenset(request.excluded_ids),
            max_candidates,
        )


class CatalogueCall:
    """One catalogue Rank: selects its candidates when asked, then reports what it skipped."""

    def __init__(
        self, catalogue: Catalogue, ids: list[str], tags: TagFilter, excluded: frozenset[str], limit: int
    ):
        self._catalogue = catalogue
        self._ids = ids
        self._tags = tags
        self._excluded = excluded
        self._limit = limit
        self.selection = Selection([])

    def candidates(self) -> list[PreparedCandidate]:
        self.selection = self._catalogue.select(self._ids, self._tags, self._excluded, self._limit)
        return self.selection.candidates

    def annotate(self, response: decision_pb2.RankResponse) -> decision_pb2.RankResponse:
        response.unknown_candidates = self.selection.unknown
        response.unavailable_candidates = self.selection.unavailable
        response.matched_items = self.selection.matched
        return response
