"""Operator control of deletions and of what each provider takes (issue 13), over real HTTP on SQLite and PostgreSQL.

Deletion policies: ``approve`` (pending deletes approved, declined and called
off), ``never`` (across several runs), and selective sync (a filter added,
changed and removed).
"""

from __future__ import annotations

import json
from typing import Any

from syncd.db.pending import decide, pending_deletes
from tests.e2e.conftest import World

A, B, C = "+16502530001", "+16502530002", "+16502530003"


def book(world: World) -> set[str]:
    return {phone for (phone,) in world.sql("SELECT phone FROM contacts")}


def at_sendhub(world: World) -> set[str]:
    return {c["number"] for c in world.sendhub.state.snapshot()["contacts"] if not c.get("deleted")}


def at_smsend(world: World) -> set[str]:
    return {c["phoneNumber"] for c in world.smsend.state.snapshot()["contacts"]}


def three_everywhere(world: World, **sync_settings: Any) -> None:
    world.reconfigure(max_delete_fraction=1.0, **sync_settings)
    world.sql("INSERT INTO contacts (phone, name) VALUES (:a, 'Ann'), (:b, 'Bob'), (:c, 'Cid')", a=A, b=B, c=C)
    world.sync()
    assert at_sendhub(world) == at_smsend(world) == {A, B, C}


class TestApprove:
    def test_a_deletion_in_the_book_waits_for_approval_then_is_carried_out(self, world: World):
        three_everywhere(world, deletes="approve")
        world.sql("DELETE FROM contacts WHERE phone = :a", a=A)
        world.sync()
        waiting = pending_deletes(world.engine)
        assert {(p.provider, p.direction) for p in waiting} == {("sendhub", "outbound"), ("smsend", "outbound")}
        assert all(p.last_version and p.last_version.get("name", p.last_version.get("name")) for p in waiting)
        assert A in at_sendhub(world) and A in at_smsend(world), "nothing deleted before approval"
        world.sync()
        assert len(pending_deletes(world.engine)) == 2, "listed once, not once per run"

        [sendhub] = [p.id for p in waiting if p.provider == "sendhub"]
        decide(world.engine, [sendhub], approve=True)
        world.sync()
        assert A not in at_sendhub(world) and A in at_smsend(world)
        assert [p.provider for p in pending_deletes(world.engine)] == ["smsend"]

    def test_a_declined_deletion_restores_the_record_on_the_side_that_lost_it(self, world: World):
        three_everywhere(world, deletes="approve")
        victim = world.sendhub.state.find(B)
        world.sendhub.state.delete_contact(victim.id)  # deleted at SendHub: would delete it from the book
        world.sync()
        [waiting] = pending_deletes(world.engine)
        assert (waiting.provider, waiting.direction) == ("sendhub", "inbound") and B in book(world)
        decide(world.engine, None, approve=False)
        world.sync()
        assert B in at_sendhub(world) and B in book(world) and B in at_smsend(world)
        assert pending_deletes(world.engine) == []
        assert world.sync().pending_changes == 0

    def test_a_pending_delete_calls_itself_off_when_the_record_comes_back(self, world: World):
        three_everywhere(world, deletes="approve")
        victim = world.sendhub.state.find(C)
        world.sendhub.state.mark_deleted(victim.id)
        world.sync()
        assert len(pending_deletes(world.engine)) == 1
        world.sendhub.state.restore(victim.id)
        world.sync()
        assert pending_deletes(world.engine) == []
        [(status, error)] = world.sql("SELECT status, error FROM change_log WHERE status = 'cancelled'")
        assert "came back" in error
        assert C in book(world) and C in at_sendhub(world)

    def test_the_mass_delete_guard_still_holds_approved_deletes(self, world: World):
        three_everywhere(world, deletes="approve")
        world.reconfigure(max_delete_fraction=0.25, deletes="approve")
        world.sql("DELETE FROM contacts")
        world.sync()
        decide(world.engine, None, approve=True)
        report = world.sync()
        assert any(op.action.value == "guarded" for p in report.providers for op in p.plan)
        assert at_sendhub(world) == {A, B, C}


class TestDeletesCommand:
    """``syncd deletes``: list, approve and reject through the real command line."""

    def test_listed_then_approved_by_id(self, world: World):
        three_everywhere(world, deletes="approve")
        world.sql("DELETE FROM contacts WHERE phone = :a", a=A)
        world.sync()
        listed = world.cli("deletes")
        assert listed.exit_code == 0 and "deletes from" in listed.output and "Ann" in listed.output, listed.output
        [sendhub, smsend] = sorted(json.loads(world.cli("deletes", "--json").output), key=lambda p: p["provider"])
        assert (sendhub["side"], sendhub["entity"], sendhub["last_version"]["number"]) == ("sendhub", "contact", A)
        assert smsend["side"] == "smsend" and smsend["remote_id"] == A
        approved = world.cli("deletes", "approve", str(sendhub["id"]))
        assert approved.exit_code == 0 and "1 deletion approved" in approved.output, approved.output
        world.sync()
        assert A not in at_sendhub(world) and A in at_smsend(world)
        assert [p["id"] for p in json.loads(world.cli("deletes", "--json").output)] == [smsend["id"]]

    def test_rejected_all_of_one_provider(self, world: World):
        three_everywhere(world, deletes="approve")
        world.sql("DELETE FROM contacts WHERE phone = :a", a=A)
        world.sync()
        rejected = world.cli("deletes", "reject", "--all", "--provider", "smsend")
        assert rejected.exit_code == 0 and "1 deletion rejected" in rejected.output, rejected.output
        world.sync()
        assert world.sql("SELECT id FROM contacts WHERE phone = :a", a=A) == [(1,)], "restored under its old id"
        assert world.cli("deletes", "--json").output.strip() == "[]", "back in the book: sendhub's delete is off"
        [(reason,)] = world.sql("SELECT reason FROM change_log WHERE status = 'applied' AND reason LIKE '%declined%'")
        assert reason.endswith("restored in the book")
        [(note,)] = world.sql("SELECT error FROM change_log WHERE provider = 'sendhub' AND status = 'cancelled'")
        assert "came back" in note
        assert world.sync().pending_changes == 0 and at_sendhub(world) == at_smsend(world) == book(world)

    def test_bad_input_is_exit_2_naming_it(self, world: World):
        three_everywhere(world, deletes="approve")
        unknown = world.cli("deletes", "approve", "999")
        assert unknown.exit_code == 2 and "999 is not a deletion awaiting approval" in unknown.output
        both = world.cli("deletes", "approve", "1", "--all")
        assert both.exit_code == 2 and "not both" in both.output
        typo = world.cli("deletes", "--provider", "sendhbu")
        assert typo.exit_code == 2 and "unknown provider sendhbu" in typo.output
        assert world.cli("deletes").output.strip() == "No deletion is waiting for approval."


class TestNever:
    def test_never_keeps_the_provider_whole_across_runs(self, world: World):
        three_everywhere(world)
        world.provider("sendhub", deletes="never")
        world.sql("DELETE FROM contacts WHERE phone = :a", a=A)
        for _ in range(3):
            world.sync()
        assert A in at_sendhub(world) and A not in at_smsend(world) and A not in book(world)
        kept = world.sql("SELECT count(*) FROM change_log WHERE provider = 'sendhub' AND status = 'skipped' "
                         "AND error LIKE 'deletes = never%'")[0][0]
        assert kept == 1, "logged once"

    def test_a_record_deleted_at_a_never_provider_is_re_created_there(self, world: World):
        three_everywhere(world)
        world.provider("sendhub", deletes="never")
        world.sendhub.state.delete_contact(world.sendhub.state.find(B).id)
        world.sync()
        assert B in book(world) and B in at_sendhub(world) and B in at_smsend(world)
        assert world.sync().pending_changes == 0


class TestSelection:
    def setup_groups(self, world: World) -> None:
        world.sql("INSERT INTO groups (name) VALUES ('VIP'), ('Staff')")
        world.sql("INSERT INTO contacts (phone, name) VALUES (:a, 'Ann'), (:b, 'Bob'), (:c, 'Cid')", a=A, b=B, c=C)
        world.sql("INSERT INTO group_members (group_id, contact_id) SELECT g.id, c.id FROM groups g, contacts c "
                  "WHERE (g.name = 'VIP' AND c.phone IN (:a, :b)) OR (g.name = 'Staff' AND c.phone = :b)", a=A, b=B)

    def test_only_included_groups_reach_the_provider_and_leaving_deletes_there(self, world: World):
        self.setup_groups(world)
        world.reconfigure(max_delete_fraction=1.0)
        world.provider("sendhub", include_groups=("vip",))
        world.sync()
        assert at_sendhub(world) == {A, B} and at_smsend(world) == {A, B, C}
        assert [g["name"] for g in world.sendhub.state.snapshot()["groups"]] == ["VIP"], "Staff is not sent there"

        world.sql("DELETE FROM group_members WHERE contact_id = (SELECT id FROM contacts WHERE phone = :a)", a=A)
        world.sync()
        assert at_sendhub(world) == {B} and A in book(world) and A in at_smsend(world)
        [reason] = [r for (r,) in world.sql("SELECT reason FROM change_log WHERE provider = 'sendhub' "
                                          "AND action = 'delete' AND direction = 'outbound'")]
        assert "left the selection" in reason

    def test_changing_and_removing_the_filter_brings_the_provider_in_line(self, world: World):
        self.setup_groups(world)
        world.reconfigure(max_delete_fraction=1.0)
        world.provider("sendhub", include_groups=("VIP",))
        world.sync()
        world.provider("sendhub", include_groups=("VIP",), exclude_groups=("staff",))
        world.sync()
        assert at_sendhub(world) == {A}
        world.provider("sendhub", include_groups=None, exclude_groups=())
        world.sync()
        assert at_sendhub(world) == {A, B, C}
        assert world.sync().pending_changes == 0

    def test_a_filter_naming_no_group_is_a_warning(self, world: World):
        world.provider("sendhub", include_groups=("No Such Group",))
        report = world.sync()
        [sendhub] = [p for p in report.providers if p.name == "sendhub"]
        assert report.status == "ok" and any("No Such Group" in w for w in sendhub.warnings)
