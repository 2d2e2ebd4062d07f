"""Deterministic assignment: stable under widening, calibrated shares, independent salts."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from tacit.experiments.assignment import (
    BUCKETS,
    arm_bucket,
    assign,
    bucket,
    exposure_bucket,
    validate_arms,
)
from tacit.experiments.errors import SpecError

ARMS = (("control", 0.5), ("treatment", 0.3), ("holdout", 0.2))
SUBJECTS = [f"pseudonym-{i}" for i in range(100_000)]


def bucket_of(key: bytes) -> int:
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % 10_000


def test_bucket_is_sha256_of_length_prefixed_fields() -> None:
    digest = hashlib.sha256(b"4:salt|8:exposure|subject-1").digest()
    assert bucket("salt", "exposure", "subject-1") == int.from_bytes(digest[:8], "big") % 10_000
    assert exposure_bucket("subject-1", "salt") == bucket("salt", "exposure", "subject-1")
    # ("ab", "c") and ("a", "bc") hash different keys thanks to the length prefix.
    assert bucket("ab", "arm", "c") == bucket_of(b"2:ab|3:arm|c")
    assert bucket("a", "arm", "bc") == bucket_of(b"1:a|3:arm|bc")


@settings(max_examples=300, deadline=None)
@given(
    subject=st.text(min_size=1, max_size=40),
    salt=st.text(max_size=20),
    weights=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=5),
    percents=st.lists(st.floats(min_value=0, max_value=100), min_size=2, max_size=6),
)
def test_widening_never_moves_or_drops_an_exposed_subject(
    subject: str, salt: str, weights: list[int], percents: list[float]
) -> None:
    total = sum(weights)
    arms = [(f"arm{i}", w / total) for i, w in enumerate(weights)]
    arms[-1] = (arms[-1][0], 1.0 - sum(w for _, w in arms[:-1]))
    seen: str | None = None
    for percent in sorted(percents):
        arm = assign(subject, salt, arms, percent)
        if seen is not None:
            assert arm == seen
        seen = arm
    assert assign(subject, salt, arms, 100) is not None


def test_exposure_and_arm_shares_over_100k_subjects() -> None:
    full = Counter(assign(s, "exp-42", ARMS, 100) for s in SUBJECTS)
    for name, weight in ARMS:
        assert abs(full[name] / len(SUBJECTS) - weight) < 0.006  # SE <= 0.0016
    partial = Counter(assign(s, "exp-42", ARMS, 25) for s in SUBJECTS)
    exposed = len(SUBJECTS) - partial[None]
    assert abs(exposed / len(SUBJECTS) - 0.25) < 0.006
    for name, weight in ARMS:
        assert abs(partial[name] / exposed - weight) < 0.012


def test_exposure_and_arm_buckets_are_independent() -> None:
    exposed = np.array([exposure_bucket(s, "exp-42") < 5_000 for s in SUBJECTS[:50_000]])
    arm = np.array([arm_bucket(s, "exp-42") < 5_000 for s in SUBJECTS[:50_000]])
    table = np.array(
        [
            [np.sum(exposed & arm), np.sum(exposed & ~arm)],
            [np.sum(~exposed & arm), np.sum(~exposed & ~arm)],
        ]
    )
    assert scipy_stats.chi2_contingency(table).pvalue > 0.001


def test_different_salts_give_independent_assignments() -> None:
    arms_a = [assign(s, "salt-a", ARMS, 100) for s in SUBJECTS[:50_000]]
    arms_b = [assign(s, "salt-b", ARMS, 100) for s in SUBJECTS[:50_000]]
    names = [name for name, _ in ARMS]
    pairs = Counter(zip(arms_a, arms_b, strict=True))
    table = np.array([[pairs[(a, b)] for b in names] for a in names], dtype=float)
    assert table.sum() == len(arms_a)
    assert scipy_stats.chi2_contingency(table).pvalue > 0.001
    # Agreement under independence is sum(w^2) = 0.25 + 0.09 + 0.04 = 0.38.
    assert abs(np.trace(table) / table.sum() - 0.38) < 0.01


def test_assignment_is_deterministic_and_respects_zero_and_full_exposure() -> None:
    assert [assign(s, "x", ARMS, 50) for s in SUBJECTS[:200]] == [
        assign(s, "x", ARMS, 50) for s in SUBJECTS[:200]
    ]
    assert all(assign(s, "x", ARMS, 0) is None for s in SUBJECTS[:1000])
    assert all(assign(s, "x", ARMS, 100) is not None for s in SUBJECTS[:1000])
    assert BUCKETS == 10_000


@pytest.mark.parametrize(
    ("arms", "field", "message"),
    [
        ((("a", 50), ("b", 50)), "arms", "sum to 1"),
        ((("a", 0.5), ("b", 0.4)), "arms", "sum to 1"),
        ((("a", 1.5), ("b", -0.5)), "arms[1].weight", "positive"),
        ((("a", 0.5), ("a", 0.5)), "arms[0].name", "duplicate"),
        ((("", 1.0),), "arms[0].name", "non-empty"),
        ((), "arms", "at least one"),
    ],
)
def test_invalid_weights_are_refused_with_the_problem_named(
    arms: tuple[tuple[str, float], ...], field: str, message: str
) -> None:
    with pytest.raises(SpecError, match=message) as error:
        validate_arms(arms)
    assert error.value.field == field


def test_weights_within_tolerance_are_accepted_and_bad_exposure_refused() -> None:
    validate_arms((("a", 1 / 3), ("b", 1 / 3), ("c", 1 / 3)))
    with pytest.raises(SpecError) as error:
        assign("s", "x", ARMS, 150)
    assert error.value.field == "exposure_percent"
