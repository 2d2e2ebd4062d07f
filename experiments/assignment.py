"""Deterministic, stateless assignment of subject pseudonyms to experiment arms.

Two independent sha256 hashes of (salt, purpose, pseudonym) give an *exposure bucket*
and an *arm bucket* in [0, 10 000). A subject is exposed when its exposure bucket falls
below the stage's share of buckets, and its arm depends only on the arm bucket and the
weights. Widening a stage (1 % → 5 % → 25 % …) therefore only adds subjects: exposed
subjects stay exposed and never change arm. Different salts give independent draws.

Layers: a third hash, of (slot, "layer", pseudonym), gives the subject's *layer bucket*,
shared by every experiment on the slot and independent of their salts. An experiment
declares a traffic range [start, end) in percent of the slot's subjects and only
subjects whose layer bucket falls in it belong to the experiment; inside the range the
exposure and arm buckets apply unchanged (a stage's percent is a share of the range).
Experiments with disjoint ranges therefore never share a subject.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from tacit.experiments.errors import SpecError

__all__ = [
    "BUCKETS",
    "WEIGHT_TOLERANCE",
    "WHOLE_SLOT",
    "arm_bucket",
    "assign",
    "bucket",
    "exposure_bucket",
    "layer_bucket",
    "ranges_overlap",
    "traffic_buckets",
    "validate_arms",
]

BUCKETS = 10_000
WEIGHT_TOLERANCE = 1e-9
WHOLE_SLOT = (0.0, 100.0)


def bucket(salt: str, purpose: str, subject: str) -> int:
    """Uniform bucket in [0, BUCKETS) from sha256 of the length-prefixed fields.

    Length prefixes keep ("ab", "c") and ("a", "bc") apart; 64 bits modulo 10 000 has a
    bias below 1e-15.
    """
    key = f"{len(salt)}:{salt}|{len(purpose)}:{purpose}|{subject}".encode()
    digest = hashlib.sha256(key).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def exposure_bucket(subject: str, salt: str) -> int:
    """Bucket deciding whether the subject is in the experiment at a given exposure."""
    return bucket(salt, "exposure", subject)


def arm_bucket(subject: str, salt: str) -> int:
    """Bucket deciding the subject's arm; independent of the exposure bucket."""
    return bucket(salt, "arm", subject)


def layer_bucket(subject: str, slot: str) -> int:
    """The slot-level bucket choosing which of the slot's traffic ranges holds the subject;
    the same for every experiment on the slot (no experiment salt)."""
    return bucket(slot, "layer", subject)


def traffic_buckets(traffic_start: float, traffic_end: float) -> tuple[int, int]:
    """A traffic range in percent as the half-open range of layer buckets it covers.

    Rounding is monotone, so ranges disjoint in percent stay disjoint in buckets.
    """
    return round(traffic_start * BUCKETS / 100), round(traffic_end * BUCKETS / 100)


def ranges_overlap(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float] | None:
    """The intersection of two half-open ranges, or None when they are disjoint."""
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return (low, high) if low < high else None


def validate_arms(arms: Sequence[tuple[str, float]], field: str = "arms") -> None:
    """Refuse arm lists whose names repeat or whose weights are not positive fractions
    summing to 1 (within WEIGHT_TOLERANCE); the error names the problem."""
    if len(arms) == 0:
        raise SpecError(field, "at least one arm is required")
    names = [name for name, _ in arms]
    for index, (name, weight) in enumerate(arms):
        if not name:
            raise SpecError(f"{field}[{index}].name", "arm name must be non-empty")
        if names.count(name) > 1:
            raise SpecError(f"{field}[{index}].name", "duplicates an earlier arm name")
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight > 0):
            raise SpecError(f"{field}[{index}].weight", "weight must be a positive finite number")
    total = math.fsum(weight for _, weight in arms)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise SpecError(field, "arm weights must sum to 1 (fractions, not percentages)")


def _exposure_threshold(exposure_percent: float) -> int:
    if not (
        isinstance(exposure_percent, int | float)
        and math.isfinite(exposure_percent)
        and 0 <= exposure_percent <= 100
    ):
        raise SpecError("exposure_percent", "must be in [0, 100]")
    # 1 bucket = 0.01 %; round so that 12.34 % is exactly 1234 buckets.
    return round(exposure_percent * BUCKETS / 100)


def assign(
    subject: str,
    salt: str,
    arms: Sequence[tuple[str, float]],
    exposure_percent: float,
) -> str | None:
    """The subject's arm, or None when it is outside the experiment (serve the default).

    `arms` is a sequence of (name, weight) with weights summing to 1; their order is part
    of the experiment's identity (reordering reshuffles subjects).
    """
    validate_arms(arms)
    threshold = _exposure_threshold(exposure_percent)
    if exposure_bucket(subject, salt) >= threshold:
        return None
    # Compare the bucket's midpoint with cumulative weights; the last arm takes the rest.
    point = (arm_bucket(subject, salt) + 0.5) / BUCKETS
    cumulative = 0.0
    for name, weight in arms[:-1]:
        cumulative += weight
        if point < cumulative:
            return name
    return arms[-1][0]
