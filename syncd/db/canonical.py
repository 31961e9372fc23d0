"""Reading the canonical book as people leave it: every value readable, or a named problem.

Users edit ``contacts``, ``groups`` and ``group_members`` with plain SQL
(design §3). SQLite stores whatever a client sends: text that is not UTF-8
(typed in a Latin-1 terminal), ``'false'`` in a boolean, ``'yesterday'`` in a
timestamp, ``'{bad'`` as JSON. Read with their declared types, one such value
raises inside the driver or SQLAlchemy and fails the whole query, and so every
run. Here columns come back raw (text as bytes on SQLite) and are checked row
by row: a row syncd cannot read is listed in :attr:`Book.invalid` with the
field and the value, and skipped; the other rows are read as usual.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Integer, LargeBinary, Select, Text, cast, select, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from syncd.db.batch import rows_in
from syncd.db.models import ContactRow, GroupMemberRow, GroupRow, UTCDateTime
from syncd.errors import excerpt
from syncd.model import Contact, Group
from syncd.phones import InvalidPhone, to_e164

__all__ = ["KEEPER", "Book", "Invalid", "read_contacts", "read_groups"]

Invalid = tuple[int, str, str]  # (row id, field, problem naming the value)

# A phone already in E.164 (what syncd writes): read as is unless its row changed.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass
class Book:
    """Canonical records in memory: some contacts (by id) with their groups, and every group.

    A run loads only the contacts it reconciles. ``invalid`` lists loaded
    contact rows the engine cannot sync (unreadable phone, a phone another row
    already holds, a value it cannot read), each with the field and the reason;
    ``invalid_groups`` likewise groups (one whose name another group has,
    trimmed and case-folded). They are skipped, and memberships in a skipped
    group are left out of ``contacts``.
    """

    contacts: dict[int, Contact]
    groups: dict[int, Group]
    invalid: list[Invalid] = field(default_factory=list)
    invalid_groups: list[Invalid] = field(default_factory=list)

    def group_by_key(self) -> dict[str, int]:
        return {g.key: gid for gid, g in self.groups.items()}


def read_groups(session: Session) -> tuple[dict[int, Group], list[Invalid]]:
    """Every readable group by id, and the rows that are not (see :func:`_unique_groups`)."""
    columns = _Columns(session.get_bind().dialect)
    return _unique_groups(columns, session.execute(columns.group_query()))


def read_contacts(session: Session, ids: Collection[int] | None, groups: Mapping[int, Group], default_region: str,
                  *, check: Callable[[int], bool]) -> tuple[dict[int, Contact], list[Invalid], dict[int, str]]:
    """The contacts ``ids`` (None: all), the rows among them that cannot be read, and the phones to rewrite in E.164.

    A phone is parsed (``phonenumbers``) only when it is not already written in
    E.164 or ``check(id)`` says the row changed since it was last read: a
    number that has not changed is not validated again. One number held by
    several rows (written in different spellings) stays with the lowest id; the
    others are reported (:func:`_one_row_per_number`).
    """
    reader = _Reader(session, groups, default_region, check)
    contacts, invalid, stored = reader.rows(ids)
    fixes = _one_row_per_number(reader, contacts, stored, {cid for cid, _, _ in invalid}, invalid)
    return contacts, invalid, fixes


class _Reader:
    """Contact rows read and checked one by one."""

    def __init__(self, session: Session, groups: Mapping[int, Group], default_region: str,
                 check: Callable[[int], bool]) -> None:
        self.session, self.groups, self.default_region, self.check = session, groups, default_region, check
        self.columns = _Columns(session.get_bind().dialect)

    def rows(self, ids: Collection[int] | None) -> tuple[dict[int, Contact], list[Invalid], dict[int, str]]:
        """Readable contacts, unreadable rows, and the phone as written where it is not the row's E.164."""
        members = _members(self.session, ids, self.groups)
        contacts: dict[int, Contact] = {}
        invalid: list[Invalid] = []
        stored: dict[int, str] = {}
        for row in rows_in(self.session, self.columns.contact_query(), ContactRow.id, ids):
            try:
                phone = self.columns.text(row.phone, "phone")
                trusted = _E164.fullmatch(phone) is not None and not self.check(row.id)
                contacts[row.id] = self.columns.contact(row, phone, self.default_region, members.get(row.id, ()),
                                                        trusted=trusted)
            except _Unreadable as exc:
                invalid.append((row.id, exc.field, exc.problem))
                continue
            if contacts[row.id].phone != phone:
                stored[row.id] = phone
        return contacts, invalid, stored

    def verbatim(self, numbers: Collection[str]) -> dict[str, int]:
        """number -> the row writing it in E.164 (the unique constraint allows one)."""
        return {phone: cid for cid, phone in rows_in(self.session, select(ContactRow.id, ContactRow.phone),
                                                     ContactRow.phone, numbers)}


def _one_row_per_number(reader: _Reader, contacts: dict[int, Contact], stored: Mapping[int, str],
                        unreadable: set[int], invalid: list[Invalid]) -> dict[int, str]:
    """Rows meaning the same number: the lowest id among the readable ones keeps it, the others move to ``invalid``.

    A row that writes its number in another spelling is rewritten in E.164 (the
    fixes returned), unless another row holds it written so: then the unique
    constraint forbids it, and it stays as written. The row writing a number in
    E.164 takes part even when it was not asked for (it is read to know whether
    it is readable); the spellings of rows not read here are not looked for:
    the first run that reads a row rewrites its spelling.
    """
    by_number: dict[str, list[int]] = {}
    for cid, contact in contacts.items():
        by_number.setdefault(contact.phone, []).append(cid)
    shared = {number for number, ids in by_number.items() if len(ids) > 1 or any(i in stored for i in ids)}
    if not shared:
        return {}
    verbatim = reader.verbatim(shared)
    outside = {cid for cid in verbatim.values() if cid not in contacts and cid not in unreadable}
    readable_outside = set(reader.rows(outside)[0]) if outside else set()
    fixes: dict[int, str] = {}
    for number in sorted(shared):
        holder = verbatim.get(number)
        candidates = by_number[number] + ([holder] if holder in readable_outside else [])
        keeper = min(candidates)
        for cid in by_number[number]:
            if cid != keeper:
                written = stored.get(cid, contacts[cid].phone)
                invalid.append((cid, "phone", f"{written!r} is the same number as contact {keeper} ({number})"))
                del contacts[cid]
        if keeper in stored and holder in (None, keeper):
            fixes[keeper] = number
    return fixes


#: How a duplicate-number report names the row that keeps the number (see :func:`_one_row_per_number`).
KEEPER = re.compile(r"is the same number as contact ([0-9]+) ")


def _members(session: Session, ids: Collection[int] | None, groups: Mapping[int, Group]) -> dict[int, set[int]]:
    members: dict[int, set[int]] = {}
    query = select(GroupMemberRow.group_id, GroupMemberRow.contact_id)
    for gid, cid in rows_in(session, query, GroupMemberRow.contact_id, ids):
        if gid in groups:
            members.setdefault(cid, set()).add(gid)
    return members


class _Unreadable(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field, self.problem = field, problem


class _Columns:
    """How each canonical column is selected, and read back checked."""

    def __init__(self, dialect: Dialect) -> None:
        self.sqlite = dialect.name == "sqlite"
        # SQLite keeps timestamps as text: parsed here, with the column type's own reading.
        self._time = UTCDateTime().dialect_impl(dialect).result_processor(dialect, None) if self.sqlite else None

    def _raw(self, column: Any) -> Any:
        return cast(column, LargeBinary) if self.sqlite else column

    def contact_query(self) -> Select[Any]:
        c = ContactRow
        extra = cast(c.extra, LargeBinary if self.sqlite else Text)
        return select(c.id, self._raw(c.phone).label("phone"), self._raw(c.name).label("name"),
                      self._raw(c.surname).label("surname"), self._raw(c.email).label("email"),
                      extra.label("extra"), type_coerce(c.opted_out, Integer).label("opted_out"),
                      self._raw(c.updated_at).label("updated_at"))

    def group_query(self) -> Select[Any]:
        g = GroupRow
        return select(g.id, self._raw(g.name).label("name"), self._raw(g.description).label("description"),
                      self._raw(g.updated_at).label("updated_at")).order_by(g.id)

    def contact(self, row: Any, phone: str, default_region: str, groups: Iterable[int], *, trusted: bool) -> Contact:
        try:
            e164 = phone if trusted else to_e164(phone, default_region)
        except InvalidPhone as exc:
            raise _Unreadable("phone", str(exc)) from None
        extra = self.json_object(row.extra)
        return Contact(row.id, e164, self.text(row.name, "name"), self.text(row.surname, "surname"),
                       self.text(row.email, "email"), {str(k): v for k, v in extra.items()},
                       self.flag(row.opted_out, "opted_out"), frozenset(groups), self.time(row.updated_at))

    def text(self, raw: Any, name: str) -> str:
        if raw is None:
            return ""
        if isinstance(raw, (bytes, bytearray, memoryview)):
            try:
                return bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise _Unreadable(name, f"{name} is not UTF-8 text: {excerpt(repr(bytes(raw)), 60)}") from None
        return str(raw)

    def flag(self, raw: Any, name: str) -> bool:
        # 'false' typed into a SQLite boolean would otherwise read as true: an opt-out
        # (sticky, and pushed to smsend's blacklist) nobody asked for.
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        raise _Unreadable(name, f"{name} must be true or false (1 or 0), got {excerpt(repr(raw), 60)}")

    def time(self, raw: Any) -> datetime | None:
        if self._time is None:
            return raw if isinstance(raw, datetime) else None  # PostgreSQL hands timestamps over typed
        text = self.text(raw, "updated_at")
        try:
            value = self._time(text)
        except (ValueError, TypeError):
            value = None
        if not isinstance(value, datetime):
            raise _Unreadable("updated_at", f"updated_at is not a timestamp: {excerpt(text, 60)!r}") from None
        return value

    def json_object(self, raw: Any) -> Mapping[str, Any]:
        text = self.text(raw, "extra")
        try:
            value = orjson.loads(text) if raw is not None else None
        except orjson.JSONDecodeError:
            raise _Unreadable("extra", f"extra is not valid JSON: {excerpt(text, 60)!r}") from None
        if not isinstance(value, dict):
            raise _Unreadable("extra", f"extra must be a JSON object, got {type(value).__name__}: {excerpt(text, 60)!r}")
        return value


def _unique_groups(columns: _Columns, rows: Iterable[Any]) -> tuple[dict[int, Group], list[Invalid]]:
    """Groups by id, the first of each name key kept; later ones with the same key, as invalid.

    The database only keeps ``lower(name)`` unique: "VIP" and "vip " are both
    allowed there but are one group to every provider.
    """
    groups: dict[int, Group] = {}
    seen: dict[str, int] = {}
    invalid = []
    for row in rows:
        try:
            group = Group(row.id, columns.text(row.name, "name"), columns.text(row.description, "description"),
                          columns.time(row.updated_at))
        except _Unreadable as exc:
            invalid.append((row.id, exc.field, exc.problem))
            continue
        if group.key in seen:
            invalid.append((row.id, "name", f"{group.name!r} is the same name as group {seen[group.key]}"))
            continue
        seen[group.key] = row.id
        groups[row.id] = group
    return groups, invalid
