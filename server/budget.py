"""The per-request anonymization budget: how much text one call may send to Presidio.

Presidio's analysis costs CPU in proportion to the text it reads (about 20 µs a
character on the reference machine), so a single request within the other limits
could hold a core for many seconds. The budget (`limits.max_scrub_chars_per_request`)
is checked before any work starts; a request over it is refused with INVALID_ARGUMENT
and reason ANONYMIZATION_BUDGET_EXCEEDED, naming the budget, never a value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tacit.privacy.boundary import PrivacyBoundary
from tacit.privacy.policy import Action
from tacit.server.errors import InvalidArgument

Value = str | float | int | bool


def scrub_chars(boundary: PrivacyBoundary, kind: str, payload: Mapping[str, Value]) -> int:
    """Characters of `payload` that the policy for `kind` sends to the full Presidio analysis."""
    try:
        fields = boundary.policies.get(kind).fields
    except Exception:  # noqa: BLE001 - an unknown kind is refused later by the boundary itself
        return 0
    keep_limit = boundary.limits.max_keep_chars
    total = 0
    for name, value in payload.items():
        rule = fields.get(name)
        if rule is None or isinstance(value, bool):
            continue
        if rule.action is Action.SCRUB:
            total += len(value) if isinstance(value, str) else len(repr(value))
        elif rule.action is Action.KEEP and isinstance(value, str) and len(value) > keep_limit:
            total += len(value)  # a long keep string gets the full analysis
    return total


def require_within_budget(field: str, parts: Iterable[int], budget: int) -> None:
    """Refuses the request before any work when its text to scrub exceeds `budget` characters."""
    total = 0
    for chars in parts:
        total += chars
        if total > budget:
            raise InvalidArgument(
                field,
                f"text to anonymize exceeds limits.max_scrub_chars_per_request ({budget} characters)",
                "ANONYMIZATION_BUDGET_EXCEEDED",
            )
