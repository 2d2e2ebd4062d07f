"""Field policies: what the boundary does with each declared field of a payload kind.

Anything not declared is dropped. Config comes as plain dicts (from TOML):

    [privacy.policies.rank_context.fields]
    device = "keep"
    ip = { action = "generalize", generalizer = "ip" }

``keep`` on a string still runs a cheap pattern scan; if it finds personal
data the field is scrubbed instead (fail closed). A number under ``keep`` may
declare what it is, a ``kind`` (``count``, ``duration_ms``, ``money``…, each with
a default range) and/or a ``range``:

    dwell_ms = { action = "keep", kind = "duration_ms" }
    rating = { action = "keep", range = [1, 5] }

A number outside the range, or one whose digits form a card (Luhn), SSN or
phone number, is dropped and counted. Booleans under ``keep`` pass unchanged.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from tacit.privacy.audit import canonical_json
from tacit.privacy.generalize import GENERALIZERS

FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}(\.[a-z][a-z0-9_]{0,63})?$")
VERSION_HEX_CHARS = 16


# Numeric kinds a ``keep`` field can declare, with the range a value must lie in.
NUMBER_KINDS: Mapping[str, tuple[float, float]] = MappingProxyType({
    "count": (0, 1_000_000),
    "duration_ms": (0, 86_400_000),  # up to a day
    "duration_s": (0, 2_592_000),  # up to 30 days
    "duration_days": (0, 3_660),
    "money": (-1_000_000, 1_000_000),
    "fraction": (0, 1),
    "percent": (0, 100),
    "hour": (0, 23),
    "day_of_week": (0, 6),
    "score": (-1_000, 1_000),
})


class PolicyError(ValueError):
    """A policy definition is invalid; the message names the offending path."""


class Action(StrEnum):
    """What to do with a declared field."""

    KEEP = "keep"
    DROP = "drop"
    PSEUDONYMIZE = "pseudonymize"
    GENERALIZE = "generalize"
    SCRUB = "scrub"


@dataclass(frozen=True)
class FieldRule:
    """The action for one field (and the generalizer name for ``generalize``)."""

    name: str
    action: Action
    generalizer: str | None = None
    kind: str | None = None  # numeric kind of a ``keep`` field (NUMBER_KINDS)
    range: tuple[float, float] | None = None  # numeric range of a ``keep`` field

    def __post_init__(self) -> None:
        if not FIELD_NAME_RE.match(self.name):
            raise PolicyError(f"field name {self.name!r} must match {FIELD_NAME_RE.pattern}")
        if (self.kind is not None or self.range is not None) and self.action is not Action.KEEP:
            raise PolicyError(f"{self.name}: kind and range are only valid with action 'keep'")
        if self.kind is not None and self.kind not in NUMBER_KINDS:
            raise PolicyError(
                f"{self.name}: unknown number kind {self.kind!r}; known: {sorted(NUMBER_KINDS)}"
            )
        if self.range is not None:
            low, high = self.range
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise PolicyError(f"{self.name}: range must be two finite numbers, low <= high")
        if self.action is Action.GENERALIZE:
            if self.generalizer not in GENERALIZERS:
                raise PolicyError(
                    f"{self.name}: unknown generalizer {self.generalizer!r}; "
                    f"known: {sorted(GENERALIZERS)}"
                )
        elif self.generalizer is not None:
            raise PolicyError(f"{self.name}: generalizer is only valid with action 'generalize'")

    @property
    def number_range(self) -> tuple[float, float] | None:
        """The range a kept number must lie in: the declared one, else its kind's."""
        if self.range is not None:
            return self.range
        return NUMBER_KINDS[self.kind] if self.kind is not None else None

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"action": self.action.value}
        if self.generalizer is not None:
            obj["generalizer"] = self.generalizer
        if self.kind is not None:
            obj["kind"] = self.kind
        if self.range is not None:
            obj["range"] = list(self.range)
        return obj


@dataclass(frozen=True)
class PayloadPolicy:
    """The rules for one payload kind, e.g. ``rank_context`` or ``event.click``."""

    kind: str
    fields: Mapping[str, FieldRule]

    def __post_init__(self) -> None:
        if not KIND_RE.match(self.kind):
            raise PolicyError(f"payload kind {self.kind!r} must match {KIND_RE.pattern}")
        for name, rule in self.fields.items():
            if name != rule.name:
                raise PolicyError(f"{self.kind}.fields.{name}: rule is named {rule.name!r}")
        object.__setattr__(self, "fields", MappingProxyType(dict(self.fields)))

    def to_obj(self) -> dict[str, Any]:
        return {"fields": {name: rule.to_obj() for name, rule in self.fields.items()}}


class PolicySet:
    """All payload policies; ``version`` changes whenever any rule changes."""

    def __init__(self, policies: Mapping[str, PayloadPolicy]) -> None:
        for kind, policy in policies.items():
            if kind != policy.kind:
                raise PolicyError(f"{kind}: policy is for kind {policy.kind!r}")
        self.policies: Mapping[str, PayloadPolicy] = MappingProxyType(dict(policies))
        self.canonical_json = canonical_json(self.to_mapping())
        digest = hashlib.sha256(self.canonical_json.encode("utf-8")).hexdigest()
        self.version = digest[:VERSION_HEX_CHARS]

    def __repr__(self) -> str:
        return f"PolicySet(version={self.version!r}, kinds={sorted(self.policies)!r})"

    def get(self, kind: str) -> PayloadPolicy:
        """The policy for ``kind``; ``PolicyError`` when the kind is not declared."""
        try:
            return self.policies[kind]
        except KeyError:
            raise PolicyError(f"no privacy policy for payload kind {kind!r}") from None

    def to_mapping(self) -> dict[str, Any]:
        """The config shape ``from_mapping`` accepts (round-trips)."""
        return {kind: policy.to_obj() for kind, policy in self.policies.items()}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> PolicySet:
        """Parse ``{kind: {"fields": {name: action | {action, generalizer}}}}``."""
        if not isinstance(data, Mapping):
            raise PolicyError("policies must be a table of payload kinds")
        policies: dict[str, PayloadPolicy] = {}
        for kind, body in data.items():
            if not isinstance(body, Mapping):
                raise PolicyError(f"{kind}: must be a table with a 'fields' table")
            extra = set(body) - {"fields"}
            if extra:
                raise PolicyError(f"{kind}: unknown keys {sorted(extra)}")
            fields = body.get("fields", {})
            if not isinstance(fields, Mapping):
                raise PolicyError(f"{kind}.fields: must be a table")
            rules = {name: _parse_rule(f"{kind}.fields.{name}", name, spec)
                     for name, spec in fields.items()}
            try:
                policies[kind] = PayloadPolicy(kind=kind, fields=rules)
            except PolicyError as exc:
                raise PolicyError(f"{kind}: {exc}") from None
        return cls(policies)


def _parse_range(path: str, spec: Any) -> tuple[float, float] | None:
    if spec is None:
        return None
    if (
        not isinstance(spec, list | tuple) or len(spec) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in spec)
    ):
        raise PolicyError(f"{path}.range: must be [low, high]")
    return float(spec[0]), float(spec[1])


def _parse_rule(path: str, name: str, spec: Any) -> FieldRule:
    action_name: Any
    generalizer: Any
    kind: Any = None
    number_range: tuple[float, float] | None = None
    if isinstance(spec, str):
        action_name, generalizer = spec, None
    elif isinstance(spec, Mapping):
        extra = set(spec) - {"action", "generalizer", "kind", "range"}
        if extra:
            raise PolicyError(f"{path}: unknown keys {sorted(extra)}")
        action_name, generalizer = spec.get("action"), spec.get("generalizer")
        kind = spec.get("kind")
        number_range = _parse_range(path, spec.get("range"))
    else:
        raise PolicyError(f"{path}: must be an action name or a table with 'action'")
    try:
        action = Action(action_name)
    except ValueError:
        raise PolicyError(
            f"{path}: unknown action {action_name!r}; known: {[a.value for a in Action]}"
        ) from None
    try:
        return FieldRule(
            name=name, action=action, generalizer=generalizer, kind=kind, range=number_range
        )
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def _gen(name: str) -> dict[str, str]:
    return {"action": "generalize", "generalizer": name}


def _num(kind: str) -> dict[str, str]:
    return {"action": "keep", "kind": kind}


_EVENT_COMMON: dict[str, Any] = {
    "url": "scrub",
    "referrer": "scrub",
    "user_agent": _gen("user_agent"),
    "ip": _gen("ip"),
    "timestamp": _gen("timestamp"),
    "device": "keep",
    "country": "keep",
    "language": "keep",
    "slot": "keep",
    "item_id": "keep",
    "session_id": "pseudonymize",
    "referrer_class": "keep",  # search/social/direct/email: the feature builder's referral source
}

DEFAULT_POLICIES: dict[str, Any] = {
    "rank_context": {"fields": {
        "device": "keep", "os": "keep", "hour": _num("hour"), "daypart": "keep",
        "day_of_week": _num("day_of_week"),
        "country": "keep", "region": "keep", "language": "keep", "page_type": "keep",
        "is_returning": "keep", "session_depth": _num("count"), "referrer": "scrub",
        "user_agent": _gen("user_agent"), "ip": _gen("ip"), "geo": _gen("geo"),
        "timestamp": _gen("timestamp"), "age": _gen("age"), "search_query": "scrub",
        "email": "drop", "name": "drop", "phone": "drop",
    }},
    "candidate_features": {"fields": {
        "topic": "keep", "category": "keep", "length": _num("count"), "freshness": _num("duration_days"),
        "price": _num("money"), "popularity": _num("score"), "language": "keep", "author_id": "pseudonymize",
        "title": "scrub", "description": "scrub",
    }},
    "reward": {"fields": {"value": "keep"}},
    "event.page_view": {"fields": {
        **_EVENT_COMMON, "dwell_ms": _num("duration_ms"), "scroll_depth": _num("fraction"),
        "page_type": "keep",
        "title": "scrub",
    }},
    "event.click": {"fields": {
        **_EVENT_COMMON, "position": _num("count"), "element": "keep", "text": "scrub",
    }},
    "event.conversion": {"fields": {
        **_EVENT_COMMON, "value": _num("money"), "currency": "keep", "order_id": "pseudonymize",
        "items": _num("count"),
    }},
    "event.custom": {"fields": {
        **_EVENT_COMMON, "name": "keep", "query": "scrub", "text": "scrub",
        "dwell_ms": _num("duration_ms"), "scroll_depth": _num("fraction"), "value": _num("money"),
        "label": "keep",
    }},
    # Feature overrides sent with PredictConversion/PredictChurn (tacit.learning.features names).
    "predict_context": {"fields": {
        "recency_days": _num("duration_days"), "visits_7d": _num("count"),
        "visits_30d": _num("count"), "clicks_30d": _num("count"), "sessions_30d": _num("count"),
        "dwell_mean": _num("duration_ms"), "scroll_mean": _num("fraction"), "hour": _num("hour"),
        "day_of_week": _num("day_of_week"), "device": "keep", "referral_source": "keep",
    }},
}


def default_policy_set() -> PolicySet:
    """Policies that fit the built-in payload kinds; operators override them in config."""
    return PolicySet.from_mapping(DEFAULT_POLICIES)
