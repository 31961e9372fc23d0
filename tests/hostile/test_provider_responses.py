"""Hostile provider responses (issue 7): every client call ends in correct data or a precise ProviderError.

Real responses recorded from the simulators (``recording``) are mutated —
broken syntax, wrong types, missing and extra keys, nulls, 1 MB strings,
10,000-level nesting, invalid UTF-8, numbers that are not phone numbers, lying
paging, bad ``Location`` headers — and served to the real clients through
``httpx.MockTransport``. Each call must either answer correctly normalised
data or raise a :class:`~syncd.errors.ProviderError` naming the provider and
the endpoint; never any other exception, and never a partial listing passed
off as complete. One engine-level test then shows a malformed SendHub pull
failing that provider without deleting anything anywhere.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import traceback
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncd.errors import ProtocolError, ProviderError
from syncd.model import ContactWrite, OptOut, RemoteContact, RemoteGroup
from syncd.providers import build_provider
from syncd.providers.base import MembershipOutcome
from syncd.providers.http import RetryPolicy
from tests.e2e.conftest import World
from tests.hostile.conftest import (
    PAGE,
    PAGES_BEFORE_ERROR,
    SENDHUB_BASE,
    SMSEND_BASE,
    Recording,
    Replay,
    Reply,
    note_tried,
    sendhub_settings,
    smsend_settings,
)

#: No waiting: nothing here is transient, and a retry would only hide a wrong mapping.
NO_WAIT = RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0, budget=5.0)
#: Examples per property: enough to cover every category many times, bounded for a 2-core machine;
#: a profile asking for more (HYPOTHESIS_PROFILE=ci) gets more.
EXAMPLES = max(120, settings.default.max_examples)
HOSTILE = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                                 HealthCheck.data_too_large])

# -- JSON surgery -----------------------------------------------------------------

JsonPath = tuple[str | int, ...]


def json_paths(doc: Any) -> list[JsonPath]:
    """Every path into ``doc`` (the root included), depth first, without recursion."""
    found, stack = [], [((), doc)]
    while stack:
        path, value = stack.pop()
        found.append(path)
        children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        stack.extend((path + (key,), child) for key, child in reversed(list(children)))
    return found


def set_at(doc: Any, path: JsonPath, value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(doc)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return out


def delete_at(doc: Any, path: JsonPath) -> Any:
    out = copy.deepcopy(doc)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return out


_MARK = "\x00hostile-raw\x00"


def render(doc: Any, raw: bytes | None = None) -> bytes:
    """``doc`` as JSON bytes; the string ``_MARK`` inside is replaced by ``raw`` verbatim.

    Raw splicing builds bodies that ``json.dumps`` could not (10,000 levels of
    nesting, invalid UTF-8 inside a string) without recursing in the test.
    """
    body = json.dumps(doc).encode()
    return body if raw is None else body.replace(json.dumps(_MARK).encode(), raw)


# -- what a hostile provider says -----------------------------------------------------

WRONG_TYPES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from([{"id": 1}, [{"id": 1}], "", "0", "true", "null", [], {}]),
)
NOT_PHONES = st.one_of(
    st.sampled_from(["", " ", "abc", "+", "+1", "123", "0000000000", "+1 (000) 000-0000", "650-253-ABCD",
                     "１２３４５６７８９０", "+999999999999999999999", "1" * 65, "+39 347 123 4567", "\u202e6502531234",
                     "6502531234\x00", "+1650253123", "+165025312345", "tel:+16502531234", "١٢٣٤٥٦٧٨٩٠"]),
    st.text(max_size=24), st.integers(-(10**20), 10**20), st.floats(), st.none(), st.booleans(),
)
ODD_TEXT = st.sampled_from(["\ud800", "a\udfffb", "\x00", "\u202eevil\u202c", "🎉" * 20, "Ζωή", "שלום",
                            "'; DROP TABLE contacts; --", "=cmd|' /C calc'!A0", "\r\n\r\nX-Injected: 1", "\ufeff"])
INVALID_UTF8 = st.sampled_from([b'"\xff\xfe"', b'"caf\xe9"', b'"\xed\xa0\x80"', b'"\xc0\xaf"', b'"a\x80b"',
                                b'"\xf8\x88\x80\x80\x80"'])
DEPTHS = st.one_of(st.sampled_from([50, 500, 900, 950, 990, 999, 1000, 1001, 2000, 10_000]),
                   st.integers(1, 10_000))
HTML_PAGE = (b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
             b"<body><h1>Bad Gateway</h1><p>The proxy received an invalid response.</p></body></html>")


def deep(depth: int, kind: str) -> bytes:
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def _json_doc(reply: Reply) -> Any:
    try:
        return reply.json()
    except ValueError:
        return None


def _syntax(data: st.DataObject, reply: Reply) -> tuple[str, Reply]:
    kind = data.draw(st.sampled_from(["truncated", "garbage", "empty", "scalar", "html200", "204", "gzip",
                                      "bom", "trailing"]))
    json_type = {b"content-type": b"application/json"}
    if kind == "truncated" and len(reply.body) > 1:
        return "syntax: truncated", reply.with_body(reply.body[: data.draw(st.integers(0, len(reply.body) - 1))])
    if kind == "garbage":
        return "syntax: garbage bytes", reply.with_body(data.draw(st.binary(max_size=200)))
    if kind == "scalar":
        body = data.draw(st.sampled_from([b"null", b"[]", b"{}", b'"ok"', b"1", b"true", b"NaN", b"-Infinity"]))
        return "syntax: other JSON value", reply.with_body(body, headers=json_type)
    if kind == "html200":
        return "syntax: HTML page, status 200", reply.with_body(HTML_PAGE, status=200,
                                                               headers={b"content-type": b"text/html"})
    if kind == "204":
        return "syntax: 204 without body", Reply(204, (), b"")
    if kind == "gzip":
        body = data.draw(st.sampled_from([reply.body, b"\x1f\x8b\x08\x00garbage", b"\x00" * 16]))
        return "syntax: gzip-declared garbage", reply.with_body(body, headers={b"content-encoding": b"gzip"})
    if kind == "bom":
        return "syntax: UTF-8 BOM", reply.with_body(b"\xef\xbb\xbf" + reply.body)
    if kind == "trailing":
        return "syntax: trailing data", reply.with_body(reply.body + data.draw(st.sampled_from([b"x", b"{}", b"\x00"])))
    return "syntax: empty body", reply.with_body(b"")


def _structural(data: st.DataObject, reply: Reply, doc: Any) -> tuple[str, Reply]:
    """One change at one place of a JSON document: type, key, null, size, depth, text or number."""
    paths = json_paths(doc)
    kind = data.draw(st.sampled_from(["wrong type", "missing key", "extra key", "null", "huge string", "deep nesting",
                                      "odd text", "invalid UTF-8", "not a phone number"]))
    path = data.draw(st.sampled_from(paths))
    if kind == "missing key":
        keyed = [p for p in paths if p]
        if keyed:
            return "missing key/item", reply.with_body(render(delete_at(doc, data.draw(st.sampled_from(keyed)))))
        kind = "wrong type"
    if kind == "extra key":
        objects = [p for p in paths if isinstance(_get(doc, p), dict)]
        if objects:
            where = data.draw(st.sampled_from(objects))
            key = data.draw(st.one_of(st.text(max_size=10), st.sampled_from(["id", "__proto__", "name", "meta"])))
            updated = dict(_get(doc, where)) | {key: data.draw(WRONG_TYPES)}
            return "extra key", reply.with_body(render(set_at(doc, where, updated)))
        kind = "wrong type"
    if kind == "null":
        return "null", reply.with_body(render(set_at(doc, path, None)))
    if kind == "huge string":
        size = data.draw(st.sampled_from([1_000_000, 1_048_577]))
        text = data.draw(st.sampled_from(["x", "é", "🎉", "6"])) * (size // 4)
        return "huge string (1 MB)", reply.with_body(render(set_at(doc, path, text)))
    if kind == "deep nesting":
        raw = deep(data.draw(DEPTHS), data.draw(st.sampled_from(["list", "dict"])))
        return "deep nesting", reply.with_body(render(set_at(doc, path, _MARK), raw))
    if kind == "odd text":
        return "odd text (surrogates, NUL, RTL)", reply.with_body(render(set_at(doc, path, data.draw(ODD_TEXT))))
    if kind == "invalid UTF-8":
        return "invalid UTF-8", reply.with_body(render(set_at(doc, path, _MARK), data.draw(INVALID_UTF8)))
    if kind == "not a phone number":
        numbers = [p for p in paths if p and p[-1] in ("number", "phoneNumber")]
        if numbers:
            return "not a phone number", reply.with_body(render(set_at(doc, data.draw(st.sampled_from(numbers)),
                                                                       data.draw(NOT_PHONES))))
    return "wrong type", reply.with_body(render(set_at(doc, path, data.draw(WRONG_TYPES))))


def _get(doc: Any, path: JsonPath) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def mutate(data: st.DataObject, reply: Reply) -> tuple[str, Reply]:
    """A hostile variant of ``reply`` and its category."""
    doc = _json_doc(reply)
    if doc is not None and data.draw(st.integers(0, 3)) > 0:
        return _structural(data, reply, doc)
    return _syntax(data, reply)


# -- running a client against a replay ---------------------------------------------------


@dataclass
class Result:
    value: Any = None
    error: BaseException | None = None
    pages: int = 0


def run(recording: Recording, kind: str, replay: Replay | Listing, call: Callable[[Any, Result], Awaitable[Any]],
        **settings_overrides: Any) -> Result:
    """``call(provider, result)`` on a fresh client whose transport is ``replay``; any exception is caught."""
    make = sendhub_settings if kind == "sendhub" else smsend_settings

    async def main() -> Result:
        provider = build_provider(make(recording, **settings_overrides), default_region="US",
                                  transport=replay.transport(), retry=NO_WAIT)
        result = Result()
        try:
            result.value = await call(provider, result)
        except Exception as exc:  # the property under test: which exceptions escape
            result.error = exc
        finally:
            await provider.aclose()
        return result

    return asyncio.run(main())


async def drain(listing: Any, result: Result) -> list[Any]:
    """Every page of a listing, counting the pages received before any error."""
    pages = []
    async for page in listing:
        pages.append(page)
        result.pages += 1
    return pages


def assert_provider_error(error: BaseException, *, provider: str, endpoint: str, secrets: tuple[str, ...]) -> None:
    """``error`` is a ProviderError naming ``provider`` and ``endpoint``, quoting no secret."""
    shown = "".join(traceback.format_exception(error))
    assert isinstance(error, ProviderError), f"escaped as {type(error).__name__}:\n{shown}"
    text = str(error)
    assert_text(text)  # it goes to the change log and the logs
    assert provider in text, text
    if isinstance(error, ProtocolError):
        assert endpoint in text, f"{endpoint!r} not named in {text!r}"
    else:
        assert endpoint in text or error.operation in text, text
    for secret in secrets:
        assert secret not in text and f"={secret[:4]}" not in text, f"secret quoted in {text!r}"


def assert_text(value: Any) -> None:
    """``value`` is a str the database can store: UTF-8 encodable (no lone surrogate)."""
    assert isinstance(value, str), repr(value)[:80]
    value.encode("utf-8")


def assert_contact(contact: Any) -> None:
    assert isinstance(contact, RemoteContact)
    assert isinstance(contact.remote_id, str) and contact.remote_id.isascii() and contact.remote_id.isdigit()
    assert_text(contact.phone)
    for key, value in contact.fields.items():
        assert_text(key)
        assert_text(value)
    assert all(isinstance(g, str) and g for g in contact.groups)
    assert isinstance(contact.opted_out, bool)
    assert contact.modified_at is None or (isinstance(contact.modified_at, datetime) and contact.modified_at.tzinfo)


def assert_group(group: Any) -> None:
    assert isinstance(group, RemoteGroup)
    assert isinstance(group.remote_id, str) and group.remote_id
    assert_text(group.name)
    assert_text(group.description)


def assert_opt_out(opt_out: Any) -> None:
    assert isinstance(opt_out, OptOut)
    assert_text(opt_out.phone)
    assert_text(opt_out.origin)
    assert opt_out.origin
    assert opt_out.at is None or (isinstance(opt_out.at, datetime) and opt_out.at.tzinfo is not None)


def assert_complete_listing(pages: list[list[Any]], original_ids: list[str], check: Callable[[Any], None]) -> None:
    """A listing that ended without error holds every record once: as many as the provider has, at most one changed."""
    items = [item for page in pages for item in page]
    for item in items:
        check(item)
    ids = [item.remote_id for item in items]
    assert len(ids) == len(set(ids)), f"duplicate ids yielded: {ids}"
    assert len(ids) == len(original_ids), f"a listing of {len(original_ids)} ended with {len(ids)} and no error"
    assert len(set(ids) & set(original_ids)) >= len(original_ids) - 1, (ids, original_ids)


# -- targets: one client call and the responses it meets ---------------------------------------


def _ids(pages: list[Reply], objects: str, key: str) -> list[str]:
    return [str(obj[key]) for page in pages for obj in page.json()[objects]]


@dataclass(frozen=True)
class Target:
    """A client operation, the replies it needs, which one is mutated, and what a success must look like."""

    name: str
    kind: str  # sendhub | smsend
    endpoint: str  # what an error must name
    routes: Callable[[Recording], dict[tuple[str, str], list[Reply]]]
    mutated: tuple[str, str]  # the route whose replies get mutated
    call: Callable[..., Awaitable[Any]]
    check: Callable[[Any, Recording, Replay], None]
    pages: int = 1  # replies of the mutated route the call uses (one of them is mutated)
    overrides: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name


def _sendhub_contacts_ok(pages: Any, rec: Recording, replay: Replay) -> None:
    assert_complete_listing(pages, _ids(rec.sendhub_contact_pages, "objects", "id"), assert_contact)


def _sendhub_groups_ok(pages: Any, rec: Recording, replay: Replay) -> None:
    assert_complete_listing(pages, _ids(rec.sendhub_group_pages, "objects", "id"), assert_group)


def _smsend_groups_ok(pages: Any, rec: Recording, replay: Replay) -> None:
    assert_complete_listing(pages, _ids(rec.smsend_group_pages, "groups", "id_group"), assert_group)


def _smsend_opt_outs_ok(pages: Any, rec: Recording, replay: Replay) -> None:
    """Every entry, each once, at most one of them changed; never fewer than the blacklist holds.

    The one exception cannot be told from the truth: a first page whose ``Total``
    says it holds all there is (what a server with that few entries answers).
    """
    items = [entry for page in pages for entry in page]
    for entry in items:
        assert_opt_out(entry)
    original = [e["phoneNumber"] for page in rec.smsend_blacklist_pages for e in page.json()["blacklist"]]
    first = _json_doc(replay.routes[SM_BLACKLIST][0])
    if isinstance(first, dict) and first.get("Total") == len(items) < len(original):
        assert [entry.phone for entry in items] == original[: len(items)]
        return
    assert len(items) == len(original), f"a blacklist of {len(original)} read as {len(items)} and no error"
    assert len({entry.phone for entry in items} & set(original)) >= len(original) - 1, (items, original)


def _outcomes_ok(provider: str, endpoint: str, secrets: Callable[[Recording], tuple[str, ...]]):
    def check(outcomes: Any, rec: Recording, replay: Replay) -> None:
        assert isinstance(outcomes, list) and len(outcomes) == 1
        for outcome in outcomes:
            if outcome.ok:
                assert isinstance(outcome.remote_id, str) and outcome.remote_id, outcome
            else:
                assert_provider_error(outcome.error, provider=provider, endpoint=endpoint, secrets=secrets(rec))
    return check


def _sendhub_secrets(rec: Recording) -> tuple[str, ...]:
    return (rec.sendhub_credentials["api_key"],)


def _smsend_secrets(rec: Recording) -> tuple[str, ...]:
    return (rec.smsend_credentials["access_token"], rec.smsend_credentials["password"])


def _group_id_ok(value: Any, rec: Recording, replay: Replay) -> None:
    assert isinstance(value, str) and value and value not in (".", ".."), repr(value)


def _members_ok(value: Any, rec: Recording, replay: Replay) -> None:
    assert isinstance(value, MembershipOutcome)
    assert value.added <= {"11"} and value.removed == frozenset()
    assert set(value.errors) <= {"11"} and "11" in value.added | set(value.errors)
    for error in value.errors.values():
        assert_provider_error(error, provider="hostile-sendhub", endpoint="/groups/", secrets=_sendhub_secrets(rec))


def _no_check(value: Any, rec: Recording, replay: Replay) -> None:
    pass


ANN = ContactWrite(ref=1, phone="+14155550123", fields={"number": "+14155550123", "name": "Ann Lee"})
LISTED = r"/contacts/"
SH_CONTACTS, SH_GROUPS = ("GET", r"/contacts/"), ("GET", r"/groups/")
SH_CREATE, SH_CREATE_GROUP = ("POST", r"/contacts/"), ("POST", r"/groups/")
SM_GROUPS, SM_CREATE_GROUP, SM_LOGIN = ("GET", r"/groups"), ("POST", r"/group"), ("GET", r"/login")
SM_BLACKLIST = ("GET", r"/blacklist/sms")

TARGETS = [
    Target("sendhub list contacts", "sendhub", "/contacts/",
           lambda r: {SH_CONTACTS: r.sendhub_contact_pages}, SH_CONTACTS,
           lambda p, res: drain(p.contacts(), res), _sendhub_contacts_ok, pages=3),
    Target("sendhub list groups", "sendhub", "/groups/",
           lambda r: {SH_GROUPS: r.sendhub_group_pages}, SH_GROUPS,
           lambda p, res: drain(p.groups(), res), _sendhub_groups_ok, pages=2),
    Target("sendhub create contact", "sendhub", "/contacts/",
           lambda r: {SH_CREATE: [r.sendhub_created_contact]}, SH_CREATE,
           lambda p, res: p.create_contacts([ANN]), _outcomes_ok("hostile-sendhub", "/contacts/", _sendhub_secrets)),
    Target("sendhub create contact: 400 duplicate body", "sendhub", "/contacts/",
           lambda r: {SH_CREATE: [r.sendhub_duplicate_number], SH_CONTACTS: [r.sendhub_found_contact]}, SH_CREATE,
           lambda p, res: p.create_contacts([ANN]), _outcomes_ok("hostile-sendhub", "/contacts/", _sendhub_secrets)),
    Target("sendhub create contact: duplicate lookup", "sendhub", "/contacts/",
           lambda r: {SH_CREATE: [r.sendhub_duplicate_number], SH_CONTACTS: [r.sendhub_found_contact]}, SH_CONTACTS,
           lambda p, res: p.create_contacts([ANN]), _outcomes_ok("hostile-sendhub", "/contacts/", _sendhub_secrets)),
    Target("sendhub update contact", "sendhub", "/contacts/",
           lambda r: {("PUT", r"/contacts/\d+/"): [r.sendhub_updated_contact]}, ("PUT", r"/contacts/\d+/"),
           lambda p, res: p.update_contacts([ContactWrite(1, ANN.phone, ANN.fields, remote_id="5")]),
           _outcomes_ok("hostile-sendhub", "/contacts/", _sendhub_secrets)),
    Target("sendhub create group", "sendhub", "/groups/",
           lambda r: {SH_CREATE_GROUP: [r.sendhub_created_group]}, SH_CREATE_GROUP,
           lambda p, res: p.create_group("Hostile", ""), _group_id_ok),
    Target("sendhub create group: 400 duplicate body", "sendhub", "/groups/",
           lambda r: {SH_CREATE_GROUP: [r.sendhub_duplicate_group], SH_GROUPS: r.sendhub_group_pages},
           SH_CREATE_GROUP, lambda p, res: p.create_group("Hostile", ""), _group_id_ok),
    Target("sendhub change members", "sendhub", "/groups/",
           lambda r: {("POST", r"/groups/\d+/contacts/"): [r.sendhub_members]}, ("POST", r"/groups/\d+/contacts/"),
           lambda p, res: p.change_members("7", ["11"], []), _members_ok),
    Target("smsend list groups", "smsend", "/groups",
           lambda r: {SM_GROUPS: r.smsend_group_pages}, SM_GROUPS,
           lambda p, res: drain(p.groups(), res), _smsend_groups_ok, pages=2),
    Target("smsend login", "smsend", "/login",
           lambda r: {SM_LOGIN: [r.smsend_login], SM_GROUPS: r.smsend_group_pages}, SM_LOGIN,
           lambda p, res: drain(p.groups(), res), _smsend_groups_ok, overrides={"login": True}),
    Target("smsend create group", "smsend", "/group",
           lambda r: {SM_CREATE_GROUP: [r.smsend_created_group]}, SM_CREATE_GROUP,
           lambda p, res: p.create_group("Hostile", "d"), _group_id_ok),
    Target("smsend upsert contacts", "smsend", "/contact",
           lambda r: {("POST", r"/contact"): [r.smsend_upserted]}, ("POST", r"/contact"),
           lambda p, res: p.update_contacts([ContactWrite(1, ANN.phone, {"name": "Ann"})]),
           _outcomes_ok("hostile-smsend", "/contact", _smsend_secrets)),
    Target("smsend list opt-outs", "smsend", "/blacklist/sms",
           lambda r: {SM_BLACKLIST: r.smsend_blacklist_pages}, SM_BLACKLIST,
           lambda p, res: drain(p.opt_outs(), res), _smsend_opt_outs_ok, pages=3),
]


def _replay(target: Target, recording: Recording, index: int, reply: Reply) -> Replay:
    routes = {route: list(replies) for route, replies in target.routes(recording).items()}
    routes[target.mutated][index] = reply
    base = SENDHUB_BASE if target.kind == "sendhub" else SMSEND_BASE
    return Replay(base_path=httpx.URL(base).path, routes=routes)


def serve_mutated(recording: Recording, target: Target, index: int, category: str, reply: Reply) -> None:
    """Serve ``reply`` as reply ``index`` of the target's mutated route and check what the call made of it."""
    replay = _replay(target, recording, index, reply)
    result = run(recording, target.kind, replay, target.call, **target.overrides)
    if replay.served[target.mutated] > index:
        note_tried(category, reply)
    secrets = _sendhub_secrets(recording) if target.kind == "sendhub" else _smsend_secrets(recording)
    if result.error is not None:
        assert_provider_error(result.error, provider=f"hostile-{target.kind}", endpoint=target.endpoint,
                              secrets=secrets)
        if target.pages > 1:
            PAGES_BEFORE_ERROR[target.name][result.pages] += 1
    else:
        target.check(result.value, recording, replay)


@pytest.mark.parametrize("target", TARGETS, ids=str)
@HOSTILE
@given(data=st.data())
def test_a_mutated_response_gives_correct_data_or_a_provider_error(recording: Recording, target: Target,
                                                                   data: st.DataObject) -> None:
    index = data.draw(st.integers(0, target.pages - 1), label="mutated reply")
    category, reply = mutate(data, target.routes(recording)[target.mutated][index])
    serve_mutated(recording, target, index, category, reply)


#: One value of every JSON type (and a 4,000-digit number), for the exhaustive sweep below.
EVERY_TYPE = [None, True, False, 0, -1, 1.5, 10**4000, "", "x", [], [1], {}, {"id": 1}]
JSON_TARGETS = [t for t in TARGETS if not t.name.startswith(("smsend login", "smsend create", "smsend upsert",
                                                               "sendhub update"))]


@pytest.mark.parametrize("target", JSON_TARGETS, ids=str)
def test_every_field_of_a_real_response_with_every_type_or_missing(recording: Recording, target: Target) -> None:
    """Not sampled: each place of the first reply gets each type in turn, and is deleted."""
    original = target.routes(recording)[target.mutated][0]
    doc = original.json()
    failures: list[str] = []
    for path in json_paths(doc):
        variants = [("wrong type (sweep)", set_at(doc, path, value)) for value in EVERY_TYPE]
        variants += [("missing key/item (sweep)", delete_at(doc, path))] if path else []
        for category, mutated in variants:
            try:
                serve_mutated(recording, target, 0, category, original.with_body(render(mutated)))
            except AssertionError as failure:
                failures.append(f"{path}: {str(failure)[:300]}")
    assert not failures, f"{len(failures)} failures, first ones:\n" + "\n".join(failures[:5])


# -- Location headers ----------------------------------------------------------------

LOCATIONS = st.one_of(
    st.sampled_from([
        None, "", "not a url", "/group/", "/group", "/groups/123", "group", "/group/a/b", "//", "http://[::1",
        "/group/%", "/group/%ZZ", "/group/..", "/group/.", "/group/%2e%2e", "/group/a%2Fb", " /group/g5 ",
        "/group/g5?x=1", "/group/g5#frag", "/group/g5%00", "/group/" + "a" * 10_000, "https://evil.example/group/g5",
        "//evil.example/group/g5", "http://smsend.invalid/API/v1.0/REST/group/g5", "ftp://smsend.invalid/group/g5",
        "HTTP://SMSEND.INVALID/group/g5", "javascript:alert(1)", "/group/g5\r\nX-Injected: 1", "/group/é",
        "http://smsend.invalid:8443/group/g5", "/group/l5NevLJdSQKQ7jduFSW4/", "group/g5",
    ]),
    st.tuples(st.sampled_from(["/group/", "/group/g", "https://evil.example/group/"]), st.text(max_size=12))
    .map("".join),
    st.lists(st.sampled_from(["/group/a", "/group/b", "/group/a"]), min_size=2, max_size=3),
)


def _location_reply(base: Reply, location: None | str | list[str]) -> Reply:
    values = [] if location is None else [location] if isinstance(location, str) else location
    headers = [(k, v) for k, v in base.headers if k.lower() != b"location"]
    return Reply(base.status, tuple(headers + [(b"location", v.encode("utf-8")) for v in values]), base.body)


def acceptable_group_id(location: None | str | list[str]) -> str | None:
    """The id a careful client may read from these Location values: one header, this host, /group/{id}."""
    if not isinstance(location, str):
        return None
    try:
        parts = urllib.parse.urlsplit(location.strip())
    except ValueError:
        return None
    if parts.netloc and (parts.netloc.lower() != "smsend.invalid" or parts.scheme.lower() not in ("", "http")):
        return None
    match = re.search(r"(?:^|/)group/([^/]+)/?$", parts.path)
    group_id = urllib.parse.unquote(match.group(1)) if match else ""
    if group_id in ("", ".", "..") or any(c == "/" or not c.isprintable() for c in group_id):
        return None
    return group_id


@HOSTILE
@given(location=LOCATIONS)
def test_a_create_group_location_gives_the_new_id_or_a_protocol_error(recording: Recording, location: Any) -> None:
    reply = _location_reply(recording.smsend_created_group, location)
    replay = Replay("/API/v1.0/REST", {SM_CREATE_GROUP: [reply]})
    result = run(recording, "smsend", replay, lambda p, res: p.create_group("Hostile", "d"))
    note_tried("Location header", reply)
    expected = acceptable_group_id(location)
    if result.error is not None:
        assert_provider_error(result.error, provider="hostile-smsend", endpoint="/group",
                              secrets=_smsend_secrets(recording))
        assert expected is None, f"{location!r} names group {expected!r}, yet: {result.error}"
    else:
        assert result.value == expected, (location, result.value)


@settings(max_examples=EXAMPLES // 2, deadline=None)
@given(location=LOCATIONS)
def test_a_bad_location_never_deletes_contacts_through_a_group_it_did_not_create(recording: Recording,
                                                                                 location: Any) -> None:
    """smsend deletes contacts by deleting a temporary group *with its contacts*: only the one just created."""
    reply = _location_reply(recording.smsend_created_group, location)
    replay = Replay("/API/v1.0/REST", {
        SM_GROUPS: recording.smsend_group_pages, SM_CREATE_GROUP: [reply],
        ("POST", r"/contact"): [recording.smsend_upserted], ("DELETE", r"/group/.+"): [recording.smsend_deleted_group],
    })
    writes = [ContactWrite(1, "+14155550123", {}, remote_id="+14155550123")]
    result = run(recording, "smsend", replay, lambda p, res: p.delete_contacts(writes))
    note_tried("Location header", reply)
    assert result.error is None, result.error
    listed = set(_ids(recording.smsend_group_pages, "groups", "id_group"))
    wiping = [urllib.parse.unquote(r.url.path.rsplit("/", 1)[-1]) for r in replay.requests
              if r.method == "DELETE" and r.url.params.get("deletecontacts") == "true"]
    expected = acceptable_group_id(location)
    assert wiping in ([], [expected]) and not set(wiping) & listed, (location, wiping)
    [outcome] = result.value
    if expected is None:
        assert not wiping and isinstance(outcome.error, ProtocolError), outcome
        assert_provider_error(outcome.error, provider="hostile-smsend", endpoint="/group",
                              secrets=_smsend_secrets(recording))


# -- ids that reach later request paths ------------------------------------------------------


@pytest.mark.parametrize("hostile_id", ["../groups/5", "5/../../groups/6", "5?x=1", "5#f", " 5", "٥", "-1", "",
                                        "5\n", "1e3", 5.0, True, [5], {"id": 5}, None])
@pytest.mark.parametrize("listing", ["contacts", "groups"])
def test_a_sendhub_id_that_is_not_digits_never_reaches_a_request_path(recording: Recording, hostile_id: Any,
                                                                      listing: str) -> None:
    pages = recording.sendhub_contact_pages if listing == "contacts" else recording.sendhub_group_pages
    doc = pages[0].json()
    doc["objects"][0]["id"] = hostile_id
    route = SH_CONTACTS if listing == "contacts" else SH_GROUPS
    replay = Replay("/v1", {route: [pages[0].with_body(render(doc))] + pages[1:]})
    result = run(recording, "sendhub", replay, lambda p, res: drain(getattr(p, listing)(), res))
    note_tried("id not digits", replay.routes[route][0])
    assert isinstance(result.error, ProtocolError) and "id of digits" in str(result.error), result.error
    assert result.pages == 0


# -- paging that lies ------------------------------------------------------------------------


@dataclass
class Listing:
    """A listing as a server holds it, served by offset (SendHub) or page number (smsend), with one twist."""

    provider: str  # sendhub | smsend
    path: str  # /contacts/, /groups/, /groups or /blacklist/sms
    items: list[dict[str, Any]]
    template: dict[str, Any]  # a real first page: its meta and keys
    twist: Callable[[Listing, int, dict[str, Any]], dict[str, Any]]
    served: int = 0
    snapshots: list[list[str]] = field(default_factory=list)

    @property
    def objects_key(self) -> str:
        return "objects" if self.provider == "sendhub" else "blacklist" if self.path == "/blacklist/sms" else "groups"

    @property
    def id_key(self) -> str:
        return "id" if self.provider == "sendhub" else "phoneNumber" if self.path == "/blacklist/sms" else "id_group"

    def ids(self) -> list[str]:
        return [str(item[self.id_key]) for item in self.items]

    def page(self, request: httpx.Request) -> dict[str, Any]:
        if self.provider == "sendhub":
            start = int(request.url.params["offset"])
        else:
            start = (int(request.url.params["pageNumber"]) - 1) * PAGE
        items = copy.deepcopy(self.items[start:start + PAGE])
        if self.provider == "smsend":
            return {self.objects_key: items, "pageNumber": start // PAGE + 1, "pageSize": PAGE, "Total": len(self.items)}
        more = start + PAGE < len(self.items)
        link = f"/api/v1{self.path}?limit={PAGE}&offset="
        meta = dict(self.template["meta"], limit=PAGE, offset=start, total_count=len(self.items),
                    next=f"{link}{start + PAGE}" if more else None,
                    previous=f"{link}{max(0, start - PAGE)}" if start else None)
        return {"meta": meta, "objects": items}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.host.endswith(".invalid"), f"followed a link off the provider: {request.url}"
        body = render(self.twist(self, self.served, self.page(request)))
        self.served += 1
        self.snapshots.append(self.ids())
        note_tried(f"paging: {self.twist.__name__.replace('_', ' ')}", Reply(200, (), body))
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def _total(page: dict[str, Any], value: Any) -> dict[str, Any]:
    if "meta" in page:
        page["meta"]["total_count"] = value
    else:
        page["Total"] = value
    return page


def _objects(page: dict[str, Any]) -> list[Any]:
    return next(page[key] for key in ("objects", "groups", "blacklist") if key in page)


def _fresh_item(listing: Listing) -> dict[str, Any]:
    item = copy.deepcopy(listing.items[0])
    number = 990000 + len(listing.items) + listing.served
    item[listing.id_key] = str(number) if listing.provider == "sendhub" else f"new{number}"
    for key in ("number", "phoneNumber"):
        if key in item:
            item[key] = f"+1650555{number % 10000:04d}"
    return item


def twists(at: int, lie: Any) -> list[Callable[[Listing, int, dict[str, Any]], dict[str, Any]]]:
    """Hostile servings of page ``at`` (0-based request index); ``lie`` is a wrong count or limit."""

    def duplicate_within_a_page(listing, k, page):
        if k == at and _objects(page):
            _objects(page).append(copy.deepcopy(_objects(page)[0]))
        return page

    def duplicate_across_pages(listing, k, page):
        if k == at and k > 0 and _objects(page):
            _objects(page)[0] = copy.deepcopy(listing.items[k * PAGE - 1])
        return page

    def inserted_at_front_while_paging(listing, k, page):
        if k == at:
            listing.items.insert(0, _fresh_item(listing))
        return page

    def deleted_at_front_while_paging(listing, k, page):
        if k == at:
            del listing.items[0]
        return page

    def order_changed_while_paging(listing, k, page):
        if k == at:
            listing.items.reverse()
        return page

    def total_lies_on_one_page(listing, k, page):
        return _total(page, lie) if k == at else page

    def total_lies_on_every_page(listing, k, page):
        return _total(page, lie)

    def total_missing_on_one_page(listing, k, page):
        if k == at:
            (page["meta"] if "meta" in page else page).pop("total_count" if "meta" in page else "Total")
        return page

    def empty_page_before_the_end(listing, k, page):
        if k == at and (k + 1) * PAGE < len(listing.items):
            _objects(page).clear()
        return page

    def page_repeated(listing, k, page):
        if k == at and k > 0:
            _objects(page)[:] = copy.deepcopy(listing.items[(k - 1) * PAGE:k * PAGE])
        return page

    def next_points_elsewhere(listing, k, page):
        if "meta" in page and page["meta"]["next"]:
            page["meta"]["next"] = "https://evil.example/v1/contacts/?offset=0&api_key=stolen"
        return page

    def next_null_before_the_end(listing, k, page):
        if "meta" in page and k == at:
            page["meta"]["next"] = None
        return page

    def limit_lies(listing, k, page):
        if "meta" in page and k == at:
            page["meta"]["limit"] = lie
        return page

    def page_number_ignored(listing, k, page):
        if "meta" not in page:
            page[listing.objects_key] = copy.deepcopy(listing.items[:PAGE])
        return page

    return [duplicate_within_a_page, duplicate_across_pages, inserted_at_front_while_paging,
            deleted_at_front_while_paging, order_changed_while_paging, total_lies_on_one_page,
            total_lies_on_every_page, total_missing_on_one_page, empty_page_before_the_end, page_repeated,
            next_points_elsewhere, next_null_before_the_end, limit_lies, page_number_ignored]


LISTINGS = {
    "sendhub contacts": ("sendhub", "/contacts/", lambda r: r.sendhub_contact_pages, "contacts"),
    "sendhub groups": ("sendhub", "/groups/", lambda r: r.sendhub_group_pages, "groups"),
    "smsend groups": ("smsend", "/groups", lambda r: r.smsend_group_pages, "groups"),
    "smsend blacklist": ("smsend", "/blacklist/sms", lambda r: r.smsend_blacklist_pages, "opt_outs"),
}


@pytest.mark.parametrize("which", list(LISTINGS))
@settings(max_examples=EXAMPLES, deadline=None)
@given(twist_index=st.integers(0, 13), at=st.integers(0, 3),
       lie=st.one_of(st.integers(-3, 12), st.sampled_from([10**18, "2", None, 2.0, True])))
def test_a_listing_that_shifts_or_lies_while_paging_raises_or_is_whole(recording: Recording, which: str,
                                                                       twist_index: int, at: int, lie: Any) -> None:
    provider, path, pages, method = LISTINGS[which]
    recorded = pages(recording)
    listing = Listing(provider, path, [o for p in recorded for o in _objects(p.json())], recorded[0].json(),
                      twists(at, lie)[twist_index])
    before = listing.ids()
    result = run(recording, provider, listing, lambda p, res: drain(getattr(p, method)(), res))
    name = listing.twist.__name__
    if result.error is not None:
        secrets = _sendhub_secrets(recording) if provider == "sendhub" else _smsend_secrets(recording)
        assert_provider_error(result.error, provider=f"hostile-{provider}", endpoint=path.rstrip("/"), secrets=secrets)
        PAGES_BEFORE_ERROR[f"{which} (paging)"][result.pages] += 1
        assert name != "next_points_elsewhere", result.error  # harmless: the link is never followed
        return
    ids = [item.phone if isinstance(item, OptOut) else item.remote_id for page in result.value for item in page]
    assert len(ids) == len(set(ids)), f"{name}: duplicates yielded {ids}"
    first_page_lies = name == "total_lies_on_every_page" or at == 0
    if provider == "smsend" and name.startswith("total_lies") and first_page_lies and lie == PAGE and lie is not True:
        # Undetectable: a first page of PAGE groups (fewer than the 100 asked) saying Total is PAGE
        # is exactly what a server holding PAGE groups answers; nothing else is asked for.
        assert ids == before[:PAGE]
        return
    assert set(ids) in ({*before}, {*listing.ids()}), f"{name} at {at} (lie {lie!r}): listed {ids}, had {before}"


# -- the engine: a malformed pull deletes nothing ------------------------------------------------


def _everything(world: World) -> tuple[Any, ...]:
    """The canonical book and both accounts, as comparable values."""
    book = world.sql("SELECT id, phone, name, surname, email, extra, opted_out FROM contacts ORDER BY id")
    groups = world.sql("SELECT id, name FROM groups ORDER BY id")
    members = world.sql("SELECT group_id, contact_id FROM group_members ORDER BY 1, 2")
    sendhub, smsend = world.sendhub.state.snapshot(), world.smsend.state.snapshot()
    return ([tuple(r) for r in book], [tuple(r) for r in groups], [tuple(r) for r in members],
            json.dumps(sendhub, sort_keys=True, default=str), json.dumps(smsend, sort_keys=True, default=str))


@pytest.mark.parametrize("fault", [{"malformed_rate": 1.0}, {"malformed_next": 1}, {"malformed_next": 2}],
                         ids=["every response", "the groups page", "the contacts page"])
def test_a_malformed_sendhub_pull_fails_sendhub_and_changes_nothing_anywhere(world: World, fault: dict[str, Any]):
    team = world.sendhub.state.add_group("Team")
    for i in range(12):
        world.sendhub.state.add_contact(f"Person {i}", f"650253{i:04d}", groups=[team.id] if i % 2 else [])
    world.sql("INSERT INTO contacts (phone, name) VALUES ('+14155550199', 'Local Only')")
    first = world.sync()
    assert first.status == "ok", [p.summary() for p in first.providers]
    assert len(world.sendhub.state.snapshot()["contacts"]) == 13
    assert len(world.smsend.state.snapshot()["contacts"]) == 13
    before = _everything(world)

    for name, value in fault.items():
        setattr(world.sendhub.faults, name, value)
    report = world.sync()

    by_name = {p.name: p for p in report.providers}
    assert by_name["sendhub"].status == "failed" and not by_name["sendhub"].complete
    assert "sendhub" in by_name["sendhub"].error and "malformed JSON" in by_name["sendhub"].error
    assert by_name["smsend"].status == "ok" and report.status == "partial"
    assert _everything(world) == before
    assert world.sql("SELECT action, status, provider FROM change_log WHERE run_id = :r", r=report.run_id) == []


def test_a_sendhub_name_that_is_not_text_fails_the_pull_and_the_run_goes_on(world: World):
    """A lone surrogate is valid JSON but no database stores it: before the fix it killed the whole run."""
    contact = world.sendhub.state.add_contact("Ok Name", "6502530001")
    world.sync()
    before = _everything(world)
    world.sendhub.state.edit_contact(contact.id, name="Broken \ud800 name")
    report = world.sync()
    by_name = {p.name: p for p in report.providers}
    assert by_name["sendhub"].status == "failed" and "lone UTF-16 surrogate" in by_name["sendhub"].error
    assert "GET /v1/contacts/" in by_name["sendhub"].error and by_name["smsend"].status == "ok"
    assert _everything(world)[:3] == before[:3] and _everything(world)[4] == before[4]


@pytest.mark.parametrize("name", ["x" * 1_000_000, "\u202eRTL\u202c name", "'; DROP TABLE contacts; --", "🎉 Zoë"],
                         ids=["1 MB", "right-to-left", "SQL", "emoji"])
def test_hostile_but_valid_sendhub_names_reach_the_book_intact(world: World, name: str):
    contact = world.sendhub.state.add_contact("Ok Name", "6502530001")
    world.sync()
    world.sendhub.state.edit_contact(contact.id, name=name)
    report = world.sync()
    assert {p.name: p.status for p in report.providers} == {"sendhub": "ok", "smsend": "ok"}
    [(first, last)] = world.sql("SELECT name, surname FROM contacts")
    assert " ".join(part for part in (first, last) if part) == name
    [smsend_contact] = world.smsend.state.snapshot()["contacts"]
    if len(name) > 40:  # smsend holds 40 characters: rejected there, naming the field, kept everywhere else
        [row] = world.sql("SELECT status, error FROM change_log WHERE provider = 'smsend' AND run_id = :r",
                          r=report.run_id)
        assert row.status == "rejected" and "name" in row.error and smsend_contact["name"] == "Ok"
    else:
        assert smsend_contact["name"] == first
