"""The assignment snapshot `Rank` consults: which experiment and arm serve a subject on a slot."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select

from tacit.experiments.assignment import BUCKETS, assign, layer_bucket, traffic_buckets
from tacit.experiments.service import records
from tacit.experiments.service.definitions import HOLDS_SLOT, ArmAssignment, ExperimentState
from tacit.store.db import Database
from tacit.store.schema import ExperimentRecord

logger = logging.getLogger("tacit.experiments")


@dataclass(frozen=True)
class Route:
    """What the assigner needs for one slot, precomputed."""

    experiment_id: str
    state: ExperimentState
    salt: str
    arms: tuple[tuple[str, float], ...]
    policies: Mapping[str, str]
    control: str
    treatment: str
    exposure_percent: float
    traffic: tuple[int, int]  # layer buckets [low, high)


class AssignmentSnapshot:
    """The experiments that route each slot's traffic, held in memory so Rank never waits for the
    database; reloaded at most every `refresh_seconds`, and at once after a change."""

    def __init__(self, db: Database, refresh_seconds: float, refresh_on_read: bool = True) -> None:
        self.db = db
        self.refresh_seconds = refresh_seconds
        # False when a background thread calls refresh_routes: Rank then never waits for the database.
        self.refresh_on_read = refresh_on_read
        self._routes: dict[str, tuple[Route, ...]] = {}
        self._routes_loaded = -float("inf")
        self._refresh_lock = threading.Lock()

    def assign(self, slot: str, subject_pseudonym: str) -> ArmAssignment | None:
        """The arm serving this subject on `slot`, from an in-memory snapshot (no DB per Rank).

        The subject's layer bucket on the slot picks at most one of the slot's experiments
        (their traffic ranges are disjoint); that experiment's exposure and arm logic follow.
        """
        routes = self._current().get(slot)
        if not routes:
            return None
        route = self._route_for(routes, slot, subject_pseudonym)
        if route is None:
            return None
        if route.state is ExperimentState.RUNNING:
            arm = assign(subject_pseudonym, route.salt, route.arms, route.exposure_percent)
            if arm is None:
                return None
            return ArmAssignment(route.experiment_id, arm, route.policies[arm])
        if route.state is ExperimentState.ROLLED_BACK:
            return ArmAssignment(route.experiment_id, route.control, route.policies[route.control])
        if route.state is ExperimentState.SHIPPED:
            return ArmAssignment(route.experiment_id, route.treatment, route.policies[route.treatment])
        return None  # paused: nobody is exposed


    @staticmethod
    def _route_for(routes: tuple[Route, ...], slot: str, subject_pseudonym: str) -> Route | None:
        if len(routes) == 1 and routes[0].traffic == (0, BUCKETS):
            return routes[0]  # the whole slot (the common case): no layer hash needed
        layer = layer_bucket(subject_pseudonym, slot)
        # Ranges of experiments holding a slot are disjoint; should two ever overlap (a race
        # between two starts), the earliest-updated one wins, deterministically.
        return next((r for r in routes if r.traffic[0] <= layer < r.traffic[1]), None)


    def refresh(self) -> None:
        """Reloads the snapshot of experiments that route traffic."""
        with self.db.transaction() as session:
            rows = (
                session.execute(
                    select(ExperimentRecord)
                    .where(ExperimentRecord.state.in_([s.value for s in HOLDS_SLOT]))
                    .order_by(ExperimentRecord.updated_at)
                )
                .scalars()
                .all()
            )
            routes: dict[str, tuple[Route, ...]] = {}
            for row in rows:
                experiment = records.to_domain(row)
                definition = experiment.definition
                control = definition.control
                routes[row.slot] = routes.get(row.slot, ()) + (
                    Route(
                        experiment_id=row.experiment_id,
                        state=experiment.state,
                        salt=row.salt,
                        arms=tuple((a.name, a.weight) for a in definition.arms),
                        policies={a.name: a.policy for a in definition.arms},
                        control=control,
                        treatment=next(a.name for a in definition.arms if a.name != control),
                        exposure_percent=experiment.exposure_percent,
                        traffic=traffic_buckets(*definition.traffic),
                    ),
                )
        self._routes = routes
        self._routes_loaded = time.monotonic()


    def _current(self) -> Mapping[str, tuple[Route, ...]]:
        if not self.refresh_on_read:
            return self._routes
        if time.monotonic() - self._routes_loaded > self.refresh_seconds and self._refresh_lock.acquire(
            blocking=self._routes_loaded == -float("inf")
        ):
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - Rank keeps the last snapshot
                logger.exception("experiment routes refresh failed")
                self._routes_loaded = time.monotonic()
            finally:
                self._refresh_lock.release()
        return self._routes
