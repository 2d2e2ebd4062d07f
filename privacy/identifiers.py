"""Identifiers that are personal data in disguise.

Client-chosen ids (event ids, request ids) are stored only as keyed digests, but
an id that *is* a phone number, SSN or card number written as digits, or a valid
IBAN, is still refused rather than accepted: the caller made a mistake worth
telling. Candidate (content) ids are stored as given (the ranking and the
learner need them), so they get the stricter check: digit runs inside the id
(behind a prefix, split by separators), IBANs, IPv4/IPv6 literals and e-mail
addresses written with dots. All checks are cheap and linear-time; a canonical
UUID is never refused.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

_SEPARATORS_RE = re.compile(r"[-_.:\s]")
# Shortest digits-only id refused: US SSNs have 9 digits, phone numbers 10+ with area code;
# card numbers have at most 19.
MIN_NUMERIC_DIGITS = 9
MAX_NUMERIC_DIGITS = 19
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# Digit groups joined by at most one separator each: "555-867-5309", "4929 1234 ...".
_DIGIT_RUN_RE = re.compile(r"\d(?:[-_.:\s]?\d)*")
# A long hex token mixing letters and digits is a hash or a key, not a formatted number.
_HEX_TOKEN_RE = re.compile(
    r"(?<![0-9A-Za-z])(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{24,}(?![0-9A-Za-z])"
)
_IPV4_RE = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d])")
_IPV6_CANDIDATE_RE = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_IBAN_START_RE = re.compile(r"(?=([A-Z]{2})[0-9]{2})")
# An e-mail whose '@' was written as '.' (ids cannot hold '@'): name.host.tld with a
# real top-level domain as the last label.
_DOTTED_EMAIL_RE = re.compile(r"^[A-Za-z0-9_+\-]+(?:\.[A-Za-z0-9_+\-]+){2,}$")
# An e-mail spelled with separators: `name-at-example-org`, `name_at_example.org`, `name.at.host.dot.com`.
_SPELLED_AT_RE = re.compile(r"(?i)[A-Za-z0-9+][-_.:]at[-_.:](?P<domain>[A-Za-z0-9][A-Za-z0-9\-_.:]*)$")
_DOMAIN_SPLIT_RE = re.compile(r"[-_.:]+")
_TLDS = (
    "com org net edu gov mil int info biz io co me app dev ai us uk de fr es it nl be ch at se no dk fi"
    " pl cz pt ie ru ua jp cn kr in au nz ca br mx ar za tr gr hu ro bg hr si sk lt lv ee lu is il ae sg"
    " hk tw th my id ph vn eu name mobi pro online site xyz email mail"
)
_TOP_LEVEL_DOMAINS = frozenset(_TLDS.split())

# ISO 13616 IBAN lengths by country (the SWIFT IBAN registry).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def is_uuid(value: str) -> bool:
    """True for a canonical (8-4-4-4-12 hex) UUID, whatever its version or case."""
    return len(value) == 36 and _UUID_RE.fullmatch(value) is not None


def _iban_checksum_valid(candidate: str) -> bool:
    rearranged = candidate[4:] + candidate[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


def is_iban(compact_upper: str) -> bool:
    """True when the whole string is an IBAN: a known country, its length, mod-97."""
    expected = IBAN_LENGTHS.get(compact_upper[:2])
    return (
        expected is not None
        and len(compact_upper) == expected
        and compact_upper[2:4].isdigit()
        and compact_upper.isalnum()
        and compact_upper.isascii()
        and _iban_checksum_valid(compact_upper)
    )


def _contains_iban(compact_upper: str) -> bool:
    for match in _IBAN_START_RE.finditer(compact_upper):
        start = match.start()
        expected = IBAN_LENGTHS.get(match.group(1))
        if expected is not None and is_iban(compact_upper[start : start + expected]):
            return True
    return False


def personal_data_in_identifier(value: str) -> str | None:
    """The entity kind a client-chosen id looks like as a whole, or None when it looks opaque."""
    if is_uuid(value):
        return None
    compact = _SEPARATORS_RE.sub("", value)
    if compact.isascii() and compact.isdigit() and MIN_NUMERIC_DIGITS <= len(compact) <= MAX_NUMERIC_DIGITS:
        return "NUMERIC_PERSONAL_ID"
    if is_iban(compact.upper()):
        return "IBAN_CODE"
    return None


def _digit_count(run: str) -> int:
    return sum(ch.isdigit() for ch in run)


def _is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@lru_cache(maxsize=65_536)
def _spelled_email(value: str) -> bool:
    """`local<sep>at<sep>host<sep>tld`: a host of two or more labels ending in a known top-level domain."""
    for match in _SPELLED_AT_RE.finditer(value):
        labels = [label for label in _DOMAIN_SPLIT_RE.split(match.group("domain")) if label.lower() != "dot"]
        if len(labels) >= 2 and labels[-1].lower() in _TOP_LEVEL_DOMAINS:
            return True
    return False


def personal_data_in_content_id(value: str) -> str | None:
    """The entity kind hidden anywhere in a candidate id, or None when it looks opaque.

    Catalog ids repeat across requests, hence the cache. UUIDs and long hex hashes
    inside the id are opaque and skipped before the digit-run scan.
    """
    if is_uuid(value):
        return None
    for octets in _IPV4_RE.finditer(value):
        if all(int(octet) <= 255 for octet in octets.groups()):
            return "IP_ADDRESS"
    if ":" in value:
        for run in _IPV6_CANDIDATE_RE.findall(value):
            if _is_ip_literal(run) or _is_ip_literal(run.strip(".:")):
                return "IP_ADDRESS"
    if _DOTTED_EMAIL_RE.match(value) and value.rsplit(".", 1)[1].lower() in _TOP_LEVEL_DOMAINS:
        return "EMAIL_ADDRESS"
    if _spelled_email(value):
        return "EMAIL_ADDRESS"
    opaque_removed = _HEX_TOKEN_RE.sub(" ", _UUID_RE.sub(" ", value))
    for run in _DIGIT_RUN_RE.findall(opaque_removed):
        # Longer runs too: a card or phone number glued to more digits is still in there.
        if _digit_count(run) >= MIN_NUMERIC_DIGITS:
            return "NUMERIC_PERSONAL_ID"
    if _contains_iban(_SEPARATORS_RE.sub("", opaque_removed).upper()):
        return "IBAN_CODE"
    return None
