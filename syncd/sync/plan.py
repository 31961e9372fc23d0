"""Plans: what a run will do, as plain values (no I/O).

An :class:`Operation` is one change to one record on one side, with the reason
it was planned. A provider's plan is a tuple of operations; :func:`push_order`
sorts outbound ones into the order the design prescribes and :func:`guard`
applies the deletion guard. Both are functions of the plan alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from datetime import datetime
from typing import Any

from syncd.model import ChangeEntry, Deletes, PendingStatus

__all__ = [
    "Action",
    "Direction",
    "Entity",
    "Operation",
    "PendingDelete",
    "guard",
    "log_entry",
    "pending_key",
    "with_deletion_policy",
    "push_order",
]


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    LINK = "link"  # link two records (or advance the base of a linked pair)
    CONFLICT = "conflict"
    DUPLICATE = "duplicate"
    GUARDED = "guarded"
    UNLINK = "unlink"  # forget a link whose records are gone on both sides; not logged


class Entity(StrEnum):
    CONTACT = "contact"
    GROUP = "group"
    MEMBERSHIP = "membership"


class Direction(StrEnum):
    INBOUND = "inbound"  # provider -> canonical
    OUTBOUND = "outbound"  # canonical -> provider


@dataclass(frozen=True, slots=True)
class Operation:
    """One planned change.

    ``before``/``after`` are projected fields (the provider's field space):
    for an outbound update the remote's current and desired values, for an
    inbound one the canonical projection's current and new values. A conflict
    keeps both versions (``local``/``remote``) so the losing side is never lost.
    ``held`` marks an operation that must not be carried out (a ``manual``
    conflict, a guarded delete); ``skip_reason`` one that cannot be.
    """

    action: Action
    entity: Entity
    direction: Direction
    reason: str
    canonical_id: int | None = None
    remote_id: str | None = None
    key: str = ""
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    local: dict[str, Any] | None = None
    remote: dict[str, Any] | None = None
    held: bool = False
    skip_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_change(self) -> bool:
        """True for operations that change a side (what `plan` counts as pending work)."""
        if self.held or self.skip_reason or self.action is Action.UNLINK:
            return False
        return self.action in (Action.CREATE, Action.UPDATE, Action.DELETE, Action.LINK)


_PUSH_RANK = {
    (Entity.GROUP, Action.CREATE): 0,
    (Entity.GROUP, Action.UPDATE): 1,
    (Entity.CONTACT, Action.CREATE): 2,
    (Entity.CONTACT, Action.UPDATE): 3,
    (Entity.MEMBERSHIP, Action.CREATE): 4,
    (Entity.MEMBERSHIP, Action.DELETE): 5,
    (Entity.CONTACT, Action.DELETE): 6,
    (Entity.GROUP, Action.DELETE): 7,
}


def push_order(ops: Iterable[Operation]) -> list[Operation]:
    """Outbound operations in the design's order: group creates, contact creates
    and updates, membership adds, membership removes, contact deletes, group deletes."""
    outbound = [op for op in ops if op.direction is Direction.OUTBOUND]
    return sorted(outbound, key=lambda op: _PUSH_RANK.get((op.entity, op.action), 8))


def guard(
    ops: Sequence[Operation],
    *,
    entity: Entity,
    linked: int,
    canonical: int,
    max_fraction: float,
    allow: bool,
    provider: str,
) -> list[Operation]:
    """Hold every delete of ``entity`` when there are too many of them.

    Outbound deletes are measured against the provider's ``linked`` records and
    inbound deletes against the ``canonical`` book; when either side would lose
    more than ``max_fraction``, all that side's deletes are held and one
    ``guarded`` operation says why. ``allow`` (``--allow-mass-delete``) lets them through.
    """
    if allow:
        return list(ops)
    result = list(ops)
    for direction, total in ((Direction.OUTBOUND, linked), (Direction.INBOUND, canonical)):
        deletes = [op for op in result if op.entity is entity and op.action is Action.DELETE
                   and op.direction is direction and not op.held and not op.skip_reason]
        if not deletes or len(deletes) <= max_fraction * total:
            continue
        where = provider if direction is Direction.OUTBOUND else "the canonical book"
        reason = (f"{len(deletes)} of {total} {entity.value}s would be deleted at {where} "
                  f"(more than {max_fraction:.0%}); nothing deleted — run `syncd sync --allow-mass-delete` to let it through")
        held = {id(op) for op in deletes}
        result = [replace(op, held=True, skip_reason="guarded") if id(op) in held else op for op in result]
        result.append(Operation(Action.GUARDED, entity, direction, reason,
                                extra={"deletes": len(deletes), "total": total}))
    return result


def log_entry(op: Operation, provider: str, status: str, *, error: str | None = None, attempts: int = 0,
              next_attempt_at: datetime | None = None, fingerprint: str | None = None) -> ChangeEntry:
    """The change-log row of ``op`` at ``provider``.

    A conflict keeps both versions in ``before`` (``local``, ``remote``), with the
    ``fields`` both sides changed (none for a deletion against a change).
    """
    before = op.before
    if op.action is Action.CONFLICT:
        before = {"local": op.local, "remote": op.remote, "fields": list(op.extra.get("fields", []))}
    canonical_id = op.canonical_id if op.canonical_id is not None and op.canonical_id > 0 else None
    return ChangeEntry(provider, op.entity.value, op.action.value, op.direction.value, status, op.reason,
                       canonical_id, op.remote_id, before, op.after, error, attempts, next_attempt_at, fingerprint)


@dataclass(frozen=True, slots=True)
class PendingDelete:
    """A deletion held for an operator (a ``change_log`` row): its id and where it stands."""

    id: int
    status: PendingStatus


def pending_key(op: Operation) -> tuple[str, str, int | None, str | None]:
    """What identifies a deletion across runs: entity, direction and the record's ids."""
    return op.entity.value, op.direction.value, op.canonical_id, op.remote_id


def with_deletion_policy(ops: Sequence[Operation], policy: Deletes | str, provider: str,
                         pending: Mapping[tuple[str, str, int | None, str | None], PendingDelete]
                         ) -> list[Operation]:
    """The plan once the provider's deletion policy has had its say on each delete.

    ``never``: a delete at the provider is held (the record stays there); one
    deleted at the provider is re-created there from the book, which keeps it.
    ``approve``: a delete waits as a pending delete (``extra["pending"]``: new or
    waiting) until approved (carried out) or declined (the record is restored on
    the side that lost it); both carry ``extra["decision"]``, the pending row's id.
    """
    if policy == Deletes.PROPAGATE:
        return list(ops)
    out = []
    for op in ops:
        if op.action is not Action.DELETE or op.held or op.skip_reason:
            out.append(op)
        elif policy == Deletes.NEVER:
            out.append(_never_deleted(op, provider))
        else:
            out.append(_approved_or_held(op, provider, pending.get(pending_key(op))))
    return out


def _never_deleted(op: Operation, provider: str) -> Operation:
    if op.direction is Direction.OUTBOUND:
        return replace(op, held=True, skip_reason=f"deletes = never: kept at {provider}",
                       extra={**op.extra, "kept": True})
    return Operation(Action.CREATE, op.entity, Direction.OUTBOUND,
                     f"{op.reason}; deletes = never: re-created at {provider} from the book",
                     canonical_id=op.canonical_id, key=op.key, after=op.before)


def _approved_or_held(op: Operation, provider: str, pending: PendingDelete | None) -> Operation:
    if pending is None or pending.status is PendingStatus.AWAITING:
        return replace(op, held=True, skip_reason="awaiting approval (`syncd deletes`)",
                       extra={**op.extra, "pending": "waiting" if pending else "new"})
    decision = {**op.extra, "decision": pending.id}
    if pending.status is PendingStatus.APPROVED:
        return replace(op, reason=f"{op.reason} (deletion approved in change {pending.id})", extra=decision)
    # An inbound delete would have deleted from the book: the provider lost the record, it is restored there.
    where = provider if op.direction is Direction.INBOUND else "the book"
    restored = Direction.OUTBOUND if op.direction is Direction.INBOUND else Direction.INBOUND
    # The canonical id goes with it both ways: restored in the book, the contact takes its old id back
    # where it is free, so the links other providers keep to it hold again.
    return Operation(Action.CREATE, op.entity, restored,
                     f"deletion declined in change {pending.id}: restored in {where}",
                     canonical_id=op.canonical_id, remote_id=op.remote_id if restored is Direction.INBOUND else None,
                     key=op.key, after=op.before, extra=decision)
