"""The content catalogue's rows (`CatalogueItem`): anonymized item features, tags, windows.

Every write first bumps `catalogue_head.revision` in its transaction, so writes
serialize on that row and a reader that sees the same revision twice knows
nothing changed in between (`revision`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from tacit.store.schema import CatalogueHead, CatalogueItem

HEAD_ID = 1


@dataclass(frozen=True)
class ItemRow:
    """One stored item (what `CatalogueItem` holds), as plain values."""

    item_id: str
    tags: tuple[str, ...]
    features: Mapping[str, Any]
    feature_digest: str
    policy_digest: str
    key_id: str
    available_from: datetime | None
    available_until: datetime | None
    updated_at: datetime

    def same_content(self, other: ItemRow) -> bool:
        """Equal in what Rank uses (not the update time)."""
        return (
            self.tags,
            self.feature_digest,
            self.policy_digest,
            self.available_from,
            self.available_until,
        ) == (
            other.tags,
            other.feature_digest,
            other.policy_digest,
            other.available_from,
            other.available_until,
        )


def _rowcount(result: object) -> int:
    """Rows an UPDATE or DELETE matched."""
    return int(getattr(result, "rowcount", 0) or 0)


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _row(item: CatalogueItem) -> ItemRow:
    return ItemRow(
        item_id=item.item_id,
        tags=tuple(item.tags),
        features=dict(item.features),
        feature_digest=item.feature_digest,
        policy_digest=item.policy_digest,
        key_id=item.key_id,
        available_from=_utc(item.available_from),
        available_until=_utc(item.available_until),
        updated_at=_utc(item.updated_at) or item.updated_at,
    )


def bump_revision(session: Session) -> int:
    """Takes the catalogue's write lock (its head row) and returns the new revision."""
    bumped = _rowcount(
        session.execute(
            update(CatalogueHead)
            .where(CatalogueHead.id == HEAD_ID)
            .values(revision=CatalogueHead.revision + 1)
        )
    )
    if not bumped:  # a database created without the migration's row
        dialect = (
            postgresql if session.bind is not None and session.bind.dialect.name == "postgresql" else sqlite
        )
        session.execute(
            dialect.insert(CatalogueHead)
            .values(id=HEAD_ID, revision=1)
            .on_conflict_do_update(index_elements=["id"], set_={"revision": CatalogueHead.revision + 1})
        )
    return int(
        session.execute(select(CatalogueHead.revision).where(CatalogueHead.id == HEAD_ID)).scalar_one()
    )


def revision(session: Session) -> int:
    found = session.execute(select(CatalogueHead.revision).where(CatalogueHead.id == HEAD_ID)).scalar()
    return int(found or 0)


def rows_by_id(session: Session, item_ids: Sequence[str]) -> dict[str, ItemRow]:
    found = session.execute(select(CatalogueItem).where(CatalogueItem.item_id.in_(list(item_ids)))).scalars()
    return {item.item_id: _row(item) for item in found}


def write_rows(session: Session, rows: Sequence[ItemRow]) -> None:
    """Inserts or replaces the rows (the caller bumped the revision in this transaction)."""
    if not rows:
        return
    dialect = postgresql if session.bind is not None and session.bind.dialect.name == "postgresql" else sqlite
    values = [
        {
            "item_id": row.item_id,
            "tags": list(row.tags),
            "features": dict(row.features),
            "feature_digest": row.feature_digest,
            "policy_digest": row.policy_digest,
            "key_id": row.key_id,
            "available_from": row.available_from,
            "available_until": row.available_until,
            "updated_at": row.updated_at,
        }
        for row in rows
    ]
    statement = dialect.insert(CatalogueItem)
    columns = [name for name in values[0] if name != "item_id"]
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["item_id"], set_={name: statement.excluded[name] for name in columns}
        ),
        values,
    )


def delete_row(session: Session, item_id: str) -> bool:
    return bool(_rowcount(session.execute(delete(CatalogueItem).where(CatalogueItem.item_id == item_id))))


def all_rows(session: Session) -> list[ItemRow]:
    return [_row(item) for item in session.execute(select(CatalogueItem)).scalars()]


def page_rows(session: Session, after: str | None, limit: int) -> list[ItemRow]:
    """Up to `limit` rows in id order after `after`."""
    query = select(CatalogueItem).order_by(CatalogueItem.item_id).limit(limit)
    if after is not None:
        query = query.where(CatalogueItem.item_id > after)
    return [_row(item) for item in session.execute(query).scalars()]
