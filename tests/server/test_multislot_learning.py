"""Multi-slot ranking learns each slot's optimum given the others, with honest propensities.

A 20,000-page run of the page simulator (hero, sidebar, footer) at library level: the
RankMultiSlot converter, `PageRanker`, `DecisionEngine` (candidate cache, decision log,
SQLite), the engine's reward join, the `Learner` with real VW and `ServingModels` reloading
its checkpoints — everything the server runs except the gRPC transport, which
test_multislot_server.py covers. The clock is simulated (one page a second) so the
reward window is exact whatever the machine's load.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sqlalchemy import select

from tacit.server.app import Runtime
from tacit.server.converters.multislot import page_input
from tacit.server.multislot import PageRanker, slot_event_id
from tacit.sim.page import PAGE_SLOTS, PageSite, page_request
from tacit.store.schema import Decision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import server_settings  # noqa: E402

PAGES = 20_000
LAST = 2_000
LEARN_EVERY = 250
WINDOW_SECONDS = 2.0 * LEARN_EVERY  # simulated: one page a second


def propensity_test(
    probabilities: np.ndarray, chosen: np.ndarray, min_expected: float = 10.0
) -> tuple[float, int]:
    """Chi-square test that choices were drawn with the logged probabilities.

    Rows are decisions, columns items (0 where an item was not a candidate). Under the null
    every row is an independent multinomial draw, so the vector of observed minus expected
    counts has covariance sum_t (diag(p_t) - p_t p_t^T) and its Mahalanobis form is
    asymptotically chi-square with the covariance's rank as degrees of freedom (items with
    fewer than `min_expected` expected or unexpected choices are left out, so the normal
    approximation holds). Returns (statistic, degrees of freedom).
    """
    observed = np.bincount(chosen, minlength=probabilities.shape[1]).astype(float)
    expected = probabilities.sum(axis=0)
    keep = (expected >= min_expected) & (len(chosen) - expected >= min_expected)
    difference = (observed - expected)[keep]
    sub = probabilities[:, keep]
    covariance = np.diag(sub.sum(axis=0)) - sub.T @ sub
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    usable = eigenvalues > 1e-9 * eigenvalues.max()
    projected = eigenvectors[:, usable].T @ difference
    return float(np.sum(projected**2 / eigenvalues[usable])), int(usable.sum())


def test_propensity_test_is_pearsons_chi_square_when_the_probabilities_are_fixed() -> None:
    # With one probability vector for every row the Mahalanobis form is Pearson's X^2 (k-1 df).
    rng = np.random.default_rng(3)
    p = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    chosen = rng.choice(len(p), size=2_000, p=p)
    statistic, dof = propensity_test(np.tile(p, (len(chosen), 1)), chosen)
    pearson = stats.chisquare(np.bincount(chosen, minlength=len(p)), 2_000 * p)
    assert dof == len(p) - 1
    assert round(statistic, 6) == round(float(pearson.statistic), 6)
    # Draws from other probabilities are rejected.
    biased = rng.choice(len(p), size=2_000, p=[0.4, 0.25, 0.15, 0.1, 0.1])
    statistic, dof = propensity_test(np.tile(p, (len(biased), 1)), biased)
    assert stats.chi2.sf(statistic, dof) < 1e-6


@pytest.fixture
def page_runtime(tmp_path: Path) -> Iterator[Runtime]:
    # The run makes ~80,000 small commits; a tmpfs (no fsync) keeps it within the test budget.
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    with tempfile.TemporaryDirectory(dir=base) as data_dir:
        settings = server_settings(
            Path(data_dir),
            slots={slot: {"reward_window_seconds": WINDOW_SECONDS} for slot in PAGE_SLOTS},
        )
        runtime = Runtime.build(settings, seed=13)
        try:
            yield runtime
        finally:
            runtime.close()


def _logged(runtime: Runtime, slot: str) -> Sequence[Decision]:
    with runtime.db.transaction() as session:
        return session.execute(select(Decision).where(Decision.slot == slot)).scalars().all()


@pytest.mark.slow
def test_each_slot_learns_its_optimum_given_the_others_with_honest_propensities(
    page_runtime: Runtime,
) -> None:
    runtime = page_runtime
    assert runtime.learner is not None
    settings = runtime.settings
    slot_limits = {slot: settings.slot_limit(slot) for slot in settings.slots}
    ranker = PageRanker(runtime.engine)
    site = PageSite(seed=13)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    chosen_p: dict[str, list[float]] = defaultdict(list)
    optimum_p: dict[str, list[float]] = defaultdict(list)
    random_p: dict[str, list[float]] = defaultdict(list)
    clicks: list[tuple[str, datetime]] = []
    for step, page in enumerate(site.pages(PAGES)):
        now = start + timedelta(seconds=step)
        request = page_input(
            page_request(page, PAGE_SLOTS), settings.limits, slot_limits, cache=runtime.engine.candidates
        )
        result = ranker.rank(request, now)
        chosen = {slot: decision.chosen_id for slot, decision in result.decisions}
        assert [slot for slot, _ in result.decisions] == list(PAGE_SLOTS)
        assert len(set(chosen.values())) == len(PAGE_SLOTS), "an item was chosen by two slots"
        taken: set[str] = set()
        for slot, decision in result.decisions:
            # Each slot chose among exactly the candidates no earlier slot took; its
            # probabilities are conditional on that set.
            offered = {cid for cid, _ in decision.ranking}
            assert offered == set(page.candidate_ids) - taken
            assert sum(p for _, p in decision.ranking) == pytest.approx(1.0)
            left = [page.probability(slot, cid) for cid in offered]
            random_p[slot].append(float(np.mean(left)))
            taken.add(decision.chosen_id)
        optimum = page.optimum_given_others(chosen)
        for slot, item in chosen.items():
            probability = page.probability(slot, item)
            chosen_p[slot].append(probability)
            optimum_p[slot].append(optimum[slot])
            if site.click(probability):
                clicks.append((slot_event_id(result.event_id, slot), now))
        if step % LEARN_EVERY == LEARN_EVERY - 1:
            # The site reports the clicks of the last pages in one go (inside the window).
            runtime.decision_log.flush()
            for event_id, occurred_at in clicks:
                runtime.engine.reward(event_id, 1.0, occurred_at=occurred_at, now=now)
            clicks.clear()
            while runtime.learner.step(now):
                pass
            runtime.learner.checkpoint()
            runtime.models.refresh()

    print()
    for slot in PAGE_SLOTS:
        ctr = float(np.mean(chosen_p[slot][-LAST:]))
        best = float(np.mean(optimum_p[slot][-LAST:]))
        uniform = float(np.mean(random_p[slot][-LAST:]))
        print(
            f"{slot}: click rate {ctr:.4f} / optimum given the others {best:.4f} = {ctr / best:.3f}"
            f" (random {uniform:.4f} = {uniform / best:.3f})"
        )
        assert ctr >= 0.80 * best, slot
        assert ctr > uniform * 1.2, slot  # learned, not just lucky with a generous simulator

    # Logged propensities: the frequency of each logged choice matches its logged probability.
    runtime.decision_log.flush()
    buckets = 0
    for slot in PAGE_SLOTS:
        rows = _logged(runtime, slot)
        assert len(rows) == PAGES
        items = sorted({cid for row in rows for cid in row.candidate_ids})
        column = {cid: i for i, cid in enumerate(items)}
        by_device: dict[str, list[Decision]] = defaultdict(list)
        for row in rows:
            by_device[str(row.context["device"])].append(row)
        for device, bucket in sorted(by_device.items()):
            probabilities = np.zeros((len(bucket), len(items)))
            chosen_column = np.zeros(len(bucket), dtype=int)
            for r, row in enumerate(bucket):
                for cid, p in zip(row.candidate_ids, row.probabilities, strict=True):
                    probabilities[r, column[cid]] = p
                chosen_column[r] = column[row.candidate_ids[row.chosen_index]]
            statistic, dof = propensity_test(probabilities, chosen_column)
            p_value = float(stats.chi2.sf(statistic, dof))
            print(
                f"propensities {slot}/{device}: n={len(bucket)} chi2={statistic:.1f} df={dof} p={p_value:.3f}"
            )
            assert dof >= 3
            assert p_value > 0.001 / 9, (slot, device)  # Bonferroni over the 9 buckets
            # The test has power: probabilities flattened towards uniform are rejected.
            tempered = np.sqrt(probabilities)
            tempered /= tempered.sum(axis=1, keepdims=True)
            wrong, wrong_dof = propensity_test(tempered, chosen_column)
            assert stats.chi2.sf(wrong, wrong_dof) < 1e-6, (slot, device)
            buckets += 1
    assert buckets == 9
