"""A faithful in-memory simulator of the SendHub v1 API (contacts and groups).

Sources: SEED-002 (the contract) and providers.md PART 2 / PART 3 items 11-18.
Paths work with and without the trailing slash. The choices the documents leave
open, made here and followed by the client:

* **Auth**: query ``username`` + ``api_key`` or ``Authorization: Basic``
  ``base64(username:api_key)``; otherwise 401 with an empty body (Tastypie).
* **Numbers**: ``NXXXXXXXXX`` or ``+1NXXXXXXXXX`` (N = 2-9, the area code's first
  digit; the exchange is not checked, SEED-002's own example has exchange 123),
  as a string or a JSON integer; stored and echoed as ``+1XXXXXXXXXX``.
  ``1NXXXXXXXXX`` without the plus is rejected. Anything else: 400
  ``{"number": ["Only 10 digit numbers are accepted."]}``.
* **POST /v1/contacts/** creates only: an existing number is 400
  ``{"number": ["That number is already in your contacts."]}`` (SH-NEW's upsert
  by ``id`` is not modelled; an ``id`` in a POST body is ignored).
* **PUT** is a full replace (custom fields and ``groups`` left out are removed)
  and answers ``state.put_status`` (202 as SEED-002; set 200 for SH-NEW).
  A body ``id`` different from the URL id is 400 ``{"id": [...]}``.
* **Writable SendHub-owned attributes** (SH-NEW's request schema): ``screened``
  (the owner blocked the contact; boolean, default false) and ``keyword``
  (unique; default the first word of the name, lowercased, letters and digits,
  then 1, 2, ...; one in use is 400 ``{"keyword": ["This keyword is already in use."]}``).
  Every contact shows both; POST and PUT set them, and a PUT without them
  resets them to those defaults, like everything else it leaves out.
  ``blocked`` (the person's opt-out) stays read-only: a body's value is ignored.
* **deleted** (SH-NEW's read-only flag): a record a test marks deleted
  (``mark_deleted``, ``mark_group_deleted``) is still listed, with
  ``"deleted": true``, and is absent everywhere else: 404 by id, in no group,
  its number, keyword, group name and slug free again. Other records carry no
  ``deleted`` key (SEED-002's shape).
* **409 "Try again later"**: ``state.busy_next = N`` answers the next N API
  requests 409 ``{"error": "Try again later", "message": ..., "status": 409}``
  before touching anything (the answer SH-PY retries).
* **Paging** follows Tastypie: ``limit`` default 20; 0 or above 1000 means
  1000 (clamped, reported in ``meta.limit``); negative or non-integer
  ``limit``/``offset`` is 400 text/html. ``meta.next`` is null when
  ``offset + limit >= total_count``; ``meta.previous`` is null when
  ``offset - limit < 0`` (Tastypie's quirk). Both are relative
  ``/api/v1/...`` URLs carrying the request's other query parameters.
  Objects come in creation order, which is id order (generated ids grow), so
  offset paging is stable.
* **Filters**: ``number`` (exact, E.164, e.g. ``%2B16501234567``) on contact
  lists; any other *field of the resource* as a query parameter is 400
  ``text/html`` "The 'X' field does not allow filtering."; other unknown
  parameters are ignored, as Tastypie does.
* **Groups**: names 1-128 characters, unique case-insensitively after trimming
  (400 ``{"name": ["Duplicate group name."]}``); ``slug`` defaults to the
  lowercased name without spaces, made unique by appending 1, 2, ...; an explicit
  slug already in use is 400. ``ttjResponse`` is at most 70 characters. PUT
  answers 200 and resets left-out fields to their defaults. DELETE keeps the
  contacts; they lose the membership (and their ``date_modified`` moves).
* **Membership** ``POST /v1/groups/{id}/contacts/`` ``{"add": [...], "remove": [...]}``
  answers 202 ``{"add", "remove", "errors"}``; problems per id go in ``errors``.
* Ids are strings of digits that grow with creation but are not 1, 2, 3.
* Error bodies: 404 ``{"error": "Requested contact not found", "status": 404}``;
  other JSON errors carry both ``error`` and ``message``. A method the path does
  not have is 405 (empty body, ``Allow``), checked before auth as Tastypie does.

The module is long on purpose (design §6: one module per provider holding its
whole contract); its sections are the account (what tests inspect and change),
request validation, paging, the HTTP handlers, fault bodies and seeding.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from syncd.simulators.faults import DefaultFaultHooks, Faults, format_time_left

__all__ = [
    "FAULT_HOOKS",
    "Contact",
    "Group",
    "SendHubAccount",
    "SendHubError",
    "SendHubFaultHooks",
    "build",
    "normalise_number",
]

CONTACT_URI = "/api/v1/contacts/{}/"
GROUP_URI = "/api/v1/groups/{}/"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
NAME_MAX = 128
JOIN_MESSAGE_MAX = 70
CUSTOM_FIELDS_MAX_BYTES = 65_535
DEFAULT_JOIN_MESSAGE = "You are now subscribed."
REQUIRED = "This field is required."
BAD_NUMBER = "Only 10 digit numbers are accepted."
DUPLICATE_NUMBER = "That number is already in your contacts."
DUPLICATE_GROUP = "Duplicate group name."
KEYWORD_TAKEN = "This keyword is already in use."
TRY_AGAIN = "Try again later"
CONTACT_NOT_FOUND = {"error": "Requested contact not found", "status": 404}
GROUP_NOT_FOUND = {"error": "Requested group not found", "status": 404}

CONTACT_READ_ONLY = frozenset({"id", "resource_uri", "blocked", "date_created", "date_modified", "deleted"})
CONTACT_FIELDS = CONTACT_READ_ONLY | {"name", "number", "groups", "screened", "keyword"}
GROUP_FIELDS = frozenset(
    {"id", "name", "slug", "text_to_subscribe", "ttjResponse", "resource_uri", "size", "date_created", "date_modified",
     "deleted"}
)
CONTACT_FILTERS = frozenset({"number"})
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

_NUMBER = re.compile(r"(?:\+1)?([2-9]\d{9})")
_GROUP_REF = re.compile(r"(?:/api)?/v1/groups/(\d+)/?")
_DIGITS = re.compile(r"\d+")
_KEYWORD_CHARS = re.compile(r"[^0-9a-z]")

Clock = Callable[[], float]


class SendHubError(Exception):
    """An API error: a status and a JSON body (dict) or a text/html body (str)."""

    def __init__(self, status: int, body: Mapping[str, Any] | str) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body

    @classmethod
    def fields(cls, errors: Mapping[str, list[str]]) -> SendHubError:
        """A Django-style field map, 400."""
        return cls(400, dict(errors))

    @classmethod
    def generic(cls, status: int, message: str) -> SendHubError:
        """A generic error; both ``error`` and ``message`` so every client finds its key."""
        return cls(status, {"error": message, "message": message, "status": status})

    def response(self) -> Response:
        if isinstance(self.body, str):
            return Response(self.body, status_code=self.status, media_type="text/html")
        return json_response(self.body, self.status)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(_dumps(data), status_code=status, media_type="application/json")


def _dumps(data: Any) -> bytes:
    # Tastypie's serializer sorts keys; the seed's examples are in that order.
    return json.dumps(data, sort_keys=True).encode()


def format_timestamp(epoch: float) -> str:
    """SEED-002's timestamp: UTC, microseconds, no zone: ``2012-05-31T17:44:17.406108``."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")


def normalise_number(raw: Any) -> str | None:
    """``+1XXXXXXXXXX`` for a 10-digit North American number (string or int), else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        raw = str(raw)
    if not isinstance(raw, str):
        return None
    match = _NUMBER.fullmatch(raw)
    return "+1" + match.group(1) if match else None


# -- the account --------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Contact:
    """One SendHub contact. ``extra`` holds the custom fields echoed at the top level."""

    id: str
    name: str
    number: str
    extra: dict[str, Any]
    groups: set[str]
    date_created: str
    date_modified: str
    keyword: str = ""
    screened: bool = False
    blocked: bool = False
    deleted: bool = False
    _json: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        """The API representation: SEED-002's shape plus SH-NEW's ``keyword`` and ``screened``."""
        data = dict(self.extra)
        data.update(
            blocked=self.blocked,
            date_created=self.date_created,
            date_modified=self.date_modified,
            groups=[GROUP_URI.format(g) for g in sorted(self.groups, key=int)],
            id=self.id,
            keyword=self.keyword,
            name=self.name,
            number=self.number,
            resource_uri=CONTACT_URI.format(self.id),
            screened=self.screened,
        )
        if self.deleted:
            data["deleted"] = True
        return data

    def json(self) -> bytes:
        """``to_dict()`` serialised, cached until the contact changes (list pages join these)."""
        if self._json is None:
            self._json = _dumps(self.to_dict())
        return self._json

    def changed(self, now: str) -> None:
        self.date_modified = now
        self._json = None


@dataclass(eq=False, slots=True)
class Group:
    """One SendHub group; ``members`` keeps contact ids (insertion order, sorted on demand)."""

    id: str
    name: str
    slug: str
    text_to_subscribe: bool
    join_message: str
    date_created: str
    date_modified: str
    members: dict[str, None] = field(default_factory=dict)
    deleted: bool = False
    _ordered: list[str] | None = None

    def to_dict(self, *, size_known: bool = True) -> dict[str, Any]:
        """The API representation; ``size`` is null in the create response (SH-OLD)."""
        data = {
            "date_created": self.date_created,
            "date_modified": self.date_modified,
            "id": self.id,
            "name": self.name,
            "resource_uri": GROUP_URI.format(self.id),
            "size": len(self.members) if size_known else None,
            "slug": self.slug,
            "text_to_subscribe": self.text_to_subscribe,
            "ttjResponse": self.join_message,
        }
        if self.deleted:
            data["deleted"] = True
        return data

    def ordered_members(self) -> list[str]:
        if self._ordered is None:
            self._ordered = sorted(self.members, key=int)
        return self._ordered

    def add(self, contact_id: str) -> None:
        self.members[contact_id] = None
        self._ordered = None

    def discard(self, contact_id: str) -> None:
        if self.members.pop(contact_id, 0) is None:
            self._ordered = None


class _IdSequence:
    """Digit-string ids that grow with creation (so id order is creation order) by random steps."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(f"sendhub-ids-{seed}")
        self._next = self._rng.randint(10_000, 99_999_999)

    def __call__(self) -> str:
        value = self._next
        self._next += self._rng.randint(1, 997)
        return str(value)


_UNSET: Any = object()


def _admin_id(action: Callable[[str], Contact | Group], body: Mapping[str, Any], key: str) -> str:
    """Run an admin action on the record ``body[key]``; ValueError (the admin interface's 400) if unknown."""
    try:
        return action(str(body[key])).id
    except KeyError as exc:
        raise ValueError(f"{key}: {exc}") from None


@dataclass(frozen=True, slots=True)
class ContactInput:
    """A validated contact body."""

    name: str
    number: str
    groups: tuple[str, ...]
    extra: dict[str, Any]
    screened: bool = False
    keyword: str | None = None  # None: the default, made from the name


class SendHubAccount:
    """The whole account in memory: what the API serves and what tests inspect or change.

    Every method is safe to call from a test thread while the server runs.
    ``contacts`` and ``groups`` map id to record, in creation order (records
    marked ``deleted`` included: they are listed, and absent everywhere else).
    ``busy_next`` makes the next N API requests answer 409 "Try again later".
    """

    def __init__(self, *, username: str, api_key: str, clock: Clock | None = None, seed: int = 0) -> None:
        self.username = username
        self.api_key = api_key
        self.clock: Clock = clock or time.time
        self.contacts: dict[str, Contact] = {}
        self.groups: dict[str, Group] = {}
        self.put_status = 202
        self.lock = threading.RLock()
        self.busy_next = 0
        self._by_number: dict[str, str] = {}
        self._by_keyword: dict[str, str] = {}
        self._keyword_next: dict[str, int] = {}  # base -> the next suffix worth trying (O(1) defaults)
        self._order: list[str] | None = []
        self._new_id = _IdSequence(seed)
        self.admin_actions: dict[str, Callable[[dict[str, Any]], Any]] = {
            "block": lambda body: self.block(body["number"]).id,
            "unblock": lambda body: self.unblock(body["number"]).id,
            "mark_deleted": lambda body: _admin_id(self.mark_deleted, body, "contact_id"),
            "mark_group_deleted": lambda body: _admin_id(self.mark_group_deleted, body, "group_id"),
            "busy": lambda body: self._set_busy(body.get("count", 1)),
        }

    def now(self) -> str:
        return format_timestamp(self.clock())

    def take_busy(self) -> bool:
        """True (and one fewer to go) while ``busy_next`` asks for 409 "Try again later" answers."""
        with self.lock:
            if self.busy_next <= 0:
                return False
            self.busy_next -= 1
            return True

    def _set_busy(self, count: Any) -> int:
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError("count must be a non-negative integer")
        self.busy_next = count
        return count

    # -- reading --------------------------------------------------------------------

    def find(self, number: str) -> Contact | None:
        """The contact with this number (any accepted spelling), or None."""
        normal = normalise_number(number)
        with self.lock:
            contact_id = self._by_number.get(normal or "")
            return self.contacts.get(contact_id) if contact_id else None

    def contact_ids(self) -> list[str]:
        """Contact ids in id (creation) order; O(1) when nothing was deleted since the last call."""
        with self.lock:
            if self._order is None:
                self._order = list(self.contacts)
            return self._order

    def snapshot(self) -> dict[str, Any]:
        """The whole account as plain JSON values: contacts, groups (with size), memberships."""
        with self.lock:
            return {
                "contacts": [c.to_dict() for c in self.contacts.values()],
                "groups": [g.to_dict() for g in self.groups.values()],
                "memberships": [[g.id, c] for g in self.groups.values() for c in g.ordered_members()],
            }

    # -- contacts -----------------------------------------------------------------

    def add_contact(
        self,
        name: str,
        number: str | int,
        *,
        groups: Iterable[str] = (),
        blocked: bool = False,
        screened: bool = False,
        keyword: str | None = None,
        contact_id: str | None = None,
        **extra: Any,
    ) -> Contact:
        """Create a contact "at the provider" (no HTTP); ValueError on a bad or taken number.

        ``contact_id`` forces the id (to replay a document's example verbatim); it is
        listed in creation order like any other.
        """
        normal = self._valid_number(number)
        groups = tuple(str(g) for g in groups)
        with self.lock:
            self._check_groups_exist(groups)
            if normal in self._by_number:
                raise ValueError(f"{normal}: {DUPLICATE_NUMBER}")
            if contact_id is not None and (contact_id in self.contacts or not _DIGITS.fullmatch(contact_id)):
                raise ValueError(f"contact id {contact_id!r} is taken or not a string of digits")
            if keyword and self.keyword_taken(keyword):
                raise ValueError(f"{keyword!r}: {KEYWORD_TAKEN}")
            data = ContactInput(name, normal, groups, extra, screened=screened, keyword=keyword)
            contact = self._insert(data, self.now(), contact_id)
            contact.blocked = blocked
            return contact

    def edit_contact(
        self,
        contact_id: str,
        *,
        name: str = _UNSET,
        number: str | int = _UNSET,
        groups: Iterable[str] = _UNSET,
        screened: bool = _UNSET,
        keyword: str = _UNSET,
        **extra: Any,
    ) -> Contact:
        """Change some fields "at the provider" (the rest is kept, ``keyword`` included); an extra
        set to None is removed. Refreshes ``date_modified``.
        """
        with self.lock:
            contact = self._get_contact(contact_id)
            data = ContactInput(
                name=contact.name if name is _UNSET else name,
                number=contact.number if number is _UNSET else self._valid_number(number),
                groups=tuple(str(g) for g in (contact.groups if groups is _UNSET else groups)),
                extra={k: v for k, v in {**contact.extra, **extra}.items() if v is not None},
                screened=contact.screened if screened is _UNSET else screened,
                keyword=contact.keyword if keyword is _UNSET else keyword,
            )
            self._check_groups_exist(data.groups)
            if self._by_number.get(data.number, contact.id) != contact.id:
                raise ValueError(f"{data.number}: {DUPLICATE_NUMBER}")
            if data.keyword and self.keyword_taken(data.keyword, exclude=contact.id):
                raise ValueError(f"{data.keyword!r}: {KEYWORD_TAKEN}")
            self._replace(contact, data)
            return contact

    def delete_contact(self, contact_id: str) -> None:
        with self.lock:
            contact = self._get_contact(contact_id)
            for group_id in contact.groups:
                self.groups[group_id].discard(contact.id)
            del self.contacts[contact.id]
            if not contact.deleted:
                self._unindex(contact)
            self._order = None

    def mark_deleted(self, contact_id: str) -> Contact:
        """Flag the contact ``deleted: true`` (SH-NEW's read-only flag): it stays in listings, and is
        absent everywhere else (404 by id, not a member, its number and keyword free again).
        """
        with self.lock:
            contact = self._get_contact(contact_id)
            for group_id in contact.groups:
                self.groups[group_id].discard(contact.id)
            contact.groups = set()
            self._unindex(contact)
            contact.deleted = True
            contact.changed(self.now())
            return contact

    def restore(self, contact_id: str) -> Contact:
        """Clear a contact's ``deleted`` flag (as SendHub's support may): it is back, without its old groups.

        ValueError if its number or keyword went to another contact meanwhile.
        """
        with self.lock:
            contact = self.contacts[contact_id]
            if not contact.deleted:
                return contact
            for key, index in ((contact.number, self._by_number), (contact.keyword, self._by_keyword)):
                if index.get(key, contact.id) != contact.id:
                    raise ValueError(f"{key!r} is taken again: the contact cannot come back")
            contact.deleted = False
            self._by_number[contact.number] = contact.id
            if contact.keyword:
                self._by_keyword[contact.keyword] = contact.id
            contact.changed(self.now())
            return contact

    def _unindex(self, contact: Contact) -> None:
        if self._by_number.get(contact.number) == contact.id:
            del self._by_number[contact.number]
        if self._by_keyword.get(contact.keyword) == contact.id:
            del self._by_keyword[contact.keyword]

    def block(self, number: str) -> Contact:
        """Mark the contact with this number ``blocked`` (the person texted STOP)."""
        return self._set_blocked(number, True)

    def unblock(self, number: str) -> Contact:
        return self._set_blocked(number, False)

    def _set_blocked(self, number: str, blocked: bool) -> Contact:
        with self.lock:
            contact = self.find(number)
            if contact is None:
                raise ValueError(f"no contact with number {number!r}")
            contact.blocked = blocked
            contact.changed(self.now())
            return contact

    def _valid_number(self, number: str | int) -> str:
        normal = normalise_number(number)
        if normal is None:
            raise ValueError(f"{number!r}: {BAD_NUMBER}")
        return normal

    def _get_contact(self, contact_id: str) -> Contact:
        contact = self.contacts.get(str(contact_id))
        if contact is None or contact.deleted:
            raise KeyError(f"no contact {contact_id}")
        return contact

    def live_contact(self, contact_id: str) -> Contact | None:
        """The contact with this id unless it is gone or marked deleted."""
        contact = self.contacts.get(str(contact_id))
        return None if contact is None or contact.deleted else contact

    def live_group(self, group_id: str) -> Group | None:
        """The group with this id unless it is gone or marked deleted."""
        group = self.groups.get(str(group_id))
        return None if group is None or group.deleted else group

    def keyword_taken(self, keyword: str, *, exclude: str | None = None) -> bool:
        return self._by_keyword.get(keyword, exclude) != exclude

    def free_keyword(self, name: str, *, exclude: str | None = None) -> str:
        """The default keyword (SH-NEW: "generated by the contact's name"): the first word of the
        name, lowercased, letters and digits only (``Bob Parker`` -> ``bob``), then 1, 2, ... until unused.
        """
        words = name.lower().split()
        base = _KEYWORD_CHARS.sub("", words[0]) if words else ""
        base = base or "contact"
        if not self.keyword_taken(base, exclude=exclude):
            return base
        n = self._keyword_next.get(base, 1)
        while self.keyword_taken(f"{base}{n}", exclude=exclude):
            n += 1
        self._keyword_next[base] = n + 1
        return f"{base}{n}"

    def _check_groups_exist(self, group_ids: Iterable[str]) -> None:
        missing = [g for g in group_ids if self.live_group(g) is None]
        if missing:
            raise ValueError(f"no such group(s): {', '.join(missing)}")

    def _insert(self, data: ContactInput, now: str, contact_id: str | None = None) -> Contact:
        contact_id = contact_id or self._new_id()
        contact = Contact(
            id=contact_id, name=data.name, number=data.number, extra=data.extra,
            groups=set(data.groups), date_created=now, date_modified=now, screened=data.screened,
            keyword=data.keyword or self.free_keyword(data.name),
        )  # fmt: skip
        for group_id in contact.groups:
            self.groups[group_id].add(contact.id)
        self.contacts[contact.id] = contact
        self._by_number[contact.number] = contact.id
        self._by_keyword[contact.keyword] = contact.id
        if self._order is not None:
            self._order.append(contact.id)
        return contact

    def _replace(self, contact: Contact, data: ContactInput) -> None:
        """PUT's replace: every attribute from ``data``; a keyword left out is the name's default again."""
        self._unindex(contact)
        self._by_number[data.number] = contact.id
        keyword = data.keyword or self.free_keyword(data.name, exclude=contact.id)
        self._by_keyword[keyword] = contact.id
        new_groups = set(data.groups)
        for group_id in contact.groups - new_groups:
            self.groups[group_id].discard(contact.id)
        for group_id in new_groups - contact.groups:
            self.groups[group_id].add(contact.id)
        contact.name, contact.number, contact.extra, contact.groups = data.name, data.number, data.extra, new_groups
        contact.screened, contact.keyword = data.screened, keyword
        contact.changed(self.now())

    # -- groups ----------------------------------------------------------------------

    def add_group(
        self,
        name: str,
        *,
        slug: str | None = None,
        text_to_subscribe: bool = False,
        join_message: str | None = None,
        group_id: str | None = None,
    ) -> Group:
        """Create a group "at the provider"; ValueError on a duplicate name. ``group_id`` forces the id."""
        with self.lock:
            if self.group_named(name) is not None:
                raise ValueError(f"{name!r}: {DUPLICATE_GROUP}")
            if group_id is not None and (group_id in self.groups or not _DIGITS.fullmatch(group_id)):
                raise ValueError(f"group id {group_id!r} is taken or not a string of digits")
            now = self.now()
            group = Group(
                id=group_id or self._new_id(), name=name, slug=slug or self.free_slug(name),
                text_to_subscribe=text_to_subscribe, join_message=join_message or DEFAULT_JOIN_MESSAGE,
                date_created=now, date_modified=now,
            )  # fmt: skip
            self.groups[group.id] = group
            return group

    def delete_group(self, group_id: str) -> None:
        """Delete a group; its contacts remain and lose the membership."""
        with self.lock:
            group = self.groups.pop(str(group_id))
            self._drop_members(group)

    def mark_group_deleted(self, group_id: str) -> Group:
        """Flag the group ``deleted: true``: still listed, absent everywhere else (404 by id, its
        name and slug free again); its contacts remain and lose the membership.
        """
        with self.lock:
            group = self.live_group(group_id)
            if group is None:
                raise KeyError(f"no group {group_id}")
            self._drop_members(group)
            group.deleted = True
            group.date_modified = self.now()
            return group

    def _drop_members(self, group: Group) -> None:
        now = self.now()
        for contact_id in list(group.members):
            contact = self.contacts[contact_id]
            contact.groups.discard(group.id)
            contact.changed(now)
            group.discard(contact_id)

    def add_member(self, group_id: str, contact_id: str) -> bool:
        """Put a contact in a group; False if it already was. Refreshes the contact's ``date_modified``."""
        with self.lock:
            group, contact = self.groups[str(group_id)], self._get_contact(contact_id)
            if contact.id in group.members:
                return False
            group.add(contact.id)
            contact.groups.add(group.id)
            contact.changed(self.now())
            return True

    def remove_member(self, group_id: str, contact_id: str) -> bool:
        """Take a contact out of a group; False if it was not in it."""
        with self.lock:
            group = self.groups[str(group_id)]
            contact = self.contacts.get(str(contact_id))
            if contact is None or contact.id not in group.members:
                return False
            group.discard(contact.id)
            contact.groups.discard(group.id)
            contact.changed(self.now())
            return True

    def group_named(self, name: str, *, exclude: str | None = None) -> Group | None:
        """The group whose name equals ``name`` trimmed and case-folded (the uniqueness rule)."""
        key = name.strip().casefold()
        for group in self.groups.values():
            if group.id != exclude and not group.deleted and group.name.strip().casefold() == key:
                return group
        return None

    def slug_taken(self, slug: str, *, exclude: str | None = None) -> bool:
        return any(g.slug == slug and g.id != exclude and not g.deleted for g in self.groups.values())

    def free_slug(self, name: str, *, exclude: str | None = None) -> str:
        """The default slug: the lowercased name without spaces, then 1, 2, ... until unused."""
        base = "".join(name.lower().split())
        slug, n = base, 0
        while self.slug_taken(slug, exclude=exclude):
            n += 1
            slug = f"{base}{n}"
        return slug


# -- request validation ------------------------------------------------------------------


def _name_errors(name: Any) -> list[str]:
    if name is None or (isinstance(name, str) and not name.strip()):
        return [REQUIRED]
    if not isinstance(name, str):
        return ["This field must be a string."]
    if len(name) > NAME_MAX:
        return [f"Ensure this value has at most {NAME_MAX} characters (it has {len(name)})."]
    return []


def _group_ref(ref: Any) -> str | None:
    """A group id from an int, a digit string or a resource URI (either generation)."""
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return str(ref)
    if isinstance(ref, str):
        if _DIGITS.fullmatch(ref):
            return str(int(ref))
        match = _GROUP_REF.fullmatch(ref)
        if match:
            return str(int(match.group(1)))
    return None


def _contact_ref(ref: Any) -> str | None:
    if isinstance(ref, bool):
        return None
    if isinstance(ref, int):
        return str(ref)
    if isinstance(ref, str) and _DIGITS.fullmatch(ref):
        return str(int(ref))
    return None


def _parse_groups(raw: Any, account: SendHubAccount, errors: dict[str, list[str]]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        errors["groups"] = ["This field must be a list of group ids."]
        return ()
    found: dict[str, None] = {}
    for ref in raw:
        group_id = _group_ref(ref)
        if group_id is None or account.live_group(group_id) is None:
            uri = GROUP_URI.format(group_id) if group_id else str(ref)
            errors["groups"] = [f"Could not find the provided object via resource URI '{uri}'."]
            return ()
        found[group_id] = None
    return tuple(found)


def _parse_screened(raw: Any, errors: dict[str, list[str]]) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        errors["screened"] = [f"'{raw}' value must be either True or False."]
    return raw is True


def _parse_keyword(raw: Any, account: SendHubAccount, contact_id: str | None,
                   errors: dict[str, list[str]]) -> str | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str) or not raw.strip():
        errors["keyword"] = ["Enter a valid keyword."]
        return None
    if account.keyword_taken(raw, exclude=contact_id):
        errors["keyword"] = [KEYWORD_TAKEN]
    return raw


def parse_contact(body: Mapping[str, Any], account: SendHubAccount, *, require_id: bool,
                  contact_id: str | None = None) -> ContactInput:
    """Validate a contact POST/PUT body; every field problem is reported at once (400 field map).

    ``screened`` (default false) and ``keyword`` (default: made from the name) are SH-NEW's
    writable attributes: a PUT without them resets them. ``blocked`` and the other read-only
    keys are ignored.
    """
    errors: dict[str, list[str]] = {}
    if require_id and body.get("id") in (None, ""):
        errors["id"] = [REQUIRED]
    name_problems = _name_errors(body.get("name"))
    if name_problems:
        errors["name"] = name_problems
    raw_number = body.get("number")
    number = normalise_number(raw_number)
    if raw_number is None or raw_number == "":
        errors["number"] = [REQUIRED]
    elif number is None:
        errors["number"] = [BAD_NUMBER]
    groups = _parse_groups(body.get("groups"), account, errors)
    screened = _parse_screened(body.get("screened"), errors)
    keyword = _parse_keyword(body.get("keyword"), account, contact_id, errors)
    if errors:
        raise SendHubError.fields(errors)
    extra = {k: v for k, v in body.items() if k not in CONTACT_FIELDS and v is not None}
    if len(_dumps(extra)) > CUSTOM_FIELDS_MAX_BYTES:
        raise SendHubError.generic(400, f"Custom fields may hold at most {CUSTOM_FIELDS_MAX_BYTES} bytes.")
    assert number is not None
    return ContactInput(name=body["name"], number=number, groups=groups, extra=extra, screened=screened,
                        keyword=keyword)


@dataclass(frozen=True, slots=True)
class GroupInput:
    name: str
    slug: str | None
    text_to_subscribe: bool
    join_message: str


def parse_group(body: Mapping[str, Any], account: SendHubAccount, *, group_id: str | None) -> GroupInput:
    """Validate a group POST/PUT body (``group_id`` set for PUT, which also requires ``id``)."""
    errors: dict[str, list[str]] = {}
    if group_id is not None and body.get("id") in (None, ""):
        errors["id"] = [REQUIRED]
    name = body.get("name")
    name_problems = _name_errors(name)
    if isinstance(name, str) and not name_problems and account.group_named(name, exclude=group_id) is not None:
        name_problems = [DUPLICATE_GROUP]
    if name_problems:
        errors["name"] = name_problems
    slug = body.get("slug") or None
    if slug is not None and (not isinstance(slug, str) or account.slug_taken(slug, exclude=group_id)):
        errors["slug"] = ["This keyword is already in use." if isinstance(slug, str) else "Enter a valid keyword."]
    subscribe = body.get("text_to_subscribe", False)
    if not isinstance(subscribe, bool):
        errors["text_to_subscribe"] = [f"'{subscribe}' value must be either True or False."]
    if errors:
        raise SendHubError.fields(errors)
    join_message = body.get("ttjResponse")
    if join_message is not None and (not isinstance(join_message, str) or len(join_message) > JOIN_MESSAGE_MAX):
        raise SendHubError.generic(400, "Join message can not be longer than 70 characters.")
    join_message = join_message or DEFAULT_JOIN_MESSAGE
    assert isinstance(name, str)  # _name_errors found no problem
    return GroupInput(name=name, slug=slug, text_to_subscribe=subscribe, join_message=join_message)


def check_body_id(body: Mapping[str, Any], url_id: str) -> None:
    if str(body["id"]) != url_id:
        raise SendHubError.fields({"id": ["The id in the body does not match the id in the URL."]})


# -- paging --------------------------------------------------------------------------------


def _parse_paging(params: Mapping[str, str]) -> tuple[int, int]:
    """Tastypie's limit/offset rules; a bad value is 400 text/html."""
    raw_limit = params.get("limit", str(DEFAULT_LIMIT))
    raw_offset = params.get("offset", "0")
    try:
        limit = int(raw_limit)
    except ValueError:
        raise SendHubError(400, f"Invalid limit '{raw_limit}' provided. Please provide a positive integer.") from None
    if limit < 0:
        raise SendHubError(400, f"Invalid limit '{raw_limit}' provided. Please provide a positive integer >= 0.")
    try:
        offset = int(raw_offset)
    except ValueError:
        raise SendHubError(400, f"Invalid offset '{raw_offset}' provided. Please provide an integer.") from None
    if offset < 0:
        raise SendHubError(400, f"Invalid offset '{raw_offset}' provided. Please provide a positive integer >= 0.")
    if limit == 0 or limit > MAX_LIMIT:
        limit = MAX_LIMIT
    return limit, offset


def _check_filters(params: Mapping[str, str], known: frozenset[str], allowed: frozenset[str]) -> None:
    for key in params:
        if key in known and key not in allowed:
            raise SendHubError(400, f"The '{key}' field does not allow filtering.")


def _meta(list_uri: str, params: QueryParams, limit: int, offset: int, total: int) -> dict[str, Any]:
    """Tastypie's ``meta``; next/previous carry the request's other parameters, then limit and offset."""
    has_next, has_previous = offset + limit < total, offset - limit >= 0
    if has_next or has_previous:
        others = urlencode([(k, v) for k, v in params.multi_items() if k not in ("limit", "offset")])
        prefix = f"{list_uri}?{others}&limit={limit}&offset=" if others else f"{list_uri}?limit={limit}&offset="
    return {
        "limit": limit,
        "next": f"{prefix}{offset + limit}" if has_next else None,
        "offset": offset,
        "previous": f"{prefix}{offset - limit}" if has_previous else None,
        "total_count": total,
    }


def page_response(meta: dict[str, Any], objects: Iterable[bytes]) -> Response:
    """``{"meta": ..., "objects": [...]}`` from pre-serialised objects."""
    body = b'{"meta": ' + _dumps(meta) + b', "objects": [' + b", ".join(objects) + b"]}"
    return Response(body, media_type="application/json")


# -- the HTTP application -------------------------------------------------------------------


Handler = Callable[[Request], Awaitable[Response]]


class SendHubApi:
    """The route handlers, bound to one account and one fault set."""

    def __init__(self, account: SendHubAccount, faults: Faults) -> None:
        self.account = account
        self.faults = faults

    # -- plumbing --------------------------------------------------------------------

    def authenticated(self, request: Request) -> bool:
        params = request.query_params
        if "username" in params or "api_key" in params:
            return params.get("username") == self.account.username and params.get("api_key") == self.account.api_key
        return self._basic_auth(request.headers.get("authorization", ""))

    def _basic_auth(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return user == self.account.username and password == self.account.api_key

    def endpoint(self, handlers: Mapping[str, Handler]) -> Callable[[Request], Any]:
        """One Starlette endpoint: the method check (405, empty body, ``Allow``, before auth as
        Tastypie does), auth (401), then the handler; SendHubError becomes its response.
        """
        methods = dict(handlers)
        if "GET" in methods:
            methods["HEAD"] = methods["GET"]
        allow = {"Allow": ", ".join(methods)}

        async def serve(request: Request) -> Response:
            handler = methods.get(request.method)
            if handler is None:
                return Response(b"", status_code=405, headers=allow)
            if not self.authenticated(request):
                return Response(b"", status_code=401, media_type="text/html")
            if self.account.take_busy():  # SH-PY retries this one (providers.md 2.0)
                return SendHubError.generic(409, TRY_AGAIN).response()
            try:
                return await handler(request)
            except SendHubError as exc:
                return exc.response()

        return serve

    async def json_body(self, request: Request) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if content_type != "application/json":
            raise SendHubError.generic(
                400, f"The format indicated '{content_type}' had no available deserialization method."
            )
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise SendHubError.generic(400, "The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise SendHubError.generic(400, "The request body must be a JSON object.")
        return body

    def _paged(
        self, request: Request, ids: Callable[[], Sequence[str]], list_uri: str,
        render: Callable[[Sequence[str]], list[bytes]],
        known: frozenset[str], filters: frozenset[str],
    ) -> Response:  # fmt: skip
        params = request.query_params
        _check_filters(params, known, filters)
        limit, offset = _parse_paging(params)
        if self.faults.page_fails(offset // limit + 1):
            raise SendHubError.generic(500, "Internal Server Error")
        with self.account.lock:
            selected = ids()
            objects = render(selected[offset : offset + limit])
            meta = _meta(list_uri, params, limit, offset, len(selected))
        return page_response(meta, objects)

    def _number_filter(
        self, params: Mapping[str, str], ids: Callable[[], Sequence[str]], within: Callable[[str], bool]
    ) -> Callable[[], Sequence[str]]:
        """``ids`` narrowed by the ``number=`` filter (exact match on the stored E.164 value)."""
        if "number" not in params:
            return ids
        number = params["number"]

        def matching() -> Sequence[str]:
            contact_id = self.account._by_number.get(number)
            return [contact_id] if contact_id is not None and within(contact_id) else []

        return matching

    def _contact(self, request: Request) -> Contact:
        contact = self.account.live_contact(request.path_params["contact_id"])
        if contact is None:
            raise SendHubError(404, CONTACT_NOT_FOUND)
        return contact

    def _group(self, request: Request) -> Group:
        group = self.account.live_group(request.path_params["group_id"])
        if group is None:
            raise SendHubError(404, GROUP_NOT_FOUND)
        return group

    def _render_contacts(self, contact_ids: Sequence[str]) -> list[bytes]:
        contacts = self.account.contacts
        return [c._json or c.json() for c in map(contacts.__getitem__, contact_ids)]

    # -- contacts --------------------------------------------------------------------

    async def list_contacts(self, request: Request) -> Response:
        ids = self._number_filter(request.query_params, self.account.contact_ids, lambda _: True)
        return self._paged(request, ids, "/api/v1/contacts/", self._render_contacts, CONTACT_FIELDS, CONTACT_FILTERS)

    async def create_contact(self, request: Request) -> Response:
        body = await self.json_body(request)
        account = self.account
        with account.lock:
            data = parse_contact(body, account, require_id=False)
            if data.number in account._by_number:
                raise SendHubError.fields({"number": [DUPLICATE_NUMBER]})
            contact = account._insert(data, account.now())
            return Response(contact.json(), status_code=201, media_type="application/json")

    async def get_contact(self, request: Request) -> Response:
        return Response(self._contact(request).json(), media_type="application/json")

    async def edit_contact(self, request: Request) -> Response:
        body = await self.json_body(request)
        account = self.account
        with account.lock:
            contact = self._contact(request)
            data = parse_contact(body, account, require_id=True, contact_id=contact.id)
            check_body_id(body, contact.id)
            if account._by_number.get(data.number, contact.id) != contact.id:
                raise SendHubError.fields({"number": [DUPLICATE_NUMBER]})
            account._replace(contact, data)
            return Response(contact.json(), status_code=account.put_status, media_type="application/json")

    async def delete_contact(self, request: Request) -> Response:
        with self.account.lock:
            self.account.delete_contact(self._contact(request).id)
        return Response(status_code=204)

    # -- groups ------------------------------------------------------------------------

    async def list_groups(self, request: Request) -> Response:
        groups = self.account.groups

        def render(group_ids: Sequence[str]) -> list[bytes]:
            return [_dumps(groups[g].to_dict()) for g in group_ids]

        return self._paged(request, lambda: list(groups), "/api/v1/groups/", render, GROUP_FIELDS, frozenset())

    async def create_group(self, request: Request) -> Response:
        body = await self.json_body(request)
        with self.account.lock:
            data = parse_group(body, self.account, group_id=None)
            group = self.account.add_group(
                data.name, slug=data.slug, text_to_subscribe=data.text_to_subscribe, join_message=data.join_message
            )
            return json_response(group.to_dict(size_known=False), 201)

    async def get_group(self, request: Request) -> Response:
        return json_response(self._group(request).to_dict())

    async def edit_group(self, request: Request) -> Response:
        body = await self.json_body(request)
        account = self.account
        with account.lock:
            group = self._group(request)
            data = parse_group(body, account, group_id=group.id)
            check_body_id(body, group.id)
            group.name, group.text_to_subscribe = data.name, data.text_to_subscribe
            group.join_message = data.join_message
            group.slug = data.slug or account.free_slug(data.name, exclude=group.id)
            group.date_modified = account.now()
            return json_response(group.to_dict(), 200)

    async def delete_group(self, request: Request) -> Response:
        with self.account.lock:
            self.account.delete_group(self._group(request).id)
        return Response(status_code=204)

    # -- memberships ---------------------------------------------------------------------

    async def list_group_contacts(self, request: Request) -> Response:
        group = self._group(request)
        ids = self._number_filter(request.query_params, group.ordered_members, group.members.__contains__)
        list_uri = f"/api/v1/groups/{group.id}/contacts/"
        return self._paged(request, ids, list_uri, self._render_contacts, CONTACT_FIELDS, CONTACT_FILTERS)

    async def change_group_contacts(self, request: Request) -> Response:
        group = self._group(request)
        body = await self.json_body(request)
        to_add, to_remove = body.get("add"), body.get("remove")
        if to_add is None and to_remove is None:
            raise SendHubError.generic(400, "Provide contact ids to 'add', 'remove' or both.")
        if not isinstance(to_add or [], list) or not isinstance(to_remove or [], list):
            raise SendHubError.generic(400, "'add' and 'remove' must be lists of contact ids.")
        with self.account.lock:
            result = self._apply_membership(group, to_add or [], to_remove or [])
        return json_response(result, 202)

    def _apply_membership(self, group: Group, to_add: list[Any], to_remove: list[Any]) -> dict[str, Any]:
        added: list[str] = []
        removed: list[str] = []
        errors: dict[str, list[str]] = {}
        for ref in to_add:
            contact_id = _contact_ref(ref)
            if contact_id is None or self.account.live_contact(contact_id) is None:
                errors.setdefault("add", []).append(f"{ref} is not an id of one of your contacts.")
            elif not self.account.add_member(group.id, contact_id):
                errors.setdefault("add", []).append(f"{ref} is the id of a contact who is already in this group")
            else:
                added.append(contact_id)
        for ref in to_remove:
            contact_id = _contact_ref(ref)
            if contact_id is None or not self.account.remove_member(group.id, contact_id):
                errors.setdefault("remove", []).append(f"{ref} is not an id of a contact in the group.")
            else:
                removed.append(contact_id)
        return {"add": added, "remove": removed, "errors": errors}

    # -- routing ----------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        table: list[tuple[str, dict[str, Handler]]] = [
            ("/v1/contacts", {"GET": self.list_contacts, "POST": self.create_contact}),
            ("/v1/contacts/{contact_id}",
             {"GET": self.get_contact, "PUT": self.edit_contact, "DELETE": self.delete_contact}),
            ("/v1/groups", {"GET": self.list_groups, "POST": self.create_group}),
            ("/v1/groups/{group_id}", {"GET": self.get_group, "PUT": self.edit_group, "DELETE": self.delete_group}),
            ("/v1/groups/{group_id}/contacts", {"GET": self.list_group_contacts, "POST": self.change_group_contacts}),
        ]  # fmt: skip
        routes = []
        for path, handlers in table:
            endpoint = self.endpoint(handlers)
            # Both spellings: the seed always writes the trailing slash, SH-NEW never does.
            # Every method reaches serve(), which answers 405 itself.
            routes.append(Route(path, endpoint, methods=ALL_METHODS))
            routes.append(Route(path + "/", endpoint, methods=ALL_METHODS))
        return routes


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Any path the API does not have."""
    await SendHubError.generic(404, "Not found").response()(scope, receive, send)


class SendHubFaultHooks(DefaultFaultHooks):
    """SendHub's own bodies for 429, 420 and 401 (SH-NEW; 401 empty as Tastypie)."""

    def throttled(self, wait_seconds: float) -> Response:
        body = {
            "message": "You have sent too many requests.",
            "code": "429",
            "error": "Too Many Requests",
            "devMessage": "",
            "moreInfo": "",
            "timeLeft": format_time_left(wait_seconds),
        }
        return Response(json.dumps(body).encode(), status_code=429, media_type="application/json")

    def quota_exhausted(self) -> Response | None:
        return json_response({"error": "You have made too many requests and are being rate limited"}, 420)

    def unauthorized(self, path: str) -> Response:
        return Response(b"", status_code=401, media_type="text/html")


FAULT_HOOKS = SendHubFaultHooks()


# -- seeding ----------------------------------------------------------------------------------

_FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
    "Joseph Jessica Thomas Sarah Carlos Maria Wei Priya Ahmed Fatima Liam Olivia Noah Emma Lucas Chloe"
).split()
_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Nguyen Patel Chen Tremblay Roy Gagnon Singh"
).split()
# Area code -> (city, ZIP/postal prefix): real US and Canadian area codes.
_AREAS = {
    "201": ("Jersey City", "073"), "212": ("New York", "100"), "213": ("Los Angeles", "900"),
    "305": ("Miami", "331"), "312": ("Chicago", "606"), "404": ("Atlanta", "303"),
    "415": ("San Francisco", "941"), "416": ("Toronto", "M5V"), "503": ("Portland", "972"),
    "512": ("Austin", "787"), "604": ("Vancouver", "V6B"), "617": ("Boston", "021"),
    "650": ("Palo Alto", "943"), "702": ("Las Vegas", "891"), "713": ("Houston", "770"),
    "808": ("Honolulu", "968"), "917": ("New York", "100"), "949": ("Irvine", "926"),
    "514": ("Montreal", "H2X"), "206": ("Seattle", "981"),
}  # fmt: skip
_GROUP_NAMES = ("Customers", "Volunteers", "Staff", "VIP", "Newsletter", "Regulars", "Board", "Parents")
_SEED_EPOCH = 1_672_531_200.0  # 2023-01-01T00:00:00Z: seeded records are dated deterministically


def _seed_number(rng: random.Random, taken: Mapping[str, str]) -> tuple[str, str]:
    while True:
        area = rng.choice(tuple(_AREAS))
        exchange = f"{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}"
        if exchange[1:] == "11" or exchange == "555":  # N11 codes and the fictional 555 are not real numbers
            continue
        number = f"+1{area}{exchange}{rng.randint(0, 9999):04d}"
        if number not in taken:
            return number, area


def _seed_extra(rng: random.Random, first: str, last: str, area: str) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if rng.random() < 0.3:
        city, prefix = _AREAS[area]
        suffix = f"{rng.randint(0, 99):02d}" if prefix.isdigit() else f" {rng.randint(1, 9)}A{rng.randint(1, 9)}"
        extra.update(city=city, zip=prefix + suffix)
    if rng.random() < 0.2:
        extra["email"] = f"{first.lower()}.{last.lower()}{rng.randint(1, 99)}@example.com"
    return extra


def seed_account(account: SendHubAccount, *, contacts: int, groups: int, seed: int) -> None:
    """Fill the account with ``groups`` groups and ``contacts`` realistic North American contacts."""
    rng = random.Random(f"sendhub-seed-{seed}")
    stamp = _SEED_EPOCH
    group_ids = []
    for i in range(groups):
        base = _GROUP_NAMES[i % len(_GROUP_NAMES)]
        name = base if i < len(_GROUP_NAMES) else f"{base} {i // len(_GROUP_NAMES) + 1}"
        group_ids.append(account.add_group(name).id)
    for _ in range(contacts):
        stamp += rng.uniform(1, 600)
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        number, area = _seed_number(rng, account._by_number)
        member_of = rng.sample(group_ids, k=min(len(group_ids), rng.choice((0, 1, 1, 2))))
        data = ContactInput(f"{first} {last}", number, tuple(member_of), _seed_extra(rng, first, last, area))
        account._insert(data, format_timestamp(stamp))
    for group in account.groups.values():
        group.date_created = group.date_modified = format_timestamp(_SEED_EPOCH)


def build(
    *, contacts: int = 0, groups: int = 0, seed: int = 0, faults: Faults | None = None, clock: Clock | None = None
) -> tuple[Router, SendHubAccount, dict[str, str]]:
    """The SendHub simulator app, its account (seeded) and its credentials ``{"username", "api_key"}``."""
    rng = random.Random(f"sendhub-credentials-{seed}")
    credentials = {"username": f"sim{rng.randint(1000, 9999)}", "api_key": f"{rng.getrandbits(128):032x}"}
    account = SendHubAccount(username=credentials["username"], api_key=credentials["api_key"], clock=clock, seed=seed)
    seed_account(account, contacts=contacts, groups=groups, seed=seed)
    api = SendHubApi(account, faults if faults is not None else Faults(seed=seed))
    # A bare Router, not a Starlette app: the app's two middlewares cost ~10% of a list page
    # and add nothing here (every handler returns its own errors).
    app = Router(routes=api.routes(), default=_not_found)
    return app, account, credentials
