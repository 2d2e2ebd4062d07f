"""ModelService's explanations and model lifecycle (export, import, reset), composed from learning,
privacy (the audit chain, event-id digests) and store.

Every export, import and reset appends an audit record (kind ``model_lifecycle``: task, action,
versions and example count, never a value) in the transaction that registers the version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tacit.learning.explain import DecisionExplanation, ModelExplanation, Row, explain_decision, explain_model
from tacit.learning.lifecycle import (
    VERSION,
    Bundle,
    BundleError,
    ExportError,
    export_bundle,
    install_bundle,
    installed_by_request,
    read_bundle,
    reset_slot,
    sha256_hex,
)
from tacit.learning.registry import (
    INSTALLED,
    Checkpoint,
    bandit_task,
    challenger_task,
    file_sha256,
    newest_checkpoint,
    version_checkpoint,
)
from tacit.learning.registry_models import ModelRecord, get_record
from tacit.privacy.audit import AuditEntry, FieldAudit
from tacit.privacy.audit_log import append_entries
from tacit.privacy.pseudonym import KeyRing
from tacit.server.config import Settings
from tacit.server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from tacit.store.candidate_sets import MissingCandidateSet, decision_candidates
from tacit.store.db import Database
from tacit.store.schema import Decision

logger = logging.getLogger("tacit.server")

LIFECYCLE_KIND = "model_lifecycle"
DEFAULT_SAMPLE = 1_000
MAX_SAMPLE = 10_000


def _version_number(version: str | None) -> int:
    """v000012 -> 12 (audit counts are integers); 0 for none."""
    return int(version[1:]) if version and VERSION.match(version) else 0


def lifecycle_entry(
    action: str, task: str, before: str | None, after: str, examples: int, policy_version: str, key_id: str
) -> AuditEntry:
    """The audit entry of an export, import or reset: task, action, versions, examples; no value."""
    return AuditEntry(
        occurred_at=datetime.now(UTC),
        payload_kind=LIFECYCLE_KIND,
        correlation_id=f"{action}:{task}:{before or 'none'}->{after}",
        policy_version=policy_version,
        key_id=key_id,
        fields=(
            FieldAudit(
                field=task,
                operator=action,
                outcome={"export": "exported", "import": "imported", "reset": "reset"}[action],
                entity_counts={
                    "version_before": _version_number(before),
                    "version_after": _version_number(after),
                    "examples": examples,
                },
            ),
        ),
    )


@dataclass(frozen=True)
class ExplainedModel:
    slot: str
    model_version: str
    decisions: int
    explanation: ModelExplanation


@dataclass(frozen=True)
class ExplainedDecision:
    slot: str
    decision_model_version: str
    model_version: str
    chosen_index: int
    chosen_probability: float
    candidates: int
    explanation: DecisionExplanation


@dataclass(frozen=True)
class Exported:
    bundle: bytes
    sha256: str
    task: str
    version: str


class ModelLifecycle:
    """Explains slot models and exports, imports and resets them (audited)."""

    def __init__(self, db: Database, settings: Settings, keyring: KeyRing, policy_version: str):
        self._db = db
        self._settings = settings
        self._keyring = keyring
        self._policy_version = policy_version
        self._models_dir = settings.storage.data_dir / "models"

    def _slot_args(self, slot: str) -> str:
        config = self._settings.slots.get(slot)
        if config is None:
            raise NotFound("slot: no slot with this name is configured", "SLOT_NOT_FOUND")
        return config.vw_args

    def _verified(self, checkpoint: Checkpoint) -> Path:
        if not checkpoint.path.exists() or file_sha256(checkpoint.path) != checkpoint.sha256:
            raise FailedPrecondition("the slot's checkpoint fails its hash check", "MODEL_INTEGRITY")
        return checkpoint.path

    def explain_model(self, slot: str, top_n: int, sample_size: int) -> ExplainedModel:
        configured = self._slot_args(slot)
        with self._db.transaction() as session:
            checkpoint = newest_checkpoint(session, bandit_task(slot))
            if checkpoint is None:
                raise FailedPrecondition("the slot has no checkpoint yet: nothing learned", "NO_CHECKPOINT")
            decisions = (
                session.execute(
                    select(Decision)
                    .where(Decision.slot == slot)
                    .order_by(Decision.created_at.desc(), Decision.event_id.desc())
                    .limit(min(sample_size or DEFAULT_SAMPLE, MAX_SAMPLE))
                )
                .scalars()
                .all()
            )
            rows = _rows(session, decisions)
        if not rows:
            # VW names a weight only when an example touches it: nothing logged, nothing to name.
            raise FailedPrecondition("the slot has no logged decisions to name its features", "NO_DECISIONS")
        path = self._verified(checkpoint)
        explanation = explain_model(checkpoint.vw_args or configured, path, rows, top_n)
        return ExplainedModel(slot, checkpoint.version, len(rows), explanation)

    def explain_decision(self, event_id: str, top_n: int) -> ExplainedDecision:
        with self._db.transaction() as session:
            decision = session.execute(
                select(Decision).where(Decision.event_id.in_(self._keyring.digests(event_id)))
            ).scalar_one_or_none()
            if decision is None:
                raise NotFound("event_id: no decision with this id", "DECISION_NOT_FOUND")
            configured = self._slot_args(decision.slot)
            # A bandit:<config> challenger arm decided with its own task's checkpoint.
            challenger = decision.experiment_id is not None and decision.policy.startswith("bandit:")
            decided_by = (
                challenger_task(decision.experiment_id or "", decision.arm)
                if challenger
                else bandit_task(decision.slot)
            )
            found = version_checkpoint(session, decided_by, decision.model_version)
            # The version that decided, while its file is kept (retention, a rebuild delete old ones).
            kept = found is not None and found[0].path.exists()
            checkpoint = (
                found[0]
                if found is not None and kept
                else newest_checkpoint(session, bandit_task(decision.slot))
            )
            if checkpoint is None:
                raise FailedPrecondition("the slot has no checkpoint yet: nothing learned", "NO_CHECKPOINT")
            rows = _rows(session, [decision])
        explanation = explain_decision(
            checkpoint.vw_args or configured, self._verified(checkpoint), rows[0], top_n
        )
        probabilities = list(decision.probabilities)
        return ExplainedDecision(
            slot=decision.slot,
            decision_model_version=decision.model_version,
            model_version=checkpoint.version,
            chosen_index=decision.chosen_index,
            chosen_probability=float(probabilities[decision.chosen_index]),
            candidates=len(probabilities),
            explanation=explanation,
        )

    def _audit(
        self, session: Session, action: str, task: str, before: str | None, after: str, examples: int
    ) -> None:
        entry = lifecycle_entry(
            action, task, before, after, examples, self._policy_version, self._keyring.active_key_id
        )
        append_entries(session, [entry])

    def export(self, slot: str, version: str | None) -> Exported:
        self._slot_args(slot)
        config = self._settings.slots[slot]
        slot_config: Mapping[str, float] = {
            "default_reward": config.default_reward,
            "reward_min": config.reward_min,
            "reward_max": config.reward_max,
            "reward_window_seconds": config.reward_window_seconds,
        }
        with self._db.transaction() as session:
            try:
                data, checkpoint = export_bundle(session, slot, version, slot_config)
            except LookupError:
                raise NotFound("slot: no such registered model version", "MODEL_NOT_FOUND") from None
            except ExportError as error:
                raise FailedPrecondition(str(error), "MODEL_INTEGRITY") from None
            task = bandit_task(slot)
            self._audit(session, "export", task, checkpoint.version, checkpoint.version, checkpoint.examples)
        logger.info("model exported", extra={"task": task, "version": checkpoint.version})
        return Exported(data, sha256_hex(data), task, checkpoint.version)

    def _earlier(
        self, session: Session, slot: str, request_id: str, action: str, sha256: str = ""
    ) -> str | None:
        """The version an earlier identical call with ``request_id`` installed (None when none);
        ALREADY_EXISTS when the request id was used for a different change."""
        if not request_id:
            return None
        row = installed_by_request(session, slot, self._keyring.digests(request_id))
        if row is None:
            return None
        origin = row.details[INSTALLED]
        if origin.get("action") != action or origin.get("bundle_sha256", "") != sha256:
            raise AlreadyExists("request_id: was used for a different model change", "REQUEST_ID_REUSED")
        return row.version

    def import_bundle(self, slot: str, data: bytes, sha256: str, request_id: str = "") -> ModelRecord:
        self._slot_args(slot)
        try:
            bundle: Bundle = read_bundle(data, sha256)
        except BundleError as error:
            raise InvalidArgument(error.field, error.description, error.reason) from None
        task = bandit_task(slot)
        written: list[Path] = []
        try:
            with self._db.transaction() as session:
                earlier = self._earlier(session, slot, request_id, "import", bundle.sha256)
                if earlier is not None:
                    return get_record(self._db, task, earlier)  # a retry: nothing changes, nothing audited
                before = newest_checkpoint(session, task)
                checkpoint = install_bundle(
                    session, slot, bundle, self._models_dir, self._request_key(request_id)
                )
                written.append(checkpoint.path)
                self._audit(
                    session, "import", task, before.version if before else None, checkpoint.version,
                    checkpoint.examples,
                )  # fmt: skip
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)  # never registered: nothing serves it
            raise
        logger.info("model imported", extra={"task": task, "version": checkpoint.version})
        return get_record(self._db, task, checkpoint.version)

    def _request_key(self, request_id: str) -> str:
        return self._keyring.digest(request_id) if request_id else ""

    def reset(self, slot: str, request_id: str = "") -> tuple[ModelRecord, str | None]:
        vw_args = self._slot_args(slot)
        task = bandit_task(slot)
        written: list[Path] = []
        try:
            with self._db.transaction() as session:
                earlier = self._earlier(session, slot, request_id, "reset")
                if earlier is not None:
                    record = get_record(self._db, task, earlier)
                    return record, str(record.details[INSTALLED].get("previous_version", "")) or None
                checkpoint, previous = reset_slot(
                    session, slot, vw_args, self._models_dir, request_key=self._request_key(request_id)
                )
                written.append(checkpoint.path)
                self._audit(session, "reset", task, previous, checkpoint.version, 0)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        logger.info("model reset", extra={"task": task, "version": checkpoint.version})
        return get_record(self._db, task, checkpoint.version), previous


def _rows(session: Session, decisions: Sequence[Decision]) -> list[Row]:
    """The logged (anonymized) context and candidates of each decision, as the learner reads them."""
    listed = list(decisions)
    try:
        candidates = decision_candidates(session, listed)
    except MissingCandidateSet:
        raise FailedPrecondition(
            "a decision's candidate features are no longer stored", "DECISION_INCOMPLETE"
        ) from None
    return [
        Row(dict(decision.context), actions, decision.chosen_index)
        for decision, actions in zip(listed, candidates, strict=True)
    ]
