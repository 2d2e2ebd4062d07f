"""Candidate feature maps stored once by content digest (`CandidateSet`).

A decision row keeps, per candidate, the digest of its anonymized feature map
(`Decision.candidate_refs`) next to its id (`Decision.candidate_ids`); the map
itself is a `candidate_sets` row written once, whichever decision or process
logged it first. `decision_candidates` turns either form (references, or the
inline `candidate_features` of rows logged before migration 0005) back into the
exact list of feature maps the policy saw, ids included, so every decision stays
replayable by the learner, a rebuild after an erasure, and offline evaluation.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from tacit.store.schema import CandidateSet

_LOOKUP_CHUNK = 500


def candidate_digest(features: Mapping[str, Any]) -> str:
    """The content digest of one anonymized feature map (without its id): 22 characters.

    Canonical JSON (sorted names, no spaces) so equal maps share a digest in every
    process; JSON keeps `true`, `1.0` and `"1"` apart. 128 bits of SHA-256.
    """
    text = json.dumps(features, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode("utf-8")).digest()[:16]).rstrip(b"=").decode()


def store_candidate_sets(connection: Connection, sets: Mapping[str, Mapping[str, Any]]) -> None:
    """Inserts the maps not stored yet; an existing digest (another batch or process) is left alone."""
    if not sets:
        return
    rows = [{"digest": digest, "features": dict(features)} for digest, features in sets.items()]
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(dialect.insert(CandidateSet).on_conflict_do_nothing(index_elements=["digest"]), rows)


class _LoggedCandidates(Protocol):
    candidate_ids: Sequence[str]
    candidate_features: Sequence[Mapping[str, Any]] | None
    candidate_refs: Sequence[str] | None


class MissingCandidateSet(RuntimeError):
    """A decision references a candidate feature map that is not stored (a damaged database)."""


def decision_candidates(session: Session, rows: Iterable[_LoggedCandidates]) -> list[list[dict[str, Any]]]:
    """Each row's candidate feature maps, ids included, in the order the policy saw them."""
    rows = list(rows)
    wanted = sorted({ref for row in rows if row.candidate_refs is not None for ref in row.candidate_refs})
    found: dict[str, Mapping[str, Any]] = {}
    for start in range(0, len(wanted), _LOOKUP_CHUNK):
        chunk = wanted[start : start + _LOOKUP_CHUNK]
        found.update(
            session.execute(
                select(CandidateSet.digest, CandidateSet.features).where(CandidateSet.digest.in_(chunk))
            ).all()
        )
    out: list[list[dict[str, Any]]] = []
    for row in rows:
        if row.candidate_refs is None:
            out.append([dict(features) for features in row.candidate_features or ()])
            continue
        try:
            out.append(
                [
                    {**found[ref], "id": cid}
                    for ref, cid in zip(row.candidate_refs, row.candidate_ids, strict=True)
                ]
            )
        except KeyError:
            raise MissingCandidateSet(
                "a decision references a candidate feature map that is not stored"
            ) from None
    return out
