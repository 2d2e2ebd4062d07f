"""Explanations read from a real VW model trained on the simulator, whose ground truth is known:
a click depends on the item's topic through the user's device and daypart, never on its length."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tacit.learning.bandit import SlotModel
from tacit.learning.explain import Row, explain_decision, explain_model
from tacit.sim.client import visit_candidates, visit_context
from tacit.sim.world import ContentSite

VW_ARGS = "--cb_explore_adf --squarecb -q UA"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Row]]:
    """6,000 simulated visits learned online, with the policy's own sampled choices."""
    site = ContentSite(seed=3, n_candidates=8)
    model = SlotModel(VW_ARGS, random_seed=1)
    rng = random.Random(0)
    rows = []
    for visit in site.visits(6_000):
        context = visit_context(visit)
        actions = [features for _, features in visit_candidates(visit)]
        pmf = model.predict(context, actions).probabilities
        chosen = rng.choices(range(len(actions)), weights=pmf)[0]
        model.learn(
            context, actions, chosen, float(site.click(visit.click_probabilities[chosen])), pmf[chosen]
        )
        rows.append(Row(context, actions, chosen))
    path = tmp_path_factory.mktemp("explain") / "model.vw"
    model.save(path)
    model.close()
    return path, rows


def total(explanation_lists: list[list[tuple[str, float]]], feature: str) -> float:
    return sum(value for items in explanation_lists for name, value in items if feature in name.split("*"))


def test_explanation_finds_that_topic_matters_through_the_context_and_length_does_not(
    trained: tuple[Path, list[Row]],
) -> None:
    path, rows = trained
    explanation = explain_model(VW_ARGS, path, rows[-1_000:], top_n=50)
    assert explanation.rows == 8_000
    interactions = [item.name for item in explanation.interactions]
    # The simulator's taste is device x topic plus daypart x topic: the top two interactions.
    assert set(interactions[:2]) == {"U^device*A^topic", "U^daypart*A^topic"}
    assert explanation.namespaces[0].name == "U*A"  # the interactions carry most of the weight
    groups = [
        [(i.name, i.importance) for i in explanation.features],
        [(i.name, i.importance) for i in explanation.interactions],
    ]
    # Everything topic takes part in weighs well over twice what length (noise) does.
    assert total(groups, "A^topic") > 2 * total(groups, "A^length")
    # Terms carry the stored tokens of declared fields, and groups sum their terms.
    topic_terms = [t for t in explanation.terms if "A^topic=" in t.name]
    assert topic_terms and all(t.occurrences > 0 for t in topic_terms)


def test_contributions_add_up_to_the_predicted_reward_that_ranks_the_candidates(
    trained: tuple[Path, list[Row]],
) -> None:
    path, rows = trained
    model = SlotModel(VW_ARGS, model_path=path)
    try:
        for row in rows[-5:]:
            predicted = [
                explain_decision(
                    VW_ARGS, path, Row(row.context, row.actions, index), top_n=1_000
                ).predicted_reward
                for index in range(len(row.actions))
            ]
            pmf = model.predict(row.context, row.actions).probabilities
            # squarecb gives its largest probability to the lowest predicted cost (highest reward).
            assert max(range(len(pmf)), key=pmf.__getitem__) == max(
                range(len(predicted)), key=predicted.__getitem__
            )
            explained = explain_decision(VW_ARGS, path, row, top_n=1_000)
            assert sum(c.contribution for c in explained.contributions) == pytest.approx(
                explained.predicted_reward
            )
            assert all(c.contribution == pytest.approx(-c.weight * c.value) for c in explained.contributions)
            top = explain_decision(VW_ARGS, path, row, top_n=3).contributions
            assert [abs(c.contribution) for c in top] == sorted(
                (abs(c.contribution) for c in top), reverse=True
            )
    finally:
        model.close()
