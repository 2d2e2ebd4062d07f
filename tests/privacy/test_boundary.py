"""The boundary: planted PII never survives, structure is kept, and it fails closed."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import pytest
from faker import Faker
from presidio_analyzer import RecognizerResult

from tacit.privacy.analyzer import RegexTimeoutError, TacitAnalyzer
from tacit.privacy.audit import Outcome, entry_to_json
from tacit.privacy.boundary import (
    BoundaryLimits,
    InvalidSubjectError,
    PrivacyBoundary,
    redact,
)
from tacit.privacy.policy import PolicyError, PolicySet, default_policy_set
from tacit.privacy.pseudonym import KeyRing

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")


def _planted(fake: Faker) -> dict[str, str]:
    return {
        "email": fake.email(),
        "phone": fake.phone_number(),
        "card": fake.credit_card_number(),
        "iban": fake.iban(),
        "ipv4": fake.ipv4_public(),
        "ipv6": fake.ipv6(),
        "ssn": fake.ssn(),
    }


def _forms(value: str) -> set[str]:
    """The raw value and the ways it can appear in a URL."""
    return {value, quote(value, safe=""), quote_plus(value), quote(value)}


def _assert_absent(secrets: dict[str, str], *outputs: Any) -> None:
    blob = json.dumps(outputs, default=str)
    for kind, value in secrets.items():
        for form in _forms(value):
            assert form not in blob, f"raw {kind} survived"


def _audit_blob(result: Any) -> str:
    return entry_to_json(result.audit)


@pytest.mark.parametrize("seed", range(12))
def test_planted_pii_in_free_text_is_scrubbed(boundary: PrivacyBoundary, seed: int) -> None:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    secrets = _planted(fake)
    text = (f"Hi, I'm reachable at {secrets['email']} or {secrets['phone']}. Card "
            f"{secrets['card']}, IBAN {secrets['iban']}, from {secrets['ipv4']} and "
            f"{secrets['ipv6']}; my SSN is {secrets['ssn']}.")
    result = boundary.anonymize("event.custom", {"text": text}, f"corr-{seed}")
    _assert_absent(secrets, result.fields, _audit_blob(result))
    assert "<EMAIL_ADDRESS>" in str(result.fields["text"])
    [audit] = result.audit.fields
    assert audit.outcome == Outcome.SCRUBBED
    assert audit.entity_counts["EMAIL_ADDRESS"] >= 1
    assert audit.entity_counts["CREDIT_CARD"] >= 1


@pytest.mark.parametrize("seed", range(12))
def test_planted_pii_in_url_query_is_scrubbed(boundary: PrivacyBoundary, seed: int) -> None:
    fake = Faker("en_US")
    fake.seed_instance(1000 + seed)
    secrets = _planted(fake)
    query = urlencode({"q": f"contact {secrets['email']}", "c": secrets["card"],
                       "i": secrets["iban"], "from": secrets["ipv4"], "s": secrets["ssn"],
                       "p": secrets["phone"], "email": secrets["email"], "page": "2"})
    url = f"https://shop.example.com/u/{secrets['email']}/cart?{query}#{secrets['phone']}"
    result = boundary.anonymize(
        "event.page_view", {"url": url, "referrer": f"http://{secrets['ipv4']}/x"}, "c"
    )
    _assert_absent(secrets, result.fields, _audit_blob(result))
    scrubbed = str(result.fields["url"])
    assert scrubbed.startswith("https://shop.example.com/")
    assert "page=2" in scrubbed and "#" not in scrubbed
    assert result.fields["referrer"] == "http://<IP_ADDRESS>/x"


def test_url_userinfo_and_sensitive_params_are_removed(boundary: PrivacyBoundary) -> None:
    url = "https://alice:hunter2@example.com/a?name=Alice+Smith&utm_source=news&token=abc"
    out = str(boundary.anonymize("event.click", {"url": url}, "c").fields["url"])
    assert "alice" not in out.lower() and "hunter2" not in out and "abc" not in out
    assert "utm_source=news" in out


def test_structured_payload_keeps_structure(boundary: PrivacyBoundary) -> None:
    payload = {"device": "mobile", "hour": 13, "day_of_week": 2, "country": "US",
               "language": "en-US", "ip": "203.0.113.77", "user_agent": IPHONE,
               "is_returning": True, "session_depth": 3.5}
    result = boundary.anonymize("rank_context", payload, "corr-1")
    assert result.fields == {
        "device": "mobile", "hour": 13, "day_of_week": 2, "country": "US", "language": "en-US",
        "ip": "203.0.113.0/24", "user_agent": "iPhone/iOS", "is_returning": True,
        "session_depth": 3.5,
    }
    audit = result.audit
    assert audit.policy_version == boundary.policies.version
    assert audit.key_id == boundary.keyring.active_key_id
    assert audit.correlation_id == "corr-1" and audit.dropped_undeclared == 0
    assert {f.field: f.outcome for f in audit.fields}["ip"] == Outcome.GENERALIZED


def test_undeclared_fields_are_dropped_and_only_counted(boundary: PrivacyBoundary) -> None:
    payload = {"device": "mobile", "jane.doe@example.com": "x", "favourite_colour": "red"}
    result = boundary.anonymize("rank_context", payload, "c")
    assert result.fields == {"device": "mobile"}
    assert result.audit.dropped_undeclared == 2
    blob = _audit_blob(result)
    assert "jane" not in blob and "favourite" not in blob


def test_keep_string_with_pii_is_scrubbed(boundary: PrivacyBoundary) -> None:
    result = boundary.anonymize("rank_context", {"device": "bob@example.com"}, "c")
    assert result.fields == {"device": "<EMAIL_ADDRESS>"}
    [audit] = result.audit.fields
    assert (audit.operator, audit.outcome) == ("keep", Outcome.SCRUBBED)


@pytest.mark.parametrize("value", ["mobile", "en-US", "Chrome Mobile", "iPhone_15", "42", "de"])
def test_clean_keep_strings_pass(boundary: PrivacyBoundary, value: str) -> None:
    assert boundary.anonymize("rank_context", {"device": value}, "c").fields == {"device": value}


def test_hex_mac_address_is_not_kept(boundary: PrivacyBoundary) -> None:
    result = boundary.anonymize("rank_context", {"device": "de-ad-be-ef-ca-fe"}, "c")
    assert result.fields["device"] != "de-ad-be-ef-ca-fe"


def test_scrub_number_holding_a_card_is_scrubbed(boundary: PrivacyBoundary) -> None:
    result = boundary.anonymize("event.custom", {"text": 4111111111111111, "dwell_ms": 1200}, "c")
    assert result.fields == {"text": "<CREDIT_CARD>", "dwell_ms": 1200}


def test_pseudonymized_fields_are_joinable_across_kinds(boundary: PrivacyBoundary) -> None:
    a = boundary.anonymize("event.click", {"session_id": "s-123"}, "c").fields["session_id"]
    b = boundary.anonymize("event.page_view", {"session_id": "s-123"}, "c").fields["session_id"]
    assert a == b and str(a).startswith("ps1:") and "s-123" not in str(a)
    assert a != boundary.pseudonymize_subject("s-123")


@pytest.mark.parametrize(
    ("value", "outcome"),
    [
        ("x" * 5_000, Outcome.DROPPED_OVERSIZE),
        ("hello\x00world", Outcome.DROPPED_INVALID_TEXT),
        ("bob\x1b@example.com", Outcome.DROPPED_INVALID_TEXT),
        ("bad \udcff surrogate", Outcome.DROPPED_INVALID_TEXT),
        (b"\xff\xfe binary", Outcome.DROPPED_TYPE),
        (None, Outcome.DROPPED_TYPE),
        (["a@b.com"], Outcome.DROPPED_TYPE),
        (float("nan"), Outcome.DROPPED_TYPE),
    ],
)
def test_unsafe_values_are_dropped_with_a_reason(
    boundary: PrivacyBoundary, value: Any, outcome: Outcome
) -> None:
    result = boundary.anonymize("event.custom", {"text": value, "dwell_ms": 5}, "c")
    assert result.fields == {"dwell_ms": 5}
    assert {f.field: f.outcome for f in result.audit.fields}["text"] == outcome


def test_unparseable_generalizer_input_is_dropped(boundary: PrivacyBoundary) -> None:
    result = boundary.anonymize("rank_context", {"ip": "not-an-ip", "geo": "1,2"}, "c")
    assert result.fields == {"geo": "1.0,2.0"}
    outcomes = {f.field: f.outcome for f in result.audit.fields}
    assert outcomes["ip"] == Outcome.DROPPED_UNPARSEABLE


def test_declared_drop_is_audited(boundary: PrivacyBoundary) -> None:
    result = boundary.anonymize("rank_context", {"email": "a@b.com"}, "c")
    assert result.fields == {}
    assert result.audit.fields[0].outcome == Outcome.DROPPED_POLICY


class _Exploding:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def analyze(self, text: str, language: str = "en", **kwargs: Any) -> list[RecognizerResult]:
        raise self.error

    def analyze_patterns(self, text: str) -> list[RecognizerResult]:
        raise self.error


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (RuntimeError("secret bob@example.com"), Outcome.DROPPED_ANALYZER_ERROR),
        (RegexTimeoutError("slow"), Outcome.DROPPED_REGEX_TIMEOUT),
    ],
)
def test_analyzer_failure_drops_the_field(
    keyring: KeyRing, error: Exception, outcome: Outcome, caplog: pytest.LogCaptureFixture
) -> None:
    boundary = PrivacyBoundary(default_policy_set(), keyring, _Exploding(error), BoundaryLimits())
    payload = {"text": "mail bob@example.com", "name": "signup 2", "dwell_ms": 7}
    result = boundary.anonymize("event.custom", payload, "c")
    assert result.fields == {"dwell_ms": 7}
    outcomes = {f.field: f.outcome for f in result.audit.fields}
    assert outcomes["text"] == outcome and outcomes["name"] == outcome
    assert "bob@" not in caplog.text


def test_recognizer_that_raises_inside_presidio_drops_the_field(
    analyzer: TacitAnalyzer, keyring: KeyRing, monkeypatch: pytest.MonkeyPatch
) -> None:
    email = next(r for r in analyzer.registry.recognizers if "Email" in r.name)

    def boom(*args: Any, **kwargs: Any) -> list[RecognizerResult]:
        raise ValueError("recognizer bug")

    monkeypatch.setattr(email, "analyze", boom)
    boundary = PrivacyBoundary(default_policy_set(), keyring, analyzer, BoundaryLimits())
    result = boundary.anonymize("event.custom", {"text": "mail bob@example.com"}, "c")
    assert result.fields == {}
    assert result.audit.fields[0].outcome == Outcome.DROPPED_ANALYZER_ERROR


def test_real_regex_timeout_is_fail_closed(keyring: KeyRing) -> None:
    from tacit.privacy.analyzer import AnalyzerSettings, build_analyzer

    slow = build_analyzer(AnalyzerSettings(regex_timeout_seconds=1e-6))
    boundary = PrivacyBoundary(default_policy_set(), keyring, slow, BoundaryLimits())
    text = "call 212-555-0199 or mail bob@example.com " * 40
    result = boundary.anonymize("event.custom", {"text": text}, "c")
    assert "text" not in result.fields
    assert result.audit.fields[0].outcome == Outcome.DROPPED_REGEX_TIMEOUT


@pytest.mark.parametrize(
    "bait",
    [
        "a" * 1_900 + "@",
        "1" * 1_999,
        "1-" * 999,
        "a@" * 999,
        "x." * 999 + "com",
        "4" * 19 + " " + "5" * 1_900,
    ],
)
def test_regex_bait_returns_and_leaks_nothing(boundary: PrivacyBoundary, bait: str) -> None:
    result = boundary.anonymize("event.custom", {"text": bait + " bob@example.com"}, "c")
    assert "bob@example.com" not in json.dumps(result.fields)


def test_oversize_bait_is_dropped_before_analysis(boundary: PrivacyBoundary) -> None:
    result = boundary.anonymize("event.custom", {"text": "a" * 50_000 + "@"}, "c")
    assert result.fields == {}
    assert result.audit.fields[0].outcome == Outcome.DROPPED_OVERSIZE


def test_own_ids_in_free_text_survive(boundary: PrivacyBoundary) -> None:
    event_id = "evt_01HZX3K8Q9ABCDEF0123"
    request = str(uuid.uuid4())
    text = f"retry of {event_id} for request {request}"
    assert boundary.anonymize("event.custom", {"text": text}, "c").fields["text"] == text


def test_names_scrubbed_only_with_ner(ner_analyzer: TacitAnalyzer, keyring: KeyRing) -> None:
    boundary = PrivacyBoundary(default_policy_set(), keyring, ner_analyzer, BoundaryLimits())
    text = "Marguerite Okonkwo moved to Reykjavik"
    out = boundary.anonymize("event.custom", {"text": text}, "c").fields["text"]
    assert out == "<PERSON> moved to <LOCATION>"


def test_subject_pseudonym(boundary: PrivacyBoundary) -> None:
    pseudonym = boundary.pseudonymize_subject("user-42")
    assert boundary.keyring.verify("user-42", pseudonym)
    for bad in ["", " ", "a" * 300, "bob\x00"]:
        with pytest.raises(InvalidSubjectError) as info:
            boundary.pseudonymize_subject(bad)
        assert bad.strip() == "" or bad not in str(info.value)


def test_unknown_kind_raises(boundary: PrivacyBoundary) -> None:
    with pytest.raises(PolicyError):
        boundary.anonymize("event.unknown", {}, "c")
    with pytest.raises(PolicyError) as info:
        boundary.anonymize("bob@example.com", {}, "c")
    assert "bob" not in str(info.value)


def test_custom_policy_applies(analyzer: TacitAnalyzer, keyring: KeyRing) -> None:
    policies = PolicySet.from_mapping({"reward": {"fields": {"value": "keep", "note": "scrub"}}})
    boundary = PrivacyBoundary(policies, keyring, analyzer, BoundaryLimits())
    result = boundary.anonymize("reward", {"value": 1.0, "note": "from a@b.com"}, "c")
    assert result.fields == {"value": 1.0, "note": "from <EMAIL_ADDRESS>"}


@pytest.mark.parametrize(
    ("spans", "expected"),
    [
        ([], "0123456789"),
        ([(2, 4, "A", 0.5)], "01<A>456789"),
        ([(2, 5, "A", 0.5), (4, 7, "B", 0.9)], "01<B>789"),
        ([(0, 10, "URL", 0.5), (3, 5, "EMAIL", 1.0)], "<EMAIL>"),
        ([(1, 2, "A", 0.5), (8, 10, "B", 0.5)], "0<A>234567<B>"),
    ],
)
def test_redact_replaces_the_union_of_spans(
    spans: list[tuple[int, int, str, float]], expected: str
) -> None:
    results = [RecognizerResult(entity, start, end, score) for start, end, entity, score in spans]
    assert redact("0123456789", results) == expected
