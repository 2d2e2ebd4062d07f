"""Field policies: what the boundary does with each declared field of a payload kind.

Anything not declared is dropped. Config comes as plain dicts (from TOML):

    [privacy.policies.rank_context.fields]
    device = "keep"
    ip = { action = "generalize", generalizer = "ip" }

``keep`` on a string still runs a cheap pattern scan; if it finds personal
data the field is scrubbed instead (fail closed). Numbers and booleans under
``keep`` are passed through unchanged.
"""

from __future__ import annotations

import hashlib
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

    def __post_init__(self) -> None:
        if not FIELD_NAME_RE.match(self.name):
            raise PolicyError(f"field name {self.name!r} must match {FIELD_NAME_RE.pattern}")
        if self.action is Action.GENERALIZE:
            if self.generalizer not in GENERALIZERS:
                raise PolicyError(
                    f"{self.name}: unknown generalizer {self.generalizer!r}; "
                    f"known: {sorted(GENERALIZERS)}"
                )
        elif self.generalizer is not None:
            raise PolicyError(f"{self.name}: generalizer is only valid with action 'generalize'")

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"action": self.action.value}
        if self.generalizer is not None:
            obj["generalizer"] = self.generalizer
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


def _parse_rule(path: str, name: str, spec: Any) -> FieldRule:
    action_name: Any
    generalizer: Any
    if isinstance(spec, str):
        action_name, generalizer = spec, None
    elif isinstance(spec, Mapping):
        extra = set(spec) - {"action", "generalizer"}
        if extra:
            raise PolicyError(f"{path}: unknown keys {sorted(extra)}")
        action_name, generalizer = spec.get("action"), spec.get("generalizer")
    else:
        raise PolicyError(f"{path}: must be an action name or a table with 'action'")
    try:
        action = Action(action_name)
    except ValueError:
        raise PolicyError(
            f"{path}: unknown action {action_name!r}; known: {[a.value for a in Action]}"
        ) from None
    try:
        return FieldRule(name=name, action=action, generalizer=generalizer)
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


def _gen(name: str) -> dict[str, str]:
    return {"action": "generalize", "generalizer": name}


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
        "device": "keep", "os": "keep", "hour": "keep", "daypart": "keep", "day_of_week": "keep",
        "country": "keep", "region": "keep", "language": "keep", "page_type": "keep",
        "is_returning": "keep", "session_depth": "keep", "referrer": "scrub",
        "user_agent": _gen("user_agent"), "ip": _gen("ip"), "geo": _gen("geo"),
        "timestamp": _gen("timestamp"), "age": _gen("age"), "search_query": "scrub",
        "email": "drop", "name": "drop", "phone": "drop",
    }},
    "candidate_features": {"fields": {
        "topic": "keep", "category": "keep", "length": "keep", "freshness": "keep",
        "price": "keep", "popularity": "keep", "language": "keep", "author_id": "pseudonymize",
        "title": "scrub", "description": "scrub",
    }},
    "reward": {"fields": {"value": "keep"}},
    "event.page_view": {"fields": {
        **_EVENT_COMMON, "dwell_ms": "keep", "scroll_depth": "keep", "page_type": "keep",
        "title": "scrub",
    }},
    "event.click": {"fields": {
        **_EVENT_COMMON, "position": "keep", "element": "keep", "text": "scrub",
    }},
    "event.conversion": {"fields": {
        **_EVENT_COMMON, "value": "keep", "currency": "keep", "order_id": "pseudonymize",
        "items": "keep",
    }},
    "event.custom": {"fields": {
        **_EVENT_COMMON, "name": "keep", "query": "scrub", "text": "scrub",
        "dwell_ms": "keep", "scroll_depth": "keep", "value": "keep", "label": "keep",
    }},
    # Feature overrides sent with PredictConversion/PredictChurn (tacit.learning.features names).
    "predict_context": {"fields": {
        "recency_days": "keep", "visits_7d": "keep", "visits_30d": "keep", "clicks_30d": "keep",
        "sessions_30d": "keep", "dwell_mean": "keep", "scroll_mean": "keep", "hour": "keep",
        "day_of_week": "keep", "device": "keep", "referral_source": "keep",
    }},
}


def default_policy_set() -> PolicySet:
    """Policies that fit the built-in payload kinds; operators override them in config."""
    return PolicySet.from_mapping(DEFAULT_POLICIES)
