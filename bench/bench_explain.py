"""ExplainModel's and ExplainDecision's work, against VW scoring the same decisions.

    .venv/bin/python bench/bench_explain.py [--decisions 10000] [--candidates 20] [--sample 1000]

Trains a slot model on the simulator (one online pass, the policy's own sampled choices), then
measures in the same run, on the newest ``--sample`` decisions:
  * the baseline: the model's probabilities for every one of them (SlotModel.predict);
  * explain_model over them (VW's --invert_hash naming pass plus the contribution sums);
  * explain_decision for each of the newest 20 decisions (mean);
ratio = explain_model / baseline.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from tacit.learning.bandit import SlotModel
from tacit.learning.explain import Row, explain_decision, explain_model
from tacit.sim.client import visit_candidates, visit_context
from tacit.sim.world import ContentSite

VW_ARGS = "--cb_explore_adf --squarecb -q UA"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--sample", type=int, default=1_000)
    args = parser.parse_args()

    site = ContentSite(seed=3, n_candidates=args.candidates)
    model = SlotModel(VW_ARGS, random_seed=1)
    rng = random.Random(0)
    rows = []
    for visit in site.visits(args.decisions):
        context = visit_context(visit)
        actions = [features for _, features in visit_candidates(visit)]
        pmf = model.predict(context, actions).probabilities
        chosen = rng.choices(range(len(actions)), weights=pmf)[0]
        model.learn(
            context, actions, chosen, float(site.click(visit.click_probabilities[chosen])), pmf[chosen]
        )
        rows.append(Row(context, actions, chosen))
    sample = rows[-args.sample :]
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "model.vw"
        model.save(path)
        start = time.perf_counter()
        for row in sample:
            model.predict(row.context, row.actions)
        baseline = time.perf_counter() - start
        start = time.perf_counter()
        explanation = explain_model(VW_ARGS, path, sample)
        explained = time.perf_counter() - start
        start = time.perf_counter()
        for row in rows[-20:]:
            explain_decision(VW_ARGS, path, row)
        per_decision = (time.perf_counter() - start) / 20
        size = path.stat().st_size
    model.close()
    print(f"model file: {size} bytes; sample: {len(sample)} decisions x {args.candidates} candidates")
    print(f"baseline (predict every decision of the sample): {baseline:.3f} s")
    print(f"explain_model over the sample: {explained:.3f} s ({explanation.rows} rows)")
    print(f"explain_decision (mean of 20): {per_decision * 1000:.1f} ms")
    print(f"top interaction: {explanation.interactions[0].name if explanation.interactions else '-'}")
    print(f"ratio explain_model / baseline: {explained / baseline:.2f}")


if __name__ == "__main__":
    main()
