"""Rank's prepared-candidate cache: a hit only for the exact same raw content under the same keys.

The cache lets a repeated candidate skip validation and the boundary; these tests check
that every new value still reaches the boundary and that a key change is never served
features pseudonymized under the old key.
"""

from __future__ import annotations

from pathlib import Path

from tacit.privacy.boundary import PrivacyBoundary
from tacit.privacy.pseudonym import KeyRing
from tacit.server.decisions import CandidateCache, RawCandidate
from tacit.store.candidate_sets import candidate_digest

PHONE = "call 415-555-0132 now"


def _raw(cid: str, features: dict) -> RawCandidate:
    """A candidate keyed by its content, as the converter keys it by its serialized form."""
    return RawCandidate(cid, features, repr((cid, sorted(features.items()))).encode())


def test_a_repeat_is_a_hit_and_a_new_value_goes_through_the_boundary(boundary: PrivacyBoundary) -> None:
    cache = CandidateCache(boundary)
    generation = cache.generation()
    first = cache.prepare(_raw("a1", {"topic": "news", "title": "plain words"}), "corr", generation)
    assert cache.get(_raw("a1", {"topic": "news", "title": "plain words"}).key, generation) is first
    # Same id, one new value: not in the cache, and the boundary scrubs it.
    changed = _raw("a1", {"topic": "news", "title": PHONE})
    assert cache.get(changed.key, generation) is None
    second = cache.prepare(changed, "corr", generation)
    assert "415-555-0132" not in str(second.anonymized) and "415-555-0132" not in second.line
    assert second.digest != first.digest
    assert second.digest == candidate_digest(second.anonymized)
    assert second.action == {**second.anonymized, "id": "a1"}


def test_a_key_change_invalidates_pseudonymized_entries(boundary: PrivacyBoundary, tmp_path: Path) -> None:
    cache = CandidateCache(boundary)
    candidate = _raw("a1", {"author_id": "author-77"})
    before = cache.prepare(candidate, "corr", cache.generation())
    assert cache.get(candidate.key, cache.generation()) is before
    boundary.keyring = KeyRing.load_or_create(tmp_path / "other-keys.json")
    assert cache.get(candidate.key, cache.generation()) is None
    after = cache.prepare(candidate, "corr", cache.generation())
    assert after.anonymized["author_id"] != before.anonymized["author_id"]
    assert after.digest != before.digest


def test_the_cache_is_bounded_and_skips_oversized_content(boundary: PrivacyBoundary) -> None:
    cache = CandidateCache(boundary, size=3, max_key_bytes=64)
    generation = cache.generation()
    kept = [cache.prepare(_raw(f"c{i}", {"topic": f"t{i}"}), "corr", generation) for i in range(5)]
    assert [cache.get(_raw(f"c{i}", {"topic": f"t{i}"}).key, generation) for i in range(5)] == [
        None, None, *kept[2:]
    ]
    big = _raw("big", {"topic": "x" * 100})
    cache.prepare(big, "corr", generation)
    assert cache.get(big.key, generation) is None
