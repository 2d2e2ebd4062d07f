"""Normalize, then analyze: disguised values are found, only the normalized scrubbed form is kept.

Each case is a value the landed boundary stored recoverably (issue 9): Unicode
digits and invisible separators, values glued to letters, spelled-out e-mails,
encoded payloads, URL keys and IP-literal hosts, personal numbers in numeric
``keep`` fields, and IPv6 addresses that embed an IPv4.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from typing import Any
from urllib.parse import quote

import pytest

from tacit.privacy.audit import Outcome, entry_to_json
from tacit.privacy.boundary import (
    DROPPED_OUT_OF_RANGE,
    DROPPED_PERSONAL_NUMBER,
    PrivacyBoundary,
    personal_number,
)
from tacit.privacy.generalize import embedded_ipv4, generalize_ip
from tacit.privacy.normalize import decode_layers, encoded_tokens, normalize_text
from tacit.privacy.policy import Action, FieldRule, PolicyError, PolicySet

SSN = "536-22-8741"
CARD = "4111111111111111"
PHONE = "212-555-0199"
EMAIL = "jane.roe@example.com"
IBAN = "DE89370400440532013000"
IPV4 = "203.0.113.77"


def _arabic_indic(text: str) -> str:
    return text.translate({ord(d): chr(0x0660 + int(d)) for d in "0123456789"})


def _devanagari(text: str) -> str:
    return text.translate({ord(d): chr(0x0966 + int(d)) for d in "0123456789"})


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def _split(text: str, joiner: str) -> str:
    return joiner.join(text)


def _stored(boundary: PrivacyBoundary, kind: str, payload: dict[str, Any]) -> str:
    result = boundary.anonymize(kind, payload, "corr")
    return json.dumps(result.fields, ensure_ascii=False) + entry_to_json(result.audit)


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (_fullwidth(SSN), SSN),
        (_arabic_indic(SSN), SSN),
        (_devanagari(PHONE), PHONE),
        (_split(CARD, "\u200d"), CARD),  # zero-width joiner
        (_split(CARD, "\u2066"), CARD),  # left-to-right isolate
        (_split(SSN, "\U000e0020"), SSN),  # tag space
        (_split(PHONE, "\ufe0f"), PHONE),  # variation selector
        ("jane\u00ad.roe@example.com", EMAIL),  # soft hyphen
        ("mobile", "mobile"),
    ],
)
def test_normalize_text_folds_digits_and_strips_invisibles(raw: str, normalized: str) -> None:
    assert normalize_text(raw) == normalized


@pytest.mark.parametrize(
    "text",
    [
        f"ssn{SSN}", f"x{CARD}", f"\\n{PHONE}", f"tel{_digits(PHONE)}", f"iban{IBAN}",
        f"IBAN{IBAN}", IBAN.lower(), f"ip{IPV4}", "ip-203-0-113-77", "addr2001:db8::1",
        f"{EMAIL}thanks",
        "jane.roe at example dot com", "jane.roe(at)example(dot)com", "jane.roe [at] example [dot] com",
        "jane.roe @ example.com", "JANE.ROE AT EXAMPLE DOT COM", "jane dot roe at example dot com",
        _fullwidth(f"card {CARD}"), _arabic_indic(f"ssn {SSN}"), _split(EMAIL, "\u200b"),
    ],
)
@pytest.mark.parametrize("field", ["text", "label"])  # a scrub and a keep field of event.custom
def test_disguised_values_are_scrubbed(boundary: PrivacyBoundary, text: str, field: str) -> None:
    stored = _stored(boundary, "event.custom", {field: f"note {text} end"})
    for needle in (SSN, CARD, _digits(PHONE), IBAN, IPV4, "2001:db8::1", "example"):
        assert needle.lower() not in stored.lower()
    assert "<" in stored  # an entity placeholder took its place


@pytest.mark.parametrize(
    "token",
    [
        base64.b64encode(EMAIL.encode()).decode(),
        base64.urlsafe_b64encode(f"call {PHONE}".encode()).decode().rstrip("="),
        "id" + base64.b64encode(SSN.encode()).decode(),  # glued prefix shifts the groups
        base64.b64encode(base64.b64encode(CARD.encode())).decode(),  # doubled
        base64.b64encode(quote(EMAIL, safe="").encode()).decode(),  # base64 of percent-encoding
        EMAIL.encode().hex(),
        quote(quote(EMAIL, safe=""), safe=""),  # double percent-encoding
        "jane.roe&#64;example&#46;com",  # HTML references
        "jane.roe\\u0040example.com",  # a literal escape
    ],
)
def test_encoded_payloads_are_decoded_and_scrubbed(boundary: PrivacyBoundary, token: str) -> None:
    stored = _stored(boundary, "event.custom", {"text": f"payload {token} end", "label": token})
    assert token not in stored
    assert "jane.roe" not in stored and _digits(PHONE) not in stored and CARD not in stored
    assert "536228741" not in _digits(stored)


def test_clean_words_and_ids_are_not_taken_for_encodings() -> None:
    text = ("Suddenly the Candidate said internationalization JavaScript 4765444463478617 "
            "123e4567-e89b-12d3-a456-426614174000 AppleWebKit/605.1.15")
    assert encoded_tokens(text) == []
    assert decode_layers("50% off, R&D") == "50% off, R&D"


@pytest.mark.parametrize(
    "url",
    [
        f"https://{IPV4}.nip.io/a", "https://203-0-113-77.sslip.io/a", "https://[2001:db8::1]:8443/a",
        "https://0xcb00714d/a", "https://3405803853/a", "https://cb00714d.nip.io/a",
        "https://2001-db8--1.sslip.io/", f"https://ip-203-0-113-77.ec2.example.com/?a={SSN}",
        f"https://shop.example.com/?{quote(EMAIL)}=1", f"https://shop.example.com/?{_digits(PHONE)}=x",
        f"https://shop.example.com/u/{base64.urlsafe_b64encode(EMAIL.encode()).decode()}/orders",
        f"https://shop.example.com/p/{quote(quote(EMAIL, safe=''), safe='')}",
    ],
)
def test_url_hosts_keys_and_segments_are_scrubbed(boundary: PrivacyBoundary, url: str) -> None:
    result = boundary.anonymize("event.page_view", {"url": url}, "c")
    stored = str(result.fields["url"])
    for needle in (IPV4, "203-0-113-77", "cb00714d", "3405803853", "2001:db8", "2001-db8",
                   SSN, "jane.roe", _digits(PHONE), "amFuZS5yb2Vu"):
        assert needle not in stored, stored
    assert stored.startswith("https://")


def test_url_with_a_clean_host_keeps_it(boundary: PrivacyBoundary) -> None:
    out = boundary.anonymize("event.click", {"url": "https://news.example.com/a/b?utm_source=x"}, "c")
    assert out.fields["url"] == "https://news.example.com/a/b?utm_source=x"


@pytest.mark.parametrize(
    ("value", "entity"),
    [
        (float(CARD), "CREDIT_CARD"), (5551234567.0, "PHONE_NUMBER"), (15551234567, "PHONE_NUMBER"),
        (536228741, "US_SSN"), (12345678.0, "US_SSN"),  # SSN 012-34-5678 without its zero
        (4111111111111111111.0, "CREDIT_CARD"),  # 19 digits as a float: Luhn cannot be checked
        (1200, None), (3.5, None), (1_000_000, None), (0.5, None), (True, None),
    ],
)
def test_personal_number_shapes(value: float, entity: str | None) -> None:
    assert personal_number(value) == entity


@pytest.mark.parametrize(
    ("payload", "outcome", "counts"),
    [
        ({"dwell_ms": float(CARD)}, DROPPED_OUT_OF_RANGE, {}),
        ({"dwell_ms": 5551234567.0}, DROPPED_OUT_OF_RANGE, {}),
        ({"dwell_ms": 536228741.0}, DROPPED_OUT_OF_RANGE, {}),
        ({"dwell_ms": 12345678.0}, DROPPED_PERSONAL_NUMBER, {"US_SSN": 1}),
        ({"scroll_depth": 1.5}, DROPPED_OUT_OF_RANGE, {}),
        ({"dwell_ms": -1}, DROPPED_OUT_OF_RANGE, {}),
        ({"label": float(CARD)}, DROPPED_PERSONAL_NUMBER, {"CREDIT_CARD": 1}),  # keep, no kind
        ({"label": 5551234567.0}, DROPPED_PERSONAL_NUMBER, {"PHONE_NUMBER": 1}),
    ],
)
def test_numeric_keep_fields_drop_and_count_personal_numbers(
    boundary: PrivacyBoundary, payload: dict[str, float], outcome: str, counts: dict[str, int]
) -> None:
    result = boundary.anonymize("event.custom", payload, "c")
    assert result.fields == {}
    [audit] = result.audit.fields
    assert (audit.outcome, dict(audit.entity_counts)) == (outcome, counts)
    value = next(iter(payload.values()))
    if abs(value) >= 1_000:
        assert str(int(value)) not in entry_to_json(result.audit)


def test_numbers_in_range_are_kept(boundary: PrivacyBoundary) -> None:
    payload = {"dwell_ms": 1200, "scroll_depth": 0.75, "value": 42.5, "label": 3}
    assert boundary.anonymize("event.custom", payload, "c").fields == payload


def test_scrub_field_holding_a_personal_number_is_scrubbed(boundary: PrivacyBoundary) -> None:
    result = boundary.anonymize("event.custom", {"text": 536228741.0}, "c")
    assert result.fields == {"text": "<US_SSN>"}


def test_number_kinds_and_ranges_parse_and_version_the_policy() -> None:
    policies = PolicySet.from_mapping({"event.custom": {"fields": {
        "dwell_ms": {"action": "keep", "kind": "duration_ms"},
        "rating": {"action": "keep", "range": [1, 5]},
    }}})
    rules = policies.get("event.custom").fields
    assert rules["dwell_ms"].number_range == (0, 86_400_000)
    assert rules["rating"].number_range == (1.0, 5.0)
    assert PolicySet.from_mapping(policies.to_mapping()).version == policies.version
    with pytest.raises(PolicyError, match="unknown number kind"):
        FieldRule("x", Action.KEEP, kind="weight")
    with pytest.raises(PolicyError, match="only valid with action 'keep'"):
        PolicySet.from_mapping({"k": {"fields": {"x": {"action": "scrub", "kind": "count"}}}})
    with pytest.raises(PolicyError, match="range"):
        PolicySet.from_mapping({"k": {"fields": {"x": {"action": "keep", "range": [5, 1]}}}})


@pytest.mark.parametrize(
    ("address", "embedded"),
    [
        ("2002:cb00:714d::1", IPV4),  # 6to4
        ("2002:cb00:714d:1234:5678:9abc:def0:1", IPV4),
        ("2001:0:4136:e378:8000:63bf:34ff:8eb2", IPV4),  # Teredo: client XOR 0xffffffff
        ("::ffff:203.0.113.77", IPV4),  # IPv4-mapped
        ("::203.0.113.77", IPV4),  # IPv4-compatible
        ("64:ff9b::203.0.113.77", IPV4),  # NAT64 well-known prefix
        ("64:ff9b:1::cb00:714d", IPV4),  # NAT64 local-use prefix
        ("2001:db8::1", None),
        ("::1", None),
    ],
)
def test_ipv6_forms_that_embed_an_ipv4_are_generalized_by_it(address: str, embedded: str | None) -> None:
    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert (str(found) if found else None) == embedded
    generalized = generalize_ip(address)
    if embedded:
        assert generalized == "203.0.113.0/24"
        assert "cb00:714d" not in generalized and "34ff:8eb2" not in generalized
    else:
        assert generalized.endswith("/48")


def test_ip_field_with_a_6to4_address_keeps_no_ipv4(boundary: PrivacyBoundary) -> None:
    result = boundary.anonymize("rank_context", {"ip": "2002:cb00:714d::1"}, "c")
    assert result.fields == {"ip": "203.0.113.0/24"}
    assert boundary.anonymize("rank_context", {"ip": _fullwidth(IPV4)}, "c").fields == {
        "ip": "203.0.113.0/24"
    }


def test_stored_text_is_the_normalized_form(boundary: PrivacyBoundary) -> None:
    result = boundary.anonymize("event.custom", {"label": _fullwidth("Mobile") + "\u200d"}, "c")
    assert result.fields == {"label": "Mobile"}
    assert {f.field: f.outcome for f in result.audit.fields}["label"] == Outcome.KEPT
