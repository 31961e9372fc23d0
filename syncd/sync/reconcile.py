"""The three-way comparison: (base, local, remote) -> operations. Pure.

One call reconciles one entity (contacts or groups) of one provider. Records
are compared in the provider's field space (projections), so a field the
provider cannot hold never shows up as a change. The branches below follow the
rows of the decision table in design §1, in order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from syncd.sync.plan import Action, Direction, Entity, Operation

__all__ = ["BaseRecord", "LocalRecord", "Policy", "RemoteRecord", "merge_fields", "reconcile"]

GROUPS = "groups"  # the set-valued field: merged element by element, never a conflict


@dataclass(frozen=True, slots=True)
class BaseRecord:
    """A link: the remote id and the projected fields at the last successful sync."""

    remote_id: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class LocalRecord:
    """A canonical record projected into the provider's field space."""

    canonical_id: int
    key: str
    fields: Mapping[str, Any]
    opted_out: bool = False
    modified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class RemoteRecord:
    """A mirror record in the provider's field space (groups as canonical ids)."""

    remote_id: str
    key: str
    fields: Mapping[str, Any]
    opted_out: bool = False
    modified_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """How one provider is reconciled.

    ``conflict``: local | remote | newest | manual. ``mode``: two-way | push |
    pull. ``remote_complete``: the pull finished; when False no deletion is
    inferred from a missing remote record.
    """

    provider: str
    conflict: str = "local"
    mode: str = "two-way"
    remote_complete: bool = True


def reconcile(
    entity: Entity,
    base: Mapping[int, BaseRecord],
    local: Mapping[int, LocalRecord],
    remote: Mapping[str, RemoteRecord],
    policy: Policy,
) -> list[Operation]:
    """Every operation that brings one provider's ``entity`` records and the canonical book in step."""
    ops: list[Operation] = []
    for cid, link in base.items():
        loc, rem = local.get(cid), remote.get(link.remote_id)
        if loc is not None and rem is not None and _in_step(link, loc, rem):
            continue  # same | unchanged | unchanged: nothing to do (most records, checked without copies)
        ops.extend(_linked(entity, link, loc, rem, cid, policy))
    ops.extend(_unlinked(entity, base, local, remote, policy))
    return ops


def _in_step(link: BaseRecord, loc: LocalRecord, rem: RemoteRecord) -> bool:
    """Both sides equal the base and no remote opt-out waits to reach the book."""
    return (loc.opted_out or not rem.opted_out) and loc.fields == link.fields and rem.fields == link.fields


# -- linked records: the rows with a base ----------------------------------


def _linked(entity: Entity, link: BaseRecord, loc: LocalRecord | None, rem: RemoteRecord | None,
            cid: int, p: Policy) -> Iterator[Operation]:
    where = p.provider
    common = dict(canonical_id=cid, remote_id=link.remote_id, key=(loc or rem).key if (loc or rem) else "")
    if loc is not None and rem is None and not p.remote_complete:
        return  # an incomplete pull proves no deletion
    if loc is None and rem is None:
        # same | deleted | deleted: forget the link
        yield Operation(Action.UNLINK, entity, Direction.OUTBOUND, f"deleted locally and at {where}", **common)
        return
    if loc is not None and rem is not None:
        yield from _both_present(entity, link, loc, rem, p, common)
        return
    if rem is None:
        assert loc is not None
        yield from _deleted_remotely(entity, link, loc, p, common)
        return
    yield from _deleted_locally(entity, link, rem, p, common)


def _both_present(entity, link, loc, rem, p, common) -> Iterator[Operation]:
    where = p.provider
    base = dict(link.fields)
    local_changed = dict(loc.fields) != base
    remote_changed = dict(rem.fields) != base
    if not local_changed and not remote_changed:
        yield from _opt_out_inbound(entity, loc, rem, p, common)  # same | unchanged | unchanged
        return
    if local_changed and not remote_changed:
        reason = f"changed locally, unchanged at {where}"
    elif remote_changed and not local_changed:
        reason = f"changed at {where}, unchanged locally"
    elif dict(loc.fields) == dict(rem.fields):
        # same | changed | changed, equal content: just advance the base
        yield Operation(Action.LINK, entity, Direction.INBOUND, f"changed the same way locally and at {where}",
                        after=dict(rem.fields), **common)
        yield from _opt_out_inbound(entity, loc, rem, p, common)
        return
    else:
        reason = f"changed locally and at {where}"
    yield from _converge(entity, base, loc, rem, p, common, reason)


def _converge(entity, base, loc, rem, p, common, reason) -> Iterator[Operation]:
    """Merge field by field and emit what each side needs to reach the result."""
    prefer = _preference(p, loc, rem)
    merged, conflicts = merge_fields(base, loc.fields, rem.fields, prefer=prefer, mode=p.mode)
    if conflicts:
        held = prefer == "manual"
        note = "held for `syncd resolve`" if held else f"{prefer} side kept"
        yield Operation(Action.CONFLICT, entity, Direction.INBOUND,
                        f"{reason}: conflicting {', '.join(sorted(conflicts))} ({note})",
                        local=dict(loc.fields), remote=dict(rem.fields), after=None if held else merged,
                        held=held, extra={"fields": sorted(conflicts), "policy": prefer}, **common)
        if held:
            return
    if merged != dict(loc.fields) and p.mode != "push":
        yield Operation(Action.UPDATE, entity, Direction.INBOUND, reason,
                        before=dict(loc.fields), after=merged, remote=dict(rem.fields), **common)
    if merged != dict(rem.fields) and p.mode != "pull":
        yield Operation(Action.UPDATE, entity, Direction.OUTBOUND, reason,
                        before=dict(rem.fields), after=merged, **common)
    yield from _opt_out_inbound(entity, loc, rem, p, common)


def _deleted_remotely(entity, link, loc, p, common) -> Iterator[Operation]:
    where = p.provider
    unchanged = dict(loc.fields) == dict(link.fields)
    if p.mode == "push":
        yield Operation(Action.CREATE, entity, Direction.OUTBOUND, f"deleted at {where}; push mode re-creates it",
                        after=dict(loc.fields), **{**common, "remote_id": None})
    elif unchanged or p.mode == "pull":
        # same | unchanged | deleted: delete canonical (and so at the other providers)
        yield Operation(Action.DELETE, entity, Direction.INBOUND, f"deleted at {where}, unchanged locally",
                        before=dict(loc.fields), **common)
    else:
        yield from _delete_conflict(entity, loc.fields, None, p, common,
                                    f"deleted at {where} but changed locally", keep_local_means="recreate")


def _deleted_locally(entity, link, rem, p, common) -> Iterator[Operation]:
    where = p.provider
    unchanged = dict(rem.fields) == dict(link.fields)
    if p.mode == "pull":
        yield Operation(Action.CREATE, entity, Direction.INBOUND,
                        f"deleted locally; pull mode re-imports it from {where}",
                        after=dict(rem.fields), **{**common, "canonical_id": None})
    elif rem.opted_out:
        yield Operation(Action.UNLINK, entity, Direction.OUTBOUND, f"deleted locally; kept at {where}",
                        skip_reason=f"opted out at {where}: deleting it would erase the opt-out", **common)
    elif unchanged or p.mode == "push":
        # same | deleted | unchanged: delete remote
        yield Operation(Action.DELETE, entity, Direction.OUTBOUND, f"deleted locally, unchanged at {where}",
                        before=dict(rem.fields), **common)
    else:
        yield from _delete_conflict(entity, None, rem.fields, p, common,
                                    f"deleted locally but changed at {where}", keep_local_means="delete")


def _delete_conflict(entity, local_fields, remote_fields, p, common, reason, keep_local_means) -> Iterator[Operation]:
    """same | deleted | changed (either way round): a conflict the policy settles."""
    prefer = p.conflict if p.conflict in ("local", "remote", "manual") else "local"  # no timestamp for a deletion
    held = prefer == "manual"
    note = "held for `syncd resolve`" if held else f"{prefer} side kept"
    yield Operation(Action.CONFLICT, entity, Direction.INBOUND, f"{reason} ({note})",
                    local=dict(local_fields) if local_fields is not None else None,
                    remote=dict(remote_fields) if remote_fields is not None else None,
                    held=held, extra={"policy": prefer, "deletion": True}, **common)
    if held:
        return
    local_wins = prefer == "local"
    if keep_local_means == "recreate":  # the local record survives or dies
        if local_wins:
            yield Operation(Action.CREATE, entity, Direction.OUTBOUND, f"{reason}: re-created",
                            after=dict(local_fields), **{**common, "remote_id": None})
        else:
            yield Operation(Action.DELETE, entity, Direction.INBOUND, f"{reason}: deletion kept",
                            before=dict(local_fields), **common)
    elif local_wins:
        yield Operation(Action.DELETE, entity, Direction.OUTBOUND, f"{reason}: deletion kept",
                        before=dict(remote_fields), **common)
    else:
        yield Operation(Action.CREATE, entity, Direction.INBOUND, f"{reason}: restored",
                        after=dict(remote_fields), **{**common, "canonical_id": None})


def _opt_out_inbound(entity, loc, rem, p, common) -> Iterator[Operation]:
    """Opt-outs are sticky: a remote opt-out reaches the canonical book; nothing clears it."""
    if entity is Entity.CONTACT and rem.opted_out and not loc.opted_out and p.mode != "push":
        yield Operation(Action.UPDATE, entity, Direction.INBOUND, f"opted out at {p.provider}",
                        before={"opted_out": False}, after={"opted_out": True}, extra={"opt_out": True}, **common)


# -- unlinked records: the rows without a base -------------------------------


def _unlinked(entity, base, local, remote, p: Policy) -> Iterator[Operation]:
    unlinked_remote = sorted(remote.keys() - {link.remote_id for link in base.values()})
    free_local = {cid: rec for cid, rec in local.items() if cid not in base}
    by_key: dict[str, list[LocalRecord]] = {}
    for rec in free_local.values():
        by_key.setdefault(rec.key, []).append(rec)
    # keys already taken by a linked pair: another remote record with that key is a duplicate
    # (only needed when some remote record is unlinked, which a run in step never has)
    claimed_keys: dict[str, str] = {rec.key: base[cid].remote_id for cid, rec in local.items()
                                    if cid in base and base[cid].remote_id in remote} if unlinked_remote else {}
    for rid in unlinked_remote:
        rem = remote[rid]
        if rem.key in claimed_keys:
            yield Operation(Action.DUPLICATE, entity, Direction.INBOUND,
                            f"same key as {p.provider} record {claimed_keys[rem.key]}; left untouched",
                            remote_id=rid, key=rem.key, remote=dict(rem.fields))
            continue
        claimed_keys[rem.key] = rid
        candidates = by_key.pop(rem.key, [])
        if candidates:
            loc = candidates[0]
            free_local.pop(loc.canonical_id)
            yield from _first_link(entity, loc, rem, p)
        else:
            yield from _remote_only(entity, rem, p)
    for loc in free_local.values():
        if p.mode != "pull":
            # none | present | absent: create remote
            yield Operation(Action.CREATE, entity, Direction.OUTBOUND, f"new locally, absent at {p.provider}",
                            canonical_id=loc.canonical_id, key=loc.key, after=dict(loc.fields))


def _first_link(entity, loc: LocalRecord, rem: RemoteRecord, p: Policy) -> Iterator[Operation]:
    """none | present | present, same key: link them; differing fields are a conflict."""
    common = dict(canonical_id=loc.canonical_id, remote_id=rem.remote_id, key=loc.key)
    yield Operation(Action.LINK, entity, Direction.INBOUND, f"same key locally and at {p.provider}: linked",
                    after=dict(rem.fields), **common)
    if dict(loc.fields) != dict(rem.fields):
        yield from _converge(entity, {}, loc, rem, p, common, f"linked by key; fields differ at {p.provider}")
    else:
        yield from _opt_out_inbound(entity, loc, rem, p, common)


def _remote_only(entity, rem: RemoteRecord, p: Policy) -> Iterator[Operation]:
    """none | absent | present with no match: create canonical."""
    common = dict(remote_id=rem.remote_id, key=rem.key)
    if p.mode == "push":
        if rem.opted_out:
            return
        yield Operation(Action.DELETE, entity, Direction.OUTBOUND,
                        f"absent locally; push mode removes it from {p.provider}", before=dict(rem.fields), **common)
        return
    extra = {"opted_out": True} if rem.opted_out else {}
    yield Operation(Action.CREATE, entity, Direction.INBOUND, f"new at {p.provider}, absent locally",
                    after=dict(rem.fields), extra=extra, **common)


# -- field-level merge --------------------------------------------------------


def _preference(p: Policy, loc: LocalRecord, rem: RemoteRecord) -> str:
    if p.mode == "push":
        return "local"
    if p.mode == "pull":
        return "remote"
    if p.conflict == "newest":
        if rem.modified_at and loc.modified_at and rem.modified_at > loc.modified_at:
            return "remote"
        return "local"
    return p.conflict


def merge_fields(base: Mapping[str, Any], local: Mapping[str, Any], remote: Mapping[str, Any], *,
                 prefer: str, mode: str = "two-way") -> tuple[dict[str, Any], list[str]]:
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
        if mode == "push":
            value = lv
        elif mode == "pull":
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
            value = rv if prefer == "remote" else lv
        if value is not None:
            merged[name] = value
    return merged, conflicts


def _merge_sets(base: list[Any], local: list[Any], remote: list[Any]) -> list[Any]:
    b, lset, rset = set(base), set(local), set(remote)
    return sorted((lset & rset) | (lset - b) | (rset - b))
