"""The smsend REST v1.0 client (design §2; providers.md PART 1).

What the documented API allows, and therefore what this client does:

* **groups** are fully two-way: listed page by page (``GET /groups``), created
  (``POST /group``, the id read from the relative ``Location: /group/{id}``),
  modified (``PUT /group/{id}``) and deleted (``DELETE /group/{id}``);
* **contacts** cannot be listed, updated or deleted one by one. Every contact
  write is the add-multiple upsert ``POST /contact`` with
  ``updateExistingContact: true``: keyed by phone number, it can never
  duplicate a contact, so a batch whose response was lost is simply sent again.
  Memberships travel with the contact write (``groupIds``). The remote id of a
  contact is its E.164 number;
* **what an upsert keeps**: ``keepExistingGroupsAndCampaigns: true`` (the
  default for every write) adds ``groupIds`` to the contact's groups and keeps
  its email campaign subscriptions (``POST /list/{campaign_id}/contact``) and
  the groups it joined in smsend's own interface, which syncd cannot see
  (smsend contacts cannot be listed). A write that takes the contact out of a
  group (``ContactWrite.replace_groups``, set by the engine) must send
  ``false``, the only documented way to remove a membership of a contact
  whose smsend id syncd does not know (``DELETE /group/{gid}/contact/{cid}``
  needs that id, which only a non-deduplicating single create reveals). That
  upsert sets the groups to exactly ``groupIds`` and **drops** the contact's
  campaign subscriptions and the groups syncd does not manage: an unavoidable
  loss, limited to contacts that leave a group, noted in the outcome. The two
  kinds of writes go in separate batches;
* **deletion** upserts the contacts into a temporary group of syncd's own
  (``syncd-delete-…``, keeping their other groups) and deletes that group with
  ``deletecontacts=true``, the documented way to delete contacts;
* **groups** hold a name and a description, both sent on every ``PUT``
  (``update_group`` ignores ``kept``: there is nothing else to keep);
* **opt-outs** go to the blacklist (``POST /contacts/add_to_blacklist``) and
  are read back from it (:meth:`SmsendProvider.opt_outs`, ``GET /blacklist/sms``:
  STOP replies and web-interface entries start there). Its answer's shape is
  assumed (providers.md 1.2.5) and checked strictly: anything else is a
  ProtocolError, never "nobody opted out". ``from`` is sent in UTC with
  ``timezone=UTC`` and ``insertDate`` read as UTC.

Every contact field is sent on each upsert, empty ones as ``""`` (the documented
default), because the upsert overwrites only the fields present: leaving a
field out would never clear it at smsend.

Authentication, with the credential set the configuration chose
(:attr:`~syncd.config.ProviderSettings.credentials`): ``user_key`` + ``access_token``
(headers ``user_key`` and ``Access_token``); ``username`` + ``password``
(``GET /login`` answers ``USER_KEY;SESSION_KEY``, then headers ``user_key`` and
``Session_key``; a session expires after 5 idle minutes, so a 401 triggers one
transparent re-login and the call is sent again); ``user_key`` +
``session_key`` as given. Header names are sent exactly as documented:
smsend refuses ``User-Key``-style names.

Status codes: 401 is refused credentials; 404 means "the user_key was not
found" (or, on login, "credentials are incorrect"), so it is an
:class:`~syncd.errors.AuthError` too, except on ``GET /contact/{id}``; 400 is a
:class:`~syncd.errors.Rejected` carrying smsend's own message.

The whole client lives here (one module per provider), in reading order:
validation and mapping (pure), status mapping, authentication, groups, contact
writes.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote, unquote, urlsplit

import httpx
import structlog

from syncd.config import CredentialSet, ProviderSettings
from syncd.errors import (
    AuthError,
    ProtocolError,
    ProviderError,
    QuotaExhausted,
    Rejected,
    UnknownOutcome,
    Unsupported,
    excerpt,
)
from syncd.model import NOTHING_KEPT, Contact, ContactWrite, Fields, OptOut, RemoteContact, RemoteGroup, WriteOutcome
from syncd.phones import InvalidPhone, to_e164
from syncd.providers.base import Capabilities, MembershipOutcome
from syncd.providers.http import (
    ErrorMapper,
    HttpAccount,
    RetryPolicy,
    default_error,
    parse_json,
    redact_credentials,
    secret_spellings,
)

__all__ = [
    "CAPABILITIES",
    "CONTACT_FIELDS",
    "EXTRA_FIELDS",
    "TEMP_GROUP_PREFIX",
    "SmsendProvider",
    "validate_contact",
]

log = structlog.get_logger("syncd.providers.smsend")

#: Canonical ``extra`` keys smsend can hold, under the same names.
EXTRA_FIELDS: tuple[str, ...] = (
    "gender", "fax", "address", "city", "province", "birthdate", "promotiondate", "rememberdate", "zip",
    *(f"custom{i}" for i in range(1, 11)),
)
#: Every field of an add-contact object syncd sends (groups travel as ``groupIds``).
CONTACT_FIELDS: tuple[str, ...] = ("phoneNumber", "name", "surname", "email", *EXTRA_FIELDS)
_EXTRA_SET = frozenset(EXTRA_FIELDS)

CAPABILITIES = Capabilities(
    list_contacts=False,
    contact_id_is_phone=True,
    member_changes=False,
    opt_out_outbound=True,
    contact_fields=frozenset(CONTACT_FIELDS),
    list_opt_outs=True,
)

#: Groups syncd creates to delete contacts through; hidden from ``groups()``.
TEMP_GROUP_PREFIX = "syncd-delete-"
#: The operation a deletion's errors and outcomes name.
_DELETE_CONTACT = "delete contact"
#: Groups per list request: the documented default (5) would cost a request per five groups.
GROUPS_PAGE_SIZE = 100
#: The simulator's (assumed) upsert limit; ``batch_size`` is capped here.
MAX_BATCH = 1000
#: Blacklist entries per list request (no maximum is documented; the default is unknown).
BLACKLIST_PAGE_SIZE = 100
#: ``from``/``to`` and ``insertDate`` of the blacklist API: ``yyyy-MM-dd HH:mm:ss``, read in ``timezone``.
_BLACKLIST_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_BLACKLIST_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_BLACKLIST_ENDPOINT = "GET /blacklist/sms"

_MAX_LENGTH = {"name": 40, "surname": 40, "fax": 32, "city": 32, "province": 32, "address": 256, "zip": 16}
_DATE_FIELDS = ("birthdate", "promotiondate", "rememberdate")
# The six documented date formats, told apart by their shape.
_DATE_FORMATS = (
    (re.compile(r"\d{6}"), "%d%m%y"),  # ddMMyy
    (re.compile(r"\d{8}"), "%Y%m%d"),  # yyyyMMdd
    (re.compile(r"\d{10}"), "%d%m%y%H%M"),  # ddMMyyHHmm
    (re.compile(r"\d{14}"), "%Y%m%d%H%M%S"),  # yyyyMMddHHmmss
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d"), "%Y-%m-%d %H:%M"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d\.0"), "%Y-%m-%d %H:%M.0"),
)
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_HEADER_TOKEN = re.compile(r"[!-:<-~]+")  # visible ASCII but ';'
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_GROUP_LOCATION = re.compile(r"(?:^|/)group/([^/]+)/?$")
# smsend's 400 messages start with the offending field, e.g. "contacts[3].name: longer than 40".
_REASON_FIELD = re.compile(r"^(?:contacts\[\d+\]\.)?([A-Za-z][A-Za-z0-9]*)\s*:")


# --- validation and mapping (pure) -------------------------------------------


def _valid_date(value: str) -> bool:
    for shape, fmt in _DATE_FORMATS:
        if shape.fullmatch(value):
            try:
                datetime.strptime(value, fmt)
            except ValueError:
                return False
            return True
    return False


def _field_problem(name: str, value: str) -> str | None:
    limit = _MAX_LENGTH.get(name)
    if limit is not None and len(value) > limit:
        return f"{len(value)} characters, smsend allows at most {limit}"
    if name == "gender" and value not in ("m", "f"):
        return f"{value!r} is not 'm' or 'f'"
    if name in _DATE_FIELDS and not _valid_date(value):
        return (f"{value!r} is not a date in ddMMyy, yyyyMMdd, ddMMyyHHmm, yyyyMMddHHmmss, "
                "'yyyy-MM-dd HH:mm' or 'yyyy-MM-dd HH:mm.0'")
    if name == "email" and not _EMAIL.fullmatch(value):
        return f"{value!r} is not a valid email address"
    return None


def validate_contact(fields: Mapping[str, str]) -> list[tuple[str, str]]:
    """The documented add-contact rules broken by ``fields``, as ``(field, problem)`` pairs.

    Empty values are the documented default and always valid. At least one of
    ``phoneNumber`` and ``email`` must be non-empty.
    """
    problems = [(name, problem) for name, value in fields.items()
                if value and (problem := _field_problem(name, value)) is not None]
    if not fields.get("phoneNumber") and not fields.get("email"):
        problems.append(("phoneNumber", "at least one of phoneNumber and email is required"))
    return problems


def _text(value: Any) -> str:
    return "" if value is None else str(value)


# --- plumbing ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    """One contact ready for an upsert: its place in the caller's batch and its body."""

    index: int
    ref: int | str
    phone: str
    body: dict[str, Any]
    groups: tuple[str, ...]
    opted_out: bool = False
    replace_groups: bool = False


class _BlacklistPage(NamedTuple):
    """One page of ``GET /blacklist/sms``: its entries, and the ``pageSize`` and ``Total`` it states."""

    entries: list[OptOut]
    size: int
    total: int


def _message_of(response: httpx.Response) -> str:
    """smsend's own words: the ``error`` of a JSON error body, else the body text."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    message = body.get("error") if isinstance(body, dict) else None
    return message if isinstance(message, str) else response.text


def _scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without the secrets, as written or URL-encoded (a 404 page may quote the login URL)."""
    for secret in secrets:
        for spelling in secret_spellings(secret) if secret else ():
            text = text.replace(spelling, "[redacted]")
    return redact_credentials(text)


def _make_error_mapper(secrets: Sequence[str]) -> ErrorMapper:
    """The smsend reading of HTTP statuses (see the module docstring); secrets never quoted."""

    def mapper(response: httpx.Response, *, provider: str, operation: str, record: str) -> ProviderError | None:
        status = response.status_code
        if 200 <= status < 300:
            return None
        kw: dict[str, Any] = dict(provider=provider, operation=operation, record=record, status=status)
        reason = excerpt(_scrub(_message_of(response), secrets)) or response.reason_phrase  # scrubbed before cut
        path = response.request.url.path
        if status == 400:
            match = _REASON_FIELD.match(reason)
            return Rejected(reason, field=match.group(1) if match else "", **kw)
        if status == 401:
            return AuthError(f"credentials refused: {reason}", **kw)
        if status == 404 and path.endswith("/login"):
            return AuthError(f"username or password refused: {reason}", **kw)
        if status == 404 and not (response.request.method == "GET" and "/contact/" in path):
            return AuthError(f"{reason} (smsend answers 404 when the user_key is unknown; "
                             "check user_key and base_url)", **kw)
        error = default_error(response, provider=provider, operation=operation, record=record)
        if error is not None and secrets:
            error.reason = _scrub(error.reason, secrets)
            error.args = (error._render(),)
        return error

    return mapper


# --- the client --------------------------------------------------------------


class SmsendProvider(HttpAccount):
    """One smsend account (see the module docstring for what it can and cannot do)."""

    capabilities = CAPABILITIES

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        default_region: str = "IT",
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._credentials = settings.credentials  # config's choice; ConfigError when there is none
        super().__init__(settings, error_mapper=_make_error_mapper(settings.secrets()), retry=retry,
                         transport=transport)
        self.settings = settings
        self.default_region = default_region
        self.batch_size = max(1, min(settings.batch_size, MAX_BATCH))
        self._headers: dict[str, str] | None = None
        self._generation = 0  # bumped on every login, so concurrent 401s log in once
        self._login_lock = asyncio.Lock()
        self._delete_lock = asyncio.Lock()

    # -- mapping (pure) -----------------------------------------------------

    def project(self, contact: Contact) -> dict[str, Any]:
        """The contact in smsend's fields; empty values and extras smsend cannot hold are left out."""
        values: dict[str, Any] = {"phoneNumber": contact.phone, "name": contact.name, "surname": contact.surname,
                  "email": contact.email}
        values.update({key: contact.extra.get(key) for key in EXTRA_FIELDS})
        return {key: _text(value) for key, value in values.items() if _text(value)}

    def to_canonical(self, fields: Fields, current: Contact | None) -> dict[str, Any]:
        """Canonical phone (when ``fields`` hold one), name, surname, email and extra for smsend ``fields``.

        Extra keys smsend cannot hold are kept from ``current``; those it can
        hold come from ``fields`` (absent means empty, so they are dropped).
        """
        extra = {k: v for k, v in (current.extra if current else {}).items() if k not in _EXTRA_SET}
        extra.update({key: _text(fields[key]) for key in EXTRA_FIELDS if _text(fields.get(key))})
        attrs = {
            "name": _text(fields.get("name")),
            "surname": _text(fields.get("surname")),
            "email": _text(fields.get("email")),
            "extra": extra,
        }
        if _text(fields.get("phoneNumber")):
            attrs["phone"] = _text(fields["phoneNumber"])
        return attrs

    # -- authentication -----------------------------------------------------

    async def _auth_headers(self) -> tuple[dict[str, str], int]:
        if self._headers is None:
            async with self._login_lock:
                if self._headers is None:
                    self._headers = await self._first_headers()
        return self._headers, self._generation

    async def _first_headers(self) -> dict[str, str]:
        creds = self._credentials
        if creds.kind is CredentialSet.ACCESS_TOKEN:
            return {"user_key": creds.identity, "Access_token": creds.secret.get()}
        if creds.kind is CredentialSet.SESSION_KEY:
            return {"user_key": creds.identity, "Session_key": creds.secret.get()}
        return await self._login()

    async def _login(self) -> dict[str, str]:
        """``GET /login``: a fresh session. The password travels in the query, never into a message."""
        username, password = self._credentials.identity, self._credentials.secret
        response = await self._http.request(
            "GET", "/login", operation="login", record=username,
            params={"username": username, "password": password.get()},
        )
        user_key, sep, session_key = response.text.strip().partition(";")
        # Both keys become header values: only visible ASCII can travel there (httpx refuses the rest).
        if not sep or not _HEADER_TOKEN.fullmatch(user_key) or not _HEADER_TOKEN.fullmatch(session_key):
            # Never quote the body: it may hold a session key.
            raise ProtocolError(
                f"GET /login answered a {len(response.text)}-character body that is not 'USER_KEY;SESSION_KEY'",
                provider=self.name, operation="login", record=username, status=response.status_code,
            )
        self._generation += 1
        log.info("smsend.login", provider=self.name, username=username)
        return {"user_key": user_key, "Session_key": session_key}

    async def _relogin(self, seen_generation: int) -> dict[str, str]:
        """Log in again unless another request already did since ``seen_generation``."""
        async with self._login_lock:
            if self._generation == seen_generation or self._headers is None:
                log.info("smsend.session_expired", provider=self.name)
                self._headers = await self._login()
            return self._headers

    def _explain_refusal(self, error: AuthError) -> AuthError:
        if self._credentials.kind is not CredentialSet.SESSION_KEY or error.status != 401:
            return error
        hint = ("the session key was refused (a session key expires after 5 idle minutes); configure "
                "access_token, or username and password so syncd can log in by itself")
        better = AuthError(f"{hint}: {error.reason}", provider=self.name, operation=error.operation,
                           record=error.record, status=error.status)
        better.__cause__ = error
        return better

    async def _call(self, method: str, path: str, *, operation: str, record: str = "",
                    idempotent: bool = True, params: Mapping[str, Any] | None = None,
                    json_body: Any = None) -> httpx.Response:
        """One authenticated request; a 401 in username/password mode logs in again once."""
        headers, generation = await self._auth_headers()
        send = dict(operation=operation, record=record, idempotent=idempotent, params=params, json_body=json_body)
        try:
            return await self._http.request(method, path, headers=headers, **send)
        except AuthError as error:
            if self._credentials.kind is not CredentialSet.PASSWORD or error.status != 401:
                raise self._explain_refusal(error) from None
        headers = await self._relogin(generation)
        return await self._http.request(method, path, headers=headers, **send)

    # -- groups -------------------------------------------------------------

    async def groups(self) -> AsyncIterator[list[RemoteGroup]]:
        """Every group but syncd's temporary ones, one list per non-empty page."""
        async for page in self._all_group_pages():
            visible = [group for group in page if not group.name.startswith(TEMP_GROUP_PREFIX)]
            if visible:
                yield visible

    async def _all_group_pages(self) -> AsyncIterator[list[RemoteGroup]]:
        """``GET /groups`` page by page until ``Total`` groups were seen.

        A listing whose ``Total`` changes between pages, or whose pages do not
        add up to ``Total`` distinct groups, raises ProtocolError: a group was
        created or deleted meanwhile, and a pull built on it would be wrong.
        """
        seen: set[str] = set()
        received, total, page_number = 0, None, 1
        while True:
            groups, page_total = await self._group_page(page_number)
            if total is not None and page_total != total:
                raise self._listing_changed(f"Total went from {total} to {page_total}")
            total = page_total
            received += len(groups)
            fresh = [group for group in groups if group.remote_id not in seen]
            seen.update(group.remote_id for group in fresh)
            if fresh:
                yield fresh
            if not groups or received >= total:
                break
            page_number += 1
        if received != total or len(seen) != total:
            raise self._listing_changed(f"Total is {total} but {received} groups ({len(seen)} distinct) were listed")

    def _listing_changed(self, detail: str) -> ProtocolError:
        return ProtocolError(f"GET /groups: listing changed while paging ({detail}); list again later",
                             provider=self.name, operation="list groups")

    async def _group_page(self, page_number: int) -> tuple[list[RemoteGroup], int]:
        operation = "list groups"
        response = await self._call("GET", "/groups", operation=operation, record=f"page {page_number}",
                                    params={"pageNumber": page_number, "pageSize": GROUPS_PAGE_SIZE})
        body = parse_json(response, provider=self.name, operation=operation, record=f"page {page_number}")
        return self._parse_group_page(body, page_number)

    def _parse_group_page(self, body: Any, page_number: int) -> tuple[list[RemoteGroup], int]:
        def bad(what: str) -> ProtocolError:
            return ProtocolError(f"GET /groups page {page_number}: {what}", provider=self.name,
                                 operation="list groups", record=f"page {page_number}")

        if not isinstance(body, dict):
            raise bad(f"expected a JSON object, got {type(body).__name__}")
        rows, total = body.get("groups"), body.get("Total")
        if not isinstance(rows, list):
            raise bad("'groups' is missing or not a list")
        if isinstance(total, bool) or not isinstance(total, int) or total < 0:
            raise bad(f"'Total' is missing or not a count: {excerpt(repr(total), 40)}")
        return [self._parse_group(row, bad) for row in rows], total

    @staticmethod
    def _parse_group(row: Any, bad: Callable[[str], ProtocolError]) -> RemoteGroup:
        if not isinstance(row, dict):
            raise bad(f"a group is not a JSON object: {excerpt(repr(row), 60)}")
        group_id, name, description = row.get("id_group"), row.get("group_name"), row.get("group_description")
        # Ids are opaque strings; the path tables type them Int, so a number is read as its text.
        if isinstance(group_id, int) and not isinstance(group_id, bool):
            group_id = str(group_id)
        # "." and ".." would address the collection itself once put in /group/{id}.
        if not isinstance(group_id, str) or group_id in ("", ".", ".."):
            raise bad(f"a group has no string 'id_group': {excerpt(repr(row), 80)}")
        if not isinstance(name, str) or not isinstance(description, str):
            raise bad(f"group {group_id}: 'group_name' and 'group_description' must be strings")
        return RemoteGroup(remote_id=group_id, name=name, description=description)

    async def create_group(self, name: str, description: str) -> str:
        """``POST /group``; the new id from ``Location``. Not idempotent: a lost response is UnknownOutcome."""
        response = await self._call("POST", "/group", operation="create group", record=name, idempotent=False,
                                    json_body={"name": name, "description": description})
        locations = response.headers.get_list("location")
        group_id = _group_id_from(locations, self.settings.base_url)
        if group_id is None:
            raise ProtocolError(f"POST /group answered {response.status_code} without a 'Location: /group/{{id}}' "
                                f"header on this server (got {excerpt(', '.join(locations), 80)!r})",
                                provider=self.name, operation="create group", record=name,
                                status=response.status_code)
        return group_id

    async def update_group(self, remote_id: str, name: str, description: str,
                           kept: Mapping[str, Any] = NOTHING_KEPT) -> None:
        """``PUT /group/{id}`` with the new name and description: everything an smsend group has
        (``kept`` is accepted and ignored; smsend groups hold nothing else).
        """
        await self._call("PUT", f"/group/{quote(remote_id, safe='')}", operation="update group", record=remote_id,
                         json_body={"name": name, "description": description})

    async def delete_group(self, remote_id: str) -> None:
        """``DELETE /group/{id}?deletecontacts=false``: the group goes, its contacts stay."""
        await self._delete_group(remote_id, delete_contacts=False)

    async def _delete_group(self, remote_id: str, *, delete_contacts: bool, idempotent: bool = True,
                            operation: str = "delete group") -> None:
        await self._call("DELETE", f"/group/{quote(remote_id, safe='')}", operation=operation, record=remote_id,
                         idempotent=idempotent, params={"deletecontacts": "true" if delete_contacts else "false"})

    # -- contacts: reads ----------------------------------------------------

    def contacts(self, known: MutableMapping[str, str] | None = None) -> AsyncIterator[list[RemoteContact]]:
        """Always Unsupported: smsend documents no way to list contacts."""
        raise Unsupported("smsend's API has no contact listing; its contacts are outbound only",
                          provider=self.name, operation="list contacts")

    # -- opt-outs: the SMS blacklist ----------------------------------------

    async def opt_outs(self, since: datetime | None = None) -> AsyncIterator[list[OptOut]]:
        """The SMS blacklist (``GET /blacklist/sms``), one list per page, in smsend's order.

        ``since`` becomes ``from`` (inclusive, whole seconds) written in UTC
        with ``timezone=UTC``, and ``insertDate`` is read back in UTC (a naive
        ``since`` is taken as UTC). Every page is checked against the shape of
        providers.md 1.2.5 and against the paging it claims; an answer of
        another shape, a ``Total`` that shrinks, pages that do not add up to it
        or that repeat is a ProtocolError naming the endpoint, never an empty
        or partial blacklist read as "nobody else opted out". Exact repeats of
        an entry are yielded once; entries added while paging may show up.
        """
        params: dict[str, Any] = {"timezone": "UTC", "pageSize": BLACKLIST_PAGE_SIZE}
        if since is not None:
            utc = since.astimezone(UTC) if since.tzinfo else since
            params["from"] = utc.strftime(_BLACKLIST_TIME_FORMAT)
        seen: set[OptOut] = set()
        page_number, first_total, total = 1, -1, 0
        while True:
            page = await self._blacklist_page(page_number, params)
            self._check_paging(page, page_number, total)
            total, first_total = page.total, page.total if first_total < 0 else first_total
            fresh = list(dict.fromkeys(entry for entry in page.entries if entry not in seen))
            seen.update(fresh)
            if fresh:
                yield fresh
            if self._last_page(page, page_number):
                break
            if not fresh:  # a full page of repeats: pageNumber is ignored, and the next page would repeat too
                raise self._unreadable(page_number, "a full page repeated entries already listed")
            page_number += 1
        if len(seen) < first_total:
            raise self._unreadable(page_number, f"Total is {first_total} but {len(seen)} distinct entries were listed")

    def _check_paging(self, page: _BlacklistPage, page_number: int, previous_total: int) -> None:
        """What an honest server's page satisfies: entries only come, and a page lies within ``Total``."""
        if page.total < previous_total:
            raise self._unreadable(page_number, f"Total went from {previous_total} to {page.total} while paging")
        if len(page.entries) > page.size or (page_number - 1) * page.size + len(page.entries) > page.total:
            raise self._unreadable(page_number, f"{len(page.entries)} entries on a page of {page.size} "
                                                f"do not fit in Total {page.total}")

    def _last_page(self, page: _BlacklistPage, page_number: int) -> bool:
        """Whether ``page`` ends the listing: a short one (one that ends short of Total is unreadable).

        A full page reaching Total is not taken as the end: a Total that
        understates the list would then hide its last entries, so the next page
        is asked for and must be empty (:meth:`_check_paging` refuses entries past Total).
        """
        end = (page_number - 1) * page.size + len(page.entries)
        if len(page.entries) < page.size:
            if end != page.total:
                raise self._unreadable(page_number, f"the listing ends after {end} entries but Total is {page.total}")
            return True
        return False

    async def _blacklist_page(self, page_number: int, params: Mapping[str, Any]) -> _BlacklistPage:
        """One page as smsend answered it, checked for shape."""
        response = await self._call("GET", "/blacklist/sms", operation="list opt-outs", record=f"page {page_number}",
                                    params={**params, "pageNumber": page_number})
        body = parse_json(response, provider=self.name, operation="list opt-outs", record=f"page {page_number}")
        return self._parse_blacklist_page(body, page_number)

    def _unreadable(self, page_number: int, what: str) -> ProtocolError:
        return ProtocolError(f"{_BLACKLIST_ENDPOINT} page {page_number}: {what}; the blacklist is unreadable, "
                             "so no opt-out was read from it", provider=self.name, operation="list opt-outs",
                             record=f"page {page_number}")

    def _parse_blacklist_page(self, body: Any, page_number: int) -> _BlacklistPage:
        """``{"blacklist": [...], "pageNumber", "pageSize", "Total"}`` checked key by key (providers.md 1.2.5)."""
        if not isinstance(body, dict):
            raise self._unreadable(page_number, f"expected a JSON object, got {type(body).__name__}")
        rows = body.get("blacklist")
        if not isinstance(rows, list):
            raise self._unreadable(page_number, "'blacklist' is missing or not a list")
        answered, page_size, total = (self._count(body, key, page_number) for key in ("pageNumber", "pageSize", "Total"))
        if answered != page_number or page_size < 1:
            raise self._unreadable(page_number, f"it answered page {answered} of size {page_size}")
        return _BlacklistPage([self._parse_opt_out(row, page_number) for row in rows], page_size, total)

    def _count(self, body: Mapping[str, Any], key: str, page_number: int) -> int:
        value = body.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise self._unreadable(page_number, f"'{key}' is missing or not a count: {excerpt(repr(value), 40)}")
        return value

    def _parse_opt_out(self, row: Any, page_number: int) -> OptOut:
        if not isinstance(row, dict):
            raise self._unreadable(page_number, f"an entry is not a JSON object: {excerpt(repr(row), 60)}")
        phone, origin = row.get("phoneNumber"), row.get("origin")
        if not isinstance(phone, str) or not phone.strip() or not isinstance(origin, str) or not origin:
            raise self._unreadable(page_number, f"an entry has no 'phoneNumber' or 'origin': {excerpt(repr(row), 80)}")
        if "insertDate" not in row:
            raise self._unreadable(page_number, f"an entry has no 'insertDate': {excerpt(repr(row), 80)}")
        return OptOut(phone=self._listed_phone(phone), origin=origin, at=self._insert_date(row["insertDate"], page_number))

    def _insert_date(self, value: Any, page_number: int) -> datetime | None:
        """``insertDate`` (UTC, as asked with ``timezone=UTC``); null is "not said", anything else unreadable."""
        if value is None:
            return None
        if isinstance(value, str) and _BLACKLIST_TIME.fullmatch(value):
            try:
                return datetime.strptime(value, _BLACKLIST_TIME_FORMAT).replace(tzinfo=UTC)
            except ValueError:
                pass
        raise self._unreadable(page_number, f"'insertDate' is not 'yyyy-MM-dd HH:mm:ss': {excerpt(repr(value), 40)}")

    def _listed_phone(self, raw: str) -> str:
        """A listed number in E.164 (the blacklist writes ``+…`` or ``00…``); the raw text when it does not parse."""
        text = raw.strip()
        if _E164.fullmatch(text):
            return text
        try:
            return to_e164("+" + text[2:] if text.startswith("00") else text, self.default_region)
        except InvalidPhone:
            return raw

    async def change_members(self, group_remote_id: str, add: Sequence[str], remove: Sequence[str]) -> MembershipOutcome:
        """Unsupported: memberships travel in the contact upsert (``groupIds``)."""
        raise Unsupported("smsend memberships are written with the contact upsert (capabilities.member_changes "
                          "is False)", provider=self.name, operation="change members", record=group_remote_id)

    # -- contacts: writes ---------------------------------------------------

    async def create_contacts(self, writes: Sequence[ContactWrite]) -> list[WriteOutcome]:
        """Upsert ``writes`` (see :meth:`update_contacts`)."""
        return await self._write_contacts(writes, operation="create contact")

    async def update_contacts(self, writes: Sequence[ContactWrite]) -> list[WriteOutcome]:
        """Upsert ``writes`` by number; blacklist the opted-out.

        A write is added to its ``groups`` and keeps the groups and campaigns
        it has at smsend (``keepExistingGroupsAndCampaigns: true``), unless it
        says ``replace_groups``: then its groups become exactly ``groups``, and
        its campaign subscriptions go (the one documented way out of a group;
        see the module docstring). The two kinds go in separate batches.

        Invalid contacts are rejected before sending (one bad contact would sink
        its whole all-or-nothing batch); a batch smsend still refuses is split
        in halves until each refused contact stands alone with smsend's reason.
        """
        return await self._write_contacts(writes, operation="update contact")

    async def _write_contacts(self, writes: Sequence[ContactWrite], *, operation: str) -> list[WriteOutcome]:
        outcomes: dict[int, WriteOutcome] = {}
        items = []
        for index, write in enumerate(writes):
            try:
                items.append(self._item(index, write, operation))
            except Rejected as error:
                outcomes[index] = WriteOutcome(write.ref, error=error)
        adding = [item for item in items if not item.replace_groups]
        replacing = [item for item in items if item.replace_groups]
        await self._upsert_all(adding, outcomes, keep_groups=True, operation=operation, note="upserted by number")
        await self._upsert_all(replacing, outcomes, keep_groups=False, operation=operation,
                               note="upserted by number, groups replaced (campaign subscriptions dropped)")
        await self._blacklist_all([i for i in items if i.opted_out and outcomes[i.index].ok], outcomes)
        return _in_order(outcomes, len(writes))

    def _phone(self, raw: str, ref: int | str, operation: str) -> str:
        """``raw`` in E.164, or Rejected naming the value.

        Canonical numbers are already E.164 (made by ``to_e164``); parsing them
        again would cost most of a 100,000-contact push, so that shape is taken
        as is and only other spellings are parsed.
        """
        if _E164.fullmatch(raw):
            return raw
        try:
            return to_e164(raw, self.default_region)
        except InvalidPhone as exc:
            raise Rejected(str(exc), field="phoneNumber", provider=self.name, operation=operation,
                           record=raw or f"contact {ref}") from None

    def _item(self, index: int, write: ContactWrite, operation: str) -> _Item:
        phone = self._phone(write.phone, write.ref, operation)
        body = {name: _text(write.fields.get(name)) for name in CONTACT_FIELDS}
        body["phoneNumber"] = phone
        problems = validate_contact(body)
        if problems:
            reason = "; ".join(f"{field}: {problem}" for field, problem in problems)
            raise Rejected(reason, field=problems[0][0], provider=self.name, operation=operation, record=phone)
        return _Item(index, write.ref, phone, body, tuple(sorted(write.groups)), write.opted_out, write.replace_groups)

    async def _upsert_all(self, items: Sequence[_Item], outcomes: dict[int, WriteOutcome], *,
                          keep_groups: bool, operation: str, note: str) -> None:
        """Upsert ``items`` in concurrent batches, filling one outcome per item."""
        batches = [items[i:i + self.batch_size] for i in range(0, len(items), self.batch_size)]
        await asyncio.gather(*(self._upsert_batch(b, outcomes, keep_groups=keep_groups, operation=operation,
                                                  note=note) for b in batches))
        _raise_account_error(outcomes.values())

    async def _upsert_batch(self, batch: Sequence[_Item], outcomes: dict[int, WriteOutcome], *,
                            keep_groups: bool, operation: str, note: str) -> None:
        body = {
            "contacts": [dict(item.body, groupIds=list(item.groups)) for item in batch],
            "updateExistingContact": True,
            "keepExistingGroupsAndCampaigns": keep_groups,
        }
        record = batch[0].phone if len(batch) == 1 else f"batch of {len(batch)} from {batch[0].phone}"
        try:
            await self._call("POST", "/contact", operation=operation, record=record, json_body=body)
        except Rejected as error:
            if len(batch) > 1:
                await self._bisect(batch, outcomes, keep_groups=keep_groups, operation=operation, note=note)
                return
            outcomes[batch[0].index] = WriteOutcome(batch[0].ref, error=error)
            return
        except ProviderError as error:
            for item in batch:
                outcomes[item.index] = WriteOutcome(item.ref, error=error)
            return
        for item in batch:
            outcomes[item.index] = WriteOutcome(item.ref, remote_id=item.phone, note=note)

    async def _bisect(self, batch: Sequence[_Item], outcomes: dict[int, WriteOutcome], **kw: Any) -> None:
        """Send each half of a refused batch on its own, so only the refused contacts fail."""
        middle = len(batch) // 2
        log.info("smsend.upsert_bisect", provider=self.name, size=len(batch))
        await asyncio.gather(self._upsert_batch(batch[:middle], outcomes, **kw),
                             self._upsert_batch(batch[middle:], outcomes, **kw))

    async def _blacklist_all(self, items: Sequence[_Item], outcomes: dict[int, WriteOutcome]) -> None:
        await asyncio.gather(*(self._blacklist(item, outcomes) for item in items))
        _raise_account_error(outcomes.values())

    async def _blacklist(self, item: _Item, outcomes: dict[int, WriteOutcome]) -> None:
        """``POST /contacts/add_to_blacklist?phoneNumber=`` (idempotent) after a successful upsert."""
        try:
            await self._call("POST", "/contacts/add_to_blacklist", operation="blacklist contact",
                             record=item.phone, params={"phoneNumber": item.phone})
        except ProviderError as error:
            outcomes[item.index] = WriteOutcome(item.ref, remote_id=item.phone, error=error)
            return
        done = outcomes[item.index]
        outcomes[item.index] = WriteOutcome(item.ref, remote_id=item.phone, note=f"{done.note}; blacklisted")

    async def delete_contacts(self, writes: Sequence[ContactWrite]) -> list[WriteOutcome]:
        """Delete contacts through a temporary group deleted with ``deletecontacts=true``.

        Stale temporary groups of an interrupted earlier deletion are removed
        first, without their contacts (those may have changed since; the engine
        plans their deletion again). Calls are serialised so that clean-up never
        removes the temporary group of a deletion still in progress.
        """
        if not writes:
            return []
        async with self._delete_lock:
            existing = await self._remove_stale_temp_groups()
            return await self._delete_through_temp_group(writes, existing)

    async def _delete_through_temp_group(self, writes: Sequence[ContactWrite],
                                         existing: frozenset[str] = frozenset()) -> list[WriteOutcome]:
        """Upsert the contacts into a new temporary group, then delete it ``deletecontacts=true``.

        ``existing`` are the ids of the groups listed just before: a "new" group
        with one of those ids is refused. Refused credentials and a spent quota
        are raised; any other failure is every affected contact's outcome.
        """
        outcomes: dict[int, WriteOutcome] = {}
        items = self._deletion_items(writes, outcomes)
        if not items:
            return _in_order(outcomes, len(writes))
        try:
            temp = await self._new_temp_group(existing)
        except (AuthError, QuotaExhausted):
            raise
        except ProviderError as error:
            return _fail_all(outcomes, items, error, len(writes))
        items = [replace(item, groups=(temp,)) for item in items]
        await self._upsert_all(items, outcomes, keep_groups=True, operation=_DELETE_CONTACT, note="")
        moved = [item for item in items if outcomes[item.index].ok]
        try:
            await self._delete_temp_group(temp, with_contacts=bool(moved))
        except (AuthError, QuotaExhausted):
            raise
        except ProviderError as error:
            return _fail_all(outcomes, moved, error, len(writes))
        note = f"deleted through temporary group {temp}"
        for item in moved:
            outcomes[item.index] = WriteOutcome(item.ref, remote_id=item.phone, note=note)
        log.info("smsend.deleted_contacts", provider=self.name, count=len(moved), temp_group=temp)
        return _in_order(outcomes, len(writes))

    def _deletion_items(self, writes: Sequence[ContactWrite], outcomes: dict[int, WriteOutcome]) -> list[_Item]:
        """The contacts to delete, by number; one whose number does not parse is Rejected in ``outcomes``."""
        items = []
        for index, write in enumerate(writes):
            try:
                phone = self._phone(write.remote_id or write.phone, write.ref, _DELETE_CONTACT)
            except Rejected as error:
                outcomes[index] = WriteOutcome(write.ref, error=error)
                continue
            items.append(_Item(index, write.ref, phone, {"phoneNumber": phone}, ()))
        return items

    async def _new_temp_group(self, existing: frozenset[str]) -> str:
        """Create a temporary group; its id, or ProtocolError when that id is one of the ``existing`` groups."""
        temp = await self.create_group(f"{TEMP_GROUP_PREFIX}{uuid.uuid4().hex[:12]}",
                                       "syncd: contacts being deleted; safe to delete without its contacts")
        if temp in existing:
            # Deleting it with deletecontacts=true would wipe a real group's contacts: a replayed or lying answer.
            raise ProtocolError(f"POST /group answered the id of the existing group {temp} for the temporary group; "
                                "no contact deleted", provider=self.name, operation=_DELETE_CONTACT, record=temp)
        return temp

    async def _delete_temp_group(self, temp: str, *, with_contacts: bool) -> None:
        """Delete the temporary group; a lost response is settled by looking for the group."""
        operation = "delete temporary group"
        try:
            await self._delete_group(temp, delete_contacts=with_contacts, idempotent=False, operation=operation)
        except UnknownOutcome:
            if await self._group_exists(temp):
                await self._delete_group(temp, delete_contacts=with_contacts, operation=operation)

    async def _group_exists(self, remote_id: str) -> bool:
        async for page in self._all_group_pages():
            if any(group.remote_id == remote_id for group in page):
                return True
        return False

    async def _remove_stale_temp_groups(self) -> frozenset[str]:
        """Delete leftover ``syncd-delete-`` groups, keeping their contacts; failures only logged.

        Answers the ids of the groups listed (none if the listing failed).
        """
        listed: list[RemoteGroup] = []
        try:
            listed = [group async for page in self._all_group_pages() for group in page]
            stale = [group.remote_id for group in listed if group.name.startswith(TEMP_GROUP_PREFIX)]
            for remote_id in stale:
                await self._delete_group(remote_id, delete_contacts=False, operation="remove stale temporary group")
                log.warning("smsend.stale_temp_group_removed", provider=self.name, group=remote_id)
        except (AuthError, QuotaExhausted):
            raise
        except ProviderError as error:
            log.warning("smsend.stale_temp_group_cleanup_failed", provider=self.name, error=str(error))
        return frozenset(group.remote_id for group in listed)


def _group_id_from(locations: Sequence[str], base_url: str) -> str | None:
    """The group id of a create's one ``Location: /group/{id}``; None for anything else.

    The id is used in later paths, including the deletion of a temporary group
    *with its contacts*: several Locations, one naming another host, or an id
    that is a dot segment or holds a slash or control character are refused.
    """
    if len(locations) != 1:
        return None
    try:
        parts, base = urlsplit(locations[0].strip()), urlsplit(base_url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None
    if parts.netloc and (parts.netloc.lower() != base.netloc.lower() or parts.scheme not in ("", base.scheme)):
        return None
    match = _GROUP_LOCATION.search(parts.path)
    group_id = unquote(match.group(1)) if match else ""
    if group_id in ("", ".", "..") or any(c == "/" or not c.isprintable() for c in group_id):
        return None
    return group_id


def _raise_account_error(outcomes: Iterable[WriteOutcome]) -> None:
    """Refused credentials concern the whole account: raise instead of reporting per contact."""
    for outcome in outcomes:
        if isinstance(outcome.error, (AuthError, QuotaExhausted)):
            raise outcome.error


def _fail_all(outcomes: dict[int, WriteOutcome], items: Iterable[_Item], error: Exception,
              count: int) -> list[WriteOutcome]:
    for item in items:
        outcomes[item.index] = WriteOutcome(item.ref, error=error)
    return _in_order(outcomes, count)


def _in_order(outcomes: Mapping[int, WriteOutcome], count: int) -> list[WriteOutcome]:
    return [outcomes[index] for index in range(count)]
