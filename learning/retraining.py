"""Retraining that runs itself: drift and age checks, a candidate, a fair comparison, promotion.

On every tick (``interval_seconds``) the scheduler checks each task that has an
active version:

1. **drift** — PSI of the behaviour features and of the predictions, the active
   version's training window vs the subjects active in the last ``recent``
   (``tacit.learning.evaluation.model_drift``, the same figures as `tacit drift`);
2. **age** — how long ago the active version was registered (and whether an erasure
   marked it: trigger ``erasure``);
3. nothing reached its limit → the run ends ``fresh``; otherwise
4. **train** — a candidate on the fresh data: snapshots of the last
   ``training_span`` before the holdout, registered *inactive*;
5. **validate** — the active version and the candidate score the same fresh
   holdout (snapshots newer than every candidate training row, labelled up to
   the newest stored event);
6. **promote** when ``candidate <= active * (1 + tolerance)`` (RMSE, lower is
   better), else **refuse**: the candidate stays registered and inactive.

Every step is appended to the run's ``retraining_runs`` row and committed when
it ends, so a run is visible (and a crash leaves it ``running``) while it goes.
The scheduler runs in the learner process only (worker 0), so one deployment
has one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, update

from tacit.learning.engagement import (
    ENGAGEMENT_TASK,
    EngagementBundle,
    EngagementData,
    EngagementError,
    drift_reference,
    engagement_rows,
    load_engagement,
    register_engagement,
    regression_metrics,
    train_engagement,
)
from tacit.learning.evaluation import model_drift
from tacit.learning.profiles import as_utc, iter_histories
from tacit.learning.registry import ModelIntegrityError, lock_task, needs_retraining
from tacit.learning.registry_models import active_record
from tacit.store.db import Database, StorageUnavailable, newest_first_page
from tacit.store.schema import ModelVersion, RetrainingRun

__all__ = [
    "RETRAINABLE_TASKS",
    "RetrainPolicy",
    "Retrainer",
    "RunRecord",
    "list_runs",
]

logger = logging.getLogger("tacit.learning")

RETRAINABLE_TASKS = (ENGAGEMENT_TASK,)
"""Tasks the scheduler can retrain and validate (the metric is RMSE, lower is better)."""


@dataclass(frozen=True)
class RetrainPolicy:
    """When to retrain, on what data, and how much worse a candidate may be and still be promoted."""

    max_age: timedelta | None = timedelta(days=7)
    """Retrain an active version older than this; None: age never triggers."""
    psi_threshold: float = 0.2
    recent: timedelta = timedelta(days=7)
    """The drift check's current window."""
    tolerance: float = 0.02
    """Relative: a candidate up to 2 % worse than the active version on the holdout is still promoted."""
    training_span: timedelta = timedelta(days=56)
    """The candidate learns from snapshots of this span before the holdout: fresh data only."""
    holdout_span: timedelta = timedelta(days=7)
    """Snapshots of this span (the newest labelled ones) are the holdout."""
    label_window: timedelta = timedelta(days=7)
    snapshot_every: timedelta = timedelta(days=2)
    seed: int = 0
    min_rows: int = 60


@dataclass(frozen=True)
class RunRecord:
    """A `retraining_runs` row as plain data."""

    id: int
    task: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    triggers: tuple[str, ...]
    active_version: str | None
    candidate_version: str | None
    metric: str
    active_score: float | None
    candidate_score: float | None
    tolerance: float
    holdout_rows: int
    steps: tuple[Mapping[str, Any], ...] = field(default=())


def _record(row: RetrainingRun) -> RunRecord:
    return RunRecord(
        id=row.id,
        task=row.task,
        started_at=as_utc(row.started_at),
        finished_at=as_utc(row.finished_at) if row.finished_at is not None else None,
        outcome=row.outcome,
        triggers=tuple(row.triggers or ()),
        active_version=row.active_version,
        candidate_version=row.candidate_version,
        metric=row.metric,
        active_score=row.active_score,
        candidate_score=row.candidate_score,
        tolerance=row.tolerance,
        holdout_rows=row.holdout_rows,
        steps=tuple(row.steps or ()),
    )


def list_runs(
    db: Database, task: str | None, page_size: int, after_id: int | None
) -> tuple[list[RunRecord], int | None]:
    """One page of runs, newest first; the cursor of the next page or None."""
    criteria = [RetrainingRun.task == task] if task else []
    return newest_first_page(db, RetrainingRun, _record, page_size, after_id, *criteria)


def _finite(figures: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in figures.items() if v is not None and math.isfinite(float(v))}


class _Run:
    """Writes one run's row step by step (each step its own committed transaction)."""

    def __init__(self, db: Database, task: str, active_version: str, tolerance: float) -> None:
        self.db = db
        with db.transaction() as session:
            row = RetrainingRun(
                task=task,
                started_at=datetime.now(UTC),
                outcome="running",
                triggers=[],
                active_version=active_version,
                metric="rmse",
                tolerance=tolerance,
                holdout_rows=0,
                steps=[],
            )
            session.add(row)
            session.flush()
            self.id = row.id

    def step(self, name: str, figures: Mapping[str, float], note: str = "", **columns: Any) -> None:
        entry = {"name": name, "at": datetime.now(UTC).isoformat(), "figures": _finite(figures), "note": note}
        with self.db.transaction() as session:
            row = session.get(RetrainingRun, self.id)
            assert row is not None
            row.steps = [*(row.steps or []), entry]  # a new list: JSON columns track assignment
            for name_, value in columns.items():
                setattr(row, name_, value)

    def finish(self, outcome: str, **columns: Any) -> RunRecord:
        with self.db.transaction() as session:
            row = session.get(RetrainingRun, self.id)
            assert row is not None
            row.outcome = outcome
            row.finished_at = datetime.now(UTC)
            for name, value in columns.items():
                setattr(row, name, value)
            session.flush()
            return _record(row)


def _split(data: EngagementData, cutoff: datetime) -> tuple[EngagementData, EngagementData]:
    """Rows at or before ``cutoff`` (training) and after it (holdout)."""
    before = [i for i, t in enumerate(data.times) if t <= cutoff]
    after = [i for i, t in enumerate(data.times) if t > cutoff]

    def part(index: list[int]) -> EngagementData:
        return EngagementData(
            [data.rows[i] for i in index],
            data.labels[index] if index else np.empty(0),
            [data.times[i] for i in index],
            [data.subjects[i] for i in index],
            data.events,
            data.observed_until,
        )

    return part(before), part(after)


class Retrainer:
    """The scheduler: ``run_once`` checks every task; ``start`` runs it every ``interval_seconds``."""

    def __init__(
        self,
        db: Database,
        models_dir: Path,
        policy: RetrainPolicy,
        tasks: tuple[str, ...] = RETRAINABLE_TASKS,
        interval_seconds: float = 3600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        unknown = sorted(set(tasks) - set(RETRAINABLE_TASKS))
        if unknown:
            raise ValueError(f"cannot retrain {unknown}; retrainable: {list(RETRAINABLE_TASKS)}")
        self.db = db
        self.models_dir = models_dir
        self.policy = policy
        self.tasks = tasks
        self.interval_seconds = interval_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list[RunRecord]:
        """Checks every task with an active version; one run each."""
        return [run for task in self.tasks if (run := self.check(task)) is not None]

    def check(self, task: str) -> RunRecord | None:
        """One run for ``task``; None when it has no active version (nothing to retrain)."""
        active = active_record(self.db, task)
        if active is None:
            return None
        run = _Run(self.db, task, active.version, self.policy.tolerance)
        try:
            bundle = load_engagement(active)
            return self._check(
                task, run, active.version, active.created_at, bundle, needs_retraining(active.details)
            )
        except (StorageUnavailable, KeyboardInterrupt):
            raise
        except (EngagementError, ModelIntegrityError) as error:
            run.step("fail", {}, str(error))
            return run.finish("failed")
        except Exception:
            logger.exception("retraining run failed", extra={"task": task})
            run.step("fail", {}, "unexpected error; see the server log")
            return run.finish("failed")

    def _check(
        self, task: str, run: _Run, version: str, created_at: datetime, bundle: EngagementBundle, erased: bool
    ) -> RunRecord:
        policy = self.policy
        model = bundle.model
        summary = model_drift(
            self.db, task, version, bundle.drift_reference, model.training_window,
            lambda rows: model.predict(rows), policy.recent, policy.psi_threshold,
        )  # fmt: skip
        report = summary.report
        psi = [v for v in report.feature_psi.values() if math.isfinite(v)]
        triggers: list[str] = []
        if report.stale:
            triggers.append("drift")
        run.step(
            "drift",
            {
                "max_feature_psi": max(psi, default=math.nan),
                "prediction_psi": report.prediction_psi if report.prediction_psi is not None else math.nan,
                "threshold": policy.psi_threshold,
                "current_rows": report.n_current,
                "reference_rows": report.n_reference,
            },
            ("drifted: " + (", ".join(report.drifted_features) or "predictions"))
            if report.stale
            else "no drift",
        )
        age = (self._clock() - created_at).total_seconds()
        max_age = policy.max_age.total_seconds() if policy.max_age is not None else math.inf
        if age > max_age:
            triggers.append("age")
        run.step("age", {"age_seconds": age, "max_age_seconds": max_age, "erasure_marked": float(erased)},
                 "older than the maximum age" if age > max_age else "young enough")  # fmt: skip
        if erased:
            triggers.append("erasure")
        if not triggers:
            return run.finish("fresh")

        histories = dict(iter_histories(self.db))
        newest = max(events[-1].occurred_at for events in histories.values())
        cutoff = newest - policy.label_window - policy.holdout_span
        data = engagement_rows(
            histories, policy.snapshot_every, policy.label_window, newest,
            seed=policy.seed, since=cutoff - policy.training_span,
        )  # fmt: skip
        del histories
        training, holdout = _split(data, cutoff)
        candidate_model = train_engagement(
            training.rows,
            training.labels,
            training.times,
            random_state=policy.seed,
            min_rows=policy.min_rows,
            refit_on_all=True,  # the holdout is the test: the candidate learns from every fresh row
        )
        candidate = EngagementBundle(
            candidate_model, drift_reference(candidate_model, training.rows, training.times)
        )
        record = register_engagement(
            self.db,
            candidate,
            self.models_dir,
            {
                "retraining_run": run.id,
                "holdout_after": cutoff.isoformat(),
                "rows": int(training.labels.size),
            },
            activate=False,
        )
        run.step(
            "train",
            {
                "rows": training.labels.size,
                "candidate_test_rmse": candidate_model.metrics.get("test_rmse", math.nan),
                "candidate_test_baseline_rmse": candidate_model.metrics.get("test_baseline_rmse", math.nan),
            },
            f"candidate {record.version} ({candidate_model.candidate}) registered inactive",
            triggers=triggers,
            candidate_version=record.version,
        )
        if holdout.labels.size < 10:
            run.step(
                "fail", {"holdout_rows": holdout.labels.size}, "fewer than 10 labelled holdout snapshots"
            )
            return run.finish("failed", holdout_rows=int(holdout.labels.size))
        active_scores = regression_metrics(holdout.labels, model.predict(holdout.rows))
        candidate_scores = regression_metrics(holdout.labels, candidate_model.predict(holdout.rows))
        overlap = model.training_window[1] > cutoff.timestamp()
        run.step(
            "validate",
            {
                "holdout_rows": holdout.labels.size,
                "active_rmse": active_scores["rmse"],
                "candidate_rmse": candidate_scores["rmse"],
                "active_mae": active_scores["mae"],
                "candidate_mae": candidate_scores["mae"],
            },
            "the active version trained on part of the holdout window"
            if overlap
            else "holdout unseen by both",
            active_score=active_scores["rmse"],
            candidate_score=candidate_scores["rmse"],
            holdout_rows=int(holdout.labels.size),
        )
        limit = active_scores["rmse"] * (1 + policy.tolerance)
        if candidate_scores["rmse"] > limit:
            run.step("refuse", {"limit": limit},
                     f"candidate {record.version} is worse than {version} beyond the tolerance")  # fmt: skip
            return run.finish("refused")
        if not self._promote(task, version, record.version):
            run.step("refuse", {}, f"the active version changed from {version} during the run")
            return run.finish("refused")
        run.step("promote", {"limit": limit}, f"{record.version} replaces {version}")
        logger.info("model promoted by retraining", extra={"task": task, "version": record.version})
        return run.finish("promoted")

    def _promote(self, task: str, expected_active: str, version: str) -> bool:
        """Makes ``version`` the only active one, if ``expected_active`` still is active."""
        with self.db.transaction() as session:
            lock_task(session, task)
            current = active_record_in(session, task)
            if current != expected_active:
                return False
            session.execute(update(ModelVersion).where(ModelVersion.task == task).values(active=False))
            session.execute(
                update(ModelVersion)
                .where(ModelVersion.task == task, ModelVersion.version == version)
                .values(active=True)
            )
        return True

    def wake(self) -> None:
        """Runs the next check now instead of at the end of the interval (operators and tests)."""
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
            except StorageUnavailable:
                pass  # the outage is logged once by Database; the next tick retries
            except Exception:
                logger.exception("retraining check failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tacit-retraining", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()


def active_record_in(session: Any, task: str) -> str | None:
    """The active version of ``task`` as seen inside ``session``."""
    row = session.execute(
        select(ModelVersion.version)
        .where(ModelVersion.task == task, ModelVersion.active.is_(True))
        .order_by(ModelVersion.id.desc())
        .limit(1)
    ).first()
    return row[0] if row is not None else None
