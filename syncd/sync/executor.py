"""Pushing one provider's outbound plan, crash-safely.

Every operation is committed to ``change_log`` as ``pending`` before its
request and settled (``applied``/``failed``/``rejected``/``skipped``) after,
with the link (base) and mirror updated in the same transaction as the
settlement. A run killed in between leaves ``pending`` rows; the next run marks
them failed and re-plans from the provider's state, which the APIs make safe:
smsend's upsert cannot duplicate, and a SendHub create of an existing number is
answered "already in your contacts" and linked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from sqlalchemy.orm import Session

from syncd.db.repo import Ledger, LedgerRow, Store
from syncd.errors import AuthError, ProtocolError, ProviderError, QuotaExhausted, Rejected
from syncd.model import NOTHING_KEPT, BaseRecord, ContactWrite, RemoteContact, RemoteGroup, WriteOutcome, fingerprint
from syncd.providers.base import Provider
from syncd.sync.plan import Action, Direction, Entity, Operation, log_entry, push_order
from syncd.sync.progress import Progress, Silent
from syncd.sync.scope import Window

__all__ = ["Ledger", "Pusher", "RetryRules"]

log = structlog.get_logger("syncd.push")


@dataclass(frozen=True, slots=True)
class RetryRules:
    """When a failed record is tried again: at the next run, then after growing waits, at most ``cap`` times."""

    cap: int = 10
    base: timedelta = timedelta(seconds=60)
    ceiling: timedelta = timedelta(hours=6)

    def next_attempt(self, attempts: int, now: datetime) -> datetime:
        if attempts <= 1:
            return now
        wait: timedelta = min(self.ceiling, self.base * 2 ** (attempts - 2))
        return now + wait


@dataclass
class Pusher:
    """Applies one provider's outbound operations in the design's order, a window at a time."""

    provider: Provider
    store: Store
    run_id: int
    group_links: dict[int, BaseRecord]
    counts: dict[str, int]
    now: datetime
    batch_size: int = 500
    retry: RetryRules = field(default_factory=RetryRules)
    ledger: Ledger = field(default_factory=dict)
    fence: Callable[[], None] = lambda: None
    stopping: Callable[[], bool] = lambda: False
    progress: Progress = field(default_factory=Silent)
    mirror_groups: dict[str, RemoteGroup] = field(default_factory=dict)
    stopped_by: ProviderError | None = None
    pushed: int = 0  # operations settled so far (progress)
    links: dict[str, dict[int, BaseRecord]] = field(default_factory=dict)
    mirror: dict[str, RemoteContact] = field(default_factory=dict)
    _group_map: dict[int, str] | None = None  # see _to_remote
    _linked_remote: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.provider.name

    async def push(self, ops: Sequence[Operation], window: Window | None) -> None:
        """Carry out ``ops``: group operations (``window`` None), or those of ``window``'s contacts."""
        self.links = {"group": self.group_links, "contact": window.links if window is not None else {}}
        self.mirror = window.mirror if window is not None else {}
        self._group_map = None
        ordered = [op for op in push_order(ops) if self.waiting_reason(op) is None]
        self._log_skipped([op for op in ordered if op.held or op.skip_reason])
        todo = [op for op in ordered if not (op.held or op.skip_reason) and op.action is not Action.UNLINK]
        stages: list[tuple[Callable[[list[Operation]], Awaitable[None]], list[Operation]]] = [
            (self._groups, [op for op in todo if op.entity is Entity.GROUP and op.action is not Action.DELETE]),
            (self._contacts_create, [op for op in todo if op.entity is Entity.CONTACT and op.action is Action.CREATE]),
            (self._contacts_update, [op for op in todo if op.entity is Entity.CONTACT and op.action is Action.UPDATE]),
            (self._contacts_delete, [op for op in todo if op.entity is Entity.CONTACT and op.action is Action.DELETE]),
            (self._groups, [op for op in todo if op.entity is Entity.GROUP and op.action is Action.DELETE]),
        ]
        for stage, stage_ops in stages:
            if stage_ops and not self.halted():
                await stage(stage_ops)

    def halted(self) -> bool:
        """Stopped: the account refused us (credentials, quota), or the run is asked to stop."""
        return self.stopped_by is not None or self.stopping()

    # -- filtering ----------------------------------------------------------------

    def waiting_reason(self, op: Operation) -> str | None:
        """Why a record is not tried now: rejected and unchanged since, or backing off after failures."""
        row = self.ledger.get((op.entity.value, op.canonical_id, None if op.canonical_id else op.remote_id))
        if row is None:
            return None
        if row.status == "rejected":
            if row.fingerprint == fingerprint(op.after or {}):
                return f"rejected in change {row.id}; waits until the record changes"
            return None
        if row.attempts >= self.retry.cap:
            return f"failed {row.attempts} times (last: change {row.id}); see `syncd status`"
        if row.next_attempt_at is not None and row.next_attempt_at > self.now:
            return f"failed {row.attempts} times; next attempt after {row.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
        return None

    def _log_skipped(self, ops: list[Operation]) -> None:
        if ops:
            with self.store.session() as s, s.begin():
                self.store.log(s, self.run_id, [log_entry(op, self.name, "skipped", error=op.skip_reason or "held")
                                                for op in ops])

    # -- the pending -> request -> settled cycle ----------------------------------

    def _pending(self, ops: Sequence[Operation]) -> list[int]:
        with self.store.session() as s, s.begin():
            return self.store.log(s, self.run_id, [log_entry(op, self.name, "pending") for op in ops])

    def _settle_error(self, s: Session, op: Operation, entry_id: int, error: Exception) -> None:
        if isinstance(error, (AuthError, QuotaExhausted)) and self.stopped_by is None:
            self.stopped_by = error
        key = (op.entity.value, op.canonical_id, None if op.canonical_id else op.remote_id)
        if isinstance(error, Rejected):
            digest = fingerprint(op.after or {})
            self.store.settle(s, [entry_id], "rejected", error=str(error), fingerprint=digest)
            self.ledger[key] = LedgerRow(entry_id, "rejected", 0, None, digest)
            self.counts["rejected"] = self.counts.get("rejected", 0) + 1
        else:
            previous = self.ledger.get(key)
            attempts = (previous.attempts if previous is not None else 0) + 1
            due = self.retry.next_attempt(attempts, self.now)
            self.store.settle(s, [entry_id], "failed", error=str(error), attempts=attempts, next_attempt_at=due)
            self.ledger[key] = LedgerRow(entry_id, "failed", attempts, due, None)
            self.counts["failed"] = self.counts.get("failed", 0) + 1
        log.warning("push.failed", provider=self.name, entity=op.entity.value, action=op.action.value,
                    canonical_id=op.canonical_id, remote_id=op.remote_id, error=str(error))

    def _count(self, op: Operation) -> None:
        key = {"create": "created_out", "update": "updated_out", "delete": "deleted_out"}[op.action.value]
        self.counts[key] = self.counts.get(key, 0) + 1
        self.pushed += 1
        self.progress.update(f"{self.name}: push", self.pushed)

    # -- groups ---------------------------------------------------------------------

    async def _groups(self, ops: list[Operation]) -> None:
        for op in ops:
            if self.halted():
                return
            [entry] = self._pending([op])
            try:
                remote_id = await self._group_request(op)
            except ProviderError as exc:
                self.fence()
                with self.store.session() as s, s.begin():
                    self._settle_error(s, op, entry, exc)
                continue
            self.fence()
            with self.store.session() as s, s.begin():
                self.store.settle(s, [entry], "applied", remote_id=remote_id)
                self._record_group(s, op, remote_id)
            self._count(op)

    def _record_group(self, s: Session, op: Operation, remote_id: str) -> None:
        links = self.links["group"]
        self._group_map = None
        if "decision" in op.extra:
            self.store.settle_pending_deletes(s, [op.extra["decision"]])
        assert op.canonical_id is not None
        if op.action is Action.DELETE:
            links.pop(op.canonical_id, None)
            self.store.drop_links(s, self.name, "group", cids=[op.canonical_id])
            self.store.drop_mirror(s, self.name, contacts=False, remote_ids=[remote_id])
            self.mirror_groups.pop(remote_id, None)
            return
        after = op.after or {}
        links[op.canonical_id] = BaseRecord(remote_id, dict(after))
        self.store.set_links(s, self.name, "group", [(op.canonical_id, remote_id, after)])
        current = self.mirror_groups.get(remote_id)
        group = RemoteGroup(remote_id, after.get("name", ""), after.get("description", ""),
                            kept=current.kept if current is not None else NOTHING_KEPT)
        self.mirror_groups[remote_id] = group
        self.store.put_mirror_group(s, self.name, group)

    async def _group_request(self, op: Operation) -> str:
        after = op.after or {}
        if op.action is Action.CREATE:
            return await self.provider.create_group(after.get("name", ""), after.get("description", ""))
        assert op.remote_id is not None
        if op.action is Action.UPDATE:
            current = self.mirror_groups.get(op.remote_id or "")
            kept = current.kept if current is not None else NOTHING_KEPT  # resent: a SendHub edit replaces the group
            await self.provider.update_group(op.remote_id, after.get("name", ""), after.get("description", ""), kept)
        else:
            await self.provider.delete_group(op.remote_id)
        return op.remote_id

    # -- contacts ---------------------------------------------------------------------

    def _write(self, op: Operation, fields: Mapping[str, Any] | None = None) -> ContactWrite:
        fields = dict((op.after or {}) if fields is None else fields)
        to_remote = self._to_remote()
        groups = {to_remote[g] for g in fields.pop("groups", []) if g in to_remote}
        current = self.mirror.get(op.remote_id) if op.remote_id else None
        if current is not None:  # keep memberships syncd does not manage (unlinked remote groups)
            groups |= {g for g in current.groups if g not in self._linked_remote}
        opted_out = bool(fields.pop("opted_out", False))
        return ContactWrite(ref=op.canonical_id or 0, phone=op.key, fields=fields, groups=frozenset(groups),
                            remote_id=op.remote_id, opted_out=opted_out,
                            kept=current.kept if current is not None else NOTHING_KEPT,
                            # a membership to take away: only a write that replaces the contact's groups can
                            replace_groups=current is not None and not current.groups <= groups)

    def _to_remote(self) -> dict[int, str]:
        """canonical group id -> remote group id, of the groups linked now (built once per change of them)."""
        if self._group_map is None:
            self._group_map = {gid: link.remote_id for gid, link in self.links["group"].items()}
            self._linked_remote = frozenset(self._group_map.values())
        return self._group_map

    async def _contacts_create(self, ops: list[Operation]) -> None:
        await self._batched(ops, self.provider.create_contacts)

    async def _contacts_update(self, ops: list[Operation]) -> None:
        if self.provider.capabilities.contact_id_is_phone:
            await self._retire_old_numbers(ops)
        if self.provider.capabilities.member_changes:
            only_groups = [op for op in ops if _only_groups_differ(op)]
            rest = [op for op in ops if not _only_groups_differ(op)]
            if only_groups:
                await self._memberships(only_groups)
            ops = rest
        await self._batched(ops, self.provider.update_contacts)

    async def _retire_old_numbers(self, ops: list[Operation]) -> None:
        """A number changed where the number is the key (smsend): the upsert would add a second
        contact, so the one under the old number is deleted first."""
        retired = [Operation(Action.DELETE, Entity.CONTACT, Direction.OUTBOUND,
                             f"number changed from {op.remote_id} to {op.key}", canonical_id=op.canonical_id,
                             remote_id=op.remote_id, key=op.remote_id, before=op.before)
                   for op in ops if op.remote_id and op.remote_id != op.key]
        if retired:
            await self._contacts_delete(retired)

    async def _contacts_delete(self, ops: list[Operation]) -> None:
        await self._batched(ops, self.provider.delete_contacts, fields_of=lambda op: op.before or {})

    async def _batched(self, ops: list[Operation], call: Callable[[Sequence[ContactWrite]], Awaitable[list[WriteOutcome]]],
                       fields_of: Callable[[Operation], Mapping[str, Any]] | None = None) -> None:
        size = max(1, self.batch_size)
        batches = [ops[i:i + size] for i in range(0, len(ops), size)]
        # One batch at a time keeps pending rows few; the client runs each batch's requests concurrently.
        for batch in batches:
            if self.halted():
                return
            entries = self._pending(batch)
            writes = [self._write(op, fields_of(op) if fields_of else None) for op in batch]
            try:
                outcomes = await call(writes)
            except ProviderError as exc:
                outcomes = [WriteOutcome(w.ref, error=exc) for w in writes]
            self._settle_contacts(batch, entries, writes, outcomes)

    def _settle_contacts(self, ops: Sequence[Operation], entries: Sequence[int], writes: Sequence[ContactWrite],
                         outcomes: Sequence[WriteOutcome]) -> None:
        self.fence()
        applied: list[tuple[Operation, ContactWrite, str]] = []
        settled: list[tuple[int, str | None, str | None]] = []
        holders = self._holders(ops, outcomes)
        with self.store.session() as s, s.begin():
            for op, entry, write, outcome in zip(ops, entries, writes, outcomes, strict=True):
                remote_id = outcome.remote_id or op.remote_id
                error = outcome.error or self._taken(op, remote_id, holders)
                if error is None and remote_id is None:
                    error = ProtocolError(f"{self.name} answered no id for {op.key}", provider=self.name,
                                          operation=f"{op.action.value} contact", record=op.key)
                if error is not None:
                    self._settle_error(s, op, entry, error)
                    continue
                assert remote_id is not None
                settled.append((entry, remote_id, outcome.note or None))
                applied.append((op, write, remote_id))
                self._count(op)
            # a batch's rows in a few statements: one statement per row cost most of a large push
            self.store.settle_applied(s, settled)
            self._record_contacts(s, applied)

    def _holders(self, ops: Sequence[Operation], outcomes: Sequence[WriteOutcome]) -> dict[str, int]:
        """remote id -> canonical id of the links the remote ids answered to creates already belong to."""
        created = {o.remote_id for op, o in zip(ops, outcomes, strict=True)
                   if op.action is Action.CREATE and o.error is None and o.remote_id}
        if not created:
            return {}
        return {rid: cid for cid, rid in self.store.link_pairs(self.name, "contact", rids=created).items()}

    def _taken(self, op: Operation, remote_id: str | None, holders: Mapping[str, int]) -> Rejected | None:
        """A create answered with a remote record another canonical contact is linked to (a number
        taken over at the provider): linking it would merge two contacts, so it is refused."""
        if op.action is not Action.CREATE or remote_id is None:
            return None
        holder = holders.get(remote_id)
        if holder is None or holder == op.canonical_id:
            return None
        return Rejected(f"{self.name} holds {op.key} as contact {remote_id}, which is linked to canonical contact "
                        f"{holder}; nothing merged (change one of the numbers)", provider=self.name,
                        operation="create contact", record=op.key)

    def _record_contacts(self, s: Session, applied: Sequence[tuple[Operation, ContactWrite, str]]) -> None:
        """Links (bases) and mirror rows for applied contact operations (of one stage: no record twice)."""
        links = self.links["contact"]
        upserted: list[tuple[int, str, Mapping[str, Any]]] = []
        mirrored: list[RemoteContact] = []
        unlinked: list[int] = []
        gone: list[str] = []
        for op, write, remote_id in applied:
            if op.action is Action.DELETE:
                if op.canonical_id is not None:
                    links.pop(op.canonical_id, None)
                    unlinked.append(op.canonical_id)
                gone.append(remote_id)
                self.mirror.pop(remote_id, None)
                continue
            assert op.canonical_id is not None
            after = dict(op.after or {})
            if "groups" in after:  # the base holds only memberships sent: a group not (yet) at the provider
                linked = self.links["group"]  # reads as "removed there" otherwise, and the next run drops it
                after["groups"] = [g for g in after["groups"] if g in linked]
            links[op.canonical_id] = BaseRecord(remote_id, after)
            upserted.append((op.canonical_id, remote_id, after))
            contact = RemoteContact(remote_id, write.phone, dict(write.fields), write.groups, write.opted_out,
                                    kept=write.kept)
            self.mirror[remote_id] = contact
            mirrored.append(contact)
        self.store.drop_links(s, self.name, "contact", cids=unlinked)
        self.store.drop_mirror(s, self.name, contacts=True, remote_ids=gone)
        self.store.set_links(s, self.name, "contact", upserted)
        self.store.put_mirror_contacts(s, self.name, mirrored)
        # approved or declined deletions carried out: their pending rows are settled with them
        self.store.settle_pending_deletes(s, [op.extra["decision"] for op, _, _ in applied if "decision" in op.extra])

    async def _memberships(self, ops: list[Operation]) -> None:
        """Contacts whose groups alone changed: per-group add/remove calls (SendHub)."""
        to_remote = self._to_remote()
        changes: dict[str, tuple[set[str], set[str]]] = {}
        member_ops: list[Operation] = []
        for op in ops:
            before, after = set((op.before or {}).get("groups", [])), set((op.after or {}).get("groups", []))
            for gid in sorted(after - before):
                member_ops.append(_membership_op(op, gid, Action.CREATE))
            for gid in sorted(before - after):
                member_ops.append(_membership_op(op, gid, Action.DELETE))
        entries = self._pending(member_ops)
        for mop in member_ops:
            rgid = to_remote.get(mop.extra["group"])
            if rgid is not None and mop.remote_id is not None:
                add, remove = changes.setdefault(rgid, (set(), set()))
                (add if mop.action is Action.CREATE else remove).add(mop.remote_id)
        results = await asyncio.gather(*(self._change_group(rgid, add, remove) for rgid, (add, remove) in changes.items()))
        errors = {(rgid, cid): err for rgid, errs in results for cid, err in errs.items()}
        failed_contacts: set[int | None] = set()
        self.fence()
        with self.store.session() as s, s.begin():
            for mop, entry in zip(member_ops, entries, strict=True):
                rgid = to_remote.get(mop.extra["group"])
                error = errors.get((rgid, mop.remote_id or "")) if rgid else Rejected(
                    "the group is not linked at this provider", provider=self.name, operation="change membership")
                if error is not None:
                    failed_contacts.add(mop.canonical_id)
                    self._settle_error(s, mop, entry, error)
                else:
                    self.store.settle(s, [entry], "applied")
            done = [op for op in ops if op.canonical_id not in failed_contacts]
            self._record_contacts(s, [(op, self._write(op), op.remote_id) for op in done if op.remote_id])
            for op in done:
                self._count(op)

    async def _change_group(self, rgid: str, add: set[str], remove: set[str]) -> tuple[str, dict[str, Exception]]:
        try:
            outcome = await self.provider.change_members(rgid, sorted(add), sorted(remove))
        except ProviderError as exc:
            return rgid, {cid: exc for cid in add | remove}
        return rgid, dict(outcome.errors)


def _only_groups_differ(op: Operation) -> bool:
    before = {k: v for k, v in (op.before or {}).items() if k != "groups"}
    after = {k: v for k, v in (op.after or {}).items() if k != "groups"}
    return before == after and op.remote_id is not None


def _membership_op(op: Operation, gid: int, action: Action) -> Operation:
    verb = "added to" if action is Action.CREATE else "removed from"
    return Operation(action, Entity.MEMBERSHIP, Direction.OUTBOUND, f"{op.reason}: {verb} group {gid}",
                     canonical_id=op.canonical_id, remote_id=op.remote_id, key=op.key,
                     before=None, after={"group": gid}, extra={"group": gid})
