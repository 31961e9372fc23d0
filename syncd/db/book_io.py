"""The canonical book in bulk: the writes of ``syncd import`` and the read of ``syncd export``.

The file format (columns, validation, the quote that neutralises formulas) is
:mod:`syncd.cli.csvio`'s; this module knows contacts, groups and memberships.

Import is an upsert by E.164 phone in ONE transaction: a database failure
midway rolls everything back. An existing contact (matched even when its
stored phone is in another format) gets the fields and extra keys the import
gives; the others are left alone. ``opted_out`` is sticky: a yes sets it,
nothing clears it. Groups are matched by :func:`syncd.model.group_key` and
created when missing; memberships are added, never removed. An unchanged
contact is not written, so its ``updated_at`` and the next sync stay quiet. An
``extra`` that SQL left as something other than a JSON object is kept unless
the import gives extra values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from syncd.db.clock import utcnow
from syncd.db.models import ContactRow, GroupMemberRow, GroupRow, OptOutRow
from syncd.model import group_key
from syncd.phones import InvalidPhone, to_e164

__all__ = ["BookExport", "ContactImport", "ImportCounts", "StoredContact", "export_contacts", "import_contacts"]

_E164 = re.compile(r"\+[1-9][0-9]{1,14}")

#: The columns of a contact that import compares and export writes.
_CONTACT_COLUMNS = (ContactRow.id, ContactRow.phone, ContactRow.name, ContactRow.surname, ContactRow.email,
                    ContactRow.extra, ContactRow.opted_out)


class StoredContact(NamedTuple):
    """A stored contact's :data:`_CONTACT_COLUMNS`, as import compares them and export writes them."""

    id: int
    phone: str
    name: str
    surname: str
    email: str
    extra: Any  # a JSON object, unless SQL wrote something else
    opted_out: bool


@dataclass(frozen=True, slots=True)
class ContactImport:
    """One contact to upsert. ``fields`` and ``extra`` hold only what the import gives; extra ``''`` clears a key."""

    phone: str  # E.164
    fields: dict[str, str]  # of name, surname, email
    extra: dict[str, str]
    groups: tuple[str, ...]
    opted_out: bool


@dataclass
class ImportCounts:
    """What an import did to the book."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    groups_created: int = 0
    memberships_added: int = 0


@dataclass(frozen=True, slots=True)
class BookExport:
    """The whole book as export writes it."""

    contacts: list[StoredContact]  # by id
    groups: dict[int, list[str]]  # contact id -> the names of its groups, in no order
    opt_out_origins: dict[str, str]  # phone -> "provider:origin" of an opt-out a provider reported


# --- import ---------------------------------------------------------------------------------


def import_contacts(engine: Engine, records: Sequence[ContactImport], region: str) -> ImportCounts:
    """Upsert ``records`` into the canonical book in one transaction (see the module docstring).

    ``region`` reads stored phones that SQL wrote without ``+country``, as the engine does.
    """
    counts = ImportCounts()
    # IMMEDIATE: this transaction reads then writes; take SQLite's write lock up front.
    with Session(engine.execution_options(sqlite_begin="IMMEDIATE")) as s, s.begin():
        group_ids = _ensure_groups(s, records, counts)
        existing = _existing_contacts(s, {r.phone for r in records}, region)
        new = [r for r in records if r.phone not in existing]
        ids = _insert_contacts(s, new) | {phone: row.id for phone, row in existing.items()}
        members = {(c, g) for c, g in s.execute(select(GroupMemberRow.contact_id, GroupMemberRow.group_id))}
        updates, memberships = _changes(records, existing, ids, group_ids, members, counts)
        if updates:
            s.execute(update(ContactRow), updates)
        if memberships:
            s.execute(insert(GroupMemberRow), [{"contact_id": c, "group_id": g} for c, g in memberships])
    counts.created, counts.memberships_added = len(new), len(memberships)
    return counts


def _changes(records: Sequence[ContactImport], existing: dict[str, StoredContact], ids: dict[str, int],
             group_ids: dict[str, int], members: set[tuple[int, int]],
             counts: ImportCounts) -> tuple[list[dict[str, Any]], list[tuple[int, int]]]:
    """The contact updates and the new (contact, group) memberships ``records`` make; counts the updated ones."""
    updates: list[dict[str, Any]] = []
    memberships: list[tuple[int, int]] = []
    for record in records:
        cid = ids[record.phone]
        added = sorted({(cid, group_ids[group_key(name)]) for name in record.groups} - members)
        change = _update_for(existing[record.phone], record) if record.phone in existing else None
        memberships += added
        updates += [change] if change else []
        if record.phone in existing:
            counts.updated += bool(change or added)
            counts.unchanged += not (change or added)
    return updates, memberships


def _ensure_groups(s: Session, records: Sequence[ContactImport], counts: ImportCounts) -> dict[str, int]:
    """Group id by key for every group the records name, creating the missing ones (first spelling wins)."""
    wanted: dict[str, str] = {}
    for record in records:
        for name in record.groups:
            wanted.setdefault(group_key(name), name)
    ids: dict[str, int] = {}
    for gid, name in s.execute(select(GroupRow.id, GroupRow.name).order_by(GroupRow.id)):
        ids.setdefault(group_key(name), gid)
    missing = [{"name": name} for key, name in wanted.items() if key not in ids]
    if missing:
        for gid, name in s.execute(insert(GroupRow).returning(GroupRow.id, GroupRow.name), missing):
            ids[group_key(name)] = gid
    counts.groups_created = len(missing)
    return ids


def _existing_contacts(s: Session, phones: set[str], region: str) -> dict[str, StoredContact]:
    """Stored contacts by E.164 phone, for the phones of the import (the lowest id when two rows agree)."""
    found: dict[str, StoredContact] = {}
    for row in s.execute(select(*_CONTACT_COLUMNS).order_by(ContactRow.id)):
        # Rows written by SQL may hold a national format; normalise only those (parsing is the slow part).
        phone = row.phone if _E164.fullmatch(row.phone) else _try_e164(row.phone, region)
        if phone is not None and phone in phones and phone not in found:
            found[phone] = StoredContact(*row)
    return found


def _try_e164(phone: str, region: str) -> str | None:
    try:
        return to_e164(phone, region)
    except InvalidPhone:
        return None


def _insert_contacts(s: Session, records: Sequence[ContactImport]) -> dict[str, int]:
    if not records:
        return {}
    rows = [{"phone": r.phone, "name": r.fields.get("name", ""), "surname": r.fields.get("surname", ""),
             "email": r.fields.get("email", ""), "extra": {k: v for k, v in r.extra.items() if v},
             "opted_out": r.opted_out} for r in records]
    result = s.execute(insert(ContactRow).returning(ContactRow.id, ContactRow.phone), rows)
    return {phone: cid for cid, phone in result}


def _update_for(row: StoredContact, record: ContactImport) -> dict[str, Any] | None:
    """The bulk-update values for ``row`` after ``record``, or None when nothing changes."""
    before = {"name": row.name, "surname": row.surname, "email": row.email, "extra": row.extra,
              "opted_out": bool(row.opted_out)}
    after = {**before, **record.fields, "extra": _merged_extra(row.extra, record.extra),
             "opted_out": bool(row.opted_out) or record.opted_out}
    if after == before:
        return None
    return {"id": row.id, **after, "updated_at": utcnow()}


def _merged_extra(stored: Any, updates: dict[str, str]) -> Any:
    """``stored`` with the import's extra keys set (or removed, for empty cells)."""
    if not isinstance(stored, dict):
        # Not an object (written by SQL; the engine reports it): replaced only when the import gives values.
        if not any(updates.values()):
            return stored
        stored = {}
    merged = {k: v for k, v in stored.items() if k not in updates}
    merged.update((k, v) for k, v in updates.items() if v)
    return merged


# --- export ---------------------------------------------------------------------------------


def export_contacts(engine: Engine) -> BookExport:
    """Every contact of the book, by id, and the names of each one's groups."""
    with Session(engine) as s:
        contacts = [StoredContact(*row) for row in s.execute(select(*_CONTACT_COLUMNS).order_by(ContactRow.id))]
        groups: dict[int, list[str]] = {}
        for cid, name in s.execute(select(GroupMemberRow.contact_id, GroupRow.name)
                                   .join(GroupRow, GroupRow.id == GroupMemberRow.group_id)):
            groups.setdefault(cid, []).append(name)
        origins = {phone: f"{provider}:{origin}"
                   for phone, provider, origin in s.execute(select(OptOutRow.phone, OptOutRow.provider, OptOutRow.origin))}
    return BookExport(contacts, groups, origins)
