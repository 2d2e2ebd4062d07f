"""Versioned bandit checkpoints: write, register, find the newest, load for serving.

A registry row whose model learned from a subject that was later erased carries a
marker in its ``details``: ``rebuild_pending`` on a bandit checkpoint (the learner
rebuilds the slot from the remaining decision log), ``retrain_required`` on a
classifier version (an operator retrains it).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
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


def bandit_task(slot: str) -> str:
    return f"bandit:{slot}"


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


def newest_checkpoint(session: Session, task: str) -> Checkpoint | None:
    row = newest_row(session, task)
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
    erasures_held: int | None = None,
    newly_erased: int = 0,
) -> Checkpoint:
    """Saves `model` as the next version of `task` (old versions: `expired_checkpoints`).

    The new row inherits the ``rebuild_pending`` marker of the version it grew from
    (plus ``newly_erased``), unless ``erasures_held`` says how many it holds (a rebuild).
    """
    lock_task(session, task)
    version = next_version(session, task)
    path = models_dir / task.replace(":", "_") / f"{version}.vw"
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
    if erasures_held is None:
        previous = session.execute(
            select(ModelVersion)
            .where(ModelVersion.task == task, ModelVersion.active.is_(True), ModelVersion.id < row.id)
            .order_by(ModelVersion.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        erasures_held = newly_erased
        if previous is not None:
            erasures_held += pending_erasures(previous.details)
            since = (previous.details or {}).get(REBUILD_PENDING, {}).get("since")
    if erasures_held > 0:
        row.details = {
            "vw_args": model.vw_args,
            REBUILD_PENDING: {"erasures": erasures_held, "since": since or now.isoformat()},
        }
        session.flush()
    model.model_version = version
    return Checkpoint(task, version, path, row.sha256, model.examples_learned)
