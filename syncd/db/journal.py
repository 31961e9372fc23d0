"""The change journal and each account's position in it (see "Change detection" in :mod:`syncd.db.models`).

Positions are integers whose meaning depends on the database: on SQLite the
highest ``seq`` seen (writers are serialised, so every lower ``seq`` is
committed), on PostgreSQL the oldest transaction still running (every row of an
older transaction is visible; rows of later ones are at or past it).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, ColumnElement, delete, insert, literal_column, or_, select, text, update

from syncd.db.models import RecordChangeRow, SyncPositionRow, table_of

__all__ = ["FLOOR", "Changes", "Position", "changes_since", "current_position", "own", "positions", "prune",
           "record", "save_position", "transaction_start"]

#: The ``sync_positions`` row holding the journal's pruned start.
FLOOR = "*"

_TXID = "pg_current_xact_id()::text::bigint"


@dataclass
class Changes:
    """The records journalled past a position, for one account."""

    contacts: set[int] = field(default_factory=set)  # canonical contact ids
    groups: set[int] = field(default_factory=set)  # canonical group ids
    remote_contacts: set[str] = field(default_factory=set)  # remote ids at this account


@dataclass(frozen=True, slots=True)
class Position:
    """One account's place in the journal, and the run that moved it there (whose own rows it skips)."""

    position: int
    settings: str
    full_at: datetime | None
    run_id: int | None = None


def _postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def current_position(conn: Connection) -> int:
    """Where the journal stands now: the position a run that starts now moves its accounts to.

    On SQLite the last ``seq`` ever handed out (``sqlite_sequence``), not the
    highest left in the table: pruning may have emptied it.
    """
    if _postgresql(conn):
        return int(conn.execute(select(literal_column("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")))
                   .scalar_one())
    last = conn.execute(text("SELECT seq FROM sqlite_sequence WHERE name = 'record_changes'")).scalar()
    return int(last or 0)


def _past(conn: Connection, position: int) -> ColumnElement[bool]:
    """Rows at or past ``position`` (PostgreSQL) / after it (SQLite): what a reader at ``position`` has not seen."""
    if _postgresql(conn):
        return RecordChangeRow.txid >= position
    return RecordChangeRow.seq > position


def changes_since(conn: Connection, provider: str, since: Position) -> Changes:
    """The canonical changes and the records marked for ``provider`` past ``since``, but for its run's own."""
    r = RecordChangeRow
    query = (select(r.entity, r.canonical_id, r.remote_id).distinct()
             .where(_past(conn, since.position), or_(r.provider.is_(None), r.provider == provider)))
    if since.run_id is not None:
        query = query.where(or_(r.writer.is_(None), r.writer != since.run_id))
    rows = conn.execute(query)
    changes = Changes()
    for entity, canonical_id, remote_id in rows:
        if entity == "group":
            if canonical_id is not None:
                changes.groups.add(canonical_id)
        elif canonical_id is not None:
            changes.contacts.add(canonical_id)
        elif remote_id is not None:
            changes.remote_contacts.add(remote_id)
    return changes


def record(conn: Connection, provider: str, entity: str, *, canonical_ids: Iterable[int] = (),
           remote_ids: Iterable[str] = (), writer: int | None = None) -> None:
    """Journal records of ``provider`` for its next run to look at (in the caller's transaction).

    ``writer``: the run these rows report the work of (see :func:`own`); None for work still to do.
    """
    rows = [{"provider": provider, "entity": entity, "canonical_id": cid, "remote_id": None, "writer": writer}
            for cid in canonical_ids]
    rows += [{"provider": provider, "entity": entity, "canonical_id": None, "remote_id": rid, "writer": writer}
             for rid in remote_ids]
    if not rows:
        return
    statement = insert(table_of(RecordChangeRow))
    if _postgresql(conn):
        statement = statement.values(txid=literal_column(_TXID))
    conn.execute(statement, rows)


def transaction_start(conn: Connection) -> int:
    """Where the journal stands inside a transaction holding the write lock (SQLite: ``BEGIN IMMEDIATE``).

    On SQLite no other writer can add rows until the transaction ends, so the
    rows past this are its own; PostgreSQL needs no such mark (0).
    """
    return 0 if _postgresql(conn) else current_position(conn)


def own(conn: Connection, run_id: int, start: int) -> None:
    """Tag the journal rows this transaction wrote (triggers included) as ``run_id``'s own."""
    r = RecordChangeRow
    mine = r.txid == literal_column(_TXID) if _postgresql(conn) else r.seq > start
    conn.execute(update(r).where(mine, r.writer.is_(None)).values(writer=run_id))


def positions(conn: Connection) -> dict[str, Position]:
    """Every account's position, and the journal's pruned start under :data:`FLOOR`."""
    p = SyncPositionRow
    rows = conn.execute(select(p.provider, p.position, p.settings, p.full_at, p.run_id))
    return {provider: Position(position, settings, full_at, run_id)
            for provider, position, settings, full_at, run_id in rows}


def save_position(conn: Connection, provider: str, position: int, settings: str, full_at: datetime | None,
                  run_id: int | None = None) -> None:
    """Move an account to ``position`` (``full_at`` None keeps the time of its last full run)."""
    p = SyncPositionRow
    values: dict[str, object] = {"position": position, "settings": settings, "run_id": run_id}
    if full_at is not None:
        values["full_at"] = full_at
    if conn.execute(update(p).where(p.provider == provider).values(**values)).rowcount == 0:
        conn.execute(insert(p).values(provider=provider, **({"full_at": None} | values)))


def prune(conn: Connection, accounts: Collection[str], known: Mapping[str, Position]) -> int:
    """Drop the rows every account in ``accounts`` has read; raise the floor to match. Rows deleted."""
    # An account without a position does a full run anyway (and one whose position
    # ends up below the floor does a full one again): it holds nothing back.
    held = [known[a].position for a in accounts if a in known]
    if not held:
        return 0
    floor = min(held)
    r = RecordChangeRow
    gone = r.txid < floor if _postgresql(conn) else r.seq <= floor
    deleted = conn.execute(delete(r).where(gone)).rowcount or 0
    previous = known.get(FLOOR)
    if previous is None or previous.position < floor:
        save_position(conn, FLOOR, floor, "", None)
    return deleted
