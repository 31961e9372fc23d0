"""Settling a conflict held by the ``manual`` policy: which version becomes the base.

Resolution only rewrites the link's base; the next run does the rest through
the ordinary decision table: keeping *local* makes the base equal the remote
version (so the canonical side reads as "changed locally" and is pushed),
keeping *remote* makes it equal the local version (so the provider's side reads
as "changed remotely" and is pulled in). The writes are
:func:`syncd.db.conflicts.settle_conflict`.
"""

from __future__ import annotations

from sqlalchemy import Engine

from syncd.db.conflicts import Side, settle_conflict

__all__ = ["base_for", "resolve"]


def base_for(keep: Side) -> Side:
    """The version that becomes the link's base when ``keep`` wins: the other side's, so ``keep`` reads as changed."""
    return "remote" if keep == "local" else "local"


def resolve(engine: Engine, change_id: int, keep: Side) -> str:
    """Settle held conflict ``change_id`` keeping the ``keep`` side's version; the message to show."""
    settle_conflict(engine, change_id, base=base_for(keep), kept=keep)
    return f"conflict {change_id} resolved: {keep} version kept; the next run carries it out"
