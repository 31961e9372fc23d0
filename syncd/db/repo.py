"""The engine's database I/O: the canonical book, links, mirror, runs and change log.

One :class:`Store` per run. In a dry run (``syncd plan``) every method that
would write returns what it would have produced and writes nothing, so plan and
sync share one code path.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, String, cast, delete, func, insert, select, update
from sqlalchemy.orm import Session

from syncd.db.canonical import Book, read_book
from syncd.db.models import (
    ChangeLogRow,
    ContactRow,
    GroupMemberRow,
    GroupRow,
    LinkRow,
    PullStateRow,
    RemoteContactRow,
    RemoteGroupRow,
    SyncRunRow,
)
from syncd.leases import pid_alive
from syncd.model import Contact, Group, RemoteContact, RemoteGroup, fingerprint
from syncd.sync.plan import Operation
from syncd.sync.reconcile import BaseRecord

__all__ = ["Book", "LogEntry", "Store", "utcnow"]

CHUNK = 500  # rows per INSERT/UPDATE batch: bounded statements on both engines


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A change-log row to write."""

    op: Operation
    provider: str
    status: str
    error: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    fingerprint: str | None = None


class Store:
    """Database access for one run."""

    def __init__(self, engine: Engine, *, dry_run: bool = False) -> None:
        self.engine = engine
        self.dry_run = dry_run
        self._fake_ids = itertools.count(-1, -1)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    # -- runs ---------------------------------------------------------------

    def start_run(self, trigger: str, owner: str) -> int:
        if self.dry_run:
            return 0
        with self.session() as s, s.begin():
            self._close_dead_runs(s)
            row = SyncRunRow(started_at=utcnow(), trigger=trigger, status="running", summary={}, owner=owner)
            s.add(row)
            s.flush()
            return row.id

    def _close_dead_runs(self, s: Session) -> None:
        """Runs still `running` whose process on this host is gone (killed): failed, interrupted."""
        host = socket.gethostname()
        for run in s.scalars(select(SyncRunRow).where(SyncRunRow.status == "running")):
            owner_host, _, pid = (run.owner or "").rpartition(":")
            if owner_host == host and pid.isdigit() and not pid_alive(int(pid)):
                run.status, run.finished_at, run.error = "failed", utcnow(), "interrupted: its process ended mid-run"

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any], error: str | None = None) -> None:
        if self.dry_run:
            return
        with self.session() as s, s.begin():
            s.execute(update(SyncRunRow).where(SyncRunRow.id == run_id).values(
                finished_at=utcnow(), status=status, summary=summary, error=error))

    def settle_interrupted(self, providers: Iterable[str]) -> int:
        """Operations left ``pending`` by a run that died: mark them failed (this run re-plans them)."""
        if self.dry_run:
            return 0
        with self.session() as s, s.begin():
            result = s.execute(update(ChangeLogRow)
                               .where(ChangeLogRow.status == "pending", ChangeLogRow.provider.in_(list(providers)))
                               .values(status="failed", error="interrupted before its outcome was recorded; "
                                                              "re-planned from the provider's state"))
            return result.rowcount or 0

    # -- canonical book -----------------------------------------------------

    def load_book(self, default_region: str) -> Book:
        """Read the book (rows syncd cannot read are listed, see :mod:`syncd.db.canonical`),
        normalising phones written in other formats (by SQL) to E.164."""
        with self.session() as s:
            book, fixes = read_book(s, default_region)
        self._normalise_phones(fixes)
        return book

    def _normalise_phones(self, fixes: Mapping[int, str]) -> None:
        if self.dry_run or not fixes:
            return
        with self.session() as s, s.begin():
            for cid, phone in fixes.items():
                s.execute(update(ContactRow).where(ContactRow.id == cid).values(phone=phone))

    def create_contact(self, s: Session, contact: Contact) -> int:
        if self.dry_run:
            return next(self._fake_ids)
        row = ContactRow(phone=contact.phone, name=contact.name, surname=contact.surname, email=contact.email,
                         extra=dict(contact.extra), opted_out=contact.opted_out)
        s.add(row)
        s.flush()
        self._set_members(s, row.id, contact.groups)
        return row.id

    def update_contact(self, s: Session, contact: Contact, *, groups_changed: bool) -> None:
        if self.dry_run:
            return
        s.execute(update(ContactRow).where(ContactRow.id == contact.id).values(
            phone=contact.phone, name=contact.name, surname=contact.surname, email=contact.email, extra=dict(contact.extra),
            opted_out=contact.opted_out, updated_at=utcnow()))
        if groups_changed:
            s.execute(delete(GroupMemberRow).where(GroupMemberRow.contact_id == contact.id))
            self._set_members(s, contact.id, contact.groups)

    def _set_members(self, s: Session, cid: int, groups: Iterable[int]) -> None:
        rows = [{"group_id": g, "contact_id": cid} for g in sorted(groups) if g > 0]
        if rows:
            s.execute(insert(GroupMemberRow), rows)

    def delete_contact(self, s: Session, cid: int) -> None:
        if not self.dry_run:
            s.execute(delete(ContactRow).where(ContactRow.id == cid))

    def create_group(self, s: Session, group: Group) -> int:
        if self.dry_run:
            return next(self._fake_ids)
        row = GroupRow(name=group.name, description=group.description)
        s.add(row)
        s.flush()
        return row.id

    def update_group(self, s: Session, group: Group) -> None:
        if not self.dry_run:
            s.execute(update(GroupRow).where(GroupRow.id == group.id).values(
                name=group.name, description=group.description, updated_at=utcnow()))

    def delete_group(self, s: Session, gid: int) -> None:
        if not self.dry_run:
            s.execute(delete(GroupRow).where(GroupRow.id == gid))

    # -- links ----------------------------------------------------------------

    def load_links(self, provider: str, entity: str) -> dict[int, BaseRecord]:
        with self.session() as s:
            rows = s.execute(select(LinkRow.canonical_id, LinkRow.remote_id, LinkRow.base)
                             .where(LinkRow.provider == provider, LinkRow.entity == entity)).all()
        return {cid: BaseRecord(rid, base or {}) for cid, rid, base in rows}

    def set_link(self, s: Session, provider: str, entity: str, cid: int, remote_id: str, base: Mapping[str, Any]) -> None:
        self.set_links(s, provider, entity, [(cid, remote_id, base)])

    def set_links(self, s: Session, provider: str, entity: str,
                  links: Sequence[tuple[int, str, Mapping[str, Any]]]) -> None:
        """:meth:`set_link` for each ``(canonical id, remote id, base)`` in order, in a few statements.

        The rows left are those one call per link would leave: a link replaces any
        earlier one (in the database or in ``links``) with its canonical or remote id.
        """
        if self.dry_run or not links:
            return
        kept, seen_cids, seen_rids = [], set(), set()
        for cid, remote_id, base in reversed(links):
            if cid not in seen_cids and remote_id not in seen_rids:
                kept.append((cid, remote_id, base))
            seen_cids.add(cid)
            seen_rids.add(remote_id)
        where = (LinkRow.provider == provider, LinkRow.entity == entity)
        for chunk in _chunks(sorted(seen_cids)):
            s.execute(delete(LinkRow).where(*where, LinkRow.canonical_id.in_(chunk)))
        for chunk in _chunks(sorted(seen_rids)):
            s.execute(delete(LinkRow).where(*where, LinkRow.remote_id.in_(chunk)))
        now = utcnow()
        rows = [{"provider": provider, "entity": entity, "canonical_id": cid, "remote_id": remote_id,
                 "base": dict(base), "base_fingerprint": fingerprint(base), "synced_at": now}
                for cid, remote_id, base in reversed(kept)]
        for chunk in _chunks(rows):
            s.execute(insert(LinkRow), chunk)

    def drop_link(self, s: Session, provider: str, entity: str, cid: int | None, remote_id: str | None = None) -> None:
        if self.dry_run:
            return
        cond = LinkRow.canonical_id == cid if cid is not None else LinkRow.remote_id == remote_id
        s.execute(delete(LinkRow).where(LinkRow.provider == provider, LinkRow.entity == entity, cond))

    # -- mirror -----------------------------------------------------------------

    def load_mirror_groups(self, provider: str) -> dict[str, RemoteGroup]:
        with self.session() as s:
            rows = s.execute(select(RemoteGroupRow.remote_id, RemoteGroupRow.name, RemoteGroupRow.description,
                                    RemoteGroupRow.modified_at).where(RemoteGroupRow.provider == provider)).all()
        return {rid: RemoteGroup(rid, name, desc or "", mod) for rid, name, desc, mod in rows}

    def load_mirror_contacts(self, provider: str) -> dict[str, RemoteContact]:
        with self.session() as s:
            rows = s.execute(select(RemoteContactRow.remote_id, RemoteContactRow.phone, RemoteContactRow.fields,
                                    RemoteContactRow.groups, RemoteContactRow.opted_out, RemoteContactRow.modified_at)
                             .where(RemoteContactRow.provider == provider)).all()
        return {rid: RemoteContact(rid, phone, fields or {}, frozenset(groups or ()), bool(oo), mod)
                for rid, phone, fields, groups, oo, mod in rows}

    def mirror_fingerprints(self, provider: str, contacts: bool) -> dict[str, str]:
        table = RemoteContactRow if contacts else RemoteGroupRow
        with self.session() as s:
            return dict(s.execute(select(table.remote_id, table.fingerprint).where(table.provider == provider)).all())

    def write_mirror(self, provider: str, contacts: Sequence[RemoteContact] = (), groups: Sequence[RemoteGroup] = (),
                     *, known: Mapping[str, str] | None = None) -> None:
        """Insert or replace mirror rows (only those whose fingerprint changed, when ``known`` is given)."""
        if self.dry_run:
            return
        crow = [_contact_row(provider, c) for c in contacts]
        grow = [_group_row(provider, g) for g in groups]
        if known is not None:
            crow = [r for r in crow if known.get(r["remote_id"]) != r["fingerprint"]]
            grow = [r for r in grow if known.get(r["remote_id"]) != r["fingerprint"]]
        with self.session() as s, s.begin():
            for table, rows in ((RemoteContactRow, crow), (RemoteGroupRow, grow)):
                for chunk in _chunks(rows):
                    ids = [r["remote_id"] for r in chunk]
                    s.execute(delete(table).where(table.provider == provider, table.remote_id.in_(ids)))
                    s.execute(insert(table), chunk)

    def prune_mirror(self, provider: str, *, contacts: bool, keep: Iterable[str]) -> None:
        """After a complete pull: forget mirror rows the provider no longer lists."""
        if self.dry_run:
            return
        table = RemoteContactRow if contacts else RemoteGroupRow
        keep = set(keep)
        with self.session() as s, s.begin():
            gone = [rid for rid in s.scalars(select(table.remote_id).where(table.provider == provider)) if rid not in keep]
            for chunk in _chunks(gone):
                s.execute(delete(table).where(table.provider == provider, table.remote_id.in_(chunk)))

    def drop_mirror(self, s: Session, provider: str, *, contacts: bool, remote_id: str) -> None:
        if self.dry_run:
            return
        table = RemoteContactRow if contacts else RemoteGroupRow
        s.execute(delete(table).where(table.provider == provider, table.remote_id == remote_id))

    def put_mirror_group(self, s: Session, provider: str, group: RemoteGroup) -> None:
        if self.dry_run:
            return
        s.execute(delete(RemoteGroupRow).where(RemoteGroupRow.provider == provider,
                                               RemoteGroupRow.remote_id == group.remote_id))
        s.execute(insert(RemoteGroupRow), [_group_row(provider, group)])

    def put_mirror_contacts(self, s: Session, provider: str, contacts: Sequence[RemoteContact]) -> None:
        """Insert or replace mirror contacts, in a few statements (the last one per remote id wins)."""
        if self.dry_run or not contacts:
            return
        rows = list({c.remote_id: _contact_row(provider, c) for c in contacts}.values())
        for chunk in _chunks(rows):
            s.execute(delete(RemoteContactRow).where(RemoteContactRow.provider == provider,
                                                     RemoteContactRow.remote_id.in_([r["remote_id"] for r in chunk])))
            s.execute(insert(RemoteContactRow), chunk)

    def record_pull(self, provider: str, run_id: int, complete: bool, error: str | None) -> None:
        if self.dry_run:
            return
        with self.session() as s, s.begin():
            s.execute(delete(PullStateRow).where(PullStateRow.provider == provider))
            s.add(PullStateRow(provider=provider, run_id=run_id, complete=complete, finished_at=utcnow(), error=error))

    # -- change log ---------------------------------------------------------------

    def log(self, s: Session, run_id: int, entries: Sequence[LogEntry]) -> list[int]:
        """Write change-log rows in the session's transaction; their ids, in order."""
        if self.dry_run or not entries:
            return [0] * len(entries)
        ids = []
        for e in entries:
            row = ChangeLogRow(run_id=run_id or None, at=utcnow(), provider=e.provider, entity=e.op.entity.value,
                               action=e.op.action.value, direction=e.op.direction.value,
                               canonical_id=e.op.canonical_id if (e.op.canonical_id or 0) > 0 else None,
                               remote_id=e.op.remote_id, status=e.status, before=_log_before(e.op),
                               after=e.op.after, error=e.error, reason=e.op.reason, attempts=e.attempts,
                               next_attempt_at=e.next_attempt_at, fingerprint=e.fingerprint)
            s.add(row)
            ids.append(row)
        s.flush()
        return [r.id for r in ids]

    def settle(self, s: Session, ids: Sequence[int], status: str, *, error: str | None = None,
               remote_id: str | None = None, attempts: int | None = None, next_attempt_at: datetime | None = None,
               fingerprint: str | None = None) -> None:
        if self.dry_run or not ids:
            return
        values: dict[str, Any] = {"status": status, "error": error}
        if remote_id is not None:
            values["remote_id"] = remote_id
        if attempts is not None:
            values["attempts"] = attempts
            values["next_attempt_at"] = next_attempt_at
        if fingerprint is not None:
            values["fingerprint"] = fingerprint
        for chunk in _chunks(list(ids)):
            s.execute(update(ChangeLogRow).where(ChangeLogRow.id.in_(chunk)).values(**values))

    def settle_applied(self, s: Session, settled: Sequence[tuple[int, str | None, str | None]]) -> None:
        """Mark many change-log rows ``applied``: ``(id, remote id or None to keep it, note or None)`` each."""
        if self.dry_run or not settled:
            return
        rows = [{"id": entry, "status": "applied", "error": note} | ({"remote_id": rid} if rid is not None else {})
                for entry, rid, note in settled]
        s.execute(update(ChangeLogRow), rows)  # ORM bulk UPDATE by primary key: one executemany per key set

    def retry_ledger(self, provider: str) -> dict[tuple[str, int | None, str | None], ChangeLogRow]:
        """The latest outbound row per record, when it is failed or rejected: to back off or wait for a change."""
        latest = latest_outbound_ids().where(ChangeLogRow.provider == provider)
        with self.session() as s:
            rows = s.scalars(select(ChangeLogRow).where(ChangeLogRow.id.in_(latest),
                                                       ChangeLogRow.status.in_(("failed", "rejected")))).all()
        return {(r.entity, r.canonical_id, None if r.canonical_id else r.remote_id): r for r in rows}

    def settle_found(self, s: Session, provider: str, entity: str, cid: int, remote_id: str) -> None:
        """Creates whose outcome was unknown, now found at the provider and linked: applied after all."""
        if self.dry_run:
            return
        s.execute(update(ChangeLogRow).where(
            ChangeLogRow.provider == provider, ChangeLogRow.entity == entity, ChangeLogRow.canonical_id == cid,
            ChangeLogRow.direction == "outbound", ChangeLogRow.action == "create",
            ChangeLogRow.status == "failed").values(status="applied", remote_id=remote_id,
                                                     error="outcome found later: the record was at the provider"))

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


def latest_outbound_ids():
    """SELECT of the newest settled outbound change-log id per (provider, entity, record).

    A record is its canonical id when it has one, else its remote id, so a create
    that failed (no remote id yet) and later succeeded counts as one record.
    """
    record = func.coalesce(cast(ChangeLogRow.canonical_id, String), ChangeLogRow.remote_id)
    return (select(func.max(ChangeLogRow.id))
            .where(ChangeLogRow.direction == "outbound",
                   ChangeLogRow.status.in_(("applied", "failed", "rejected", "skipped")))
            .group_by(ChangeLogRow.provider, ChangeLogRow.entity, record))


def _log_before(op: Operation) -> dict[str, Any] | None:
    if op.action.value == "conflict":
        return {"local": op.local, "remote": op.remote}
    return op.before


def _contact_row(provider: str, c: RemoteContact) -> dict[str, Any]:
    fields = dict(c.fields)
    groups = sorted(c.groups)
    return {"provider": provider, "remote_id": c.remote_id, "phone": c.phone, "fields": fields, "groups": groups,
            "opted_out": c.opted_out, "modified_at": c.modified_at,
            "fingerprint": fingerprint({"f": fields, "g": groups, "o": c.opted_out, "p": c.phone})}


def _group_row(provider: str, g: RemoteGroup) -> dict[str, Any]:
    return {"provider": provider, "remote_id": g.remote_id, "name": g.name, "description": g.description,
            "modified_at": g.modified_at, "fingerprint": fingerprint({"n": g.name, "d": g.description})}


def _chunks(rows: list[Any], size: int = CHUNK) -> Iterable[list[Any]]:
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
