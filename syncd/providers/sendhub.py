"""The SendHub v1 client (design §2; ``providers.md`` part 2).

Everything goes through ``{base_url}/contacts/`` and ``{base_url}/groups/``
with ``username`` and ``api_key`` as query parameters on every call. The key
never reaches a log or an error: :class:`~syncd.providers.http.HttpSession`
logs paths without their query, and every error raised here is scrubbed of it.

Mapping (canonical ↔ SendHub)::

    canonical              SendHub                 notes
    phone (E.164)          number                  SendHub keeps +1 and 10 digits only; others are
                                                   sent anyway and come back Rejected (field number)
    name + surname         name                    one field: "name surname"; split back by
                                                   :func:`split_name`, keeping the current split
    email                  email                   a custom field
    extra[k]               k                       custom fields, values as text; reserved
                                                   SendHub keys (:data:`RESERVED`) never travel
    groups                 groups                  ids sent; resource URIs read back
    opted_out              blocked                 read only (the person texted STOP); never sent
    -                      screened, keyword       SendHub's own (RemoteContact.kept): resent on PUT
    group name             group name
    -                      slug, text_to_subscribe SendHub's own (RemoteGroup.kept): resent on a
                           ttjResponse             group PUT (the text-to-join keyword and reply)

Empty values are omitted on both sides (absent == empty), so a field emptied
on one side and missing on the other is never a change.

Behaviour worth knowing:

* listings page with ``limit=1000`` and ``offset``; ``meta.next`` is only
  tested against null, never followed. The next page is requested while the
  caller handles the current one, and only a page is held at a time (plus one
  int per id for the duplicate check). Ids are de-duplicated across pages and,
  when SendHub reports ``total_count``, a listing that changed while paging is a
  :class:`~syncd.errors.ProtocolError` (an incomplete pull must not pass).
* a contact create is not idempotent: a lost response is
  :class:`~syncd.errors.UnknownOutcome` for that write, not re-sent on the
  spot. The client settles it when the write is tried again: SendHub answers a
  create for a number it already holds with "already in your contacts", and the
  client links that contact (looked up by number) instead of creating another.
* a group create *is* re-sent after a lost response: group names are unique
  at SendHub, so the re-send answers "Duplicate group name." and the existing
  group is looked up by name.
* ``PUT`` replaces the whole contact: every projected field and every group
  the contact keeps are sent, and so are ``screened`` and ``keyword``
  (``ContactWrite.kept``, as last pulled), which a PUT would otherwise reset.
  A group ``PUT`` is a replace too: a rename sends the group's ``slug``,
  ``text_to_subscribe`` and ``ttjResponse`` as last pulled (``kept``), or
  SendHub resets its text-to-join keyword. ``blocked`` is never sent.
* records flagged ``deleted: true`` are absent: listings skip them (they still
  count towards ``total_count``), so neither a pull nor a lookup sees them.
* a 409 whose body says "try again" is a busy server, retried like a 429
  (:class:`~syncd.errors.TransientError`); any other 409 is Rejected.
* opt-outs come with the contacts (``blocked``); :meth:`SendHubProvider.opt_outs`
  is Unsupported (``capabilities.list_opt_outs`` is False).
* after a 420 (monthly quota spent) this client sends no further write.

The module is longer than most on purpose: one module per provider (style §5)
keeps SendHub's mapping, error translation and client together, and nothing
here is shared with another provider.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import orjson

from syncd.config import ProviderSettings
from syncd.errors import (
    AuthError,
    NotFound,
    ProtocolError,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Rejected,
    TransientError,
    Unsupported,
    excerpt,
)
from syncd.model import (
    NOTHING_KEPT,
    Contact,
    ContactWrite,
    Fields,
    OptOut,
    RemoteContact,
    RemoteGroup,
    WriteOutcome,
    digest,
    group_key,
)
from syncd.phones import InvalidPhone, to_e164
from syncd.providers.base import Capabilities, MembershipOutcome
from syncd.providers.http import HttpAccount, RetryPolicy, parse_json, redact_credentials

__all__ = [
    "CONTACT_KEPT",
    "GROUP_KEPT",
    "PAGE_LIMIT",
    "RESERVED",
    "SendHubProvider",
    "full_name",
    "sendhub_error",
    "split_name",
]

#: The largest ``limit`` SendHub's list endpoints accept.
PAGE_LIMIT = 1000

#: Keys SendHub owns: never sent as custom fields, never read as ``extra``.
RESERVED = frozenset({
    "id", "name", "number", "groups", "blocked", "resource_uri", "date_created", "date_modified",
    "deleted", "id_str", "is_owned", "keyword", "screened", "local_gateway", "landline",
    "landline_override", "contact_id",
})
# ``email`` is a custom field of its own, so an ``extra["email"]`` cannot travel either.
_NOT_EXTRA = RESERVED | {"email"}

#: SendHub-owned group attributes a ``PUT /groups/{id}/`` resets unless sent, with the JSON type each must have.
GROUP_KEPT: Mapping[str, type] = {"slug": str, "text_to_subscribe": bool, "ttjResponse": str}
#: SendHub-owned contact attributes a ``PUT /contacts/{id}/`` resets unless sent (SH-NEW's request schema).
#: ``blocked`` is not one: it is read-only, the person's own opt-out, and never sent.
CONTACT_KEPT: Mapping[str, type] = {"screened": bool, "keyword": str}

_DUPLICATE_NUMBER = "already in your contacts"
_DUPLICATE_GROUP = "duplicate group name"
_ALREADY_IN = re.compile(r"^\s*(\S+) is the id of a contact who is already in this group")
_NOT_IN = re.compile(r"^\s*(\S+) is not an id of a contact in the group")
# SendHub ids: digits, 18 of them in SH-NEW; the bound keeps int() (the duplicate check) from refusing one.
_ID = re.compile(r"[0-9]{1,40}")
_GROUP_URI = re.compile(r"/groups/([0-9]{1,40})/?$")
# How SendHub stores and echoes every number: +1 and 10 digits, the area code not starting with 0 or 1.
_STORED_NUMBER = re.compile(r"\+1[2-9][0-9]{9}")
_TIME_LEFT = re.compile(r"^\s*(\d+):([0-5]\d):([0-5]\d)\s*$")
# SendHub's own bindings retry a 409 that says so (providers.md 2.0): it is a busy server, not a conflict.
_TRY_AGAIN = "try again"
# Keys of SendHub's generic error bodies; any other key of a 400 body names a field.
_ERROR_KEYS = frozenset({"message", "error", "status", "code", "devMessage", "moreInfo", "timeLeft"})

T = TypeVar("T")
E = TypeVar("E", bound=ProviderError)


# -- mapping helpers (pure) ------------------------------------------------------


def full_name(name: str, surname: str) -> str:
    """SendHub's single ``name``: the non-empty parts joined by one space."""
    return " ".join(part for part in (name, surname) if part)


def split_name(new: str, current: Contact | None) -> tuple[str, str]:
    """``(name, surname)`` for SendHub's single ``new`` name.

    Keeps as much of the ``current`` split as still fits: an unchanged full
    name keeps both parts; a kept surname or a kept first name keeps that part
    and gives the rest to the other. Otherwise the last word is the surname.
    """
    if current is not None:
        if full_name(current.name, current.surname) == new:
            return current.name, current.surname
        if current.surname and new.endswith(" " + current.surname):
            return new[: -len(current.surname) - 1], current.surname
        if current.name and new.startswith(current.name + " "):
            return current.name, new[len(current.name) + 1 :]
    before, space, after = new.rpartition(" ")
    return (before, after) if space else (new, "")


def _text(value: Any) -> str:
    """A field value as SendHub custom fields hold it: text; None is empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _wire_id(remote_id: str) -> int | str:
    """A remote id as SEED-002 sends it (``"groups": [11, 12]``): an integer when it is one."""
    return int(remote_id) if remote_id.isascii() and remote_id.isdigit() else remote_id


def _timestamp(value: Any) -> datetime | None:
    """SendHub's ``date_modified`` (UTC, no zone marker) as an aware datetime; None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _compact(remote_id: str) -> int | str:
    """An id as kept in a listing's duplicate check: SendHub's digit strings as ints, half the memory."""
    return int(remote_id) if remote_id.isascii() and remote_id.isdigit() else remote_id


def _endpoint(response: httpx.Response) -> str:
    """``METHOD /path`` of the request behind ``response``, for messages (never the query: it holds the key)."""
    return f"{response.request.method} {response.request.url.path}"


def _has_more(meta: dict[str, Any], objects: list[Any]) -> bool:
    """Whether to ask for the next page: SendHub says there is one and this one was full.

    ``meta.next`` is only compared with null, never followed (design §2).
    """
    limit = meta.get("limit")
    page_size = limit if isinstance(limit, int) and 0 < limit <= PAGE_LIMIT else PAGE_LIMIT
    return meta.get("next") is not None and len(objects) >= page_size


def _kept(obj: Mapping[str, Any], wanted: Mapping[str, type]) -> dict[str, Any]:
    """The ``wanted`` attributes of a SendHub object that have their documented type.

    They are sent back verbatim on a replace; a value of another type could not
    be (SendHub would refuse it), so it is left for SendHub's default instead.
    """
    kept = {}
    for key, kind in wanted.items():
        value = obj.get(key)
        if isinstance(value, kind) and (kind is not str or value):
            kept[key] = value
    return kept


def _unchanged_dropped(objects: list[Any], known: MutableMapping[str, str], seen: set[int | str]
                       ) -> list[tuple[Any, str]]:
    """The objects of a page still to parse, each with its fingerprint as sent.

    An object whose id ``known`` maps to that very fingerprint is only counted as
    listed (``seen``) and taken out of ``known``: it was parsed and checked when
    it was stored. The loop a no-op pull spends its time in, kept lean.
    """
    rest = []
    dumps = orjson.dumps
    for obj in objects:
        if type(obj) is not dict or obj.get("deleted") is not None:
            rest.append((obj, ""))  # not a record, or one flagged: the full path names the problem
            continue
        fingerprint = digest(dumps(obj))
        value = obj.get("id")
        remote_id = value if type(value) is str else str(value) if type(value) is int else None
        if remote_id is not None and known.get(remote_id) == fingerprint:
            del known[remote_id]
            seen.add(_compact(remote_id))
        else:
            rest.append((obj, fingerprint))
    return rest


def _consume_outcome(task: asyncio.Task[Any]) -> None:
    """Read a prefetch's result, so one abandoned with an error is not reported as never retrieved."""
    if not task.cancelled():
        task.exception()


def _chunks(items: Sequence[T], size: int) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + max(1, size)]


# -- errors ----------------------------------------------------------------------


def _body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def _reason(body: Any, response: httpx.Response) -> tuple[str, str]:
    """``(field, reason)`` from an error body: SendHub's ``message``/``error``, or a Django field map."""
    if isinstance(body, dict):
        for key in ("message", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return "", body[key]
        for key, value in body.items():
            if key in _ERROR_KEYS:
                continue
            messages = value if isinstance(value, list) else [value]
            return key, " ".join(_text(m) for m in messages)
    return "", excerpt(response.text) or response.reason_phrase or "no reason given"


def _time_left(body: Any) -> float | None:
    """SendHub's 429 ``timeLeft`` ("H:MM:SS") in seconds."""
    value = body.get("timeLeft") if isinstance(body, dict) else None
    match = _TIME_LEFT.match(value) if isinstance(value, str) else None
    if not match:
        return None
    hours, minutes, seconds = (int(g) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None


def sendhub_error(response: httpx.Response, *, provider: str, operation: str, record: str) -> ProviderError | None:
    """Map a SendHub response to the error tree; None for a 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    body = _body(response)
    field, reason = _reason(body, response)
    kw: dict[str, Any] = dict(provider=provider, operation=operation, record=record, status=status)
    if status == 429:
        wait = _time_left(body)
        return RateLimited(reason, retry_after=wait if wait is not None else _retry_after(response), **kw)
    if status == 420:
        return QuotaExhausted(reason, **kw)
    if status == 409 and _TRY_AGAIN in reason.lower():
        return TransientError(reason, **kw)
    if status in (400, 409, 422):
        return Rejected(reason, field=field, **kw)
    if status in (401, 403):
        return AuthError(reason if body is not None else "credentials refused", **kw)
    if status == 404:
        return NotFound(reason, **kw)
    if status >= 500:
        return TransientError(reason, **kw)
    return ProtocolError(f"unexpected HTTP status: {reason}", **kw)


# -- the client ------------------------------------------------------------------


class SendHubProvider(HttpAccount):
    """One SendHub account (see the module docstring for the mapping and behaviour)."""

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        default_region: str = "IT",
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        credentials = settings.credentials  # config's check; ConfigError when there is none
        super().__init__(settings, error_mapper=sendhub_error, retry=retry, transport=transport)
        self.capabilities = Capabilities(
            list_contacts=True,
            contact_id_is_phone=False,
            member_changes=True,
            opt_out_outbound=False,
            # Plus any custom field not in RESERVED: SendHub stores every extra key.
            contact_fields=frozenset({"number", "name", "email"}),
            group_fields=frozenset({"name"}),  # SendHub groups have no description
        )
        self.default_region = default_region
        self._secret = credentials.secret.get()
        self._auth = {"username": credentials.identity, "api_key": self._secret}
        self._batch_size = max(1, settings.batch_size)
        self._write_slots = asyncio.Semaphore(max(1, settings.max_concurrency))
        self._quota: QuotaExhausted | None = None

    # -- mapping (pure) ------------------------------------------------------------

    def project(self, contact: Contact) -> dict[str, Any]:
        """The contact in SendHub's field space; empty values left out, no groups, no opt-out."""
        out: dict[str, Any] = {"number": contact.phone}
        name = full_name(contact.name, contact.surname)
        if name:
            out["name"] = name
        if contact.email:
            out["email"] = contact.email
        for key, value in contact.extra.items():
            text = _text(value)
            if key not in _NOT_EXTRA and text:
                out[key] = text
        return out

    def to_canonical(self, fields: Fields, current: Contact | None) -> dict[str, Any]:
        """Canonical phone, name, surname, email and extra for SendHub ``fields``.

        ``phone`` is there when ``fields`` hold a number (E.164 when it parses). Extra keys SendHub cannot hold (reserved names, and empty values) are
        kept from ``current``, and so is a current value whose text SendHub
        shows unchanged (``True`` stays ``True``, not ``"true"``).
        """
        name, surname = split_name(_text(fields.get("name")), current)
        extra = {key: value for key, value in fields.items() if key not in _NOT_EXTRA}
        if current is not None:
            for key, value in current.extra.items():
                if key in _NOT_EXTRA or not _text(value) or extra.get(key) == _text(value):
                    extra[key] = value
        attrs = {"name": name, "surname": surname, "email": _text(fields.get("email")), "extra": extra}
        if fields.get("number"):
            attrs["phone"] = self._phone(fields["number"])
        return attrs

    def parse_contact(self, obj: Any, *, endpoint: str, operation: str = "list contacts") -> RemoteContact:
        """A SendHub contact object as a :class:`RemoteContact`; ProtocolError if it is not one."""
        if not isinstance(obj, dict):
            raise self._protocol(f"{endpoint}: a contact is not a JSON object", operation)
        remote_id = self._id_of(obj, "contact", endpoint, operation)
        number = obj.get("number")
        if isinstance(number, bool) or not isinstance(number, str | int):
            raise self._protocol(f"{endpoint}: contact {remote_id} has no number", operation)
        phone = self._phone(number)
        fields: dict[str, Any] = {"number": phone}
        for key, value in obj.items():
            if key in RESERVED and key != "name":
                continue
            text = _text(value)
            if text:
                fields[key] = text
        return RemoteContact(
            remote_id=remote_id,
            phone=phone,
            fields=fields,
            groups=self._group_ids(obj.get("groups"), remote_id, endpoint, operation),
            opted_out=obj.get("blocked") is True,
            modified_at=_timestamp(obj.get("date_modified")),
            kept=_kept(obj, CONTACT_KEPT),
        )

    def parse_group(self, obj: Any, *, endpoint: str, operation: str = "list groups") -> RemoteGroup:
        """A SendHub group object as a :class:`RemoteGroup` (SendHub groups have no description).

        ``kept`` holds its text-to-join settings (:data:`GROUP_KEPT`), which a rename must resend.
        """
        if not isinstance(obj, dict):
            raise self._protocol(f"{endpoint}: a group is not a JSON object", operation)
        remote_id = self._id_of(obj, "group", endpoint, operation)
        name = obj.get("name")
        if not isinstance(name, str):
            raise self._protocol(f"{endpoint}: group {remote_id} has no name", operation)
        return RemoteGroup(remote_id=remote_id, name=name, modified_at=_timestamp(obj.get("date_modified")),
                           kept=_kept(obj, GROUP_KEPT))

    def _phone(self, number: str | int) -> str:
        if isinstance(number, str) and _STORED_NUMBER.fullmatch(number):
            # SendHub's own spelling: to_e164 would answer this very string, valid or not
            # (kept raw), and skipping phonenumbers here makes a listing several times faster.
            return number
        try:
            return to_e164(number, self.default_region)
        except InvalidPhone:
            return str(number)  # kept raw: the engine reports it, matching simply fails

    def _id_of(self, obj: dict[str, Any], kind: str, endpoint: str, operation: str) -> str:
        """The object's id as SendHub's string of digits; ProtocolError for anything else.

        The id goes into later request paths (``/contacts/{id}/``): an id such as
        ``../groups/5`` would turn a contact delete into a group delete.
        """
        value = obj.get("id")
        text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
        if not _ID.fullmatch(text):
            problem = f"{endpoint}: a {kind} has no id of digits (got {excerpt(repr(value), 40)})"
            raise self._protocol(problem, operation)
        return text

    def _group_ids(self, value: Any, contact_id: str, endpoint: str, operation: str) -> frozenset[str]:
        if value is None:
            return frozenset()
        if not isinstance(value, list):
            raise self._protocol(f"{endpoint}: groups of contact {contact_id} is not a list", operation)
        ids = set()
        for item in value:
            match = _GROUP_URI.search(item) if isinstance(item, str) else None
            if isinstance(item, int) and not isinstance(item, bool) and _ID.fullmatch(str(item)):
                ids.add(str(item))
            elif isinstance(item, str) and _ID.fullmatch(item):
                ids.add(item)
            elif match:
                ids.add(match.group(1))
            else:
                problem = f"{endpoint}: contact {contact_id} lists group {excerpt(repr(item), 60)}"
                raise self._protocol(problem, operation)
        return frozenset(ids)

    # -- plumbing ------------------------------------------------------------------

    def _protocol(self, reason: str, operation: str, record: str = "") -> ProtocolError:
        return ProtocolError(reason, provider=self.name, operation=operation, record=record)

    def _scrub(self, error: E) -> E:
        """Blank the api_key out of an error, should a body or URL have echoed it."""
        scrubbed = redact_credentials(error.reason)
        if self._secret:
            scrubbed = scrubbed.replace(self._secret, "***")
        if scrubbed != error.reason:
            error.reason = scrubbed
            error.args = (error._render(),)
        return error

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        record: str = "",
        write: bool = False,
        idempotent: bool = True,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """One request with the account's credentials; refuses writes once the quota is spent."""
        if write and self._quota is not None:
            raise QuotaExhausted(
                f"monthly API quota spent (HTTP 420 earlier in this run: {self._quota.reason}); request not sent",
                provider=self.name, operation=operation, record=record,
            )
        try:
            return await self._http.request(
                method, path, operation=operation, record=record, idempotent=idempotent,
                params={**self._auth, **(params or {})}, json_body=body,
            )
        except QuotaExhausted as error:
            self._quota = self._scrub(error)
            raise
        except ProviderError as error:
            self._scrub(error)
            raise

    def _json(self, response: httpx.Response, operation: str, record: str = "") -> Any:
        try:
            return parse_json(response, provider=self.name, operation=operation, record=record)
        except ProtocolError as error:
            self._scrub(error)
            raise

    def _listing(self, response: httpx.Response, operation: str) -> tuple[dict[str, Any], list[Any]]:
        """``(meta, objects)`` of a list response, checked for shape."""
        endpoint = _endpoint(response)
        body = self._json(response, operation)
        if not isinstance(body, dict):
            raise self._protocol(f"{endpoint}: the listing is not a JSON object", operation)
        meta, objects = body.get("meta"), body.get("objects")
        if not isinstance(meta, dict):
            raise self._protocol(f"{endpoint}: the listing has no meta object", operation)
        if not isinstance(objects, list):
            raise self._protocol(f"{endpoint}: the listing's objects is not a list", operation)
        total = meta.get("total_count")
        if total is not None and (isinstance(total, bool) or not isinstance(total, int)):
            raise self._protocol(f"{endpoint}: meta.total_count is not a number", operation)
        # Both API variants always send meta.next; without it, a listing would just stop here.
        if not isinstance(meta.get("next", 0), str | None):
            raise self._protocol(f"{endpoint}: meta.next is missing or not a link", operation)
        return meta, objects

    async def _pages(
        self, path: str, operation: str, parse: Callable[..., Any], params: dict[str, Any] | None = None,
        known: MutableMapping[str, str] | None = None,
    ) -> AsyncIterator[list[Any]]:
        """Parsed items of a listing, one list per page, each id once; ProtocolError if it changed meanwhile.

        The next page is requested as soon as this one says there is one, so the
        wait for it overlaps parsing and whatever the caller does with this page.
        With ``known`` (see :meth:`contacts`), an object sent exactly as before is
        neither parsed nor yielded.
        """
        query = {**(params or {}), "limit": PAGE_LIMIT}
        seen: set[int | str] = set()  # the one structure growing with the listing: ~70 bytes an id
        totals: list[int] = []
        offset = 0
        upcoming: asyncio.Task[httpx.Response] | None = self._fetch(path, operation, query, offset)
        try:
            while upcoming is not None:
                response = await upcoming
                meta, objects = self._listing(response, operation)
                offset += len(objects)
                upcoming = self._fetch(path, operation, query, offset) if _has_more(meta, objects) else None
                endpoint = _endpoint(response)
                fresh = self._fresh(objects, parse, seen, endpoint, operation, known)
                if meta.get("total_count") is not None:
                    totals.append(meta["total_count"])
                    self._check_totals(totals, len(seen), endpoint, operation, final=False)
                yield fresh
            if totals:
                self._check_totals(totals, len(seen), endpoint, operation, final=True)
        finally:
            if upcoming is not None:
                upcoming.cancel()

    def _fetch(self, path: str, operation: str, query: dict[str, Any], offset: int) -> asyncio.Task[httpx.Response]:
        request = self._call("GET", path, operation=operation, params={**query, "offset": offset})
        task = asyncio.ensure_future(request)
        task.add_done_callback(_consume_outcome)
        return task

    def _fresh(
        self, objects: list[Any], parse: Callable[..., Any], seen: set[int | str], endpoint: str, operation: str,
        known: MutableMapping[str, str] | None = None,
    ) -> list[Any]:
        """The parsed objects whose ids this listing has not yielded yet, the ``deleted`` ones left out.

        A deleted record still counts as listed (``seen``), so that the
        ``total_count`` check, which counts it too, holds. With ``known``, each
        object is fingerprinted as sent: one whose id ``known`` maps to that very
        fingerprint passed every check before and is only counted as listed;
        every listed id is taken out of ``known``.
        """
        fresh = []
        for obj, digest_ in (_unchanged_dropped(objects, known, seen) if known is not None else
                             ((obj, "") for obj in objects)):
            if self._is_deleted(obj, endpoint, operation):
                seen.add(_compact(self._id_of(obj, "record", endpoint, operation)))
                continue
            item = parse(obj, endpoint=endpoint, operation=operation)
            key = _compact(item.remote_id)
            if key not in seen:
                seen.add(key)
                if known is not None:
                    known.pop(item.remote_id, None)
                    item = replace(item, fingerprint=digest_)
                fresh.append(item)
        return fresh

    def _is_deleted(self, obj: Any, endpoint: str, operation: str) -> bool:
        """SH-NEW's read-only ``deleted`` flag: true means the record is gone (providers.md 2.0).

        Anything but a boolean (or null, or no flag) is a ProtocolError: read as
        "present" it could resurrect a deleted record, read as "absent" it would
        delete a live one everywhere.
        """
        if not isinstance(obj, dict):
            return False  # the parser names the problem
        flag = obj.get("deleted")
        if flag is None or isinstance(flag, bool):
            return flag is True
        raise self._protocol(f"{endpoint}: a record's 'deleted' is not a boolean (got {excerpt(repr(flag), 40)})",
                             operation)

    def _check_totals(self, totals: list[int], seen: int, endpoint: str, operation: str, *, final: bool) -> None:
        if totals[-1] != totals[0]:
            problem = f"total_count went from {totals[0]} to {totals[-1]}"
        elif final and seen != totals[0]:
            problem = f"{seen} distinct records listed but total_count says {totals[0]}"
        else:
            return
        raise self._protocol(f"{endpoint}: listing changed while paging ({problem}); the pull is incomplete", operation)

    # -- reads ---------------------------------------------------------------------

    def groups(self) -> AsyncIterator[list[RemoteGroup]]:
        """Every group, one list per page of up to 1000."""
        return self._pages("/groups/", "list groups", self.parse_group)

    def contacts(self, known: MutableMapping[str, str] | None = None) -> AsyncIterator[list[RemoteContact]]:
        """Every contact, one list per page of up to 1000 (see :meth:`Provider.contacts` for ``known``)."""
        return self._pages("/contacts/", "list contacts", self.parse_contact, known=known)

    async def _contact_with_number(self, phone: str) -> RemoteContact | None:
        """The contact with this number (SendHub's exact ``number=`` filter), lowest id first."""
        number = self._phone(phone)
        found: list[RemoteContact] = []
        async for page in self._pages("/contacts/", "find contact", self.parse_contact, {"number": number}):
            # Checked here too: a server ignoring the filter must not link a stranger.
            found.extend(contact for contact in page if contact.phone == number)
        return min(found, key=lambda c: (len(c.remote_id), c.remote_id), default=None)

    def opt_outs(self, since: datetime | None = None) -> AsyncIterator[list[OptOut]]:
        """Always Unsupported: SendHub reports opt-outs with each contact (``blocked``, read by :meth:`contacts`)."""
        raise Unsupported("SendHub lists no opt-outs of their own; they come with the contacts as 'blocked'",
                          provider=self.name, operation="list opt-outs")

    async def _group_named(self, name: str) -> str | None:
        exact, similar = None, None
        async for page in self.groups():
            for group in page:
                if group.name == name and exact is None:
                    exact = group.remote_id
                elif group.key == group_key(name) and similar is None:
                    similar = group.remote_id
        return exact or similar

    # -- group writes ----------------------------------------------------------------

    async def create_group(self, name: str, description: str) -> str:
        """Create a group (SendHub keeps no description); an existing one of that name is returned."""
        try:
            # Re-sending is safe: a second create of the same name answers "Duplicate group name."
            response = await self._call(
                "POST", "/groups/", operation="create group", record=name, write=True, body={"name": name}
            )
        except Rejected as error:
            if _DUPLICATE_GROUP not in error.reason.lower():
                raise
            existing = await self._group_named(name)
            if existing is None:
                raise
            return existing
        created = self._json(response, "create group", name)
        return self.parse_group(created, endpoint=_endpoint(response), operation="create group").remote_id

    async def update_group(
        self, remote_id: str, name: str, description: str, kept: Mapping[str, Any] = NOTHING_KEPT
    ) -> None:
        """Rename a group. PUT replaces it, so its text-to-join settings as last pulled travel with the
        new name (``kept``: :data:`GROUP_KEPT` keys only); any left out go back to SendHub's defaults.
        """
        body = {**_kept(kept, GROUP_KEPT), "id": _wire_id(remote_id), "name": name}
        await self._call("PUT", f"/groups/{remote_id}/", operation="update group", record=remote_id, write=True, body=body)

    async def delete_group(self, remote_id: str) -> None:
        """Delete a group; one already gone counts as deleted."""
        try:
            await self._call(
                "DELETE", f"/groups/{remote_id}/", operation="delete group", record=remote_id, write=True
            )
        except NotFound:
            pass

    # -- contact writes --------------------------------------------------------------

    async def create_contacts(self, writes: Sequence[ContactWrite]) -> list[WriteOutcome]:
        """POST each contact with its groups, concurrently; one outcome per write."""
        return await self._each(writes, self._create_one)

    async def update_contacts(self, writes: Sequence[ContactWrite]) -> list[WriteOutcome]:
        """PUT each contact whole (every field and every group it keeps); one outcome per write."""
        return await self._each(writes, self._update_one)

    async def delete_contacts(self, writes: Sequence[ContactWrite]) -> list[WriteOutcome]:
        """DELETE each contact; one already gone counts as deleted."""
        return await self._each(writes, self._delete_one)

    async def _each(self, writes: Sequence[ContactWrite],
                    one: Callable[[ContactWrite], Awaitable[WriteOutcome]]) -> list[WriteOutcome]:
        async def guarded(write: ContactWrite) -> WriteOutcome:
            async with self._write_slots:  # the quota check then runs just before sending
                try:
                    return await one(write)
                except ProviderError as error:
                    return WriteOutcome(ref=write.ref, remote_id=write.remote_id, error=error)

        return list(await asyncio.gather(*(guarded(write) for write in writes)))

    def _contact_body(self, write: ContactWrite) -> dict[str, Any]:
        """Fields, number and groups; SendHub's own keys (``blocked`` above all) never travel as fields."""
        body = {key: value for key, value in write.fields.items() if key not in RESERVED or key in ("name", "number")}
        body.setdefault("number", write.phone)
        body["groups"] = [_wire_id(g) for g in sorted(write.groups)]
        return body

    async def _create_one(self, write: ContactWrite) -> WriteOutcome:
        try:
            response = await self._call("POST", "/contacts/", operation="create contact", record=write.phone,
                                        write=True, idempotent=False, body=self._contact_body(write))
        except Rejected as error:
            if _DUPLICATE_NUMBER not in error.reason.lower():
                raise
            existing = await self._contact_with_number(write.phone)
            if existing is None:
                raise
            return WriteOutcome(ref=write.ref, remote_id=existing.remote_id, note="linked existing contact")
        created = self._json(response, "create contact", write.phone)
        endpoint = _endpoint(response)
        if not isinstance(created, dict):
            raise self._protocol(f"{endpoint}: the created contact is not a JSON object", "create contact", write.phone)
        return WriteOutcome(ref=write.ref, remote_id=self._id_of(created, "contact", endpoint, "create contact"))

    async def _update_one(self, write: ContactWrite) -> WriteOutcome:
        remote_id = self._require_id(write)
        # A replace: what SendHub owns (screened, keyword) goes back as last pulled, or is reset.
        body = {"id": _wire_id(remote_id), **self._contact_body(write), **_kept(write.kept, CONTACT_KEPT)}
        # 202 (SEED-002) and 200 (SH-NEW) both mean done; PUT is idempotent, so a lost answer is re-sent.
        await self._call("PUT", f"/contacts/{remote_id}/", operation="update contact",
                         record=f"{remote_id} ({write.phone})", write=True, body=body)
        return WriteOutcome(ref=write.ref, remote_id=remote_id)

    async def _delete_one(self, write: ContactWrite) -> WriteOutcome:
        remote_id = self._require_id(write)
        try:
            await self._call("DELETE", f"/contacts/{remote_id}/", operation="delete contact",
                             record=f"{remote_id} ({write.phone})", write=True)
        except NotFound:
            return WriteOutcome(ref=write.ref, remote_id=remote_id, note="already gone")
        return WriteOutcome(ref=write.ref, remote_id=remote_id)

    @staticmethod
    def _require_id(write: ContactWrite) -> str:
        if not write.remote_id:
            raise ValueError(f"contact {write.ref} ({write.phone}) has no SendHub id to write to")
        return write.remote_id

    # -- memberships -----------------------------------------------------------------

    async def change_members(
        self, group_remote_id: str, add: Sequence[str], remove: Sequence[str]
    ) -> MembershipOutcome:
        """Add and remove contacts through ``POST /groups/{id}/contacts/`` in batches of ``batch_size``.

        SendHub answers 202 and lists per-id problems in ``errors``: a contact
        already in the group counts as added, one not in it as removed, anything
        else is that id's :class:`Rejected`.
        """
        done: dict[str, set[str]] = {"add": set(), "remove": set()}
        errors: dict[str, Exception] = {}
        for op, ids in (("add", add), ("remove", remove)):
            for chunk in _chunks(list(dict.fromkeys(ids)), self._batch_size):
                response = await self._call(
                    "POST", f"/groups/{group_remote_id}/contacts/", operation=f"{op} group members",
                    record=f"group {group_remote_id}", write=True, body={op: [_wire_id(i) for i in chunk]},
                )  # fmt: skip
                self._settle_members(op, chunk, response, group_remote_id, done[op], errors)
        return MembershipOutcome(added=frozenset(done["add"]), removed=frozenset(done["remove"]), errors=errors)

    def _settle_members(self, op: str, chunk: Sequence[str], response: httpx.Response, group_id: str,
                        done: set[str], errors: dict[str, Exception]) -> None:
        """Sort each id of ``chunk`` into ``done`` or ``errors`` from SendHub's ``{add, remove, errors}``."""
        operation = f"{op} group members"
        confirmed, messages = self._member_answer(op, response, operation, group_id)
        unexplained: list[str] = []
        for text in messages:
            first = text.split(maxsplit=1)[0] if text.strip() else ""
            if first in chunk:
                errors[first] = self._member_error(text, first, group_id, operation)
            else:
                unexplained.append(text)
        for contact_id in chunk:
            if contact_id in confirmed:
                done.add(contact_id)
            elif contact_id not in errors:
                reason = "; ".join(unexplained) or f"SendHub did not confirm the {op} ({_endpoint(response)})"
                errors[contact_id] = self._member_error(reason, contact_id, group_id, operation)

    def _member_answer(
        self, op: str, response: httpx.Response, operation: str, group_id: str
    ) -> tuple[set[str], list[str]]:
        """The ids SendHub confirms for ``op`` (benign complaints included) and its other complaints."""
        body = self._json(response, operation, f"group {group_id}")
        problems = body.get("errors") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not isinstance(body.get(op, []), list) or not isinstance(problems or {}, dict):
            raise self._protocol(f"{_endpoint(response)}: the answer is not {{add, remove, errors}}", operation,
                                 f"group {group_id}")
        confirmed = {str(i) for i in body.get(op, [])}
        messages = (problems or {}).get(op) or []
        benign = _ALREADY_IN if op == "add" else _NOT_IN
        others = []
        for text in map(_text, messages if isinstance(messages, list) else [messages]):
            match = benign.match(text)
            if match:
                confirmed.add(match.group(1))
            else:
                others.append(text)
        return confirmed, others

    def _member_error(self, reason: str, contact_id: str, group_id: str, operation: str) -> Rejected:
        return Rejected(reason, provider=self.name, operation=operation, record=f"{contact_id} in group {group_id}")
