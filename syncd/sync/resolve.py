"""Settling a conflict held by the ``manual`` policy.

Resolution only rewrites the link's base; the next run does the rest through
the ordinary decision table: keeping *local* makes the base equal the remote
version (so the canonical side reads as "changed locally" and is pushed),
keeping *remote* makes it equal the local version (so the provider's side reads
as "changed remotely" and is pulled in).
"""

from __future__ import annotations

from sqlalchemy import Engine, select, update

from syncd.db import journal
from syncd.db.models import ChangeLogRow, LinkRow
from syncd.db.repo import utcnow
from syncd.errors import SyncdError
from syncd.model import fingerprint

__all__ = ["resolve"]


def resolve(engine: Engine, change_id: int, keep: str) -> str:
    with engine.begin() as conn:
        row = conn.execute(select(ChangeLogRow).where(ChangeLogRow.id == change_id)).first()
        if row is None or row.action != "conflict":
            raise SyncdError(f"change {change_id} is not a conflict (see `syncd status`)")
        if row.status != "planned" or row.resolved_at is not None:
            raise SyncdError(f"conflict {change_id} is not waiting for a decision (status {row.status})")
        versions = row.before or {}
        base = versions.get("remote") if keep == "local" else versions.get("local")
        if base is not None and row.canonical_id is not None:
            conn.execute(update(LinkRow).where(LinkRow.provider == row.provider, LinkRow.entity == row.entity,
                                               LinkRow.canonical_id == row.canonical_id)
                         .values(base=base, base_fingerprint=fingerprint(base)))
        if row.entity == "contact":  # the next (incremental) run must look at this record again
            journal.record(conn, row.provider, "contact", canonical_ids=[row.canonical_id] if row.canonical_id else [],
                           remote_ids=[row.remote_id] if row.remote_id and not row.canonical_id else [])
        conn.execute(update(ChangeLogRow).where(ChangeLogRow.id == change_id).values(
            status="applied", resolved_at=utcnow(), after={"kept": keep}))
    return f"conflict {change_id} resolved: {keep} version kept; the next run carries it out"
