"""The daemon's upkeep of its own rows: change-log retention, and the runs a failure left ``running``.

Neither is part of a run's work (that is :class:`~syncd.db.repo.Store`): the
daemon calls them between runs (see :mod:`syncd.daemon`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, delete, not_, select, update

from syncd.db.clock import utcnow
from syncd.db.models import ChangeLogRow, SyncRunRow

__all__ = ["fail_running_runs", "prune_change_log"]


def fail_running_runs(engine: Engine, owner: str, error: str) -> int:
    """Mark the ``running`` sync_runs rows of ``owner`` (a process) failed with ``error``; how many there were."""
    with engine.begin() as conn:
        result = conn.execute(update(SyncRunRow).where(SyncRunRow.owner == owner, SyncRunRow.status == "running")
                              .values(status="failed", finished_at=utcnow(), error=error))
    return result.rowcount or 0


def prune_change_log(engine: Engine, days: int, *, now: datetime | None = None, batch: int = 5000) -> int:
    """Delete change_log rows older than ``days`` (open manual conflicts kept); the number deleted.

    In batches, so a first prune of a large table never holds SQLite's write lock for long.
    """
    cutoff = (now or utcnow()) - timedelta(days=days)
    open_conflict = and_(ChangeLogRow.action == "conflict", ChangeLogRow.status == "planned",
                         ChangeLogRow.resolved_at.is_(None))
    total = 0
    while True:
        with engine.begin() as conn:
            ids = conn.execute(select(ChangeLogRow.id).where(ChangeLogRow.at < cutoff, not_(open_conflict))
                               .limit(batch)).scalars().all()
            if ids:
                conn.execute(delete(ChangeLogRow).where(ChangeLogRow.id.in_(ids)))
        total += len(ids)
        if len(ids) < batch:
            return total
