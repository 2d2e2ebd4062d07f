"""RankMultiSlot protobuf <-> domain: a page's slots in, one decision per slot out.

The page's subject, context, candidates, exclusions and ids are validated by the Rank
converter itself (the same field names), so a page accepts exactly what Rank accepts.
"""

from __future__ import annotations

from collections.abc import Container, Mapping

from tacit.server.config import LimitSettings
from tacit.server.converters import SLOT_NAME, features_to_dict, require_text
from tacit.server.converters.decision import rank_input
from tacit.server.decisions import CandidateCache
from tacit.server.errors import InvalidArgument, NotFound
from tacit.server.multislot import PageInput, PageResult, PageSlot
from tacit.v1 import decision_pb2


def page_slots(
    request: decision_pb2.MultiSlotRankRequest,
    limits: LimitSettings,
    configured: Container[str],
    known_names: Container[str],
) -> tuple[PageSlot, ...]:
    """The page's slots: 1..limits.max_page_slots, each configured, none twice."""
    if not request.slots:
        raise InvalidArgument("slots", "at least one slot is required")
    if len(request.slots) > limits.max_page_slots:
        raise InvalidArgument("slots", f"more than limits.max_page_slots ({limits.max_page_slots}) slots")
    seen: set[str] = set()
    slots: list[PageSlot] = []
    for index, slot in enumerate(request.slots):
        field = f"slots[{index}]"
        require_text(f"{field}.slot", slot.slot, limits, SLOT_NAME)
        if slot.slot not in configured:
            raise NotFound(f"{field}.slot: no slot with this name is configured", "SLOT_NOT_FOUND")
        if slot.slot in seen:
            raise InvalidArgument(f"{field}.slot", "repeats an earlier slot of the page")
        seen.add(slot.slot)
        features = features_to_dict(f"{field}.features", slot.features, limits, known_names)
        slots.append(PageSlot(slot.slot, features))
    return tuple(slots)


def page_input(
    request: decision_pb2.MultiSlotRankRequest,
    limits: LimitSettings,
    slot_limits: Mapping[str, int],
    known_names: Container[str] = frozenset(),
    cache: CandidateCache | None = None,
) -> PageInput:
    """Validates a page; `slot_limits` maps each configured slot to its candidate limit."""
    slots = page_slots(request, limits, slot_limits, known_names)
    shared = rank_input(
        decision_pb2.RankRequest(
            slot=slots[0].slot,
            subject_id=request.subject_id,
            context=request.context,
            candidates=request.candidates,
            excluded_ids=request.excluded_ids,
            event_id=request.event_id,
            request_id=request.request_id,
        ),
        limits,
        min(slot_limits[s.slot] for s in slots),
        known_names,
        cache,
    )
    return PageInput(
        subject_id=shared.subject_id,
        context=shared.context,
        slots=slots,
        candidates=shared.candidates,
        excluded_ids=shared.excluded_ids,
        event_id=shared.event_id,
        request_id=shared.request_id,
    )


def page_response(result: PageResult) -> decision_pb2.MultiSlotRankResponse:
    return decision_pb2.MultiSlotRankResponse(
        event_id=result.event_id,
        decisions=[
            decision_pb2.MultiSlotDecision(
                slot=slot,
                chosen_id=decision.chosen_id,
                ranking=[decision_pb2.RankedCandidate(id=cid, probability=p) for cid, p in decision.ranking],
                model_version=decision.model_version,
                arm=decision.arm,
            )
            for slot, decision in result.decisions
        ],
        dropped_context_fields=result.dropped_context_fields,
        dropped_candidate_fields=result.dropped_candidate_fields,
    )
