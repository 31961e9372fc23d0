"""The provider contract: what the engine may rely on from every client, checked against each simulator.

Each test runs once per provider over real HTTP on 127.0.0.1 and adapts to
``provider.capabilities`` where the documented APIs differ: SendHub contacts
are read back through the client's own listing, smsend's (which cannot be
listed) through the simulator's state; memberships change through
``change_members`` at SendHub and travel with the contact write at smsend.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import pytest

from syncd.errors import AuthError, ProtocolError, ProviderError, QuotaExhausted, TransientError, UnknownOutcome
from syncd.model import Contact, ContactWrite
from syncd.providers.base import Provider
from syncd.providers.http import RetryPolicy
from syncd.simulators import SimulatorServer

pytestmark = pytest.mark.anyio

#: Items per list page: SendHub's contacts (limit=1000); smsend's groups (the client's pageSize).
PAGE_SIZE = {"sendhub": 1000, "smsend": 100}


# -- helpers --------------------------------------------------------------------------


def person(n: int, **kw: Any) -> Contact:
    """A canonical contact with a valid North American number (every provider takes those)."""
    values: dict[str, Any] = dict(phone=f"+14152{n:06d}", name="Ada", surname=f"Lovelace{n}", email=f"ada{n}@example.com")
    return Contact(id=n, **(values | kw))


def write(provider: Provider, contact: Contact, groups: Iterable[str] = (), remote_id: str | None = None,
          *, replace_groups: bool = False) -> ContactWrite:
    return ContactWrite(
        ref=contact.id or 0, phone=contact.phone, fields=provider.project(contact),
        groups=frozenset(groups), remote_id=remote_id, replace_groups=replace_groups,
    )  # fmt: skip


async def flatten(pages: AsyncIterator[list[Any]]) -> list[Any]:
    return [item async for page in pages for item in page]


async def listed_groups(provider: Provider) -> dict[str, str]:
    return {group.remote_id: group.name for group in await flatten(provider.groups())}


async def read_back(provider: Provider, server: SimulatorServer) -> dict[str, list[tuple[dict[str, Any], frozenset[str]]]]:
    """Stored contacts by phone: ``[(fields in the provider's field space, remote group ids)]``.

    Through the client's listing where the API has one, else from the simulator's state.
    """
    found: dict[str, list[tuple[dict[str, Any], frozenset[str]]]] = {}
    if provider.capabilities.list_contacts:
        for contact in await flatten(provider.contacts()):
            found.setdefault(contact.phone, []).append((dict(contact.fields), contact.groups))
        return found
    for raw in server.state.snapshot()["contacts"]:
        fields = {k: v for k, v in raw.items() if k in provider.capabilities.contact_fields and v}
        found.setdefault(raw["phoneNumber"], []).append((fields, frozenset(raw["groupIds"])))
    return found


async def the_one(provider: Provider, server: SimulatorServer, phone: str) -> tuple[dict[str, Any], frozenset[str]]:
    """The single stored contact with ``phone`` (fails on none or a duplicate)."""
    stored = (await read_back(provider, server)).get(phone, [])
    assert len(stored) == 1, f"expected exactly one contact {phone}, found {len(stored)}"
    return stored[0]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def counted(server: SimulatorServer, endpoint: str | None, expected: int) -> int:
    """Requests the simulator counted for ``endpoint`` (all when None), once it has counted ``expected``.

    The simulator counts a request after sending its response, so the client
    can hold the answer a moment before the count includes it.
    """

    def current() -> int:
        counts = server.request_counts()
        return sum(counts.values()) if endpoint is None else counts.get(endpoint, 0)

    deadline = time.monotonic() + 2.0
    while current() < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return current()


def list_endpoint(provider: Provider, server: SimulatorServer) -> str:
    """The endpoint key of the paged listing under test: contacts where listable, else groups."""
    resource = "contacts" if provider.capabilities.list_contacts else "groups"
    return f"GET {urlsplit(server.base_url).path}/{resource}"


def paged_listing(provider: Provider) -> AsyncIterator[list[Any]]:
    return provider.contacts() if provider.capabilities.list_contacts else provider.groups()


def seeded(provider_kind: str, count: int) -> dict[str, int]:
    return {"contacts": count} if provider_kind == "sendhub" else {"groups": count}


def statuses(server: SimulatorServer) -> list[int | None]:
    return [status for _, _, status in server.request_log]


# -- every operation ---------------------------------------------------------------------


async def test_groups_are_created_listed_renamed_and_deleted(env):
    provider, server = env
    first = await provider.create_group("Customers", "people who buy")
    second = await provider.create_group("Staff", "")
    assert await listed_groups(provider) == {first: "Customers", second: "Staff"}

    await provider.update_group(first, "Best Customers", "people who buy a lot")
    assert (await listed_groups(provider))[first] == "Best Customers"

    await provider.delete_group(second)
    assert await listed_groups(provider) == {first: "Best Customers"}


async def test_contacts_are_created_updated_and_deleted_with_their_groups(env):
    provider, server = env
    club = await provider.create_group("Club", "")
    team = await provider.create_group("Team", "")
    ada = person(1, extra={"city": "London"})

    [created] = await provider.create_contacts([write(provider, ada, groups={club})])
    assert created.ok and created.ref == ada.id and created.remote_id
    assert await the_one(provider, server, ada.phone) == (provider.project(ada), frozenset({club}))

    renamed = person(1, name="Augusta Ada", email="", extra={"city": "Marylebone"})
    # It leaves Club: the engine says so (replace_groups), as smsend's upsert otherwise only adds groups.
    moved = write(provider, renamed, groups={team}, remote_id=created.remote_id, replace_groups=True)
    [updated] = await provider.update_contacts([moved])
    assert updated.ok and updated.remote_id == created.remote_id
    assert await the_one(provider, server, ada.phone) == (provider.project(renamed), frozenset({team}))

    [deleted] = await provider.delete_contacts([write(provider, renamed, remote_id=created.remote_id)])
    assert deleted.ok
    assert ada.phone not in await read_back(provider, server)
    assert set(await listed_groups(provider)) == {club, team}  # deleting contacts keeps their groups


async def test_memberships_are_added_and_removed(env):
    provider, server = env
    group = await provider.create_group("Volunteers", "")
    ada, bob = person(1), person(2)
    outcomes = await provider.create_contacts([write(provider, ada), write(provider, bob)])
    ids = [outcome.remote_id for outcome in outcomes]

    if provider.capabilities.member_changes:
        joined = await provider.change_members(group, add=ids, remove=[])
        assert joined.added == frozenset(ids) and not joined.errors
        left = await provider.change_members(group, add=[], remove=[ids[0]])
        assert left.removed == frozenset({ids[0]}) and not left.errors
    else:  # memberships travel with the contact write, each write carrying the full set
        await provider.update_contacts([write(provider, c, {group}, rid) for c, rid in ((ada, ids[0]), (bob, ids[1]))])
        await provider.update_contacts([write(provider, ada, (), ids[0], replace_groups=True)])

    assert (await the_one(provider, server, ada.phone))[1] == frozenset()
    assert (await the_one(provider, server, bob.phone))[1] == frozenset({group})


# -- pagination --------------------------------------------------------------------------


@pytest.mark.parametrize("pages", [0, 1, 3], ids=["empty", "one-page", "three-pages"])
async def test_listings_stream_every_record_once_page_by_page(kind, simulator, connect, pages):
    page = PAGE_SIZE[kind]
    count = {0: 0, 1: 7, 3: 2 * page + 3}[pages]
    server = simulator(**seeded(kind, count))
    provider = connect(server)

    chunks = [chunk async for chunk in paged_listing(provider)]
    seen = [item.remote_id for chunk in chunks for item in chunk]

    assert len(seen) == len(set(seen)) == count
    assert len([chunk for chunk in chunks if chunk]) == pages
    expected = max(1, math.ceil(count / page))
    assert await counted(server, list_endpoint(provider, server), expected) == expected


async def test_a_failing_page_raises_from_the_iterator_so_the_pull_is_incomplete(kind, simulator, connect):
    server = simulator(**seeded(kind, 2 * PAGE_SIZE[kind] + 3), failing_pages={2})
    provider = connect(server)
    received = []
    with pytest.raises(TransientError) as caught:
        async for chunk in paged_listing(provider):
            received.append(chunk)
    assert len(received) == 1 and len(received[0]) == PAGE_SIZE[kind]
    assert caught.value.provider == f"{kind}-test"


# -- faults ------------------------------------------------------------------------------


async def test_server_errors_are_retried_until_the_operation_succeeds(kind, simulator, connect):
    server = simulator(error_rate=0.5, seed=3)
    provider = connect(server, retry=RetryPolicy(attempts=12, base_delay=0.002, max_delay=0.02, budget=20))

    group = await provider.create_group("Resilient", "")
    outcomes = await provider.create_contacts([write(provider, person(n), {group}) for n in range(4)])
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes]

    server.faults.error_rate = 0.0
    assert {500, 503} & set(statuses(server)), "no server error was injected"
    assert await listed_groups(provider) == {group: "Resilient"}
    for n in range(4):
        assert (await the_one(provider, server, person(n).phone))[1] == frozenset({group})


async def test_throttling_waits_as_long_as_the_provider_says(env):
    provider, server = env
    server.faults.throttle_wait = 1.0
    server.faults.throttle_rate = 1.0
    started = time.monotonic()
    task = asyncio.create_task(provider.create_group("Patient", ""))
    await until(lambda: 429 in statuses(server))
    server.faults.throttle_rate = 0.0
    group = await task
    assert time.monotonic() - started >= server.faults.throttle_wait
    assert await listed_groups(provider) == {group: "Patient"}


async def test_a_create_whose_response_is_lost_never_leaves_a_duplicate(env):
    provider, server = env
    ada = person(1)
    server.faults.drop_next = 1
    [outcome] = await provider.create_contacts([write(provider, ada)])

    if not provider.capabilities.contact_id_is_phone:
        # A plain create cannot be re-sent blindly: the outcome is reported unknown...
        assert isinstance(outcome.error, UnknownOutcome)
        assert ada.phone in str(outcome.error)
        # ...and the client settles it when the create is tried again: it links the contact the lost one made.
        [again] = await provider.create_contacts([write(provider, ada)])
        assert (again.ok, again.note) == (True, "linked existing contact")
    elif not outcome.ok:
        # A keyed upsert is simply sent again.
        assert isinstance(outcome.error, UnknownOutcome)
        [again] = await provider.create_contacts([write(provider, ada)])
        assert again.ok
    assert None in statuses(server), "no connection was dropped"
    await the_one(provider, server, ada.phone)


async def test_a_malformed_body_is_a_protocol_error_naming_the_endpoint(env):
    provider, server = env
    await provider.create_group("Anything", "")
    server.faults.malformed_next = 1
    with pytest.raises(ProtocolError) as caught:
        await listed_groups(provider)
    assert f"{urlsplit(server.base_url).path}/groups" in str(caught.value)
    assert "GET" in str(caught.value)


async def test_refused_credentials_are_an_auth_error_sent_once(env):
    provider, server = env
    server.faults.reject_credentials = True
    server.reset_counts()
    with pytest.raises(AuthError) as caught:
        await provider.create_group("Nope", "")
    assert await counted(server, None, 1) == 1
    for secret in server.credentials.values():
        if secret != server.credentials.get("username"):
            assert secret not in str(caught.value)


async def test_a_spent_quota_stops_every_further_write(env):
    provider, server = env
    if server.kind != "sendhub":
        pytest.skip(f"{server.kind} documents no quota status")
    group = await provider.create_group("Before", "")
    server.faults.quota_exhausted = True
    with pytest.raises(QuotaExhausted):
        await provider.create_group("During", "")

    server.faults.quota_exhausted = False  # even once the provider would take it again, this run stops
    sent = provider.stats.requests
    [outcome] = await provider.create_contacts([write(provider, person(1))])
    assert isinstance(outcome.error, QuotaExhausted)
    with pytest.raises(QuotaExhausted):
        await provider.delete_group(group)
    assert provider.stats.requests == sent
    assert await listed_groups(provider) == {group: "Before"}  # reads still work


async def test_errors_name_the_account_the_operation_and_the_record(env):
    provider, server = env
    server.faults.reject_credentials = True
    with pytest.raises(ProviderError) as caught:
        await provider.create_group("Named", "")
    text = str(caught.value)
    assert f"{server.kind}-test" in text and "create group" in text
