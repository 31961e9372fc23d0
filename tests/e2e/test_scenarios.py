"""End-to-end scenarios of issue 5, over real HTTP against both simulators and a real database."""

from __future__ import annotations

from collections import Counter

import pytest

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


def seed_sendhub(world: World, n: int) -> list[str]:
    numbers = [f"+1650253{i:04d}" for i in range(n)]
    for i, number in enumerate(numbers):
        world.sendhub.state.add_contact(f"Person {i}", number)
    return numbers


class TestBothSidesChanged:
    def setup_world(self, world: World, policy: str) -> str:
        world.reconfigure(conflict=policy)
        seed_sendhub(world, 4)
        world.sync()
        contact = world.sendhub.state.find("+16502530001")
        world.sendhub.state.edit_contact(contact.id, name="Remote Name", city="Boston")
        world.sql("UPDATE contacts SET name = 'Local', surname = 'Name', email = 'l@x.org' WHERE phone = '+16502530001'")
        return contact.id

    def test_different_fields_merge(self, world: World):
        self.setup_world(world, "local")
        world.sync()
        [row] = world.sql("SELECT name, surname, email, extra FROM contacts WHERE phone = '+16502530001'")
        assert (row.name, row.surname, row.email) == ("Local", "Name", "l@x.org")
        extra = row.extra if isinstance(row.extra, dict) else __import__("json").loads(row.extra)
        assert extra.get("city") == "Boston"  # changed only remotely: kept
        sh = world.sendhub.state.find("+16502530001")
        assert sh.name == "Local Name" and sh.extra.get("email") == "l@x.org" and sh.extra.get("city") == "Boston"

    def test_remote_policy_keeps_the_provider_value(self, world: World):
        self.setup_world(world, "remote")
        world.sync()
        [row] = world.sql("SELECT name, surname FROM contacts WHERE phone = '+16502530001'")
        assert (row.name, row.surname) == ("Remote", "Name")
        [sm] = world.smsend.state.contacts_by_phone("+16502530001")
        assert sm.fields["name"] == "Remote"

    def test_manual_policy_holds_until_resolved_and_logs_both_versions(self, world: World):
        from syncd.sync.resolve import resolve

        self.setup_world(world, "manual")
        world.sync()
        [conflict] = world.sql("SELECT id, before FROM change_log WHERE action = 'conflict' AND status = 'planned'")
        before = conflict.before if isinstance(conflict.before, dict) else __import__("json").loads(conflict.before)
        assert before["local"]["name"] == "Local Name" and before["remote"]["name"] == "Remote Name"
        assert world.sendhub.state.find("+16502530001").name == "Remote Name"  # neither side changed
        world.sync()  # still held, not logged twice
        assert len(world.sql("SELECT id FROM change_log WHERE action = 'conflict' AND status = 'planned'")) == 1
        resolve(world.engine, conflict.id, "remote")
        world.sync()
        [row] = world.sql("SELECT name, surname FROM contacts WHERE phone = '+16502530001'")
        assert (row.name, row.surname) == ("Remote", "Name")

    def test_resolving_keep_local_pushes_it_and_settles_the_conflict_once(self, world: World):
        from syncd.errors import SyncdError
        from syncd.sync.resolve import resolve

        self.setup_world(world, "manual")
        world.sync()
        [conflict] = world.sql("SELECT id FROM change_log WHERE action = 'conflict' AND status = 'planned'")
        message = resolve(world.engine, conflict.id, "local")
        assert message == f"conflict {conflict.id} resolved: local version kept; the next run carries it out"
        world.sync()  # incremental: the journal entry resolve wrote brings the record back
        assert world.sendhub.state.find("+16502530001").name == "Local Name"
        [row] = world.sql("SELECT status, after, resolved_at FROM change_log WHERE id = :id", id=conflict.id)
        after = row.after if isinstance(row.after, dict) else __import__("json").loads(row.after)
        assert row.status == "applied" and after == {"kept": "local"} and row.resolved_at is not None
        with pytest.raises(SyncdError, match="is not waiting for a decision"):
            resolve(world.engine, conflict.id, "remote")
        [applied] = world.sql("SELECT id FROM change_log WHERE action != 'conflict' LIMIT 1")
        with pytest.raises(SyncdError, match="is not a conflict"):
            resolve(world.engine, applied.id, "local")


def test_non_north_american_number_is_rejected_for_sendhub_only(world: World):
    seed_sendhub(world, 3)
    world.sql("INSERT INTO contacts (phone, name) VALUES ('+393471234567', 'Giulia')")
    report = world.sync()
    assert not report.failed
    assert len(world.smsend.state.contacts_by_phone("+393471234567")) == 1
    [row] = world.sql("SELECT status, error FROM change_log WHERE provider = 'sendhub' AND canonical_id = "
                      "(SELECT id FROM contacts WHERE phone = '+393471234567')")
    assert row.status == "rejected" and "10 digit" in row.error
    assert len(smsend_numbers(world)) == 4
    again = world.sync()  # rejected waits for a change: no new request
    assert not again.failed
    assert len(world.sql("SELECT id FROM change_log WHERE status = 'rejected'")) == 1


def test_failing_list_page_deletes_nothing_and_fails_the_provider(world: World):
    seed_sendhub(world, 30)
    world.provider("sendhub", batch_size=100)
    world.sync()
    world.sendhub.faults.failing_pages = {1}
    report = world.sync()
    sendhub = next(p for p in report.providers if p.name == "sendhub")
    assert report.failed and sendhub.status == "failed" and not sendhub.complete
    assert len(canonical(world)) == 30 and len(smsend_numbers(world)) == 30


def test_rejected_credentials_fail_one_provider_and_the_other_syncs(world: World):
    seed_sendhub(world, 3)
    world.smsend.faults.reject_credentials = True
    report = world.sync()
    by_name = {p.name: p for p in report.providers}
    assert report.failed and by_name["smsend"].status == "failed" and "smsend" in by_name["smsend"].error
    assert by_name["sendhub"].status == "ok" and len(canonical(world)) == 3


def test_mass_deletion_is_guarded_until_allowed(world: World):
    numbers = seed_sendhub(world, 8)
    world.sync()
    for number in numbers[:4]:
        world.sendhub.state.delete_contact(world.sendhub.state.find(number).id)
    report = world.sync()
    assert len(canonical(world)) == 8
    assert world.sql("SELECT count(*) FROM change_log WHERE action = 'guarded'")[0][0] >= 1
    assert any(op.action.value == "guarded" for p in report.providers for op in p.plan)
    world.sync(allow_mass_delete=True)
    assert len(canonical(world)) == 4 and len(smsend_numbers(world)) == 4


def test_blocked_at_sendhub_becomes_sticky_opt_out_and_smsend_blacklist(world: World):
    seed_sendhub(world, 3)
    world.sync()
    world.sendhub.state.block("+16502530002")
    world.sync()
    assert world.sql("SELECT opted_out FROM contacts WHERE phone = '+16502530002'")[0][0]
    assert "+16502530002" in world.smsend.state.blacklist
    world.sendhub.state.unblock("+16502530002")
    world.sync()
    assert world.sql("SELECT opted_out FROM contacts WHERE phone = '+16502530002'")[0][0]


def test_steady_state_sends_no_writes(world: World):
    seed_sendhub(world, 25)
    world.sql("INSERT INTO groups (name) VALUES ('Team')")
    world.sync()
    world.sync()
    world.sendhub.reset_counts()
    world.smsend.reset_counts()
    report = world.sync()
    assert report.pending_changes == 0
    writes = [k for s in (world.sendhub, world.smsend) for k in s.request_counts() if not k.startswith("GET")]
    assert writes == []
    sendhub_gets = world.sendhub.request_counts()
    assert sum(sendhub_gets.values()) == 2  # one contact page (limit 1000) and one group page


def test_transient_failures_converge_without_duplicates(world: World):
    seed_sendhub(world, 40)
    world.sql("INSERT INTO contacts (phone, name) VALUES ('+14158675309', 'Jenny')")
    for server in (world.sendhub, world.smsend):
        server.faults.error_rate = 0.2
    for _ in range(5):
        report = world.sync()
        if not report.failed and report.pending_changes == 0:
            break
    for server in (world.sendhub, world.smsend):
        server.faults.error_rate = 0.0
    assert world.sync().pending_changes == 0
    assert max(sendhub_numbers(world).values()) == 1 and len(sendhub_numbers(world)) == 41
    assert len(smsend_numbers(world)) == 41


def test_dropped_responses_produce_no_duplicates(world: World):
    for i in range(6):
        world.sql(f"INSERT INTO contacts (phone, name) VALUES ('+1650253{i:04d}', 'P{i}')")
    world.sendhub.faults.drop_next = 3
    world.smsend.faults.drop_next = 1
    world.sync()
    world.sync()
    assert world.sync().pending_changes == 0
    assert sendhub_numbers(world) == Counter({f"+1650253{i:04d}": 1 for i in range(6)})
    assert smsend_numbers(world) == Counter({f"+1650253{i:04d}": 1 for i in range(6)})


def test_number_changed_by_sql_moves_the_smsend_contact(world: World):
    world.sql("INSERT INTO contacts (phone, name) VALUES ('+393471234567', 'Giulia')")
    world.sync()
    world.sql("UPDATE contacts SET phone = '+393479876543' WHERE phone = '+393471234567'")
    world.sync()
    assert smsend_numbers(world) == Counter({"+393479876543": 1})
    assert world.sync().pending_changes == 0


def test_status_forgets_a_failure_once_the_record_synced(world: World, capsys):
    from syncd.cli.views import show_status

    world.sql("INSERT INTO contacts (phone, name) VALUES ('+16502530001', 'P1')")
    world.sendhub.faults.error_rate = 1.0
    assert world.sync().failed
    world.sendhub.faults.error_rate = 0.0
    assert not world.sync().failed
    show_status(world.engine, world.config)
    assert "No failed, rejected or held records." in capsys.readouterr().out
