"""Versioned bandit checkpoints: write, register, find the newest, load for serving."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tacit.learning.bandit import SlotModel
from tacit.store.db import Database
from tacit.store.schema import ModelVersion

logger = logging.getLogger("tacit.learning")


def bandit_task(slot: str) -> str:
    return f"bandit:{slot}"


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


def newest_checkpoint(session: Session, task: str) -> Checkpoint | None:
    row = session.execute(
        select(ModelVersion)
        .where(ModelVersion.task == task, ModelVersion.active.is_(True))
        .order_by(ModelVersion.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if row is None:
        return None
    return Checkpoint(row.task, row.version, Path(row.path), row.sha256, row.examples)


def next_version(session: Session, task: str) -> str:
    latest = session.execute(
        select(ModelVersion.version).where(ModelVersion.task == task).order_by(ModelVersion.id.desc())
    ).first()
    number = int(latest[0].lstrip("v")) + 1 if latest else 1
    return f"v{number:06d}"


def load_slot_model(
    vw_args: str, checkpoint: Checkpoint | None, random_seed: int | None = None
) -> SlotModel:
    """A serving model from a checkpoint (verified against its hash) or a fresh one."""
    if checkpoint is None:
        return SlotModel(vw_args, model_version="v000000", random_seed=random_seed)
    if not checkpoint.path.exists() or file_sha256(checkpoint.path) != checkpoint.sha256:
        raise ModelIntegrityError(f"model {checkpoint.task} {checkpoint.version} fails its hash check")
    return SlotModel(
        vw_args, model_version=checkpoint.version, model_path=checkpoint.path, random_seed=random_seed
    )


class ServingModels:
    """The newest checkpoint of every slot, swapped in without a restart."""

    def __init__(self, db: Database, slot_args: dict[str, str], random_seed: int | None = None):
        self._db = db
        self._slot_args = slot_args
        self._random_seed = random_seed
        self._models: dict[str, SlotModel] = {}
        self._lock = threading.Lock()
        self.refresh()

    def get(self, slot: str) -> SlotModel:
        return self._models[slot]

    def versions(self) -> dict[str, str]:
        """The checkpoint version every slot serves now."""
        with self._lock:
            return {slot: model.model_version for slot, model in self._models.items()}

    def refresh(self) -> list[str]:
        """Loads any newer checkpoint; returns the slots that changed."""
        changed = []
        for slot, vw_args in self._slot_args.items():
            with self._db.transaction() as session:
                checkpoint = newest_checkpoint(session, bandit_task(slot))
            current = self._models.get(slot)
            if current is not None and (checkpoint is None or checkpoint.version == current.model_version):
                continue
            try:
                model = load_slot_model(vw_args, checkpoint, self._random_seed)
            except ModelIntegrityError:
                logger.error("checkpoint rejected", extra={"slot": slot})
                if current is None:
                    model = load_slot_model(vw_args, None, self._random_seed)
                else:
                    continue
            with self._lock:
                old, self._models[slot] = self._models.get(slot), model
            if old is not None:
                old.close()
            changed.append(slot)
        return changed

    def close(self) -> None:
        with self._lock:
            for model in self._models.values():
                model.close()
            self._models.clear()


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
) -> Checkpoint:
    """Saves `model` as the next version of `task` (old versions: `expired_checkpoints`)."""
    version = next_version(session, task)
    path = models_dir / task.replace(":", "_") / f"{version}.vw"
    model.save(path)
    checksum = file_sha256(path)
    session.add(
        ModelVersion(
            task=task,
            version=version,
            path=str(path),
            sha256=checksum,
            created_at=datetime.now(UTC),
            examples=model.examples_learned,
            metrics={},
            details={"vw_args": model.vw_args},
            active=True,
        )
    )
    session.flush()
    model.model_version = version
    return Checkpoint(task, version, path, checksum, model.examples_learned)
