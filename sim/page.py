"""A simulated page with several slots (hero, sidebar, footer) whose per-slot optimum is known.

Each slot has its own click model: the content site's taste for the item in this context
(device, hour) plus a per-slot taste for the item's topic and a per-slot offset (a hero
gets more clicks than a footer). A slot's clicks depend only on its own item, so, given
the items the OTHER slots of a page show, a slot's best achievable click probability is
the highest among the page's candidates that no other slot shows: `optimum_given_others`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tacit.sim.client import to_features, visit_candidates, visit_context
from tacit.sim.world import TOPICS, ContentSite, Visit
from tacit.v1 import decision_pb2

PAGE_SLOTS = ("hero", "sidebar", "footer")
SLOT_OFFSETS = {"hero": -0.4, "sidebar": -1.0, "footer": -1.6}


@dataclass(frozen=True)
class PageVisit:
    """One page view: a visit of the content site and each slot's click probability per candidate."""

    visit: Visit
    click_probabilities: Mapping[str, tuple[float, ...]]  # slot -> per candidate

    @property
    def candidate_ids(self) -> tuple[str, ...]:
        return tuple(item.item_id for item in self.visit.candidates)

    def probability(self, slot: str, item_id: str) -> float:
        return self.click_probabilities[slot][self.candidate_ids.index(item_id)]

    def optimum_given_others(self, chosen: Mapping[str, str]) -> dict[str, float]:
        """Per slot: the best click probability among the candidates no OTHER slot shows."""
        optimum = {}
        for slot in chosen:
            others = {item for other, item in chosen.items() if other != slot}
            optimum[slot] = max(
                p
                for item, p in zip(self.candidate_ids, self.click_probabilities[slot], strict=True)
                if item not in others
            )
        return optimum


class PageSite:
    """Ground truth for pages of `slots` over a content site's catalogue and users."""

    def __init__(
        self,
        slots: Sequence[str] = PAGE_SLOTS,
        n_items: int = 24,
        n_candidates: int = 8,
        seed: int = 13,
    ):
        self.slots = tuple(slots)
        self.site = ContentSite(n_items=n_items, n_users=500, n_candidates=n_candidates, seed=seed)
        rng = np.random.default_rng(seed + 2)
        self.slot_taste = {slot: rng.normal(0.0, 0.7, size=len(TOPICS)) for slot in self.slots}
        self._rng = np.random.default_rng(seed + 3)

    def click_probability(self, slot: str, visit: Visit, index: int) -> float:
        item = visit.candidates[index]
        base = visit.click_probabilities[index]
        logit = np.log(base / (1.0 - base)) + SLOT_OFFSETS.get(slot, 0.0)
        logit += self.slot_taste[slot][TOPICS.index(item.topic)]
        return float(1.0 / (1.0 + np.exp(-logit)))

    def page(self) -> PageVisit:
        visit = self.site.visit()
        return PageVisit(
            visit,
            {
                slot: tuple(self.click_probability(slot, visit, i) for i in range(len(visit.candidates)))
                for slot in self.slots
            },
        )

    def pages(self, count: int) -> Iterator[PageVisit]:
        for _ in range(count):
            yield self.page()

    def click(self, probability: float) -> bool:
        return bool(self._rng.random() < probability)


def page_request(
    page: PageVisit, slots: Sequence[str], request_id: str = ""
) -> decision_pb2.MultiSlotRankRequest:
    """The RankMultiSlot request a site would send for this page (slots in order of value)."""
    return decision_pb2.MultiSlotRankRequest(
        subject_id=page.visit.subject_id,
        context=to_features(visit_context(page.visit)),
        slots=[decision_pb2.MultiSlotSlot(slot=slot) for slot in slots],
        candidates=[
            decision_pb2.Candidate(id=cid, features=to_features(features))
            for cid, features in visit_candidates(page.visit)
        ],
        request_id=request_id,
    )
