"""Tags are learnable: the bandit generalizes through a catalogue item's tag features to items it
never saw (unseen ids and topics), which only the tags can explain."""

from __future__ import annotations

import random

from tacit.learning.bandit import SlotModel
from tacit.server.catalogue import tag_features
from tacit.server.config import DEFAULT_VW_ARGS

# Click probability by (device, tag): mobile readers click sports, desktop readers news.
CLICK = {
    ("mobile", "sports"): 0.8,
    ("mobile", "news"): 0.1,
    ("desktop", "sports"): 0.1,
    ("desktop", "news"): 0.8,
}


def _action(item_id: str, tag: str) -> dict[str, str | bool]:
    """An item as the catalogue hands it to the policy: its features, tag features and id."""
    return {"topic": f"topic-{item_id}", **tag_features([tag]), "id": item_id}


def test_the_policy_learns_from_tags_and_ranks_unseen_items_by_them() -> None:
    rng = random.Random(5)
    seen = [_action(f"seen-{n}", "sports" if n % 2 else "news") for n in range(12)]
    model = SlotModel(DEFAULT_VW_ARGS, random_seed=5)
    for _ in range(4000):
        device = rng.choice(["mobile", "desktop"])
        offered = rng.sample(seen, 4)
        probabilities = model.predict({"device": device}, offered).probabilities
        chosen = rng.choices(range(len(offered)), weights=probabilities)[0]
        tag = "sports" if "tag.sports" in offered[chosen] else "news"
        reward = 1.0 if rng.random() < CLICK[(device, tag)] else 0.0
        model.learn({"device": device}, offered, chosen, reward, probabilities[chosen])
    unseen = [_action("new-sports", "sports"), _action("new-news", "news")]
    for device, best in (("mobile", "new-sports"), ("desktop", "new-news")):
        probabilities = model.predict({"device": device}, unseen).probabilities
        assert unseen[max(range(2), key=lambda i: probabilities[i])]["id"] == best, (device, probabilities)
        assert max(probabilities) > 0.8  # exploitation: the tag decided it, not a coin
    model.close()
