"""Client-chosen identifiers (event ids, request ids) that are personal data in disguise.

Ids are stored as given (they are join keys), so they never pass the scrubber.
An id that is a phone number, SSN or card number written as digits, or a valid
IBAN, is refused instead of stored: checked here with cheap, linear-time tests.
"""

from __future__ import annotations

import re

_SEPARATORS_RE = re.compile(r"[-_.\s]")
_IBAN_RE = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
# Shortest digits-only id refused: US SSNs have 9 digits, phone numbers 10+ with area code.
MIN_NUMERIC_DIGITS = 9
MAX_NUMERIC_DIGITS = 19


def _iban_valid(candidate: str) -> bool:
    rearranged = candidate[4:] + candidate[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(digits) % 97 == 1


def personal_data_in_identifier(value: str) -> str | None:
    """The entity kind an identifier looks like, or None when it looks opaque."""
    compact = _SEPARATORS_RE.sub("", value)
    if compact.isascii() and compact.isdigit() and MIN_NUMERIC_DIGITS <= len(compact) <= MAX_NUMERIC_DIGITS:
        return "NUMERIC_PERSONAL_ID"
    upper = compact.upper()
    if _IBAN_RE.match(upper) and _iban_valid(upper):
        return "IBAN_CODE"
    return None
