"""Keyed pseudonyms: determinism, namespaces, rotation, key file handling."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tacit.privacy.pseudonym import KeyRing, KeyRingError, is_pseudonym

RING = KeyRing(keys={"k1": b"\x01" * 32}, active_key_id="k1")


@given(st.text(max_size=200))
def test_pseudonym_is_deterministic_and_verifies(value: str) -> None:
    first = RING.pseudonymize(value)
    assert first == RING.pseudonymize(value)
    assert is_pseudonym(first)
    assert first.startswith("ps1:k1:")
    assert RING.verify(value, first)


@given(st.text(max_size=50), st.text(max_size=50))
def test_distinct_values_get_distinct_pseudonyms(a: str, b: str) -> None:
    if a != b:
        assert RING.pseudonymize(a) != RING.pseudonymize(b)


def test_namespace_separates_roles() -> None:
    value = "alice@example.com"
    assert RING.pseudonymize(value, "subject") != RING.pseudonymize(value, "field.email")
    assert not RING.verify(value, RING.pseudonymize(value, "subject"), "field.email")


def test_pseudonym_does_not_contain_value_and_depends_on_key() -> None:
    other = KeyRing(keys={"k1": b"\x02" * 32}, active_key_id="k1")
    assert "alice" not in RING.pseudonymize("alice")
    assert RING.pseudonymize("alice") != other.pseudonymize("alice")


def test_verify_rejects_tampered_or_foreign_pseudonyms() -> None:
    good = RING.pseudonymize("bob")
    assert not RING.verify("bob", good[:-1] + ("a" if good[-1] != "a" else "b"))
    assert not RING.verify("bob", good.replace("ps1:k1:", "ps1:k9:"))
    assert not RING.verify("bob", "garbage")
    assert not RING.verify("alice", good)


def test_load_or_create_makes_a_0600_file_and_reloads_same_key(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.json"
    ring = KeyRing.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = KeyRing.load_or_create(path)
    assert again.active_key_id == ring.active_key_id
    assert again.pseudonymize("x") == ring.pseudonymize("x")
    assert "keys" in json.loads(path.read_text())


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    KeyRing.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyRingError, match="0600"):
        KeyRing.load_or_create(path)


def test_malformed_key_file_error_has_no_key_material(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text('{"version": 1, "active_key_id": "k1", "keys": {"k1": "!!notbase64SECRET"}}')
    os.chmod(path, 0o600)
    with pytest.raises(KeyRingError) as info:
        KeyRing.load_or_create(path)
    assert "SECRET" not in str(info.value)


def test_repr_never_shows_keys() -> None:
    assert "\\x01" not in repr(RING) and "k1" in repr(RING)


def test_rotation_keeps_old_pseudonyms_verifiable_within_window(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old = KeyRing.load_or_create(path)
    old_pseudonym = old.pseudonymize("subject-42")
    now = datetime.now(UTC)
    new = old.rotate(path, timedelta(days=30), now=now)

    assert new.active_key_id != old.active_key_id
    assert new.pseudonymize("subject-42") != old_pseudonym
    assert new.verify("subject-42", old_pseudonym, now=now + timedelta(days=1))
    candidates = new.candidates("subject-42", now=now + timedelta(days=1))
    assert candidates == [new.pseudonymize("subject-42"), old_pseudonym]

    reloaded = KeyRing.load_or_create(path)
    assert reloaded.active_key_id == new.active_key_id
    assert reloaded.verify("subject-42", old_pseudonym, now=now + timedelta(days=1))

    later = now + timedelta(days=31)
    assert not new.verify("subject-42", old_pseudonym, now=later)
    assert new.candidates("subject-42", now=later) == [new.pseudonymize("subject-42")]


def test_rotation_drops_expired_keys_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    first = KeyRing.load_or_create(path)
    now = datetime.now(UTC)
    second = first.rotate(path, timedelta(hours=1), now=now)
    third = second.rotate(path, timedelta(hours=1), now=now + timedelta(hours=2))
    assert first.active_key_id not in third.keys
    assert first.active_key_id not in json.loads(path.read_text())["keys"]
    assert second.active_key_id in third.verify_only


def test_invalid_rings_are_rejected() -> None:
    with pytest.raises(KeyRingError):
        KeyRing(keys={"k1": b"\x01" * 32}, active_key_id="k2")
    with pytest.raises(KeyRingError):
        KeyRing(keys={"k1": b"short"}, active_key_id="k1")
    with pytest.raises(ValueError):
        RING.pseudonymize("x", "Bad Namespace!")
