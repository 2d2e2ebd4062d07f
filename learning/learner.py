"""The learner: reads decisions whose reward is final, in order, and updates VW.

A decision moves WAITING -> IN_MODEL when the learner consumes it and
IN_MODEL -> CHECKPOINTED in the transaction that registers the checkpoint
containing it. At start the learner returns IN_MODEL decisions to WAITING, so
after a crash it replays exactly what the newest checkpoint has not seen.
There is one learner per deployment.

After an erasure the slot's model still holds the erased decisions. The learner
rebuilds it — a fresh workspace replays the remaining learned decisions of the
slot in the order the learner reads them — and registers the result as a new
version, at once (``rebuild_mode="immediate"``) or at the nightly hour. It knows a
rebuild is due from the ``rebuild_pending`` marker an erasure leaves on the
registry, and from its own count: fewer unsaved decisions in the log than it
learned in memory means some were erased before they reached a checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.orm import Session

from tacit.learning.bandit import SlotModel
from tacit.learning.registry import (
    REBUILD_PENDING,
    bandit_task,
    expired_checkpoints,
    load_slot_model,
    lock_task,
    newest_checkpoint,
    newest_row,
    pending_erasures,
    register_checkpoint,
)
from tacit.store.candidate_sets import decision_candidates
from tacit.store.db import Database, StorageUnavailable
from tacit.store.schema import LEARN_CHECKPOINTED, LEARN_IN_MODEL, LEARN_WAITING, Decision, ModelVersion

logger = logging.getLogger("tacit.learning")


@dataclass(frozen=True)
class SlotProgress:
    """How far behind the traffic a slot's model is (what monitoring reads)."""

    newest_learned_at: datetime | None  # ranking time of the newest decision learned since start
    backlog: int  # decisions whose reward is final but that are not learned yet


@dataclass(frozen=True)
class SlotLearning:
    """What the learner needs to know about a slot."""

    vw_args: str
    default_reward: float


RebuildMode = Literal["immediate", "nightly"]


@dataclass(frozen=True)
class Rebuild:
    """One slot rebuilt after an erasure: what replaced what, with how many examples."""

    slot: str
    task: str
    old_version: str | None
    new_version: str
    examples_before: int
    examples_after: int
    files_deleted: int


RebuildHook = Callable[[Session, Rebuild], None]
"""Called inside the transaction that registers a rebuild (the server appends the audit record)."""


def next_nightly(now: datetime, hour_utc: int) -> datetime:
    """The next instant at ``hour_utc``:00 UTC strictly after ``now``."""
    moment = now.astimezone(UTC).replace(hour=hour_utc, minute=0, second=0, microsecond=0)
    return moment if moment > now else moment + timedelta(days=1)


class Learner:
    """Consumes learnable decisions for every slot and checkpoints the models."""

    def __init__(
        self,
        db: Database,
        slots: dict[str, SlotLearning],
        models_dir: Path,
        checkpoint_interval_seconds: float = 1.0,
        poll_interval_seconds: float = 0.05,
        keep_checkpoints: int = 5,
        checkpoint_grace_seconds: float = 60.0,
        batch_size: int = 500,
        random_seed: int | None = None,
        rebuild_mode: RebuildMode = "immediate",
        rebuild_hour_utc: int = 3,
        on_rebuilt: RebuildHook | None = None,
    ):
        self.db = db
        self.slots = slots
        self.models_dir = models_dir
        self.checkpoint_interval_seconds = checkpoint_interval_seconds
        self.poll_interval_seconds = poll_interval_seconds
        self.keep_checkpoints = keep_checkpoints
        self.random_seed = random_seed
        self.checkpoint_grace = timedelta(seconds=checkpoint_grace_seconds)
        self.batch_size = batch_size
        self.rebuild_mode = rebuild_mode
        self.rebuild_hour_utc = rebuild_hour_utc
        self.on_rebuilt = on_rebuilt
        self.next_rebuild_at = next_nightly(datetime.now(UTC), rebuild_hour_utc)
        self.rebuilds: deque[Rebuild] = deque(maxlen=100)  # the latest, for tests and operators
        # Examples each model held at its last checkpoint: the rest are IN_MODEL rows in the log.
        self._saved_examples: dict[str, int] = {}
        self._models: dict[str, SlotModel] = {}
        self._dirty: set[str] = set()
        self._newest_learned: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        with db.transaction() as session:
            session.execute(
                update(Decision)
                .where(Decision.learn_state == LEARN_IN_MODEL)
                .values(learn_state=LEARN_WAITING)
            )
        for slot, config in slots.items():
            with db.transaction() as session:
                checkpoint = newest_checkpoint(session, bandit_task(slot))
            self._models[slot] = load_slot_model(config.vw_args, checkpoint, random_seed)
            if checkpoint is not None:
                self._models[slot].examples_learned = checkpoint.examples
            self._saved_examples[slot] = self._models[slot].examples_learned

    def step(self, now: datetime | None = None) -> int:
        """Learns from the next batch of ready decisions; returns how many."""
        now = now or datetime.now(UTC)
        query = (
            select(Decision)
            .where(
                Decision.learn_state == LEARN_WAITING,
                Decision.learn_after.is_not(None),
                Decision.learn_after <= now,
            )
            .order_by(Decision.learn_after, Decision.event_id)
            .limit(self.batch_size)
        )
        with self.db.transaction() as session:
            rows = session.execute(query).scalars().all()
            candidates = decision_candidates(session, rows)
            session.execute(
                update(Decision)
                .where(Decision.event_id.in_([row.event_id for row in rows]))
                .values(learn_state=LEARN_IN_MODEL)
            )
        for row, actions in zip(rows, candidates, strict=True):
            config = self.slots.get(row.slot)
            model = self._models.get(row.slot)
            if config is None or model is None:
                continue
            reward = row.reward if row.reward is not None else config.default_reward
            model.learn(
                row.context,
                actions,
                row.chosen_index,
                reward,
                row.probabilities[row.chosen_index],
            )
            self._dirty.add(row.slot)
            created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
            newest = self._newest_learned.get(row.slot)
            if newest is None or created > newest:
                self._newest_learned[row.slot] = created
        return len(rows)

    def progress(self, now: datetime | None = None) -> dict[str, SlotProgress]:
        """Per slot: the newest decision learned and how many ready decisions wait to be."""
        now = now or datetime.now(UTC)
        with self.db.transaction() as session:
            rows = session.execute(
                select(Decision.slot, func.count())
                .where(
                    Decision.learn_state == LEARN_WAITING,
                    Decision.learn_after.is_not(None),
                    Decision.learn_after <= now,
                )
                .group_by(Decision.slot)
            ).all()
        waiting = {slot: int(count) for slot, count in rows}
        newest = dict(self._newest_learned)
        return {slot: SlotProgress(newest.get(slot), waiting.get(slot, 0)) for slot in self.slots}

    def _erased_before_checkpoint(self, slot: str) -> int:
        """How many decisions learned since the last checkpoint were erased from the log."""
        learned = self._models[slot].examples_learned - self._saved_examples.get(slot, 0)
        with self.db.transaction() as session:
            in_log = session.execute(
                select(func.count())
                .select_from(Decision)
                .where(Decision.learn_state == LEARN_IN_MODEL, Decision.slot == slot)
            ).scalar_one()
        return max(0, learned - int(in_log))

    def checkpoint(self) -> list[str]:
        """Registers a new version for every slot that learned something; returns those slots.

        Retention: versions beyond `keep_checkpoints` and older than the grace period lose
        their registry row in the same transaction and their file after it commits.

        A slot whose unsaved decisions were partly erased is rebuilt instead (immediate
        mode), or checkpointed with the ``rebuild_pending`` marker (nightly mode).
        """
        done = []
        for slot in sorted(self._dirty):
            erased = self._erased_before_checkpoint(slot)
            if erased and self.rebuild_mode == "immediate":
                self.rebuild(slot)
                done.append(slot)
                continue
            with self.db.transaction() as session:
                register_checkpoint(
                    session,
                    self._models[slot],
                    bandit_task(slot),
                    self.models_dir,
                    newly_erased=1 if erased else 0,
                )
                session.execute(
                    update(Decision)
                    .where(Decision.slot == slot, Decision.learn_state == LEARN_IN_MODEL)
                    .values(learn_state=LEARN_CHECKPOINTED)
                )
                expired = expired_checkpoints(
                    session, bandit_task(slot), self.keep_checkpoints, self.checkpoint_grace
                )
            for path in expired:
                path.unlink(missing_ok=True)
            self._saved_examples[slot] = self._models[slot].examples_learned
            done.append(slot)
        self._dirty.clear()
        return done

    def pending_rebuilds(self) -> list[str]:
        """Slots whose newest checkpoint is marked as holding an erased subject's decisions."""
        pending = []
        with self.db.transaction() as session:
            for slot in sorted(self._models):
                row = newest_row(session, bandit_task(slot))
                if row is not None and pending_erasures(row.details) > 0:
                    pending.append(slot)
        return pending

    def rebuild_due(self, now: datetime | None = None) -> list[Rebuild]:
        """Rebuilds the pending slots when the mode says so: always (immediate) or after the nightly hour."""
        now = now or datetime.now(UTC)
        if self.rebuild_mode == "nightly":
            if now < self.next_rebuild_at:
                return []
            self.next_rebuild_at = next_nightly(now, self.rebuild_hour_utc)
        return [self.rebuild(slot) for slot in self.pending_rebuilds()]

    def _replay(self, slot: str, model: SlotModel) -> None:
        """Feeds the slot's remaining learned decisions to `model`, in the learner's order, page by page."""
        config = self.slots[slot]
        after: tuple[datetime, str] | None = None
        while True:
            query = (
                select(Decision)
                .where(
                    Decision.slot == slot,
                    Decision.learn_state.in_((LEARN_IN_MODEL, LEARN_CHECKPOINTED)),
                )
                .order_by(Decision.learn_after, Decision.event_id)
                .limit(max(self.batch_size, 1_000))
            )
            if after is not None:
                query = query.where(tuple_(Decision.learn_after, Decision.event_id) > after)
            with self.db.transaction() as session:
                rows = session.execute(query).scalars().all()
                candidates = decision_candidates(session, rows)
            for row, actions in zip(rows, candidates, strict=True):
                reward = row.reward if row.reward is not None else config.default_reward
                model.learn(
                    row.context,
                    actions,
                    row.chosen_index,
                    reward,
                    row.probabilities[row.chosen_index],
                )
            if not rows:
                return
            last = rows[-1]
            assert last.learn_after is not None
            after = (last.learn_after, last.event_id)

    def rebuild(self, slot: str) -> Rebuild:
        """Replaces the slot's model by one trained only on the decisions still in the log.

        A fresh workspace with the slot's arguments replays the remaining learned
        decisions; the result is registered as a new version (audited through
        ``on_rebuilt``), every version marked ``rebuild_pending`` is retired and its
        file deleted after the commit. Serving processes swap at their next reload.
        """
        config = self.slots[slot]
        task = bandit_task(slot)
        with self.db.transaction() as session:
            old = newest_row(session, task)
            old_version = old.version if old is not None else None
            examples_before = old.examples if old is not None else 0
            erasures_seen = pending_erasures(old.details) if old is not None else 0
        examples_before = max(examples_before, self._models[slot].examples_learned)
        fresh = SlotModel(config.vw_args, model_version="rebuilding", random_seed=self.random_seed)
        try:
            self._replay(slot, fresh)
            with self.db.transaction() as session:
                lock_task(session, task)
                current = newest_row(session, task)
                # An erasure that arrived during the replay may not be in it: keep it pending.
                still_held = max(
                    0, (pending_erasures(current.details) if current is not None else 0) - erasures_seen
                )
                checkpoint = register_checkpoint(
                    session, fresh, task, self.models_dir, erasures_held=still_held
                )
                tainted = session.execute(
                    select(ModelVersion).where(
                        ModelVersion.task == task,
                        ModelVersion.version != checkpoint.version,
                    )
                ).scalars()
                retired: list[Path] = []
                for row in tainted:
                    if REBUILD_PENDING not in (row.details or {}):
                        continue
                    details = {k: v for k, v in (row.details or {}).items() if k != REBUILD_PENDING}
                    row.details = {**details, "rebuilt_as": checkpoint.version}
                    row.active = False
                    retired.append(Path(row.path))
                session.execute(
                    update(Decision)
                    .where(Decision.slot == slot, Decision.learn_state == LEARN_IN_MODEL)
                    .values(learn_state=LEARN_CHECKPOINTED)
                )
                result = Rebuild(
                    slot=slot,
                    task=task,
                    old_version=old_version,
                    new_version=checkpoint.version,
                    examples_before=examples_before,
                    examples_after=fresh.examples_learned,
                    files_deleted=sum(1 for path in retired if path.exists()),
                )
                if self.on_rebuilt is not None:
                    self.on_rebuilt(session, result)
        except BaseException:
            fresh.close()
            raise
        # Only after the commit: a serving process that already opened an old file reads it
        # whole (unlink keeps an open file intact); one that has not gets "missing", keeps the
        # model it serves and loads the new version at its next reload.
        for path in retired:
            path.unlink(missing_ok=True)
        previous, self._models[slot] = self._models[slot], fresh
        previous.close()
        self._saved_examples[slot] = fresh.examples_learned
        self._dirty.discard(slot)
        self.rebuilds.append(result)
        logger.info(
            "slot model rebuilt after erasure",
            extra={"slot": slot, "version": result.new_version, "examples": result.examples_after},
        )
        return result

    def run_until_idle(self) -> int:
        """Learns everything ready now and checkpoints (for tests and the CLI)."""
        total = 0
        while (count := self.step()) > 0:
            total += count
        self.checkpoint()
        return total

    def _loop(self) -> None:
        last_checkpoint = time.monotonic()
        while not self._stop.is_set():
            try:
                learned = self.step()
                if time.monotonic() - last_checkpoint >= self.checkpoint_interval_seconds:
                    self.checkpoint()
                    self.rebuild_due()
                    last_checkpoint = time.monotonic()
            except StorageUnavailable:
                learned = 0  # the outage is logged once by Database; retried after the poll interval
            except Exception:
                learned = 0
                logger.exception("learner step failed")
            if learned < self.batch_size:
                self._stop.wait(self.poll_interval_seconds)
        try:
            self.checkpoint()
        except StorageUnavailable:
            # An expected outage (logged once by Database): the decisions stay unlearned in the
            # log and the next learner replays them; no traceback for it.
            logger.warning("final checkpoint skipped: storage unavailable")
        except Exception:
            logger.exception("final checkpoint failed")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tacit-learner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        for model in self._models.values():
            model.close()
