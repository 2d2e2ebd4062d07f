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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from sqlalchemy import func, select, tuple_, update
from sqlalchemy.orm import Session

from tacit.learning.bandit import SlotModel
from tacit.learning.registry import (
    REBUILD_PENDING,
    ChallengerSource,
    ChallengerSpec,
    Checkpoint,
    bandit_task,
    challenger_task,
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
        challengers: ChallengerSource | None = None,
    ):
        self.db = db
        self.challenger_source = challengers
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
        # bandit:<config> challenger arms: their own workspaces, by registry task.
        self._challenger_specs: dict[str, ChallengerSpec] = {}
        self._challengers: dict[str, SlotModel] = {}
        self._challengers_dirty: set[str] = set()
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
        self.refresh_challengers()

    def refresh_challengers(self) -> None:
        """Loads the challengers experiments now route to (newest checkpoint or fresh); drops ended ones.

        A challenger learns only decisions the learner reads after it is loaded.
        """
        if self.challenger_source is None:
            return
        specs = {
            spec.task: spec for spec in self.challenger_source() if spec.vw_args and spec.slot in self.slots
        }
        for task in [t for t in self._challengers if t not in specs]:
            self._challenger_specs.pop(task, None)
            self._challengers_dirty.discard(task)
            self._challengers.pop(task).close()
        for task, spec in specs.items():
            if task in self._challengers:
                continue
            with self.db.transaction() as session:
                checkpoint = newest_checkpoint(session, task)
            model = load_slot_model(spec.vw_args, checkpoint, self.random_seed)
            if checkpoint is not None:
                model.examples_learned = checkpoint.examples
            self._challengers[task] = model
            self._challenger_specs[task] = spec

    def _adopt(self, slot: str, checkpoint: Checkpoint) -> None:
        """Replaces the slot's model by a promoted checkpoint (a shipped challenger) registered by
        the experiment service; the slot learns on from it, with its arguments."""
        model = load_slot_model(self.slots[slot].vw_args, checkpoint, self.random_seed)
        model.examples_learned = checkpoint.examples
        previous, self._models[slot] = self._models[slot], model
        previous.close()
        self._saved_examples[slot] = model.examples_learned
        logger.info("slot adopted a promoted model", extra={"slot": slot, "version": checkpoint.version})

    def adopt_promotions(self) -> list[str]:
        """Adopts each slot checkpoint a promotion registered after this learner's model; returns slots."""
        adopted = []
        for slot in sorted(self._models):
            with self.db.transaction() as session:
                checkpoint = newest_checkpoint(session, bandit_task(slot))
            if self._is_promotion(slot, checkpoint):
                assert checkpoint is not None
                self._adopt(slot, checkpoint)
                adopted.append(slot)
        return adopted

    def _is_promotion(self, slot: str, checkpoint: Checkpoint | None) -> bool:
        return (
            checkpoint is not None
            and checkpoint.vw_args is not None
            and checkpoint.version != self._models[slot].model_version
        )

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
        if self.challenger_source is not None and any(
            row.policy.startswith("bandit:")
            and row.experiment_id is not None
            and challenger_task(row.experiment_id, row.arm) not in self._challengers
            for row in rows
        ):
            self.refresh_challengers()  # an experiment started since the last look
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
            for task, spec in self._challenger_specs.items():
                if spec.slot == row.slot and spec.learns_from(row.experiment_id, row.arm):
                    # Off-policy for decisions another policy made: VW weighs the cost by the
                    # logged probability (IPS), so every arm's decisions are usable.
                    self._challengers[task].learn(
                        row.context,
                        actions,
                        row.chosen_index,
                        reward,
                        row.probabilities[row.chosen_index],
                    )
                    self._challengers_dirty.add(task)
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
        promoted = set(self.adopt_promotions())
        for slot in sorted(self._dirty):
            erased = self._erased_before_checkpoint(slot)
            if erased and self.rebuild_mode == "immediate" and slot not in promoted:
                self.rebuild(slot)
                done.append(slot)
                continue
            adopt: Checkpoint | None = None
            with self.db.transaction() as session:
                saved, challenger_files = self._register_challengers(session, slot)
                lock_task(session, bandit_task(slot))
                newest = newest_checkpoint(session, bandit_task(slot))
                if self._is_promotion(slot, newest):
                    adopt = newest  # promoted since adopt_promotions looked: never overwrite it
                else:
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
            for path in (*expired, *challenger_files):
                path.unlink(missing_ok=True)
            self._challengers_dirty -= saved
            if adopt is not None:
                self._adopt(slot, adopt)
            self._saved_examples[slot] = self._models[slot].examples_learned
            done.append(slot)
        self._dirty.clear()
        self.refresh_challengers()
        return done

    def _register_challengers(self, session: Session, slot: str) -> tuple[set[str], list[Path]]:
        """Checkpoints the slot's challengers that learned, in the transaction that marks the
        decisions checkpointed (a crash replays them to the slot and its challengers alike).
        Returns the tasks saved and the expired files to delete after the commit."""
        saved: set[str] = set()
        files: list[Path] = []
        for task in sorted(self._challengers_dirty):
            if self._challenger_specs[task].slot != slot:
                continue
            register_checkpoint(session, self._challengers[task], task, self.models_dir)
            files += expired_checkpoints(session, task, self.keep_checkpoints, self.checkpoint_grace)
            saved.add(task)
        return saved, files

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

    def _replay(
        self, slot: str, model: SlotModel, challengers: Mapping[str, SlotModel] | None = None
    ) -> None:
        """Feeds the slot's remaining learned decisions to `model` (and each challenger the ones it
        learns from), in the learner's order, page by page."""
        config = self.slots[slot]
        targets = [(self._challenger_specs[task], fresh) for task, fresh in (challengers or {}).items()]
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
                example = (row.context, actions, row.chosen_index, reward)
                probability = row.probabilities[row.chosen_index]
                model.learn(*example, probability)
                for spec, challenger in targets:
                    if spec.learns_from(row.experiment_id, row.arm):
                        challenger.learn(*example, probability)
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
        task = bandit_task(slot)
        with self.db.transaction() as session:
            old = newest_row(session, task)
            old_version = old.version if old is not None else None
            examples_before = old.examples if old is not None else 0
            erasures_seen = pending_erasures(old.details) if old is not None else 0
        examples_before = max(examples_before, self._models[slot].examples_learned)
        # The slot's arguments now: configured, or a promoted challenger's.
        fresh = SlotModel(
            self._models[slot].vw_args, model_version="rebuilding", random_seed=self.random_seed
        )
        # The slot's challengers learned from the same log: rebuilt from it too, their old versions
        # deleted (a challenger task carries no marker of its own).
        fresh_challengers = {
            task: SlotModel(spec.vw_args, model_version="rebuilding", random_seed=self.random_seed)
            for task, spec in self._challenger_specs.items()
            if spec.slot == slot
        }
        try:
            self._replay(slot, fresh, fresh_challengers)
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
                for challenger_task_name, challenger in fresh_challengers.items():
                    replaced = register_checkpoint(session, challenger, challenger_task_name, self.models_dir)
                    for row in session.execute(
                        select(ModelVersion).where(
                            ModelVersion.task == challenger_task_name,
                            ModelVersion.version != replaced.version,
                        )
                    ).scalars():
                        retired.append(Path(row.path))
                        session.delete(row)
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
            for model in (fresh, *fresh_challengers.values()):
                model.close()
            raise
        # Only after the commit: a serving process that already opened an old file reads it
        # whole (unlink keeps an open file intact); one that has not gets "missing", keeps the
        # model it serves and loads the new version at its next reload.
        for path in retired:
            path.unlink(missing_ok=True)
        previous, self._models[slot] = self._models[slot], fresh
        previous.close()
        for challenger_task_name, challenger in fresh_challengers.items():
            self._challengers.pop(challenger_task_name).close()
            self._challengers[challenger_task_name] = challenger
            self._challengers_dirty.discard(challenger_task_name)
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
        for model in (*self._models.values(), *self._challengers.values()):
            model.close()
