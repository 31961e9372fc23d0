"""End-to-end scenarios of issue 5, over real HTTP against both simulators and a real database."""

from __future__ import annotations

from collections import Counter

from tests.e2e.conftest import World


def sendhub_numbers(world: World) -> Counter:
    return Counter(c["number"] for c in world.sendhub.state.snapshot()["contacts"])


def smsend_numbers(world: World) -> Counter:
    return Counter(c["phoneNumber"] for c in world.smsend.state.snapshot()["contacts"])


def canonical(world: World) -> dict[str, tuple]:
    return {r.phone: (r.name, r.surname) for r in world.sql("SELECT phone, name, surname FROM contacts")}


def test_first_run_merges_both_sides_without_duplicates(world: World):
    sh = world.sendhub.state
    group = sh.add_group("Customers")
    sh.add_contact("John Doe", "6502531234", groups=[group.id])
    sh.add_contact("Ann Lee", "+14155550123")
    world.smsend.state.create_group("customers ", "case-folded match")
    world.sql("INSERT INTO contacts (phone, name, surname) VALUES ('+16502531234', 'John', 'Doe')")
    world.sql("INSERT INTO contacts (phone, name) VALUES ('(212) 867-5309', 'Local Only')")

    report = world.sync()
    assert report.status == "ok", [p.summary() for p in report.providers]
    assert set(canonical(world)) == {"+16502531234", "+14155550123", "+12128675309"}
    assert sendhub_numbers(world) == Counter({"+16502531234": 1, "+14155550123": 1, "+12128675309": 1})
    assert smsend_numbers(world) == Counter({"+16502531234": 1, "+14155550123": 1, "+12128675309": 1})
    assert [g["name"] for g in world.smsend.state.snapshot()["groups"]] == ["customers "]
    assert world.sql("SELECT count(*) FROM groups")[0][0] == 1

    second = world.sync()
    assert second.pending_changes == 0, [(op.reason, op.before, op.after) for p in second.providers for op in p.plan if op.is_change]


def test_edit_at_sendhub_reaches_the_book_and_smsend_in_one_run(world: World):
    contact = world.sendhub.state.add_contact("John Doe", "6502531234")
    world.sync()
    world.sendhub.state.edit_contact(contact.id, name="Johnny Doe")
    world.sync()
    assert canonical(world)["+16502531234"] == ("Johnny", "Doe")
    [smsend_contact] = world.smsend.state.snapshot()["contacts"]
    assert smsend_contact["name"] == "Johnny"


def test_deletion_at_sendhub_is_carried_everywhere(world: World):
    for i in range(5):
        world.sendhub.state.add_contact(f"Person {i}", f"650253000{i}")
    world.sync()
    victim = world.sendhub.state.find("+16502530000")
    world.sendhub.state.delete_contact(victim.id)
    report = world.sync()
    assert "+16502530000" not in canonical(world)
    assert "+16502530000" not in smsend_numbers(world)
    assert report.status == "ok"


def test_sql_edits_are_carried_to_both_providers(world: World):
    world.sql("INSERT INTO groups (name) VALUES ('VIP')")
    for i in range(5):
        world.sql(f"INSERT INTO contacts (phone, name) VALUES ('+1650253001{i}', 'P{i}')")
    world.sync()
    world.sql("UPDATE contacts SET email = 'a@b.org' WHERE phone = '+16502530010'")
    world.sql("INSERT INTO group_members (group_id, contact_id) SELECT g.id, c.id FROM groups g, contacts c "
              "WHERE c.phone = '+16502530011'")
    world.sql("DELETE FROM contacts WHERE phone = '+16502530012'")
    report = world.sync()
    assert report.status == "ok", [p.summary() for p in report.providers]
    sh = {c["number"]: c for c in world.sendhub.state.snapshot()["contacts"]}
    sm = {c["phoneNumber"]: c for c in world.smsend.state.snapshot()["contacts"]}
    assert sh["+16502530010"]["email"] == "a@b.org" and sm["+16502530010"]["email"] == "a@b.org"
    assert len(sh["+16502530011"]["groups"]) == 1 and len(sm["+16502530011"]["groupIds"]) == 1
    assert "+16502530012" not in sh and "+16502530012" not in sm
    assert world.sync().pending_changes == 0
