"""The content catalogue through a real server: items stored anonymized and audited, Rank by id
with the catalogue's features (replayable by content digest), tag filters, hostile input."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from tacit.cli import main
from tacit.server.auth import Role
from tacit.server.catalogue import TAG_FEATURE_PREFIX, TagFilter
from tacit.server.converters import to_timestamp
from tacit.server.decisions import RawCandidate
from tacit.sim.client import to_features
from tacit.store.candidate_sets import candidate_digest, decision_candidates
from tacit.store.db import Database
from tacit.store.schema import AuditRecord, CatalogueHead, CatalogueItem, Decision
from tacit.v1 import catalogue_pb2, catalogue_pb2_grpc, decision_pb2, decision_pb2_grpc
from tests.conftest import ServerHandle
from tests.faults.test_contract_drift import Rich, call

PHONE = "555-867-5309"
EMAIL = "jane.doe@example.com"


def item(
    item_id: str,
    tags: list[str],
    features: dict[str, Any] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> catalogue_pb2.CatalogueItem:
    message = catalogue_pb2.CatalogueItem(id=item_id, tags=tags, features=to_features(features or {}))
    if start is not None:
        message.available_from.CopyFrom(to_timestamp(start))
    if end is not None:
        message.available_until.CopyFrom(to_timestamp(end))
    return message


def stubs(
    handle: ServerHandle,
) -> tuple[catalogue_pb2_grpc.CatalogueServiceStub, decision_pb2_grpc.DecisionServiceStub]:
    return catalogue_pb2_grpc.CatalogueServiceStub(handle.channel), decision_pb2_grpc.DecisionServiceStub(
        handle.channel
    )


def catalogue_rank(ids: list[str], **fields: Any) -> decision_pb2.RankRequest:
    return decision_pb2.RankRequest(
        slot="home",
        subject_id="user-1",
        candidates=[decision_pb2.Candidate(id=i) for i in ids],
        use_catalogue=True,
        **fields,
    )


def stored_bytes(handle: ServerHandle) -> bytes:
    """Every byte of the database file and its WAL (SQLite) or the tables' text (PostgreSQL)."""
    db = Database.open(handle.settings.database_url)
    try:
        with db.transaction() as session:
            items = session.execute(select(CatalogueItem)).scalars().all()
            audits = session.execute(select(AuditRecord)).scalars().all()
    finally:
        db.dispose()
    text = json.dumps(
        [[i.item_id, i.tags, i.features] for i in items] + [[a.correlation_id, a.body_json] for a in audits]
    )
    return text.encode()


def test_items_are_stored_anonymized_listed_deleted_and_every_write_audited(server: ServerHandle) -> None:
    catalogue, _ = stubs(server)
    admin, service = server.metadata(Role.ADMIN), server.metadata(Role.SERVICE)
    now = datetime.now(UTC)
    batch = [
        item("news-1", ["sports", "news", "sports"], {"topic": "football", "title": f"call {PHONE} now"}),
        item("news-2", ["news"], {"topic": "politics", "nickname": EMAIL}, start=now - timedelta(days=1)),
        item("promo-1", ["promo"], {"topic": "sale"}, end=now - timedelta(hours=1)),
    ]
    reply = catalogue.UpsertCatalogueItems(
        catalogue_pb2.UpsertCatalogueItemsRequest(items=batch), metadata=admin
    )
    assert (reply.created, reply.updated, reply.unchanged, reply.dropped_fields) == (3, 0, 0, 1)

    got = catalogue.GetCatalogueItem(catalogue_pb2.GetCatalogueItemRequest(id="news-1"), metadata=service)
    assert list(got.tags) == ["news", "sports"]  # sorted, deduplicated
    assert got.features.values["topic"].string_value == "football"
    title = got.features.values["title"].string_value
    assert "5309" not in title and "<PHONE_NUMBER>" in title  # the boundary scrubbed it before storage
    stored = {"topic": "football", "title": title}
    assert got.feature_digest == candidate_digest(
        {**stored, f"{TAG_FEATURE_PREFIX}news": True, f"{TAG_FEATURE_PREFIX}sports": True}
    )
    assert not got.stale
    second = catalogue.GetCatalogueItem(catalogue_pb2.GetCatalogueItemRequest(id="news-2"), metadata=service)
    assert "nickname" not in second.features.values  # undeclared: dropped, counted above

    # The same content again changes nothing; a changed window is an update.
    again = catalogue.UpsertCatalogueItems(
        catalogue_pb2.UpsertCatalogueItemsRequest(
            items=[batch[0], item("promo-1", ["promo"], {"topic": "sale"})]
        ),
        metadata=admin,
    )
    assert (again.created, again.updated, again.unchanged) == (0, 1, 1)
    same = catalogue.GetCatalogueItem(catalogue_pb2.GetCatalogueItemRequest(id="news-1"), metadata=service)
    assert same.update_time == got.update_time  # unchanged: not rewritten

    listed = catalogue.ListCatalogueItems(
        catalogue_pb2.ListCatalogueItemsRequest(tags=["news"], page_size=1), metadata=service
    )
    assert [i.id for i in listed.items] == ["news-1"] and listed.next_page_token
    rest = catalogue.ListCatalogueItems(
        catalogue_pb2.ListCatalogueItemsRequest(
            tags=["news"], page_size=1, page_token=listed.next_page_token
        ),
        metadata=service,
    )
    assert [i.id for i in rest.items] == ["news-2"] and not rest.next_page_token

    catalogue.DeleteCatalogueItem(catalogue_pb2.DeleteCatalogueItemRequest(id="news-2"), metadata=admin)
    gone = call(
        lambda: catalogue.GetCatalogueItem(
            catalogue_pb2.GetCatalogueItemRequest(id="news-2"), metadata=service
        )
    )
    assert gone is not None and gone.code == grpc.StatusCode.NOT_FOUND
    assert gone.reason == "CATALOGUE_ITEM_NOT_FOUND" and gone.resource is not None
    assert gone.resource.resource_type == "tacit.v1.CatalogueItem" and gone.resource.resource_name == ""
    assert "news-2" not in gone.caller_visible_text()

    # A service may read, not write.
    denied = call(
        lambda: catalogue.UpsertCatalogueItems(
            catalogue_pb2.UpsertCatalogueItemsRequest(items=[batch[2]]), metadata=service
        )
    )
    assert denied is not None and denied.code == grpc.StatusCode.PERMISSION_DENIED

    db = Database.open(server.settings.database_url)
    try:
        with db.transaction() as session:
            records = (
                session.execute(
                    select(AuditRecord)
                    .where(AuditRecord.payload_kind == "catalogue")
                    .order_by(AuditRecord.seq)
                )
                .scalars()
                .all()
            )
    finally:
        db.dispose()
    bodies = [json.loads(r.body_json) for r in records]
    assert len(records) == 3  # two upserts and a delete; the refused write left nothing
    assert all(r.correlation_id.endswith(":admin") for r in records)
    assert bodies[0]["dropped_undeclared"] == 1
    items_field = next(f for f in bodies[0]["fields"] if f["field"] == "items")
    assert items_field["entity_counts"]["created"] == 3
    title_field = next(f for f in bodies[0]["fields"] if f["field"] == "candidates.title")
    assert title_field["outcome"] == "scrubbed" and title_field["entity_counts"]["PHONE_NUMBER"] == 1
    assert next(f for f in bodies[2]["fields"] if f["field"] == "items")["operator"] == "delete"
    written = stored_bytes(server)
    for raw in (PHONE, "5309", EMAIL, "jane.doe"):
        assert raw.encode() not in written


def test_rank_by_id_uses_catalogue_features_skips_the_rest_and_replays_exactly(
    start_server: Callable[..., ServerHandle],
) -> None:
    handle = start_server(learner={"enabled": False}, slots={"home": {"max_candidates": 4}})
    catalogue, decisions = stubs(handle)
    admin = handle.metadata(Role.ADMIN)
    now = datetime.now(UTC)
    catalogue.UpsertCatalogueItems(
        catalogue_pb2.UpsertCatalogueItemsRequest(
            items=[
                item("a", ["news", "sports"], {"topic": "football", "length": 3}),
                item("b", ["news"], {"topic": "politics"}),
                item("c", ["sports"], {"topic": "tennis"}),
                item("d", ["news"], {"topic": "weather"}),
                item("e", ["news"], {"topic": "economy"}),
                item("f", ["news"], {"topic": "culture"}),
                item("later", ["news"], {"topic": "tv"}, start=now + timedelta(days=1)),
                item("over", ["news"], {"topic": "tv"}, end=now - timedelta(days=1)),
            ]
        ),
        metadata=admin,
    )
    service = handle.metadata()
    reply = decisions.Rank(
        catalogue_rank(["a", "missing-1", "later", "c"], tags=["sports"]), metadata=service
    )
    assert {r.id for r in reply.ranking} == {"a", "c"}
    assert (reply.unknown_candidates, reply.unavailable_candidates, reply.matched_items) == (1, 1, 0)
    assert abs(sum(r.probability for r in reply.ranking) - 1.0) < 1e-9

    # Without ids: every available item matching the filter, at most the slot's limit of them.
    browse = decisions.Rank(catalogue_rank([], any_tags=["news"], excluded_tags=["sports"]), metadata=service)
    assert browse.matched_items == 4 and {r.id for r in browse.ranking} == {"b", "d", "e", "f"}
    capped = decisions.Rank(catalogue_rank([], tags=["news"]), metadata=service)
    assert capped.matched_items == 5 and len(capped.ranking) == 4
    assert {r.id for r in capped.ranking} <= {"a", "b", "d", "e", "f"}

    nothing = call(lambda: decisions.Rank(catalogue_rank(["over", "missing-2"]), metadata=service))
    assert nothing is not None and nothing.code == grpc.StatusCode.FAILED_PRECONDITION
    assert nothing.reason == "NO_AVAILABLE_CANDIDATES"

    # The decision references the catalogue's feature maps by content digest; an update of
    # the item later does not change what the decision replays.
    got = catalogue.GetCatalogueItem(catalogue_pb2.GetCatalogueItemRequest(id="a"), metadata=admin)
    catalogue.UpsertCatalogueItems(
        catalogue_pb2.UpsertCatalogueItemsRequest(items=[item("a", ["news"], {"topic": "golf"})]),
        metadata=admin,
    )
    catalogue.DeleteCatalogueItem(catalogue_pb2.DeleteCatalogueItemRequest(id="c"), metadata=admin)
    handle.running.runtime.decision_log.flush()
    db = Database.open(handle.settings.database_url)
    try:
        with db.transaction() as session:
            rows = session.execute(select(Decision).order_by(Decision.created_at)).scalars().all()
            replayed = decision_candidates(session, rows[:1])[0]
    finally:
        db.dispose()
    first = rows[0]
    assert sorted(f["id"] for f in replayed) == ["a", "c"]  # "c" was deleted since: still replayable
    by_id = dict(zip(first.candidate_ids, first.candidate_refs, strict=True))
    assert by_id["a"] == got.feature_digest
    features_a = next(f for f in replayed if f["id"] == "a")
    assert features_a == {
        "topic": "football",
        "length": 3.0,
        "tag.news": True,
        "tag.sports": True,
        "id": "a",
    }
    rank_audit = None
    db = Database.open(handle.settings.database_url)
    try:
        with db.transaction() as session:
            rank_audit = (
                session.execute(select(AuditRecord).where(AuditRecord.payload_kind == "rank"))
                .scalars()
                .first()
            )
    finally:
        db.dispose()
    assert rank_audit is not None
    fields = {f["field"]: f for f in json.loads(rank_audit.body_json)["fields"]}
    assert fields["candidates.catalogue"]["entity_counts"]["candidates"] == 2


def test_catalogue_and_inline_candidates_give_the_model_the_same_action_lines(
    start_server: Callable[..., ServerHandle],
) -> None:
    """A catalogue item without tags is, to the policy, exactly the inline candidate with its features."""
    handle = start_server(learner={"enabled": False})
    catalogue, _ = stubs(handle)
    catalogue.UpsertCatalogueItems(
        catalogue_pb2.UpsertCatalogueItemsRequest(items=[item("x1", [], {"topic": "golf", "length": 4})]),
        metadata=handle.metadata(Role.ADMIN),
    )
    engine = handle.running.runtime.engine
    inline = engine.candidates.prepare(
        RawCandidate("x1", {"topic": "golf", "length": 4.0}), "t", engine.candidates.generation()
    )
    runtime_catalogue = handle.running.runtime.catalogue
    assert runtime_catalogue is not None
    from_catalogue = runtime_catalogue.select(["x1"], TagFilter(), frozenset(), 10).candidates[0]
    assert (from_catalogue.line, from_catalogue.digest) == (inline.line, inline.digest)


HEX_EMAIL = "6a616e652e646f65406578616d706c652e636f6d"  # hex of an e-mail address
BASE64_EMAIL = "amFuZS5kb2VAZXhhbXBsZS5jb20"
HOSTILE_IDS = [
    PHONE,
    "4111111111111111",
    "jane.doe.example.com",
    "192.168.10.20",
    HEX_EMAIL,
    BASE64_EMAIL,
    "bad id",
]
HOSTILE_TAGS = [
    "Sports",
    "jane-at-example-com",
    PHONE,
    "4111111111111111",
    HEX_EMAIL,
    "a" * 49,
    "x y",
    "news\u200b",
]


def test_hostile_ids_and_tags_are_refused_by_field_without_echo(
    start_server: Callable[..., ServerHandle],
) -> None:
    handle = start_server(learner={"enabled": False})
    catalogue, decisions = stubs(handle)
    admin, service = handle.metadata(Role.ADMIN), handle.metadata()
    by_id: list[tuple[Callable[[str], Any], str]] = [
        (
            lambda v: catalogue.UpsertCatalogueItems(
                catalogue_pb2.UpsertCatalogueItemsRequest(items=[item("ok-1", []), item(v, ["news"])]),
                metadata=admin,
            ),
            "items[1].id",
        ),
        (
            lambda v: catalogue.GetCatalogueItem(catalogue_pb2.GetCatalogueItemRequest(id=v), metadata=admin),
            "id",
        ),
        (
            lambda v: catalogue.DeleteCatalogueItem(
                catalogue_pb2.DeleteCatalogueItemRequest(id=v), metadata=admin
            ),
            "id",
        ),
        # Rank stores nothing of an id it does not know: Candidate.id's rules apply there (no decoding).
        (lambda v: decisions.Rank(catalogue_rank(["ok-1", v]), metadata=service), "candidates[1].id"),
    ]
    for value in HOSTILE_IDS:
        for invoke, field in by_id:
            if field.startswith("candidates") and value in (HEX_EMAIL, BASE64_EMAIL):
                continue
            _refused(call(lambda i=invoke, v=value: i(v)), field, value)
    for value in HOSTILE_TAGS:
        _refused(
            call(
                lambda v=value: catalogue.UpsertCatalogueItems(
                    catalogue_pb2.UpsertCatalogueItemsRequest(items=[item("ok-2", ["news", v])]),
                    metadata=admin,
                )
            ),
            "items[0].tags[1]",
            value,
        )
        _refused(
            call(
                lambda v=value: catalogue.ListCatalogueItems(
                    catalogue_pb2.ListCatalogueItemsRequest(tags=[v]), metadata=admin
                )
            ),
            "tags[0]",
            value,
        )
        for field in ("tags", "any_tags", "excluded_tags"):
            request = catalogue_rank([])
            getattr(request, field).extend(["news", value])
            _refused(call(lambda r=request: decisions.Rank(r, metadata=service)), f"{field}[1]", value)
    written = stored_bytes(handle)
    assert b"ok-1" not in written and b"ok-2" not in written  # nothing half-written
    for value in HOSTILE_IDS + HOSTILE_TAGS:
        assert value.encode() not in written


def test_malformed_catalogue_requests_are_refused_naming_the_field(
    start_server: Callable[..., ServerHandle],
) -> None:
    handle = start_server(learner={"enabled": False})
    catalogue, decisions = stubs(handle)
    admin, service = handle.metadata(Role.ADMIN), handle.metadata()
    now = datetime.now(UTC)
    with_features = catalogue_rank(["a1"])
    with_features.candidates[0].features.values["topic"].string_value = "golf"
    cases: list[tuple[Callable[[], Any], str]] = [
        (
            lambda: catalogue.UpsertCatalogueItems(
                catalogue_pb2.UpsertCatalogueItemsRequest(), metadata=admin
            ),
            "items",
        ),
        (
            lambda: catalogue.UpsertCatalogueItems(
                catalogue_pb2.UpsertCatalogueItemsRequest(items=[item("a1", []), item("a1", [])]),
                metadata=admin,
            ),
            "items[1].id",
        ),
        (
            lambda: catalogue.UpsertCatalogueItems(
                catalogue_pb2.UpsertCatalogueItemsRequest(items=[item("a1", [], start=now, end=now)]),
                metadata=admin,
            ),
            "items[0].available_until",
        ),
        (
            lambda: catalogue.UpsertCatalogueItems(
                catalogue_pb2.UpsertCatalogueItemsRequest(items=[item("a1", [f"t{i}" for i in range(33)])]),
                metadata=admin,
            ),
            "items[0].tags",
        ),
        (
            lambda: catalogue.UpsertCatalogueItems(
                catalogue_pb2.UpsertCatalogueItemsRequest(items=[item(f"i{n}", []) for n in range(501)]),
                metadata=admin,
            ),
            "items",
        ),
        (
            lambda: catalogue.ListCatalogueItems(
                catalogue_pb2.ListCatalogueItemsRequest(page_token="not-a-token"), metadata=admin
            ),
            "page_token",
        ),
        (
            lambda: catalogue.ListCatalogueItems(
                catalogue_pb2.ListCatalogueItemsRequest(page_size=-1), metadata=admin
            ),
            "page_size",
        ),
        (
            lambda: decisions.Rank(
                catalogue_rank([], any_tags=[f"t{i}" for i in range(33)]), metadata=service
            ),
            "any_tags",
        ),
        (lambda: decisions.Rank(with_features, metadata=service), "candidates[0].features"),
        (
            lambda: decisions.Rank(
                decision_pb2.RankRequest(
                    slot="home", subject_id="u", candidates=[decision_pb2.Candidate(id="a1")], tags=["news"]
                ),
                metadata=service,
            ),
            "tags",
        ),
    ]
    for invoke, field in cases:
        _refused(call(invoke), field, "")


def _refused(outcome: Rich | None, field: str, value: str) -> None:
    assert outcome is not None, field
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, (field, outcome.code)
    assert [f for f, _ in outcome.violations] == [field], outcome.violations
    if value:
        text = outcome.caller_visible_text()
        assert value.lower() not in text
        assert not any(len(part) >= 6 and part in text for part in value.lower().replace("-", " ").split())


# ---------------------------------------------------------------- the tag filter, as a property

VOCABULARY = ["news", "sports", "tech", "promo", "kids", "local"]
GHOSTS = [f"ghost-{n}" for n in range(5)]  # never in the catalogue


def _property_catalogue() -> dict[str, tuple[frozenset[str], bool]]:
    """40 items: tags from the bits of the index, some outside their window. id -> (tags, available)."""
    out: dict[str, tuple[frozenset[str], bool]] = {}
    for n in range(40):
        tags = frozenset(tag for bit, tag in enumerate(VOCABULARY) if (n * 37 + 11) >> bit & 1)
        out[f"item-{n:02d}"] = (tags, n % 5 != 0 and n % 7 != 0)  # 0 mod 5: not yet; 0 mod 7: ended
    return out


def _upsert_property_catalogue(handle: ServerHandle, now: datetime) -> dict[str, tuple[frozenset[str], bool]]:
    catalogue = _property_catalogue()
    messages = []
    for n, (item_id, (tags, _)) in enumerate(catalogue.items()):
        start = now + timedelta(days=1) if n % 5 == 0 else now - timedelta(days=1)
        end = now - timedelta(hours=1) if n % 7 == 0 and n % 5 != 0 else None
        messages.append(item(item_id, sorted(tags), {"topic": f"t{n % 4}"}, start=start, end=end))
    stubs(handle)[0].UpsertCatalogueItems(
        catalogue_pb2.UpsertCatalogueItemsRequest(items=messages), metadata=handle.metadata(Role.ADMIN)
    )
    return catalogue


tag_sets = st.sets(st.sampled_from([*VOCABULARY, "unknown-tag"]), max_size=3)


@settings(
    max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)
@given(
    required=tag_sets,
    any_of=tag_sets,
    excluded=tag_sets,
    ids=st.one_of(
        st.just([]),
        st.lists(
            st.sampled_from([f"item-{n:02d}" for n in range(40)] + GHOSTS),
            min_size=1,
            max_size=15,
            unique=True,
        ),
    ),
)
def test_a_tag_filter_never_returns_an_item_outside_it(
    catalogue_server: tuple[ServerHandle, dict[str, tuple[frozenset[str], bool]]],
    required: set[str],
    any_of: set[str],
    excluded: set[str],
    ids: list[str],
) -> None:
    """Through the real server: every ranked item carries the required tags, one of any_tags, none of
    excluded_tags and is available; with ids, exactly the eligible ones are ranked and the rest counted."""
    handle, catalogue = catalogue_server

    def passes(tags: frozenset[str]) -> bool:  # the filter as decision.proto states it
        return required <= tags and (not any_of or bool(any_of & tags)) and not excluded & tags

    pool = ids or list(catalogue)
    eligible = {i for i in pool if i in catalogue and catalogue[i][1] and passes(catalogue[i][0])}
    request = catalogue_rank(
        ids, tags=sorted(required), any_tags=sorted(any_of), excluded_tags=sorted(excluded)
    )
    stub = stubs(handle)[1]
    if not eligible:
        refused = call(lambda: stub.Rank(request, metadata=handle.metadata()))
        assert refused is not None and refused.code == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.reason == "NO_AVAILABLE_CANDIDATES"
        return
    reply = stub.Rank(request, metadata=handle.metadata())
    ranked = [r.id for r in reply.ranking]
    for item_id in ranked:
        tags, available = catalogue[item_id]
        assert available and passes(tags)
    assert set(ranked) == eligible and len(ranked) == len(eligible)
    if ids:
        unknown = sum(1 for i in ids if i not in catalogue)
        assert (reply.unknown_candidates, reply.unavailable_candidates) == (
            unknown,
            len(ids) - unknown - len(eligible),
        )
    else:
        assert reply.matched_items == len(eligible)


@pytest.fixture
def catalogue_server(
    start_server: Callable[..., ServerHandle],
) -> tuple[ServerHandle, dict[str, tuple[frozenset[str], bool]]]:
    handle = start_server(learner={"enabled": False})
    return handle, _upsert_property_catalogue(handle, datetime.now(UTC))


def test_cli_puts_lists_shows_and_deletes_items(
    start_server: Callable[..., ServerHandle], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    handle = start_server(learner={"enabled": False})
    base = ["catalogue", "--target", handle.target, "--data-dir", str(handle.data_dir)]
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text(
        json.dumps(
            {"id": "cli-1", "tags": ["news"], "features": {"topic": "golf", "length": 3, "title": EMAIL}}
        )
        + "\n\n"
        + json.dumps({"id": "cli-2", "tags": ["sports"], "available_until": "2000-01-02T00:00:00Z"})
        + "\n"
    )
    assert main([*base, "put", str(jsonl)]) == 0
    assert "2 items: 2 created, 0 updated, 0 unchanged" in capsys.readouterr().out
    array = tmp_path / "items.json"
    array.write_text(
        json.dumps([{"id": "cli-1", "tags": ["news"], "features": {"topic": "golf", "length": 3}}])
    )
    assert main([*base, "put", str(array)]) == 0
    assert "1 items: 0 created, 1 updated" in capsys.readouterr().out  # the title is gone: a change
    assert main([*base, "list", "--tag", "news"]) == 0
    listed = capsys.readouterr().out
    assert "cli-1" in listed and "cli-2" not in listed
    assert main([*base, "list", "--available"]) == 0
    assert "cli-2" not in capsys.readouterr().out  # its window ended in 2000
    assert main([*base, "show", "cli-1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tags"] == ["news"] and shown["features"]["values"]["topic"] == {"string_value": "golf"}
    assert main([*base, "delete", "cli-2"]) == 0
    assert main([*base, "show", "cli-2"]) == 1
    assert "NOT_FOUND" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "ok-3"}\n{"id": ' + json.dumps(EMAIL) + ', "topic": "x"}\n')
    assert main([*base, "put", str(bad)]) == 2  # an unknown key: refused before anything is sent
    assert EMAIL not in capsys.readouterr().err
    refused = tmp_path / "refused.jsonl"
    refused.write_text(json.dumps({"id": "cli-4", "tags": ["Not A Tag"]}) + "\n")
    assert main([*base, "put", str(refused)]) == 1
    err = capsys.readouterr().err
    assert "items[0].tags[0]" in err and "Not A Tag" not in err


def test_a_replica_sees_writes_and_a_policy_change_makes_items_stale_not_served(
    start_server: Callable[..., ServerHandle], tmp_path: Path
) -> None:
    """catalogue.proto: replicas see writes within catalogue.refresh_seconds; an item anonymized under
    another candidate_features policy is stale and Rank does not serve it until it is upserted again."""
    data = tmp_path / "shared"
    first = start_server(data_dir=data, learner={"enabled": False}, catalogue={"refresh_seconds": 0.1})
    second = start_server(data_dir=data, learner={"enabled": False}, catalogue={"refresh_seconds": 0.1})
    stubs(first)[0].UpsertCatalogueItems(
        catalogue_pb2.UpsertCatalogueItemsRequest(
            items=[item("r-1", ["news"], {"topic": "golf", "title": "Hi"})]
        ),
        metadata=first.metadata(Role.ADMIN),
    )
    rank = stubs(second)[1]
    deadline = time.monotonic() + 30
    while call(lambda: rank.Rank(catalogue_rank(["r-1"]), metadata=second.metadata())) is not None:
        assert time.monotonic() < deadline, "the second replica never saw the write"
        time.sleep(0.05)
    second.running.stop(grace=1)
    first.running.stop(grace=1)

    # The operator now drops titles: the stored item was anonymized under the old policy.
    stricter = start_server(
        data_dir=data,
        learner={"enabled": False},
        privacy={"policies": {"candidate_features": {"fields": {"topic": "keep", "title": "drop"}}}},
    )
    catalogue, decisions = stubs(stricter)
    got = catalogue.GetCatalogueItem(
        catalogue_pb2.GetCatalogueItemRequest(id="r-1"), metadata=stricter.metadata()
    )
    assert got.stale
    refused = call(lambda: decisions.Rank(catalogue_rank(["r-1"]), metadata=stricter.metadata()))
    assert refused is not None and refused.reason == "NO_AVAILABLE_CANDIDATES"
    catalogue.UpsertCatalogueItems(
        catalogue_pb2.UpsertCatalogueItemsRequest(
            items=[item("r-1", ["news"], {"topic": "golf", "title": "Hi"})]
        ),
        metadata=stricter.metadata(Role.ADMIN),
    )
    fresh = catalogue.GetCatalogueItem(
        catalogue_pb2.GetCatalogueItemRequest(id="r-1"), metadata=stricter.metadata()
    )
    assert not fresh.stale and "title" not in fresh.features.values
    reply = decisions.Rank(catalogue_rank(["r-1"]), metadata=stricter.metadata())
    assert [r.id for r in reply.ranking] == ["r-1"]


def test_concurrent_upserts_of_the_same_items_serialize(server: ServerHandle) -> None:
    """Eight identical-id batches at once: every call OK, the items created exactly once, each
    write audited once, and the stored item is one of the batches whole (never a mix)."""
    catalogue, _ = stubs(server)
    admin = server.metadata(Role.ADMIN)

    def upsert(writer: int) -> catalogue_pb2.UpsertCatalogueItemsResponse:
        items = [item(f"c-{n:02d}", [f"w{writer}"], {"topic": f"writer-{writer}"}) for n in range(20)]
        return catalogue.UpsertCatalogueItems(
            catalogue_pb2.UpsertCatalogueItemsRequest(items=items), metadata=admin
        )

    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(upsert, range(8)))
    assert sum(r.created for r in replies) == 20
    assert sum(r.created + r.updated + r.unchanged for r in replies) == 160
    listed = catalogue.ListCatalogueItems(catalogue_pb2.ListCatalogueItemsRequest(), metadata=admin).items
    assert len(listed) == 20
    winners = {(tuple(i.tags), i.features.values["topic"].string_value) for i in listed}
    assert len(winners) == 1  # the last write won for every item of its batch
    ((tags,), topic) = winners.pop()
    assert topic == f"writer-{tags[1:]}"
    db = Database.open(server.settings.database_url)
    try:
        with db.transaction() as session:
            audited = session.execute(
                select(AuditRecord).where(AuditRecord.payload_kind == "catalogue")
            ).all()
            revision = session.execute(select(CatalogueHead.revision)).scalar_one()
    finally:
        db.dispose()
    assert len(audited) == 8 and revision == 8
