"""The smsend client against the smsend simulator, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from syncd.config import ProviderSettings, Secret
from syncd.errors import AuthError, ProtocolError, Rejected, TransientError, UnknownOutcome, Unsupported
from syncd.model import ContactWrite, OptOut
from syncd.providers import build_provider
from syncd.providers.http import RetryPolicy
from syncd.providers.smsend import TEMP_GROUP_PREFIX, SmsendProvider
from syncd.simulators.server import SimulatorServer, start_simulator

pytestmark = pytest.mark.anyio

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, budget=5.0)
PHONES = [f"+39340{n:07d}" for n in range(1000, 1100)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """The simulator's clock: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class RecordingTransport(httpx.AsyncHTTPTransport):
    """Keeps the raw request headers (names in the exact case sent on the wire)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, list[bytes]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.url.path, [name for name, _ in request.headers.raw]))
        return await super().handle_async_request(request)


class HeaderSpy:
    """ASGI wrapper around the simulator app: the header names the server received."""

    def __init__(self, app) -> None:
        self.app = app
        self.names: list[set[bytes]] = []

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.names.append({name for name, _ in scope["headers"]})
        await self.app(scope, receive, send)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_sim(clock: FakeClock) -> Iterator:
    with contextlib.ExitStack() as stack:
        def make(**kw) -> SimulatorServer:
            return stack.enter_context(start_simulator("smsend", clock=clock, **kw))

        yield make


@pytest.fixture
def sim(make_sim) -> SimulatorServer:
    return make_sim()


def settings_for(sim: SimulatorServer, mode: str = "token", **overrides) -> ProviderSettings:
    creds = sim.credentials
    auth: dict = {
        "token": dict(user_key=creds["user_key"], access_token=Secret(creds["access_token"])),
        "login": dict(username=creds["username"], password=Secret(creds["password"])),
    }[mode]
    values = dict(name="smsend-test", type="smsend", base_url=sim.base_url, requests_per_second=0,
                  max_concurrency=4, batch_size=500, timeout_seconds=5.0, **auth)
    values.update(overrides)
    return ProviderSettings(**values)


@contextlib.asynccontextmanager
async def client(sim: SimulatorServer, mode: str = "token", *, transport=None, **overrides) -> AsyncIterator[SmsendProvider]:
    provider = build_provider(settings_for(sim, mode, **overrides), retry=FAST_RETRY, transport=transport)
    assert isinstance(provider, SmsendProvider)
    try:
        yield provider
    finally:
        await provider.aclose()


async def all_groups(provider: SmsendProvider) -> list:
    return [group async for page in provider.groups() for group in page]


def writes(count: int, *, groups: frozenset[str] = frozenset(), start: int = 0) -> list[ContactWrite]:
    return [ContactWrite(ref=start + i, phone=PHONES[start + i], fields={"name": f"N{start + i}", "city": "Milano"},
                         groups=groups) for i in range(count)]


async def count(sim: SimulatorServer, endpoint: str, expected: int = 0) -> int:
    """Requests the simulator saw on ``endpoint``, waiting up to a second for ``expected``.

    The simulator records a request after sending its response, so the client
    can be done a moment before the last request is counted.
    """
    for _ in range(100):
        seen = sim.request_counts().get(endpoint, 0)
        if seen == expected:
            return seen
        await anyio.sleep(0.01)
    return seen


# --- authentication ------------------------------------------------------------


async def test_access_token_headers_are_sent_exactly_as_documented(sim: SimulatorServer) -> None:
    transport = RecordingTransport()
    spy = sim.middleware.app = HeaderSpy(sim.middleware.app)
    async with client(sim, "token", transport=transport) as provider:
        assert await all_groups(provider) == []
    names = transport.sent[0][1]
    assert b"user_key" in names and b"Access_token" in names
    assert not any(b"-" in n and n.lower().replace(b"-", b"_") in (b"user_key", b"access_token") for n in names)
    assert {b"user_key", b"access_token"} <= spy.names[0]  # received with underscores (HTTP/1.1 lowercases)
    assert await count(sim, "POST /API/v1.0/REST/login", 0) == 0


async def test_username_password_logs_in_once_and_sends_session_key(sim: SimulatorServer) -> None:
    transport = RecordingTransport()
    spy = sim.middleware.app = HeaderSpy(sim.middleware.app)
    async with client(sim, "login", transport=transport) as provider:
        await provider.create_group("A", "first")
        await provider.create_group("B", "second")
    assert [path.rsplit("/", 1)[1] for path, _ in transport.sent] == ["login", "group", "group"]
    assert b"Session_key" in transport.sent[1][1] and b"user_key" in transport.sent[1][1]
    assert {b"user_key", b"session_key"} <= spy.names[1]
    assert await count(sim, "GET /API/v1.0/REST/login", 1) == 1


async def test_session_key_mode_uses_the_key_as_given(sim: SimulatorServer) -> None:
    session_key = sim.state.open_session()
    transport = RecordingTransport()
    async with client(sim, "token", transport=transport, access_token=None,
                      session_key=Secret(session_key)) as provider:
        group_id = await provider.create_group("A", "")
    assert group_id in sim.state.groups
    assert b"Session_key" in transport.sent[0][1]
    assert await count(sim, "GET /API/v1.0/REST/login", 0) == 0


async def test_expired_session_key_is_an_auth_error_that_says_how_to_fix_it(sim: SimulatorServer, clock) -> None:
    session_key = sim.state.open_session()
    clock.now += 301
    async with client(sim, "token", access_token=None, session_key=Secret(session_key)) as provider:
        with pytest.raises(AuthError) as caught:
            await provider.create_group("A", "")
    message = str(caught.value)
    assert "smsend-test" in message and "5 idle minutes" in message and "access_token" in message
    assert session_key not in message
    assert await count(sim, "POST /API/v1.0/REST/group", 1) == 1  # not retried


async def test_expired_session_is_renewed_transparently(sim: SimulatorServer, clock: FakeClock) -> None:
    async with client(sim, "login") as provider:
        await provider.create_group("before", "")
        clock.now += 5 * 60 + 1  # five idle minutes: the session is gone
        await provider.create_group("after", "")
        assert [g.name for g in await all_groups(provider)] == ["before", "after"]
    assert await count(sim, "GET /API/v1.0/REST/login", 2) == 2
    assert await count(sim, "POST /API/v1.0/REST/group", 3) == 3  # the refused one, sent again after login


async def test_concurrent_calls_on_an_expired_session_log_in_once(sim: SimulatorServer, clock) -> None:
    async with client(sim, "login", batch_size=5) as provider:
        await provider.create_group("g", "")
        clock.now += 301
        outcomes = await provider.create_contacts(writes(20))  # four batches at once
    assert all(o.ok for o in outcomes)
    assert await count(sim, "GET /API/v1.0/REST/login", 2) == 2


@pytest.mark.parametrize("how", ["wrong password", "rejected credentials"])
async def test_bad_credentials_are_an_auth_error_without_the_password(sim: SimulatorServer, how: str,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    password = sim.credentials["password"] if how == "rejected credentials" else "Wr0ng-" + "x" * 12
    if how == "rejected credentials":
        sim.faults.reject_credentials = True
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        async with client(sim, "login", password=Secret(password)) as provider:
            with pytest.raises(AuthError) as caught:
                await all_groups(provider)
    message = str(caught.value)
    assert message.startswith("smsend-test: login") and "HTTP 404" in message
    assert await count(sim, "GET /API/v1.0/REST/login", 1) == 1  # not retried
    assert await count(sim, "GET /API/v1.0/REST/groups", 0) == 0
    everything = message + repr(caught.value.__dict__) + repr(logs) + caplog.text
    assert password not in everything
    assert "/login" in caplog.text  # httpx did log the request, without its query


async def test_refused_access_token_is_an_auth_error_not_retried(sim: SimulatorServer) -> None:
    async with client(sim, "token", access_token=Secret("not-the-token")) as provider:
        with pytest.raises(AuthError, match="smsend-test: list groups"):
            await all_groups(provider)
    assert await count(sim, "GET /API/v1.0/REST/groups", 1) == 1


class LoginAnswers:
    """ASGI wrapper: ``GET /login`` answers 200 with a fixed body instead of the simulator's."""

    def __init__(self, app, body: bytes) -> None:
        self.app, self.body = app, body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/login"):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(self.body)).encode())]})
            await send({"type": "http.response.body", "body": self.body})
            return
        await self.app(scope, receive, send)


@pytest.mark.parametrize("body", [b"SECRETKEY", b"", b"A;B;C", b"user key;session", b"<html>oops</html>"])
async def test_malformed_login_body_is_a_protocol_error(sim: SimulatorServer, body: bytes) -> None:
    sim.middleware.app = LoginAnswers(sim.middleware.app, body)
    async with client(sim, "login") as provider:
        with pytest.raises(ProtocolError, match="USER_KEY;SESSION_KEY") as caught:
            await provider.create_group("A", "")
    assert caught.value.operation == "login"
    if body:
        assert body.decode() not in str(caught.value)  # a body that may hold a key is never quoted
    assert await count(sim, "POST /API/v1.0/REST/group", 0) == 0


async def test_a_truncated_login_body_recovers_through_a_second_login(sim: SimulatorServer) -> None:
    sim.faults.malformed_next = 1  # "USER_KEY;SESS": reads as a key pair, then refused with 401
    async with client(sim, "login") as provider:
        group_id = await provider.create_group("A", "")
    assert group_id in sim.state.groups
    assert await count(sim, "GET /API/v1.0/REST/login", 2) == 2


# --- groups --------------------------------------------------------------------


async def test_group_create_update_delete(sim: SimulatorServer) -> None:
    async with client(sim) as provider:
        group_id = await provider.create_group("Clienti", "all customers")
        assert sim.state.groups[group_id].name == "Clienti"
        await provider.update_group(group_id, "Clienti VIP", "the best")
        group = sim.state.groups[group_id]
        assert (group.name, group.description) == ("Clienti VIP", "the best")
        member = sim.state.load_contact({"phoneNumber": PHONES[0]}, [group_id])
        await provider.delete_group(group_id)
    assert group_id not in sim.state.groups
    assert member.id in sim.state.contacts  # deletecontacts=false: the contact stays


@pytest.mark.parametrize(("groups", "requests"), [(0, 1), (1, 1), (100, 1), (101, 2), (250, 3)])
async def test_groups_are_listed_page_by_page(make_sim, groups: int, requests: int) -> None:
    sim = make_sim(groups=groups)
    async with client(sim) as provider:
        pages = [page async for page in provider.groups()]
    listed = [g.remote_id for page in pages for g in page]
    assert listed == [g["id"] for g in sim.state.snapshot()["groups"]]
    assert len(pages) == (0 if groups == 0 else requests)
    assert await count(sim, "GET /API/v1.0/REST/groups", requests) == requests


async def test_temporary_deletion_groups_are_hidden(sim: SimulatorServer) -> None:
    sim.state.create_group("Clienti", "")
    sim.state.create_group(TEMP_GROUP_PREFIX + "0123456789ab", "")
    async with client(sim) as provider:
        assert [g.name for g in await all_groups(provider)] == ["Clienti"]


async def test_a_listing_that_changes_while_paging_is_a_protocol_error(make_sim) -> None:
    sim = make_sim(groups=150)
    async with client(sim) as provider:
        pages = provider.groups()
        first = await pages.__anext__()
        assert len(first) == 100
        sim.state.create_group("late arrival", "")
        with pytest.raises(ProtocolError, match="listing changed while paging"):
            await pages.__anext__()


async def test_malformed_groups_json_is_a_protocol_error_naming_the_endpoint(make_sim) -> None:
    sim = make_sim(groups=3)
    sim.faults.malformed_next = 1
    async with client(sim) as provider:
        with pytest.raises(ProtocolError, match=r"GET /API/v1\.0/REST/groups") as caught:
            await all_groups(provider)
    assert caught.value.provider == "smsend-test"


async def test_a_failing_list_page_raises_from_the_iterator(make_sim) -> None:
    sim = make_sim(groups=150)
    sim.faults.failing_pages = {2}
    received = []
    async with client(sim) as provider:
        with pytest.raises(TransientError, match="list groups page 2"):
            async for page in provider.groups():
                received.append(page)
    assert len(received) == 1  # the first page came through, then the error
    assert await count(sim, "GET /API/v1.0/REST/groups", 1 + FAST_RETRY.attempts) == 1 + FAST_RETRY.attempts


async def test_locked_address_book_rejects_group_modify_and_delete(sim: SimulatorServer) -> None:
    async with client(sim) as provider:
        group_id = await provider.create_group("Clienti", "")
        sim.state.locked = True
        with pytest.raises(Rejected, match="locked"):
            await provider.update_group(group_id, "Other", "")
        with pytest.raises(Rejected, match="locked"):
            await provider.delete_group(group_id)
    assert sim.state.groups[group_id].name == "Clienti"


async def test_lost_group_create_is_an_unknown_outcome(sim: SimulatorServer) -> None:
    sim.faults.drop_next = 1
    async with client(sim) as provider:
        with pytest.raises(UnknownOutcome):
            await provider.create_group("Clienti", "")
    assert await count(sim, "POST /API/v1.0/REST/group", 1) == 1  # never re-sent blindly
    assert len(sim.state.groups) == 1  # it was applied: the engine finds it by listing


# --- contacts ------------------------------------------------------------------


@pytest.mark.parametrize(("n", "batch_size"), [(25, 10), (30, 10), (3, 500)])
async def test_upserts_go_in_batches(sim: SimulatorServer, n: int, batch_size: int) -> None:
    async with client(sim, batch_size=batch_size) as provider:
        group_id = await provider.create_group("Clienti", "")
        outcomes = await provider.create_contacts(writes(n, groups=frozenset({group_id})))
    assert [o.remote_id for o in outcomes] == PHONES[:n]
    assert all(o.ok for o in outcomes)
    assert await count(sim, "POST /API/v1.0/REST/contact", math.ceil(n / batch_size)) == math.ceil(n / batch_size)
    assert len(sim.state.contacts) == n
    assert all(set(c.groups) == {group_id} for c in sim.state.contacts.values())


async def test_no_writes_send_no_request(sim: SimulatorServer) -> None:
    async with client(sim) as provider:
        assert await provider.update_contacts([]) == []
        assert await provider.delete_contacts([]) == []
    assert sim.request_counts() == {}


async def test_a_contact_that_existed_before_is_updated_not_duplicated(sim: SimulatorServer) -> None:
    old_group = sim.state.create_group("Old", "").id
    existing = sim.state.load_contact({"phoneNumber": PHONES[0], "name": "Old", "email": "old@example.com",
                                       "zip": "20121"}, [old_group])
    async with client(sim) as provider:
        new_group = await provider.create_group("New", "")
        [outcome] = await provider.create_contacts(
            [ContactWrite(ref=1, phone="340 000 1000", fields={"name": "New"}, groups=frozenset({new_group}))])
    assert outcome.ok and outcome.remote_id == PHONES[0]
    [contact] = sim.state.contacts_by_phone(PHONES[0])
    assert contact.id == existing.id
    assert contact.fields["name"] == "New"
    assert contact.fields["email"] == "" and contact.fields["zip"] == ""  # fields syncd left empty are cleared
    assert list(contact.groups) == [old_group, new_group]  # its group at smsend stays (syncd cannot see it)


async def test_an_invalid_contact_is_rejected_and_the_rest_written(sim: SimulatorServer) -> None:
    batch = writes(5)
    batch[2] = ContactWrite(ref=2, phone=PHONES[2], fields={"name": "x", "birthdate": "1990-13-01"})
    async with client(sim) as provider:
        outcomes = await provider.update_contacts(batch)
    bad = outcomes[2].error
    assert isinstance(bad, Rejected) and bad.field == "birthdate" and bad.record == PHONES[2]
    assert "smsend-test" in str(bad)
    assert [o.ok for o in outcomes] == [True, True, False, True, True]
    assert sorted(c.phone for c in sim.state.contacts.values()) == [PHONES[i] for i in (0, 1, 3, 4)]
    assert await count(sim, "POST /API/v1.0/REST/contact", 1) == 1


async def test_a_batch_smsend_refuses_is_bisected_down_to_the_refused_contacts(sim: SimulatorServer) -> None:
    good = sim.state.create_group("Good", "").id
    batch = writes(8, groups=frozenset({good}))
    batch[5] = ContactWrite(ref=5, phone=PHONES[5], fields={}, groups=frozenset({"no-such-group"}))
    async with client(sim) as provider:
        outcomes = await provider.create_contacts(batch)
    bad = outcomes[5].error
    assert isinstance(bad, Rejected) and bad.status == 400 and bad.record == PHONES[5]
    assert bad.field == "groupIds" and "no-such-group" in bad.reason  # smsend's own reason
    assert all(o.ok for i, o in enumerate(outcomes) if i != 5)
    assert len(sim.state.contacts) == 7
    assert await count(sim, "POST /API/v1.0/REST/contact", 1 + 2 + 2 + 2) == 1 + 2 + 2 + 2  # 8 -> 4+4 -> 2+2 -> 1+1


async def test_opted_out_contacts_are_blacklisted(sim: SimulatorServer) -> None:
    batch = writes(3)
    batch[1] = ContactWrite(ref=1, phone=PHONES[1], fields={"name": "Stop"}, opted_out=True)
    async with client(sim) as provider:
        outcomes = await provider.update_contacts(batch)
    assert all(o.ok for o in outcomes)
    assert list(sim.state.blacklist) == [PHONES[1]]
    assert "blacklisted" in outcomes[1].note
    assert await count(sim, "POST /API/v1.0/REST/contacts/add_to_blacklist", 1) == 1


async def test_a_dropped_upsert_is_sent_again_without_duplicates(sim: SimulatorServer) -> None:
    sim.faults.drop_next = 1
    async with client(sim) as provider:
        outcomes = await provider.create_contacts(writes(4))
    assert all(o.ok for o in outcomes)
    assert await count(sim, "POST /API/v1.0/REST/contact", 2) == 2
    assert [status for method, _, status in sim.request_log if method == "POST"] == [None, 200]
    assert all(len(sim.state.contacts_by_phone(p)) == 1 for p in PHONES[:4])
    assert len(sim.state.contacts) == 4


async def test_delete_goes_through_a_temporary_group(sim: SimulatorServer) -> None:
    keep = sim.state.create_group("Keep", "").id
    async with client(sim) as provider:
        await provider.create_contacts(writes(5, groups=frozenset({keep})))
        doomed = writes(5, groups=frozenset({keep}))[1:3]
        outcomes = await provider.delete_contacts(doomed)
        assert await all_groups(provider) == [await _only_group(provider)]
    assert all(o.ok for o in outcomes)
    assert all(o.note.startswith("deleted through temporary group ") for o in outcomes)
    assert [o.remote_id for o in outcomes] == PHONES[1:3]
    assert sorted(c.phone for c in sim.state.contacts.values()) == [PHONES[i] for i in (0, 3, 4)]
    assert list(sim.state.groups) == [keep]  # the temporary group is gone, "Keep" untouched
    assert len(sim.state.groups[keep].members) == 3
    assert await count(sim, "DELETE /API/v1.0/REST/group/{id}", 1) == 1


async def _only_group(provider: SmsendProvider):
    [group] = await all_groups(provider)
    return group


async def test_delete_removes_stale_temporary_groups_but_not_their_contacts(sim: SimulatorServer) -> None:
    stale = sim.state.create_group(TEMP_GROUP_PREFIX + "deadbeef0000", "").id
    survivor = sim.state.load_contact({"phoneNumber": PHONES[50]}, [stale])
    async with client(sim) as provider:
        await provider.create_contacts(writes(2))
        outcomes = await provider.delete_contacts(writes(1))
    assert outcomes[0].ok
    assert stale not in sim.state.groups
    assert survivor.id in sim.state.contacts
    assert [c.phone for c in sim.state.contacts.values() if c.id != survivor.id] == [PHONES[1]]
    assert sim.state.groups == {}


class DropNextWriteAfter:
    """ASGI wrapper: once a request matching ``method path-suffix`` reaches the app, drop the next write."""

    def __init__(self, sim: SimulatorServer, method: str, suffix: str) -> None:
        self.sim, self.app, self.method, self.suffix = sim, sim.middleware.app, method, suffix

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == self.method and scope["path"].endswith(self.suffix):
            self.sim.faults.drop_next = 1  # drawn by the fault layer for the request after this one
        await self.app(scope, receive, send)


async def test_a_lost_temporary_group_delete_is_settled_by_listing(sim: SimulatorServer) -> None:
    async with client(sim) as provider:
        await provider.create_contacts(writes(3))
        sim.middleware.app = DropNextWriteAfter(sim, "POST", "/contact")  # the DELETE after the upsert
        outcomes = await provider.delete_contacts(writes(2))
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert [c.phone for c in sim.state.contacts.values()] == [PHONES[2]]
    assert sim.state.groups == {}
    assert await count(sim, "DELETE /API/v1.0/REST/group/{id}", 1) == 1  # found gone: not sent again
    assert [status for method, _, status in sim.request_log if method == "DELETE"] == [None]  # it was lost
    assert await count(sim, "GET /API/v1.0/REST/groups", 2) == 2  # stale clean-up, then the check


async def test_a_lost_temporary_group_create_fails_the_deletion_and_is_cleaned_up_next_time(
        sim: SimulatorServer) -> None:
    async with client(sim) as provider:
        await provider.create_contacts(writes(3))
        sim.faults.drop_next = 1
        failed = await provider.delete_contacts(writes(1))
        assert isinstance(failed[0].error, UnknownOutcome)
        [stale] = sim.state.groups.values()  # created, but its id never reached syncd
        assert stale.name.startswith(TEMP_GROUP_PREFIX)
        again = await provider.delete_contacts(writes(1))
    assert again[0].ok
    assert sim.state.groups == {}
    assert sorted(c.phone for c in sim.state.contacts.values()) == PHONES[1:3]


async def test_a_404_outside_login_is_an_auth_error_pointing_at_user_key_and_base_url(sim: SimulatorServer) -> None:
    async with client(sim, base_url=sim.root_url + "/API/v1.0/NOPE") as provider:
        with pytest.raises(AuthError, match="user_key") as caught:
            await provider.create_group("A", "")
    assert "base_url" in str(caught.value) and caught.value.status == 404


async def test_what_smsend_cannot_do_is_unsupported(sim: SimulatorServer) -> None:
    async with client(sim) as provider:
        with pytest.raises(Unsupported):
            provider.contacts()
        with pytest.raises(Unsupported):
            await provider.change_members("g", ["+393400001000"], [])
    assert sim.request_counts() == {}


# --- what a write keeps (issue 10) ----------------------------------------------


class BodyRecorder(httpx.AsyncHTTPTransport):
    """Real HTTP, keeping each request's method, path and JSON body."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, object]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, request.url.path.removeprefix("/API/v1.0/REST"), body))
        return await super().handle_async_request(request)


async def test_a_group_put_sends_name_and_description_and_keeps_the_members(sim: SimulatorServer) -> None:
    recorder = BodyRecorder()
    async with client(sim, transport=recorder) as provider:
        group_id = await provider.create_group("Clienti", "all of them")
        await provider.create_contacts(writes(2, groups=frozenset({group_id})))
        outsider = sim.state.load_contact({"phoneNumber": "+393409999999", "name": "Made in smsend"})
        sim.state.add_member(group_id, outsider.id)  # a membership syncd never sees
        await provider.update_group(group_id, "Clienti VIP", "the best", kept={"slug": "ignored"})
    group = sim.state.groups[group_id]
    assert (group.name, group.description) == ("Clienti VIP", "the best")
    assert len(group.members) == 3
    [put] = [body for method, path, body in recorder.sent if method == "PUT"]
    assert put == {"name": "Clienti VIP", "description": "the best"}, "everything an smsend group holds, nothing else"


def _subscribed_contact(sim: SimulatorServer, phone: str) -> tuple[str, str, str]:
    """A contact that signed up to a campaign and was put in a group in smsend's own interface:
    ``(contact id, campaign id, that group's id)``."""
    campaign = sim.state.create_campaign("Newsletter")
    unseen = sim.state.create_group("Made in smsend", "").id
    contact = sim.state.register_to_campaign(campaign.id, {"phoneNumber": phone, "email": "anna@example.com"})
    sim.state.add_member(unseen, contact.id)
    return contact.id, campaign.id, unseen


async def test_an_upsert_keeps_campaign_subscriptions_and_memberships_syncd_cannot_see(sim: SimulatorServer) -> None:
    contact_id, campaign, unseen = _subscribed_contact(sim, PHONES[0])
    async with client(sim) as provider:
        synced = await provider.create_group("Clienti", "")
        [outcome] = await provider.update_contacts([ContactWrite(ref=1, phone=PHONES[0], groups=frozenset({synced}),
                                                                 fields={"name": "Anna", "email": "anna@example.com"})])
    assert outcome.ok and outcome.remote_id == PHONES[0]
    contact = sim.state.contacts[contact_id]
    assert contact.fields["name"] == "Anna" and len(sim.state.contacts) == 1
    assert list(contact.campaigns) == [campaign]
    assert set(contact.groups) == {unseen, synced}


async def test_a_write_that_leaves_a_group_replaces_the_groups_and_says_what_it_cost(sim: SimulatorServer) -> None:
    contact_id, _, unseen = _subscribed_contact(sim, PHONES[0])
    async with client(sim) as provider:
        stay, leave = [await provider.create_group(name, "") for name in ("Stay", "Leave")]
        await provider.create_contacts([ContactWrite(ref=1, phone=PHONES[0], fields={}, groups=frozenset({stay, leave}))])
        assert set(sim.state.contacts[contact_id].groups) == {unseen, stay, leave}
        [outcome] = await provider.update_contacts([ContactWrite(ref=1, phone=PHONES[0], fields={},
                                                                 groups=frozenset({stay}), replace_groups=True)])
    assert outcome.ok and "groups replaced" in outcome.note and "campaign" in outcome.note
    contact = sim.state.contacts[contact_id]
    assert list(contact.groups) == [stay] and contact.campaigns == {}  # the documented, unavoidable loss


async def test_writes_that_replace_groups_go_in_batches_of_their_own(sim: SimulatorServer) -> None:
    recorder = BodyRecorder()
    batch = writes(5)
    batch[1] = ContactWrite(ref=1, phone=PHONES[1], fields={"name": "Leaves"}, replace_groups=True)
    batch[3] = ContactWrite(ref=3, phone=PHONES[3], fields={"name": "Leaves too"}, replace_groups=True)
    async with client(sim, transport=recorder) as provider:
        outcomes = await provider.update_contacts(batch)
    assert all(o.ok for o in outcomes) and [o.remote_id for o in outcomes] == PHONES[:5]
    upserts = [body for method, path, body in recorder.sent if (method, path) == ("POST", "/contact")]
    assert sorted((b["keepExistingGroupsAndCampaigns"], [c["phoneNumber"] for c in b["contacts"]]) for b in upserts) == [
        (False, [PHONES[1], PHONES[3]]), (True, [PHONES[0], PHONES[2], PHONES[4]])]
    assert all(b["updateExistingContact"] is True for b in upserts)


# --- opt-outs read from the SMS blacklist (issue 14) -------------------------------


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)


async def all_opt_outs(provider: SmsendProvider, since: datetime | None = None) -> list[OptOut]:
    return [entry async for page in provider.opt_outs(since) for entry in page]


async def test_a_stop_reply_and_a_web_entry_are_read_back_with_their_origin_and_time(sim: SimulatorServer) -> None:
    sim.state.play_stop("+393401112222", at="2026-03-01 10:00:00")
    sim.state.blacklist_from_web("00447400123456", at="2026-03-01 10:05:00")
    async with client(sim) as provider:
        assert provider.capabilities.list_opt_outs
        await provider.update_contacts([ContactWrite(ref=1, phone=PHONES[0], fields={}, opted_out=True)])
        sim.state.wall_clock = lambda: at("2026-03-01 11:00:00").timestamp()
        listed = await all_opt_outs(provider)
    assert listed[:2] == [OptOut("+393401112222", "STOPSMS", at("2026-03-01 10:00:00")),
                          OptOut("+447400123456", "WEB", at("2026-03-01 10:05:00"))]
    assert [(o.phone, o.origin) for o in listed[2:]] == [(PHONES[0], "API")]


async def test_since_reads_only_what_came_at_or_after_it_whatever_its_zone(sim: SimulatorServer) -> None:
    for n, hour in enumerate((9, 10, 11, 12)):
        sim.state.play_stop(f"+3934000000{n}0", at=f"2026-03-01 {hour:02d}:00:00")
    rome = ZoneInfo("Europe/Rome")
    async with client(sim) as provider:
        since_utc = await all_opt_outs(provider, at("2026-03-01 11:00:00"))
        since_rome = await all_opt_outs(provider, datetime(2026, 3, 1, 12, 0, 0, tzinfo=rome))  # 11:00 UTC
        since_naive = await all_opt_outs(provider, datetime(2026, 3, 1, 11, 0, 0, 500))  # naive: UTC
    expected = ["+393400000020", "+393400000030"]
    assert [o.phone for o in since_utc] == [o.phone for o in since_rome] == [o.phone for o in since_naive] == expected


async def test_the_blacklist_is_read_across_pages(make_sim) -> None:
    sim = make_sim()
    for n in range(250):
        sim.state.play_stop(f"+39340{n:07d}", at=1_772_000_000 + n)
    async with client(sim) as provider:
        pages = [page async for page in provider.opt_outs()]
    assert [len(page) for page in pages] == [100, 100, 50]
    assert [o.phone for page in pages for o in page] == [f"+39340{n:07d}" for n in range(250)]
    assert await count(sim, "GET /API/v1.0/REST/blacklist/sms", 3) == 3


async def test_an_empty_blacklist_is_read_as_empty_in_one_request(sim: SimulatorServer) -> None:
    async with client(sim) as provider:
        assert await all_opt_outs(provider) == []
    assert await count(sim, "GET /API/v1.0/REST/blacklist/sms", 1) == 1


async def test_a_malformed_blacklist_answer_is_a_protocol_error_never_nobody_opted_out(sim: SimulatorServer) -> None:
    sim.state.play_stop("+393401112222")
    sim.faults.malformed_next = 1
    async with client(sim) as provider:
        with pytest.raises(ProtocolError) as caught:
            await all_opt_outs(provider)
    assert "smsend-test" in str(caught.value) and "GET /API/v1.0/REST/blacklist/sms" in str(caught.value)


class RewriteBlacklist:
    """ASGI wrapper: the simulator's blacklist answer, rewritten by ``change`` (a server of another shape)."""

    def __init__(self, app, change) -> None:
        self.app, self.change = app, change

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/blacklist/sms") or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []

        async def capture(message) -> None:
            if message["type"] == "http.response.body":
                parts.append(message.get("body", b""))
                if not message.get("more_body"):
                    body = json.dumps(self.change(json.loads(b"".join(parts)))).encode()
                    await send({"type": "http.response.start", "status": 200,
                                "headers": [(b"content-type", b"application/json"),
                                            (b"content-length", str(len(body)).encode())]})
                    await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda b: {"numbers": b["blacklist"], "Total": b["Total"]}, "'blacklist' is missing"),
    (lambda b: b["blacklist"], "expected a JSON object"),
    (lambda b: {**b, "Total": "1"}, "'Total' is missing or not a count"),
    (lambda b: {**b, "blacklist": [{"number": "+393401112222", "origin": "STOPSMS"}]}, "no 'phoneNumber'"),
    (lambda b: {**b, "blacklist": [{**b["blacklist"][0], "insertDate": "2026-03-01T10:00:00Z"}]}, "'insertDate'"),
    (lambda b: {**b, "blacklist": [], "Total": 1}, "ends after 0 entries but Total is 1"),
    (lambda b: {**b, "pageNumber": 2}, "answered page 2"),
], ids=["renamed list", "bare list", "Total as text", "entry renamed", "ISO date", "short of Total", "wrong page"])
async def test_a_blacklist_answer_of_another_shape_is_a_protocol_error(sim: SimulatorServer, change, problem) -> None:
    sim.state.play_stop("+393401112222")
    sim.middleware.app = RewriteBlacklist(sim.middleware.app, change)
    async with client(sim) as provider:
        with pytest.raises(ProtocolError, match="unreadable") as caught:
            await all_opt_outs(provider)
    text = str(caught.value)
    assert "smsend-test: list opt-outs" in text and "GET /blacklist/sms" in text and problem in text
