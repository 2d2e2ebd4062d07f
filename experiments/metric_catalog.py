"""Metric definitions as versioned, stored resources: create (a new version), get, list.

Built-in event metrics (`metric_specs.BUILTIN_SPECS`) are version 1 of reserved names and
are listed like stored ones; the decision-log metrics (`click_through`, `revenue_per_click`)
are reserved too. Rows are append-only: who created each version and when stays on record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tacit.experiments.errors import MetricNotFound, SpecError
from tacit.experiments.metric_specs import BUILTIN_SPECS, RESERVED_NAMES, MetricSpec
from tacit.experiments.service.records import decode_token, encode_token
from tacit.store.db import Database
from tacit.store.schema import IdempotencyKey, MetricDefinitionRecord

logger = logging.getLogger("tacit.experiments")

_SCOPE = "metric.create"


def _from_row(row: MetricDefinitionRecord) -> MetricSpec:
    return MetricSpec.from_json({**row.spec, "name": row.name, "version": row.version})


class MetricCatalog:
    """The stored metric definitions and the built-ins, by name and version."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.db = db
        self.clock = clock

    def create(self, spec: MetricSpec, actor: str, request_id: str = "") -> MetricSpec:
        """Stores `spec` as the next version of its name; a retried request id returns what it made."""
        spec.validate()
        if spec.name in RESERVED_NAMES:
            raise SpecError("metric.name", "is the name of a built-in metric")
        for _attempt in range(3):
            try:
                return self._create(spec, actor, request_id)
            except IntegrityError:
                continue  # a concurrent create took this version (or this request id): look again
        raise SpecError("metric.name", "is being redefined concurrently; retry")

    def _create(self, spec: MetricSpec, actor: str, request_id: str) -> MetricSpec:
        now = self.clock()
        with self.db.transaction() as session:
            self.db.hold_write_lock(session)  # SQLite: one writer at a time
            if session.get_bind().dialect.name == "postgresql":
                # Creates of one name queue here, so each reads the version its predecessor wrote.
                session.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"metric:{spec.name}"}
                )
            if request_id:
                key = session.get(IdempotencyKey, (_SCOPE, request_id))
                if key is not None:
                    return self.get(str(key.response["name"]), int(key.response["version"]), session)
            latest = session.execute(
                select(func.max(MetricDefinitionRecord.version)).where(
                    MetricDefinitionRecord.name == spec.name
                )
            ).scalar_one_or_none()
            version = int(latest or 0) + 1
            data = spec.to_json()
            data.pop("name")
            data.pop("version")
            session.add(
                MetricDefinitionRecord(
                    name=spec.name, version=version, spec=data, created_at=now, created_by=actor
                )
            )
            if request_id:
                session.add(
                    IdempotencyKey(
                        scope=_SCOPE,
                        request_id=request_id,
                        created_at=now,
                        response={"name": spec.name, "version": version},
                    )
                )
            session.flush()
        logger.info("metric definition created", extra={"version": version})
        return MetricSpec.from_json({**spec.to_json(), "version": version})

    def get(self, name: str, version: int = 0, session: Session | None = None) -> MetricSpec:
        """The named definition at `version` (0: the newest)."""
        if name in BUILTIN_SPECS and version in (0, 1):
            return BUILTIN_SPECS[name]
        if session is None:
            with self.db.transaction() as own:
                return self.get(name, version, own)
        query = select(MetricDefinitionRecord).where(MetricDefinitionRecord.name == name)
        if version:
            query = query.where(MetricDefinitionRecord.version == version)
        row = session.execute(
            query.order_by(MetricDefinitionRecord.version.desc()).limit(1)
        ).scalar_one_or_none()
        if row is None:
            raise MetricNotFound("no metric definition with this name and version")
        return _from_row(row)

    def latest(self, session: Session) -> Mapping[str, MetricSpec]:
        """Every metric's newest version: the built-ins and the stored definitions."""
        newest = (
            select(MetricDefinitionRecord.name, func.max(MetricDefinitionRecord.version).label("version"))
            .group_by(MetricDefinitionRecord.name)
            .subquery()
        )
        rows = session.execute(
            select(MetricDefinitionRecord).join(
                newest,
                (MetricDefinitionRecord.name == newest.c.name)
                & (MetricDefinitionRecord.version == newest.c.version),
            )
        ).scalars()
        return {**BUILTIN_SPECS, **{row.name: _from_row(row) for row in rows}}

    def list_metrics(self, page_size: int = 50, page_token: str = "") -> tuple[list[MetricSpec], str]:
        """Newest versions by name; the token is the last name returned."""
        if page_size < 0:
            raise SpecError("page_size", "must not be negative")
        page_size = min(page_size or 50, 500)
        with self.db.transaction() as session:
            specs = sorted(self.latest(session).values(), key=lambda s: s.name)
        cursor = decode_token("metrics", page_token) if page_token else ""
        after = [s for s in specs if s.name > cursor]
        page = after[:page_size]
        return page, (encode_token("metrics", page[-1].name) if len(after) > page_size else "")
