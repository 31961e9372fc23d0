"""Read-only queries for people and monitoring: ``syncd status``, ``syncd log``, the demo, the metrics.

Every function opens its own short read and returns plain values or detached
rows (their columns loaded, nothing left to fetch), so the caller may print
them after the connection is back in the pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from syncd.db.models import ChangeLogRow, PullStateRow, SyncRunRow
from syncd.db.repo import latest_outbound_ids

__all__ = ["OperationCount", "StatusReport", "change_log", "last_successes", "operation_counts", "run_changes",
           "status_report"]

#: Most rows of each list `syncd status` shows.
STATUS_ROWS = 100

OperationCount = tuple[str, str, str, str, int]
"""(provider, entity, action, status, count) of some change-log rows."""


@dataclass(frozen=True, slots=True)
class StatusReport:
    """What ``syncd status`` shows, read in one session."""

    last_run: SyncRunRow | None
    pulls: dict[str, PullStateRow]  # by provider: how its last pull ended
    problems: list[ChangeLogRow]  # records whose latest outbound row failed or was rejected, newest first
    held: list[ChangeLogRow]  # conflicts the manual policy holds for `syncd resolve`, newest first


def status_report(engine: Engine) -> StatusReport:
    """The latest run, each provider's last pull, and the records that want attention (at most 100 of each)."""
    with Session(engine) as session:
        last = session.scalars(select(SyncRunRow).order_by(SyncRunRow.id.desc()).limit(1)).first()
        pulls = {p.provider: p for p in session.scalars(select(PullStateRow))}
        problems = session.scalars(select(ChangeLogRow).where(ChangeLogRow.id.in_(latest_outbound_ids()),
                                                               ChangeLogRow.status.in_(("failed", "rejected")))
                                   .order_by(ChangeLogRow.id.desc()).limit(STATUS_ROWS)).all()
        held = session.scalars(select(ChangeLogRow).where(ChangeLogRow.action == "conflict",
                                                           ChangeLogRow.status == "planned",
                                                           ChangeLogRow.resolved_at.is_(None))
                               .order_by(ChangeLogRow.id.desc()).limit(STATUS_ROWS)).all()
    return StatusReport(last, pulls, list(problems), list(held))


def change_log(engine: Engine, *, provider: str | None = None, run_id: int | None = None,
               limit: int = 50) -> list[ChangeLogRow]:
    """The newest ``limit`` change-log rows, newest first; only ``provider``'s, or ``run_id``'s, when given."""
    query = select(ChangeLogRow).order_by(ChangeLogRow.id.desc()).limit(limit)
    if provider:
        query = query.where(ChangeLogRow.provider == provider)
    if run_id is not None:
        query = query.where(ChangeLogRow.run_id == run_id)
    with Session(engine) as session:
        return list(session.scalars(query).all())


def run_changes(engine: Engine, run_id: int) -> list[ChangeLogRow]:
    """The change-log rows run ``run_id`` wrote, in order, without the bare links (they change no record)."""
    with Session(engine) as session:
        return list(session.scalars(select(ChangeLogRow).where(ChangeLogRow.run_id == run_id,
                                                               ChangeLogRow.action != "link")
                                    .order_by(ChangeLogRow.id)).all())


# -- for the metrics ---------------------------------------------------------------------------


def last_successes(engine: Engine, *, runs: int = 500) -> dict[str, datetime]:
    """When each account last finished a run without failure, from the latest ``runs`` runs."""
    with engine.connect() as conn:
        rows = conn.execute(select(SyncRunRow.finished_at, SyncRunRow.summary)
                            .where(SyncRunRow.finished_at.is_not(None))
                            .order_by(SyncRunRow.id.desc()).limit(runs)).all()
    found: dict[str, datetime] = {}
    for finished_at, summary in rows:
        for name, counts in ((summary or {}).get("providers") or {}).items():
            if finished_at is not None and isinstance(counts, dict) and _clean(counts):
                found.setdefault(name, finished_at)
    return found


def _clean(counts: dict[str, object]) -> bool:
    """Whether a provider's run summary says it synced without a failure."""
    return counts.get("status") == "ok" and not counts.get("failed")


def operation_counts(engine: Engine, run_id: int) -> list[OperationCount]:
    """(provider, entity, action, status, count) of the change-log rows run ``run_id`` wrote."""
    c = ChangeLogRow
    with engine.connect() as conn:
        rows = conn.execute(select(c.provider, c.entity, c.action, c.status, func.count())
                            .where(c.run_id == run_id).group_by(c.provider, c.entity, c.action, c.status)).all()
    return [(provider, entity, action, status, int(count)) for provider, entity, action, status, count in rows]
