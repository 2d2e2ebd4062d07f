"""DecisionService: Rank, Reward, Activate."""

from __future__ import annotations

import grpc

from tacit.server import converters
from tacit.server.budget import require_within_budget, scrub_chars
from tacit.server.config import Settings
from tacit.server.converters import decision as decision_converters
from tacit.server.converters import multislot as multislot_converters
from tacit.server.decisions import DecisionEngine, PreparedCandidate, RewardOutcome, budget_key
from tacit.server.errors import NotFound
from tacit.server.multislot import PageRanker, slot_event_id
from tacit.server.servicers.catalogue import CatalogueRank
from tacit.v1 import decision_pb2, decision_pb2_grpc

_OUTCOMES = {
    RewardOutcome.JOINED: decision_pb2.REWARD_OUTCOME_JOINED,
    RewardOutcome.LATE: decision_pb2.REWARD_OUTCOME_LATE,
    RewardOutcome.DUPLICATE: decision_pb2.REWARD_OUTCOME_DUPLICATE,
}


class DecisionServicer(decision_pb2_grpc.DecisionServiceServicer):
    def __init__(
        self,
        engine: DecisionEngine,
        settings: Settings,
        known_names: frozenset[str],
        catalogue: CatalogueRank | None = None,
    ):
        self._engine = engine
        self._settings = settings
        self._known_names = known_names
        self._catalogue = catalogue
        self._pages = PageRanker(engine)

    def Rank(
        self, request: decision_pb2.RankRequest, context: grpc.ServicerContext
    ) -> decision_pb2.RankResponse:  # noqa: N802
        if request.slot not in self._settings.slots:
            converters.require_text("slot", request.slot, self._settings.limits, converters.SLOT_NAME)
            raise NotFound("slot: no slot with this name is configured", "SLOT_NOT_FOUND")
        limit = self._settings.slot_limit(request.slot)
        catalogue = self._catalogue.call(request, limit) if self._catalogue is not None else None
        rank_input = decision_converters.rank_input(
            request,
            self._settings.limits,
            limit,
            self._known_names,
            self._engine.candidates,
            catalogue.candidates if catalogue is not None else None,
        )
        # Before any work: the text this request would send to Presidio, within its budget.
        # Counted per distinct feature map, prepared (cached) candidates included, so the
        # same request is accepted or refused whatever the cache holds.
        boundary, budget = self._engine.boundary, self._settings.limits.max_scrub_chars_per_request
        context_chars = scrub_chars(boundary, "rank_context", rank_input.context)
        require_within_budget("context", [context_chars], budget)
        distinct: dict[tuple, int] = {}
        for candidate in rank_input.candidates:
            if type(candidate) is PreparedCandidate:
                distinct[candidate.budget_key] = candidate.scrub_chars
            else:
                key = budget_key(candidate.features)
                if key not in distinct:
                    distinct[key] = scrub_chars(boundary, "candidate_features", candidate.features)
        require_within_budget("candidates", [context_chars, *distinct.values()], budget)
        response = decision_converters.rank_response(self._engine.rank(rank_input))
        return catalogue.annotate(response) if catalogue is not None else response

    def Reward(
        self, request: decision_pb2.RewardRequest, context: grpc.ServicerContext
    ) -> decision_pb2.RewardResponse:  # noqa: N802
        event_id = converters.required_event_id("event_id", request.event_id)
        value = converters.finite("value", request.value)
        request_id = converters.event_id_or_empty("request_id", request.request_id)
        if request.slot:  # a slot's decision inside a RankMultiSlot page event
            converters.require_text("slot", request.slot, self._settings.limits, converters.SLOT_NAME)
            event_id = slot_event_id(event_id, request.slot)
        occurred_at = decision_converters.reward_occurred_at(
            request.occurred_at, request.HasField("occurred_at"), self._settings.limits
        )
        outcome = self._engine.reward(event_id, value, request_id, occurred_at)
        return decision_pb2.RewardResponse(outcome=_OUTCOMES[outcome])

    def RankMultiSlot(
        self, request: decision_pb2.MultiSlotRankRequest, context: grpc.ServicerContext
    ) -> decision_pb2.MultiSlotRankResponse:  # noqa: N802
        page = multislot_converters.page_input(
            request,
            self._settings.limits,
            {slot: self._settings.slot_limit(slot) for slot in self._settings.slots},
            self._known_names,
            self._engine.candidates,
        )
        # Before any work, as for Rank: each slot's context (page context + slot features) goes
        # through the boundary once per slot; each distinct candidate once for the page.
        boundary, budget = self._engine.boundary, self._settings.limits.max_scrub_chars_per_request
        contexts = [
            scrub_chars(boundary, "rank_context", {**page.context, **slot.features}) for slot in page.slots
        ]
        require_within_budget("context", contexts, budget)
        distinct = {
            c.budget_key if type(c) is PreparedCandidate else budget_key(c.features): c
            for c in page.candidates
        }
        candidate_chars = [
            c.scrub_chars
            if type(c) is PreparedCandidate
            else scrub_chars(boundary, "candidate_features", c.features)
            for c in distinct.values()
        ]
        require_within_budget("candidates", [*contexts, *candidate_chars], budget)
        return multislot_converters.page_response(self._pages.rank(page))

    def Activate(
        self, request: decision_pb2.ActivateRequest, context: grpc.ServicerContext
    ) -> decision_pb2.ActivateResponse:  # noqa: N802
        event_id = converters.required_event_id("event_id", request.event_id)
        return decision_pb2.ActivateResponse(already_active=self._engine.activate(event_id))
