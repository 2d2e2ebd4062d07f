"""Identifier checks (client ids, candidate ids) and the keyed digests client ids are stored as."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tacit.privacy.identifiers import (
    IBAN_LENGTHS,
    is_iban,
    personal_data_in_content_id,
    personal_data_in_identifier,
)
from tacit.privacy.pseudonym import KeyRing, is_client_digest

# A random UUIDv4 whose upper-cased, dash-less hex passes the IBAN mod-97 check
# ("DE93..."): the check before this fix refused it as an IBAN (issue 10 #6).
COLLIDING_UUID = "de937075-2cc8-4ca4-b585-39bb0a71c5c9"


def _mod97(text: str) -> int:
    compact = text.replace("-", "").upper()
    return int("".join(str(int(ch, 36)) for ch in compact[4:] + compact[:4])) % 97


def test_the_known_colliding_uuid_passes_mod97_yet_is_not_refused() -> None:
    assert _mod97(COLLIDING_UUID) == 1  # what made the old check refuse it
    assert personal_data_in_identifier(COLLIDING_UUID) is None
    assert personal_data_in_identifier(COLLIDING_UUID.upper()) is None
    assert personal_data_in_content_id(COLLIDING_UUID) is None


@settings(max_examples=3000, deadline=None)
@given(st.uuids(version=4), st.booleans(), st.sampled_from(["", "evt-", "item_"]))
def test_a_uuid4_is_never_refused(value: uuid.UUID, upper: bool, prefix: str) -> None:
    text = str(value).upper() if upper else str(value)
    if not prefix:
        assert personal_data_in_identifier(text) is None
        assert personal_data_in_identifier(value.hex) is None
    assert personal_data_in_content_id(prefix + text) is None


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "NL91ABNA0417164300",
        "de89-3704-0044-0532-0130-00",
        "FR1420041010050500013M02606",
        "NO9386011117947",
    ],
)
def test_a_real_iban_is_still_refused_as_a_client_id(iban: str) -> None:
    assert personal_data_in_identifier(iban) == "IBAN_CODE"


def test_an_iban_needs_its_country_length() -> None:
    assert is_iban("DE89370400440532013000")
    assert len("DE89370400440532013000") == IBAN_LENGTHS["DE"]
    assert not is_iban("DE89370400440532013000" + "00")  # mod-97 could pass; the length cannot
    assert not is_iban("ZZ89370400440532013000")  # no such country


@pytest.mark.parametrize(
    ("content_id", "kind"),
    [
        ("id-4929123456789012", "NUMERIC_PERSONAL_ID"),  # a card behind a prefix
        ("tel-555-867-5309", "NUMERIC_PERSONAL_ID"),
        ("tel5558675309", "NUMERIC_PERSONAL_ID"),
        ("ssn536-22-8741", "NUMERIC_PERSONAL_ID"),
        ("4929.1234.5678.9012", "NUMERIC_PERSONAL_ID"),
        ("acct-DE89370400440532013000", "NUMERIC_PERSONAL_ID"),  # an IBAN: its digits give it away
        ("iban:gb82-west-1234-5698-7654-32", "NUMERIC_PERSONAL_ID"),
        ("203.0.113.77", "IP_ADDRESS"),
        ("host-203.0.113.77", "IP_ADDRESS"),
        ("2001:db8::7334", "IP_ADDRESS"),
        ("::ffff:203.0.113.77", "IP_ADDRESS"),
        ("jane.doe.example.com", "EMAIL_ADDRESS"),
        ("john_smith.gmail.com", "EMAIL_ADDRESS"),
        ("achang-at-example.org", "EMAIL_ADDRESS"),  # spelled with separators (found by the leak test)
        ("a_at_example_org", "EMAIL_ADDRESS"),
        ("jo.at.mail.dot.com", "EMAIL_ADDRESS"),
    ],
)
def test_a_candidate_id_hiding_personal_data_is_refused(content_id: str, kind: str) -> None:
    assert personal_data_in_content_id(content_id) == kind


@pytest.mark.parametrize(
    "content_id",
    ["a1", "article-42", "news:2024:01:15", "sku-12345678", "video_000123", "post.2024.05", "x-large",
     "sha-9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "v1.2.3",
     "article-at-home", "format-at-scale-v2"],
)
def test_an_opaque_candidate_id_is_accepted(content_id: str) -> None:
    assert personal_data_in_content_id(content_id) is None


# -- digests ------------------------------------------------------------------------------


def test_a_digest_carries_the_key_id_fits_the_id_columns_and_reveals_nothing(tmp_path: Path) -> None:
    ring = KeyRing(keys={"k" * 32: b"x" * 32}, active_key_id="k" * 32)
    digest = ring.digest("tel-5558675309")
    assert digest.startswith("k" * 32 + ":") and len(digest) <= 64  # the longest key id still fits
    assert is_client_digest(digest)
    assert "5558675309" not in digest
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", digest.split(":", 1)[1])
    assert ring.digest("tel-5558675309") == digest  # deterministic: a look-up key
    assert ring.digest("tel-5558675308") != digest
    # Another role of the same text gives an unrelated value.
    assert digest.split(":", 1)[1] not in ring.pseudonymize("tel-5558675309", "subject")


def test_after_rotation_lookups_try_every_held_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    old = KeyRing.load_or_create(path)
    stored = old.digest("order-0001")
    now = datetime.now(UTC)
    new = old.rotate(path, timedelta(days=7), now=now)
    digests = new.digests("order-0001", now=now)
    assert digests[0] == new.digest("order-0001") != stored
    assert stored in digests
    # After the verify window the old key is gone: the old digest no longer matches anything.
    assert stored not in new.digests("order-0001", now=now + timedelta(days=8))
