"""Applying inbound operations (provider -> canonical) to the book, the links and the change log.

Each chunk of operations is one transaction: canonical changes, links and
change-log rows together, so a crash never leaves one without the others. The
canonical writes of a chunk go in a few statements: contact deletes, then
updates, then creates (so a number freed by a delete can be taken by a create
in the same chunk), each as one ``executemany``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from syncd.db.batch import chunks
from syncd.db.repo import Book, Store
from syncd.model import BaseRecord, ChangeEntry, Contact, Group, group_key
from syncd.providers.base import Provider
from syncd.sync.plan import Action, Direction, Entity, Operation, log_entry
from syncd.sync.scope import Window

__all__ = ["InboundApplier", "Touched"]

CHUNK = 1000
#: The origin of an opt-out a provider shows on the contact itself (SendHub's ``blocked``: the person texted STOP).
STOP = "STOP"
_ATTRIBUTES = ("phone", "name", "surname", "email", "extra")  # what a provider's inbound update may change

Touched = dict[int, dict[str, str]]
"""Canonical contacts changed by inbound operations this run: id -> attribute -> the provider that changed it."""


@dataclass
class _Pending:
    """The canonical writes of one chunk, made together at its end."""

    creates: list[tuple[Operation, Contact]] = field(default_factory=list)
    updates: dict[int, tuple[Contact, bool]] = field(default_factory=dict)  # id -> (contact, groups changed)
    deletes: set[int] = field(default_factory=set)


class InboundApplier:
    """Applies one provider's inbound operations, a window (or the groups) at a time."""

    def __init__(self, store: Store, run_id: int, book: Book, group_links: dict[int, BaseRecord],
                 provider: Provider, touched: Touched, touched_by: dict[int, set[str]],
                 counts: dict[str, int]) -> None:
        self.store, self.run_id, self.book = store, run_id, book
        self.provider, self.name = provider, provider.name
        self.touched, self.touched_by, self.counts = touched, touched_by, counts
        self.open_conflicts = store.open_conflicts(provider.name)
        self.links: dict[str, dict[int, BaseRecord]] = {"group": group_links, "contact": {}}
        self.contacts: dict[int, Contact] = {}
        self.invalid: set[int] = set()
        self.by_remote: dict[str, dict[str, int]] = {}
        self.done = 0  # operations applied so far (progress)
        self._links_due: list[tuple[str, int, str, dict[str, Any]]] = []  # written per chunk: see _write_links
        self._pending = _Pending()
        self._entries: list[ChangeEntry] = []
        self._phones: dict[str, int] = {}  # phone -> canonical id, of the window's contacts as they are now
        self._gone: set[int] = set()  # canonical contacts deleted by this applier
        self._held: dict[str, int] = {}  # phone -> canonical id in the book, for the chunk's creates (one query)
        self._looked_up: set[str] = set()  # the phones _held was asked for

    def apply(self, ops: Sequence[Operation], window: Window | None) -> None:
        """Apply ``ops`` (those of ``window``, or group operations when it is None)."""
        todo = [op for op in ops if op.direction is Direction.INBOUND or op.action is Action.UNLINK
                or op.action is Action.GUARDED]
        if not todo:
            return
        if window is not None:
            self.links["contact"], self.contacts = window.links, window.contacts
            self.invalid = {cid for cid, _, _ in window.invalid}
            self._phones = {contact.phone: cid for cid, contact in window.contacts.items()}
        # remote id -> canonical id, so a re-linked remote record drops its stale link (as the table does)
        self.by_remote = {entity: {link.remote_id: cid for cid, link in entity_links.items()}
                          for entity, entity_links in self.links.items()}
        for chunk in chunks(todo, CHUNK):
            decided = [op.extra["decision"] for op in chunk if "decision" in op.extra]
            with self.store.writing() as s:
                self._looked_up = {op.key for op in chunk if op.action is Action.CREATE
                                   and op.entity is Entity.CONTACT and op.key.startswith("+")}
                self._held = self.store.contacts_with_phones(self._looked_up)
                for op in chunk:
                    self._entries.extend(self._apply_one(s, op))
                self._flush(s)
                self.store.log(s, self.run_id, self._entries)
                self._entries = []
                self.store.settle_pending_deletes(s, decided)  # approved or declined: carried out now
            self.done += len(chunk)

    def _apply_one(self, s: Session, op: Operation) -> list[ChangeEntry]:
        if op.entity is Entity.CONTACT and op.canonical_id is not None and op.canonical_id > 0:
            self._touch(op.canonical_id)
        handler = {
            Action.CREATE: self._create, Action.UPDATE: self._update, Action.DELETE: self._delete,
            Action.LINK: self._link, Action.CONFLICT: self._conflict, Action.UNLINK: self._unlink,
            Action.DUPLICATE: self._report, Action.GUARDED: self._report,
        }[op.action]
        return handler(s, op)

    # -- handlers ---------------------------------------------------------------

    def _create(self, s: Session, op: Operation) -> list[ChangeEntry]:
        if op.held or op.skip_reason:
            return [log_entry(op, self.name, "skipped", error=op.skip_reason or "held")]
        if op.entity is Entity.GROUP:
            return self._created(s, op, self._create_group(s, op))
        if not op.key.startswith("+"):
            return self._refused(op)
        holder = self._contact_with_phone(op.key)
        if holder in self.invalid:
            return self._refused(op)
        if holder is not None:
            return self._created(s, op, holder)
        attrs = self.provider.to_canonical(_without_meta(op.after), None)
        contact = Contact(None, op.key, attrs.get("name", ""), attrs.get("surname", ""), attrs.get("email", ""),
                          attrs.get("extra", {}), bool(op.extra.get("opted_out")),
                          frozenset(g for g in (op.after or {}).get("groups", []) if g in self.book.groups))
        if "decision" in op.extra and op.canonical_id is not None:  # a declined deletion: under its old id
            contact = replace(contact, id=op.canonical_id)
        self._pending.creates.append((op, contact))
        if contact.opted_out:
            self.store.remember_opt_outs(s, self.name, [(contact.phone, STOP, None)])
        return []  # logged when the chunk's creates are written (see _write_creates)

    def _created(self, s: Session, op: Operation, cid: int) -> list[ChangeEntry]:
        self._set_link(op.entity, cid, op.remote_id, op.after or {})
        if op.entity is Entity.CONTACT:
            self._touch(cid)
        self._count(op)
        return [log_entry(replace(op, canonical_id=cid), self.name, "applied")]

    def _refused(self, op: Operation) -> list[ChangeEntry]:
        return [log_entry(op, self.name, "rejected",
                         error=f"number {op.key!r} at {self.name} is invalid or held by an invalid canonical row")]

    def _create_group(self, s: Session, op: Operation) -> int:
        fields = op.after or {}
        existing = self.book.group_by_key().get(group_key(fields.get("name", "")))
        if existing is not None:  # another provider brought the same group in this run
            return existing
        group = Group(None, fields.get("name", ""), fields.get("description", ""))
        gid = self.store.create_group(s, group)
        self.book.groups[gid] = replace(group, id=gid)
        return gid

    def _contact_with_phone(self, phone: str) -> int | None:
        """The canonical contact holding ``phone``, or None.

        The window's contacts as this run left them first, then the book (one
        query per chunk for its creates); contacts deleted meanwhile hold nothing.
        """
        cid = self._phones.get(phone)
        if cid is not None:
            return cid
        holder: int | None
        if phone in self._looked_up:
            holder = self._held.get(phone)
        else:
            holder = self.store.contacts_with_phones([phone]).get(phone) if phone.startswith("+") else None
        return None if holder in self._pending.deletes or holder in self._gone else holder

    def _update(self, s: Session, op: Operation) -> list[ChangeEntry]:
        cid = op.canonical_id
        assert cid is not None
        if op.entity is Entity.GROUP:
            group = self.book.groups[cid]
            after = op.after or {}
            new = replace(group, name=after.get("name", group.name),
                          description=after.get("description", group.description)
                          if "description" in self.provider.capabilities.group_fields else group.description)
            self.store.update_group(s, new)
            self.book.groups[cid] = new
        else:
            refused = self._update_contact(s, op, cid)
            if refused is not None:
                return refused
        if op.remote is not None:
            self._set_link(op.entity, cid, op.remote_id, op.remote)
        self._count(op)
        return [log_entry(op, self.name, "applied")]

    def _update_contact(self, s: Session, op: Operation, cid: int) -> list[ChangeEntry] | None:
        """Apply an inbound contact update; None when applied, else the change-log rows saying why not."""
        current = self._pending.updates.get(cid, (self.contacts[cid], False))[0]
        if op.extra.get("opt_out"):
            new = replace(current, opted_out=True)
            self.store.remember_opt_outs(s, self.name, [(current.phone, STOP, None)])
        else:
            attrs = self.provider.to_canonical(_without_meta(op.after), current)
            groups = frozenset(g for g in (op.after or {}).get("groups", []) if g in self.book.groups)
            # The provider cannot show memberships in groups not linked there: those stay as they are.
            groups |= {g for g in current.groups if g not in self.links["group"]}
            new = replace(current, phone=attrs.get("phone", current.phone), name=attrs.get("name", current.name),
                          surname=attrs.get("surname", current.surname), email=attrs.get("email", current.email),
                          extra=attrs.get("extra", current.extra), groups=groups)
        clash = self._cross_provider_clash(current, new)
        if clash:
            return [log_entry(replace(op, action=Action.CONFLICT), self.name, "skipped",
                             error=f"{', '.join(clash)} already changed by another provider in this run; that change kept")]
        problem = self._number_problem(new.phone, current) if new.phone != current.phone else None
        if problem is None and new.phone != current.phone and not self._renumber(s, current, new):
            problem = f"number {new.phone} is held by a canonical row syncd cannot read; nothing merged"
        if problem is not None:
            return self._number_conflict(op, problem)
        if new.phone != current.phone:
            self._phones.pop(current.phone, None)
            self._phones[new.phone] = cid
        if new.phone == current.phone:
            groups_changed = new.groups != current.groups or self._pending.updates.get(cid, (current, False))[1]
            self._pending.updates[cid] = (new, groups_changed)
        self.contacts[cid] = new
        return None

    def _renumber(self, s: Session, current: Contact, new: Contact) -> bool:
        """Write a contact whose number changes now; False when the database holds the number elsewhere."""
        try:
            with s.begin_nested():  # a row the book skipped as invalid may hold the new number
                moved = {current.id} if new.groups != current.groups and current.id is not None else set()
                self.store.update_contacts(s, [new], groups_changed=moved)
        except IntegrityError:
            return False
        return True

    def _number_problem(self, phone: str, current: Contact) -> str | None:
        """Why a contact's number cannot change to ``phone`` (another canonical contact has it), or None."""
        if not phone.startswith("+"):
            return f"number {phone!r} at {self.name} is not a valid number; the book keeps {current.phone}"
        holder = self._contact_with_phone(phone)
        if holder is None and any(c.phone == phone for _, c in self._pending.creates):
            holder = -1  # a contact this chunk is creating
        if holder is not None and holder != current.id:
            return (f"number changed at {self.name} to {phone}, which canonical contact {holder} already has; "
                    "nothing merged (change one of the numbers)")
        return None

    def _number_conflict(self, op: Operation, problem: str) -> list[ChangeEntry]:
        """A number change that would merge two contacts: held and reported once, never applied."""
        self.counts["conflicts"] = self.counts.get("conflicts", 0) + 1
        if (op.entity.value, op.canonical_id, op.remote_id) in self.open_conflicts:
            return []  # already listed
        held = replace(op, action=Action.CONFLICT, held=True, local=op.before, remote=op.remote,
                       after=None, extra={"fields": ["number"], "policy": "manual"})
        return [log_entry(held, self.name, "planned", error=problem)]

    def _cross_provider_clash(self, current: Contact, new: Contact) -> list[str]:
        """Attributes another provider already changed differently in this run (first provider wins)."""
        assert current.id is not None
        seen = self._touch(current.id)
        changed = [attr for attr in _ATTRIBUTES if getattr(new, attr) != getattr(current, attr)]
        clash = [attr for attr in changed if seen.get(attr, self.name) != self.name]
        if not clash:
            seen.update((attr, self.name) for attr in changed)
        return clash

    def _delete(self, s: Session, op: Operation) -> list[ChangeEntry]:
        if op.held or op.skip_reason:
            return [log_entry(op, self.name, "skipped", error=op.skip_reason or "held")]
        cid = op.canonical_id
        assert cid is not None
        if op.entity is Entity.GROUP:
            self.store.delete_group(s, cid)
            self.book.groups.pop(cid, None)
            for contact_id, contact in list(self.contacts.items()):
                if cid in contact.groups:
                    self.contacts[contact_id] = replace(contact, groups=contact.groups - {cid})
        else:
            kept = self.contacts.get(cid)
            if kept is not None and kept.opted_out:
                self._unlink(s, op)
                return [log_entry(op, self.name, "skipped",
                                 error="opted out: kept in the canonical book so the opt-out is not lost")]
            self._pending.deletes.add(cid)
            self._pending.updates.pop(cid, None)
            gone = self.contacts.pop(cid, None)
            if gone is not None:
                self._phones.pop(gone.phone, None)
            self._gone.add(cid)
            self._touch(cid)
        self._unlink(s, op)
        self._count(op)
        return [log_entry(op, self.name, "applied")]

    def _link(self, s: Session, op: Operation) -> list[ChangeEntry]:
        assert op.canonical_id is not None
        self._set_link(op.entity, op.canonical_id, op.remote_id, op.after or {})
        if op.remote_id is not None:
            self.store.settle_found(s, self.name, op.entity.value, [op.canonical_id])
        return [log_entry(op, self.name, "applied")]

    def _conflict(self, s: Session, op: Operation) -> list[ChangeEntry]:
        self.counts["conflicts"] = self.counts.get("conflicts", 0) + 1
        if op.held:
            if (op.entity.value, op.canonical_id, op.remote_id) in self.open_conflicts:
                return []  # already listed for `syncd resolve`
            return [log_entry(op, self.name, "planned")]
        if op.remote is not None and op.canonical_id is not None and op.remote_id is not None:
            self._set_link(op.entity, op.canonical_id, op.remote_id, op.remote)
        return [log_entry(op, self.name, "applied")]

    def _unlink(self, s: Session, op: Operation) -> list[ChangeEntry]:
        self._write_links(s)  # links set earlier in this chunk first, so this drop sees them
        if op.canonical_id is not None:
            self.links[op.entity.value].pop(op.canonical_id, None)
            self.store.drop_links(s, self.name, op.entity.value, cids=[op.canonical_id])
        if op.remote_id is not None and op.entity is Entity.CONTACT and not self.provider.capabilities.list_contacts:
            self.store.drop_mirror(s, self.name, contacts=True, remote_ids=[op.remote_id])
        return [log_entry(op, self.name, "skipped", error=op.skip_reason)] if op.skip_reason else []

    def _report(self, s: Session, op: Operation) -> list[ChangeEntry]:
        return [log_entry(op, self.name, "skipped", error=op.reason)]

    # -- writing a chunk --------------------------------------------------------------

    def _flush(self, s: Session) -> None:
        """The chunk's canonical writes (deletes, updates, creates) and links, in a few statements."""
        pending, self._pending = self._pending, _Pending()
        self.store.delete_contacts(s, pending.deletes)
        updates = list(pending.updates.values())
        self.store.update_contacts(s, [c for c, _ in updates],
                                   groups_changed={c.id for c, moved in updates if moved and c.id is not None})
        self._write_creates(s, pending.creates)
        self._write_links(s)

    def _write_creates(self, s: Session, creates: list[tuple[Operation, Contact]]) -> None:
        fresh = []
        for op, contact in creates:
            if contact.id is not None and self.store.restore_contact(s, contact):
                self._wrote(s, op, contact, contact.id)
            else:  # new, or its old id (or number) taken meanwhile: a new id
                fresh.append((op, replace(contact, id=None)))
        creates = fresh
        if not creates:
            return
        try:
            with s.begin_nested():
                ids: list[int | None] = list(self.store.create_contacts(s, [c for _, c in creates]))
        except IntegrityError:  # a number taken meanwhile (a row written by SQL during the run): one by one
            ids = [self._create_one(s, contact) for _, contact in creates]
        for (op, contact), cid in zip(creates, ids, strict=True):
            if cid is None:
                self._entries.extend(self._refused(op))
            else:
                self._wrote(s, op, contact, cid)

    def _wrote(self, s: Session, op: Operation, contact: Contact, cid: int) -> None:
        self.contacts[cid] = replace(contact, id=cid)
        self._phones[contact.phone] = cid
        self._entries.extend(self._created(s, op, cid))

    def _create_one(self, s: Session, contact: Contact) -> int | None:
        try:
            with s.begin_nested():
                return self.store.create_contacts(s, [contact])[0]
        except IntegrityError:
            return None

    def _set_link(self, entity: Entity, cid: int, remote_id: str | None, base: dict[str, Any]) -> None:
        if remote_id is None:
            return
        stale = self.by_remote[entity.value].get(remote_id)
        if stale is not None and stale != cid:
            self.links[entity.value].pop(stale, None)
        self.by_remote[entity.value][remote_id] = cid
        link = self.links[entity.value][cid] = BaseRecord(remote_id, dict(base))
        self._links_due.append((entity.value, cid, remote_id, dict(link.fields)))

    def _write_links(self, s: Session) -> None:
        """Write the links set since the last call, in the chunk's transaction.

        Batched because one statement per link cost most of a large import; the
        in-memory links are current all along, and the rows land before the
        chunk commits and before any link is dropped.
        """
        due, self._links_due = self._links_due, []
        for entity in dict.fromkeys(e for e, *_ in due):
            self.store.set_links(s, self.name, entity, [(cid, rid, base) for e, cid, rid, base in due if e == entity])

    def _touch(self, cid: int) -> dict[str, str]:
        """Note that this provider's inbound changed contact ``cid``; its attributes changed so far this run."""
        self.touched_by.setdefault(cid, set()).add(self.name)
        return self.touched.setdefault(cid, {})

    def _count(self, op: Operation) -> None:
        key = {"create": "created_in", "update": "updated_in", "delete": "deleted_in"}.get(op.action.value)
        if key:
            self.counts[key] = self.counts.get(key, 0) + 1


def _without_meta(fields: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (fields or {}).items() if k not in ("groups", "opted_out")}
