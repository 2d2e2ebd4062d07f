"""Pseudonym keys that every replica provably shares.

Replicas on one database must pseudonymize a subject identically, or profiles,
experiment assignment and erasure split between them. At start each process
compares its key ring's fingerprints (`key_fingerprint`, never the keys) with the
ones stored in `pseudonym_keys`:

* an empty table: this ring is registered (the first start of the deployment);
* the database's active key is this ring's active key, and every key id both know
  has the same fingerprint: the replica starts;
* this ring's active key is new and the database's active key is held by this ring
  as a verify-only key: a rotation (`tacit keys rotate`) — the new key becomes the
  registered active one;
* anything else (a replica that made its own keys, an old copy of the key file,
  the same key id with other key material): `KeyRingMismatch`, and it must not start.

The check runs under a lock on the table, so two replicas starting at once on an
empty database cannot both register different keys.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from tacit.privacy.pseudonym import KeyRing, KeyRingError
from tacit.store.db import Database
from tacit.store.schema import PseudonymKey


class KeyRingMismatch(KeyRingError):
    """This process's pseudonym keys are not the ones the database's other replicas use."""


def _lock_table(session: Session) -> None:
    """Serializes registrations: PostgreSQL locks the table, SQLite takes its write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("LOCK TABLE pseudonym_keys IN SHARE ROW EXCLUSIVE MODE"))
    else:
        # Any UPDATE, even of no row, takes SQLite's write lock until commit.
        session.execute(update(PseudonymKey).where(PseudonymKey.key_id == "").values(active=False))


def register_key_ring(db: Database, ring: KeyRing, now: datetime | None = None) -> None:
    """Checks `ring` against the keys recorded in the database; registers it when it may.

    Raises `KeyRingMismatch` (naming key ids only) when the ring differs.
    """
    now = now or datetime.now(UTC)
    mine = ring.fingerprints()
    with db.transaction() as session:
        _lock_table(session)
        stored = {row.key_id: row for row in session.execute(select(PseudonymKey)).scalars()}
        for key_id, fingerprint in mine.items():
            if key_id in stored and stored[key_id].fingerprint != fingerprint:
                raise KeyRingMismatch(
                    f"pseudonym key {key_id} differs from the key with that id the database was started with"
                )
        active = next((row for row in stored.values() if row.active), None)
        if active is not None and active.key_id != ring.active_key_id:
            rotated = active.key_id in ring.keys and ring.active_key_id not in stored
            if not rotated:
                raise KeyRingMismatch(
                    f"this process's active pseudonym key is {ring.active_key_id}, but the database's "
                    f"replicas use {active.key_id}"
                )
            active.active = False
        for key_id, fingerprint in mine.items():
            if key_id not in stored:
                session.add(
                    PseudonymKey(
                        key_id=key_id,
                        fingerprint=fingerprint,
                        registered_at=now,
                        active=key_id == ring.active_key_id,
                    )
                )
            elif key_id == ring.active_key_id:
                stored[key_id].active = True
