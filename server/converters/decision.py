"""DecisionService protobuf <-> domain conversions: a Rank request in, its ranking out."""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from tacit.privacy.identifiers import personal_data_in_content_id
from tacit.server.config import LimitSettings
from tacit.server.converters import (
    CONTENT_ID,
    SLOT_NAME,
    event_id_or_empty,
    features_to_dict,
    require_text,
    timestamp_or_none,
)
from tacit.server.converters import slot as slot_converters
from tacit.server.decisions import CandidateCache, RankCandidate, RankInput, RankResult, RawCandidate
from tacit.server.errors import InvalidArgument
from tacit.v1 import decision_pb2


def rank_input(
    request: decision_pb2.RankRequest,
    limits: LimitSettings,
    max_candidates: int,
    known_names: Container[str] = frozenset(),
    cache: CandidateCache | None = None,
    source: Callable[[], Sequence[RankCandidate]] | None = None,
) -> RankInput:
    """Validates a Rank request. With `cache`, a candidate whose exact serialized form was
    prepared before (and so validated before, under the same limits) is taken from it.
    `source`, when given, supplies the candidates instead (the catalogue)."""
    require_text("slot", request.slot, limits, SLOT_NAME)
    require_text("subject_id", request.subject_id, limits)
    if source is not None:
        candidates = source()
    else:
        candidates = _inline_candidates(request, limits, max_candidates, known_names, cache)
    for index, excluded in enumerate(request.excluded_ids):
        if not CONTENT_ID.match(excluded):
            raise InvalidArgument(f"excluded_ids[{index}]", f"must match {CONTENT_ID.pattern}")
    if request.baseline_id and not CONTENT_ID.match(request.baseline_id):
        raise InvalidArgument("baseline_id", f"must match {CONTENT_ID.pattern}")
    return RankInput(
        slot=request.slot,
        subject_id=request.subject_id,
        context=features_to_dict("context", request.context, limits, known_names),
        candidates=candidates,
        excluded_ids=frozenset(request.excluded_ids),
        event_id=event_id_or_empty("event_id", request.event_id),
        request_id=event_id_or_empty("request_id", request.request_id),
        defer_activation=request.defer_activation,
        baseline_id=request.baseline_id,
    )


def _inline_candidates(
    request: decision_pb2.RankRequest,
    limits: LimitSettings,
    max_candidates: int,
    known_names: Container[str],
    cache: CandidateCache | None,
) -> list[RankCandidate]:
    if not request.candidates:
        raise InvalidArgument("candidates", "at least one candidate is required")
    if len(request.candidates) > max_candidates:
        raise InvalidArgument("candidates", f"more than {max_candidates} candidates for this slot")
    seen: set[str] = set()
    candidates: list[RankCandidate] = []
    generation = cache.generation() if cache is not None else ()
    for index, candidate in enumerate(request.candidates):
        key = candidate.SerializeToString(deterministic=True) if cache is not None else None
        hit = cache.get(key, generation) if cache is not None and key is not None else None
        if hit is not None:
            if hit.id in seen:
                raise InvalidArgument(f"candidates[{index}].id", "duplicates an earlier candidate id")
            seen.add(hit.id)
            candidates.append(hit)
            continue
        field = f"candidates[{index}]"
        if not CONTENT_ID.match(candidate.id):
            raise InvalidArgument(f"{field}.id", f"must match {CONTENT_ID.pattern}")
        if candidate.id in seen:
            raise InvalidArgument(f"{field}.id", "duplicates an earlier candidate id")
        if personal_data_in_content_id(candidate.id):
            raise InvalidArgument(
                f"{field}.id",
                "looks like personal data (a phone, SSN, card number, IBAN, IP or e-mail address);"
                " use an opaque content id",
            )
        seen.add(candidate.id)
        features = features_to_dict(f"{field}.features", candidate.features, limits, known_names)
        candidates.append(RawCandidate(candidate.id, features, key))
    return candidates


def rank_response(result: RankResult) -> decision_pb2.RankResponse:
    return decision_pb2.RankResponse(
        event_id=result.event_id,
        chosen_id=result.chosen_id,
        ranking=[decision_pb2.RankedCandidate(id=cid, probability=p) for cid, p in result.ranking],
        model_version=result.model_version,
        arm=result.arm,
        dropped_context_fields=result.dropped_context_fields,
        dropped_candidate_fields=result.dropped_candidate_fields,
        slot_mode=slot_converters.SLOT_MODES[result.slot_mode],
        served_baseline=result.served_baseline,
    )


# No reward happened before this: a stamp earlier is a zero or garbage timestamp.
EARLIEST_OCCURRED_AT = datetime(2000, 1, 1, tzinfo=UTC)


def reward_occurred_at(
    stamp: Timestamp, present: bool, limits: LimitSettings, now: datetime | None = None
) -> datetime | None:
    """A Reward's occurred_at, refused when it is before 2000 or later than now plus
    limits.max_clock_skew_seconds (the decision's own time is checked by the engine)."""
    occurred_at = timestamp_or_none("occurred_at", stamp, present)
    if occurred_at is None:
        return None
    if occurred_at < EARLIEST_OCCURRED_AT:
        raise InvalidArgument("occurred_at", "must not be before 2000-01-01T00:00:00Z")
    now = now or datetime.now(UTC)
    if occurred_at > now + timedelta(seconds=limits.max_clock_skew_seconds):
        raise InvalidArgument(
            "occurred_at", "lies in the future beyond limits.max_clock_skew_seconds of the server's clock"
        )
    return occurred_at
