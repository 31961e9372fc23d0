"""The database's clock: every timestamp syncd writes is an aware UTC datetime from :func:`utcnow`.

A leaf module (it imports nothing of syncd) so that any module of ``db`` may
use it without an import circle: ``leases`` cannot import ``repo``, which
imports ``leases`` for :func:`~syncd.db.leases.pid_alive`.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["utcnow"]


def utcnow() -> datetime:
    """Now, in UTC (the timezone every stored timestamp is in)."""
    return datetime.now(UTC)
