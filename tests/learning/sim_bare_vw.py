"""The same simulated stream fed to a bare VW workspace: the yardstick for learning through the service.

It drives `learning` directly, so it lives with the tests, not in `sim` (a client of the public API only).
"""

from __future__ import annotations

import numpy as np

from tacit.learning.bandit import SlotModel
from tacit.sim.client import Trace, visit_candidates, visit_context
from tacit.sim.world import ContentSite


def run_bare_vw(site: ContentSite, decisions: int, vw_args: str, seed: int = 11) -> Trace:
    """Predict, sample from the PMF, learn at once: no service, no lag."""
    model = SlotModel(vw_args)
    rng = np.random.default_rng(seed)
    trace = Trace()
    for visit in site.visits(decisions):
        context = visit_context(visit)
        actions = [{**features, "id": item_id} for item_id, features in visit_candidates(visit)]
        pmf = np.asarray(model.predict(context, actions).probabilities)
        chosen = int(rng.choice(len(pmf), p=pmf / pmf.sum()))
        probability = visit.click_probabilities[chosen]
        clicked = site.click(probability)
        model.learn(context, actions, chosen, 1.0 if clicked else 0.0, float(pmf[chosen]))
        trace.chosen.append(probability)
        trace.optimal.append(visit.optimal_probability)
        trace.random.append(visit.random_probability)
        trace.clicks.append(int(clicked))
    model.close()
    return trace
