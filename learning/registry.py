"""Versioned bandit checkpoints: write, register, find the newest, load for serving.

A registry row whose model learned from a subject that was later erased carries a
marker in its ``details``: ``rebuild_pending`` on a bandit checkpoint (the learner
rebuilds the slot from the remaining decision log), ``retrain_required`` on a
classifier version (an operator retrains it).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tacit.learning.bandit import SlotModel
from tacit.store.db import Database
from tacit.store.schema import ModelVersion

logger = logging.getLogger("tacit.learning")


REBUILD_PENDING = "rebuild_pending"
"""Bandit checkpoint detail: it learned from an erased subject; ``{"erasures": n, "since": iso}``."""
RETRAIN_REQUIRED = "retrain_required"
"""Classifier detail: trained on a window that held an erased subject; same shape."""
PROMOTED = "promoted_from"
"""Bandit checkpoint detail: the slot's policy came from a shipped challenger
(``{"experiment_id", "arm", "policy", "task", "version"}``); the checkpoint is served and learned
with its own ``vw_args`` instead of ``slots.<name>.vw_args``. Later checkpoints inherit it."""
INSTALLED = "installed_by"
"""Bandit checkpoint detail: an operator installed the slot's model (``{"action": "import" | "reset",
...}``, see `tacit.learning.lifecycle`); like ``promoted_from`` it is served and learned with its own
``vw_args``, and later checkpoints inherit it."""
PINNED = "pinned"
"""Bandit checkpoint detail: a model:<version> arm serves it, so retention keeps its file."""


def bandit_task(slot: str) -> str:
    return f"bandit:{slot}"


def challenger_task(experiment_id: str, arm: str) -> str:
    """The registry task of a bandit:<config> challenger arm (ids and arm names are file-name safe)."""
    return f"challenger:{experiment_id}:{arm}"


@dataclass(frozen=True)
class ChallengerSpec:
    """A challenger arm as learning sees it: which slot, which arm, and its policy.

    ``vw_args`` set: a bandit:<config> workspace of its own, checkpointed under ``task``.
    ``pinned_version`` set: a model:<version> arm serving that checkpoint of the slot.
    """

    slot: str
    experiment_id: str
    arm: str
    vw_args: str = ""
    pinned_version: str = ""
    learn_from_all: bool = False

    @property
    def task(self) -> str:
        return challenger_task(self.experiment_id, self.arm)

    def learns_from(self, experiment_id: str | None, arm: str) -> bool:
        """True for a decision this challenger learns from: its own arm's, or all of the slot's."""
        if not self.vw_args:
            return False
        return self.learn_from_all or (experiment_id == self.experiment_id and arm == self.arm)


ChallengerSource = Callable[[], Sequence[ChallengerSpec]]


def needs_retraining(details: Mapping[str, Any] | None) -> bool:
    """True when the version learned from an erased subject and must be rebuilt or retrained."""
    return bool(details) and (REBUILD_PENDING in details or RETRAIN_REQUIRED in details)  # type: ignore[operator]


def pending_erasures(details: Mapping[str, Any] | None, marker: str = REBUILD_PENDING) -> int:
    """How many erasures a version still holds data of (0 when unmarked)."""
    value = (details or {}).get(marker)
    return int(value.get("erasures", 1)) if isinstance(value, dict) else 0


def with_marker(
    details: Mapping[str, Any] | None, marker: str, erasures: int, since: datetime
) -> dict[str, Any]:
    """A copy of ``details`` marked as holding data of ``erasures`` erasures (kept ``since``)."""
    previous = (details or {}).get(marker)
    first = previous.get("since") if isinstance(previous, dict) else None
    return {**(details or {}), marker: {"erasures": erasures, "since": first or since.isoformat()}}


def lock_task(session: Session, task: str) -> None:
    """Serializes registry writers of one task (a checkpoint, a rebuild, an erasure marking it).

    PostgreSQL: a transaction-scoped advisory lock. SQLite: the database write lock,
    which every caller already holds because it has written before it reads markers.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(
            hashlib.sha256(f"tacit-registry:{task}".encode()).digest()[:8], "big", signed=True
        )
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def newest_row(session: Session, task: str) -> ModelVersion | None:
    """The newest active registry row of ``task``."""
    return session.execute(
        select(ModelVersion)
        .where(ModelVersion.task == task, ModelVersion.active.is_(True))
        .order_by(ModelVersion.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelIntegrityError(RuntimeError):
    """A model file does not match its registry record; it is never served."""


@dataclass(frozen=True)
class Checkpoint:
    task: str
    version: str
    path: Path
    sha256: str
    examples: int
    # The arguments the checkpoint must be loaded with instead of the configured ones: set for a
    # promoted slot checkpoint and for challengers (their own config); None otherwise.
    vw_args: str | None = None


def _checkpoint(row: ModelVersion) -> Checkpoint:
    details = row.details or {}
    own_args = PROMOTED in details or INSTALLED in details or not row.task.startswith("bandit:")
    return Checkpoint(
        row.task,
        row.version,
        Path(row.path),
        row.sha256,
        row.examples,
        details.get("vw_args") if own_args else None,
    )


def newest_checkpoint(session: Session, task: str) -> Checkpoint | None:
    row = newest_row(session, task)
    return None if row is None else _checkpoint(row)


def version_checkpoint(session: Session, task: str, version: str) -> tuple[Checkpoint, str] | None:
    """One registered version of ``task`` (active or not) and the VW arguments it was saved with."""
    row = session.execute(
        select(ModelVersion).where(ModelVersion.task == task, ModelVersion.version == version)
    ).scalar_one_or_none()
    if row is None:
        return None
    return _checkpoint(row), str((row.details or {}).get("vw_args", ""))


def pin_version(session: Session, task: str, version: str) -> None:
    """Marks a version as served by a model:<version> arm, so retention keeps it."""
    lock_task(session, task)
    row = session.execute(
        select(ModelVersion).where(ModelVersion.task == task, ModelVersion.version == version)
    ).scalar_one()
    if PINNED not in (row.details or {}):
        row.details = {**(row.details or {}), PINNED: True}


def promote_checkpoint(
    session: Session, slot: str, source: Checkpoint, vw_args: str, models_dir: Path, origin: Mapping[str, str]
) -> Checkpoint:
    """Registers a copy of ``source`` as the slot's next version, served and learned with ``vw_args``.

    ``origin`` (experiment, arm, policy, source task and version) is kept in the row's details.
    """
    if not source.path.exists() or file_sha256(source.path) != source.sha256:
        raise ModelIntegrityError(f"model {source.task} {source.version} fails its hash check")
    return register_file(
        session,
        bandit_task(slot),
        models_dir,
        lambda tmp: shutil.copyfile(source.path, tmp),
        source.examples,
        {"vw_args": vw_args, PROMOTED: dict(origin)},
    )


def register_file(
    session: Session,
    task: str,
    models_dir: Path,
    write: Callable[[Path], object],
    examples: int,
    details: Mapping[str, Any],
) -> Checkpoint:
    """Registers a model file that ``write`` puts at a temporary path as ``task``'s next version.

    The caller's transaction holds the task's lock; a file whose row does not commit stays an
    orphan under ``models_dir`` (never served: only registered files are)."""
    lock_task(session, task)
    version = next_version(session, task)
    path = models_dir / _task_dir(task) / f"{version}.vw"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    write(tmp)
    tmp.replace(path)
    row = ModelVersion(
        task=task,
        version=version,
        path=str(path),
        sha256=file_sha256(path),
        created_at=datetime.now(UTC),
        examples=examples,
        metrics={},
        details=dict(details),
        active=True,
    )
    session.add(row)
    session.flush()
    return _checkpoint(row)


def _task_dir(task: str) -> str:
    return task.replace(":", "_")


def next_version(session: Session, task: str) -> str:
    latest = session.execute(
        select(ModelVersion.version).where(ModelVersion.task == task).order_by(ModelVersion.id.desc())
    ).first()
    number = int(latest[0].lstrip("v")) + 1 if latest else 1
    return f"v{number:06d}"


def load_slot_model(vw_args: str, checkpoint: Checkpoint | None, random_seed: int | None = None) -> SlotModel:
    """A serving model from a checkpoint (verified against its hash) or a fresh one.

    A checkpoint that names its own arguments (promoted, or a challenger's) is loaded with them.
    """
    if checkpoint is None:
        return SlotModel(vw_args, model_version="v000000", random_seed=random_seed)
    vw_args = checkpoint.vw_args or vw_args
    if not checkpoint.path.exists() or file_sha256(checkpoint.path) != checkpoint.sha256:
        raise ModelIntegrityError(f"model {checkpoint.task} {checkpoint.version} fails its hash check")
    try:
        return SlotModel(
            vw_args, model_version=checkpoint.version, model_path=checkpoint.path, random_seed=random_seed
        )
    except RuntimeError:
        if checkpoint.path.exists():
            raise
        # Deleted between the hash check and the load: a rebuild after an erasure retired it.
        raise ModelIntegrityError(f"model {checkpoint.task} {checkpoint.version} was retired") from None


class ServingModels:
    """The newest checkpoint of every slot, and of every challenger arm, swapped in without a restart.

    Challengers: a bandit:<config> arm serves the newest checkpoint of its own task (a fresh
    workspace with its arguments until the learner registers one); a model:<version> arm
    serves that checkpoint of the slot, loaded once and never changed.
    """

    def __init__(
        self,
        db: Database,
        slot_args: dict[str, str],
        random_seed: int | None = None,
        challengers: ChallengerSource | None = None,
    ):
        self._db = db
        self._slot_args = slot_args
        self._random_seed = random_seed
        self._challenger_source = challengers
        self._models: dict[str, SlotModel] = {}
        self._challengers: dict[str, SlotModel] = {}  # by challenger task
        self._pinned: dict[tuple[str, str], SlotModel] = {}  # by (slot, version)
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self.refresh()

    def get(self, slot: str) -> SlotModel:
        return self._models[slot]

    def challenger(self, spec: ChallengerSpec) -> SlotModel:
        """The model of a challenger arm; loaded on first use when `refresh` has not yet."""
        key = (spec.slot, spec.pinned_version)
        model = self._pinned.get(key) if spec.pinned_version else self._challengers.get(spec.task)
        if model is not None:
            return model
        with self._load_lock:
            model = self._pinned.get(key) if spec.pinned_version else self._challengers.get(spec.task)
            if model is None:
                model = self._load_challenger(spec, None)
                with self._lock:
                    if spec.pinned_version:
                        self._pinned[key] = model
                    else:
                        self._challengers[spec.task] = model
            return model

    def _load_challenger(self, spec: ChallengerSpec, current: SlotModel | None) -> SlotModel:
        if spec.pinned_version:
            with self._db.transaction() as session:
                found = version_checkpoint(session, bandit_task(spec.slot), spec.pinned_version)
            if found is None:
                raise ModelIntegrityError(
                    f"model {bandit_task(spec.slot)} {spec.pinned_version} is not registered"
                )
            pinned, vw_args = found
            return load_slot_model(vw_args or self._slot_args[spec.slot], pinned, self._random_seed)
        with self._db.transaction() as session:
            newest = newest_checkpoint(session, spec.task)
        if current is not None and (newest is None or newest.version == current.model_version):
            return current
        return load_slot_model(spec.vw_args, newest, self._random_seed)

    def versions(self) -> dict[str, str]:
        """The checkpoint version every slot (and every challenger task) serves now."""
        with self._lock:
            served = {slot: model.model_version for slot, model in self._models.items()}
            served.update({task: model.model_version for task, model in self._challengers.items()})
            return served

    def refresh(self) -> list[str]:
        """Loads any newer checkpoint; returns the slots (and challenger tasks) that changed."""
        changed = []
        for slot, configured_args in self._slot_args.items():
            with self._db.transaction() as session:
                checkpoint = newest_checkpoint(session, bandit_task(slot))
            current = self._models.get(slot)
            if current is not None and (checkpoint is None or checkpoint.version == current.model_version):
                continue
            try:
                model = load_slot_model(configured_args, checkpoint, self._random_seed)
            except ModelIntegrityError:
                logger.error("checkpoint rejected", extra={"slot": slot})
                if current is None:
                    model = load_slot_model(configured_args, None, self._random_seed)
                else:
                    continue
            with self._lock:
                old, self._models[slot] = self._models.get(slot), model
            if old is not None:
                old.close()
            changed.append(slot)
        if self._challenger_source is not None:
            changed += self._refresh_challengers(self._challenger_source())
        return changed

    def _refresh_challengers(self, specs: Sequence[ChallengerSpec]) -> list[str]:
        changed = []
        live_tasks = {spec.task for spec in specs if spec.vw_args}
        live_pins = {(spec.slot, spec.pinned_version) for spec in specs if spec.pinned_version}
        for spec in specs:
            if spec.slot not in self._slot_args:
                continue
            if spec.pinned_version and (spec.slot, spec.pinned_version) in self._pinned:
                continue
            current = None if spec.pinned_version else self._challengers.get(spec.task)
            try:
                with self._load_lock:
                    model = self._load_challenger(spec, current)
            except ModelIntegrityError:
                logger.error("challenger checkpoint rejected", extra={"slot": spec.slot})
                continue
            if model is current:
                continue
            with self._lock:
                if spec.pinned_version:
                    old = self._pinned.get((spec.slot, spec.pinned_version))
                    self._pinned[(spec.slot, spec.pinned_version)] = model
                else:
                    old = self._challengers.get(spec.task)
                    self._challengers[spec.task] = model
            if old is not None:
                old.close()
            changed.append(spec.task)
        with self._lock:
            gone = [self._challengers.pop(t) for t in list(self._challengers) if t not in live_tasks]
            gone += [self._pinned.pop(k) for k in list(self._pinned) if k not in live_pins]
        for model in gone:
            model.close()
        return changed

    def close(self) -> None:
        with self._lock:
            for model in (*self._models.values(), *self._challengers.values(), *self._pinned.values()):
                model.close()
            self._models.clear()
            self._challengers.clear()
            self._pinned.clear()


def expired_checkpoints(
    session: Session, task: str, keep: int, grace: timedelta, now: datetime | None = None
) -> list[Path]:
    """Deletes the registry rows of old checkpoints of `task`; returns their files to unlink after commit.

    Kept: the `keep` newest versions (so always the active, newest one) and any version
    younger than `grace`, which a serving process may have read as the newest and not
    loaded yet (it reloads every `learner.reload_interval_seconds`; a process that
    already loaded a version holds it in memory and never reads its file again).
    """
    moment = now or datetime.now(UTC)
    keep = max(keep, 1)
    rows = session.execute(
        select(ModelVersion).where(ModelVersion.task == task).order_by(ModelVersion.id.desc()).offset(keep)
    ).scalars()
    paths = []
    for row in rows:
        if PINNED in (row.details or {}):
            continue  # a model:<version> arm serves it
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        if moment - created < grace:
            continue
        paths.append(Path(row.path))
        session.delete(row)
    return paths


def register_checkpoint(
    session: Session,
    model: SlotModel,
    task: str,
    models_dir: Path,
    erasures_held: int | None = None,
    newly_erased: int = 0,
) -> Checkpoint:
    """Saves `model` as the next version of `task` (old versions: `expired_checkpoints`).

    The new row inherits the ``rebuild_pending`` marker of the version it grew from
    (plus ``newly_erased``), unless ``erasures_held`` says how many it holds (a rebuild).
    """
    lock_task(session, task)
    version = next_version(session, task)
    path = models_dir / _task_dir(task) / f"{version}.vw"
    model.save(path)
    now = datetime.now(UTC)
    row = ModelVersion(
        task=task,
        version=version,
        path=str(path),
        sha256=file_sha256(path),
        created_at=now,
        examples=model.examples_learned,
        metrics={},
        details={"vw_args": model.vw_args},
        active=True,
    )
    session.add(row)
    # Read the marker only after this INSERT: on SQLite the write lock is held from here on,
    # so an erasure marking the previous version cannot slip in between.
    session.flush()
    since: str | None = None
    previous = session.execute(
        select(ModelVersion)
        .where(ModelVersion.task == task, ModelVersion.active.is_(True), ModelVersion.id < row.id)
        .order_by(ModelVersion.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    details: dict[str, Any] = {"vw_args": model.vw_args}
    for inherited in (PROMOTED, INSTALLED):
        if previous is not None and inherited in (previous.details or {}):
            details[inherited] = previous.details[inherited]  # the slot's policy still comes from it
    if erasures_held is None:
        erasures_held = newly_erased
        if previous is not None:
            erasures_held += pending_erasures(previous.details)
            since = (previous.details or {}).get(REBUILD_PENDING, {}).get("since")
    if erasures_held > 0:
        details[REBUILD_PENDING] = {"erasures": erasures_held, "since": since or now.isoformat()}
    if details != row.details:
        row.details = details
        session.flush()
    model.model_version = version
    return Checkpoint(task, version, path, row.sha256, model.examples_learned)
