"""Learning through the service: the simulator's optimum is known, and a bare VW workspace is the yardstick.

One 20,000-decision run through a real server (SQLite default) answers both
questions of the spine issue; the figures are printed for the closing note.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tacit.server.config import DEFAULT_VW_ARGS
from tacit.sim.client import drive
from tacit.sim.world import ContentSite

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sim_bare_vw import run_bare_vw  # noqa: E402

DECISIONS = 20_000
LAST = 5_000


@pytest.mark.slow
def test_bandit_reaches_the_optimum_and_loses_nothing_to_the_service(start_server) -> None:  # type: ignore[no-untyped-def]
    handle = start_server(seed=5)
    service = drive(handle.channel, handle.token(), ContentSite(seed=21), DECISIONS)
    bare = run_bare_vw(ContentSite(seed=21), DECISIONS, DEFAULT_VW_ARGS, seed=5)
    summary = service.summary(LAST)
    bare_summary = bare.summary(LAST)
    print(f"\nservice: {summary}\nbare VW: {bare_summary}")
    assert summary["vs_optimal"] >= 0.80
    assert summary["vs_random"] >= 1.5
    assert summary["progressive_ctr"] >= 0.97 * bare_summary["progressive_ctr"]
