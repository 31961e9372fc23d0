"""The engine's database I/O: the canonical book, links, mirror, journal, runs and change log.

One :class:`Store` per run. Every write is a Core statement over many rows
(``executemany``), never an ORM object per record. A dry run (``syncd plan``)
uses the very same code: its Store runs everything inside one transaction that
is rolled back at the end (:meth:`Store.close`), so plan and sync share one
code path and a plan leaves nothing behind.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, LargeBinary, String, cast, delete, func, insert, or_, select, type_coerce, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from syncd.db import journal
from syncd.db.batch import chunks, insert_ids, insert_rows, rows_in, update_by_id
from syncd.db.canonical import Book, Invalid, read_contacts, read_groups
from syncd.db.clock import utcnow
from syncd.db.leases import pid_alive
from syncd.db.models import (
    ChangeLogRow,
    ContactRow,
    GroupMemberRow,
    GroupRow,
    LinkRow,
    OptOutRow,
    PullStateRow,
    RemoteContactRow,
    RemoteGroupRow,
    SyncRunRow,
    table_of,
)
from syncd.model import (
    BaseRecord,
    ChangeEntry,
    Contact,
    Group,
    PendingStatus,
    RemoteContact,
    RemoteGroup,
    fingerprint,
)

__all__ = ["Book", "Ledger", "LedgerRow", "Store"]


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """A record's latest outbound change-log row, when it failed or was rejected."""

    id: int
    status: str  # failed | rejected
    attempts: int
    next_attempt_at: datetime | None
    fingerprint: str | None  # rejected: the projection refused (retried once the record changes)

    def due(self, now: datetime, cap: int) -> bool:
        """A failed record whose next attempt has come (and that has attempts left)."""
        return (self.status == "failed" and self.attempts < cap
                and (self.next_attempt_at is None or self.next_attempt_at <= now))


Ledger = dict[tuple[str, int | None, str | None], LedgerRow]
"""(entity, canonical id, remote id when there is no canonical id) -> the record's :class:`LedgerRow`."""


class Store:
    """Database access for one run (a context manager: see :meth:`close`)."""

    def __init__(self, engine: Engine, *, dry_run: bool = False) -> None:
        self.engine = engine
        self.dry_run = dry_run
        self._connection: Connection | None = None
        self.run_id = 0  # the run this store serves, once started
        if dry_run:
            self._connection = engine.connect()
            self._connection.begin()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the run's use of the database; a dry run's writes are rolled back here."""
        if self._connection is not None:
            self._connection.rollback()
            self._connection.close()
            self._connection = None

    def session(self) -> Session:
        if self._connection is not None:  # a dry run: every transaction is a savepoint of the one rolled back
            return Session(self._connection, expire_on_commit=False, join_transaction_mode="create_savepoint")
        return Session(self.engine, expire_on_commit=False)

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A transaction that writes the canonical book: the journal rows it causes are tagged as this run's own.

        On SQLite it takes the write lock at once (``BEGIN IMMEDIATE``), so the
        journal rows past where it stood then are this transaction's.
        """
        with self.session() as s, s.begin():
            conn = s.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            start = journal.transaction_start(conn)
            yield s
            if self.run_id:
                journal.own(conn, self.run_id, start)

    # -- runs ---------------------------------------------------------------

    def start_run(self, trigger: str, owner: str) -> int:
        with self.session() as s, s.begin():
            self._close_dead_runs(s)
            row = SyncRunRow(started_at=utcnow(), trigger=trigger, status="running", summary={}, owner=owner)
            s.add(row)
            s.flush()
            self.run_id = row.id
            return row.id

    def _close_dead_runs(self, s: Session) -> None:
        """Runs still `running` whose process on this host is gone (killed): failed, interrupted."""
        host = socket.gethostname()
        for run in s.scalars(select(SyncRunRow).where(SyncRunRow.status == "running")):
            owner_host, _, pid = (run.owner or "").rpartition(":")
            if owner_host == host and pid.isdigit() and not pid_alive(int(pid)):
                run.status, run.finished_at, run.error = "failed", utcnow(), "interrupted: its process ended mid-run"

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any], error: str | None = None) -> None:
        with self.session() as s, s.begin():
            s.execute(update(SyncRunRow).where(SyncRunRow.id == run_id).values(
                finished_at=utcnow(), status=status, summary=summary, error=error))

    def settle_interrupted(self, providers: Iterable[str]) -> int:
        """Operations left ``pending`` by a run that died: mark them failed (this run re-plans them)."""
        with self.session() as s, s.begin():
            result = s.execute(update(ChangeLogRow)
                               .where(ChangeLogRow.status == "pending", ChangeLogRow.provider.in_(list(providers)))
                               .values(status="failed", error="interrupted before its outcome was recorded; "
                                                              "re-planned from the provider's state"))
            return int(getattr(result, "rowcount", 0) or 0)

    # -- journal ------------------------------------------------------------

    def journal_position(self) -> int:
        with self.session() as s:
            return journal.current_position(s.connection())

    def journal_changes(self, provider: str, since: journal.Position) -> journal.Changes:
        with self.session() as s:
            return journal.changes_since(s.connection(), provider, since)

    def positions(self) -> dict[str, journal.Position]:
        with self.session() as s:
            return journal.positions(s.connection())

    def save_position(self, provider: str, position: int, settings: str, *, full: bool,
                      marks: Collection[int] = (), remote_marks: Collection[str] = ()) -> None:
        """Move an account past what it reconciled, journalling what it left out of step (one transaction)."""
        with self.session() as s, s.begin():
            conn = s.connection()
            journal.record(conn, provider, "contact", canonical_ids=sorted(marks), remote_ids=sorted(remote_marks))
            journal.save_position(conn, provider, position, settings, utcnow() if full else None, self.run_id)

    def mark(self, provider: str, *, canonical_ids: Collection[int] = (), remote_ids: Collection[str] = ()) -> None:
        """Journal contacts of ``provider`` for its next run to look at."""
        with self.session() as s, s.begin():
            journal.record(s.connection(), provider, "contact", canonical_ids=sorted(canonical_ids),
                           remote_ids=sorted(remote_ids))

    def prune_journal(self, accounts: Collection[str]) -> int:
        with self.session() as s, s.begin():
            conn = s.connection()
            return journal.prune(conn, accounts, journal.positions(conn))

    # -- canonical book -----------------------------------------------------

    def load_groups(self) -> tuple[dict[int, Group], list[Invalid]]:
        with self.session() as s:
            return read_groups(s)

    def load_contacts(self, ids: Collection[int] | None, groups: Mapping[int, Group], default_region: str,
                      *, check: Callable[[int], bool] = lambda _cid: True) -> tuple[dict[int, Contact], list[Invalid]]:
        """Contacts ``ids`` (None: all) and the rows among them syncd cannot read (:mod:`syncd.db.canonical`).

        Phones are validated for rows ``check`` accepts (all, by default) and for
        any not written in E.164; phones written in another spelling are rewritten in E.164.
        """
        with self.session() as s:
            contacts, invalid, fixes = read_contacts(s, ids, groups, default_region, check=check)
        if fixes:
            with self.writing() as s:
                update_by_id(s, table_of(ContactRow), [{"id": cid, "phone": phone} for cid, phone in fixes.items()])
        return contacts, invalid

    def load_book(self, default_region: str) -> Book:
        """The whole book, every row checked (tests and benchmarks; runs load what they reconcile)."""
        groups, invalid_groups = self.load_groups()
        contacts, invalid = self.load_contacts(None, groups, default_region)
        return Book(contacts, groups, invalid, invalid_groups)

    def contact_phones(self, ids: Collection[int] | None) -> dict[int, str]:
        """Stored phones (as written) of the contacts ``ids`` that exist (None: all).

        Read as bytes on SQLite, which stores any text a client sends: a phone
        that is not UTF-8 comes back with replacement characters (the row's own
        load reports it).
        """
        phone: Any = ContactRow.phone
        if self.engine.dialect.name == "sqlite":
            phone = cast(phone, LargeBinary)
        with self.session() as s:
            return {cid: raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
                    for cid, raw in rows_in(s, select(ContactRow.id, phone), ContactRow.id, ids)}

    def contacts_with_phones(self, phones: Collection[str]) -> dict[str, int]:
        """Canonical ids of the contacts storing each of ``phones`` verbatim."""
        with self.session() as s:
            return {phone: cid for cid, phone in
                    rows_in(s, select(ContactRow.id, ContactRow.phone), ContactRow.phone, phones)}

    def count_contacts(self) -> int:
        with self.session() as s:
            return s.execute(select(func.count()).select_from(ContactRow)).scalar_one()

    def canonical_members(self, group_ids: Collection[int]) -> set[int]:
        with self.session() as s:
            return {cid for (cid,) in rows_in(s, select(GroupMemberRow.contact_id), GroupMemberRow.group_id, group_ids)}

    def create_contacts(self, s: Session, contacts: Sequence[Contact]) -> list[int]:
        """Insert contacts with their memberships; their new ids, in order."""
        if not contacts:
            return []
        rows = [{"phone": c.phone, "name": c.name, "surname": c.surname, "email": c.email, "extra": dict(c.extra),
                 "opted_out": c.opted_out} for c in contacts]
        ids = insert_ids(s, table_of(ContactRow), rows)
        self._insert_members(s, [(cid, c.groups) for cid, c in zip(ids, contacts, strict=True)])
        return ids

    def restore_contact(self, s: Session, contact: Contact) -> bool:
        """Insert ``contact`` under its own (old) id with its memberships; False when that id or number is taken."""
        if contact.id is None or s.get(ContactRow, contact.id) is not None:
            return False
        try:
            with s.begin_nested():
                s.execute(insert(ContactRow).values(
                    id=contact.id, phone=contact.phone, name=contact.name, surname=contact.surname,
                    email=contact.email, extra=dict(contact.extra), opted_out=contact.opted_out))
                self._insert_members(s, [(contact.id, contact.groups)])
        except IntegrityError:
            return False
        return True

    def update_contacts(self, s: Session, contacts: Sequence[Contact], *, groups_changed: Collection[int]) -> None:
        """Write contacts' attributes; replace the memberships of those in ``groups_changed``."""
        if not contacts:
            return
        now = utcnow()
        rows = [{"id": c.id, "phone": c.phone, "name": c.name, "surname": c.surname, "email": c.email,
                 "extra": dict(c.extra), "opted_out": c.opted_out, "updated_at": now} for c in contacts]
        update_by_id(s, table_of(ContactRow), rows)
        moved = [(c.id, c.groups) for c in contacts if c.id in groups_changed and c.id is not None]
        for chunk in chunks([cid for cid, _ in moved]):
            s.execute(delete(GroupMemberRow).where(GroupMemberRow.contact_id.in_(chunk)))
        self._insert_members(s, moved)

    def _insert_members(self, s: Session, members: Iterable[tuple[int | None, Iterable[int]]]) -> None:
        rows = [{"group_id": g, "contact_id": cid} for cid, groups in members for g in sorted(groups)
                if g > 0 and cid is not None]
        insert_rows(s, table_of(GroupMemberRow), rows)

    def delete_contacts(self, s: Session, ids: Collection[int]) -> None:
        for chunk in chunks(sorted(ids)):
            s.execute(delete(ContactRow).where(ContactRow.id.in_(chunk)))

    def create_group(self, s: Session, group: Group) -> int:
        return s.execute(insert(GroupRow).values(name=group.name, description=group.description)
                         .returning(GroupRow.id)).scalar_one()

    def update_group(self, s: Session, group: Group) -> None:
        s.execute(update(GroupRow).where(GroupRow.id == group.id).values(
            name=group.name, description=group.description, updated_at=utcnow()))

    def delete_group(self, s: Session, gid: int) -> None:
        s.execute(delete(GroupRow).where(GroupRow.id == gid))

    # -- links ----------------------------------------------------------------

    def load_links(self, provider: str, entity: str, *, cids: Collection[int] | None = None,
                   rids: Collection[str] | None = None) -> dict[int, BaseRecord]:
        """Links (with their bases) of ``cids`` and of ``rids``; every link of the account when both are None."""
        query = select(LinkRow.canonical_id, LinkRow.remote_id, LinkRow.base).where(
            LinkRow.provider == provider, LinkRow.entity == entity)
        return {cid: BaseRecord(rid, base or {}) for cid, rid, base in self._links(query, cids, rids)}

    def link_pairs(self, provider: str, entity: str, *, cids: Collection[int] | None = None,
                   rids: Collection[str] | None = None) -> dict[int, str]:
        """canonical id -> remote id of the links of ``cids`` and ``rids`` (all when both are None), bases left out."""
        query = select(LinkRow.canonical_id, LinkRow.remote_id).where(
            LinkRow.provider == provider, LinkRow.entity == entity)
        return dict(self._links(query, cids, rids))

    def _links(self, query: Any, cids: Collection[int] | None, rids: Collection[str] | None) -> list[Any]:
        with self.session() as s:
            if cids is None and rids is None:
                return list(s.execute(query))
            return [*rows_in(s, query, LinkRow.canonical_id, cids or ()), *rows_in(s, query, LinkRow.remote_id, rids or ())]

    def count_links(self, provider: str, entity: str) -> int:
        with self.session() as s:
            return s.execute(select(func.count()).select_from(LinkRow).where(
                LinkRow.provider == provider, LinkRow.entity == entity)).scalar_one()

    def set_links(self, s: Session, provider: str, entity: str,
                  links: Sequence[tuple[int, str, Mapping[str, Any]]]) -> None:
        """Link each ``(canonical id, remote id, base)``, in order, in a few statements.

        A link replaces any earlier one (in the database or in ``links``) with
        its canonical or its remote id, as one statement per link would.
        """
        if not links:
            return
        kept: list[tuple[int, str, Mapping[str, Any]]] = []
        seen_cids: set[int] = set()
        seen_rids: set[str] = set()
        for cid, remote_id, base in reversed(links):
            if cid not in seen_cids and remote_id not in seen_rids:
                kept.append((cid, remote_id, base))
            seen_cids.add(cid)
            seen_rids.add(remote_id)
        self.drop_links(s, provider, entity, cids=seen_cids, rids=seen_rids)
        now = utcnow()
        rows = [{"provider": provider, "entity": entity, "canonical_id": cid, "remote_id": remote_id,
                 "base": dict(base), "base_fingerprint": fingerprint(base), "synced_at": now}
                for cid, remote_id, base in reversed(kept)]
        insert_rows(s, table_of(LinkRow), rows)

    def drop_links(self, s: Session, provider: str, entity: str, *, cids: Collection[int] = (),
                   rids: Collection[str] = ()) -> None:
        where = (LinkRow.provider == provider, LinkRow.entity == entity)
        for cid_chunk in chunks(sorted(cids)):
            s.execute(delete(LinkRow).where(*where, LinkRow.canonical_id.in_(cid_chunk)))
        for rid_chunk in chunks(sorted(rids)):
            s.execute(delete(LinkRow).where(*where, LinkRow.remote_id.in_(rid_chunk)))

    # -- mirror -----------------------------------------------------------------

    def load_mirror_groups(self, provider: str) -> dict[str, RemoteGroup]:
        g = RemoteGroupRow
        with self.session() as s:
            rows = s.execute(select(g.remote_id, g.name, g.description, g.modified_at, g.kept)
                             .where(g.provider == provider)).all()
        return {rid: RemoteGroup(rid, name, desc or "", mod, kept or {}) for rid, name, desc, mod, kept in rows}

    def load_mirror_contacts(self, provider: str, rids: Collection[str] | None = None) -> dict[str, RemoteContact]:
        """Mirror contacts ``rids`` (None: all) of one account."""
        c = RemoteContactRow
        query = select(c.remote_id, c.phone, c.fields, c.groups, c.opted_out, c.modified_at, c.kept).where(
            c.provider == provider)
        with self.session() as s:
            rows = list(rows_in(s, query, c.remote_id, rids))
        return {rid: RemoteContact(rid, phone, fields or {}, frozenset(groups or ()), bool(oo), mod, kept or {})
                for rid, phone, fields, groups, oo, mod, kept in rows}

    def mirror_phones(self, provider: str, rids: Collection[str] | None = None) -> dict[str, str]:
        """remote id -> phone of mirror contacts ``rids`` (None: all)."""
        c = RemoteContactRow
        with self.session() as s:
            return dict(rows_in(s, select(c.remote_id, c.phone).where(c.provider == provider), c.remote_id, rids))

    def mirror_with_phones(self, provider: str, phones: Collection[str]) -> dict[str, str]:
        """remote id -> phone of the mirror contacts holding any of ``phones``."""
        c = RemoteContactRow
        with self.session() as s:
            return dict(rows_in(s, select(c.remote_id, c.phone).where(c.provider == provider), c.phone, phones))

    def mirror_members(self, provider: str, remote_group_ids: Collection[str]) -> set[str]:
        """Mirror contacts listing any of ``remote_group_ids`` among their groups."""
        c = RemoteContactRow
        found: set[str] = set()
        with self.session() as s:
            postgresql = s.get_bind().dialect.name == "postgresql"
            for rgid in sorted(remote_group_ids):
                # jsonb containment on PostgreSQL; on SQLite the JSON text holds the id quoted
                listed = (type_coerce(c.groups, JSONB).contains([rgid]) if postgresql
                          else cast(c.groups, String).like(f'%"{rgid}"%'))
                found.update(s.scalars(select(c.remote_id).where(c.provider == provider, listed)))
        return found

    def mirror_fingerprints(self, provider: str, contacts: bool) -> dict[str, str]:
        """remote id -> fingerprint of one account's mirror: the one read a pull of N records costs.

        Through the driver's cursor: SQLAlchemy's rows cost more than the read itself at 100,000.
        """
        table = (RemoteContactRow if contacts else RemoteGroupRow).__table__
        query = select(table.c.remote_id, table.c.fingerprint).where(table.c.provider == provider)
        with self.session() as s:
            connection = s.connection()
            compiled = query.compile(dialect=connection.dialect)
            cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(str(compiled), _positional(compiled))
                return dict(cursor.fetchall())
            finally:
                cursor.close()

    def write_mirror(self, provider: str, contacts: Sequence[RemoteContact] = (), groups: Sequence[RemoteGroup] = (),
                     *, known: Mapping[str, str] | None = None) -> list[str]:
        """Insert or replace mirror rows (only those whose fingerprint changed, when ``known`` is given).

        Contacts written are journalled for the account in the same transaction,
        so a run killed after its pull still hands them on; their ids are returned.
        """
        crow = [_contact_row(provider, c) for c in contacts]
        grow = [_group_row(provider, g) for g in groups]
        if known is not None:
            crow = [r for r in crow if known.get(r["remote_id"]) != r["fingerprint"]]
            grow = [r for r in grow if known.get(r["remote_id"]) != r["fingerprint"]]
        if not crow and not grow:
            return []
        with self.session() as s, s.begin():
            for model, rows in ((RemoteContactRow, crow), (RemoteGroupRow, grow)):
                table = table_of(model)
                for chunk in chunks(rows):
                    ids = [r["remote_id"] for r in chunk]
                    s.execute(delete(table).where(table.c.provider == provider, table.c.remote_id.in_(ids)))
                    s.execute(insert(table), chunk)
            changed = [r["remote_id"] for r in crow]
            journal.record(s.connection(), provider, "contact", remote_ids=changed, writer=self.run_id or None)
        return changed

    def prune_mirror(self, provider: str, *, contacts: bool, gone: Collection[str]) -> None:
        """After a complete pull: forget mirror rows the provider no longer lists (contacts journalled)."""
        table = RemoteContactRow if contacts else RemoteGroupRow
        if not gone:
            return
        with self.session() as s, s.begin():
            for chunk in chunks(sorted(gone)):
                s.execute(delete(table).where(table.provider == provider, table.remote_id.in_(chunk)))
            if contacts:
                journal.record(s.connection(), provider, "contact", remote_ids=sorted(gone), writer=self.run_id or None)

    def drop_mirror(self, s: Session, provider: str, *, contacts: bool, remote_ids: Collection[str]) -> None:
        table = RemoteContactRow if contacts else RemoteGroupRow
        for chunk in chunks(sorted(remote_ids)):
            s.execute(delete(table).where(table.provider == provider, table.remote_id.in_(chunk)))

    def put_mirror_group(self, s: Session, provider: str, group: RemoteGroup) -> None:
        self.drop_mirror(s, provider, contacts=False, remote_ids=[group.remote_id])
        s.execute(insert(table_of(RemoteGroupRow)), [_group_row(provider, group)])

    def put_mirror_contacts(self, s: Session, provider: str, contacts: Sequence[RemoteContact]) -> None:
        """Insert or replace mirror contacts, in a few statements (the last one per remote id wins)."""
        rows = list({c.remote_id: _contact_row(provider, c) for c in contacts}.values())
        for chunk in chunks(rows):
            s.execute(delete(RemoteContactRow).where(RemoteContactRow.provider == provider,
                                                     RemoteContactRow.remote_id.in_([r["remote_id"] for r in chunk])))
            s.execute(insert(table_of(RemoteContactRow)), chunk)

    # -- opt-outs ----------------------------------------------------------------

    def opt_outs_since(self, provider: str) -> datetime | None:
        """When the newest opt-out ``provider`` listed was recorded there (None: none remembered yet)."""
        o = OptOutRow
        with self.session() as s:
            latest: datetime | None = s.execute(select(func.max(o.listed_at)).where(o.provider == provider)).scalar()
        return latest

    def remember_opt_outs(self, s: Session, provider: str, entries: Iterable[tuple[str, str, datetime | None]]) -> None:
        """Keep ``(phone, origin, listed at)`` opt-outs of ``provider``; a number already kept keeps its first one."""
        rows = [{"phone": phone, "provider": provider, "origin": origin, "listed_at": at} for phone, origin, at in
                dict((phone, (phone, origin, at)) for phone, origin, at in entries).values()]
        dialect = s.get_bind().dialect.name
        insert_ = postgresql_insert if dialect == "postgresql" else sqlite_insert
        for chunk in chunks(rows):
            s.execute(insert_(table_of(OptOutRow)).on_conflict_do_nothing(index_elements=["phone"]), chunk)

    def apply_opt_outs(self) -> list[tuple[int, str, str, str]]:
        """Opt every canonical contact out whose number a provider reported opted out (sticky).

        Answers ``(canonical id, phone, provider, origin)`` of each contact opted
        out now: those a new opt-out names, and numbers the book took in since.
        """
        c, o = ContactRow, OptOutRow
        with self.writing() as s:
            changed = s.execute(update(c).where(c.opted_out.is_(False), c.phone.in_(select(o.phone)))
                                .values(opted_out=True).returning(c.id, c.phone)).all()
            origins = {phone: (provider, origin) for phone, provider, origin in rows_in(
                s, select(o.phone, o.provider, o.origin), o.phone, {phone for _, phone in changed})}
        return [(cid, phone, *origins[phone]) for cid, phone in changed]

    def record_pull(self, provider: str, run_id: int, complete: bool, error: str | None) -> None:
        with self.session() as s, s.begin():
            s.execute(delete(PullStateRow).where(PullStateRow.provider == provider))
            s.add(PullStateRow(provider=provider, run_id=run_id, complete=complete, finished_at=utcnow(), error=error))

    # -- change log ---------------------------------------------------------------

    def log(self, s: Session, run_id: int, entries: Sequence[ChangeEntry]) -> list[int]:
        """Write change-log rows in the session's transaction; their ids, in order."""
        if not entries:
            return []
        now = utcnow()
        rows = [{"run_id": run_id or None, "at": now, "provider": e.provider, "entity": e.entity, "action": e.action,
                 "direction": e.direction, "canonical_id": e.canonical_id, "remote_id": e.remote_id,
                 "status": e.status, "before": e.before, "after": e.after, "error": e.error, "reason": e.reason,
                 "attempts": e.attempts, "next_attempt_at": e.next_attempt_at, "fingerprint": e.fingerprint}
                for e in entries]
        return insert_ids(s, table_of(ChangeLogRow), rows)

    def settle(self, s: Session, ids: Sequence[int], status: str, *, error: str | None = None,
               remote_id: str | None = None, attempts: int | None = None, next_attempt_at: datetime | None = None,
               fingerprint: str | None = None) -> None:
        if not ids:
            return
        values: dict[str, Any] = {"status": status, "error": error}
        if remote_id is not None:
            values["remote_id"] = remote_id
        if attempts is not None:
            values["attempts"] = attempts
            values["next_attempt_at"] = next_attempt_at
        if fingerprint is not None:
            values["fingerprint"] = fingerprint
        for chunk in chunks(list(ids)):
            s.execute(update(ChangeLogRow).where(ChangeLogRow.id.in_(chunk)).values(**values))

    def settle_applied(self, s: Session, settled: Sequence[tuple[int, str | None, str | None]]) -> None:
        """Mark many change-log rows ``applied``: ``(id, remote id or None to keep it, note or None)`` each."""
        rows = [{"id": entry, "status": "applied", "error": note} | ({"remote_id": rid} if rid is not None else {})
                for entry, rid, note in settled]
        for keys in {frozenset(r) for r in rows}:  # one executemany per key set
            update_by_id(s, table_of(ChangeLogRow), [r for r in rows if frozenset(r) == keys])

    def retry_ledger(self, provider: str) -> Ledger:
        """The latest outbound row per record, when it is failed or rejected: to back off or wait for a change.

        Read from the failed and rejected rows only (an index range), each
        checked to have no later settled outbound row for its record.
        """
        row, later = ChangeLogRow, table_of(ChangeLogRow).alias("later")
        same_record = or_(later.c.canonical_id == row.canonical_id,
                          (row.canonical_id.is_(None)) & (later.c.remote_id == row.remote_id))
        newer = (select(later.c.id).where(
            later.c.provider == row.provider, later.c.entity == row.entity, same_record, later.c.id > row.id,
            later.c.direction == "outbound", later.c.status.in_(_SETTLED)).exists())
        query = select(row.id, row.entity, row.canonical_id, row.remote_id, row.status, row.attempts,
                       row.next_attempt_at, row.fingerprint).where(
            row.provider == provider, row.status.in_(("failed", "rejected")), row.direction == "outbound",
            ~newer).order_by(row.id)
        with self.session() as s:
            rows = s.execute(query).all()
        return {(entity, cid, None if cid else rid): LedgerRow(id_, status, attempts, due, digest)
                for id_, entity, cid, rid, status, attempts, due, digest in rows}

    def settle_found(self, s: Session, provider: str, entity: str, cids: Collection[int]) -> None:
        """Creates whose outcome was unknown, now found at the provider and linked: applied after all."""
        for chunk in chunks(sorted(cids)):
            s.execute(update(ChangeLogRow).where(
                ChangeLogRow.provider == provider, ChangeLogRow.entity == entity, ChangeLogRow.canonical_id.in_(chunk),
                ChangeLogRow.direction == "outbound", ChangeLogRow.action == "create",
                ChangeLogRow.status == "failed").values(status="applied",
                                                         error="outcome found later: the record was at the provider"))

    def pending_deletes(self, provider: str) -> dict[tuple[str, str, int | None, str | None], tuple[int, str]]:
        """Deletions of ``provider`` held for an operator and not settled yet: key -> (change id, status).

        The key is (entity, direction, canonical id, remote id); the status
        ``awaiting_approval``, ``approved`` or ``declined``.
        """
        c = ChangeLogRow
        with self.session() as s:
            rows = s.execute(select(c.id, c.entity, c.direction, c.canonical_id, c.remote_id, c.status).where(
                c.provider == provider, c.action == "delete", c.resolved_at.is_(None),
                c.status.in_((PendingStatus.AWAITING, PendingStatus.APPROVED, PendingStatus.DECLINED)))).all()
        return {(entity, direction, cid, rid): (id_, status) for id_, entity, direction, cid, rid, status in rows}

    def settle_pending_deletes(self, s: Session, ids: Collection[int], *, status: str | None = None,
                               note: str | None = None) -> None:
        """Pending deletes carried out (or, with ``status`` "cancelled", called off): settled for good."""
        values: dict[str, Any] = {"resolved_at": utcnow()}
        if status is not None:
            values["status"] = status
        if note is not None:
            values["error"] = note
        for chunk in chunks(sorted(ids)):
            s.execute(update(ChangeLogRow).where(ChangeLogRow.id.in_(chunk)).values(**values))

    def open_conflicts(self, provider: str) -> dict[tuple[str, int | None, str | None], ChangeLogRow]:
        with self.session() as s:
            rows = s.scalars(select(ChangeLogRow).where(
                ChangeLogRow.provider == provider, ChangeLogRow.action == "conflict",
                ChangeLogRow.status == "planned", ChangeLogRow.resolved_at.is_(None))).all()
        return {(r.entity, r.canonical_id, r.remote_id): r for r in rows}

    def invalid_open(self) -> dict[tuple[str, int], str]:
        """Canonical rows whose latest invalid-record report (provider ``*``) is still open.

        Keyed by (entity, canonical id), the value is the reported error.

        Each problem is reported once; a row fixed since gets an ``applied`` row
        that closes its report (and takes it off ``syncd status``).
        """
        with self.session() as s:
            rows = s.execute(select(ChangeLogRow.entity, ChangeLogRow.canonical_id, ChangeLogRow.status,
                                    ChangeLogRow.error).where(ChangeLogRow.provider == "*").order_by(ChangeLogRow.id)).all()
        latest = {(entity, cid): (status, error) for entity, cid, status, error in rows if cid is not None}
        return {key: error or "" for key, (status, error) in latest.items() if status == "rejected"}


_SETTLED = ("applied", "failed", "rejected", "skipped")


def latest_outbound_ids() -> Any:
    """SELECT of the newest settled outbound change-log id per (provider, entity, record).

    A record is its canonical id when it has one, else its remote id, so a create
    that failed (no remote id yet) and later succeeded counts as one record.
    """
    record = func.coalesce(cast(ChangeLogRow.canonical_id, String), ChangeLogRow.remote_id)
    return (select(func.max(ChangeLogRow.id))
            .where(ChangeLogRow.direction == "outbound", ChangeLogRow.status.in_(_SETTLED))
            .group_by(ChangeLogRow.provider, ChangeLogRow.entity, record))


def _contact_row(provider: str, c: RemoteContact) -> dict[str, Any]:
    fields = dict(c.fields)
    groups = sorted(c.groups)
    digest = c.fingerprint or fingerprint({"f": fields, "g": groups, "o": c.opted_out, "p": c.phone})
    return {"provider": provider, "remote_id": c.remote_id, "phone": c.phone, "fields": fields, "groups": groups,
            "opted_out": c.opted_out, "modified_at": c.modified_at, "fingerprint": digest, "kept": dict(c.kept)}


def _group_row(provider: str, g: RemoteGroup) -> dict[str, Any]:
    return {"provider": provider, "remote_id": g.remote_id, "name": g.name, "description": g.description,
            "modified_at": g.modified_at, "kept": dict(g.kept),
            "fingerprint": fingerprint({"n": g.name, "d": g.description, "k": dict(g.kept)})}


def _positional(compiled: Any) -> Any:
    """A compiled statement's parameters as its driver wants them (SQLite: ``?`` positional; psycopg: ``%(name)s``)."""
    params = compiled.params
    if compiled.positiontup is not None:
        return tuple(params[name] for name in compiled.positiontup)
    return params
