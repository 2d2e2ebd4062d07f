"""The learner: reads decisions whose reward is final, in order, and updates VW.

A decision moves WAITING -> IN_MODEL when the learner consumes it and
IN_MODEL -> CHECKPOINTED in the transaction that registers the checkpoint
containing it. At start the learner returns IN_MODEL decisions to WAITING, so
after a crash it replays exactly what the newest checkpoint has not seen.
There is one learner per deployment.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update

from tacit.learning.bandit import SlotModel
from tacit.learning.registry import (
    bandit_task,
    load_slot_model,
    newest_checkpoint,
    register_checkpoint,
)
from tacit.store.db import Database, StorageUnavailable
from tacit.store.schema import LEARN_CHECKPOINTED, LEARN_IN_MODEL, LEARN_WAITING, Decision

logger = logging.getLogger("tacit.learning")


@dataclass(frozen=True)
class SlotLearning:
    """What the learner needs to know about a slot."""

    vw_args: str
    default_reward: float


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
        batch_size: int = 500,
    ):
        self.db = db
        self.slots = slots
        self.models_dir = models_dir
        self.checkpoint_interval_seconds = checkpoint_interval_seconds
        self.poll_interval_seconds = poll_interval_seconds
        self.keep_checkpoints = keep_checkpoints
        self.batch_size = batch_size
        self._models: dict[str, SlotModel] = {}
        self._dirty: set[str] = set()
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
            self._models[slot] = load_slot_model(config.vw_args, checkpoint)
            if checkpoint is not None:
                self._models[slot].examples_learned = checkpoint.examples

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
            session.execute(
                update(Decision)
                .where(Decision.event_id.in_([row.event_id for row in rows]))
                .values(learn_state=LEARN_IN_MODEL)
            )
        for row in rows:
            config = self.slots.get(row.slot)
            model = self._models.get(row.slot)
            if config is None or model is None:
                continue
            reward = row.reward if row.reward is not None else config.default_reward
            model.learn(
                row.context,
                row.candidate_features,
                row.chosen_index,
                reward,
                row.probabilities[row.chosen_index],
            )
            self._dirty.add(row.slot)
        return len(rows)

    def checkpoint(self) -> list[str]:
        """Registers a new version for every slot that learned something; returns those slots."""
        done = []
        for slot in sorted(self._dirty):
            with self.db.transaction() as session:
                register_checkpoint(
                    session,
                    self._models[slot],
                    bandit_task(slot),
                    self.models_dir,
                    self.keep_checkpoints,
                )
                session.execute(
                    update(Decision)
                    .where(Decision.slot == slot, Decision.learn_state == LEARN_IN_MODEL)
                    .values(learn_state=LEARN_CHECKPOINTED)
                )
            done.append(slot)
        self._dirty.clear()
        return done

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
