"""A contact's number is a field like any other (issue 10): changed at SendHub or in the book,
the record stays the same everywhere, over real HTTP against both simulators."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e.conftest import World

OLD, NEW, OTHER = "+16502530001", "+16502539999", "+16502530002"


def book(world: World) -> dict[str, Any]:
    return {r.phone: r for r in world.sql("SELECT id, phone, name, surname, opted_out FROM contacts")}


def smsend_by_phone(world: World) -> dict[str, dict[str, Any]]:
    return {c["phoneNumber"]: c for c in world.smsend.state.snapshot()["contacts"]}


def linked_sendhub_contact(world: World) -> tuple[str, str]:
    """A SendHub contact in a group, with a custom field, synced once: (its id, its group's id)."""
    sh = world.sendhub.state
    group = sh.add_group("Customers")
    contact = sh.add_contact("John Doe", OLD, groups=[group.id], city="Boston")
    sh.add_contact("Ann Lee", OTHER)
    first = world.sync()
    assert first.status == "ok", [p.summary() for p in first.providers]
    return contact.id, group.id


def assert_in_step(world: World) -> None:
    after = world.sync()
    assert after.status == "ok" and after.pending_changes == 0, [
        (p.name, op.action, op.reason, op.before, op.after) for p in after.providers for op in p.plan if op.is_change]


def test_number_edited_at_sendhub_reaches_the_book_and_smsend(world: World):
    contact_id, group_id = linked_sendhub_contact(world)
    [cid] = [r.id for r in world.sql("SELECT id FROM contacts WHERE phone = :p", p=OLD)]
    world.sendhub.state.edit_contact(contact_id, number=NEW)

    report = world.sync()
    assert report.status == "ok", [p.summary() for p in report.providers]
    rows = book(world)
    assert OLD not in rows and rows[NEW].id == cid  # the same canonical row, new number
    sh = world.sendhub.state.find(NEW)
    assert sh is not None and sh.id == contact_id and group_id in sh.groups and sh.extra.get("city") == "Boston"
    sm = smsend_by_phone(world)
    assert OLD not in sm, "the old number is removed at smsend"
    assert sm[NEW]["name"] == "John" and sm[NEW]["city"] == "Boston" and len(sm[NEW]["groupIds"]) == 1
    assert not [g for g in world.smsend.state.snapshot()["groups"] if g["name"] != "Customers"], \
        "only the temporary group was deleted, never an existing one"
    [link] = world.sql("SELECT remote_id FROM links WHERE provider = 'smsend' AND entity = 'contact' "
                       "AND canonical_id = :c", c=cid)
    assert link.remote_id == NEW  # the link's key follows the change
    [logged] = world.sql("SELECT after FROM change_log WHERE provider = 'sendhub' AND direction = 'inbound' "
                         "AND action = 'update' AND status = 'applied'")
    after = logged.after if isinstance(logged.after, dict) else json.loads(logged.after)
    assert after["number"] == NEW
    assert_in_step(world)


def test_number_edited_by_sql_keeps_the_sendhub_id_and_groups(world: World):
    contact_id, group_id = linked_sendhub_contact(world)
    world.sql("UPDATE contacts SET phone = :new WHERE phone = :old", new="(650) 253-9999", old=OLD)

    report = world.sync()
    assert report.status == "ok", [p.summary() for p in report.providers]
    assert NEW in book(world)  # normalised to E.164
    sh = world.sendhub.state.find(NEW)
    assert sh is not None and sh.id == contact_id, "the same SendHub contact, not a new one"
    assert group_id in sh.groups and sh.extra.get("city") == "Boston"
    assert world.sendhub.state.find(OLD) is None
    assert len(world.sendhub.state.snapshot()["contacts"]) == 2
    sm = smsend_by_phone(world)
    assert OLD not in sm and len(sm[NEW]["groupIds"]) == 1 and sm[NEW]["city"] == "Boston"
    assert len(world.smsend.state.contacts_by_phone(NEW)) == 1
    assert_in_step(world)


def test_an_opt_out_follows_the_new_number(world: World):
    contact_id, _ = linked_sendhub_contact(world)
    world.sendhub.state.block(OLD)
    world.sync()
    assert OLD in world.smsend.state.snapshot()["blacklist"]
    world.sendhub.state.edit_contact(contact_id, number=NEW)

    assert world.sync().status == "ok"
    assert book(world)[NEW].opted_out
    assert NEW in world.smsend.state.snapshot()["blacklist"]
    assert_in_step(world)


def test_number_taken_by_another_canonical_contact_is_a_reported_conflict(world: World):
    contact_id, _ = linked_sendhub_contact(world)
    # Between two runs, John's number changes at SendHub and a new contact with that number is added to the book.
    world.sendhub.state.edit_contact(contact_id, number=NEW)
    world.sql("INSERT INTO contacts (phone, name) VALUES (:p, 'Book Only')", p=NEW)

    for _ in range(2):  # and nothing merges on a later run either
        world.sync()
        rows = book(world)
        assert (rows[NEW].name, rows[OLD].name) == ("Book Only", "John"), "nothing merged silently"
        links = {r.canonical_id: r.remote_id for r in world.sql(
            "SELECT canonical_id, remote_id FROM links WHERE provider = 'sendhub' AND entity = 'contact'")}
        assert links[rows[OLD].id] == contact_id and links.get(rows[NEW].id) != contact_id
    conflicts = world.sql("SELECT reason, error, status FROM change_log WHERE provider = 'sendhub' "
                          "AND action = 'conflict' AND canonical_id = :c", c=rows[OLD].id)
    assert len(conflicts) == 1 and NEW in conflicts[0].error and conflicts[0].status == "planned", conflicts
    refused = world.sql("SELECT error FROM change_log WHERE provider = 'sendhub' AND action = 'create' "
                        "AND canonical_id = :c AND status = 'rejected'", c=rows[NEW].id)
    assert refused and contact_id in refused[0].error, "the book-only contact is not linked to John's record"
    assert world.sendhub.state.find(NEW).name == "John Doe"


def test_number_changed_on_both_sides_is_a_field_conflict(world: World):
    contact_id, _ = linked_sendhub_contact(world)
    world.sendhub.state.edit_contact(contact_id, number="+16502538888")
    world.sql("UPDATE contacts SET phone = :new WHERE phone = :old", new=NEW, old=OLD)

    world.sync()  # the default policy keeps the local side
    [conflict] = world.sql("SELECT before FROM change_log WHERE provider = 'sendhub' AND action = 'conflict'")
    versions = conflict.before if isinstance(conflict.before, dict) else json.loads(conflict.before)
    assert versions["local"]["number"] == NEW and versions["remote"]["number"] == "+16502538888"
    assert NEW in book(world) and world.sendhub.state.find(NEW).id == contact_id
    assert "+16502538888" not in smsend_by_phone(world) and NEW in smsend_by_phone(world)
    assert_in_step(world)


def test_group_renamed_in_the_book_keeps_its_sendhub_keyword_and_text_to_join(world: World):
    """SendHub's group edit replaces the group: a rename must resend what syncd does not own."""
    group = world.sendhub.state.add_group("Customers", slug="joincustomers", text_to_subscribe=True,
                                          join_message="Welcome aboard")
    world.sync()
    world.sql("UPDATE groups SET name = 'Clients' WHERE name = 'Customers'")

    assert world.sync().status == "ok"
    [renamed] = world.sendhub.state.snapshot()["groups"]
    assert renamed["id"] == group.id and renamed["name"] == "Clients"
    assert (renamed["slug"], renamed["text_to_subscribe"], renamed["ttjResponse"]) == (
        "joincustomers", True, "Welcome aboard")
    assert_in_step(world)


def test_group_removed_from_a_contact_at_smsend_while_its_other_groups_stay(world: World):
    """smsend's upsert adds groups unless told to replace them: a removal must replace, an edit must not."""
    world.sql("INSERT INTO groups (name) VALUES ('A'), ('B')")
    world.sql("INSERT INTO contacts (phone, name) VALUES (:p, 'Both')", p=OLD)
    world.sql("INSERT INTO group_members (group_id, contact_id) SELECT g.id, c.id FROM groups g, contacts c")
    world.sync()
    world.sql("DELETE FROM group_members WHERE group_id = (SELECT id FROM groups WHERE name = 'A')")

    assert world.sync().status == "ok"
    by_name = {g["id"]: g["name"] for g in world.smsend.state.snapshot()["groups"]}
    assert [by_name[g] for g in smsend_by_phone(world)[OLD]["groupIds"]] == ["B"]
    assert_in_step(world)
