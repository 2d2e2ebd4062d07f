"""The content catalogue: items registered once, then ranked by id (RankRequest.use_catalogue).

An item's features go through the same path as a Rank candidate's
(`CandidateCache.prepare`: the privacy boundary under the candidate_features
policy, a content digest, a VW action line); only the anonymized map is stored.
Tags are learnable: each becomes the action feature ``tag.<tag>`` (a name no
privacy policy can declare, so no client feature can forge it), part of the
map whose digest Rank's decisions reference, so a decision replays exactly as
it was ranked however the item changes later.

Rank never reads the database: it resolves ids against an in-memory snapshot
of prepared candidates, reloaded when the catalogue's revision changes (checked
every `catalogue.refresh_seconds`, and at once after a write in this process).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import random
import re
import threading
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from threading import Lock

from tacit.learning.bandit import action_line
from tacit.privacy.audit import AuditEntry, FieldAudit, canonical_json
from tacit.privacy.audit_log import append_entries
from tacit.privacy.boundary import PrivacyBoundary
from tacit.privacy.identifiers import personal_data_in_content_id
from tacit.privacy.normalize import encoded_tokens
from tacit.server.budget import require_within_budget, scrub_chars
from tacit.server.decisions import (
    CandidateCache,
    PreparedCandidate,
    RawCandidate,
    Value,
    _candidate_field_audits,
    budget_key,
)
from tacit.server.errors import FailedPrecondition, InvalidArgument, NotFound
from tacit.store import catalogue as rows
from tacit.store.candidate_sets import candidate_digest
from tacit.store.db import Database, StorageUnavailable

logger = logging.getLogger("tacit.server")

CANDIDATE_KIND = "candidate_features"
CATALOGUE_KIND = "catalogue"
TAG = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,47}$")
TAG_FEATURE_PREFIX = "tag."
MAX_TAGS = 32
MAX_BATCH = 500
# What a Rank's audit record says of catalogue candidates: anonymized (and audited) at upsert.
CATALOGUE_CANDIDATE_AUDIT = ((("candidates.catalogue", "catalogue", "anonymized_at_upsert"), (), ()),)


def require_tags(field: str, tags: Sequence[str]) -> tuple[str, ...]:
    """Sorted, deduplicated tags; INVALID_ARGUMENT naming `field[i]` (never the tag) otherwise."""
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(field, f"more than {MAX_TAGS} tags")
    for index, tag in enumerate(tags):
        if not TAG.match(tag):
            raise InvalidArgument(f"{field}[{index}]", f"must match {TAG.pattern}")
        if personal_data_in_content_id(tag) or encoded_tokens(tag):
            raise InvalidArgument(
                f"{field}[{index}]",
                "looks like personal data (a phone, SSN, card number, IBAN, IP or e-mail address) "
                "or an encoded value; tags are plain words",
            )
    return tuple(sorted(set(tags)))


# What an encoded id may not decode to: an e-mail's '@' or a run of 9+ digits (phone, SSN, card).
_DECODED_PERSONAL = re.compile(r"@|\d(?:[-.\s]?\d){8,}")


def encoded_personal_data(value: str) -> bool:
    """True when a base64/base64url/hex token in `value` decodes to an e-mail or a long number."""
    return any(_DECODED_PERSONAL.search(token.decoded) for token in encoded_tokens(value))


def tag_features(tags: Iterable[str]) -> dict[str, Value]:
    return {TAG_FEATURE_PREFIX + tag: True for tag in tags}


def policy_digest(boundary: PrivacyBoundary) -> str:
    """The digest of the candidate_features policy: items anonymized under another are stale."""
    policy = boundary.policies.get(CANDIDATE_KIND)
    return hashlib.sha256(canonical_json(policy.to_obj()).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ItemInput:
    """A validated item to upsert; `features` are raw (never stored)."""

    item_id: str
    tags: tuple[str, ...]
    features: Mapping[str, Value]
    available_from: datetime | None = None
    available_until: datetime | None = None


@dataclass(frozen=True)
class UpsertOutcome:
    created: int
    updated: int
    unchanged: int
    dropped_fields: int


@dataclass(frozen=True)
class TagFilter:
    """An item passes when it carries every `required`, one of `any_of` (if given), no `excluded`."""

    required: frozenset[str] = frozenset()
    any_of: frozenset[str] = frozenset()
    excluded: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not (self.required or self.any_of or self.excluded)

    def matches(self, tags: frozenset[str]) -> bool:
        return (
            self.required <= tags
            and (not self.any_of or not self.any_of.isdisjoint(tags))
            and self.excluded.isdisjoint(tags)
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """One catalogue item as Rank uses it."""

    candidate: PreparedCandidate
    tags: frozenset[str]
    available_from: datetime | None
    available_until: datetime | None
    stale: bool
    always: bool  # no window and not stale: available whatever the time

    def available(self, now: datetime) -> bool:
        return self.always or (
            not self.stale
            and (self.available_from is None or self.available_from <= now)
            and (self.available_until is None or now < self.available_until)
        )


@dataclass(frozen=True)
class Selection:
    """The candidates a catalogue Rank offers, and what it skipped (counts only)."""

    candidates: list[PreparedCandidate]
    unknown: int = 0
    unavailable: int = 0
    matched: int = 0


@dataclass
class _Snapshot:
    revision: int = -1
    entries: dict[str, Entry] = field(default_factory=dict)
    by_tag: dict[str, frozenset[str]] = field(default_factory=dict)
    ordered: tuple[str, ...] = ()


def _page_after(rows_page: Sequence[rows.ItemRow]) -> str | None:
    return rows_page[-1].item_id if rows_page else None


class Catalogue:
    """Writes (anonymized, audited), reads, and Rank's in-memory resolution of item ids."""

    def __init__(
        self,
        db: Database,
        boundary: PrivacyBoundary,
        cache: CandidateCache,
        refresh_seconds: float = 1.0,
        scrub_budget: int = 100_000,
        seed: int | None = None,
    ):
        self._db = db
        self._boundary = boundary
        self._cache = cache
        self._refresh_seconds = refresh_seconds
        self._scrub_budget = scrub_budget
        self._policy_digest = policy_digest(boundary)
        self._snapshot = _Snapshot()
        self._reload_lock = Lock()
        self._rng = random.Random(seed)
        self._rng_lock = Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- writes ---------------------------------------------------------------

    def upsert(self, items: Sequence[ItemInput], actor: str, now: datetime | None = None) -> UpsertOutcome:
        """Anonymizes and stores the items in one transaction with one audit record."""
        now = now or datetime.now(UTC)
        require_within_budget(
            "items",
            (scrub_chars(self._boundary, CANDIDATE_KIND, i.features) for i in items),
            self._scrub_budget,
        )
        generation = self._cache.generation()
        prepared = [
            self._cache.prepare(
                RawCandidate(item.item_id, item.features), f"{CATALOGUE_KIND}:upsert", generation
            )
            for item in items
        ]
        new_rows = [
            rows.ItemRow(
                item_id=item.item_id,
                tags=item.tags,
                features=dict(p.anonymized),
                feature_digest=candidate_digest({**p.anonymized, **tag_features(item.tags)}),
                policy_digest=self._policy_digest,
                key_id=self._boundary.keyring.active_key_id,
                available_from=item.available_from,
                available_until=item.available_until,
                updated_at=now,
            )
            for item, p in zip(items, prepared, strict=True)
        ]
        dropped = sum(p.dropped for p in prepared)
        with self._db.transaction() as session:
            revision = rows.bump_revision(session)
            existing = rows.rows_by_id(session, [row.item_id for row in new_rows])
            changed = [
                row
                for row in new_rows
                if row.item_id not in existing or not existing[row.item_id].same_content(row)
            ]
            created = sum(1 for row in changed if row.item_id not in existing)
            outcome = UpsertOutcome(created, len(changed) - created, len(new_rows) - len(changed), dropped)
            rows.write_rows(session, changed)
            counts = {
                "items": len(new_rows),
                "created": outcome.created,
                "updated": outcome.updated,
                "unchanged": outcome.unchanged,
                "tags": sum(len(row.tags) for row in new_rows),
            }
            field_audits = (
                FieldAudit("items", "upsert", "stored", counts),
                *_candidate_field_audits(tuple(p.audits for p in prepared)),
            )
            append_entries(session, [self._entry(now, revision, actor, field_audits, dropped)])
        self._refresh_after_write()
        return outcome

    def delete(self, item_id: str, actor: str, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        with self._db.transaction() as session:
            revision = rows.bump_revision(session)
            if not rows.delete_row(session, item_id):
                raise _not_found()  # rolls the revision bump back with it
            audit = (FieldAudit("items", "delete", "deleted", {"items": 1}),)
            append_entries(session, [self._entry(now, revision, actor, audit, 0)])
        self._refresh_after_write()

    def _refresh_after_write(self) -> None:
        """This process serves its own write at once; if storage fails right after the commit,
        the write still stands (OK) and the background loop loads it."""
        with contextlib.suppress(StorageUnavailable):
            self.refresh()

    def _entry(
        self, now: datetime, revision: int, actor: str, fields: tuple[FieldAudit, ...], dropped: int
    ) -> AuditEntry:
        """A catalogue write's audit record: counts and the actor's role, never an id or value."""
        return AuditEntry(
            occurred_at=now,
            payload_kind=CATALOGUE_KIND,
            correlation_id=f"{CATALOGUE_KIND}:r{revision}:{actor}",
            policy_version=self._boundary.policies.version,
            key_id=self._boundary.keyring.active_key_id,
            fields=fields,
            dropped_undeclared=dropped,
        )

    # -- reads ----------------------------------------------------------------

    def is_stale(self, row: rows.ItemRow) -> bool:
        return row.policy_digest != self._policy_digest

    def get(self, item_id: str) -> rows.ItemRow:
        with self._db.transaction() as session:
            found = rows.rows_by_id(session, [item_id]).get(item_id)
        if found is None:
            raise _not_found()
        return found

    def list(
        self,
        required_tags: frozenset[str],
        available_only: bool,
        page_size: int,
        after: str | None,
        now: datetime | None = None,
    ) -> tuple[list[rows.ItemRow], str | None]:
        """One page in id order; the cursor is the last id returned (None at the end)."""
        now = now or datetime.now(UTC)
        wanted = TagFilter(required=required_tags)
        out: list[rows.ItemRow] = []
        with self._db.transaction() as session:
            while len(out) <= page_size:
                chunk = rows.page_rows(session, after, max(page_size + 1, 200))
                if not chunk:
                    break
                for row in chunk:
                    if wanted.matches(frozenset(row.tags)) and (
                        not available_only or self._entry_of(row).available(now)
                    ):
                        out.append(row)
                        if len(out) > page_size:
                            break
                after = _page_after(chunk)
        if len(out) > page_size:
            return out[:page_size], out[page_size - 1].item_id
        return out, None

    # -- Rank's side: the in-memory snapshot ---------------------------------

    def _entry_of(self, row: rows.ItemRow) -> Entry:
        features = {**row.features, **tag_features(row.tags)}
        action = {**features, "id": row.item_id}
        candidate = PreparedCandidate(
            id=row.item_id,
            features=features,
            budget_key=budget_key(features),
            scrub_chars=0,  # anonymized at upsert: nothing goes to Presidio at Rank
            anonymized=features,
            action=action,
            audits=CATALOGUE_CANDIDATE_AUDIT,
            dropped=0,
            digest=row.feature_digest,
            line=action_line(action),
            generation=self._cache.generation(),
        )
        stale = self.is_stale(row)
        always = not stale and row.available_from is None and row.available_until is None
        return Entry(candidate, frozenset(row.tags), row.available_from, row.available_until, stale, always)

    def refresh(self) -> bool:
        """Reloads the snapshot when the catalogue's revision moved; True when it did."""
        with self._reload_lock:
            with self._db.transaction() as session:
                current = rows.revision(session)
                if current == self._snapshot.revision:
                    return False
                loaded = rows.all_rows(session)
            entries = {row.item_id: self._entry_of(row) for row in loaded}
            by_tag: dict[str, set[str]] = {}
            for item_id, entry in entries.items():
                for tag in entry.tags:
                    by_tag.setdefault(tag, set()).add(item_id)
            self._snapshot = _Snapshot(
                current, entries, {t: frozenset(ids) for t, ids in by_tag.items()}, tuple(sorted(entries))
            )
            return True

    def item_ids(self) -> Container[str]:
        """The ids Rank can resolve now (validated when they were stored)."""
        return self._snapshot.entries

    def select(
        self,
        ids: Sequence[str],
        tags: TagFilter,
        excluded_ids: frozenset[str],
        limit: int,
        now: datetime | None = None,
    ) -> Selection:
        """Rank's candidates: the given ids that are available and match, or (no ids) a sample
        of at most `limit` available matching items. Never reads the database."""
        now = now or datetime.now(UTC)
        snapshot = self._snapshot  # one read: a concurrent reload swaps the whole object
        if ids:
            chosen: list[PreparedCandidate] = []
            unknown = unavailable = 0
            entries, unfiltered = snapshot.entries, tags.empty
            for item_id in ids:
                entry = entries.get(item_id)
                if entry is None:
                    unknown += 1
                elif (entry.always or entry.available(now)) and (unfiltered or tags.matches(entry.tags)):
                    chosen.append(entry.candidate)
                else:
                    unavailable += 1
            if not chosen:
                raise _none_available()
            return Selection(chosen, unknown=unknown, unavailable=unavailable)
        pool: Iterable[str] = snapshot.ordered
        if tags.required:
            smallest = min(tags.required, key=lambda t: len(snapshot.by_tag.get(t, ())))
            pool = sorted(snapshot.by_tag.get(smallest, frozenset()))
        matching = [
            entry.candidate
            for entry in (snapshot.entries[item_id] for item_id in pool if item_id not in excluded_ids)
            if entry.available(now) and tags.matches(entry.tags)
        ]
        if not matching:
            raise _none_available()
        if len(matching) > limit:
            with self._rng_lock:
                picked = sorted(self._rng.sample(range(len(matching)), limit))
            return Selection([matching[i] for i in picked], matched=len(matching))
        return Selection(matching, matched=len(matching))

    # -- background -------------------------------------------------------------

    def start(self) -> None:
        with contextlib.suppress(StorageUnavailable):  # the loop retries; Rank finds it empty meanwhile
            self.refresh()
        self._thread = threading.Thread(target=self._loop, name="tacit-catalogue", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._refresh_seconds):
            try:
                self.refresh()
            except StorageUnavailable:
                pass  # Rank keeps the last snapshot
            except Exception:
                logger.exception("catalogue refresh failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def _not_found() -> NotFound:
    return NotFound("id: no catalogue item with this id", "CATALOGUE_ITEM_NOT_FOUND")


def _none_available() -> FailedPrecondition:
    return FailedPrecondition(
        "no catalogue item is available for this request (unknown ids, outside the availability "
        "window or the tag filter)",
        "NO_AVAILABLE_CANDIDATES",
    )
