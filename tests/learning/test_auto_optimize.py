"""Auto-optimize's offline verdict on the simulator, whose click probabilities are known.

A slot logged by a deliberately poor configuration (it ignores the context and explores a lot)
is replayed: every configuration's progressive-validation estimate is compared with its *true*
value on the same stream, worked out independently from the simulator's click probabilities
(the expected click rate of the probabilities the configuration put on each scored decision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from tacit.learning.auto_optimize import evaluate_configs
from tacit.learning.bandit import SlotModel
from tacit.learning.evaluation import EvaluationError
from tacit.sim.client import visit_candidates, visit_context
from tacit.sim.world import ContentSite

POOR = "--cb_explore_adf --epsilon 0.5 --ignore U"
CANDIDATES = (
    "--cb_explore_adf --squarecb -q UA",
    "--cb_explore_adf --squarecb -q UA -l 0.1",
    "--cb_explore_adf --epsilon 0.05 -q UA",
)


@dataclass(frozen=True)
class Logged:
    context: dict[str, Any]
    candidates: list[dict[str, Any]]
    chosen_index: int
    probability: float
    reward: float
    click_probabilities: np.ndarray


def _log(visits: int, vw_args: str = POOR, seed: int = 21) -> list[Logged]:
    """The slot's log: the logging configuration learns online and samples from its own pmf."""
    site = ContentSite(seed=seed, n_candidates=6)
    rng = np.random.default_rng(seed)
    model = SlotModel(vw_args, random_seed=seed)
    out = []
    try:
        for visit in site.visits(visits):
            context = visit_context(visit)
            candidates = [{"id": cid, **features} for cid, features in visit_candidates(visit)]
            pmf = np.array(model.predict(context, candidates).probabilities)
            chosen = int(rng.choice(len(pmf), p=pmf / pmf.sum()))
            reward = float(rng.random() < visit.click_probabilities[chosen])
            model.learn(context, candidates, chosen, reward, float(pmf[chosen]))
            out.append(
                Logged(
                    context,
                    candidates,
                    chosen,
                    float(pmf[chosen]),
                    reward,
                    np.array(visit.click_probabilities),
                )
            )
    finally:
        model.close()
    return out


def _true_value(log: list[Logged], vw_args: str, warmup_fraction: float) -> float:
    """The expected click rate of `vw_args` learning this log, from the simulator's ground truth."""
    start = int(len(log) * warmup_fraction)
    model = SlotModel(vw_args, random_seed=0)
    values = []
    try:
        for index, d in enumerate(log):
            if index >= start:
                values.append(
                    float(
                        np.array(model.predict(d.context, d.candidates).probabilities) @ d.click_probabilities
                    )
                )
            model.learn(d.context, d.candidates, d.chosen_index, d.reward, d.probability)
    finally:
        model.close()
    return float(np.mean(values))


@pytest.fixture(scope="module")
def poor_log() -> list[Logged]:
    return _log(3000)


def test_a_context_blind_slot_gets_a_context_aware_configuration_proposed(poor_log: list[Logged]) -> None:
    result = evaluate_configs(poor_log, POOR, CANDIDATES, margin=0.02, warmup_fraction=0.5)
    assert result.current.vw_args == POOR and result.current.current
    assert [c.vw_args for c in result.candidates] == list(CANDIDATES)
    assert result.proposed, result.reason
    assert result.best is not None and "-q UA" in result.best.vw_args
    assert result.best.estimate.ci_low >= result.current.estimate.ci_low + 0.02
    assert result.decisions == 3000 and result.scored == 1500
    truths = {c.vw_args: _true_value(poor_log, c.vw_args, 0.5) for c in (result.current, *result.candidates)}
    print("\n" + "\n".join(
        f"{c.vw_args:45s} true {truths[c.vw_args]:.3f} ips {c.estimate.value:.3f} "
        f"[{c.estimate.ci_low:.3f}, {c.estimate.ci_high:.3f}] {c.estimate.status.value}"
        for c in (result.current, *result.candidates)
    ))  # fmt: skip
    # The proposal is really better: its true value beats the current configuration's by a lot.
    assert truths[result.best.vw_args] > truths[POOR] + 0.1
    # Every 95% interval covers the configuration's true value on this stream.
    for config in (result.current, *result.candidates):
        assert config.estimate.ci_low <= truths[config.vw_args] <= config.estimate.ci_high, config.vw_args


def test_a_good_current_configuration_is_kept(poor_log: list[Logged]) -> None:
    # Judged from the same log, the context-blind configuration never beats a context-aware one.
    result = evaluate_configs(poor_log, CANDIDATES[0], (POOR,), margin=0.0)
    assert not result.proposed and "does not beat" in result.reason
    assert result.best is not None and result.best.vw_args == POOR


def test_the_current_configuration_is_not_its_own_candidate(poor_log: list[Logged]) -> None:
    result = evaluate_configs(poor_log[:400], POOR, (POOR, CANDIDATES[2], CANDIDATES[2]), warmup_fraction=0.5)
    assert [c.vw_args for c in result.candidates] == [CANDIDATES[2]]


@pytest.mark.parametrize(("decisions", "warmup"), [(38, 0.5), (19, 0.0)])
def test_a_short_log_is_refused_naming_what_is_needed(
    poor_log: list[Logged], decisions: int, warmup: float
) -> None:
    with pytest.raises(EvaluationError, match="at least"):
        evaluate_configs(poor_log[:decisions], POOR, CANDIDATES[:1], warmup_fraction=warmup)
