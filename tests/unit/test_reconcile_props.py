"""Property tests (hypothesis) on the pure core: reconcile, merge and the guard."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.sync.plan import Action, Direction, Entity, guard
from syncd.model import BaseRecord, LocalRecord, RemoteRecord
from syncd.sync.reconcile import Policy, reconcile

C = Entity.CONTACT
values = st.sampled_from(["", "a", "b", "c"])
field_maps = st.fixed_dictionaries({}, optional={"name": values, "email": values, "city": values,
                                                 "groups": st.lists(st.integers(1, 4), unique=True).map(sorted)})
record_ids = st.integers(1, 8)


@st.composite
def worlds(draw):
    """A base, a local and a remote state over a few records, with arbitrary edits on each side."""
    base, local, remote = {}, {}, {}
    for cid in draw(st.sets(record_ids, max_size=8)):
        key = f"+1650253{cid:04d}"
        linked = draw(st.booleans())
        base_fields = draw(field_maps)
        if linked:
            base[cid] = BaseRecord(f"r{cid}", base_fields)
        if draw(st.booleans()):
            local[cid] = LocalRecord(cid, key, draw(st.one_of(st.just(base_fields), field_maps)))
        if draw(st.booleans()):
            rid = f"r{cid}" if linked else f"n{cid}"
            remote[rid] = RemoteRecord(rid, key, draw(st.one_of(st.just(base_fields), field_maps)))
    return base, local, remote


class Links(dict):
    """Base records by canonical id; like the links table, one remote id links one canonical id."""

    def __setitem__(self, cid, record):
        for other in [c for c, r in self.items() if r.remote_id == record.remote_id and c != cid]:
            del self[other]
        super().__setitem__(cid, record)


def apply_plan(ops, base, local, remote):
    """Carry a plan out faithfully, as a fault-free run does; return the new states."""
    base, local, remote = Links(base), dict(local), dict(remote)
    next_cid = 100
    for op in ops:
        if op.held or op.skip_reason or op.action in (Action.DUPLICATE, Action.GUARDED):
            continue
        if op.action is Action.UNLINK:
            base.pop(op.canonical_id, None)
        elif op.action is Action.LINK or (op.action is Action.CONFLICT and op.remote is not None):
            base[op.canonical_id] = BaseRecord(op.remote_id, dict(op.after if op.action is Action.LINK else op.remote))
        elif op.direction is Direction.INBOUND:
            if op.action is Action.CREATE:
                next_cid += 1
                local[next_cid] = LocalRecord(next_cid, op.key, dict(op.after))
                base[next_cid] = BaseRecord(op.remote_id, dict(op.after))
            elif op.action is Action.UPDATE:
                local[op.canonical_id] = LocalRecord(op.canonical_id, op.key, dict(op.after))
                base[op.canonical_id] = BaseRecord(op.remote_id, dict(op.remote))
            elif op.action is Action.DELETE:
                local.pop(op.canonical_id, None)
                base.pop(op.canonical_id, None)
        else:
            if op.action is Action.CREATE:
                rid = f"x{op.canonical_id}"
                remote[rid] = RemoteRecord(rid, op.key, dict(op.after))
                base[op.canonical_id] = BaseRecord(rid, dict(op.after))
            elif op.action is Action.UPDATE:
                remote[op.remote_id] = RemoteRecord(op.remote_id, op.key, dict(op.after))
                base[op.canonical_id] = BaseRecord(op.remote_id, dict(op.after))
            elif op.action is Action.DELETE:
                remote.pop(op.remote_id, None)
                base.pop(op.canonical_id, None)
    return base, local, remote


def run_twice(base, local, remote, policy):
    """A run is reconcile → apply inbound → reconcile → apply outbound, as the engine does."""
    ops = reconcile(C, base, local, remote, policy)
    inbound = [op for op in ops if op.direction is Direction.INBOUND or op.action is Action.UNLINK]
    base, local, remote = apply_plan(inbound, base, local, remote)
    outbound = [op for op in reconcile(C, base, local, remote, policy) if op.direction is Direction.OUTBOUND]
    return apply_plan(outbound, base, local, remote)


@settings(max_examples=300, deadline=None)
@given(worlds(), st.sampled_from(["local", "remote", "newest"]), st.sampled_from(["two-way", "push", "pull"]))
def test_after_a_fault_free_run_a_second_reconcile_plans_nothing(world, conflict, mode):
    base, local, remote = run_twice(*world, Policy("p", conflict=conflict, mode=mode))
    again = [op for op in reconcile(C, base, local, remote, Policy("p", conflict=conflict, mode=mode)) if op.is_change]
    if mode == "pull":  # local-only records are never pushed in pull mode; nothing else may remain
        again = [op for op in again if op.direction is Direction.INBOUND]
    assert again == []


@settings(max_examples=200, deadline=None)
@given(worlds())
def test_a_field_the_provider_cannot_store_never_produces_an_update(world):
    base, local, remote = world
    # The canonical side has a field ("nickname") the provider cannot hold: projection drops it.
    projected = {cid: LocalRecord(r.canonical_id, r.key, {k: v for k, v in {**r.fields, "nickname": "x"}.items()
                                                          if k != "nickname"}) for cid, r in local.items()}
    ops = reconcile(C, base, projected, remote, Policy("p"))
    assert all("nickname" not in (op.after or {}) for op in ops)
    assert ops == reconcile(C, base, local, remote, Policy("p"))


@settings(max_examples=300, deadline=None)
@given(worlds(), st.floats(0, 1))
def test_the_guard_never_lets_more_than_the_fraction_through(world, fraction):
    base, local, remote = world
    ops = reconcile(C, base, local, remote, Policy("p"))
    guarded = guard(ops, entity=C, linked=len(base), canonical=len(local), max_fraction=fraction, allow=False,
                    provider="p")
    for direction, total in ((Direction.OUTBOUND, len(base)), (Direction.INBOUND, len(local))):
        let_through = [op for op in guarded if op.action is Action.DELETE and op.direction is direction
                       and not op.held and not op.skip_reason]
        assert len(let_through) <= fraction * total


@settings(max_examples=300, deadline=None)
@given(worlds())
def test_no_plan_deletes_anything_on_the_basis_of_an_incomplete_pull(world):
    base, local, remote = world
    ops = reconcile(C, base, local, remote, Policy("p", remote_complete=False))
    missing_remote = {cid for cid, link in base.items() if link.remote_id not in remote}
    assert not [op for op in ops if op.action is Action.DELETE and op.direction is Direction.INBOUND]
    assert not [op for op in ops if op.canonical_id in missing_remote and op.action is not Action.UNLINK]
