"""Apprentice mode's arithmetic and its promise on the simulator (library level, no server).

The served mixture and the report are checked against numbers worked by hand; the switch rule
on both sides of its bound; and on `tacit.sim` (optimum known) a model that learns only from
apprentice decisions — baseline served >= 95% — is estimated by the report within its
interval of the value the same (frozen) model then achieves online, computed exactly from the
simulator's click probabilities.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tacit.learning.apprentice import (
    ApprenticeRecord,
    ApprenticeReport,
    apprentice_report,
    mixture,
    switch_decision,
)
from tacit.learning.bandit import SlotModel
from tacit.learning.ope import Estimate, EstimateStatus
from tacit.server.config import DEFAULT_VW_ARGS
from tacit.sim.client import visit_candidates, visit_context
from tacit.sim.world import ContentSite, Visit

EPSILON = 0.04


def test_mixture_puts_one_minus_epsilon_on_the_baseline_plus_its_share_of_the_policy() -> None:
    served = mixture((0.5, 0.3, 0.2), 2, 0.1)
    assert served == pytest.approx((0.05, 0.03, 0.92))
    assert sum(served) == pytest.approx(1.0)
    assert mixture((0.5, 0.5), 1, 0.0) == (0.0, 1.0)  # logging only
    with pytest.raises(ValueError):
        mixture((1.0,), 1, 0.1)
    with pytest.raises(ValueError):
        mixture((1.0,), 0, 1.5)


def test_report_weights_each_policy_by_its_probability_over_the_logged_one() -> None:
    # Worked by hand: learned weights 0.9/0.95, 0.1/0.05 and 0.8/0.05; baseline weights 1/0.95 and 0.
    records = [
        # (π before mixing, baseline index, chosen index, logged μ of the chosen one, reward)
        ApprenticeRecord((0.9, 0.1), 0, 0, 0.95, 1.0),
        ApprenticeRecord((0.9, 0.1), 0, 1, 0.05, 1.0),
        ApprenticeRecord((0.2, 0.8), 0, 1, 0.05, 0.0),
    ]
    report = apprentice_report(records, (0.0, 1.0), min_matched_rewards=1)
    assert report.learned.value == pytest.approx((0.9 / 0.95 + 0.1 / 0.05) / 3)
    assert report.baseline.value == pytest.approx((1 / 0.95) / 3)
    assert report.baseline_served == pytest.approx(1 / 3)
    assert report.agreement == pytest.approx(2 / 3)  # the third decision's policy prefers candidate 1
    assert report.decisions == 3
    empty = apprentice_report([], (0.0, 1.0))
    assert empty.learned.status is EstimateStatus.EMPTY_LOG and math.isnan(empty.agreement)


def _estimate(low: float, high: float, status: EstimateStatus = EstimateStatus.OK) -> Estimate:
    return Estimate("ips", (low + high) / 2, low, high, 0.0, 5_000, 5_000.0, status)


@pytest.mark.parametrize(
    ("learned", "baseline", "margin", "decisions", "switch"),
    [
        (_estimate(0.30, 0.40), _estimate(0.10, 0.24), 0.05, 5_000, True),  # 0.30 >= 0.24 + 0.05
        (_estimate(0.28, 0.40), _estimate(0.10, 0.24), 0.05, 5_000, False),  # 0.28 < 0.29
        (_estimate(0.30, 0.40), _estimate(0.10, 0.24), None, 5_000, False),  # no automatic switch
        (_estimate(0.30, 0.40), _estimate(0.10, 0.24), 0.05, 999, False),  # too few decisions
        (_estimate(0.30, 0.40, EstimateStatus.INSUFFICIENT), _estimate(0.10, 0.24), 0.05, 5_000, False),
    ],
)
def test_switch_rule_needs_the_lower_bound_above_the_baseline_by_the_margin(
    learned: Estimate, baseline: Estimate, margin: float | None, decisions: int, switch: bool
) -> None:
    report = ApprenticeReport(decisions, 0.96, 0.1, learned, baseline)
    decision = switch_decision(report, margin, min_decisions=1_000)
    assert decision.switch is switch
    assert decision.reason


def _actions(visit: Visit) -> list[dict[str, str | float]]:
    return [{**features, "id": item_id} for item_id, features in visit_candidates(visit)]


def _apprentice_run(
    site: ContentSite, model: SlotModel, count: int, learn: bool, rng: np.random.Generator
) -> list[ApprenticeRecord]:
    """Serves the site's own rule (the first candidate) as the baseline, as Rank does in apprentice mode."""
    records = []
    for visit in site.visits(count):
        context, actions = visit_context(visit), _actions(visit)
        target = model.predict(context, actions).probabilities
        served = mixture(target, 0, EPSILON)
        chosen = int(rng.choice(len(served), p=np.asarray(served) / sum(served)))
        reward = float(site.click(visit.click_probabilities[chosen]))
        records.append(ApprenticeRecord(target, 0, chosen, served[chosen], reward))
        if learn:
            model.learn(context, actions, chosen, reward, served[chosen])
    return records


@pytest.mark.slow
def test_apprentice_estimate_covers_what_the_same_policy_then_achieves_online() -> None:
    site = ContentSite(n_candidates=10, seed=7)
    rng = np.random.default_rng(3)
    model = SlotModel(DEFAULT_VW_ARGS, random_seed=1)
    try:
        learning = _apprentice_run(site, model, 6_000, learn=True, rng=rng)
        frozen = _apprentice_run(site, model, 6_000, learn=False, rng=rng)
        report = apprentice_report(frozen, (0.0, 1.0))
        # Online afterwards: the same model chooses; its value is exact given the visits.
        online, optimal, first = [], [], []
        for visit in site.visits(3_000):
            policy = np.asarray(model.predict(visit_context(visit), _actions(visit)).probabilities)
            online.append(float(policy @ np.asarray(visit.click_probabilities)))
            optimal.append(visit.optimal_probability)
            first.append(visit.click_probabilities[0])
    finally:
        model.close()
    served = np.mean([r.chosen_index == r.baseline_index for r in learning + frozen])
    online_value = float(np.mean(online))
    print(
        f"\napprentice: baseline served {served:.4f}, agreement {report.agreement:.4f}; learned IPS "
        f"{report.learned.value:.4f} [{report.learned.ci_low:.4f}, {report.learned.ci_high:.4f}], baseline "
        f"{report.baseline.value:.4f} [{report.baseline.ci_low:.4f}, {report.baseline.ci_high:.4f}]; online "
        f"{online_value:.4f}; optimum {np.mean(optimal):.4f}; baseline truth {np.mean(first):.4f}"
    )
    assert served >= 0.95
    assert report.learned.status is EstimateStatus.OK
    assert report.learned.ci_low <= online_value <= report.learned.ci_high
    # The baseline's estimate covers its truth too, and the learner has learned something real.
    assert report.baseline.ci_low <= float(np.mean(first)) <= report.baseline.ci_high
    assert online_value >= 1.5 * float(np.mean(first))
    assert switch_decision(report, 0.05, 1_000).switch
