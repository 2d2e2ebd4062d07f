"""Policy parsing, validation errors and the policy version."""

from __future__ import annotations

import copy

import pytest

from tacit.privacy.policy import (
    DEFAULT_POLICIES,
    Action,
    PolicyError,
    PolicySet,
    default_policy_set,
)


def test_default_policy_set_has_the_expected_kinds() -> None:
    policies = default_policy_set()
    assert {"rank_context", "candidate_features", "reward", "event.page_view", "event.click",
            "event.conversion", "event.custom"} <= set(policies.policies)
    assert set(policies.get("reward").fields) == {"value"}
    rule = policies.get("rank_context").fields["ip"]
    assert rule.action is Action.GENERALIZE and rule.generalizer == "ip"
    assert policies.get("event.custom").fields["query"].action is Action.SCRUB


def test_round_trip_keeps_the_version() -> None:
    policies = default_policy_set()
    again = PolicySet.from_mapping(policies.to_mapping())
    assert again.version == policies.version
    assert len(policies.version) == 16


def test_version_changes_when_any_rule_changes() -> None:
    base = default_policy_set().version
    changed = copy.deepcopy(DEFAULT_POLICIES)
    changed["event.click"]["fields"]["text"] = "drop"
    assert PolicySet.from_mapping(changed).version != base
    added = copy.deepcopy(DEFAULT_POLICIES)
    added["reward"]["fields"]["note"] = "scrub"
    assert PolicySet.from_mapping(added).version != base


def test_version_does_not_depend_on_key_order() -> None:
    reordered = {k: DEFAULT_POLICIES[k] for k in reversed(list(DEFAULT_POLICIES))}
    assert PolicySet.from_mapping(reordered).version == default_policy_set().version


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"k": {"fields": {"a": "shred"}}}, "k.fields.a: unknown action 'shred'"),
        ({"k": {"fields": {"a": {"action": "generalize", "generalizer": "zip"}}}},
         "unknown generalizer 'zip'"),
        ({"k": {"fields": {"a": {"action": "generalize"}}}}, "unknown generalizer None"),
        ({"k": {"fields": {"a": {"action": "keep", "generalizer": "ip"}}}},
         "only valid with action 'generalize'"),
        ({"k": {"fields": {"a": {"action": "keep", "colour": "red"}}}}, "unknown keys"),
        ({"k": {"fields": {"Bad Name": "keep"}}}, "field name"),
        ({"k": {"fieldz": {}}}, "unknown keys"),
        ({"k": "keep"}, "must be a table"),
        ({"Bad Kind": {"fields": {}}}, "payload kind"),
    ],
)
def test_invalid_config_gives_a_clear_error(config: dict, message: str) -> None:
    with pytest.raises(PolicyError) as info:
        PolicySet.from_mapping(config)
    assert message in str(info.value)


def test_unknown_kind_is_an_error() -> None:
    with pytest.raises(PolicyError, match="no privacy policy"):
        default_policy_set().get("event.nope")
