"""One test per row of the decision table (design §1), named after the row."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from syncd.sync.plan import Action, Direction, Entity
from syncd.model import BaseRecord, LocalRecord, RemoteRecord
from syncd.sync.reconcile import Policy, merge_fields, reconcile

C = Entity.CONTACT
P = Policy("sendhub")
BASE_FIELDS = {"number": "+16501234567", "name": "John Doe"}


def loc(fields=None, cid=1, key="+16501234567", **kw):
    return {cid: LocalRecord(cid, key, dict(BASE_FIELDS if fields is None else fields), **kw)}


def rem(fields=None, rid="r1", key="+16501234567", **kw):
    return {rid: RemoteRecord(rid, key, dict(BASE_FIELDS if fields is None else fields), **kw)}


def linked(fields=None, cid=1, rid="r1"):
    return {cid: BaseRecord(rid, dict(BASE_FIELDS if fields is None else fields))}


def kinds(ops):
    return [(op.action, op.direction) for op in ops]


def test_none_present_absent_creates_remote():
    ops = reconcile(C, {}, loc(), {}, P)
    assert kinds(ops) == [(Action.CREATE, Direction.OUTBOUND)]
    assert ops[0].after == BASE_FIELDS and ops[0].reason == "new locally, absent at sendhub"


def test_none_absent_present_without_match_creates_canonical():
    ops = reconcile(C, {}, {}, rem(), P)
    assert kinds(ops) == [(Action.CREATE, Direction.INBOUND)]
    assert ops[0].remote_id == "r1"


def test_none_absent_present_with_match_links():
    ops = reconcile(C, {}, loc(), rem(), P)
    assert kinds(ops) == [(Action.LINK, Direction.INBOUND)]
    assert (ops[0].canonical_id, ops[0].remote_id) == (1, "r1")


def test_none_present_present_same_key_differing_fields_is_a_conflict():
    ops = reconcile(C, {}, loc({**BASE_FIELDS, "name": "Johnny"}), rem(), P)
    assert kinds(ops) == [(Action.LINK, Direction.INBOUND), (Action.CONFLICT, Direction.INBOUND),
                          (Action.UPDATE, Direction.OUTBOUND)]
    assert ops[2].after["name"] == "Johnny"  # local wins by default


def test_none_present_present_fields_on_one_side_only_merge_without_conflict():
    ops = reconcile(C, {}, loc({**BASE_FIELDS, "email": "j@x.org"}), rem({**BASE_FIELDS, "city": "Rome"}), P)
    assert Action.CONFLICT not in [op.action for op in ops]
    out = [op for op in ops if op.direction is Direction.OUTBOUND][0]
    inb = [op for op in ops if op.action is Action.UPDATE and op.direction is Direction.INBOUND][0]
    assert out.after == inb.after == {**BASE_FIELDS, "email": "j@x.org", "city": "Rome"}


def test_same_unchanged_unchanged_does_nothing():
    assert reconcile(C, linked(), loc(), rem(), P) == []


def test_same_changed_unchanged_updates_remote():
    ops = reconcile(C, linked(), loc({**BASE_FIELDS, "name": "Jesse Doe"}), rem(), P)
    assert kinds(ops) == [(Action.UPDATE, Direction.OUTBOUND)]
    assert ops[0].reason == "changed locally, unchanged at sendhub"
    assert ops[0].before == BASE_FIELDS and ops[0].after["name"] == "Jesse Doe"


def test_same_unchanged_changed_updates_canonical():
    ops = reconcile(C, linked(), loc(), rem({**BASE_FIELDS, "name": "Jesse Doe"}), P)
    assert kinds(ops) == [(Action.UPDATE, Direction.INBOUND)]
    assert ops[0].after["name"] == "Jesse Doe"


def test_same_changed_changed_equal_content_advances_the_base():
    new = {**BASE_FIELDS, "name": "Jesse Doe"}
    ops = reconcile(C, linked(), loc(new), rem(new), P)
    assert kinds(ops) == [(Action.LINK, Direction.INBOUND)]
    assert ops[0].after == new


def test_same_changed_changed_different_content_is_a_conflict():
    ops = reconcile(C, linked(), loc({**BASE_FIELDS, "name": "A"}), rem({**BASE_FIELDS, "name": "B"}), P)
    conflict = ops[0]
    assert conflict.action is Action.CONFLICT
    assert conflict.local["name"] == "A" and conflict.remote["name"] == "B"  # both versions kept
    assert kinds(ops[1:]) == [(Action.UPDATE, Direction.OUTBOUND)]


def test_same_deleted_unchanged_deletes_remote():
    ops = reconcile(C, linked(), {}, rem(), P)
    assert kinds(ops) == [(Action.DELETE, Direction.OUTBOUND)]


def test_same_unchanged_deleted_deletes_canonical():
    ops = reconcile(C, linked(), loc(), {}, P)
    assert kinds(ops) == [(Action.DELETE, Direction.INBOUND)]
    assert ops[0].canonical_id == 1


def test_same_deleted_deleted_forgets_the_link():
    ops = reconcile(C, linked(), {}, {}, P)
    assert kinds(ops) == [(Action.UNLINK, Direction.OUTBOUND)]
    assert not ops[0].is_change


def test_same_deleted_changed_is_a_conflict():
    ops = reconcile(C, linked(), {}, rem({**BASE_FIELDS, "name": "B"}), P)
    assert ops[0].action is Action.CONFLICT and ops[0].local is None and ops[0].remote["name"] == "B"
    assert kinds(ops[1:]) == [(Action.DELETE, Direction.OUTBOUND)]  # local (the deletion) wins by default


def test_same_changed_deleted_is_a_conflict():
    ops = reconcile(C, linked(), loc({**BASE_FIELDS, "name": "A"}), {}, P)
    assert ops[0].action is Action.CONFLICT and ops[0].remote is None
    assert kinds(ops[1:]) == [(Action.CREATE, Direction.OUTBOUND)]  # local edit wins: re-created


class TestFieldMerge:
    def test_different_fields_changed_on_each_side_both_kept(self):
        merged, conflicts = merge_fields({"name": "a", "email": "x"}, {"name": "a", "email": "y"},
                                         {"name": "b", "email": "x"}, prefer="local")
        assert merged == {"name": "b", "email": "y"} and conflicts == []

    def test_same_field_changed_to_same_value_is_no_conflict(self):
        merged, conflicts = merge_fields({"name": "a"}, {"name": "b"}, {"name": "b"}, prefer="local")
        assert merged == {"name": "b"} and conflicts == []

    def test_field_removed_on_one_side(self):
        merged, _ = merge_fields({"name": "a", "city": "x"}, {"name": "a"}, {"name": "a", "city": "x"}, prefer="local")
        assert merged == {"name": "a"}

    def test_groups_merge_element_wise(self):
        merged, conflicts = merge_fields({"groups": [1, 2]}, {"groups": [1, 2, 3]}, {"groups": [2, 4]}, prefer="local")
        assert merged == {"groups": [2, 3, 4]} and conflicts == []


class TestPolicies:
    def both_changed(self, policy, local_time=None, remote_time=None):
        return reconcile(C, linked(), loc({**BASE_FIELDS, "name": "A"}, modified_at=local_time),
                         rem({**BASE_FIELDS, "name": "B"}, modified_at=remote_time), policy)

    def test_local_policy_keeps_canonical(self):
        ops = self.both_changed(Policy("sendhub", conflict="local"))
        assert [op.after["name"] for op in ops if op.action is Action.UPDATE] == ["A"]
        assert ops[-1].direction is Direction.OUTBOUND

    def test_remote_policy_keeps_provider(self):
        ops = self.both_changed(Policy("sendhub", conflict="remote"))
        updates = [op for op in ops if op.action is Action.UPDATE]
        assert [(op.direction, op.after["name"]) for op in updates] == [(Direction.INBOUND, "B")]

    @pytest.mark.parametrize(("local_h", "remote_h", "winner"), [(1, 2, "B"), (2, 1, "A")])
    def test_newest_policy_keeps_the_later_modification(self, local_h, remote_h, winner):
        t = lambda h: datetime(2026, 1, 1, h, tzinfo=timezone.utc)  # noqa: E731
        ops = self.both_changed(Policy("sendhub", conflict="newest"), t(local_h), t(remote_h))
        assert {op.after["name"] for op in ops if op.action is Action.UPDATE} == {winner}

    def test_newest_without_remote_time_falls_back_to_local(self):
        ops = self.both_changed(Policy("sendhub", conflict="newest"))
        assert {op.after["name"] for op in ops if op.action is Action.UPDATE} == {"A"}

    def test_manual_policy_holds_the_record(self):
        ops = self.both_changed(Policy("sendhub", conflict="manual"))
        assert len(ops) == 1 and ops[0].action is Action.CONFLICT and ops[0].held
        assert not ops[0].is_change


class TestModes:
    def test_push_mode_overwrites_remote_edits(self):
        ops = reconcile(C, linked(), loc(), rem({**BASE_FIELDS, "name": "B"}), Policy("x", mode="push"))
        assert kinds(ops) == [(Action.UPDATE, Direction.OUTBOUND)] and ops[0].after == BASE_FIELDS

    def test_push_mode_removes_remote_only_records(self):
        ops = reconcile(C, {}, {}, rem(), Policy("x", mode="push"))
        assert kinds(ops) == [(Action.DELETE, Direction.OUTBOUND)]

    def test_pull_mode_never_writes_to_the_provider(self):
        ops = reconcile(C, linked(), loc({**BASE_FIELDS, "name": "A"}), rem(), Policy("x", mode="pull"))
        assert all(op.direction is Direction.INBOUND for op in ops)
        ops = reconcile(C, {}, loc(), {}, Policy("x", mode="pull"))
        assert ops == []


class TestOptOut:
    def test_remote_opt_out_reaches_canonical(self):
        ops = reconcile(C, linked(), loc(), rem(opted_out=True), P)
        assert kinds(ops) == [(Action.UPDATE, Direction.INBOUND)] and ops[0].after == {"opted_out": True}

    def test_opted_out_remote_is_never_deleted(self):
        ops = reconcile(C, linked(), {}, rem(opted_out=True), P)
        assert all(op.action is not Action.DELETE for op in ops)
        assert ops[0].skip_reason.startswith("opted out")

    def test_new_opted_out_remote_creates_an_opted_out_contact(self):
        ops = reconcile(C, {}, {}, rem(opted_out=True), P)
        assert ops[0].extra == {"opted_out": True}


def test_incomplete_pull_infers_no_deletion():
    ops = reconcile(C, linked(), loc(), {}, Policy("sendhub", remote_complete=False))
    assert ops == []


def test_two_remotes_with_one_key_link_one_and_report_the_other():
    remote = {**rem(rid="r1"), **rem(rid="r2")}
    ops = reconcile(C, {}, loc(), remote, P)
    assert kinds(ops) == [(Action.LINK, Direction.INBOUND), (Action.DUPLICATE, Direction.INBOUND)]
    assert ops[1].remote_id == "r2"


# -- the number is a field like any other (issue 10) ----------------------------------------

NEW_NUMBER = "+16509999999"


def test_number_changed_remotely_only_updates_canonical_with_the_new_key():
    ops = reconcile(C, linked(), loc(), rem({**BASE_FIELDS, "number": NEW_NUMBER}, key=NEW_NUMBER), P)
    assert kinds(ops) == [(Action.UPDATE, Direction.INBOUND)]
    assert ops[0].after["number"] == NEW_NUMBER and ops[0].remote["number"] == NEW_NUMBER


def test_number_changed_locally_only_updates_remote_keeping_its_id():
    ops = reconcile(C, linked(), loc({**BASE_FIELDS, "number": NEW_NUMBER}, key=NEW_NUMBER), rem(), P)
    assert kinds(ops) == [(Action.UPDATE, Direction.OUTBOUND)]
    assert (ops[0].remote_id, ops[0].key, ops[0].after["number"]) == ("r1", NEW_NUMBER, NEW_NUMBER)


def test_number_changed_on_both_sides_to_different_values_is_a_conflict():
    ops = reconcile(C, linked(), loc({**BASE_FIELDS, "number": NEW_NUMBER}, key=NEW_NUMBER),
                    rem({**BASE_FIELDS, "number": "+16508888888"}, key="+16508888888"), P)
    [conflict] = [op for op in ops if op.action is Action.CONFLICT]
    assert conflict.extra["fields"] == ["number"]
    [push] = [op for op in ops if op.direction is Direction.OUTBOUND]
    assert push.after["number"] == NEW_NUMBER  # local wins by default


def test_number_and_name_changed_on_different_sides_merge():
    merged, conflicts = merge_fields(BASE_FIELDS, {**BASE_FIELDS, "number": NEW_NUMBER},
                                     {**BASE_FIELDS, "name": "Johnny Doe"}, prefer="local")
    assert conflicts == [] and merged == {"number": NEW_NUMBER, "name": "Johnny Doe"}
