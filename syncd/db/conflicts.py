"""Settling a conflict the ``manual`` policy holds: the writes of ``syncd resolve``.

Which version becomes the link's base is decided by :mod:`syncd.sync.resolve`;
this module checks that the change-log row is a conflict still waiting, and
writes the decision in one transaction.
"""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Engine, update
from sqlalchemy.orm import Session

from syncd.db import journal
from syncd.db.clock import utcnow
from syncd.db.models import ChangeLogRow, LinkRow
from syncd.errors import SyncdError
from syncd.model import fingerprint

__all__ = ["Side", "settle_conflict"]

Side = Literal["local", "remote"]
"""A side of a conflict: the canonical book's version, or the provider's."""


def settle_conflict(engine: Engine, change_id: int, *, base: Side, kept: Side) -> None:
    """Settle held conflict ``change_id``: its ``base`` version becomes the link's base, ``kept`` is recorded.

    SyncdError when the row is not a conflict, or not one still waiting for a
    decision. The record is journalled so that the next run, incremental
    too, looks at it again and carries the decision out.
    """
    with Session(engine) as s, s.begin():
        row = _waiting_conflict(s, change_id)
        version = (row.before or {}).get(base)
        if version is not None and row.canonical_id is not None:
            s.execute(update(LinkRow).where(LinkRow.provider == row.provider, LinkRow.entity == row.entity,
                                               LinkRow.canonical_id == row.canonical_id)
                         .values(base=version, base_fingerprint=fingerprint(version)))
        if row.entity == "contact":  # the next (incremental) run must look at this record again
            journal.record(s.connection(), row.provider, "contact",
                           canonical_ids=[row.canonical_id] if row.canonical_id else [],
                           remote_ids=[row.remote_id] if row.remote_id and not row.canonical_id else [])
        s.execute(update(ChangeLogRow).where(ChangeLogRow.id == change_id).values(
            status="applied", resolved_at=utcnow(), after={"kept": kept}))


def _waiting_conflict(s: Session, change_id: int) -> ChangeLogRow:
    """Change-log row ``change_id``, when it is a conflict still waiting for a decision; else SyncdError."""
    row = s.get(ChangeLogRow, change_id)
    if row is None or row.action != "conflict":
        raise SyncdError(f"change {change_id} is not a conflict (see `syncd status`)")
    if row.status != "planned" or row.resolved_at is not None:
        raise SyncdError(f"conflict {change_id} is not waiting for a decision (status {row.status})")
    return row
