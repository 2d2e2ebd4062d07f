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


def test_a_failed_statement_does_not_carry_its_bound_values_in_the_error(database_url: str) -> None:
    """Storage errors reach logs (background loops log them): SQLAlchemy must not append the
    statement's parameters, which hold stored (pseudonymized) values, to the message."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    planted = "planted-value-7f3a9c"
    db = Database.open(database_url)
    try:
        with pytest.raises(IntegrityError) as raised, db.engine.begin() as connection:
            connection.execute(text("CREATE TEMPORARY TABLE probe (id INTEGER PRIMARY KEY, note TEXT)"))
            connection.execute(text("INSERT INTO probe (id, note) VALUES (1, 'first')"))
            insert = text("INSERT INTO probe (id, note) VALUES (:id, :note)")
            connection.execute(insert, {"id": 1, "note": planted})
        assert planted not in str(raised.value)
        assert "hidden due to hide_parameters" in str(raised.value)
    finally:
        db.dispose()
