"""The three-way comparison: (base, local, remote) -> operations. Pure.

One call reconciles one entity (contacts or groups) of one provider. Records
are compared in the provider's field space (projections), so a field the
provider cannot hold never shows up as a change. It reads as design §1's table:

1. :func:`classify` names the row of each (base, local, remote) triple;
2. :func:`for_mode` rewrites the rows a ``push`` or ``pull`` provider settles the
   other way (the provider made to match the book, or the book to match it);
3. :func:`_decide` is one ``match`` over the rows, in the table's order.

Unlinked records are first paired by key (:func:`_pairs`): a remote record with
a local one of the same key is row ``LINK``, one whose key a linked pair
already holds is a ``DUPLICATE``, the others are alone on their side.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from syncd.model import BaseRecord, LocalRecord, Mode, Preference, RemoteRecord
from syncd.sync.plan import Action, Direction, Entity, Operation

__all__ = ["Policy", "Row", "classify", "for_mode", "merge_fields", "reconcile"]

GROUPS = "groups"  # the set-valued field: merged element by element, never a conflict


@dataclass(frozen=True, slots=True)
class Policy:
    """How one provider is reconciled.

    ``conflict``: local | remote | newest | manual. ``mode``: two-way | push |
    pull. ``remote_complete``: the pull finished; when False no deletion is
    inferred from a missing remote record.
    """

    provider: str
    conflict: Preference | str = Preference.LOCAL
    mode: Mode | str = Mode.TWO_WAY
    remote_complete: bool = True


class Row(Enum):
    """The rows of design §1's decision table, ``base | local | remote``, in its order (and two beyond it)."""

    CREATE_REMOTE = "none | present | absent"
    CREATE_CANONICAL = "none | absent | present, no match"
    LINK = "none | present | present, same key"
    IN_STEP = "same | unchanged | unchanged"
    UPDATE_REMOTE = "same | changed | unchanged"
    UPDATE_CANONICAL = "same | unchanged | changed"
    BOTH_CHANGED = "same | changed | changed"
    DELETE_REMOTE = "same | deleted | unchanged"
    DELETE_CANONICAL = "same | unchanged | deleted"
    FORGET_LINK = "same | deleted | deleted"
    DELETED_HERE_CHANGED_THERE = "same | deleted | changed"
    CHANGED_HERE_DELETED_THERE = "same | changed | deleted"
    # Beyond the table:
    UNSEEN = "same | present | not listed by an incomplete pull"  # proves no deletion: nothing
    DUPLICATE = "none | absent | present, key of a linked pair"  # reported, left alone
    # What push and pull make of some rows (see for_mode):
    RECREATE_REMOTE = "push: deleted or missing remotely, kept locally"
    REMOVE_REMOTE = "push: present remotely only"
    RECREATE_CANONICAL = "pull: deleted locally, kept remotely"


@dataclass(frozen=True, slots=True)
class Case:
    """One record's three states (any may be missing) and the row they make."""

    row: Row
    base: BaseRecord | None
    local: LocalRecord | None
    remote: RemoteRecord | None
    canonical_id: int | None
    duplicate_of: str | None = None  # Row.DUPLICATE: the remote record holding the key

    @property
    def key(self) -> str:
        record = self.local or self.remote
        return record.key if record is not None else ""

    @property
    def remote_id(self) -> str | None:
        if self.base is not None:
            return self.base.remote_id
        return self.remote.remote_id if self.remote is not None else None


def reconcile(entity: Entity, base: Mapping[int, BaseRecord], local: Mapping[int, LocalRecord],
              remote: Mapping[str, RemoteRecord], policy: Policy) -> list[Operation]:
    """Every operation that brings one provider's ``entity`` records and the canonical book in step."""
    table = _Table(entity, policy)
    ops: list[Operation] = []
    for case in _cases(base, local, remote, policy):
        ops.extend(table.decide(for_mode(case, policy.mode)))
    return ops


def classify(base: BaseRecord | None, local: LocalRecord | None, remote: RemoteRecord | None, *,
             remote_complete: bool = True) -> Row:
    """The row of design §1 for a linked record (``base`` given) or an unpaired one."""
    if base is None:
        if local is not None and remote is not None:
            return Row.LINK
        return Row.CREATE_REMOTE if local is not None else Row.CREATE_CANONICAL
    local_changed = local is not None and local.fields != base.fields
    remote_changed = remote is not None and remote.fields != base.fields
    if local is None:
        if remote is None:
            return Row.FORGET_LINK
        return Row.DELETED_HERE_CHANGED_THERE if remote_changed else Row.DELETE_REMOTE
    if remote is None:
        if not remote_complete:
            return Row.UNSEEN
        return Row.CHANGED_HERE_DELETED_THERE if local_changed else Row.DELETE_CANONICAL
    if local_changed and remote_changed:
        return Row.BOTH_CHANGED
    if local_changed:
        return Row.UPDATE_REMOTE
    return Row.UPDATE_CANONICAL if remote_changed else Row.IN_STEP


def for_mode(case: Case, mode: Mode | str) -> Case:
    """The row a ``push`` (the provider made to match the book) or ``pull`` (the book fed from
    the provider) provider settles instead: deletions and creations go the one allowed way.

    Rows where the mode only decides who wins a field are left as they are; the
    merge applies the mode there (:func:`merge_fields`).
    """
    rewritten = _PUSH.get(case.row) if mode == Mode.PUSH else _PULL.get(case.row) if mode == Mode.PULL else None
    if rewritten is None:
        return case
    if case.row is Row.CREATE_CANONICAL and case.remote is not None and case.remote.opted_out:
        rewritten = Row.IN_STEP  # never deleted: that would erase the person's opt-out
    return Case(rewritten, case.base, case.local, case.remote, case.canonical_id, case.duplicate_of)


_PUSH = {Row.DELETE_CANONICAL: Row.RECREATE_REMOTE, Row.CHANGED_HERE_DELETED_THERE: Row.RECREATE_REMOTE,
         Row.DELETED_HERE_CHANGED_THERE: Row.DELETE_REMOTE, Row.CREATE_CANONICAL: Row.REMOVE_REMOTE}
_PULL = {Row.DELETE_REMOTE: Row.RECREATE_CANONICAL, Row.DELETED_HERE_CHANGED_THERE: Row.RECREATE_CANONICAL,
         Row.CHANGED_HERE_DELETED_THERE: Row.DELETE_CANONICAL, Row.CREATE_REMOTE: Row.IN_STEP}


class _Table:
    """The operations of each row, for one entity of one provider."""

    def __init__(self, entity: Entity, policy: Policy) -> None:
        self.entity, self.policy, self.where = entity, policy, policy.provider

    def decide(self, case: Case) -> Iterator[Operation]:
        where, loc, rem = self.where, case.local, case.remote
        match case.row:
            case Row.CREATE_REMOTE:  # none | present | absent: create remote
                assert loc is not None
                yield self._op(case, Action.CREATE, Direction.OUTBOUND, f"new locally, absent at {where}",
                               remote_id=None, after=dict(loc.fields))
            case Row.CREATE_CANONICAL:  # none | absent | present, no match: create canonical
                assert rem is not None
                yield self._op(case, Action.CREATE, Direction.INBOUND, f"new at {where}, absent locally",
                               after=dict(rem.fields), extra={"opted_out": True} if rem.opted_out else {})
            case Row.LINK:  # none | present | present, same key: link them; differing fields are a conflict
                assert loc is not None and rem is not None
                yield self._op(case, Action.LINK, Direction.INBOUND, f"same key locally and at {where}: linked",
                               after=dict(rem.fields))
                if loc.fields != rem.fields:
                    yield from self._converge(case, {}, f"linked by key; fields differ at {where}")
                else:
                    yield from self._opt_out(case)
            case Row.IN_STEP:  # same | unchanged | unchanged: nothing (but an opt-out reaching the book)
                yield from self._opt_out(case)
            case Row.UPDATE_REMOTE:  # same | changed | unchanged: update remote
                yield from self._converge(case, _base(case), f"changed locally, unchanged at {where}")
            case Row.UPDATE_CANONICAL:  # same | unchanged | changed: update canonical
                yield from self._converge(case, _base(case), f"changed at {where}, unchanged locally")
            case Row.BOTH_CHANGED:  # same | changed | changed: equal content advances the base, else merge
                yield from self._both_changed(case)
            case Row.DELETE_REMOTE:  # same | deleted | unchanged: delete remote (never an opt-out)
                yield from self._delete_remote(case, f"deleted locally, unchanged at {where}")
            case Row.DELETE_CANONICAL:  # same | unchanged | deleted: delete canonical (and so elsewhere)
                assert loc is not None
                yield self._op(case, Action.DELETE, Direction.INBOUND, f"deleted at {where}, unchanged locally",
                               before=dict(loc.fields))
            case Row.FORGET_LINK:  # same | deleted | deleted: forget the link
                yield self._op(case, Action.UNLINK, Direction.OUTBOUND, f"deleted locally and at {where}")
            case Row.DELETED_HERE_CHANGED_THERE:  # same | deleted | changed: a conflict
                assert rem is not None
                if rem.opted_out:
                    yield from self._delete_remote(case, "")
                else:
                    yield from self._delete_conflict(case, f"deleted locally but changed at {where}")
            case Row.CHANGED_HERE_DELETED_THERE:  # same | changed | deleted: a conflict
                yield from self._delete_conflict(case, f"deleted at {where} but changed locally")
            case Row.UNSEEN | Row.DUPLICATE:
                yield from self._duplicate(case)
            case Row.RECREATE_REMOTE:  # push
                assert loc is not None
                yield self._op(case, Action.CREATE, Direction.OUTBOUND, f"deleted at {where}; push mode re-creates it",
                               remote_id=None, after=dict(loc.fields))
            case Row.REMOVE_REMOTE:  # push
                assert rem is not None
                yield self._op(case, Action.DELETE, Direction.OUTBOUND,
                               f"absent locally; push mode removes it from {where}", before=dict(rem.fields))
            case Row.RECREATE_CANONICAL:  # pull
                assert rem is not None
                yield self._op(case, Action.CREATE, Direction.INBOUND,
                               f"deleted locally; pull mode re-imports it from {where}", canonical_id=None,
                               after=dict(rem.fields))

    # -- the rows' pieces ------------------------------------------------------------------

    def _op(self, case: Case, action: Action, direction: Direction, reason: str, **values: Any) -> Operation:
        """An operation on the case's record (``values`` override its ids, key and fields)."""
        ids: dict[str, Any] = {"canonical_id": case.canonical_id, "remote_id": case.remote_id, "key": case.key}
        return Operation(action, self.entity, direction, reason, **(ids | values))

    def _both_changed(self, case: Case) -> Iterator[Operation]:
        assert case.local is not None and case.remote is not None
        where = self.where
        if case.local.fields == case.remote.fields:
            yield self._op(case, Action.LINK, Direction.INBOUND, f"changed the same way locally and at {where}",
                           after=dict(case.remote.fields))
            yield from self._opt_out(case)
        else:
            yield from self._converge(case, _base(case), f"changed locally and at {where}")

    def _converge(self, case: Case, base: Mapping[str, Any], reason: str) -> Iterator[Operation]:
        """Merge field by field and emit what each side needs to reach the result."""
        loc, rem, mode = case.local, case.remote, self.policy.mode
        assert loc is not None and rem is not None
        prefer = _preference(self.policy, loc, rem)
        merged, conflicts = merge_fields(base, loc.fields, rem.fields, prefer=prefer, mode=mode)
        if conflicts:
            held = prefer == Preference.MANUAL
            note = "held for `syncd resolve`" if held else f"{prefer} side kept"
            yield self._op(case, Action.CONFLICT, Direction.INBOUND,
                           f"{reason}: conflicting {', '.join(sorted(conflicts))} ({note})",
                           local=dict(loc.fields), remote=dict(rem.fields), after=None if held else merged,
                           held=held, extra={"fields": sorted(conflicts), "policy": str(prefer)})
            if held:
                return
        if merged != dict(loc.fields) and mode != Mode.PUSH:
            yield self._op(case, Action.UPDATE, Direction.INBOUND, reason, before=dict(loc.fields), after=merged,
                           remote=dict(rem.fields))
        if merged != dict(rem.fields) and mode != Mode.PULL:
            yield self._op(case, Action.UPDATE, Direction.OUTBOUND, reason, before=dict(rem.fields), after=merged)
        yield from self._opt_out(case)

    def _delete_remote(self, case: Case, reason: str) -> Iterator[Operation]:
        """Delete the remote record, unless it opted out there (deleting it would erase the opt-out)."""
        assert case.remote is not None
        where = self.where
        if case.remote.opted_out:
            yield self._op(case, Action.UNLINK, Direction.OUTBOUND, f"deleted locally; kept at {where}",
                           skip_reason=f"opted out at {where}: deleting it would erase the opt-out")
            return
        yield self._op(case, Action.DELETE, Direction.OUTBOUND, reason, before=dict(case.remote.fields))

    def _delete_conflict(self, case: Case, reason: str) -> Iterator[Operation]:
        """same | deleted | changed (either way round): a conflict the policy settles."""
        loc, rem = case.local, case.remote
        # A deletion carries no time to compare: ``newest`` keeps the local side.
        prefer = self.policy.conflict if self.policy.conflict != Preference.NEWEST else Preference.LOCAL
        held = prefer == Preference.MANUAL
        note = "held for `syncd resolve`" if held else f"{prefer} side kept"
        yield self._op(case, Action.CONFLICT, Direction.INBOUND, f"{reason} ({note})",
                       local=dict(loc.fields) if loc is not None else None,
                       remote=dict(rem.fields) if rem is not None else None,
                       held=held, extra={"policy": str(prefer), "deletion": True})
        if held:
            return
        local_wins = prefer == Preference.LOCAL
        if loc is not None:  # changed here, deleted there: the local record survives or dies
            if local_wins:
                yield self._op(case, Action.CREATE, Direction.OUTBOUND, f"{reason}: re-created", remote_id=None,
                               after=dict(loc.fields))
            else:
                yield self._op(case, Action.DELETE, Direction.INBOUND, f"{reason}: deletion kept",
                               before=dict(loc.fields))
        elif rem is not None:  # deleted here, changed there: the deletion holds, or the record comes back
            if local_wins:
                yield self._op(case, Action.DELETE, Direction.OUTBOUND, f"{reason}: deletion kept",
                               before=dict(rem.fields))
            else:
                yield self._op(case, Action.CREATE, Direction.INBOUND, f"{reason}: restored", canonical_id=None,
                               after=dict(rem.fields))

    def _opt_out(self, case: Case) -> Iterator[Operation]:
        """Opt-outs are sticky: a remote opt-out reaches the canonical book; nothing clears it."""
        loc, rem = case.local, case.remote
        if (self.entity is Entity.CONTACT and loc is not None and rem is not None and rem.opted_out
                and not loc.opted_out and self.policy.mode != Mode.PUSH):
            yield self._op(case, Action.UPDATE, Direction.INBOUND, f"opted out at {self.where}",
                           before={"opted_out": False}, after={"opted_out": True}, extra={"opt_out": True})

    def _duplicate(self, case: Case) -> Iterator[Operation]:
        if case.row is Row.DUPLICATE:
            assert case.remote is not None
            yield Operation(Action.DUPLICATE, self.entity, Direction.INBOUND,
                            f"same key as {self.where} record {case.duplicate_of}; left untouched",
                            remote_id=case.remote.remote_id, key=case.remote.key, remote=dict(case.remote.fields))


def _base(case: Case) -> Mapping[str, Any]:
    assert case.base is not None
    return case.base.fields


# -- cases: every record once, linked by the base or paired by key ---------------------------------


def _cases(base: Mapping[int, BaseRecord], local: Mapping[int, LocalRecord], remote: Mapping[str, RemoteRecord],
           policy: Policy) -> Iterator[Case]:
    for cid, link in base.items():
        loc, rem = local.get(cid), remote.get(link.remote_id)
        if loc is not None and rem is not None and _in_step(link, loc, rem):
            continue  # same | unchanged | unchanged, no opt-out waiting: most records, checked without copies
        yield Case(classify(link, loc, rem, remote_complete=policy.remote_complete), link, loc, rem, cid)
    yield from _pairs(base, local, remote)


def _in_step(link: BaseRecord, loc: LocalRecord, rem: RemoteRecord) -> bool:
    """Both sides equal the base and no remote opt-out waits to reach the book."""
    return (loc.opted_out or not rem.opted_out) and loc.fields == link.fields and rem.fields == link.fields


def _pairs(base: Mapping[int, BaseRecord], local: Mapping[int, LocalRecord],
           remote: Mapping[str, RemoteRecord]) -> Iterator[Case]:
    """Unlinked records: a remote one meets the free local one with its key, if any (in remote id order).

    A remote record whose key a linked pair already holds is a duplicate.
    """
    unlinked = sorted(remote.keys() - {link.remote_id for link in base.values()})
    free: dict[str, list[LocalRecord]] = {}
    for cid, rec in local.items():
        if cid not in base:
            free.setdefault(rec.key, []).append(rec)
    # keys a linked pair holds (only needed when some remote record is unlinked, which a run in step never has)
    claimed: dict[str, str] = {rec.key: base[cid].remote_id for cid, rec in local.items()
                               if cid in base and base[cid].remote_id in remote} if unlinked else {}
    for rid in unlinked:
        rem = remote[rid]
        if rem.key in claimed:
            yield Case(Row.DUPLICATE, None, None, rem, None, claimed[rem.key])
            continue
        claimed[rem.key] = rid
        candidates = free.get(rem.key)
        loc = candidates.pop(0) if candidates else None
        yield Case(classify(None, loc, rem), None, loc, rem, loc.canonical_id if loc else None)
    for records in free.values():
        for loc in records:
            yield Case(Row.CREATE_REMOTE, None, loc, None, loc.canonical_id)


# -- field-level merge --------------------------------------------------------


def _preference(p: Policy, loc: LocalRecord, rem: RemoteRecord) -> Preference | str:
    if p.mode == Mode.PUSH:
        return Preference.LOCAL
    if p.mode == Mode.PULL:
        return Preference.REMOTE
    if p.conflict == Preference.NEWEST:
        if rem.modified_at and loc.modified_at and rem.modified_at > loc.modified_at:
            return Preference.REMOTE
        return Preference.LOCAL
    return p.conflict


def merge_fields(base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any], *,
                 prefer: Preference | str, mode: Mode | str = Mode.TWO_WAY) -> tuple[dict[str, Any], list[str]]:
    """Field-level three-way merge.

    A field changed on one side only takes that side's value; a field changed
    on both sides to different values is a conflict settled by ``prefer``
    (``manual`` keeps the local value in the result, which the caller holds).
    ``groups`` is a set merged element-wise (additions and removals of both
    sides), never a conflict. In push/pull mode one side simply wins.
    """
    merged: dict[str, Any] = {}
    conflicts: list[str] = []
    for name in sorted(set(base) | set(local) | set(remote)):
        b, lv, rv = base.get(name), local.get(name), remote.get(name)
        if mode == Mode.PUSH:
            value = lv
        elif mode == Mode.PULL:
            value = rv
        elif lv == rv:
            value = lv
        elif name == GROUPS:
            value = _merge_sets(b or [], lv or [], rv or [])
        elif lv == b:
            value = rv
        elif rv == b:
            value = lv
        else:
            conflicts.append(name)
            value = rv if prefer == Preference.REMOTE else lv
        if value is not None:
            merged[name] = value
    return merged, conflicts


def _merge_sets(base: list[Any], local: list[Any], remote: list[Any]) -> list[Any]:
    b, lset, rset = set(base), set(local), set(remote)
    return sorted((lset & rset) | (lset - b) | (rset - b))
