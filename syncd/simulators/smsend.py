"""The smsend REST v1.0 simulator: an in-memory account behind a Starlette app.

Faithful to ``shared/seeds/000_*.txt`` (the groups API, verbatim) and
``shared/providers.md`` PART 1 / PART 3 items 1-10. It shares no code with the
syncd clients (design §6): validation and phone normalisation are its own.

Served under ``/API/v1.0/REST``:

==========================================  ==========================================
``GET /login?username=&password=``          200 text/plain ``USER_KEY;SESSION_KEY``
``GET /token`` (query or Basic auth)        200 text/plain ``USER_KEY;ACCESS_TOKEN``
``POST /group``                             201, empty, ``Location: /group/{id}``
``PUT /group/{id}``                         200, empty, ``Location: /group/{id}``
``DELETE /group/{id}?deletecontacts=``      200, empty body
``GET /groups?pageNumber=&pageSize=``       200 ``{groups, pageNumber, pageSize, Total}``
``POST|DELETE /group/{gid}/contact/{cid}``  200, empty, ``Location: /contact/{cid}``
``POST /contact`` (one contact)             201, empty, ``Location: /contact/{id}``
``POST /contact`` ``{"contacts": [...]}``   200, a bare JSON integer (the count)
``GET /contact/{id}``                       200 JSON, 404 when unknown
``POST /contact/add_to_blacklist/{id}``     200 ``true``; 404 "Contact not found"
``POST /contact/add_to_blacklist_batch``    200, a bare JSON integer (the count)
``POST /contacts/add_to_blacklist?phoneNumber=``  200 ``true``
``POST /list/{campaign_id}/contact``        201, empty, ``Location: /contact/{id}``
``GET /blacklist/sms?from=&to=&timezone=``  200 ``{blacklist, pageNumber, pageSize, Total}``
``&number=&origins=&pageNumber=&pageSize=``
``POST /blacklist/sms?phoneNumber=``        200 ``true``; 400 "Invalid recipient"
``POST /blacklist/smsbatch`` (JSON array)   200, a bare JSON integer (the count)
==========================================  ==========================================

Every other path answers 404 and every other method on a known path 405 (the
API has no contact list, update or delete). Error bodies are
``{"error": "<message>", "code": <int>}`` with the ``E_*`` codes below.

Decisions where the sources are silent (each marked NOT FOUND in providers.md):

- **Authentication.** Header names are compared case-insensitively (HTTP does);
  ``User-Key``/``Session-Key``/``Access-Token`` are different names and so count
  as missing: 401. A wrong ``user_key``, an unknown or idle-expired session key
  (5 minutes without a call, measured with the injected clock) or a wrong access
  token: 401. When both ``Session_key`` and ``Access_token`` are sent, the
  session key decides. Access tokens never expire. ``/login`` and ``/token``
  answer 400 without credentials and 404 with wrong ones; only ``/token`` reads
  Basic auth. Every login makes a new session key; old ones stay valid.
- **Duplicate group names are allowed.** The documents reject only an "invalid"
  name (empty or whitespace here); address books elsewhere key groups by id, and
  rejecting duplicates would let a client rely on a 400 the real service may
  never send. A client must find a lost group create by listing, not by a 400.
- **Single ``POST /contact`` always inserts**, even when the number already
  exists (so duplicates are possible, as in most address books): only the
  add-multiple upsert deduplicates. A client that retries a single create
  therefore creates a duplicate, which is what a test should catch.
- **Phone numbers** are ``+`` or ``00`` followed by 6-15 digits (international),
  or 6-15 digits without a prefix, read as Italian (``+39`` is prepended). No
  spaces or punctuation. Stored and echoed in E.164 (``+393331234567``). The
  result must be at most 15 digits.
- **Clash key of the upsert** (providers.md [DECIDED]): the E.164 number; for a
  contact without a number, its email compared case-insensitively. With
  ``updateExistingContact`` true every clashing contact is updated in place
  (same id): the fields present in the request overwrite, fields left out keep
  their values. With false every clashing contact is deleted and one new
  contact (new id) inserted. ``keepExistingGroupsAndCampaigns`` false sets the
  groups to exactly ``groupIds``, true adds ``groupIds`` to the groups the
  clashing contacts had. Entries of one batch are applied in order, so a later
  entry with the same key clashes with an earlier one. The 200 count is the
  number of entries applied, that is ``len(contacts)``.
- **Validation is strict where the real rules are unknown**: unknown keys, non
  string values (``null`` included) and an empty ``{}`` are 400, so a client
  that passes here sends only documented fields. ``phoneNumber``/``email`` may
  be ``""`` (the documented default) but not both. Dates are kept as sent.
- **``GET /contact/{id}``** returns every add-contact field (absent ones as
  ``""``), ``groupIds`` as strings in membership order, and the id under
  ``"id"`` (the real key is unknown; clients should use the id they asked for).
- **Blacklist**: SMS blacklisting is per phone number; blacklisting a contact
  without a number is 400. ``add_to_blacklist/{id}`` follows its own page
  (404 "Contact not found" for an unknown id, unlike the groups API's 400);
  the batch is all-or-nothing (any unknown id: 400, nothing blacklisted).
  Deleting a contact leaves its number blacklisted. Every way in
  (``/contact/add_to_blacklist*``, ``/contacts/add_to_blacklist``,
  ``/blacklist/sms*``) fills one blacklist of entries ``phoneNumber`` (E.164),
  ``origin`` and ``insertDate``; the API's are origin ``API``, the test hooks
  ``play_stop`` (a STOP reply: ``STOPSMS``) and ``blacklist_from_web``
  (``WEB``) add the others, optionally at a given time. A number is listed
  once: a second opt-out keeps the first one's origin and time. Insert times
  come from ``state.wall_clock`` (epoch seconds) and never go backwards.
- **Blacklist listing** (providers.md 1.2.5, whose body is ASSUMED):
  ``{"blacklist": [{"phoneNumber", "origin", "insertDate"}], "pageNumber",
  "pageSize", "Total"}``, oldest first, ``pageSize`` default 5 as for groups.
  ``from``/``to`` are inclusive and read in ``timezone`` (IANA), which also
  writes ``insertDate``; without it both are Europe/Rome (an Italian service),
  so a client that means UTC must say so. ``number`` is "contains" (digits,
  optional ``+``); ``origins`` a comma-separated subset of API, WEB, STOPSMS.
  Any badly formatted parameter: 400 "Some of the parameters specified were
  badly formatted (<name>)". ``POST /blacklist/sms`` reads ``phoneNumber``
  from the query (the page lists it under Parameters, not Body Fields) and
  takes only ``+…``/``00…`` numbers; the batch takes a JSON array of them,
  all or nothing (400 "Some of the phone numbers specified were badly
  formatted"), and answers how many distinct numbers it holds.
- **Email campaigns**: none can be created through the API; tests make them
  (``create_campaign``). ``POST /list/{id}/contact?SendOptIn=`` inserts a new
  contact (``email`` required, like a single ``POST /contact`` it never
  deduplicates) subscribed to the campaign; an unknown or inactive campaign is
  400 "Campaign not active or not found". No opt-in e-mail is simulated. An
  upsert with ``keepExistingGroupsAndCampaigns: false`` drops the clashing
  contact's subscriptions along with its other groups; ``true`` keeps both.
- **Paging**: ``pageNumber``/``pageSize`` must be integers >= 1 (else 400);
  ``pageSize`` has no maximum; a page past the end is ``groups: []`` with 200.
  Groups are listed in creation order.
- **The address-book lock** (``state.locked = True``) makes group modify and
  delete and member add and remove answer 400, and nothing else.
- **Empty bodies**: ``DELETE /group`` answers an empty body; the seed's ``""``
  is read as the documentation's way of writing "an empty string".
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import random
import re
import string
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, Router

from syncd.simulators.faults import DefaultFaultHooks, Faults

__all__ = [
    "BAD_PARAMETERS",
    "BASE_PATH",
    "BLACKLIST_ORIGINS",
    "DEFAULT_TIMEZONE",
    "FAULT_HOOKS",
    "MAX_BATCH",
    "SESSION_IDLE_SECONDS",
    "ApiError",
    "BlacklistEntry",
    "SmsendCampaign",
    "SmsendContact",
    "SmsendGroup",
    "SmsendState",
    "build",
    "make_app",
    "normalise_phone",
]

BASE_PATH = "/API/v1.0/REST"
SESSION_IDLE_SECONDS = 300.0
MAX_BATCH = 1000
DEFAULT_PAGE_SIZE = 5
#: Where ``from``/``to`` and ``insertDate`` are read and written when a request names no ``timezone``.
DEFAULT_TIMEZONE = "Europe/Rome"
BLACKLIST_ORIGINS = ("API", "WEB", "STOPSMS")
BAD_PARAMETERS = "Some of the parameters specified were badly formatted"
BAD_NUMBERS = "Some of the phone numbers specified were badly formatted"
INVALID_RECIPIENT = "Invalid recipient"
CAMPAIGN_NOT_FOUND = "Campaign not active or not found"
_BLACKLIST_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_BLACKLIST_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
# POST /blacklist/sms: "The format must be +1111111111 or 001111111111" (an international prefix).
_PREFIXED_PHONE = re.compile(r"(?:\+|00)[0-9]{6,15}")

# Error codes carried in the JSON error body (the real codes are unknown).
E_UNAUTHORIZED = 1
E_BAD_CREDENTIALS = 2
E_NOT_FOUND = 3
E_METHOD = 4
E_INVALID = 10
E_UNKNOWN_GROUP = 11
E_UNKNOWN_CONTACT = 12
E_LOCKED = 13
E_TOO_MANY = 14
E_BAD_JSON = 15
E_THROTTLED = 20
E_SERVER = 21
E_BAD_PARAMETERS = 30
E_INVALID_RECIPIENT = 31
E_CAMPAIGN = 32

_TEXT_LIMITS: Mapping[str, int | None] = {
    "email": 256,
    "name": 40,
    "surname": 40,
    "gender": None,
    "fax": 32,
    "address": 256,
    "city": 32,
    "province": 32,
    "birthdate": None,
    "promotiondate": None,
    "rememberdate": None,
    "zip": 16,
    **{f"custom{i}": None for i in range(1, 11)},
}
CONTACT_TEXT_FIELDS: tuple[str, ...] = ("phoneNumber", *_TEXT_LIMITS)
_DATE_FIELDS = ("birthdate", "promotiondate", "rememberdate")
# The six documented formats; the length tells them apart.
_DATE_FORMATS = {
    6: "%d%m%y",
    8: "%Y%m%d",
    10: "%d%m%y%H%M",
    14: "%Y%m%d%H%M%S",
    16: "%Y-%m-%d %H:%M",
    18: "%Y-%m-%d %H:%M.0",
}
_BATCH_KEYS = frozenset({"contacts", "updateExistingContact", "keepExistingGroupsAndCampaigns"})
_PHONE_RE = re.compile(r"(\+|00)?([0-9]{6,15})")
_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_ID_ALPHABET = string.ascii_letters + string.digits
_ID_LENGTH = 20


class ApiError(Exception):
    """A request the simulated service refuses; becomes ``{"error", "code"}``."""

    def __init__(self, status: int, message: str, code: int) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _invalid(message: str, code: int = E_INVALID) -> ApiError:
    return ApiError(400, message, code)


# --- validation (the simulator's own; see the module docstring) -------------


def normalise_phone(raw: str) -> str:
    """``raw`` as E.164; numbers without ``+``/``00`` are Italian. ValueError says why."""
    match = _PHONE_RE.fullmatch(raw)
    if match is None:
        raise ValueError("not a phone number (6 to 15 digits, optionally after + or 00)")
    prefix, digits = match.groups()
    if not prefix:
        digits = "39" + digits
    if digits[0] == "0" or len(digits) > 15:
        raise ValueError("not a valid international phone number")
    return "+" + digits


def _check_date(value: str) -> None:
    fmt = _DATE_FORMATS.get(len(value))
    try:
        if fmt is None:
            raise ValueError
        datetime.strptime(value, fmt)
    except ValueError:
        raise ValueError(
            "not a date in ddMMyy, yyyyMMdd, ddMMyyHHmm, yyyyMMddHHmmss, "
            "'yyyy-MM-dd HH:mm' or 'yyyy-MM-dd HH:mm.0'"
        ) from None


def _check_text_field(name: str, value: object) -> str:
    """The field's value, or ValueError naming what is wrong with it."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    limit = _TEXT_LIMITS.get(name)
    if limit is not None and len(value) > limit:
        raise ValueError(f"longer than {limit} characters")
    if value and name == "gender" and value not in ("m", "f"):
        raise ValueError("must be 'm' or 'f'")
    if value and name in _DATE_FIELDS:
        _check_date(value)
    if value and name == "email" and not _EMAIL_RE.fullmatch(value):
        raise ValueError("not a valid email address")
    return value


@dataclass(slots=True)
class ContactInput:
    """One validated contact of a request: the fields sent, normalised."""

    fields: dict[str, str]  # only the keys present in the request
    phone: str | None  # E.164, or None when no number was given
    email_key: str | None  # lower-cased email, or None
    group_ids: list[str]


def _validate_contact(raw: object, where: str, known_groups: Mapping[str, Any]) -> ContactInput:
    """Validate one add-contact object; ApiError 400 names ``where`` and the field."""
    if not isinstance(raw, dict):
        raise _invalid(f"{where}: must be a JSON object")
    fields: dict[str, str] = {}
    group_ids: list[str] = []
    for key, value in raw.items():
        prefix = f"{where}.{key}" if where else key
        if key == "groupIds":
            group_ids = _validate_group_ids(value, prefix, known_groups)
        elif key in CONTACT_TEXT_FIELDS:
            try:
                fields[key] = _check_text_field(key, value)
            except ValueError as exc:
                raise _invalid(f"{prefix}: {exc}") from None
        else:
            raise _invalid(f"{prefix}: unknown field")
    phone = None
    if fields.get("phoneNumber"):
        try:
            phone = normalise_phone(fields["phoneNumber"])
        except ValueError as exc:
            raise _invalid(f"{where + '.' if where else ''}phoneNumber: {exc}") from None
        fields["phoneNumber"] = phone
    email = fields.get("email") or None
    if phone is None and email is None:
        raise _invalid(f"{where + ': ' if where else ''}at least one of email and phoneNumber is required")
    return ContactInput(fields, phone, email.lower() if email else None, group_ids)


def _validate_group_ids(value: object, where: str, known_groups: Mapping[str, Any]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _invalid(f"{where}: must be a list of group id strings")
    for group_id in value:
        if group_id not in known_groups:
            raise _invalid(f"{where}: group {group_id!r} not found or not owned", E_UNKNOWN_GROUP)
    return list(dict.fromkeys(value))


def _validate_group_body(raw: object) -> tuple[str, str]:
    if not isinstance(raw, dict):
        raise _invalid("body must be a JSON object with name and description")
    for key in ("name", "description"):
        if key not in raw:
            raise _invalid(f"{key}: required")
        if not isinstance(raw[key], str):
            raise _invalid(f"{key}: must be a string")
    unknown = set(raw) - {"name", "description"}
    if unknown:
        raise _invalid(f"{sorted(unknown)[0]}: unknown field")
    if not raw["name"].strip():
        raise _invalid("name: the group name is invalid (empty)")
    return raw["name"], raw["description"]


def _prefixed_phone(raw: object, message: str) -> str:
    """A blacklist number written ``+…`` or ``00…`` as E.164; ApiError 400 ``message`` otherwise."""
    if not isinstance(raw, str) or not _PREFIXED_PHONE.fullmatch(raw):
        raise _invalid(message, E_INVALID_RECIPIENT)
    try:
        return normalise_phone(raw)
    except ValueError:
        raise _invalid(message, E_INVALID_RECIPIENT) from None


def _epoch(at: float | str | None) -> float | None:
    """A test hook's insert time: epoch seconds, or ``yyyy-MM-dd HH:mm:ss`` in UTC; ValueError otherwise."""
    if at is None or (isinstance(at, int | float) and not isinstance(at, bool)):
        return None if at is None else float(at)
    if isinstance(at, str) and _BLACKLIST_TIME.fullmatch(at):
        return datetime.strptime(at, _BLACKLIST_TIME_FORMAT).replace(tzinfo=UTC).timestamp()
    raise ValueError(f"at: {at!r} is neither epoch seconds nor 'yyyy-MM-dd HH:mm:ss'")


def _admin_text(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is required (a string)")
    return value


@dataclass(frozen=True, slots=True)
class BlacklistQuery:
    """The documented parameters of ``GET /blacklist/sms``, checked.

    ``from``/``to`` (``yyyy-MM-dd HH:mm:ss``, inclusive) are read in ``timezone``
    (IANA; :data:`DEFAULT_TIMEZONE` when absent), which also writes ``insertDate``;
    ``number`` matches entries containing it (digits, an optional leading ``+``
    that then matches only at the start, as E.164 numbers are stored);
    ``origins`` is a comma-separated subset of :data:`BLACKLIST_ORIGINS`.
    Anything else badly formatted: 400 :data:`BAD_PARAMETERS`.
    """

    zone: ZoneInfo
    since: float | None = None
    until: float | None = None
    number: str = ""
    origins: frozenset[str] = frozenset(BLACKLIST_ORIGINS)
    page_number: int = 1
    page_size: int = DEFAULT_PAGE_SIZE

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> BlacklistQuery:
        zone = _zone(params.get("timezone", DEFAULT_TIMEZONE))
        number = params.get("number", "")
        if number and not re.fullmatch(r"\+?[0-9]+", number):
            raise _bad_parameter("number")
        return cls(zone=zone, since=_instant(params, "from", zone), until=_instant(params, "to", zone),
                   number=number, origins=_origins(params.get("origins")),
                   page_number=_page_param(params, "pageNumber", 1),
                   page_size=_page_param(params, "pageSize", DEFAULT_PAGE_SIZE))

    def matches(self, entry: BlacklistEntry) -> bool:
        return (entry.origin in self.origins and self.number in entry.phone
                and (self.since is None or entry.inserted >= self.since)
                and (self.until is None or entry.inserted <= self.until))


def _bad_parameter(name: str) -> ApiError:
    return _invalid(f"{BAD_PARAMETERS} ({name})", E_BAD_PARAMETERS)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _bad_parameter("timezone") from None


def _instant(params: Mapping[str, str], name: str, zone: ZoneInfo) -> float | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        if not _BLACKLIST_TIME.fullmatch(raw):
            raise ValueError
        return datetime.strptime(raw, _BLACKLIST_TIME_FORMAT).replace(tzinfo=zone).timestamp()
    except ValueError:
        raise _bad_parameter(name) from None


def _origins(raw: str | None) -> frozenset[str]:
    if raw is None:
        return frozenset(BLACKLIST_ORIGINS)
    origins = raw.split(",")
    if not all(origin in BLACKLIST_ORIGINS for origin in origins):
        raise _bad_parameter("origins")
    return frozenset(origins)


def _page_param(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < 1:
        raise _bad_parameter(name)
    return int(raw)


# --- state ------------------------------------------------------------------


@dataclass(slots=True)
class SmsendGroup:
    id: str
    name: str
    description: str
    members: dict[str, None] = field(default_factory=dict)  # ordered set of contact ids


@dataclass(slots=True)
class SmsendContact:
    id: str
    fields: dict[str, str]  # every text field, "" when never set
    groups: dict[str, None] = field(default_factory=dict)  # ordered set of group ids
    campaigns: dict[str, None] = field(default_factory=dict)  # email campaign subscriptions

    @property
    def phone(self) -> str | None:
        return self.fields["phoneNumber"] or None

    @property
    def email_key(self) -> str | None:
        return self.fields["email"].lower() or None

    def as_json(self) -> dict[str, Any]:
        """The ``GET /contact/{id}`` body."""
        return {"id": self.id, **self.fields, "groupIds": list(self.groups)}


@dataclass(slots=True)
class SmsendCampaign:
    """An email campaign (list) contacts subscribe to through ``POST /list/{id}/contact``.

    The API documents no way to create one: tests do (:meth:`SmsendState.create_campaign`).
    """

    id: str
    name: str
    active: bool = True
    subscribers: dict[str, None] = field(default_factory=dict)  # ordered set of contact ids


@dataclass(frozen=True, slots=True)
class BlacklistEntry:
    """One number of the SMS blacklist: how it got there and when (epoch seconds, UTC)."""

    phone: str
    origin: str  # API | WEB | STOPSMS
    inserted: float
    sequence: int  # insertion order, to list entries with the same second stably

    def as_json(self, zone: ZoneInfo) -> dict[str, str]:
        """The entry as ``GET /blacklist/sms`` lists it, ``insertDate`` in ``zone``."""
        stamp = datetime.fromtimestamp(self.inserted, UTC).astimezone(zone)
        return {"phoneNumber": self.phone, "origin": self.origin, "insertDate": stamp.strftime(_BLACKLIST_TIME_FORMAT)}


class SmsendState:
    """One smsend account in memory; thread-safe, so tests may read it directly.

    Public, for tests: ``groups``, ``contacts`` and ``campaigns`` (by id),
    ``contacts_by_phone``, ``blacklist`` (E.164 number -> :class:`BlacklistEntry`),
    ``locked``, ``expire_sessions()``, ``create_campaign()``, ``play_stop()``
    and ``blacklist_from_web()``, ``wall_clock`` (epoch seconds: blacklist insert
    times, never going backwards), ``snapshot()``. Every lookup is O(1); listing
    a page of groups is O(pageSize).
    """

    def __init__(
        self,
        *,
        credentials: Mapping[str, str],
        seed: int = 0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.credentials = dict(credentials)
        self.clock: Callable[[], float] = clock or time.monotonic
        self.wall_clock: Callable[[], float] = time.time
        self.locked = False
        self.groups: dict[str, SmsendGroup] = {}
        self.contacts: dict[str, SmsendContact] = {}
        self.campaigns: dict[str, SmsendCampaign] = {}
        self.blacklist: dict[str, BlacklistEntry] = {}
        self._last_insert = 0.0
        self._group_order: list[str] = []
        self._by_phone: dict[str, dict[str, None]] = {}
        self._by_email: dict[str, dict[str, None]] = {}  # contacts without a number
        self._sessions: dict[str, float] = {}  # session key -> last use
        self._ids = random.Random(f"smsend-ids:{seed}")
        self._keys = random.Random(f"smsend-keys:{seed}")
        self._lock = threading.RLock()

    # ids and keys

    def new_id(self) -> str:
        """A fresh opaque 20-character alphanumeric id, deterministic under the seed."""
        with self._lock:
            while True:
                candidate = "".join(self._ids.choices(_ID_ALPHABET, k=_ID_LENGTH))
                if candidate not in self.groups and candidate not in self.contacts and candidate not in self.campaigns:
                    return candidate

    # authentication

    def check_login(self, username: str, password: str) -> bool:
        return username == self.credentials["username"] and password == self.credentials["password"]

    def open_session(self) -> str:
        """A new session key, valid until it goes unused for five minutes."""
        with self._lock:
            key = "".join(self._keys.choices(_ID_ALPHABET, k=32))
            self._sessions[key] = self.clock()
            return key

    def expire_sessions(self) -> None:
        """End every session now (as if each had been idle for five minutes)."""
        with self._lock:
            self._sessions.clear()

    def authenticate(self, headers: Mapping[str, str]) -> None:
        """Raise 401 unless the headers carry ``user_key`` and a live session or the token."""
        user_key = headers.get("user_key")
        session_key = headers.get("session_key")
        access_token = headers.get("access_token")
        if user_key != self.credentials["user_key"]:
            raise ApiError(401, "user_key invalid or not provided", E_UNAUTHORIZED)
        if session_key is not None:
            if not self._touch_session(session_key):
                raise ApiError(401, "Session_key invalid or expired", E_UNAUTHORIZED)
        elif access_token != self.credentials["access_token"]:
            raise ApiError(401, "Session_key or Access_token invalid or not provided", E_UNAUTHORIZED)

    def _touch_session(self, key: str) -> bool:
        with self._lock:
            last_use = self._sessions.get(key)
            now = self.clock()
            if last_use is None or now - last_use >= SESSION_IDLE_SECONDS:
                self._sessions.pop(key, None)
                return False
            self._sessions[key] = now
            return True

    # groups

    def create_group(self, name: str, description: str) -> SmsendGroup:
        with self._lock:
            group = SmsendGroup(self.new_id(), name, description)
            self.groups[group.id] = group
            self._group_order.append(group.id)
            return group

    def update_group(self, group_id: str, name: str, description: str) -> SmsendGroup:
        with self._lock:
            group = self._writable_group(group_id)
            group.name, group.description = name, description
            return group

    def delete_group(self, group_id: str, *, delete_contacts: bool = False) -> None:
        """Remove the group; with ``delete_contacts`` its member contacts go too."""
        with self._lock:
            group = self._writable_group(group_id)
            for contact_id in list(group.members):
                if delete_contacts:
                    self._delete_contact(contact_id)
                else:
                    self.contacts[contact_id].groups.pop(group_id, None)
            del self.groups[group_id]
            self._group_order.remove(group_id)

    def groups_page(self, page_number: int, page_size: int) -> tuple[list[SmsendGroup], int]:
        """The groups of one 1-based page and the total number of groups."""
        with self._lock:
            start = (page_number - 1) * page_size
            ids = self._group_order[start : start + page_size]
            return [self.groups[group_id] for group_id in ids], len(self._group_order)

    def add_member(self, group_id: str, contact_id: str) -> None:
        """Put the contact in the group (idempotent)."""
        with self._lock:
            group, contact = self._writable_group(group_id), self._known_contact(contact_id)
            group.members[contact.id] = None
            contact.groups[group.id] = None

    def remove_member(self, group_id: str, contact_id: str) -> None:
        """Take the contact out of the group (idempotent)."""
        with self._lock:
            group, contact = self._writable_group(group_id), self._known_contact(contact_id)
            group.members.pop(contact.id, None)
            contact.groups.pop(group.id, None)

    def _writable_group(self, group_id: str) -> SmsendGroup:
        if self.locked:
            raise _invalid("the address book is locked", E_LOCKED)
        group = self.groups.get(group_id)
        if group is None:
            raise _invalid(f"group_id {group_id!r} is invalid", E_UNKNOWN_GROUP)
        return group

    def _known_contact(self, contact_id: str) -> SmsendContact:
        contact = self.contacts.get(contact_id)
        if contact is None:
            raise _invalid(f"contact_id {contact_id!r} is invalid", E_UNKNOWN_CONTACT)
        return contact

    # contacts

    def contacts_by_phone(self, phone: str) -> list[SmsendContact]:
        """Every contact with this E.164 number (several when single creates duplicated it)."""
        with self._lock:
            return [self.contacts[cid] for cid in self._by_phone.get(phone, ())]

    def add_contact(self, raw: object) -> SmsendContact:
        """Validate and insert one add-contact body; always a new contact."""
        with self._lock:
            item = _validate_contact(raw, "", self.groups)
            return self._insert(item.fields, item.group_ids)

    def upsert(self, body: object) -> int:
        """Apply an add-multiple body all-or-nothing; the number of entries applied."""
        with self._lock:
            items, update_existing, keep_groups = self._validate_batch(body)
            for item in items:
                self._upsert_one(item, update_existing=update_existing, keep_groups=keep_groups)
            return len(items)

    def _validate_batch(self, body: object) -> tuple[list[ContactInput], bool, bool]:
        if not isinstance(body, dict):
            raise _invalid("body must be a JSON object")
        unknown = set(body) - _BATCH_KEYS
        if unknown:
            raise _invalid(f"{sorted(unknown)[0]}: unknown field")
        contacts = body.get("contacts")
        if not isinstance(contacts, list):
            raise _invalid("contacts: must be a JSON array")
        if len(contacts) > MAX_BATCH:
            raise _invalid(f"contacts: at most {MAX_BATCH} contacts per request", E_TOO_MANY)
        flags = []
        for key in ("updateExistingContact", "keepExistingGroupsAndCampaigns"):
            value = body.get(key, False)
            if not isinstance(value, bool):
                raise _invalid(f"{key}: must be true or false")
            flags.append(value)
        items = [_validate_contact(raw, f"contacts[{i}]", self.groups) for i, raw in enumerate(contacts)]
        return items, flags[0], flags[1]

    def _upsert_one(self, item: ContactInput, *, update_existing: bool, keep_groups: bool) -> None:
        clashing = self._clashing(item)
        if not clashing:
            self._insert(item.fields, item.group_ids)
            return
        if update_existing:
            for contact in clashing:
                self._update_in_place(contact, item, keep_groups=keep_groups)
            return
        kept: dict[str, None] = {}
        campaigns: dict[str, None] = {}
        for contact in clashing:
            if keep_groups:
                kept.update(contact.groups)
                campaigns.update(contact.campaigns)
            self._delete_contact(contact.id)
        self._subscribe(self._insert(item.fields, [*kept, *item.group_ids]), campaigns)

    def _clashing(self, item: ContactInput) -> list[SmsendContact]:
        if item.phone is not None:
            ids = self._by_phone.get(item.phone, {})
        else:
            ids = self._by_email.get(item.email_key or "", {})
        return [self.contacts[cid] for cid in ids]

    def _update_in_place(self, contact: SmsendContact, item: ContactInput, *, keep_groups: bool) -> None:
        self._unindex(contact)
        contact.fields.update(item.fields)
        self._index(contact)
        if not keep_groups:
            for group_id in list(contact.groups):
                if group_id not in item.group_ids:
                    self.groups[group_id].members.pop(contact.id, None)
                    del contact.groups[group_id]
            self._unsubscribe_all(contact)
        for group_id in item.group_ids:
            self.groups[group_id].members[contact.id] = None
            contact.groups[group_id] = None

    def _insert(self, fields: Mapping[str, str], group_ids: Iterable[str]) -> SmsendContact:
        contact = SmsendContact(self.new_id(), {name: "" for name in CONTACT_TEXT_FIELDS})
        contact.fields.update(fields)
        self.contacts[contact.id] = contact
        self._index(contact)
        for group_id in group_ids:
            self.groups[group_id].members[contact.id] = None
            contact.groups[group_id] = None
        return contact

    def _delete_contact(self, contact_id: str) -> None:
        contact = self.contacts.pop(contact_id)
        self._unindex(contact)
        for group_id in contact.groups:
            self.groups[group_id].members.pop(contact_id, None)
        self._unsubscribe_all(contact)

    # email campaigns (``keepExistingGroupsAndCampaigns`` false drops the subscriptions)

    def create_campaign(self, name: str, *, active: bool = True) -> SmsendCampaign:
        """A campaign "made in smsend's interface" (the API documents no way to create one)."""
        with self._lock:
            campaign = SmsendCampaign(self.new_id(), name, active)
            self.campaigns[campaign.id] = campaign
            return campaign

    def register_to_campaign(self, campaign_id: str, raw: object) -> SmsendContact:
        """``POST /list/{campaign_id}/contact``: a new contact (``email`` required), subscribed."""
        with self._lock:
            campaign = self.campaigns.get(campaign_id)
            if campaign is None or not campaign.active:
                raise _invalid(CAMPAIGN_NOT_FOUND, E_CAMPAIGN)
            item = _validate_contact(raw, "", self.groups)
            if item.email_key is None:
                raise _invalid("email: required to register a contact to a list")
            contact = self._insert(item.fields, item.group_ids)
            self._subscribe(contact, {campaign.id: None})
            return contact

    def _subscribe(self, contact: SmsendContact, campaign_ids: Iterable[str]) -> None:
        for campaign_id in campaign_ids:
            self.campaigns[campaign_id].subscribers[contact.id] = None
            contact.campaigns[campaign_id] = None

    def _unsubscribe_all(self, contact: SmsendContact) -> None:
        for campaign_id in contact.campaigns:
            self.campaigns[campaign_id].subscribers.pop(contact.id, None)
        contact.campaigns.clear()

    def _index(self, contact: SmsendContact) -> None:
        if contact.phone is not None:
            self._by_phone.setdefault(contact.phone, {})[contact.id] = None
        elif contact.email_key is not None:
            self._by_email.setdefault(contact.email_key, {})[contact.id] = None

    def _unindex(self, contact: SmsendContact) -> None:
        for index, key in ((self._by_phone, contact.phone), (self._by_email, contact.email_key)):
            bucket = index.get(key or "")
            if bucket is not None:
                bucket.pop(contact.id, None)
                if not bucket:
                    del index[key or ""]

    # blacklist: one entry per number; the first opt-out's origin and time stay

    def blacklist_contact(self, contact_id: str) -> None:
        with self._lock:
            contact = self.contacts.get(contact_id)
            if contact is None:
                raise ApiError(404, "Contact not found", E_NOT_FOUND)
            self._blacklist(self._blacklistable(contact), "API")

    def blacklist_contacts(self, body: object) -> int:
        """Blacklist every listed contact, or none when one id is wrong."""
        with self._lock:
            if not isinstance(body, list) or not all(isinstance(item, str) for item in body):
                raise _invalid("body must be a JSON array of contact id strings")
            unknown = [cid for cid in body if cid not in self.contacts]
            if unknown:
                raise _invalid(f"contact {unknown[0]!r} not found", E_UNKNOWN_CONTACT)
            phones = [self._blacklistable(self.contacts[cid]) for cid in body]
            for phone in phones:
                self._blacklist(phone, "API")
            return len(body)

    def blacklist_number(self, raw: str | None) -> None:
        """``POST /contacts/add_to_blacklist?phoneNumber=``: any number the contact API takes."""
        with self._lock:
            if not raw:
                raise _invalid("phoneNumber: required")
            try:
                phone = normalise_phone(raw)
            except ValueError as exc:
                raise _invalid(f"phoneNumber: {exc}") from None
            self._blacklist(phone, "API")

    def blacklist_prefixed(self, raw: str | None) -> None:
        """``POST /blacklist/sms?phoneNumber=``: ``+…`` or ``00…`` only, else 400 "Invalid recipient"."""
        with self._lock:
            self._blacklist(_prefixed_phone(raw, INVALID_RECIPIENT), "API")

    def blacklist_numbers(self, body: object) -> int:
        """``POST /blacklist/smsbatch``: every number, or none when one is badly formatted."""
        with self._lock:
            if not isinstance(body, list):
                raise _invalid(BAD_NUMBERS, E_INVALID_RECIPIENT)
            phones = list(dict.fromkeys(_prefixed_phone(raw, BAD_NUMBERS) for raw in body))
            for phone in phones:
                self._blacklist(phone, "API")
            return len(phones)

    def play_stop(self, phone: str, *, at: float | str | None = None) -> BlacklistEntry:
        """The person replied STOP to an SMS (the Stop SMS service): origin ``STOPSMS``."""
        return self._hook_entry(phone, "STOPSMS", at)

    def blacklist_from_web(self, phone: str, *, at: float | str | None = None) -> BlacklistEntry:
        """Someone blacklisted the number in smsend's web interface: origin ``WEB``."""
        return self._hook_entry(phone, "WEB", at)

    def _hook_entry(self, phone: str, origin: str, at: float | str | None) -> BlacklistEntry:
        with self._lock:
            self._blacklist(normalise_phone(phone), origin, at=_epoch(at))
            return self.blacklist[normalise_phone(phone)]

    def _blacklist(self, phone: str, origin: str, *, at: float | None = None) -> None:
        """Add ``phone`` once; ``at`` defaults to now, never earlier than the previous default insert."""
        if phone in self.blacklist:
            return
        if at is None:
            at = self._last_insert = max(self.wall_clock(), self._last_insert)
        self.blacklist[phone] = BlacklistEntry(phone, origin, at, len(self.blacklist))

    def blacklist_page(self, query: BlacklistQuery) -> tuple[list[BlacklistEntry], int]:
        """The entries matching ``query`` on its page, oldest first, and how many match in all."""
        with self._lock:
            matching = sorted((e for e in self.blacklist.values() if query.matches(e)),
                              key=lambda e: (e.inserted, e.sequence))
        start = (query.page_number - 1) * query.page_size
        return matching[start : start + query.page_size], len(matching)

    @staticmethod
    def _blacklistable(contact: SmsendContact) -> str:
        if contact.phone is None:
            raise _invalid(f"contact {contact.id!r} has no phone number")
        return contact.phone

    # inspection and control (also reachable through /_admin/actions/{name})

    @property
    def admin_actions(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        """``lock`` (body ``{"locked": bool}``, default true), ``expire_sessions``,
        ``create_campaign`` (``{"name"}``, answers its id), ``stop_sms`` and ``web_blacklist``
        (``{"phoneNumber", "at"?}``, ``at`` in epoch seconds or ``yyyy-MM-dd HH:mm:ss`` UTC).
        """
        return {
            "lock": self._admin_lock,
            "expire_sessions": lambda body: self.expire_sessions(),
            "create_campaign": lambda body: self.create_campaign(_admin_text(body, "name")).id,
            "stop_sms": lambda body: self.play_stop(_admin_text(body, "phoneNumber"), at=body.get("at")).phone,
            "web_blacklist": lambda body: self.blacklist_from_web(_admin_text(body, "phoneNumber"),
                                                                  at=body.get("at")).phone,
        }

    def _admin_lock(self, body: Mapping[str, Any]) -> bool:
        locked = body.get("locked", True)
        if not isinstance(locked, bool):
            raise ValueError("locked must be true or false")
        self.locked = locked
        return locked

    def load_contact(self, fields: Mapping[str, str], group_ids: Iterable[str] = ()) -> SmsendContact:
        """Insert a contact without validation (seeding; tests that need odd data)."""
        with self._lock:
            return self._insert(fields, group_ids)

    def snapshot(self) -> dict[str, Any]:
        """The whole account as plain data: groups, contacts, memberships, blacklist."""
        with self._lock:
            return {
                "groups": [
                    {"id": g.id, "name": g.name, "description": g.description}
                    for g in (self.groups[gid] for gid in self._group_order)
                ],
                "contacts": [c.as_json() for c in self.contacts.values()],
                "memberships": sorted((gid, cid) for gid, g in self.groups.items() for cid in g.members),
                "blacklist": sorted(self.blacklist),
                "blacklist_entries": [e.as_json(ZoneInfo("UTC")) for e in self.blacklist.values()],
                "campaigns": [{"id": c.id, "name": c.name, "active": c.active, "subscribers": list(c.subscribers)}
                              for c in self.campaigns.values()],
                "locked": self.locked,
            }


# --- HTTP -------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]


def _error_response(status: int, message: str, code: int, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": message, "code": code}, status_code=status, headers=headers)


def _empty(status: int, location: str | None = None) -> Response:
    return Response(status_code=status, headers={"Location": location} if location else None)


async def _json_body(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _invalid("the body is not valid JSON", E_BAD_JSON) from None


def _positive_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(f"{name}: must be an integer") from None
    if value < 1:
        raise _invalid(f"{name}: must be at least 1")
    return value


def _bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise _invalid(f"{name}: must be 'true' or 'false'")
    return raw == "true"


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else None


class _Api:
    """The route handlers, bound to one account state."""

    def __init__(self, state: SmsendState, faults: Faults | None = None) -> None:
        self.state = state
        self.faults = faults

    # auth endpoints

    async def login(self, request: Request) -> Response:
        self._check_credentials(request.query_params.get("username"), request.query_params.get("password"))
        return self._keys_response(self.state.open_session())

    async def token(self, request: Request) -> Response:
        username, password = request.query_params.get("username"), request.query_params.get("password")
        if username is None and password is None:
            username, password = _basic_credentials(request.headers.get("authorization")) or (None, None)
        self._check_credentials(username, password)
        return self._keys_response(self.state.credentials["access_token"])

    def _check_credentials(self, username: str | None, password: str | None) -> None:
        if username is None or password is None:
            raise _invalid("username and password are required")
        if not self.state.check_login(username, password):
            raise ApiError(404, "Credentials are incorrect", E_BAD_CREDENTIALS)

    def _keys_response(self, second_key: str) -> Response:
        body = f"{self.state.credentials['user_key']};{second_key}"
        return PlainTextResponse(body)


    # groups

    async def create_group(self, request: Request) -> Response:
        name, description = _validate_group_body(await _json_body(request))
        group = self.state.create_group(name, description)
        return _empty(201, f"/group/{group.id}")

    async def update_group(self, request: Request) -> Response:
        group_id = request.path_params["group_id"]
        name, description = _validate_group_body(await _json_body(request))
        self.state.update_group(group_id, name, description)
        return _empty(200, f"/group/{group_id}")

    async def delete_group(self, request: Request) -> Response:
        delete_contacts = _bool_param(request, "deletecontacts")
        self.state.delete_group(request.path_params["group_id"], delete_contacts=delete_contacts)
        return _empty(200)

    async def list_groups(self, request: Request) -> Response:
        page_number = _positive_int(request, "pageNumber", 1)
        page_size = _positive_int(request, "pageSize", DEFAULT_PAGE_SIZE)
        if self.faults is not None and self.faults.page_fails(page_number):
            raise ApiError(500, "Internal Server Error", E_SERVER)
        groups, total = self.state.groups_page(page_number, page_size)
        rows = [{"id_group": g.id, "group_name": g.name, "group_description": g.description} for g in groups]
        return JSONResponse({"groups": rows, "pageNumber": page_number, "pageSize": page_size, "Total": total})

    async def add_member(self, request: Request) -> Response:
        group_id, contact_id = request.path_params["group_id"], request.path_params["contact_id"]
        self.state.add_member(group_id, contact_id)
        return _empty(200, f"/contact/{contact_id}")

    async def remove_member(self, request: Request) -> Response:
        group_id, contact_id = request.path_params["group_id"], request.path_params["contact_id"]
        self.state.remove_member(group_id, contact_id)
        return _empty(200, f"/contact/{contact_id}")

    # contacts

    async def post_contact(self, request: Request) -> Response:
        body = await _json_body(request)
        if isinstance(body, dict) and "contacts" in body:
            return JSONResponse(self.state.upsert(body))
        contact = self.state.add_contact(body)
        return _empty(201, f"/contact/{contact.id}")

    async def get_contact(self, request: Request) -> Response:
        contact = self.state.contacts.get(request.path_params["contact_id"])
        if contact is None:
            raise ApiError(404, "The given contactid was not found", E_NOT_FOUND)
        return JSONResponse(contact.as_json())

    async def blacklist_contact(self, request: Request) -> Response:
        self.state.blacklist_contact(request.path_params["contact_id"])
        return JSONResponse(True)

    async def blacklist_batch(self, request: Request) -> Response:
        return JSONResponse(self.state.blacklist_contacts(await _json_body(request)))

    async def blacklist_number(self, request: Request) -> Response:
        self.state.blacklist_number(request.query_params.get("phoneNumber"))
        return JSONResponse(True)

    async def register_to_list(self, request: Request) -> Response:
        _bool_param(request, "SendOptIn")  # accepted and checked; no e-mail is simulated
        contact = self.state.register_to_campaign(request.path_params["campaign_id"], await _json_body(request))
        return _empty(201, f"/contact/{contact.id}")

    # the SMS blacklist API

    async def list_blacklist(self, request: Request) -> Response:
        query = BlacklistQuery.parse(request.query_params)
        entries, total = self.state.blacklist_page(query)
        return JSONResponse({"blacklist": [e.as_json(query.zone) for e in entries], "pageNumber": query.page_number,
                             "pageSize": query.page_size, "Total": total})

    async def add_to_blacklist(self, request: Request) -> Response:
        self.state.blacklist_prefixed(request.query_params.get("phoneNumber"))
        return JSONResponse(True)

    async def add_batch_to_blacklist(self, request: Request) -> Response:
        try:
            body = await _json_body(request)
        except ApiError:
            raise _invalid(BAD_NUMBERS, E_INVALID_RECIPIENT) from None
        return JSONResponse(self.state.blacklist_numbers(body))

    # wiring

    def authed(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            self.state.authenticate(request.headers)
            return await handler(request)

        guarded.__name__ = handler.__name__
        return guarded

    def routes(self) -> list[Route]:
        a = self.authed
        return [
            Route("/login", self.login, methods=["GET"]),
            Route("/token", self.token, methods=["GET"]),
            Route("/group", a(self.create_group), methods=["POST"]),
            _route_by_method("/group/{group_id}", PUT=a(self.update_group), DELETE=a(self.delete_group)),
            Route("/groups", a(self.list_groups), methods=["GET"]),
            _route_by_method(
                "/group/{group_id}/contact/{contact_id}", POST=a(self.add_member), DELETE=a(self.remove_member)
            ),
            Route("/contact", a(self.post_contact), methods=["POST"]),
            Route("/contact/add_to_blacklist_batch", a(self.blacklist_batch), methods=["POST"]),
            Route("/contact/add_to_blacklist/{contact_id}", a(self.blacklist_contact), methods=["POST"]),
            Route("/contact/{contact_id}", a(self.get_contact), methods=["GET"]),
            Route("/contacts/add_to_blacklist", a(self.blacklist_number), methods=["POST"]),
            Route("/list/{campaign_id}/contact", a(self.register_to_list), methods=["POST"]),
            _route_by_method("/blacklist/sms", GET=a(self.list_blacklist), POST=a(self.add_to_blacklist)),
            Route("/blacklist/smsbatch", a(self.add_batch_to_blacklist), methods=["POST"]),
        ]


def _route_by_method(path: str, **handlers: Handler) -> Route:
    """One route for several methods, so a 405 lists every allowed one in ``Allow``."""

    async def dispatch(request: Request) -> Response:
        return await handlers[request.method](request)

    return Route(path, dispatch, methods=list(handlers))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return _error_response(exc.status, exc.message, exc.code)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = E_METHOD if exc.status_code == 405 else E_NOT_FOUND
    return _error_response(exc.status_code, str(exc.detail), code, exc.headers)


def make_app(state: SmsendState, faults: Faults | None = None) -> Starlette:
    """The Starlette app serving ``state`` under :data:`BASE_PATH`."""
    api = _Api(state, faults)
    # No slash redirects: the real paths have none, and a client must not rely on them.
    inner = Router(api.routes(), redirect_slashes=False)
    app = Starlette(
        routes=[Mount(BASE_PATH, app=inner)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )
    app.router.redirect_slashes = False
    return app


class SmsendFaultHooks(DefaultFaultHooks):
    """smsend's wording of injected faults (see :mod:`syncd.simulators.faults`).

    No 429 is documented for smsend; the simulated one carries ``Retry-After`` in
    whole seconds (0 allowed, so tests need not wait) and the usual error body.
    Rejected credentials answer 404 on ``/login`` and ``/token`` and 401 elsewhere.
    """

    def throttled(self, wait_seconds: float) -> Response:
        retry_after = str(math.ceil(max(wait_seconds, 0.0)))
        return _error_response(429, "Too Many Requests", E_THROTTLED, {"Retry-After": retry_after})

    def unauthorized(self, path: str) -> Response:
        if path.rstrip("/").endswith(("/login", "/token")):
            return _error_response(404, "Credentials are incorrect", E_BAD_CREDENTIALS)
        return _error_response(401, "User_key, Token or Session_key are invalid", E_UNAUTHORIZED)

    def server_error(self, status: int) -> Response:
        text = "Internal Server Error" if status == 500 else "Service Unavailable"
        return _error_response(status, text, E_SERVER)


FAULT_HOOKS = SmsendFaultHooks()


# --- seeding and assembly -----------------------------------------------------

_FIRST_NAMES = (
    "Giulia", "Marco", "Francesca", "Luca", "Chiara", "Alessandro", "Sara", "Matteo", "Martina",
    "Lorenzo", "Elena", "Andrea", "Valentina", "Davide", "Federica", "Simone", "Anna", "Paolo",
    "Emma", "James", "Olivia", "Hans", "Claire", "Sofia", "Riccardo", "Beatrice", "Tommaso",
)
_SURNAMES = (
    "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino",
    "Greco", "Bruno", "Gallo", "Conti", "De Luca", "Mancini", "Costa", "Giordano", "Rizzo",
    "Lombardi", "Moretti", "Smith", "Johnson", "Müller", "Martin", "Fontana", "Caruso",
)
_CITIES = (("Milano", "MI", "20121"), ("Roma", "RM", "00184"), ("Torino", "TO", "10121"),
           ("Napoli", "NA", "80133"), ("Bologna", "BO", "40121"), ("Firenze", "FI", "50122"))
_GROUP_NAMES = (
    "Clienti", "Newsletter", "VIP", "Fornitori", "Dipendenti", "Milano", "Roma", "Promo estate",
    "Rivenditori", "Eventi", "Prospect", "Assistenza",
)
# Italian mobile prefixes (3xx) and a few foreign mobile formats: (country code, prefixes, digits after prefix).
_IT_MOBILE = ("320", "324", "328", "329", "330", "333", "335", "338", "339", "340", "345", "347",
              "348", "349", "366", "380", "388", "389", "391", "393")
_FOREIGN = (
    ("44", ("7400", "7712", "7723", "7801"), 6),
    ("49", ("151", "160", "171", "176"), 8),
    ("33", ("61", "62", "65", "67", "68", "75", "76", "77", "78"), 7),
    ("1", ("201", "212", "415", "617", "650", "312"), 7),
)


def _seed_phone(rng: random.Random) -> str:
    """A plausible mobile number in E.164: mostly Italian, some European, a few +1."""
    roll = rng.random()
    if roll < 0.8:
        return "+39" + rng.choice(_IT_MOBILE) + "".join(rng.choices(string.digits, k=7))
    country, prefixes, length = _FOREIGN[3] if roll > 0.95 else rng.choice(_FOREIGN[:3])
    rest = "".join(rng.choices(string.digits, k=length))
    if country == "1":  # North American exchange codes start with 2-9
        rest = rng.choice("23456789") + rest[1:]
    return "+" + country + rng.choice(prefixes) + rest


def _seed_group_name(index: int) -> str:
    base = _GROUP_NAMES[index % len(_GROUP_NAMES)]
    return base if index < len(_GROUP_NAMES) else f"{base} {index // len(_GROUP_NAMES) + 1}"


def _seed_contact_fields(rng: random.Random, index: int, phone: str) -> dict[str, str]:
    name, surname = rng.choice(_FIRST_NAMES), rng.choice(_SURNAMES)
    city, province, zip_code = rng.choice(_CITIES)
    email_user = f"{name}.{surname}".lower().replace(" ", "").replace("ü", "u")
    fields = {"phoneNumber": phone, "name": name, "surname": surname, "city": city,
              "province": province, "zip": zip_code, "gender": rng.choice("mf")}
    if rng.random() < 0.7:
        fields["email"] = f"{email_user}{index}@example.com"
    return fields


def seed_account(state: SmsendState, *, contacts: int, groups: int, seed: int) -> None:
    """Fill ``state`` with ``groups`` groups and ``contacts`` contacts, deterministically."""
    rng = random.Random(f"smsend-data:{seed}")
    group_ids = [state.create_group(_seed_group_name(i), f"Gruppo {i + 1}").id for i in range(groups)]
    used: set[str] = set()
    for index in range(contacts):
        phone = _seed_phone(rng)
        while phone in used:
            phone = _seed_phone(rng)
        used.add(phone)
        member_of = rng.sample(group_ids, k=min(len(group_ids), rng.choice((0, 1, 1, 2)))) if group_ids else []
        state.load_contact(_seed_contact_fields(rng, index, phone), member_of)


def make_credentials(seed: int) -> dict[str, str]:
    """The account's credentials, deterministic under ``seed``; keys as in ProviderSettings."""
    rng = random.Random(f"smsend-credentials:{seed}")

    def token(length: int) -> str:
        return "".join(rng.choices(_ID_ALPHABET, k=length))

    return {"username": "simuser", "password": token(16), "user_key": token(12), "access_token": token(32)}


def build(
    *,
    contacts: int,
    groups: int,
    seed: int,
    faults: Faults | None,
    clock: Callable[[], float] | None,
) -> tuple[Starlette, SmsendState, dict[str, str]]:
    """A seeded smsend account and the app serving it: ``(app, state, credentials)``."""
    credentials = make_credentials(seed)
    state = SmsendState(credentials=credentials, seed=seed, clock=clock)
    seed_account(state, contacts=contacts, groups=groups, seed=seed)
    return make_app(state, faults), state, credentials
