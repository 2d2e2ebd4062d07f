"""The privacy boundary: every inbound payload is anonymized here before it goes anywhere.

Normalize, then analyze: every string is NFKC-normalized, stripped of invisible
characters and has its digits folded to ASCII before anything else looks at it,
and only that normalized form (scrubbed where needed) is kept. Encodings are
undone for analysis (percent, HTML references, escapes; base64/base64url/hex
tokens whose decoding holds PII are replaced whole). Numbers are checked too:
one whose digits make a card, SSN or phone number is never kept.

Fail closed: a field the boundary cannot process safely (oversize, junk text,
analyzer error, regex time-out, unparseable generalizer input, wrong type) is
dropped and its audit record says why. Undeclared field names are client
input and may be personal data, so they are only counted, never recorded.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from presidio_analyzer import RecognizerResult

from tacit.privacy.audit import AuditEntry, FieldAudit, Outcome
from tacit.privacy.generalize import GeneralizeError, get_generalizer
from tacit.privacy.normalize import decode_layers, encoded_tokens, normalize_text
from tacit.privacy.policy import KIND_RE, Action, FieldRule, PolicyError, PolicySet
from tacit.privacy.pseudonym import KeyRing
from tacit.privacy.recognizers import RegexTimeoutError, has_spelled_at, ssn_shape

logger = logging.getLogger("tacit.privacy")

Value = str | int | float | bool

# Control characters (keeping \t \n \r), surrogates and non-characters: a field holding
# one is dropped. (Invisible format characters are stripped by ``normalize_text``.)
_INVALID_TEXT_RE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]"
)
# Subject ids are never stored, only keyed: one with an invisible character is refused
# (stripping it would merge two ids into one pseudonym).
_INVALID_SUBJECT_RE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff"
    "\u00ad\u200b\u200c\u200e\u200f\u202a-\u202e\u2060-\u2064\ufeff]"
)
# A short keep string made only of letters, spaces, '_' and '-' cannot match
# any configured pattern recognizer (all need digits, '@', '.', or ':'),
# except a MAC address written with hex letters only, which is excluded.
_SAFE_KEEP_RE = re.compile(r"^[A-Za-z][A-Za-z _-]{0,63}$")
_MAC_LIKE_RE = re.compile(r"[0-9a-f]{2}([-:_ ])[0-9a-f]{2}(\1[0-9a-f]{2}){4}", re.IGNORECASE)
_URL_RE = re.compile(r"^https?://\S+$", re.IGNORECASE)
_SAFE_QUERY_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,64}$")
_SEPARATOR = "\n\n"
REDACTED = "<REDACTED>"
IP_PLACEHOLDER = "<IP_ADDRESS>"
# Outcomes of a number dropped by its keep rule (strings: ``Outcome`` is the audit module's).
DROPPED_OUT_OF_RANGE = "dropped_out_of_range"
DROPPED_PERSONAL_NUMBER = "dropped_personal_number"
ENCODED_RECOGNIZER = "EncodedPayloadDecoder"
MAX_ENCODED_DEPTH = 2
MAX_HOST_LABEL_DIGITS = 9  # a host label with this many digits is redacted outright
# A dotted or dashed IPv4 inside a host name (203.0.113.77.nip.io, ip-203-0-113-77.ec2…).
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_HOST_IPV4_RE = re.compile(rf"(?<!\d)(?:{_OCTET}[.-]){{3}}{_OCTET}(?!\d)")
_HEX_LABEL_RE = re.compile(r"^(?=[a-f]*\d)[0-9a-f]{8}$")  # nip.io's hex form of an IPv4
# Query parameters whose value is personal by name, whatever the analyzer says.
SENSITIVE_QUERY_KEYS = frozenset({
    "email", "e-mail", "mail", "name", "first_name", "last_name", "firstname", "lastname",
    "fname", "lname", "full_name", "phone", "tel", "mobile", "user", "username", "user_id",
    "userid", "login", "password", "pass", "pwd", "token", "access_token", "id_token",
    "auth", "code", "key", "api_key", "apikey", "session", "sessionid", "sid", "ssn",
    "address", "street", "zip", "postcode", "dob", "birthday", "ip",
})


class Analyzer(Protocol):
    """What the boundary needs from ``TacitAnalyzer`` (lets tests plug in a fake)."""

    def analyze(self, text: str, language: str = ..., **kwargs: Any) -> list[RecognizerResult]:
        ...

    def analyze_patterns(self, text: str) -> list[RecognizerResult]:
        ...


class InvalidSubjectError(ValueError):
    """A subject id cannot be pseudonymized (the message never holds the id)."""


@dataclass(frozen=True)
class BoundaryLimits:
    """Size caps applied before any analysis (regex bait is cut off here)."""

    max_text_chars: int = 2_000  # longest string value analyzed; longer is dropped
    max_keep_chars: int = 128  # longer ``keep`` strings get the full scrub analysis
    max_subject_chars: int = 256

    def __post_init__(self) -> None:
        if min(self.max_text_chars, self.max_keep_chars, self.max_subject_chars) <= 0:
            raise ValueError("limits must be positive")


@dataclass(frozen=True)
class AnonymizedPayload:
    """The fields that may cross the boundary, and the audit entry describing them."""

    fields: dict[str, Value]
    audit: AuditEntry


@dataclass
class _Scrubbed:
    text: str
    entity_counts: Counter[str] = field(default_factory=Counter)
    recognizers: set[str] = field(default_factory=set)


class _FieldDropped(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, outcome: str, entity_counts: Mapping[str, int] | None = None) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.entity_counts = dict(entity_counts or {})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class PrivacyBoundary:
    """Applies a ``PolicySet`` to payloads; builds one audit entry per payload."""

    def __init__(
        self,
        policies: PolicySet,
        keyring: KeyRing,
        analyzer: Analyzer,
        limits: BoundaryLimits | None = None,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.policies = policies
        self.keyring = keyring
        self.analyzer = analyzer
        self.limits = limits or BoundaryLimits()
        self._clock = clock

    # -- public API ---------------------------------------------------------

    def pseudonymize_subject(self, subject_id: str) -> str:
        """The subject's pseudonym under the active key; raises on an unusable id."""
        if not isinstance(subject_id, str) or not subject_id.strip():
            raise InvalidSubjectError("subject id must be a non-empty string")
        if len(subject_id) > self.limits.max_subject_chars:
            raise InvalidSubjectError(
                f"subject id is longer than {self.limits.max_subject_chars} characters"
            )
        if _INVALID_SUBJECT_RE.search(subject_id):
            raise InvalidSubjectError("subject id contains control or invisible characters")
        return self.keyring.pseudonymize(subject_id, "subject")

    def anonymize(
        self, kind: str, payload: Mapping[str, Value], correlation_id: str
    ) -> AnonymizedPayload:
        """Apply the policy for ``kind``; undeclared fields are dropped and counted."""
        if not isinstance(kind, str) or not KIND_RE.match(kind):
            raise PolicyError("payload kind is not a valid kind name")
        policy = self.policies.get(kind)
        out: dict[str, Value] = {}
        audits: list[FieldAudit] = []
        dropped_undeclared = 0
        for name, value in payload.items():
            rule = policy.fields.get(name) if isinstance(name, str) else None
            if rule is None:
                dropped_undeclared += 1
                continue
            result, audit = self._apply(rule, value)
            audits.append(audit)
            if result is not None:
                out[name] = result
        if dropped_undeclared:
            logger.debug("dropped undeclared fields", extra={"count": dropped_undeclared})
        entry = AuditEntry(
            occurred_at=self._clock(),
            payload_kind=kind,
            correlation_id=correlation_id,
            policy_version=self.policies.version,
            key_id=self.keyring.active_key_id,
            fields=tuple(sorted(audits, key=lambda a: a.field)),
            dropped_undeclared=dropped_undeclared,
        )
        return AnonymizedPayload(fields=out, audit=entry)

    # -- per field ----------------------------------------------------------

    def _apply(self, rule: FieldRule, value: Any) -> tuple[Value | None, FieldAudit]:
        operator = rule.action.value
        if rule.action is Action.GENERALIZE:
            operator = f"generalize:{rule.generalizer}"
        try:
            result, outcome, scrubbed = self._dispatch(rule, value)
        except _FieldDropped as dropped:
            return None, FieldAudit(rule.name, operator, dropped.outcome, dropped.entity_counts)
        counts = dict(scrubbed.entity_counts) if scrubbed else {}
        recognizers = tuple(scrubbed.recognizers) if scrubbed else ()
        return result, FieldAudit(rule.name, operator, outcome.value, counts, recognizers)

    def _dispatch(self, rule: FieldRule, value: Any) -> tuple[Value, Outcome, _Scrubbed | None]:
        action = rule.action
        if action is Action.DROP:
            raise _FieldDropped(Outcome.DROPPED_POLICY)
        _check_type(value)
        if action is Action.KEEP:
            if not isinstance(value, str):
                return _checked_number(rule, value), Outcome.KEPT, None
            text = self._checked_text(value)
            if len(text) <= self.limits.max_keep_chars:
                if (
                    _SAFE_KEEP_RE.match(text) and not _MAC_LIKE_RE.search(text)
                    and not has_spelled_at(text) and not encoded_tokens(text)
                ):
                    return text, Outcome.KEPT, None
                decoded = decode_layers(text)
                found = self._guarded(self.analyzer.analyze_patterns, decoded)
                if not found and not self._encoded_results(decoded):
                    return text, Outcome.KEPT, None
            scrubbed = self._scrub(text)  # fail closed: a keep string with PII is scrubbed
            return scrubbed.text, _scrub_outcome(scrubbed), scrubbed
        if action is Action.PSEUDONYMIZE:
            if isinstance(value, bool | float):
                raise _FieldDropped(Outcome.DROPPED_TYPE)
            text = self._checked_text(str(value))
            pseudonym = self.keyring.pseudonymize(text, f"field.{rule.name}")
            return pseudonym, Outcome.PSEUDONYMIZED, None
        if action is Action.GENERALIZE:
            if isinstance(value, str):
                value = decode_layers(self._checked_text(value))
            assert rule.generalizer is not None
            try:
                return get_generalizer(rule.generalizer)(value), Outcome.GENERALIZED, None
            except GeneralizeError:
                raise _FieldDropped(Outcome.DROPPED_UNPARSEABLE) from None
        # SCRUB
        if isinstance(value, bool):
            return value, Outcome.KEPT, None
        if not isinstance(value, str) and (entity := personal_number(value)) is not None:
            scrubbed_number = _Scrubbed(f"<{entity}>", Counter({entity: 1}), {"NumberShape"})
            return scrubbed_number.text, Outcome.SCRUBBED, scrubbed_number
        text = self._checked_text(value if isinstance(value, str) else repr(value))
        scrubbed = self._scrub(text)
        if not isinstance(value, str) and not scrubbed.entity_counts:
            return value, Outcome.CLEAN, scrubbed  # a clean number stays a number
        return scrubbed.text, _scrub_outcome(scrubbed), scrubbed

    def _checked_text(self, text: str) -> str:
        """The normalized text (what may be stored); drops oversize or control-character text."""
        if len(text) > self.limits.max_text_chars:
            raise _FieldDropped(Outcome.DROPPED_OVERSIZE)
        if _INVALID_TEXT_RE.search(text):
            raise _FieldDropped(Outcome.DROPPED_INVALID_TEXT)
        text = normalize_text(text)
        if len(text) > self.limits.max_text_chars:  # NFKC can expand a character
            raise _FieldDropped(Outcome.DROPPED_OVERSIZE)
        return text

    # -- scrubbing ----------------------------------------------------------

    def _guarded(
        self, analyze: Callable[[str], list[RecognizerResult]], text: str
    ) -> list[RecognizerResult]:
        try:
            return analyze(text)
        except RegexTimeoutError:
            logger.warning("regex time-out while analyzing a field; field dropped")
            raise _FieldDropped(Outcome.DROPPED_REGEX_TIMEOUT) from None
        except Exception as exc:  # any analyzer failure must fail closed
            logger.warning(
                "analyzer failed; field dropped", extra={"error_type": type(exc).__name__}
            )
            raise _FieldDropped(Outcome.DROPPED_ANALYZER_ERROR) from None

    def _scrub(self, text: str) -> _Scrubbed:
        if _URL_RE.match(text):
            scrubbed_url = self._scrub_url(text)
            if scrubbed_url is not None:
                return scrubbed_url
        text = decode_layers(text)
        results = self._guarded(self.analyzer.analyze, text) + self._encoded_results(text)
        scrubbed = _Scrubbed(redact(text, results))
        _tally(scrubbed, results)
        return scrubbed

    def _encoded_results(self, text: str, depth: int = 0) -> list[RecognizerResult]:
        """One result per base64/base64url/hex token whose decoding holds PII (the whole token)."""
        out: list[RecognizerResult] = []
        for token in encoded_tokens(text):
            inner = decode_layers(normalize_text(token.decoded))
            found = self._guarded(self.analyzer.analyze_patterns, inner)
            if not found and depth < MAX_ENCODED_DEPTH:
                found = self._encoded_results(inner, depth + 1)
            if found:
                best = max(found, key=lambda r: r.score)
                out.append(RecognizerResult(
                    best.entity_type, token.start, token.end, 1.0,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: f"{ENCODED_RECOGNIZER}:{token.encoding}",
                    },
                ))
        return out

    def _scrub_url(self, text: str) -> _Scrubbed | None:
        """Keep scheme, host and port; scrub path and query values; drop userinfo, fragment."""
        try:
            parts = urlsplit(text)
            host = parts.hostname
            port = parts.port
        except ValueError:
            return None
        if not host:
            return None
        scrubbed = _Scrubbed("")
        host = self._scrub_host(_clean(host), scrubbed)
        netloc = f"[{host}]" if ":" in host and not host.startswith("<") else host
        if port is not None:
            netloc += f":{port}"
        path = _clean(unquote(parts.path))
        query = [
            (_clean(key), _clean(value))
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
        # One analyzer call for the whole URL: components joined by a blank line. Keys are
        # analyzed too (a key can be the value: "?jane@example.com=1").
        components = [path]
        for key, value in query:
            sensitive = key.lower() in SENSITIVE_QUERY_KEYS
            components += [key, "" if sensitive else value]
        joined = _SEPARATOR.join(components)
        results = []
        if joined.strip():
            results = self._guarded(self.analyzer.analyze, joined) + self._encoded_results(joined)
        _tally(scrubbed, results)
        cleaned = _split_redacted(joined, components, results)
        new_path = quote(cleaned[0], safe="/<>") if results else parts.path
        new_query: list[tuple[str, str]] = []
        pairs = zip(query, cleaned[1::2], cleaned[2::2], strict=True)
        for (key, value), cleaned_key, cleaned_value in pairs:
            safe_key = key if _SAFE_QUERY_KEY_RE.match(key) and cleaned_key == key else REDACTED
            if safe_key == REDACTED:
                scrubbed.entity_counts["QUERY_KEY"] += 1
            if key.lower() in SENSITIVE_QUERY_KEYS and value:
                scrubbed.entity_counts["SENSITIVE_PARAM"] += 1
                cleaned_value = REDACTED
            new_query.append((safe_key, cleaned_value))
        if parts.fragment:
            scrubbed.entity_counts["URL_FRAGMENT"] += 1
        scrubbed.text = urlunsplit(
            (parts.scheme.lower(), netloc, new_path, urlencode(new_query, safe="<>"), "")
        )
        return scrubbed

    def _scrub_host(self, host: str, scrubbed: _Scrubbed) -> str:
        """The host with IP literals, embedded IPs and other PII in its labels replaced."""
        if _looks_like_ip(host):
            scrubbed.entity_counts["IP_ADDRESS"] += 1
            return IP_PLACEHOLDER
        host, found = _HOST_IPV4_RE.subn(IP_PLACEHOLDER, host)
        labels = host.split(".")
        for index, label in enumerate(labels):
            if _HEX_LABEL_RE.match(label) or _dashed_ipv6(label):
                labels[index] = IP_PLACEHOLDER
                found += 1
            elif sum(ch.isdigit() for ch in label) >= MAX_HOST_LABEL_DIGITS:
                labels[index] = REDACTED  # a long number as a host name is an identifier
                scrubbed.entity_counts["HOST_LABEL"] += 1
            elif sum(ch.isdigit() for ch in label) >= 7 or "--" in label:
                results = self._guarded(self.analyzer.analyze_patterns, label.replace("--", "-"))
                if any(r.entity_type not in ("URL", "DATE_TIME") for r in results):
                    labels[index] = REDACTED
                    _tally(scrubbed, results)
        if found:
            scrubbed.entity_counts["IP_ADDRESS"] += found
        return ".".join(labels)


def _clean(component: str) -> str:
    """A URL component as analyzed and kept: normalized (it was percent-encoded), decoded."""
    return decode_layers(normalize_text(component))


def _check_type(value: Any) -> None:
    if isinstance(value, bool | int | str):
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    raise _FieldDropped(Outcome.DROPPED_TYPE)


def _scrub_outcome(scrubbed: _Scrubbed) -> Outcome:
    return Outcome.SCRUBBED if scrubbed.entity_counts else Outcome.CLEAN


def _tally(scrubbed: _Scrubbed, results: Iterable[RecognizerResult]) -> None:
    for result in results:
        scrubbed.entity_counts[result.entity_type] += 1
        metadata = result.recognition_metadata or {}
        name = metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY)
        if name:
            scrubbed.recognizers.add(str(name))


def _looks_like_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        # odd IPv4 spellings: decimal, octal, hex (0xcb00714d, 0xcb.0.0x71.0x4d)
        return bool(re.fullmatch(r"[0-9.]+|(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?", host))
    return True


def _dashed_ipv6(label: str) -> bool:
    """An sslip.io-style IPv6 label: ``2001-db8--1``."""
    if label.count("-") < 2:
        return False
    try:
        ipaddress.IPv6Address(label.replace("-", ":"))
    except ValueError:
        return False
    return True


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char)
        if index % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def personal_number(value: int | float) -> str | None:
    """The entity a number's digits form (card, phone, SSN), or None.

    Only whole numbers are checked: cards are 12-19 digits that pass Luhn,
    phone numbers 10-15 digits (E.164), SSNs 7-9 digits once zero-padded to a
    valid SSN (a number drops the leading zeros of areas 001-099).
    """
    if isinstance(value, bool) or not math.isfinite(value) or value != int(value):
        return None
    digits = str(abs(int(value)))
    if 12 <= len(digits) <= 19 and _luhn_valid(digits):
        return "CREDIT_CARD"
    if 16 <= len(digits) <= 19 and isinstance(value, float) and abs(value) >= 2**53:
        return "CREDIT_CARD"  # a float this large lost the digits Luhn needs: fail closed
    if 10 <= len(digits) <= 15:
        return "PHONE_NUMBER"
    if 7 <= len(digits) <= 9 and ssn_shape(digits.zfill(9)):
        return "US_SSN"
    return None


def _checked_number(rule: FieldRule, value: int | float) -> int | float:
    """A kept number, or ``_FieldDropped`` when it is outside its range or personal."""
    if isinstance(value, bool):
        return value
    bounds = rule.number_range
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise _FieldDropped(DROPPED_OUT_OF_RANGE)
    entity = personal_number(value)
    if entity is not None:
        raise _FieldDropped(DROPPED_PERSONAL_NUMBER, {entity: 1})
    return value


def redact(text: str, results: Iterable[RecognizerResult]) -> str:
    """Replace the union of all result spans with ``<ENTITY_TYPE>``.

    Overlapping spans merge into one; the label is the best-scoring (then the
    longest) entity in the group. Nothing inside any span survives.
    """
    spans = sorted(
        (max(0, r.start), min(len(text), r.end), r.score, r.entity_type) for r in results
    )
    if not spans:
        return text
    pieces: list[str] = []
    cursor = 0
    group_start, group_end, best = spans[0][0], spans[0][1], spans[0]
    for span in spans[1:]:
        start, end = span[0], span[1]
        if start < group_end:
            group_end = max(group_end, end)
            if (span[2], span[1] - span[0]) > (best[2], best[1] - best[0]):
                best = span
            continue
        pieces += [text[cursor:group_start], f"<{best[3]}>"]
        cursor = group_end
        group_start, group_end, best = start, end, span
    pieces += [text[cursor:group_start], f"<{best[3]}>", text[group_end:]]
    return "".join(pieces)


def _split_redacted(
    joined: str, components: list[str], results: list[RecognizerResult]
) -> list[str]:
    """Redact each component with the results clipped to its range."""
    cleaned: list[str] = []
    offset = 0
    for component in components:
        start, end = offset, offset + len(component)
        clipped = [
            RecognizerResult(r.entity_type, max(r.start, start) - start,
                             min(r.end, end) - start, r.score)
            for r in results if r.start < end and r.end > start
        ]
        cleaned.append(redact(component, clipped))
        offset = end + len(_SEPARATOR)
    return cleaned
