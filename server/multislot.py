"""Multi-slot ranking: several slots of one page, distinct choices, one decision per slot.

Sequential over the slots' own bandits, in the caller's order: slot k is an ordinary
`DecisionEngine.rank` over the page's eligible candidates minus those the earlier slots
chose (passed as excluded ids). Its logged probabilities are therefore the slot policy's
probabilities CONDITIONAL on that reduced set — exactly the propensity the slot's own
learner and off-policy evaluation need, because the reduced set is part of what the slot
saw. Every slot decision is a normal decision row (own model, reward window, default
reward, audit entry), under the event id `slot_event_id(page, slot)`; idempotency, the
candidate cache, exclusions and the decision log are Rank's own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from threading import Lock

from tacit.server.decisions import (
    DecisionEngine,
    PreparedCandidate,
    RankCandidate,
    RankInput,
    RankResult,
    RawCandidate,
    Value,
)
from tacit.server.errors import InvalidArgument


@dataclass(frozen=True)
class PageSlot:
    slot: str
    features: Mapping[str, Value]


@dataclass(frozen=True)
class PageInput:
    subject_id: str
    context: Mapping[str, Value]
    slots: tuple[PageSlot, ...]
    candidates: Sequence[RankCandidate]
    excluded_ids: frozenset[str] = frozenset()
    event_id: str = ""
    request_id: str = ""


@dataclass(frozen=True)
class PageResult:
    event_id: str
    # (slot name, its decision) in request order; each decision's event_id is the slot's internal one.
    decisions: tuple[tuple[str, RankResult], ...]
    dropped_context_fields: int
    dropped_candidate_fields: int


def slot_event_id(page_event_id: str, slot: str) -> str:
    """The event id of one slot's decision inside a page event. '/' is in neither an event id
    nor a slot name, so it never collides with a Rank event id or another page's slot."""
    return f"{page_event_id}/{slot}"


def _slot_request_id(request_id: str, slots: Sequence[PageSlot], slot: str) -> str:
    """A slot decision's idempotency key: the page's, its list of slots and the slot, so a
    retry with another list of slots is not mistaken for the original page."""
    if not request_id:
        return ""
    return f"{request_id}/{','.join(s.slot for s in slots)}/{slot}"


def _duplicate_event_id() -> InvalidArgument:
    return InvalidArgument("event_id", "an event with this id was already ranked", "DUPLICATE_EVENT_ID")


# Pages with one request id are ranked one at a time (striped locks, in this process), so a
# concurrent twin sees the whole first page and answers it instead of a half-ranked one.
_PAGE_LOCK_STRIPES = 64


class PageRanker:
    """Ranks a page's slots one after another through the decision engine."""

    def __init__(self, engine: DecisionEngine):
        self.engine = engine
        self._page_locks = tuple(Lock() for _ in range(_PAGE_LOCK_STRIPES))

    def rank(self, page: PageInput, now: datetime | None = None) -> PageResult:
        if not page.request_id:
            return self._rank(page, now)
        stripe = hash(page.request_id) % _PAGE_LOCK_STRIPES  # in memory only
        with self._page_locks[stripe]:
            return self._rank(page, now)

    def _rank(self, page: PageInput, now: datetime | None) -> PageResult:
        engine = self.engine
        eligible = [c for c in page.candidates if c.id not in page.excluded_ids]
        if len(eligible) < len(page.slots):
            raise InvalidArgument("candidates", "fewer eligible candidates than slots")
        if page.event_id:
            page_event = page.event_id
        elif page.request_id:
            page_event = engine.derived_event_id(engine.keyring.active_key_id, page.request_id)
        else:
            page_event = engine.new_event_id()
        if page.event_id or page.request_id:
            self._refuse_partial_reuse(page_event, page)
        # Prepared once for the page (boundary, digest, VW line), then shared by every slot.
        generation = engine.candidates.generation()
        correlation = engine.keyring.digest(slot_event_id(page_event, page.slots[0].slot))
        prepared: list[PreparedCandidate] = [
            c
            if type(c) is PreparedCandidate and c.generation == generation
            else engine.candidates.prepare(
                c if type(c) is RawCandidate else RawCandidate(c.id, c.features), correlation, generation
            )
            for c in eligible
        ]
        taken: set[str] = set()
        decisions: list[tuple[str, RankResult]] = []
        for slot in page.slots:
            request = RankInput(
                slot=slot.slot,
                subject_id=page.subject_id,
                context={**page.context, **slot.features},
                candidates=prepared,
                excluded_ids=frozenset(taken),
                event_id=slot_event_id(page_event, slot.slot),
                request_id=_slot_request_id(page.request_id, page.slots, slot.slot),
            )
            if page.event_id or page.request_id:
                result = engine.rank(request, now)  # idempotency and duplicate checks by id
            else:
                # A fresh random page id, as Rank's own generated ids: no look-up needed.
                result = engine.rank_with_new_event_id(request, now, request.event_id)
            taken.add(result.chosen_id)
            decisions.append((slot.slot, result))
        return PageResult(
            event_id=page_event,
            decisions=tuple(decisions),
            dropped_context_fields=sum(result.dropped_context_fields for _, result in decisions),
            dropped_candidate_fields=sum(p.dropped for p in prepared),
        )

    def _refuse_partial_reuse(self, page_event: str, page: PageInput) -> None:
        """A page event id some of whose slots were ranked before (another list of slots) is
        refused before anything is logged; all of them ranked is a retry (or DUPLICATE_EVENT_ID
        from Rank's own check at the first slot, also before anything is logged)."""
        ranked = [
            self.engine.event_exists(self.engine.keyring.digests(slot_event_id(page_event, s.slot)))
            for s in page.slots
        ]
        if any(ranked) and not (all(ranked) and page.request_id):
            raise _duplicate_event_id()
