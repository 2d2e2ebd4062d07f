"""Experiments as stored resources: create, read, list, start, advance, pause, roll back,
conclude; the assigner that `Rank` consults; periodic evaluation by the rules.

States: draft → running (stage k) ⇄ paused; running/paused → rolled_back (all traffic to
control) | shipped (all traffic to treatment) ; anything → stopped (the slot's default
policy again). Experiments that hold a slot (running, paused, rolled back or shipped)
must declare disjoint traffic ranges on it (layers: see `assignment`); the default
range is the whole slot, so by default one experiment holds a slot at a time. Every
change is stored in `experiment_changes` with the caller's role, the time, the reason
and, once there is data, the report that justified it (DESIGN invariant 5: nothing
reaches 100% without a passing report).

`definitions` says what an experiment is, `lifecycle` holds `ExperimentService` (the state
changes), `evaluation` the reports, `snapshot` the Rank-time assignment and `records` the
stored form; the public names are importable from here.
"""

from __future__ import annotations

from tacit.experiments.service.definitions import (
    POLICIES,
    SYSTEM_ACTOR,
    ArmAssignment,
    ArmConfig,
    Challenger,
    Experiment,
    ExperimentDefinition,
    ExperimentState,
)
from tacit.experiments.service.lifecycle import ExperimentService

__all__ = [
    "ArmAssignment",
    "ArmConfig",
    "Challenger",
    "Experiment",
    "ExperimentDefinition",
    "ExperimentService",
    "ExperimentState",
    "POLICIES",
    "SYSTEM_ACTOR",
]
