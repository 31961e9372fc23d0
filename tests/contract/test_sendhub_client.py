"""SendHub-specific behaviour of the client, over real HTTP against the SendHub simulator."""

from __future__ import annotations

import logging
import traceback

import pytest
import structlog

from syncd.errors import AuthError, NotFound, ProtocolError, Rejected, TransientError
from syncd.providers.http import RetryPolicy
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
    assert await provider.find_contact("+14152000042") == contact
    assert await provider.find_contact("+14152000043") is None


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
