"""RankMultiSlot and Reward(slot) through a real server on a real port (SQLite and PostgreSQL).

The learning run is test_multislot_learning.py; this one checks the RPC's promises: distinct
choices, each slot's reduced candidate set and conditional probabilities, rewards by the slot
inside the page event, idempotency, and bad input answered with the field named and nothing
echoed.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures

import grpc
import pytest
from sqlalchemy import func, select

from tacit.sim.client import to_features
from tacit.sim.page import PAGE_SLOTS, PageSite, page_request
from tacit.store.schema import Decision
from tacit.v1 import decision_pb2, decision_pb2_grpc
from tests.conftest import ServerHandle
from tests.faults.test_contract_drift import Rich, call

SENTINEL = "zqsentinel"
PAGES = 40


@pytest.fixture
def page_server(database_url: str, start_server: Callable[..., ServerHandle]) -> ServerHandle:
    slots = {slot: {} for slot in (*PAGE_SLOTS, "home")}
    return start_server(database_url, slots=slots, learner={"enabled": False}, limits={"max_page_slots": 3})


def _refused(outcome: Rich | None, code: grpc.StatusCode, field: str, reason: str) -> None:
    assert outcome is not None and outcome.code == code, field
    assert reason in outcome.reason
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert [f for f, _ in outcome.violations] == [field]
    else:
        assert outcome.message.startswith(field + ":")
    assert SENTINEL not in outcome.caller_visible_text()


def test_pages_get_distinct_slot_choices_with_conditional_probabilities_and_slot_rewards(
    page_server: ServerHandle,
) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(page_server.channel)
    metadata = page_server.metadata()
    site = PageSite(seed=5)
    for page in site.pages(PAGES):
        response = stub.RankMultiSlot(page_request(page, PAGE_SLOTS), metadata=metadata)
        assert [d.slot for d in response.decisions] == list(PAGE_SLOTS)
        chosen = [d.chosen_id for d in response.decisions]
        assert len(set(chosen)) == len(PAGE_SLOTS)
        taken: set[str] = set()
        for decision in response.decisions:
            assert decision.ranking[0].id == decision.chosen_id
            assert {r.id for r in decision.ranking} == set(page.candidate_ids) - taken
            assert sum(r.probability for r in decision.ranking) == pytest.approx(1.0)
            rest = [r.probability for r in decision.ranking[1:]]
            assert rest == sorted(rest, reverse=True)
            taken.add(decision.chosen_id)
        for slot in PAGE_SLOTS:
            reward = decision_pb2.RewardRequest(event_id=response.event_id, slot=slot, value=1.0)
            assert stub.Reward(reward, metadata=metadata).outcome == decision_pb2.REWARD_OUTCOME_JOINED
            # The default request id is per slot: a repeat for the same slot is a duplicate.
            assert stub.Reward(reward, metadata=metadata).outcome == decision_pb2.REWARD_OUTCOME_DUPLICATE
    page = site.page()
    response = stub.RankMultiSlot(page_request(page, ("hero", "footer")), metadata=metadata)
    # A slot the page did not rank, the page event without a slot, a Rank event with a slot.
    ranked = stub.Rank(
        decision_pb2.RankRequest(slot="home", subject_id="u1", candidates=[decision_pb2.Candidate(id="c1")]),
        metadata=metadata,
    )
    for reward in (
        decision_pb2.RewardRequest(event_id=response.event_id, slot="sidebar", value=1.0),
        decision_pb2.RewardRequest(event_id=response.event_id, value=1.0),
        decision_pb2.RewardRequest(event_id=ranked.event_id, slot="home", value=1.0),
    ):
        outcome = call(lambda r=reward: stub.Reward(r, metadata=metadata))
        assert outcome is not None and outcome.code == grpc.StatusCode.NOT_FOUND
        assert outcome.reason == "DECISION_NOT_FOUND"
    bad_slot = decision_pb2.RewardRequest(event_id=response.event_id, slot="Zqsentinel!", value=1.0)
    _refused(
        call(lambda: stub.Reward(bad_slot, metadata=metadata)), grpc.StatusCode.INVALID_ARGUMENT, "slot", ""
    )


def test_a_page_retry_returns_the_original_and_a_reuse_is_refused_before_anything_is_logged(
    page_server: ServerHandle,
) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(page_server.channel)
    metadata = page_server.metadata()
    page = PageSite(seed=6).page()
    first = stub.RankMultiSlot(
        page_request(page, PAGE_SLOTS, request_id="page-request-0001"), metadata=metadata
    )
    again = stub.RankMultiSlot(
        page_request(page, PAGE_SLOTS, request_id="page-request-0001"), metadata=metadata
    )
    assert again == first
    # Eight identical calls at once are answered with the one page.
    with futures.ThreadPoolExecutor(8) as pool:
        twins = list(
            pool.map(
                lambda _: stub.RankMultiSlot(
                    page_request(page, PAGE_SLOTS, request_id="page-request-0002"), metadata=metadata
                ),
                range(8),
            )
        )
    assert all(twin == twins[0] for twin in twins)
    other_subject = page_request(page, PAGE_SLOTS, request_id="page-request-0001")
    other_subject.subject_id = "someone-else"
    outcome = call(lambda: stub.RankMultiSlot(other_subject, metadata=metadata))
    _refused(outcome, grpc.StatusCode.INVALID_ARGUMENT, "request_id", "REQUEST_ID_REUSED")
    # Another list of slots sharing one with the first: refused, and its new slot not logged.
    shared = page_request(page, ("home", "hero"), request_id="page-request-0001")
    _refused(
        call(lambda: stub.RankMultiSlot(shared, metadata=metadata)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "event_id",
        "DUPLICATE_EVENT_ID",
    )
    unlogged = decision_pb2.RewardRequest(event_id=first.event_id, slot="home", value=1.0)
    outcome = call(lambda: stub.Reward(unlogged, metadata=metadata))
    assert outcome is not None and outcome.code == grpc.StatusCode.NOT_FOUND
    runtime = page_server.running.runtime
    runtime.decision_log.flush()
    with runtime.db.transaction() as session:
        assert session.execute(select(func.count()).select_from(Decision)).scalar_one() == 2 * len(PAGE_SLOTS)
    # A caller's page event id is single-use like Rank's.
    with_event = page_request(page, PAGE_SLOTS)
    with_event.event_id = "page-event-0001"
    assert stub.RankMultiSlot(with_event, metadata=metadata).event_id == "page-event-0001"
    _refused(
        call(lambda: stub.RankMultiSlot(with_event, metadata=metadata)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "event_id",
        "DUPLICATE_EVENT_ID",
    )


def _page(slots: list[str], candidates: list[str], **fields: object) -> decision_pb2.MultiSlotRankRequest:
    request = decision_pb2.MultiSlotRankRequest(
        subject_id=SENTINEL,
        context=to_features({"device": SENTINEL}),
        slots=[
            decision_pb2.MultiSlotSlot(slot=s, features=to_features({"page_type": SENTINEL})) for s in slots
        ],
        candidates=[
            decision_pb2.Candidate(id=c, features=to_features({"topic": SENTINEL})) for c in candidates
        ],
    )
    for name, value in fields.items():
        getattr(request, name).extend(value) if isinstance(value, list) else setattr(request, name, value)
    return request


ITEMS = [f"{SENTINEL}-{i}" for i in range(6)]
BAD_PAGES = [
    (_page(["hero", SENTINEL], ITEMS), grpc.StatusCode.NOT_FOUND, "slots[1].slot", "SLOT_NOT_FOUND"),
    (_page(["hero", "Zqsentinel!"], ITEMS), grpc.StatusCode.INVALID_ARGUMENT, "slots[1].slot", ""),
    (_page(["hero", "sidebar", "hero"], ITEMS), grpc.StatusCode.INVALID_ARGUMENT, "slots[2].slot", ""),
    (_page(["hero", "sidebar", "footer", "home"], ITEMS), grpc.StatusCode.INVALID_ARGUMENT, "slots", ""),
    (_page([], ITEMS), grpc.StatusCode.INVALID_ARGUMENT, "slots", ""),
    (_page(["hero", "sidebar"], []), grpc.StatusCode.INVALID_ARGUMENT, "candidates", ""),
    # footer allows 5 candidates: the page's limit is its lowest slot's.
    (_page(["hero", "footer"], ITEMS), grpc.StatusCode.INVALID_ARGUMENT, "candidates", ""),
    (_page(["hero", "sidebar", "footer"], ITEMS[:2]), grpc.StatusCode.INVALID_ARGUMENT, "candidates", ""),
    (
        _page(["hero", "sidebar"], ITEMS[:3], excluded_ids=ITEMS[:2]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "candidates",
        "",
    ),
    (_page(["hero"], [*ITEMS, ITEMS[0]]), grpc.StatusCode.INVALID_ARGUMENT, "candidates[6].id", ""),
    (_page(["hero"], ["tel-5551234567"]), grpc.StatusCode.INVALID_ARGUMENT, "candidates[0].id", ""),
    (_page(["hero"], ITEMS, subject_id=""), grpc.StatusCode.INVALID_ARGUMENT, "subject_id", ""),
    (_page(["hero"], ITEMS, request_id="zqsentinel!"), grpc.StatusCode.INVALID_ARGUMENT, "request_id", ""),
]


def test_bad_page_gets_the_right_status_with_the_field_and_nothing_echoed(
    start_server: Callable[..., ServerHandle],
) -> None:
    slots: dict[str, dict[str, int]] = {slot: {} for slot in (*PAGE_SLOTS, "home")}
    slots["footer"] = {"max_candidates": 5}
    limits = {"max_page_slots": 3, "max_scrub_chars_per_request": 100}
    handle = start_server(learner={"enabled": False}, slots=slots, limits=limits)
    stub = decision_pb2_grpc.DecisionServiceStub(handle.channel)
    for request, code, field, reason in BAD_PAGES:
        _refused(
            call(lambda r=request: stub.RankMultiSlot(r, metadata=handle.metadata())), code, field, reason
        )
    # The page context goes through the boundary once per slot: 3 x 40 characters to scrub
    # exceed a budget of 100, 2 x 40 do not.
    scrubbed = _page(["hero", "sidebar", "footer"], ITEMS[:5])
    scrubbed.context.values["referrer"].string_value = "a" * 40
    refused = call(lambda: stub.RankMultiSlot(scrubbed, metadata=handle.metadata()))
    _refused(refused, grpc.StatusCode.INVALID_ARGUMENT, "context", "ANONYMIZATION_BUDGET_EXCEEDED")
    # None of them logged anything; a good page after them logs one decision per slot.
    runtime = handle.running.runtime
    good_page = _page(["hero", "sidebar"], ITEMS)
    good_page.context.values["referrer"].string_value = "a" * 40
    good = stub.RankMultiSlot(good_page, metadata=handle.metadata())
    assert len({d.chosen_id for d in good.decisions}) == 2
    runtime.decision_log.flush()
    with runtime.db.transaction() as session:
        assert session.execute(select(func.count()).select_from(Decision)).scalar_one() == 2


def test_slot_features_join_the_context_of_their_slot_only_and_drops_are_counted(
    page_server: ServerHandle,
) -> None:
    stub = decision_pb2_grpc.DecisionServiceStub(page_server.channel)
    request = decision_pb2.MultiSlotRankRequest(
        subject_id="u-features",
        context=to_features({"page_type": "article", "device": "mobile", "zqundeclared": "x"}),
        slots=[
            decision_pb2.MultiSlotSlot(slot="hero", features=to_features({"page_type": "hero-box"})),
            decision_pb2.MultiSlotSlot(slot="footer", features=to_features({"zqother": 1.0})),
        ],
        candidates=[
            decision_pb2.Candidate(id=f"c{i}", features=to_features({"topic": "news", "zqjunk": 1.0}))
            for i in range(4)
        ],
    )
    response = stub.RankMultiSlot(request, metadata=page_server.metadata())
    # Undeclared: the page context's key once per slot plus footer's own; each candidate's once.
    assert response.dropped_context_fields == 3
    assert response.dropped_candidate_fields == 4
    runtime = page_server.running.runtime
    runtime.decision_log.flush()
    with runtime.db.transaction() as session:
        contexts = dict(session.execute(select(Decision.slot, Decision.context)).all())
    assert contexts["hero"]["page_type"] == "hero-box"
    assert contexts["footer"]["page_type"] == "article"
    assert contexts["hero"]["device"] == contexts["footer"]["device"] == "mobile"
