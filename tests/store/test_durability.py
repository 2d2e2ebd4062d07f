"""Acknowledged writes are synced on commit; only Rank's decision log may skip the sync."""

from __future__ import annotations

from sqlalchemy import text

from tacit.store.db import Database


def _sync_setting(db: Database, durable: bool) -> str:
    with db.transaction(durable=durable) as session:
        if db.engine.dialect.name == "sqlite":
            return str(session.execute(text("PRAGMA synchronous")).scalar_one())
        return str(session.execute(text("SHOW synchronous_commit")).scalar_one())


def test_durable_transactions_sync_and_relaxed_ones_do_not(database_url: str) -> None:
    db = Database.open(database_url)
    try:
        if db.engine.dialect.name == "sqlite":
            assert _sync_setting(db, durable=True) == "2"  # FULL
            assert _sync_setting(db, durable=False) == "1"  # NORMAL
        else:
            assert _sync_setting(db, durable=True) == "on"
            assert _sync_setting(db, durable=False) == "off"
            # SET LOCAL ends with its transaction: the next durable one syncs again.
            assert _sync_setting(db, durable=True) == "on"
    finally:
        db.dispose()
