"""Client ids stored before they were digested: rewritten once, at start-up, to their keyed digests.

A raw client id matches ``[A-Za-z0-9_-]{8,64}`` and so never holds ``:``; a digest
always does (``<key_id>:<mac>``). Rows of a database written by an older version are
found by that and rewritten under the active key in one transaction, which also
records a marker so later starts skip the scan. Audit records keep what they hold:
their correlation ids are covered by the chain's hashes.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from tacit.privacy.pseudonym import KeyRing
from tacit.store.db import Database
from tacit.store.schema import Decision, IdempotencyKey, Reward, TrackedEvent

logger = logging.getLogger("tacit.privacy")

MARKER_SCOPE = "migration"
MARKER_ID = "client-id-digests-v1"


def _raw(column):  # type: ignore[no-untyped-def]
    return column.not_like("%:%")


def digest_legacy_ids(db: Database, keyring: KeyRing) -> int:
    """Rewrites raw event and request ids to digests (once per database); returns the rows changed."""
    try:
        with db.transaction() as session:
            if session.get(IdempotencyKey, (MARKER_SCOPE, MARKER_ID)) is not None:
                return 0
            changed = 0
            for table in (Decision, TrackedEvent):
                raw_ids = session.execute(select(table.event_id).where(_raw(table.event_id))).scalars().all()
                for raw in raw_ids:
                    session.execute(
                        update(table)
                        .where(table.event_id == raw)
                        .values(event_id=keyring.digest(raw))
                        .execution_options(synchronize_session=False)
                    )
                    changed += 1
            rewards = session.execute(
                select(Reward.id, Reward.event_id, Reward.request_id).where(
                    or_(_raw(Reward.event_id), _raw(Reward.request_id))
                )
            ).all()
            for reward_id, event_id, request_id in rewards:
                session.execute(
                    update(Reward)
                    .where(Reward.id == reward_id)
                    .values(
                        event_id=event_id if ":" in event_id else keyring.digest(event_id),
                        request_id=request_id if ":" in request_id else keyring.digest(request_id),
                    )
                    .execution_options(synchronize_session=False)
                )
                changed += 1
            keys = session.execute(
                select(IdempotencyKey.scope, IdempotencyKey.request_id).where(_raw(IdempotencyKey.request_id))
            ).all()
            for scope, request_id in keys:
                session.execute(
                    update(IdempotencyKey)
                    .where(IdempotencyKey.scope == scope, IdempotencyKey.request_id == request_id)
                    .values(request_id=keyring.digest(request_id))
                    .execution_options(synchronize_session=False)
                )
                changed += 1
            session.add(
                IdempotencyKey(
                    scope=MARKER_SCOPE,
                    request_id=MARKER_ID,
                    created_at=datetime.now(UTC),
                    response={"rows": changed},
                )
            )
    except IntegrityError:
        return 0  # another process sharing the database did it first
    if changed:
        logger.info("client ids from an older version digested", extra={"rows": changed})
    return changed
