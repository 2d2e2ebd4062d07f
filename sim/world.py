"""A simulated content site whose optimal policy is known.

Users arrive with a device and an hour; their taste for each topic depends on
both. Each item has a topic and a quality. The click probability of an item
for a user is a logistic function of taste and quality, so the best item in
any candidate set — and the optimal policy's click rate — is known exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

DEVICES = ("mobile", "desktop", "tablet")
DAYPARTS = ("night", "morning", "afternoon", "evening")
TOPICS = ("news", "sports", "tech", "culture", "travel", "food", "finance", "science")


def daypart(hour: int) -> str:
    return DAYPARTS[(hour % 24) // 6]


@dataclass(frozen=True)
class Item:
    item_id: str
    topic: str
    quality: float
    length: str


@dataclass(frozen=True)
class Visit:
    """One page view that needs a recommendation."""

    subject_id: str
    device: str
    hour: int
    candidates: tuple[Item, ...]
    click_probabilities: tuple[float, ...]

    @property
    def context(self) -> dict[str, str | float]:
        return {"device": self.device, "hour": float(self.hour), "daypart": daypart(self.hour)}

    @property
    def optimal_probability(self) -> float:
        return max(self.click_probabilities)

    @property
    def random_probability(self) -> float:
        return float(np.mean(self.click_probabilities))


class ContentSite:
    """Ground truth: a catalog, user tastes and click probabilities."""

    def __init__(
        self,
        n_items: int = 200,
        n_users: int = 5_000,
        n_candidates: int = 20,
        seed: int = 7,
    ):
        self.n_candidates = n_candidates
        rng = np.random.default_rng(seed)
        self._rng = np.random.default_rng(seed + 1)
        # Taste for each topic by device and by time of day: strong, so context matters.
        self.device_taste = rng.normal(0.0, 1.0, size=(len(DEVICES), len(TOPICS)))
        self.daypart_taste = rng.normal(0.0, 1.0, size=(len(DAYPARTS), len(TOPICS)))
        self.items = tuple(
            Item(
                item_id=f"item-{i:04d}",
                topic=TOPICS[int(rng.integers(len(TOPICS)))],
                quality=float(rng.normal(0.0, 0.4)),
                length=("short", "long")[int(rng.integers(2))],
            )
            for i in range(n_items)
        )
        self.users = tuple(
            (f"user-{u:05d}", DEVICES[int(rng.choice(3, p=[0.55, 0.35, 0.10]))]) for u in range(n_users)
        )
        self.base_logit = -2.0

    def click_probability(self, device: str, hour: int, item: Item) -> float:
        topic = TOPICS.index(item.topic)
        taste = (
            self.device_taste[DEVICES.index(device), topic]
            + self.daypart_taste[DAYPARTS.index(daypart(hour)), topic]
        )
        return float(1.0 / (1.0 + np.exp(-(self.base_logit + taste + item.quality))))

    def visit(self) -> Visit:
        subject_id, device = self.users[int(self._rng.integers(len(self.users)))]
        hour = int(self._rng.integers(24))
        picks = self._rng.choice(len(self.items), size=self.n_candidates, replace=False)
        candidates = tuple(self.items[int(i)] for i in picks)
        probabilities = tuple(self.click_probability(device, hour, item) for item in candidates)
        return Visit(subject_id, device, hour, candidates, probabilities)

    def visits(self, count: int) -> Iterator[Visit]:
        for _ in range(count):
            yield self.visit()

    def click(self, probability: float) -> bool:
        return bool(self._rng.random() < probability)
