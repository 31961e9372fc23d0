"""Applying inbound operations (provider -> canonical) to the book, the links and the change log.

The in-memory :class:`~syncd.db.repo.Book` and link maps are updated in both
modes; the database only when the store is not a dry run. Each chunk of
operations is one transaction: canonical change, link and change-log row
together, so a crash never leaves one without the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.exc import IntegrityError

from syncd.db.repo import Book, LogEntry, Store
from syncd.model import Contact, Group, group_key
from syncd.providers.base import Provider
from syncd.sync.plan import Action, Direction, Entity, Operation
from syncd.sync.reconcile import BaseRecord

__all__ = ["InboundApplier"]

CHUNK = 1000
_ATTRIBUTES = ("phone", "name", "surname", "email", "extra")  # what a provider's inbound update may change


class InboundApplier:
    """Applies one provider's inbound operations for one entity."""

    def __init__(self, store: Store, run_id: int, book: Book, links: dict[str, dict[int, BaseRecord]],
                 provider: Provider, touched: dict[int, dict[str, str]], counts: dict[str, int]) -> None:
        self.store, self.run_id, self.book, self.links = store, run_id, book, links
        self.provider, self.name = provider, provider.name
        self.touched = touched  # canonical contact id -> attribute -> provider that changed it this run
        self.counts = counts
        self.open_conflicts = store.open_conflicts(provider.name)
        self._by_phone: dict[str, int] | None = None  # built on the first create: one pass, not one per create
        self._links_due: list[tuple[str, int, str, dict[str, Any]]] = []  # written per chunk: see _write_links
        # remote id -> canonical id, so a re-linked remote record drops its stale link (as the table does)
        self.by_remote = {entity: {link.remote_id: cid for cid, link in entity_links.items()}
                          for entity, entity_links in links.items()}

    def apply(self, ops: Sequence[Operation]) -> None:
        todo = [op for op in ops if op.direction is Direction.INBOUND or op.action is Action.UNLINK
                or op.action is Action.GUARDED]
        for i in range(0, len(todo), CHUNK):
            with self.store.session() as s, s.begin():
                entries = [entry for op in todo[i:i + CHUNK] for entry in self._apply_one(s, op)]
                self._write_links(s)
                self.store.log(s, self.run_id, entries)

    def _apply_one(self, s, op: Operation) -> list[LogEntry]:
        handler = {
            Action.CREATE: self._create, Action.UPDATE: self._update, Action.DELETE: self._delete,
            Action.LINK: self._link, Action.CONFLICT: self._conflict, Action.UNLINK: self._unlink,
            Action.DUPLICATE: self._report, Action.GUARDED: self._report,
        }[op.action]
        return handler(s, op)

    # -- handlers ---------------------------------------------------------------

    def _create(self, s, op: Operation) -> list[LogEntry]:
        if op.held or op.skip_reason:
            return [LogEntry(op, self.name, "skipped", error=op.skip_reason or "held")]
        if op.entity is Entity.GROUP:
            cid = self._create_group(s, op)
        else:
            cid = self._create_contact(s, op)
            if cid is None:
                return [LogEntry(op, self.name, "rejected",
                                 error=f"number {op.key!r} at {self.name} is invalid or held by an invalid canonical row")]
        self._set_link(s, op.entity, cid, op.remote_id, op.after or {})
        self._count(op)
        return [LogEntry(replace(op, canonical_id=cid), self.name, "applied")]

    def _create_group(self, s, op: Operation) -> int:
        fields = op.after or {}
        existing = self.book.group_by_key().get(group_key(fields.get("name", "")))
        if existing is not None:  # another provider brought the same group in this run
            return existing
        group = Group(None, fields.get("name", ""), fields.get("description", ""))
        gid = self.store.create_group(s, group)
        self.book.groups[gid] = replace(group, id=gid)
        return gid

    def _create_contact(self, s, op: Operation) -> int | None:
        if not op.key.startswith("+"):
            return None
        existing = self._contact_with_phone(op.key)
        if existing is not None:
            return existing
        attrs = self.provider.to_canonical(_without_meta(op.after), None)
        contact = Contact(None, op.key, attrs.get("name", ""), attrs.get("surname", ""), attrs.get("email", ""),
                          attrs.get("extra", {}), bool(op.extra.get("opted_out")),
                          frozenset(g for g in (op.after or {}).get("groups", []) if g in self.book.groups))
        try:
            with s.begin_nested():  # a row the book skipped as invalid may hold this number
                cid = self.store.create_contact(s, contact)
        except IntegrityError:
            return None
        self.book.contacts[cid] = replace(contact, id=cid)
        self._by_phone[op.key] = cid
        return cid

    def _contact_with_phone(self, phone: str) -> int | None:
        """The canonical contact holding ``phone`` (another provider may have brought it in this run)."""
        if self._by_phone is None:
            self._by_phone = self.book.contact_by_phone()
        cid = self._by_phone.get(phone)
        return cid if cid in self.book.contacts else None  # deleted since the index was built

    def _update(self, s, op: Operation) -> list[LogEntry]:
        cid = op.canonical_id
        if op.entity is Entity.GROUP:
            group = self.book.groups[cid]
            after = op.after or {}
            new = replace(group, name=after.get("name", group.name),
                          description=after.get("description", group.description)
                          if "description" in self.provider.capabilities.group_fields else group.description)
            self.store.update_group(s, new)
            self.book.groups[cid] = new
        else:
            refused = self._update_contact(s, op)
            if refused is not None:
                return refused
        if op.remote is not None:
            self._set_link(s, op.entity, cid, op.remote_id, op.remote)
        self._count(op)
        return [LogEntry(op, self.name, "applied")]

    def _update_contact(self, s, op: Operation) -> list[LogEntry] | None:
        """Apply an inbound contact update; None when applied, else the change-log rows saying why not."""
        cid = op.canonical_id
        current = self.book.contacts[cid]
        if op.extra.get("opt_out"):
            new = replace(current, opted_out=True)
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
            return [LogEntry(replace(op, action=Action.CONFLICT), self.name, "skipped",
                             error=f"{', '.join(clash)} already changed by another provider in this run; that change kept")]
        problem = self._number_problem(new.phone, current) if new.phone != current.phone else None
        if problem is None and not self._write_contact(s, current, new):
            problem = f"number {new.phone} is held by a canonical row syncd cannot read; nothing merged"
        if problem is not None:
            return self._number_conflict(op, problem)
        self.book.contacts[cid] = new
        if new.phone != current.phone and self._by_phone is not None:
            self._by_phone.pop(current.phone, None)
            self._by_phone[new.phone] = cid
        return None

    def _write_contact(self, s, current: Contact, new: Contact) -> bool:
        """Write an updated contact; False when its new number breaks the database's uniqueness."""
        if new.phone == current.phone:
            self.store.update_contact(s, new, groups_changed=new.groups != current.groups)
            return True
        try:
            with s.begin_nested():  # a row the book skipped as invalid may hold the new number
                self.store.update_contact(s, new, groups_changed=new.groups != current.groups)
        except IntegrityError:
            return False
        return True

    def _number_problem(self, phone: str, current: Contact) -> str | None:
        """Why a contact's number cannot change to ``phone`` (another canonical contact has it), or None."""
        if not phone.startswith("+"):
            return f"number {phone!r} at {self.name} is not a valid number; the book keeps {current.phone}"
        holder = self._contact_with_phone(phone)
        if holder is not None and holder != current.id:
            return (f"number changed at {self.name} to {phone}, which canonical contact {holder} already has; "
                    "nothing merged (change one of the numbers)")
        return None

    def _number_conflict(self, op: Operation, problem: str) -> list[LogEntry]:
        """A number change that would merge two contacts: held and reported once, never applied."""
        self.counts["conflicts"] = self.counts.get("conflicts", 0) + 1
        if (op.entity.value, op.canonical_id, op.remote_id) in self.open_conflicts:
            return []  # already listed
        held = replace(op, action=Action.CONFLICT, held=True, local=op.before, remote=op.remote,
                       after=None, extra={"fields": ["number"], "policy": "manual"})
        return [LogEntry(held, self.name, "planned", error=problem)]

    def _cross_provider_clash(self, current: Contact, new: Contact) -> list[str]:
        """Attributes another provider already changed differently in this run (first provider wins)."""
        seen = self.touched.setdefault(current.id, {})
        clash = []
        for attr in _ATTRIBUTES:
            if getattr(new, attr) != getattr(current, attr):
                if seen.get(attr, self.name) != self.name:
                    clash.append(attr)
        if not clash:
            for attr in _ATTRIBUTES:
                if getattr(new, attr) != getattr(current, attr):
                    seen[attr] = self.name
        return clash

    def _delete(self, s, op: Operation) -> list[LogEntry]:
        if op.held or op.skip_reason:
            return [LogEntry(op, self.name, "skipped", error=op.skip_reason or "held")]
        cid = op.canonical_id
        if op.entity is Entity.GROUP:
            self.store.delete_group(s, cid)
            self.book.groups.pop(cid, None)
            for contact_id, contact in list(self.book.contacts.items()):
                if cid in contact.groups:
                    self.book.contacts[contact_id] = replace(contact, groups=contact.groups - {cid})
        else:
            contact = self.book.contacts.get(cid)
            if contact is not None and contact.opted_out:
                self._unlink(s, op)
                return [LogEntry(op, self.name, "skipped",
                                 error="opted out: kept in the canonical book so the opt-out is not lost")]
            self.store.delete_contact(s, cid)
            self.book.contacts.pop(cid, None)
        self._unlink(s, op)
        self._count(op)
        return [LogEntry(op, self.name, "applied")]

    def _link(self, s, op: Operation) -> list[LogEntry]:
        self._set_link(s, op.entity, op.canonical_id, op.remote_id, op.after or {})
        if op.remote_id is not None:
            self.store.settle_found(s, self.name, op.entity.value, op.canonical_id, op.remote_id)
        return [LogEntry(op, self.name, "applied")]

    def _conflict(self, s, op: Operation) -> list[LogEntry]:
        self.counts["conflicts"] = self.counts.get("conflicts", 0) + 1
        if op.held:
            if (op.entity.value, op.canonical_id, op.remote_id) in self.open_conflicts:
                return []  # already listed for `syncd resolve`
            return [LogEntry(op, self.name, "planned")]
        if op.remote is not None and op.canonical_id is not None and op.remote_id is not None:
            self._set_link(s, op.entity, op.canonical_id, op.remote_id, op.remote)
        return [LogEntry(op, self.name, "applied")]

    def _unlink(self, s, op: Operation) -> list[LogEntry]:
        self._write_links(s)  # links set earlier in this chunk first, so this drop sees them
        if op.canonical_id is not None:
            self.links[op.entity.value].pop(op.canonical_id, None)
            self.store.drop_link(s, self.name, op.entity.value, op.canonical_id)
        if op.remote_id is not None and op.entity is Entity.CONTACT and not self.provider.capabilities.list_contacts:
            self.store.drop_mirror(s, self.name, contacts=True, remote_id=op.remote_id)
        return [LogEntry(op, self.name, "skipped", error=op.skip_reason)] if op.skip_reason else []

    def _report(self, s, op: Operation) -> list[LogEntry]:
        return [LogEntry(op, self.name, "skipped", error=op.reason)]

    # -- helpers ------------------------------------------------------------------

    def _set_link(self, s, entity: Entity, cid: int, remote_id: str | None, base: dict[str, Any]) -> None:
        if remote_id is None:
            return
        stale = self.by_remote[entity.value].get(remote_id)
        if stale is not None and stale != cid:
            self.links[entity.value].pop(stale, None)
        self.by_remote[entity.value][remote_id] = cid
        link = self.links[entity.value][cid] = BaseRecord(remote_id, dict(base))
        self._links_due.append((entity.value, cid, remote_id, link.fields))

    def _write_links(self, s) -> None:
        """Write the links set since the last call, in the chunk's transaction.

        Batched because one statement per link cost most of a large import; the
        in-memory links are current all along, and the rows land before the
        chunk commits and before any link is dropped.
        """
        due, self._links_due = self._links_due, []
        for entity in dict.fromkeys(e for e, *_ in due):
            self.store.set_links(s, self.name, entity, [(cid, rid, base) for e, cid, rid, base in due if e == entity])

    def _count(self, op: Operation) -> None:
        key = {"create": "created_in", "update": "updated_in", "delete": "deleted_in"}.get(op.action.value)
        if key:
            self.counts[key] = self.counts.get(key, 0) + 1


def _without_meta(fields: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (fields or {}).items() if k not in ("groups", "opted_out")}
