"""SendHub-specific behaviour of the client, over real HTTP against the SendHub simulator."""

from __future__ import annotations

import json
import logging
import traceback
from typing import Any

import httpx
import pytest
import structlog

from syncd.errors import AuthError, NotFound, ProtocolError, Rejected, TransientError, Unsupported
from syncd.model import ContactWrite
from syncd.providers import build_provider
from syncd.providers.base import Provider
from syncd.providers.http import RetryPolicy
from syncd.simulators import SimulatorServer
from tests.contract.conftest import FAST_RETRY, settings_for
from tests.contract.test_contract import counted, flatten, listed_groups, person, write

pytestmark = pytest.mark.anyio


@pytest.fixture
def kind() -> str:
    """Every test here is about SendHub."""
    return "sendhub"


# -- contacts ----------------------------------------------------------------------------


async def test_a_number_sendhub_cannot_hold_is_sent_and_rejected_with_sendhubs_reason(env):
    provider, server = env
    italian = person(1, phone="+393401234567")
    [outcome] = await provider.create_contacts([write(provider, italian)])
    assert isinstance(outcome.error, Rejected)
    assert outcome.error.field == "number"
    assert outcome.error.reason == "Only 10 digit numbers are accepted."
    assert str(outcome.error).startswith("sendhub-test: create contact +393401234567 rejected (field number) (HTTP 400)")
    assert await counted(server, "POST /v1/contacts", 1) == 1


async def test_a_create_for_a_number_sendhub_already_holds_links_that_contact(env):
    provider, server = env
    ada = person(1)
    existing = server.state.add_contact("Ada L.", ada.phone)
    [outcome] = await provider.create_contacts([write(provider, ada)])
    assert (outcome.ok, outcome.remote_id, outcome.note) == (True, existing.id, "linked existing contact")
    assert len(server.state.contacts) == 1


async def test_put_replaces_the_contact_with_every_field_and_the_groups_it_keeps(env):
    provider, server = env
    club, team = (server.state.add_group(name).id for name in ("Club", "Team"))
    ada = person(1, extra={"city": "London", "zip": "N1"})
    [created] = await provider.create_contacts([write(provider, ada, {club, team})])

    renamed = person(1, name="Augusta Ada", extra={"city": "London"})  # zip emptied
    [updated] = await provider.update_contacts([write(provider, renamed, {club, team}, created.remote_id)])
    assert updated.ok
    stored = server.state.contacts[created.remote_id]
    assert (stored.name, stored.groups) == ("Augusta Ada Lovelace1", {club, team})
    assert stored.extra == {"city": "London", "email": "ada1@example.com"}

    server.state.put_status = 200  # SH-NEW answers 200 where SEED-002 answers 202
    [updated] = await provider.update_contacts([write(provider, renamed, {team}, created.remote_id)])
    assert updated.ok and server.state.contacts[created.remote_id].groups == {team}


async def test_writing_to_a_contact_gone_at_sendhub(env):
    provider, server = env
    ada = person(1)
    [outcome] = await provider.update_contacts([write(provider, ada, remote_id="123456")])
    assert isinstance(outcome.error, NotFound) and "123456" in str(outcome.error)
    [outcome] = await provider.delete_contacts([write(provider, ada, remote_id="123456")])
    assert (outcome.ok, outcome.note) == (True, "already gone")


async def test_listing_reads_opt_outs_groups_custom_fields_and_dates(env):
    provider, server = env
    group = server.state.add_group("Regulars").id
    server.state.add_contact("Grace Hopper", "+14152000042", groups=[group], blocked=True, city="Arlington")
    [contact] = await flatten(provider.contacts())
    assert contact.opted_out is True and contact.groups == frozenset({group})
    assert contact.fields == {"number": "+14152000042", "name": "Grace Hopper", "city": "Arlington"}
    assert contact.modified_at is not None and contact.modified_at.tzinfo is not None


@pytest.mark.account(contacts=2500)
async def test_a_listing_that_changes_while_paging_is_an_incomplete_pull(env):
    provider, server = env
    pages = provider.contacts()
    first = await anext(pages)
    server.state.delete_contact(first[0].remote_id)  # shifts every later record one place forward
    with pytest.raises(ProtocolError, match="listing changed while paging"):
        await anext(pages)


# -- groups and memberships ----------------------------------------------------------------


async def test_a_group_name_already_taken_answers_that_group(env):
    provider, server = env
    vip = server.state.add_group("VIP").id
    assert await provider.create_group("VIP", "ignored: SendHub groups have no description") == vip
    await provider.delete_group(vip)
    await provider.delete_group(vip)  # already gone counts as deleted
    assert await listed_groups(provider) == {}


async def test_a_group_create_whose_response_is_lost_is_resent_without_duplicating(env):
    provider, server = env
    server.faults.drop_next = 1
    group = await provider.create_group("Lost and Found", "")
    assert await listed_groups(provider) == {group: "Lost and Found"}
    assert None in [status for _, _, status in server.request_log]


async def test_membership_answers_are_settled_per_contact(env):
    provider, server = env
    group = server.state.add_group("Volunteers").id
    ada = server.state.add_contact("Ada", "+14152000001", groups=[group]).id
    bob = server.state.add_contact("Bob", "+14152000002").id
    eve = server.state.add_contact("Eve", "+14152000003").id

    outcome = await provider.change_members(group, add=[ada, bob, "999999"], remove=[eve])

    assert outcome.added == frozenset({ada, bob})  # ada was already in: as good as added
    assert outcome.removed == frozenset({eve})  # eve was never in: as good as removed
    assert set(outcome.errors) == {"999999"}
    assert isinstance(outcome.errors["999999"], Rejected)
    assert "is not an id of one of your contacts" in str(outcome.errors["999999"])
    assert server.state.groups[group].members.keys() == {ada, bob}


async def test_membership_changes_go_in_batches_of_batch_size(simulator, connect):
    server = simulator(contacts=5, groups=1)
    provider = connect(server, batch_size=2)
    [group] = server.state.groups
    ids = list(server.state.contacts)
    server.reset_counts()
    outcome = await provider.change_members(group, add=ids, remove=[])
    assert outcome.added == frozenset(ids)
    assert await counted(server, "POST /v1/groups/{id}/contacts", 3) == 3


# -- secrets -------------------------------------------------------------------------------


async def test_the_api_key_never_reaches_logs_or_error_text(simulator, connect, caplog):
    server = simulator(seed=7)
    api_key = server.credentials["api_key"]
    provider = connect(server, retry=RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01))
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    with structlog.testing.capture_logs() as events:
        await provider.create_group("Visible", "")  # a success, so httpx logs its request line
        server.faults.reject_credentials = True
        with pytest.raises(AuthError) as refused:
            await provider.create_group("Refused", "")
        errors.append(refused.value)
        server.faults.reject_credentials, server.faults.error_rate = False, 1.0
        with pytest.raises(TransientError) as failing:
            await provider.create_group("Failing", "")
        errors.append(failing.value)

    assert any(e["event"] == "http.retry" for e in events), "the retry sequence was not logged"
    assert "HTTP Request" in caplog.text, "httpx's request lines were not captured"
    texts = [repr(events), caplog.text] + ["".join(traceback.format_exception(e)) for e in errors]
    assert all(api_key not in text for text in texts)


# -- replace-style writes keep what syncd does not own (issue 10) --------------------------------


async def test_a_group_rename_keeps_its_text_to_join_keyword_and_reply(env):
    provider, server = env
    group = server.state.add_group("Clients", slug="joincustomers", text_to_subscribe=True, join_message="Welcome!")
    [pulled] = await flatten(provider.groups())
    assert pulled.kept == {"slug": "joincustomers", "text_to_subscribe": True, "ttjResponse": "Welcome!"}

    await provider.update_group(group.id, "Customers", "", kept=pulled.kept)

    stored = server.state.groups[group.id]
    assert (stored.name, stored.slug, stored.text_to_subscribe, stored.join_message) == (
        "Customers", "joincustomers", True, "Welcome!")
    await provider.update_group(group.id, "Customers", "")  # what the client sent before issue 10
    assert (stored.slug, stored.text_to_subscribe) == ("customers", False), "the simulator's PUT is a replace"


async def test_a_contact_put_keeps_screened_keyword_custom_fields_and_groups(env):
    provider, server = env
    team = server.state.add_group("Team").id
    server.state.add_contact("Ann Lee", "+14152000042", groups=[team], screened=True, keyword="annie",
                             city="Boston", **{"member-since": "2019"})
    [pulled] = await flatten(provider.contacts())
    assert pulled.kept == {"screened": True, "keyword": "annie"}

    fields = {**pulled.fields, "name": "Ann B. Lee"}
    update = ContactWrite(ref=1, phone=pulled.phone, fields=fields, groups=pulled.groups, remote_id=pulled.remote_id,
                          kept=pulled.kept)
    [outcome] = await provider.update_contacts([update])

    assert outcome.ok, outcome.error
    stored = server.state.contacts[pulled.remote_id]
    assert (stored.name, stored.screened, stored.keyword, stored.groups) == ("Ann B. Lee", True, "annie", {team})
    assert stored.extra == {"city": "Boston", "member-since": "2019"}


# -- deleted records, 409, request bodies and paths (issue 14) ----------------------------------------


async def test_contacts_and_groups_flagged_deleted_are_absent_from_listings_and_never_linked(env):
    provider, server = env
    kept_group, gone_group = (server.state.add_group(name).id for name in ("Kept", "Gone"))
    ann = server.state.add_contact("Ann", "+14152000001", groups=[kept_group])
    bob = server.state.add_contact("Bob", "+14152000002")
    server.state.mark_deleted(bob.id)
    server.state.mark_group_deleted(gone_group)

    assert [c.remote_id for c in await flatten(provider.contacts())] == [ann.id]
    assert await listed_groups(provider) == {kept_group: "Kept"}
    [created] = await provider.create_contacts([write(provider, person(2, phone="+14152000002"))])
    assert created.ok and created.remote_id != bob.id and created.note != "linked existing contact"
    raw = server.state.snapshot()
    assert sum(1 for c in raw["contacts"] if c.get("deleted")) == 1, "the simulator did list the deleted contact"


async def test_a_409_try_again_later_is_retried_until_it_passes(env):
    provider, server = env
    server.state.busy_next = 2
    group = await provider.create_group("Busy Day", "")
    assert await counted(server, "POST /v1/groups", 3) == 3
    assert [status for method, _, status in server.request_log if method == "POST"] == [409, 409, 201]
    assert await listed_groups(provider) == {group: "Busy Day"}


class BodyRecorder(httpx.AsyncHTTPTransport):
    """Real HTTP, keeping each request's method, path and JSON body."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.sent.append((request.method, request.url.path, body))
        return await super().handle_async_request(request)


def _keys(value: Any) -> set[str]:
    """Every object key anywhere in a JSON value."""
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


async def _every_write(provider: Provider, server: SimulatorServer) -> None:
    """One of each request syncd sends SendHub, around a contact that opted out at SendHub."""
    blocked = server.state.add_contact("Opted Out", "+14152000009", blocked=True, screened=True)
    group = await provider.create_group("All Writes", "")
    [pulled_group] = [g for g in await flatten(provider.groups()) if g.remote_id == group]
    await provider.update_group(group, "All Writes Renamed", "", kept=pulled_group.kept)
    # What a careless engine might hand over: "blocked" among the fields and the kept values.
    careless = {"blocked": True, "number": "+14152000010", "name": "New Person"}
    [created] = await provider.create_contacts([ContactWrite(1, "+14152000010", careless, frozenset({group}),
                                                             kept={"blocked": True})])
    [pulled] = [c for c in await flatten(provider.contacts()) if c.remote_id == blocked.id]
    update = ContactWrite(2, pulled.phone, {**pulled.fields, "blocked": False}, pulled.groups, pulled.remote_id,
                          opted_out=True, kept={**pulled.kept, "blocked": False})
    assert [o.ok for o in await provider.update_contacts([update])] == [True]
    await provider.change_members(group, add=[blocked.id], remove=[created.remote_id or ""])
    # A create of a number SendHub holds: answered "already in your contacts", then looked up by number.
    [linked] = await provider.create_contacts([ContactWrite(3, "+14152000009", {"name": "Opted Out"})])
    assert linked.remote_id == blocked.id
    assert [o.ok for o in await provider.delete_contacts([ContactWrite(1, "+14152000010", {}, remote_id=created.remote_id)])] == [True]
    await provider.delete_group(group)


async def test_blocked_is_never_sent_and_every_path_has_its_trailing_slash(simulator):
    server = simulator()
    recorder = BodyRecorder()
    provider = build_provider(settings_for(server), default_region="US", retry=FAST_RETRY, transport=recorder)
    try:
        await _every_write(provider, server)
    finally:
        await provider.aclose()

    assert {method for method, _, _ in recorder.sent} == {"GET", "POST", "PUT", "DELETE"}
    assert len([body for _, _, body in recorder.sent if body is not None]) >= 6
    assert all("blocked" not in _keys(body) for _, _, body in recorder.sent), recorder.sent
    assert all(path.endswith("/") for _, path, _ in recorder.sent), [p for _, p, _ in recorder.sent]
    assert server.state.find("+14152000009").blocked is True and server.state.find("+14152000009").screened is True


async def test_sendhub_lists_no_opt_outs_of_their_own(env):
    provider, server = env
    assert provider.capabilities.list_opt_outs is False
    with pytest.raises(Unsupported, match="come with the contacts as 'blocked'"):
        provider.opt_outs()
    assert server.request_counts() == {}
