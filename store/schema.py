"""SQLAlchemy 2 schema: the one description of what Tacit stores.

Every value in these tables has passed the privacy boundary: subjects are keyed
pseudonyms, feature maps are the anonymized ones, and every event id, request id
and audit correlation id is a keyed digest (`KeyRing.digest`, `<key_id>:<base64url>`),
never the id a client sent. Migrations live in
`tacit/store/migrations` and are checked against this module by a test.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Decision(Base):
    """A logged Rank decision: replayable with its full probability vector."""

    __tablename__ = "decisions"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(96), index=True)
    arm: Mapped[str] = mapped_column(String(64), default="")
    experiment_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    policy: Mapped[str] = mapped_column(String(128))
    model_version: Mapped[str] = mapped_column(String(64))
    context: Mapped[dict] = mapped_column(JSON)
    candidate_ids: Mapped[list] = mapped_column(JSON)
    # Inline anonymized candidate feature maps: decisions logged before migration 0005 (and
    # rows written by hand); new decisions leave it NULL and reference `candidate_sets`.
    candidate_features: Mapped[list | None] = mapped_column(JSON, nullable=True)
    probabilities: Mapped[list] = mapped_column(JSON)
    chosen_index: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reward_deadline: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    deferred: Mapped[bool] = mapped_column(Boolean, default=False)
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reward: Mapped[float | None] = mapped_column(Float, nullable=True)
    reward_count: Mapped[int] = mapped_column(Integer, default=0)
    # When the learner may consume this decision (its reward is final); NULL while
    # it waits for activation or a reward.
    learn_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # LEARN_WAITING, LEARN_IN_MODEL (learned, checkpoint pending) or LEARN_CHECKPOINTED.
    learn_state: Mapped[int] = mapped_column(Integer, default=0)
    # Digest of Rank's optional request_id: a retry finds its original decision by it.
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Per candidate, the content digest of its anonymized feature map (without the id) in
    # `candidate_sets`; the id is `candidate_ids[i]`. See `tacit.store.candidate_sets`.
    candidate_refs: Mapped[list | None] = mapped_column(JSON, nullable=True)
    # Apprentice mode (issue 13): {"baseline": index, "target": the learned policy's probabilities
    # before mixing, "epsilon": ε}; `probabilities` holds the served mixture. NULL otherwise.
    apprentice: Mapped[dict | None] = mapped_column(JSON(none_as_null=True), nullable=True)

    __table_args__ = (
        Index("ix_decisions_learnable", "learn_state", "learn_after"),
        Index("ux_decisions_request_id", "request_id", unique=True),
    )


LEARN_WAITING = 0
LEARN_IN_MODEL = 1
LEARN_CHECKPOINTED = 2


class Reward(Base):
    """Every reward received, including late and repeated ones."""

    __tablename__ = "rewards"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), index=True)
    request_id: Mapped[str] = mapped_column(String(64))
    value: Mapped[float] = mapped_column(Float)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    late: Mapped[bool] = mapped_column(Boolean, default=False)

    __table_args__ = (UniqueConstraint("event_id", "request_id", name="uq_rewards_event_request"),)


class TrackedEvent(Base):
    """An anonymized behavioural event."""

    __tablename__ = "events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(96))
    event_type: Mapped[str] = mapped_column(String(32))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    properties: Mapped[dict] = mapped_column(JSON)

    __table_args__ = (Index("ix_events_subject_time", "subject", "occurred_at"),)


class ModelVersion(Base):
    """A registered model snapshot: bandit checkpoints and classifiers."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task: Mapped[str] = mapped_column(String(96))
    version: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    examples: Mapped[int] = mapped_column(BigInteger, default=0)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (
        UniqueConstraint("task", "version", name="uq_model_versions_task_version"),
        Index("ix_model_versions_task_id", "task", "id"),
    )


class AuditRecord(Base):
    """One link of the anonymization audit hash chain. No raw values."""

    __tablename__ = "audit_records"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    payload_kind: Mapped[str] = mapped_column(String(64))
    correlation_id: Mapped[str] = mapped_column(String(96))
    policy_version: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32))
    body_json: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The chain's head: a single row locked by every appender so the chain never forks."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    record_hash: Mapped[str] = mapped_column(String(64))


class IdempotencyKey(Base):
    """Mutations already applied, so a retried request changes nothing."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(96), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    response: Mapped[dict] = mapped_column(JSON, default=dict)


# --- experiments (issue 4) -------------------------------------------------------------

# Metrics group an experiment's decisions by subject and arm; declared here rather than
# inside `Decision` so that class stays as the initial schema wrote it.
Index("ix_decisions_experiment", Decision.experiment_id, Decision.arm, Decision.subject)


class ExperimentRecord(Base):
    """A controlled rollout on one slot: its spec (JSON), salt, state and current stage."""

    __tablename__ = "experiments"

    experiment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    slot: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[dict] = mapped_column(JSON)
    salt: Mapped[str] = mapped_column(String(64))
    # draft, running, paused, rolled_back, shipped, stopped
    state: Mapped[str] = mapped_column(String(16))
    stage_index: Mapped[int] = mapped_column(Integer, default=0)
    stage_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # When the experiment stopped collecting evidence (rolled back, shipped, stopped).
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(32))


class ExperimentChange(Base):
    """One step of an experiment's history: who, when, what, and the report behind it.

    `action` is create/start/advance/pause/resume/rollback/ship/promote/conclude/hold or
    `evaluate` (a periodic report with no state change, kept for the lift-over-time chart).
    """

    __tablename__ = "experiment_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    experiment_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(16))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    from_stage: Mapped[int] = mapped_column(Integer)
    to_stage: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    report: Mapped[dict | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_experiment_changes_experiment", "experiment_id", "id"),)


# --- replicas (issue 10) -------------------------------------------------------------------


class PseudonymKey(Base):
    """A pseudonym key every replica must share, known by its fingerprint (never the key).

    The fingerprint is an HMAC of a fixed label under the key: it proves two processes
    hold the same key without revealing it. `active` marks the key new pseudonyms use;
    a replica whose key ring does not match these rows refuses to start.
    """

    __tablename__ = "pseudonym_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    active: Mapped[bool] = mapped_column(Boolean, default=False)


# --- automatic retraining (issue 14) ---------------------------------------------------------


class RetrainingRun(Base):
    """One check of the in-server retraining scheduler and everything it did.

    A run starts as ``running`` and ends ``fresh`` (no trigger), ``promoted``, ``refused``
    or ``failed``; ``steps`` is the ordered list of what happened (drift, age, train,
    validate, promote / refuse), appended and committed as each step ends. No personal
    value is in it: versions, counts, PSI figures and scores only.
    """

    __tablename__ = "retraining_runs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    task: Mapped[str] = mapped_column(String(96))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # running, fresh, promoted, refused, failed
    outcome: Mapped[str] = mapped_column(String(16))
    triggers: Mapped[list] = mapped_column(JSON, default=list)
    active_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    candidate_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    metric: Mapped[str] = mapped_column(String(32), default="")
    active_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    candidate_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    tolerance: Mapped[float] = mapped_column(Float, default=0.0)
    holdout_rows: Mapped[int] = mapped_column(Integer, default=0)
    steps: Mapped[list] = mapped_column(JSON, default=list)

    __table_args__ = (Index("ix_retraining_runs_task_id", "task", "id"),)


# --- lean decision rows (issue 12) ---------------------------------------------------------


class CandidateSet(Base):
    """One anonymized candidate feature map, stored once and referenced by content digest.

    Catalog features repeat across decisions, so a decision row carries 22-character
    digests (`Decision.candidate_refs`) instead of the maps. The maps passed the privacy
    boundary like every stored value; they name no subject, event or request, so a row
    is shared by every decision that offered a candidate with these features.
    """

    __tablename__ = "candidate_sets"

    digest: Mapped[str] = mapped_column(String(32), primary_key=True)
    features: Mapped[dict] = mapped_column(JSON)


# --- apprentice mode (issue 13) -----------------------------------------------------------


class SlotModeRecord(Base):
    """A slot's recorded mode (online or apprentice); without a row the configured `mode` holds."""

    __tablename__ = "slot_modes"

    slot: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SlotModeChange(Base):
    """One mode change of a slot: who (a caller's role, or "system"), when, why, and its numbers."""

    __tablename__ = "slot_mode_changes"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    slot: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(32))
    from_mode: Mapped[str] = mapped_column(String(16))
    to_mode: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    report: Mapped[dict | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_slot_mode_changes_slot", "slot", "id"),)
# --- auto-optimize runs (issue 13, part 3) -------------------------------------------------


class AutoOptimizeRun(Base):
    """One auto-optimize run of a slot: every candidate VW configuration's off-policy estimate on the
    slot's log, the verdict, and the challenger experiment it started (if any).

    ``outcome``: running, kept_current (no candidate beat the current configuration by the margin),
    proposed (one did; no experiment started: not allowed for the slot, a dry run, or the slot busy,
    see ``note``), started (its challenger experiment ``experiment_id`` is running) or failed.
    ``estimates`` holds one dict per configuration (arguments and figures); no personal value.
    """

    __tablename__ = "auto_optimize_runs"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    slot: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    current_args: Mapped[str] = mapped_column(String(512))
    best_args: Mapped[str] = mapped_column(String(512), default="")
    margin: Mapped[float] = mapped_column(Float, default=0.0)
    decisions: Mapped[int] = mapped_column(Integer, default=0)
    estimates: Mapped[list] = mapped_column(JSON, default=list)
    experiment_id: Mapped[str] = mapped_column(String(64), default="")
    note: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_auto_optimize_runs_slot_id", "slot", "id"),)
# --- content catalogue (issue 13, part 6) ------------------------------------------------------


class CatalogueItem(Base):
    """A content item registered once for Rank's `use_catalogue`: anonymized features only.

    `features` passed the privacy boundary (policy kind candidate_features) at upsert;
    `policy_digest` is the digest of that policy, so an item anonymized under another
    one is known to be stale. `feature_digest` is the `candidate_sets` digest of the
    features with their tag features: the key Rank's decisions reference.
    """

    __tablename__ = "catalogue_items"

    item_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    tags: Mapped[list] = mapped_column(JSON)
    features: Mapped[dict] = mapped_column(JSON)
    feature_digest: Mapped[str] = mapped_column(String(32))
    policy_digest: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32))
    available_from: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    available_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class CatalogueHead(Base):
    """One row whose revision every catalogue write bumps first: writes serialize on its row
    lock, so a serving process reloads its in-memory catalogue exactly when it changed."""

    __tablename__ = "catalogue_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(BigInteger)
# --- metric definitions (issue 15) ---------------------------------------------------------


class MetricDefinitionRecord(Base):
    """One version of an experimenter's metric definition (append-only: a change is a new version).

    `spec` is `tacit.experiments.metric_specs.MetricSpec.to_json()`; a running experiment
    pins the version it started with in its own spec.
    """

    __tablename__ = "metric_definitions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(32))


# The report's queries: first exposure per (arm, subject) read from the index alone, and each
# exposed subject's events of the metric's types in its window.
Index(
    "ix_decisions_experiment_exposure",
    Decision.experiment_id,
    Decision.arm,
    Decision.subject,
    Decision.created_at,
)
Index("ix_events_subject_type_time", TrackedEvent.subject, TrackedEvent.event_type, TrackedEvent.occurred_at)
