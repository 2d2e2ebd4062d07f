"""Versioned bandit checkpoints: write, register, find the newest, load for serving."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
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


def load_slot_model(vw_args: str, checkpoint: Checkpoint | None) -> SlotModel:
    """A serving model from a checkpoint (verified against its hash) or a fresh one."""
    if checkpoint is None:
        return SlotModel(vw_args, model_version="v000000")
    if not checkpoint.path.exists() or file_sha256(checkpoint.path) != checkpoint.sha256:
        raise ModelIntegrityError(f"model {checkpoint.task} {checkpoint.version} fails its hash check")
    return SlotModel(vw_args, model_version=checkpoint.version, model_path=checkpoint.path)


class ServingModels:
    """The newest checkpoint of every slot, swapped in without a restart."""

    def __init__(self, db: Database, slot_args: dict[str, str]):
        self._db = db
        self._slot_args = slot_args
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
                model = load_slot_model(vw_args, checkpoint)
            except ModelIntegrityError:
                logger.error("checkpoint rejected", extra={"slot": slot})
                if current is None:
                    model = load_slot_model(vw_args, None)
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


def register_checkpoint(
    session: Session,
    model: SlotModel,
    task: str,
    models_dir: Path,
    keep: int,
) -> Checkpoint:
    """Saves `model` as the next version of `task` and prunes old files."""
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
    old = session.execute(
        select(ModelVersion)
        .where(ModelVersion.task == task, ModelVersion.active.is_(True))
        .order_by(ModelVersion.id.desc())
        .offset(keep)
    ).scalars()
    for row in old:
        row.active = False
        Path(row.path).unlink(missing_ok=True)
    model.model_version = version
    return Checkpoint(task, version, path, checksum, model.examples_learned)
