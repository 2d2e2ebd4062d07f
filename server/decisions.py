"""The decision loop's application service: Rank, Reward, Activate.

Plain Python in, plain Python out: the servicer converts protobuf. The order
is the invariant: privacy boundary first, then policy, then the log.
"""

from __future__ import annotations

import logging
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import lru_cache
from itertools import accumulate
from threading import Event, Lock
from typing import NamedTuple

import numpy as np
from sqlalchemy import DateTime, Float, case, func, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update
from sqlalchemy.sql.expression import ColumnElement

from tacit.experiments.service import ArmAssignment
from tacit.experiments.service.definitions import is_challenger
from tacit.learning.bandit import action_line
from tacit.learning.profiles import ProfileStore
from tacit.learning.registry import ModelIntegrityError, ServingModels
from tacit.privacy.audit import AuditEntry, FieldAudit
from tacit.privacy.boundary import PrivacyBoundary
from tacit.server.apprentice import ApprenticeHook, Served, stored_mode
from tacit.server.budget import scrub_chars
from tacit.server.challengers import spec_for
from tacit.server.config import Settings, SlotSettings
from tacit.server.decision_log import DecisionLog
from tacit.server.errors import AlreadyExists, InvalidArgument, NotFound, Unavailable
from tacit.server.metrics import DECISIONS_RANKED, REWARDS
from tacit.store.candidate_sets import candidate_digest
from tacit.store.db import Database
from tacit.store.schema import LEARN_WAITING, Decision, Reward

logger = logging.getLogger("tacit.server")

Value = str | float | int | bool


@dataclass(frozen=True)
class RankInput:
    slot: str
    subject_id: str
    context: Mapping[str, Value]
    candidates: Sequence[RawCandidate | PreparedCandidate]
    excluded_ids: frozenset[str] = frozenset()
    event_id: str = ""
    defer_activation: bool = False
    request_id: str = ""
    baseline_id: str = ""


Assigner = Callable[[str, str], ArmAssignment | None]
POLICIES = ("bandit", "static:first", "uniform")


@dataclass(frozen=True)
class RankResult:
    event_id: str
    chosen_id: str
    ranking: tuple[tuple[str, float], ...]
    model_version: str
    arm: str
    # Undeclared entries the privacy policy dropped (counts only: the keys are client input).
    dropped_context_fields: int = 0
    dropped_candidate_fields: int = 0
    # The mode that served it ("online" or "apprentice", see server/apprentice.py).
    slot_mode: str = "online"
    served_baseline: bool = False


class RewardOutcome(Enum):
    JOINED = "joined"
    LATE = "late"
    DUPLICATE = "duplicate"


class EventIds:
    """Random 128-bit event ids from a fast generator seeded by the OS (urandom per id is slow)."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng()
        self._lock = Lock()

    def new(self) -> str:
        with self._lock:
            return "evt_" + self._rng.bytes(16).hex()


def reward_expression(rule: str, value: float) -> ColumnElement[float]:
    """A slot's aggregation rule for repeated rewards, as a SQL expression over the stored reward.

    first keeps the stored value, last takes the new one, sum adds, max keeps the larger;
    evaluated inside the UPDATE so it always sees the newest committed reward.
    """
    incoming = literal(value, Float)
    if rule == "first":
        return func.coalesce(Decision.reward, incoming)
    if rule == "last":
        return incoming
    if rule == "sum":
        return func.coalesce(Decision.reward, 0.0) + incoming
    return case((Decision.reward.is_(None) | (Decision.reward < incoming), incoming), else_=Decision.reward)


def _join_statement(event_id: str, rule: str, value: float, now: datetime) -> Update:
    """Joins one reward atomically; matches no row once the learner has consumed the decision."""
    values: dict[str, object] = {
        "reward": reward_expression(rule, value),
        "reward_count": Decision.reward_count + 1,
    }
    if rule == "first":
        # The first reward is final: learnable now unless it still waits for Activate.
        ready = Decision.deferred.is_(False) | Decision.activated_at.is_not(None)
        learnable_now = literal(now, DateTime(timezone=True))
        values["learn_after"] = case((ready, learnable_now), else_=Decision.learn_after)
    return (
        update(Decision)
        .where(Decision.event_id == event_id, Decision.learn_state == LEARN_WAITING)
        .values(values)
        .execution_options(synchronize_session=False)
    )


def _stored_reward(session: Session, event_id: str, request_keys: Sequence[str], value: float) -> bool:
    """True when this request id was already recorded with this value.

    The same request id with another value is not a retry: ALREADY_EXISTS naming
    the field (never the values).
    """
    stored = (
        session.execute(
            select(Reward.value).where(Reward.event_id == event_id, Reward.request_id.in_(request_keys))
        )
        .scalars()
        .first()
    )
    if stored is None:
        return False
    if stored != value:
        raise AlreadyExists(
            "request_id: already used for this event with a different value; "
            "a retry must repeat the original request, a new reward needs a new request_id",
            "REQUEST_ID_REUSED",
        )
    return True


def _as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_AuditKey = tuple[str, str, str]
_CandidateAudit = tuple[tuple[_AuditKey, tuple[tuple[str, int], ...], tuple[str, ...]], ...]


class RawCandidate(NamedTuple):
    """A validated candidate not prepared yet; `key` is its exact raw content (None: not cacheable)."""

    id: str
    features: Mapping[str, Value]
    key: bytes | None = None


@dataclass(frozen=True, slots=True, eq=False)
class PreparedCandidate:
    """A candidate as Rank uses it, built once per distinct raw content and kept in memory only.

    `features` is the validated input (raw: never logged or stored), `anonymized` what the
    privacy boundary let through (stored once in `candidate_sets` under `digest`), `action`
    the same with the id (what the policy scores) and `line` its Vowpal Wabbit action line.
    """

    id: str
    features: Mapping[str, Value]
    budget_key: tuple
    scrub_chars: int
    anonymized: Mapping[str, Value]
    action: Mapping[str, Value]
    audits: _CandidateAudit
    dropped: int
    digest: str
    line: str
    generation: tuple


RankCandidate = RawCandidate | PreparedCandidate


def budget_key(features: Mapping[str, Value]) -> tuple:
    return tuple(sorted(features.items()))


class CandidateCache:
    """Prepared candidates by their exact raw content (the serialized `Candidate` message).

    A hit costs one dictionary look-up instead of validation, the privacy boundary, a
    content digest and a VW line; every content not seen before still goes through all
    of them. In memory only, bounded by entries (`size`) and by key length: a candidate
    whose serialized form exceeds `max_key_bytes` is prepared every time, never kept.
    Entries record the boundary's generation (key ring, active key, policy version) and
    a hit from another generation is a miss, so a pseudonym-key or policy change never
    serves features anonymized under the old ones. Eviction is oldest-inserted first.
    """

    def __init__(self, boundary: PrivacyBoundary, size: int = 50_000, max_key_bytes: int = 1024):
        self._boundary = boundary
        self._size = size
        self.max_key_bytes = max_key_bytes
        self._entries: dict[bytes, PreparedCandidate] = {}
        self._lock = Lock()

    def generation(self) -> tuple:
        keyring = self._boundary.keyring
        return (id(keyring), keyring.active_key_id, self._boundary.policies.version)

    def get(self, key: bytes, generation: tuple) -> PreparedCandidate | None:
        hit = self._entries.get(key)  # a single dict read: atomic under the GIL
        if hit is None or hit.generation != generation:
            return None
        return hit

    def put(self, key: bytes | None, prepared: PreparedCandidate) -> None:
        if key is None or len(key) > self.max_key_bytes:
            return
        with self._lock:
            self._entries[key] = prepared
            while len(self._entries) > self._size:
                del self._entries[next(iter(self._entries))]

    def prepare(self, candidate: RawCandidate, correlation_id: str, generation: tuple) -> PreparedCandidate:
        """Runs the boundary on a new candidate, builds its digest and VW line, and keeps it."""
        result = self._boundary.anonymize("candidate_features", candidate.features, correlation_id)
        audits = tuple(
            (
                (f"candidates.{a.field}", a.operator, str(a.outcome)),
                tuple(a.entity_counts.items()),
                a.recognizers,
            )
            for a in result.audit.fields
        )
        action = {**result.fields, "id": candidate.id}
        prepared = PreparedCandidate(
            id=candidate.id,
            features=candidate.features,
            budget_key=budget_key(candidate.features),
            scrub_chars=scrub_chars(self._boundary, "candidate_features", candidate.features),
            anonymized=result.fields,
            action=action,
            audits=audits,
            dropped=result.audit.dropped_undeclared,
            digest=candidate_digest(result.fields),
            line=action_line(action),
            generation=generation,
        )
        self.put(candidate.key, prepared)
        return prepared


@lru_cache(maxsize=4096)
def _candidate_field_audits(candidate_audits: tuple[_CandidateAudit, ...]) -> tuple[FieldAudit, ...]:
    """The candidates' field audits summed: entity counts added, `candidates` = how many had the outcome."""
    counts: dict[_AuditKey, dict[str, int]] = {}
    recognizers: dict[_AuditKey, set[str]] = {}
    for audits in candidate_audits:
        for key, entity_counts, fired in audits:
            bucket = counts.setdefault(key, {"candidates": 0})
            bucket["candidates"] += 1
            for entity, count in entity_counts:
                bucket[entity] = bucket.get(entity, 0) + count
            if fired:
                recognizers.setdefault(key, set()).update(fired)
    return tuple(
        FieldAudit(
            field=name,
            operator=operator,
            outcome=outcome,
            entity_counts=bucket,
            recognizers=tuple(recognizers.get((name, operator, outcome), ())),
        )
        for (name, operator, outcome), bucket in sorted(counts.items())
    )


def _merged_audit(
    context_entry: AuditEntry, candidate_audits: tuple[_CandidateAudit, ...], candidate_dropped: int
) -> AuditEntry:
    """One audit entry per Rank: the context's fields, then the candidates' fields summed."""
    fields = tuple(
        FieldAudit(
            field=f"context.{a.field}",
            operator=a.operator,
            outcome=a.outcome,
            entity_counts=a.entity_counts,
            recognizers=a.recognizers,
        )
        for a in context_entry.fields
    ) + _candidate_field_audits(candidate_audits)
    return AuditEntry(
        occurred_at=context_entry.occurred_at,
        payload_kind="rank",
        correlation_id=context_entry.correlation_id,
        policy_version=context_entry.policy_version,
        key_id=context_entry.key_id,
        fields=fields,
        dropped_undeclared=context_entry.dropped_undeclared + candidate_dropped,
    )


# Namespace of the MAC that makes Tacit's event id for a Rank that carries a request id.
RANK_EVENT_ID_NAMESPACE = "rank_event_id"
# How long a Rank waits for an identical in-flight Rank (same request_id) to answer.
FLIGHT_TIMEOUT_SECONDS = 30.0


def _duplicate_event_id() -> InvalidArgument:
    return InvalidArgument("event_id", "an event with this id was already ranked", "DUPLICATE_EVENT_ID")


class _Flight:
    """One Rank in progress for a request id; identical concurrent calls wait for its answer."""

    def __init__(self, signature: tuple[str, str, str]):
        self.signature = signature  # (slot, subject_id, event_id): in memory only
        self._done = Event()
        self._result: RankResult | None = None
        self._error: BaseException | None = None

    def resolve(self, result: RankResult) -> None:
        self._result = result
        self._done.set()

    def reject(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def wait(self) -> RankResult:
        if not self._done.wait(FLIGHT_TIMEOUT_SECONDS):
            raise Unavailable("an identical Rank is still in progress; retry", "RANK_IN_PROGRESS")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def _signature(request: RankInput) -> tuple[str, str, str]:
    return (request.slot, request.subject_id, request.event_id)


def _request_id_reused() -> InvalidArgument:
    return InvalidArgument(
        "request_id",
        "was already used for a Rank with another slot, subject or event_id",
        "REQUEST_ID_REUSED",
    )


def _ranking_order(probabilities: Sequence[float], chosen: int) -> list[int]:
    """The chosen candidate first, then by probability (ties by position)."""
    return sorted(range(len(probabilities)), key=lambda i: (i != chosen, -probabilities[i], i))


class DecisionEngine:
    """Ranks through the slot's policy, logs decisions, joins rewards."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        boundary: PrivacyBoundary,
        models: ServingModels,
        decision_log: DecisionLog,
        seed: int | None = None,
        assigner: Assigner | None = None,
        profiles: ProfileStore | None = None,
    ):
        self.settings = settings
        self.db = db
        self.boundary = boundary
        self.models = models
        self.decision_log = decision_log
        self.candidates = CandidateCache(boundary)
        self._event_ids = EventIds()
        self.keyring = boundary.keyring
        # Rank idempotency in this process: request-id digest -> the Rank in progress.
        self._flights: dict[str, _Flight] = {}
        # Caller event ids being ranked right now (digests), so concurrent duplicates are refused.
        self._reserved_events: set[str] = set()
        self._ids_lock = Lock()
        self.assigner = assigner
        self.apprentice: ApprenticeHook | None = None  # apprentice mode's step (set by the runtime)
        self.profiles = profiles
        self._rng = random.Random(seed)
        self._rng_lock = Lock()

    def slot(self, name: str) -> SlotSettings:
        try:
            return self.settings.slots[name]
        except KeyError:
            raise NotFound("slot: no slot with this name is configured", "SLOT_NOT_FOUND") from None

    def rank(self, request: RankInput, now: datetime | None = None) -> RankResult:
        """Ranks once per request id: a retry or a concurrent twin gets the original decision."""
        if not request.request_id:
            return self._rank_reserving(request, now, None)
        request_keys = self.keyring.digests(request.request_id)
        with self._ids_lock:
            flight = self._flights.get(request_keys[0])
            leader = flight is None
            if flight is None:
                flight = self._flights[request_keys[0]] = _Flight(_signature(request))
        if not leader:
            if flight.signature != _signature(request):
                raise _request_id_reused()
            return flight.wait()
        try:
            result = self._stored_rank(request, request_keys)
            if result is None:
                result = self._rank_reserving(request, now, request_keys[0])
        except BaseException as error:
            flight.reject(error)
            raise
        else:
            flight.resolve(result)
            return result
        finally:
            # The decision is in the log's queue (or on disk) by now, so `_stored_rank` finds it.
            with self._ids_lock:
                del self._flights[request_keys[0]]

    def _stored_rank(self, request: RankInput, request_keys: Sequence[str]) -> RankResult | None:
        """The decision an earlier Rank with this request id made, or None."""
        self.decision_log.ensure_flushed(request_keys)
        with self.db.transaction() as session:
            row = session.execute(
                select(
                    Decision.slot,
                    Decision.subject,
                    Decision.event_id,
                    Decision.candidate_ids,
                    Decision.probabilities,
                    Decision.chosen_index,
                    Decision.model_version,
                    Decision.arm,
                    Decision.apprentice,
                ).where(Decision.request_id.in_(request_keys))
            ).first()
        if row is None:
            return None
        if row.slot != request.slot or row.subject not in self.keyring.candidates(request.subject_id):
            raise _request_id_reused()
        key_id = row.event_id.split(":", 1)[0]
        if key_id not in self.keyring.held_key_ids():
            raise _request_id_reused()
        event_id = request.event_id or self.derived_event_id(key_id, request.request_id)
        if self.keyring.digest_with(key_id, event_id) != row.event_id:
            raise _request_id_reused()
        candidate_ids: list[str] = list(row.candidate_ids)
        probabilities: list[float] = list(row.probabilities)
        mode, served_baseline = stored_mode(row.apprentice, row.chosen_index)
        return RankResult(
            event_id=event_id,
            chosen_id=candidate_ids[row.chosen_index],
            ranking=tuple(
                (candidate_ids[i], probabilities[i]) for i in _ranking_order(probabilities, row.chosen_index)
            ),
            model_version=row.model_version,
            arm=row.arm,
            slot_mode=mode,
            served_baseline=served_baseline,
        )

    def derived_event_id(self, key_id: str, request_id: str) -> str:
        """Tacit's event id for a Rank with a request id: a keyed function of it, so a retry
        gets the same id back although only digests are stored."""
        return "evt_" + self.keyring.mac(key_id, request_id, RANK_EVENT_ID_NAMESPACE)[:16].hex()

    def new_event_id(self) -> str:
        """A fresh random event id, as Rank generates when the caller sends none."""
        return self._event_ids.new()

    def rank_with_new_event_id(self, request: RankInput, now: datetime | None, event_id: str) -> RankResult:
        """Ranks under an event id just made by `new_event_id` (or derived from one): random,
        so no duplicate look-up is needed; `request.request_id` must be empty."""
        return self._rank(request, now, event_id, None, None)

    def _rank_reserving(
        self, request: RankInput, now: datetime | None, request_key: str | None
    ) -> RankResult:
        """Ranks; a caller event id is reserved until its decision is queued, so two
        concurrent Ranks with one event id never both answer OK."""
        if request.event_id:
            event_id = request.event_id
        elif request.request_id:
            event_id = self.derived_event_id(self.keyring.active_key_id, request.request_id)
        else:
            return self._rank(request, now, self._event_ids.new(), None, request_key)
        event_keys = self.keyring.digests(event_id)
        with self._ids_lock:
            if event_keys[0] in self._reserved_events:
                raise _duplicate_event_id()
            self._reserved_events.add(event_keys[0])
        try:
            if self.event_exists(event_keys):
                raise _duplicate_event_id()
            return self._rank(request, now, event_id, event_keys, request_key)
        finally:
            with self._ids_lock:
                self._reserved_events.discard(event_keys[0])

    def _rank(
        self,
        request: RankInput,
        now: datetime | None,
        event_id: str,
        event_keys: Sequence[str] | None,
        request_key: str | None,
    ) -> RankResult:
        slot = self.slot(request.slot)
        now = now or datetime.now(UTC)
        excluded = request.excluded_ids
        eligible = [c for c in request.candidates if c.id not in excluded] if excluded else request.candidates
        if not eligible:
            raise InvalidArgument("excluded_ids", "every candidate is excluded")
        # Stored and audited under the digest only; the raw id goes back in the response.
        stored_event_id = event_keys[0] if event_keys else self.keyring.digest(event_id)
        subject = self.boundary.pseudonymize_subject(request.subject_id)
        context = self.boundary.anonymize("rank_context", request.context, stored_event_id)
        shared_context: dict[str, Value] = context.fields
        if slot.profile_features and self.profiles is not None:
            shared_context = {**shared_context, **self._profile_context(subject, slot.profile_features, now)}
        generation = self.candidates.generation()
        prepared = [
            c
            if type(c) is PreparedCandidate and c.generation == generation
            else self.candidates.prepare(
                c if type(c) is RawCandidate else RawCandidate(c.id, c.features), stored_event_id, generation
            )
            for c in eligible
        ]
        candidate_dropped = sum(p.dropped for p in prepared)
        assignment = self.assigner(request.slot, subject) if self.assigner is not None else None
        policy = assignment.policy if assignment is not None else "bandit"
        probabilities, model_version = self._policy_probabilities(
            request.slot, assignment, policy, shared_context, [p.line for p in prepared]
        )
        served = self._apprentice_step(request, [p.id for p in prepared], probabilities, policy)
        probabilities, policy = served.probabilities, served.policy
        chosen = self._sample(probabilities)
        order = _ranking_order(probabilities, chosen)
        deadline = now + timedelta(seconds=slot.reward_window_seconds)
        decision = dict(
            event_id=stored_event_id,
            request_id=request_key,
            slot=request.slot,
            subject=subject,
            arm=assignment.arm if assignment is not None else "",
            experiment_id=assignment.experiment_id if assignment is not None else None,
            policy=policy,
            model_version=model_version,
            context=shared_context,
            candidate_ids=[p.id for p in prepared],
            candidate_features=None,
            candidate_refs=[p.digest for p in prepared],
            probabilities=list(probabilities),
            chosen_index=chosen,
            created_at=now,
            reward_deadline=deadline,
            deferred=request.defer_activation,
            activated_at=None,
            reward=None,
            reward_count=0,
            # Without a reward the decision is learnable at the deadline (default reward).
            learn_after=None if request.defer_activation else deadline,
            learn_state=LEARN_WAITING,
            apprentice=served.logged,
        )
        audit = _merged_audit(context.audit, tuple(p.audits for p in prepared), candidate_dropped)
        self.decision_log.submit(decision, audit, {p.digest: p.anonymized for p in prepared})
        DECISIONS_RANKED.labels(request.slot).inc()
        return RankResult(
            event_id=event_id,
            chosen_id=prepared[chosen].id,
            ranking=tuple((prepared[i].id, probabilities[i]) for i in order),
            model_version=model_version,
            arm=assignment.arm if assignment is not None else "",
            dropped_context_fields=context.audit.dropped_undeclared,
            dropped_candidate_fields=candidate_dropped,
            slot_mode=served.mode,
            served_baseline=served.served_baseline(chosen),
        )

    def _apprentice_step(
        self, request: RankInput, candidate_ids: Sequence[str], probabilities: tuple[float, ...], policy: str
    ) -> Served:
        """Apprentice mode's hook (server/apprentice.py): mixes in the caller's baseline when on."""
        if self.apprentice is None:
            return Served(probabilities, policy, "online")
        return self.apprentice.serve(request.slot, request.baseline_id, candidate_ids, probabilities, policy)

    def _policy_probabilities(
        self,
        slot: str,
        assignment: ArmAssignment | None,
        policy: str,
        context: Mapping[str, Value],
        candidates: Sequence[str],
    ) -> tuple[tuple[float, ...], str]:
        """The arm's policy: the slot's model, a challenger's (own workspace, pinned checkpoint) or a rule.

        `candidates` are the candidates' VW action lines, built once per distinct candidate."""
        if policy == "bandit":
            prediction = self.models.get(slot).predict_lines(context, candidates)
            return prediction.probabilities, prediction.model_version
        if assignment is not None and is_challenger(policy):
            try:
                model = self.models.challenger(spec_for(slot, assignment))
            except ModelIntegrityError:
                raise Unavailable(
                    "the arm's model checkpoint cannot be loaded", "MODEL_UNAVAILABLE"
                ) from None
            prediction = model.predict_lines(context, candidates)
            return prediction.probabilities, prediction.model_version
        if policy == "static:first":
            return (1.0,) + (0.0,) * (len(candidates) - 1), "static:first"
        return (1.0 / len(candidates),) * len(candidates), "uniform"

    def _profile_context(self, subject: str, names: Sequence[str], now: datetime) -> dict[str, Value]:
        """The subject's profile features from memory; a miss starts a background fill."""
        assert self.profiles is not None
        profile = self.profiles.cached(subject, now)
        if profile is None:
            self.profiles.prefetch(subject)
            return {"profile.known": False}
        values = profile.features.as_dict()
        return {"profile.known": True, **{f"profile.{name}": values[name] for name in names}}

    def _sample(self, probabilities: Sequence[float]) -> int:
        """Draws an index with the given probabilities (the logged propensities)."""
        cumulative = list(accumulate(probabilities))
        with self._rng_lock:
            point = self._rng.random() * cumulative[-1]
        return min(bisect_right(cumulative, point), len(cumulative) - 1)

    def event_exists(self, event_keys: Sequence[str]) -> bool:
        """True when a decision with this event id (any held key's digest) is queued or stored."""
        if self.decision_log.is_pending(event_keys):
            return True
        with self.db.transaction() as session:
            found = session.execute(select(Decision.event_id).where(Decision.event_id.in_(event_keys)))
            return found.first() is not None

    def reward(
        self,
        event_id: str,
        value: float,
        request_id: str = "",
        occurred_at: datetime | None = None,
        now: datetime | None = None,
    ) -> RewardOutcome:
        """Joins a reward to its decision; OK only after commit, idempotent by request id.

        The join is one conditional UPDATE whose SET computes the aggregate from the
        row's current value (`reward_expression`), so concurrent rewards never lose an
        update on either backend: PostgreSQL row-locks and re-evaluates it against the
        newest committed row; on SQLite the statement runs under the database write
        lock. Its WHERE also requires that the learner has not consumed the decision,
        so that check cannot race the learner either. The reward row is inserted in the
        same transaction, after the UPDATE; a concurrent twin with the same request id
        fails on the unique key and rolls its UPDATE back with it.
        """
        now = now or datetime.now(UTC)
        occurred_at = occurred_at or now
        event_keys = self.keyring.digests(event_id)
        request_keys = self.keyring.digests(request_id or event_id)
        self._await_commit(event_keys)
        outcome, slot_name = self._join_reward(event_keys, value, request_keys, occurred_at, now)
        REWARDS.labels(slot_name, outcome.value).inc()
        return outcome

    def _join_reward(
        self,
        event_keys: Sequence[str],
        value: float,
        request_keys: Sequence[str],
        occurred_at: datetime,
        now: datetime,
    ) -> tuple[RewardOutcome, str]:
        """Stores the reward and joins it (see `reward`); returns the outcome and the slot.

        Ids arrive as their digests under every held key; the decision's stored digest is
        what the reward row and the join use, so it stays stable across a key rotation.
        """
        with self.db.transaction() as session:
            # Immutable columns only: slot, deadline and deferral never change after Rank.
            row = session.execute(
                select(
                    Decision.event_id,
                    Decision.slot,
                    Decision.reward_deadline,
                    Decision.deferred,
                    Decision.created_at,
                ).where(Decision.event_id.in_(event_keys))
            ).first()
            if row is None:
                raise NotFound("event_id: no decision with this id", "DECISION_NOT_FOUND")
            skew = timedelta(seconds=self.settings.limits.max_clock_skew_seconds)
            if _as_utc(occurred_at) + skew < _as_utc(row.created_at):
                raise InvalidArgument("occurred_at", "is before the decision was ranked")
            stored_id = row.event_id
            if _stored_reward(session, stored_id, request_keys, value):
                return RewardOutcome.DUPLICATE, row.slot
        slot = self.slot(row.slot)
        late = _as_utc(occurred_at) > _as_utc(row.reward_deadline)
        try:
            with self.db.transaction() as session:
                if not late:
                    joined = session.execute(
                        _join_statement(stored_id, slot.reward_aggregation, value, now)
                    ).rowcount
                    late = joined == 0  # the learner consumed it first (or an erasure deleted it)
                if late and session.get(Decision, stored_id) is None:
                    # Erased since the first look: no orphan reward row for it.
                    raise NotFound("event_id: no decision with this id", "DECISION_NOT_FOUND")
                session.add(
                    Reward(
                        event_id=stored_id,
                        request_id=request_keys[0],
                        value=value,
                        occurred_at=occurred_at,
                        received_at=now,
                        late=late,
                    )
                )
        except IntegrityError:
            # A concurrent call with the same request id committed first.
            with self.db.transaction() as session:
                if _stored_reward(session, stored_id, request_keys, value):
                    return RewardOutcome.DUPLICATE, row.slot
            raise  # not the unique key on (event_id, request_id): a real fault
        return (RewardOutcome.LATE if late else RewardOutcome.JOINED), row.slot

    def _await_commit(self, event_keys: Sequence[str]) -> None:
        """Makes sure the decision is committed before it is joined.

        Flushes it if this process still holds it in memory; otherwise waits a few
        flush intervals for another process or replica to commit its batch. Only
        after that wait is the answer NOT_FOUND.
        """
        self.decision_log.ensure_flushed(event_keys)
        if self.event_exists(event_keys):
            return
        interval = self.settings.decision_log.flush_interval_ms / 1000.0
        deadline = time.monotonic() + 4 * interval + 0.05
        while time.monotonic() < deadline:
            time.sleep(interval)
            if self.event_exists(event_keys):
                return

    def activate(self, event_id: str, now: datetime | None = None) -> bool:
        """Makes a deferred decision learnable; returns True when it already was.

        One conditional UPDATE, like the reward join: a concurrent Activate or Reward
        cannot interleave between reading and writing the row.
        """
        now = now or datetime.now(UTC)
        event_keys = self.keyring.digests(event_id)
        self._await_commit(event_keys)
        with self.db.transaction() as session:
            row = session.execute(
                select(Decision.event_id, Decision.slot, Decision.deferred).where(
                    Decision.event_id.in_(event_keys)
                )
            ).first()
            if row is None:
                raise NotFound("event_id: no decision with this id", "DECISION_NOT_FOUND")
            if not row.deferred:
                return True
            learn_after: ColumnElement[datetime] = Decision.reward_deadline
            if self.slot(row.slot).reward_aggregation == "first":
                # A `first` reward that already arrived is final: learnable now.
                learn_after = case(
                    (Decision.reward_count > 0, literal(now, DateTime(timezone=True))),
                    else_=Decision.reward_deadline,
                )
            activated = session.execute(
                update(Decision)
                .where(Decision.event_id == row.event_id, Decision.activated_at.is_(None))
                .values(activated_at=now, learn_after=learn_after)
                .execution_options(synchronize_session=False)
            ).rowcount
            return activated == 0
