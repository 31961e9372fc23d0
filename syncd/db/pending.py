"""Pending deletes (``deletes = "approve"``): listed, approved or declined by an operator.

A pending delete is a ``change_log`` row (action ``delete``) whose status is
``awaiting_approval``; an operator's decision makes it ``approved`` (the next
run carries the deletion out) or ``declined`` (the next run restores the record
on the side that lost it). Either way the record is journalled, so the next run
looks at it even when nothing else changed; the run settles the row
(``resolved_at``) once it has done so.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update

from syncd.db import journal
from syncd.db.models import ChangeLogRow
from syncd.errors import SyncdError
from syncd.model import PendingStatus

__all__ = ["NotPending", "Pending", "decide", "pending_deletes"]


class NotPending(SyncdError):
    """Ids an operator named that are not deletions awaiting approval."""

    def __init__(self, ids: Collection[int]) -> None:
        self.ids = sorted(ids)
        super().__init__(f"change {', '.join(map(str, self.ids))} is not a deletion awaiting approval "
                         "(see `syncd deletes`)")


@dataclass(frozen=True, slots=True)
class Pending:
    """One deletion waiting for an operator."""

    id: int
    at: datetime
    provider: str
    entity: str
    direction: str  # inbound: it would delete from the book; outbound: at the provider
    canonical_id: int | None
    remote_id: str | None
    reason: str | None
    last_version: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(), "provider": self.provider, "entity": self.entity,
                "side": "book" if self.direction == "inbound" else self.provider,
                "canonical_id": self.canonical_id, "remote_id": self.remote_id, "reason": self.reason,
                "last_version": self.last_version}


def pending_deletes(engine: Engine, provider: str | None = None) -> list[Pending]:
    """Every deletion waiting for a decision, oldest first (of one provider, when given)."""
    c = ChangeLogRow
    query = select(c.id, c.at, c.provider, c.entity, c.direction, c.canonical_id, c.remote_id, c.reason, c.before
                   ).where(c.status == PendingStatus.AWAITING, c.resolved_at.is_(None)).order_by(c.id)
    if provider is not None:
        query = query.where(c.provider == provider)
    with engine.connect() as conn:
        return [Pending(*row) for row in conn.execute(query)]


def decide(engine: Engine, ids: Collection[int] | None, *, approve: bool, provider: str | None = None) -> list[int]:
    """Approve or decline pending deletes (``ids``; None: every one, of ``provider`` when given); their ids.

    An id that is not a waiting deletion is an error naming it; nothing is decided then.
    """
    waiting = {p.id: p for p in pending_deletes(engine, provider)}
    chosen = sorted(waiting) if ids is None else sorted(set(ids))
    unknown = [i for i in chosen if i not in waiting]
    if unknown:
        raise NotPending(unknown)
    with engine.begin() as conn:
        for id_ in chosen:
            conn.execute(update(ChangeLogRow).where(ChangeLogRow.id == id_)
                         .values(status=PendingStatus.APPROVED if approve else PendingStatus.DECLINED))
            p = waiting[id_]
            if p.entity == "contact":  # the next (incremental) run must look at the record again
                journal.record(conn, p.provider, "contact",
                               canonical_ids=[p.canonical_id] if p.canonical_id else [],
                               remote_ids=[p.remote_id] if p.remote_id else [])
    return chosen
