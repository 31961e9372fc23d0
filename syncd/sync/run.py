"""One sync run: pull every provider, reconcile, apply inbound, push outbound, record.

``run_once`` is the single code path of ``syncd sync``, ``syncd plan`` (a dry
run: the same pull and plan inside a transaction that is rolled back, and no
provider is written) and the daemon.

A run reconciles what may be out of step (see "Change detection" in
:mod:`syncd.db.models` and :mod:`syncd.sync.scope`): per account, the records
the journal names past the account's position, those its pull found changed or
gone, and those due for a retry; or everything, in a full run. In order:

1. pull every account concurrently into the mirror (unchanged records are dropped as their page arrives);
2. groups, every account: reconcile (all groups: there are few) and apply the inbound operations;
3. contacts, every account in turn: reconcile its scope window by window and apply the inbound operations;
4. push, every account concurrently: groups, then contacts window by window, deletes last;
5. move each account that finished to where the journal stood when the run started,
   journalling the records it left out of step.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine

from syncd.config import Config, ProviderSettings
from syncd.db.canonical import KEEPER
from syncd.db.journal import FLOOR, Position
from syncd.db.clock import utcnow
from syncd.db.repo import Book, Store
from syncd.dberrors import database_outage
from syncd.errors import LeaseLost, ProviderError, Unsupported
from syncd.model import (
    BaseRecord,
    Contact,
    Deletes,
    Mode,
    PendingStatus,
    Preference,
    RemoteGroup,
    fingerprint,
    group_key,
)
from syncd.providers import build_provider
from syncd.providers.base import Provider
from syncd.sync import project
from syncd.sync.executor import Ledger, Pusher, RetryRules
from syncd.sync.inbound import InboundApplier, Touched
from syncd.sync.plan import (
    Action,
    Direction,
    Entity,
    Operation,
    PendingDelete,
    guard,
    log_entry,
    pending_key,
    with_deletion_policy,
)
from syncd.sync.progress import Progress, Silent
from syncd.sync.reconcile import Policy, reconcile
from syncd.sync.scope import Part, Scope, Seeds, Window

__all__ = ["ENGINE_VERSION", "ProviderReport", "RunReport", "run_once"]

log = structlog.get_logger("syncd.run")

#: Part of every account's settings fingerprint: raise it when a release changes how records are
#: projected or reconciled, so that the first run after an upgrade is a full one.
ENGINE_VERSION = 2
#: Operations a real run keeps in its report (all of them in a dry run, which prints them).
PLAN_SAMPLE = 1000
#: An incremental read of a provider's opt-outs starts this long before the newest one it holds,
#: so that an entry recorded on the boundary (or with a clock a little off) is not missed.
OPT_OUT_OVERLAP = timedelta(minutes=10)
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@dataclass
class ProviderReport:
    """What one run did with one provider account."""

    name: str
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    complete: bool = False
    full: bool = False  # this run reconciled every record of the account
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # what went wrong without failing the account
    plan: list[Operation] = field(default_factory=list)  # the planned operations (a sample in a real run)
    changes: int = 0  # planned operations that change a side (``Operation.is_change``)
    requests: int = 0  # HTTP requests sent to the account (retries included), for metrics
    retries: int = 0
    keep_all: bool = False

    def planned(self, ops: Iterable[Operation]) -> None:
        for op in ops:
            if op.action is Action.UNLINK:
                continue
            self.changes += op.is_change
            if self.keep_all or len(self.plan) < PLAN_SAMPLE:
                self.plan.append(op)

    def summary(self) -> dict[str, Any]:
        warnings = {"warnings": self.warnings} if self.warnings else {}
        return {"status": self.status, "error": self.error, **warnings, **self.counts}


@dataclass
class RunReport:
    run_id: int
    status: str
    providers: list[ProviderReport]
    invalid: list[tuple[int, str, str]] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(p.status == "failed" or p.counts.get("failed") for p in self.providers)

    @property
    def pending_changes(self) -> int:
        return sum(p.changes for p in self.providers)


@dataclass
class _Account:
    """One account's state during a run."""

    settings: ProviderSettings
    client: Provider
    report: ProviderReport
    policy: Policy
    fence: Callable[[], None]
    settings_print: str
    position: Position | None = None
    groups: dict[str, RemoteGroup] = field(default_factory=dict)  # the mirror's groups, as pulled
    group_links: dict[int, BaseRecord] = field(default_factory=dict)
    ledger: Ledger = field(default_factory=dict)
    seeds: Seeds = field(default_factory=Seeds)
    check: set[int] | None = None  # canonical rows whose phone is validated again (None: all)
    out_of_step: set[int] = field(default_factory=set)  # journalled for the next run
    out_of_step_remote: set[str] = field(default_factory=set)
    finished: bool = False  # reconciled to the end: its position may move
    reconciled: bool = False  # its inbound phase reconciled its seeds; ``seeds`` now holds what is left
    deletes: Deletes = Deletes.PROPAGATE
    selection: project.Selection = field(default_factory=project.Selection)
    pending: dict[tuple[str, str, int | None, str | None], PendingDelete] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def projection(self) -> project.Projection:
        capabilities = self.client.capabilities
        return project.Projection(self.client.project, capabilities.opt_out_outbound, capabilities.group_fields)


@dataclass(frozen=True)
class RunOptions:
    """How :func:`run_once` runs (see its parameters)."""

    only: Sequence[str] = ()
    trigger: str = "manual"
    dry_run: bool = False
    allow_mass_delete: bool = False
    full: bool = False
    client_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stopping: Callable[[], bool] = lambda: False
    fence_for: Callable[[str], Callable[[], None]] | None = None
    progress: Progress | None = None


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_once(config: Config, engine: Engine, *, only: Sequence[str] = (), trigger: str = "manual",
                   dry_run: bool = False, allow_mass_delete: bool = False, full: bool = False,
                   client_options: Mapping[str, Mapping[str, Any]] | None = None,
                   stopping: Callable[[], bool] = lambda: False,
                   fence_for: Callable[[str], Callable[[], None]] | None = None,
                   progress: Progress | None = None) -> RunReport:
    """Run one sync (or, with ``dry_run``, plan it) and report per provider.

    ``full`` reconciles every record instead of what may have changed;
    ``stopping`` is polled between batches (a daemon's SIGTERM); ``fence_for``
    gives each account's lease check; ``progress`` shows the phases on a terminal.
    """
    options = RunOptions(only, trigger, dry_run, allow_mass_delete, full, client_options or {}, stopping,
                         fence_for, progress)
    with Store(engine, dry_run=dry_run) as store:
        return await Run(config, store, options).execute()


class Run:
    """One run's steps over its accounts (see the module docstring)."""

    def __init__(self, config: Config, store: Store, options: RunOptions) -> None:
        self.config, self.store, self.options = config, store, options
        self.progress: Progress = options.progress or Silent()
        self.run_id = 0
        self.book = Book({}, {})
        self.touched: Touched = {}  # canonical contacts changed by inbound operations this run
        self.touched_by: dict[int, set[str]] = {}  # ... and the providers whose inbound changed them
        self.open_invalid: dict[tuple[str, int], str] = {}
        self._reported_invalid: list[tuple[int, str, str]] = []
        self.revisit: set[int] = set()  # canonical rows read again whatever changed (see _steps)
        self.accounts: list[_Account] = []

    async def execute(self) -> RunReport:
        store, options = self.store, self.options
        chosen = [p for p in self.config.providers if p.enabled and (not options.only or p.name in options.only)]
        self.run_id = store.start_run(options.trigger, owner_id())
        structlog.contextvars.bind_contextvars(run_id=self.run_id)
        self.accounts = [self._account(p) for p in chosen]
        try:
            await self._steps()
        except BaseException as exc:
            self._abandon(exc)
            raise
        finally:
            await asyncio.gather(*(a.client.aclose() for a in self.accounts), return_exceptions=True)
            for a in self.accounts:
                a.report.requests, a.report.retries = a.client.stats.requests, a.client.stats.retries
            structlog.contextvars.unbind_contextvars("run_id")
            self.progress.close()
        reports = [a.report for a in self.accounts]
        status = _run_status(reports)
        store.finish_run(self.run_id, status, {"providers": {r.name: r.summary() for r in reports}})
        return RunReport(self.run_id, status, reports, self._reported_invalid)

    async def _steps(self) -> None:
        store = self.store
        store.settle_interrupted(a.name for a in self.accounts)
        start = store.journal_position()
        positions = store.positions()
        await _all(self._pull(a) for a in self.accounts)
        self._apply_opt_outs()
        groups, invalid_groups = store.load_groups()
        self.book = Book({}, groups, invalid_groups=invalid_groups)
        self.open_invalid = store.invalid_open()
        # Rows reported invalid are read again every run (a fix, or the row another one
        # was a duplicate of going away, makes them valid), with the rows keeping their numbers.
        self.revisit = {cid for entity, cid in self.open_invalid if entity == "contact"}
        self.revisit |= {int(m.group(1)) for (entity, _), error in self.open_invalid.items()
                         if entity == "contact" and (m := KEEPER.search(error))}
        self._report_invalid([], invalid_groups, loaded=None)
        self._close_removed_invalid()
        ready = [a for a in self.accounts if a.report.complete]
        for a in ready:
            self._prepare(a, positions)
        for a in ready:
            if self._still_leased(a):
                self._inbound_groups(a)
        for a in ready:
            # An account whose contacts cannot be listed has no changes of its own to bring in:
            # what little its plan holds inbound (links) is applied with its push (see _push_all).
            if self._still_leased(a) and (a.client.capabilities.list_contacts or a.settings.mode == "pull"):
                self._inbound_contacts(a)
        writable = [a for a in ready if a.settings.mode != "pull" and a.report.status != "failed"]
        await _all(self._outbound(a) for a in writable)
        if not store.dry_run:
            self._move_positions(ready, start)

    # -- accounts ----------------------------------------------------------------------------------

    def _account(self, settings: ProviderSettings) -> _Account:
        options = self.options
        client = build_provider(settings, default_region=self.config.sync.default_region,
                                **options.client_options.get(settings.name, {}))
        policy = Policy(settings.name, conflict=Preference(self.config.conflict_for(settings)), mode=Mode(settings.mode))
        fence = options.fence_for(settings.name) if options.fence_for else (lambda: None)
        report = ProviderReport(settings.name, keep_all=options.dry_run)
        deletes = Deletes(self.config.deletes_for(settings))
        selection = project.Selection(
            frozenset(group_key(n) for n in settings.include_groups) if settings.include_groups is not None else None,
            frozenset(group_key(n) for n in settings.exclude_groups))
        settings_print = fingerprint({"engine": ENGINE_VERSION, "type": settings.type, "mode": settings.mode,
                                      "conflict": policy.conflict, "region": self.config.sync.default_region,
                                      "deletes": deletes, "include": sorted(selection.include or ["*"]),
                                      "exclude": sorted(selection.exclude)})
        return _Account(settings, client, report, policy, fence, settings_print, deletes=deletes, selection=selection)

    def _prepare(self, a: _Account, positions: Mapping[str, Position]) -> None:
        """What the account's reconcile starts from: its links to groups, its retry ledger, its seeds."""
        store = self.store
        a.group_links = store.load_links(a.name, "group")
        a.ledger = store.retry_ledger(a.name)
        a.pending = {key: PendingDelete(id_, PendingStatus(status)) for key, (id_, status) in store.pending_deletes(a.name).items()}
        self._warn_unknown_groups(a)
        a.position = positions.get(a.name)
        a.report.full = self._needs_full_run(a, positions)
        changes = store.journal_changes(a.name, a.position) if a.position is not None else None
        invalid_ids = self.revisit
        if changes is None:
            a.check = None
        else:
            a.check = changes.contacts | invalid_ids
        if a.report.full:
            a.seeds = Seeds(everything=True)
            log.info("run.scope", provider=a.name, full=True)
            return
        assert changes is not None
        a.seeds = Seeds(set(changes.contacts) | invalid_ids, set(changes.remote_contacts))
        now = utcnow()
        for (entity, cid, rid), row in a.ledger.items():
            if entity == "contact" and row.due(now, RetryRules().cap):
                a.seeds.add(contacts=[cid] if cid is not None else [], remote=[rid] if rid is not None else [])
        log.info("run.scope", provider=a.name, full=False, canonical=len(a.seeds.contacts), remote=len(a.seeds.remote))

    def _warn_unknown_groups(self, a: _Account) -> None:
        """A selection naming no canonical group is a warning, not an error: the group may be created later."""
        keys = {g.key for g in self.book.groups.values()}
        named = [*(a.settings.include_groups or ()), *a.settings.exclude_groups]
        for name in named:
            if group_key(name) not in keys:
                warning = f"include_groups/exclude_groups names {name!r}, which no canonical group has (yet)"
                a.report.warnings.append(warning)
                log.warning("selection.unknown_group", provider=a.name, group=name)

    def _needs_full_run(self, a: _Account, positions: Mapping[str, Position]) -> bool:
        p = a.position
        if self.options.full or p is None or p.settings != a.settings_print or p.full_at is None:
            return True
        floor = positions.get(FLOOR)
        if floor is not None and p.position < floor.position:
            return True  # the journal was pruned past what this account has read
        return utcnow() - p.full_at >= timedelta(seconds=self.config.sync.full_every)

    def _move_positions(self, ready: Sequence[_Account], start: int) -> None:
        """Accounts that reconciled to the end move to where the journal stood at the start of the run."""
        for a in ready:
            if a.finished and a.report.status != "failed":
                self.store.save_position(a.name, start, a.settings_print, full=a.report.full,
                                         marks=a.out_of_step, remote_marks=a.out_of_step_remote)
        self.store.prune_journal([p.name for p in self.config.providers if p.enabled])

    def _abandon(self, exc: BaseException) -> None:
        """Close the run's row as failed when the run dies, so it never stays `running`."""
        try:
            why = ("stopped before the run finished" if isinstance(exc, asyncio.CancelledError)
                   else f"the run died ({type(exc).__name__}; the log has the details)")
            self.store.finish_run(self.run_id, "failed", {}, error=f"{why}; the next run resumes its work")
        except Exception as failed:  # the caller reports the run's error (mostly this same outage): no second traceback
            log.warning("run.finish_failed", run_id=self.run_id, error=(str(failed).splitlines() or [repr(failed)])[0])

    def _still_leased(self, a: _Account) -> bool:
        """Check the account's lease before writing inbound changes; a lost one fails the account."""
        if a.report.status == "failed":
            return False
        try:
            a.fence()
        except LeaseLost as exc:
            a.report.status, a.report.error = "failed", str(exc)
            log.error("run.lease_lost", provider=a.name, error=str(exc))
            return False
        return True

    # -- pull --------------------------------------------------------------------------------------

    async def _pull(self, a: _Account) -> None:
        store, name = self.store, a.name
        contacts = 0
        try:
            known = store.mirror_fingerprints(name, contacts=False)
            async for page in a.client.groups():
                store.write_mirror(name, groups=page, known=known)
                a.groups.update((g.remote_id, g) for g in page)
            if a.client.capabilities.list_contacts:
                known = store.mirror_fingerprints(name, contacts=True)
                mirrored, new = set(known), 0
                async for contact_page in a.client.contacts(known=known):  # only new or changed ones come
                    store.write_mirror(name, contacts=contact_page)
                    new += sum(1 for c in contact_page if c.remote_id not in mirrored)
                    contacts = len(mirrored) - len(known) + new  # listed so far
                    self.progress.update(f"{name}: pull", contacts)
                gone = set(known)  # listed last time, not this time
            else:
                gone = set()
            if a.client.capabilities.list_opt_outs:
                await self._read_opt_outs(a)
        except (ProviderError, Unsupported) as exc:
            self._pull_failed(a, str(exc))
            return
        except Exception as exc:  # a bug, or a database error that is no outage: this provider fails, the others go on
            if database_outage(exc) is not None:
                raise  # the database itself is gone: no provider can go on; the caller reports it once
            log.exception("pull.crashed", provider=name)
            # Only the type reaches the tables: an unexpected message may quote anything, secrets included.
            self._pull_failed(a, f"internal error while pulling ({type(exc).__name__}); the log has the details")
            return
        store.prune_mirror(name, contacts=False, gone=set(store.mirror_fingerprints(name, contacts=False)) - a.groups.keys())
        store.prune_mirror(name, contacts=True, gone=gone)
        a.report.complete = True
        a.report.counts["pulled"] = len(a.groups) + contacts
        store.record_pull(name, self.run_id, True, None)
        log.info("pull.done", provider=name, groups=len(a.groups), contacts=contacts)

    async def _read_opt_outs(self, a: _Account) -> None:
        """The opt-outs the provider lists on its own (smsend's blacklist), since the newest it listed before.

        An answer that cannot be read leaves the opt-outs unread for this run,
        says so, and fails nothing else: it is never taken for "nobody opted out".
        """
        since = self.store.opt_outs_since(a.name)
        entries: list[tuple[str, str, datetime | None]] = []
        try:
            async for page in a.client.opt_outs(since - OPT_OUT_OVERLAP if since is not None else None):
                entries.extend((o.phone, o.origin, o.at) for o in page if _E164.fullmatch(o.phone))
        except ProviderError as exc:
            a.report.warnings.append(f"opt-outs not read: {exc}")
            log.error("opt_outs.unreadable", provider=a.name, error=str(exc))
            return
        with self.store.writing() as s:
            self.store.remember_opt_outs(s, a.name, entries)
        a.report.counts["opt_outs_listed"] = len(entries)

    def _apply_opt_outs(self) -> None:
        """Canonical contacts whose number a provider listed as opted out: opted out here too (sticky), logged."""
        changed = self.store.apply_opt_outs()
        if not changed:
            return
        reports = {a.name: a.report for a in self.accounts}
        entries = []
        for cid, phone, provider, origin in changed:
            self.touched.setdefault(cid, {})["opted_out"] = provider
            self.touched_by.setdefault(cid, set()).add(provider)
            op = Operation(Action.UPDATE, Entity.CONTACT, Direction.INBOUND, f"opted out at {provider} ({origin})",
                           canonical_id=cid, key=phone, before={"opted_out": False}, after={"opted_out": True},
                           extra={"opt_out": True, "origin": origin})
            entries.append(log_entry(op, provider, "applied"))
            if provider in reports:
                reports[provider].planned([op])
                reports[provider].counts["updated_in"] = reports[provider].counts.get("updated_in", 0) + 1
        with self.store.session() as s, s.begin():
            self.store.log(s, self.run_id, entries)
        log.info("opt_outs.applied", contacts=len(changed))

    def _pull_failed(self, a: _Account, error: str) -> None:
        a.report.status, a.report.error = "failed", error
        log.error("pull.failed", provider=a.name, error=error)
        try:
            self.store.record_pull(a.name, self.run_id, False, error)
        except Exception:  # the database itself may be what failed
            log.exception("pull.record_failed", provider=a.name)

    # -- reconcile ---------------------------------------------------------------------------------

    def _scope(self, a: _Account) -> Scope:
        return Scope(self.store, a.name, self.book.groups, self.config.sync.default_region, self._checker(a))

    def _checker(self, a: _Account) -> Callable[[int], bool]:
        """Which canonical rows get their phone validated: those changed since the account last read them
        (every row, on its first run), but not those this run wrote (their numbers came validated)."""
        touched, changed = self.touched, a.check
        if changed is None:
            return lambda cid: cid not in touched
        return lambda cid: cid in changed and cid not in touched

    def _plan_groups(self, a: _Account) -> list[Operation]:
        c = a.projection
        links, groups = _without_invalid(self.book.invalid_groups, a.group_links, a.groups)
        taken = {gid: g for gid, g in self.book.groups.items() if a.selection.group(g)}
        ops = reconcile(Entity.GROUP, links, project.local_groups(c, taken), project.remote_groups(c, groups),
                        a.policy)
        ops = self._decided(a, _left_selection(ops, self.book.groups.keys() - taken.keys(), a.name))
        return self._guard(a, Entity.GROUP, ops)

    def _plan_contacts(self, a: _Account, window: Window) -> list[Operation]:
        """The window's contact operations (the deletion guard is the caller's: it spans windows)."""
        c = a.projection
        group_links, _ = _without_invalid(self.book.invalid_groups, a.group_links, a.groups)
        taken = a.selection.contacts(window.contacts, self.book.groups)
        local = project.local_contacts(c, _without_groups(taken, self._unplaceable(a, group_links)))
        links, mirror = _without_invalid(window.invalid, window.links, window.mirror)
        ops = reconcile(Entity.CONTACT, links, local, project.remote_contacts(c, mirror, group_links), a.policy)
        return self._decided(a, _left_selection(ops, window.contacts.keys() - taken.keys(), a.name))

    def _decided(self, a: _Account, ops: list[Operation]) -> list[Operation]:
        """The plan as the account's deletion policy has it (see :func:`syncd.sync.plan.with_deletion_policy`)."""
        return with_deletion_policy(ops, a.deletes, a.name, a.pending)

    def _hold_for_approval(self, a: _Account, ops: Sequence[Operation]) -> list[Operation]:
        """Log each deletion newly held for approval (once); the operations to carry out.

        Those held for approval are left out: their ``awaiting_approval`` row is their log.
        """
        fresh = [op for op in ops if op.extra.get("pending") == "new"]
        if fresh:
            with self.store.session() as s, s.begin():
                ids = self.store.log(s, self.run_id, [log_entry(op, a.name, PendingStatus.AWAITING) for op in fresh])
            for op, id_ in zip(fresh, ids, strict=True):
                a.pending[pending_key(op)] = PendingDelete(id_, PendingStatus.AWAITING)
            log.warning("deletes.awaiting_approval", provider=a.name, count=len(fresh))
        return [op for op in ops if "pending" not in op.extra]

    def _call_off(self, a: _Account, ops: Sequence[Operation], window: Window) -> None:
        """Pending deletes of this window's records that the plan no longer has: the record came back or changed."""
        planned = {pending_key(op) for op in ops if op.action is Action.DELETE}
        decided = {op.extra["decision"] for op in ops if "decision" in op.extra}  # a declined one plans a create
        records = {*window.links, *window.contacts} | {l.remote_id for l in window.links.values()} | {*window.mirror}
        gone = [(key, p) for key, p in a.pending.items() if key[0] == "contact" and key not in planned
                and p.id not in decided and (key[2] in records or key[3] in records)]
        if not gone:
            return
        with self.store.session() as s, s.begin():
            self.store.settle_pending_deletes(s, [p.id for _, p in gone], status=PendingStatus.CANCELLED,
                                              note="called off: the record came back or changed")
        for key, _ in gone:
            del a.pending[key]
        log.info("deletes.called_off", provider=a.name, count=len(gone))

    def _guard(self, a: _Account, entity: Entity, ops: Sequence[Operation]) -> list[Operation]:
        if not any(op.action is Action.DELETE for op in ops):
            return list(ops)
        if entity is Entity.GROUP:
            linked, canonical = len(a.group_links), len(self.book.groups)
        else:
            linked, canonical = self.store.count_links(a.name, "contact"), self.store.count_contacts()
        return guard(ops, entity=entity, linked=linked, canonical=canonical,
                     max_fraction=self.config.sync.max_delete_fraction, allow=self.options.allow_mass_delete,
                     provider=a.name)

    def _unplaceable(self, a: _Account, group_links: Mapping[int, BaseRecord]) -> set[int]:
        """Canonical groups the provider refused to create and that have not changed since.

        Memberships in them cannot reach the provider; left in the projection they
        would plan the same contact update every run.
        """
        groups = self.book.groups
        return {gid for (entity, gid, _), row in a.ledger.items()
                if entity == "group" and row.status == "rejected" and gid in groups and gid not in group_links
                and row.fingerprint == fingerprint(project.group_fields(a.projection, groups[gid].name,
                                                                        groups[gid].description))}

    # -- inbound -----------------------------------------------------------------------------------

    def _applier(self, a: _Account) -> InboundApplier:
        return InboundApplier(self.store, self.run_id, self.book, a.group_links, a.client, self.touched, self.touched_by,
                              a.report.counts)

    def _inbound_groups(self, a: _Account) -> None:
        ops = self._plan_groups(a)
        inbound = [op for op in ops if op.direction is Direction.INBOUND or op.action is Action.UNLINK]
        a.report.planned(inbound)
        self._applier(a).apply(self._hold_for_approval(a, inbound), None)
        self._seed_group_members(a, ops)

    def _seed_group_members(self, a: _Account, ops: Iterable[Operation]) -> None:
        """Members of every group an operation touches may project differently now: reconcile them too."""
        gids = {op.canonical_id for op in ops if op.canonical_id is not None}
        rgids = {op.remote_id for op in ops if op.remote_id is not None}
        if a.seeds.everything or not (gids or rgids):
            return
        a.seeds.add(contacts=self.store.canonical_members(gids), remote=self.store.mirror_members(a.name, rgids))

    def _inbound_contacts(self, a: _Account) -> None:
        """Apply the inbound operations of the account's scope, window by window.

        Each window is planned again in memory once its operations are applied:
        what that plan still holds is all the push must look at of these records
        (unless another provider's inbound changes them), so even a full run
        reconciles each record once per phase, not twice.
        """
        applier = self._applier(a)
        parts = self._parts(a)
        deferred = _Deferred()
        left = Seeds()
        for part in parts:
            window = self._load(a, part)
            plan = self._plan_contacts(a, window)
            self._call_off(a, plan, window)
            ops = [op for op in plan if op.direction is Direction.INBOUND or op.action is Action.UNLINK]
            if len(parts) > 1:  # the guard counts deletes over every window: they wait for the others
                ops = deferred.take(ops, window)
            else:
                ops = self._guard(a, Entity.CONTACT, ops)
            a.report.planned(ops)
            applier.apply(self._hold_for_approval(a, ops), window)
            again = self._plan_contacts(a, window)  # the window as its inbound operations left it
            if a.settings.mode == "pull":
                self._note_out_of_step(a, window, again)
            _add_records(left, again)
            self.progress.update(f"{a.name}: reconcile", applier.done)
        if deferred.ops:
            ops = self._guard(a, Entity.CONTACT, deferred.ops)
            a.report.planned(ops)
            applier.apply(self._hold_for_approval(a, ops), deferred.window)
            _add_records(left, ops)
        a.seeds, a.reconciled = left, True
        if a.settings.mode == "pull":
            a.finished = True

    def _parts(self, a: _Account) -> list[Part]:
        """The account's scope now: its seeds, and the contacts inbound operations changed this run
        (once its own inbound phase reconciled its seeds, only those other providers changed)."""
        seeds = a.seeds
        if not seeds.everything and self.touched_by:
            changed = {cid for cid, by in self.touched_by.items() if not a.reconciled or by - {a.name}}
            seeds = Seeds(seeds.contacts | changed, set(seeds.remote))
        return self._scope(a).parts(seeds)

    def _load(self, a: _Account, part: Part) -> Window:
        window = self._scope(a).load(part)
        log.debug("scope.window", provider=a.name, contacts=len(window.contacts), links=len(window.links),
                  mirror=len(window.mirror))
        self._report_invalid(window.invalid, [], loaded={*window.contacts, *(cid for cid, _, _ in window.invalid)})
        return window

    # -- outbound ----------------------------------------------------------------------------------

    async def _outbound(self, a: _Account) -> None:
        pusher = Pusher(a.client, self.store, self.run_id, a.group_links, a.report.counts, utcnow(),
                        batch_size=a.settings.batch_size, ledger=a.ledger, fence=a.fence,
                        stopping=self.options.stopping, progress=self.progress, mirror_groups=a.groups)
        try:
            await self._push_all(a, pusher)
        except LeaseLost as exc:  # another replica owns the account now: settle nothing more
            a.report.status, a.report.error = "failed", str(exc)
            return
        if pusher.stopped_by is not None:
            a.report.status, a.report.error = "failed", str(pusher.stopped_by)
        elif not pusher.halted():
            a.finished = True

    async def _push_all(self, a: _Account, pusher: Pusher) -> None:
        group_ops = self._hold_for_approval(a, self._outbound_ops(a, pusher, self._plan_groups(a)))
        self._seed_group_members(a, group_ops)
        await pusher.push([op for op in group_ops if op.action is not Action.DELETE], None)
        parts = self._parts(a)
        deferred = _Deferred()
        applier = self._applier(a) if not a.client.capabilities.list_contacts else None
        for part in parts:
            if pusher.halted():
                return
            window = self._load(a, part)
            plan = self._plan_contacts(a, window)
            self._call_off(a, plan, window)  # another provider's inbound may have brought a record back
            if applier is not None:  # no inbound phase of its own (see _steps)
                inbound = [op for op in plan if op.direction is Direction.INBOUND or op.action is Action.UNLINK]
                if inbound:
                    a.report.planned(inbound)
                    applier.apply(self._hold_for_approval(a, inbound), window)
                    plan = self._plan_contacts(a, window)
            ops = self._outbound_ops(a, pusher, plan, guard_now=len(parts) == 1)
            if len(parts) > 1:
                ops = deferred.take(ops, window)
            await pusher.push(self._hold_for_approval(a, ops), window)
            self._note_out_of_step(a, window, self._plan_contacts(a, window), pusher, deferred)
        if deferred.ops:
            ops = self._outbound_ops(a, pusher, deferred.ops, guard_now=True)
            await pusher.push(self._hold_for_approval(a, ops), deferred.window)
            self._note_unfinished_deletes(a, ops, pusher)
        await pusher.push([op for op in group_ops if op.action is Action.DELETE], None)

    def _outbound_ops(self, a: _Account, pusher: Pusher, ops: Sequence[Operation], *,
                      guard_now: bool = True) -> list[Operation]:
        """The outbound operations of a plan, guarded, each marked with why it must wait (if it must); reported."""
        out = [op for op in ops if op.direction is Direction.OUTBOUND and op.action is not Action.UNLINK]
        if guard_now and out and out[0].entity is not Entity.GROUP:
            out = self._guard(a, Entity.CONTACT, out)
        marked = []
        for op in out:
            waiting = pusher.waiting_reason(op)
            marked.append(replace(op, skip_reason=waiting) if waiting and not op.skip_reason else op)
        a.report.planned(marked)
        return marked if not self.store.dry_run else []

    def _note_out_of_step(self, a: _Account, window: Window, again: Sequence[Operation],
                          pusher: Pusher | None = None, deferred: _Deferred | None = None) -> None:
        """Records a fresh plan of the window still has work for are journalled for the next run."""
        waiting = set(deferred.records) if deferred is not None else set()
        for op in again:
            if op.action is Action.DUPLICATE or (op.action is Action.CONFLICT and op.held):
                continue  # reported already; a conflict waits for `syncd resolve`, which journals it
            if op.held and ("pending" in op.extra or op.extra.get("kept")):
                continue  # a deletion awaiting approval (`syncd deletes` journals it) or kept by `never`
            if pusher is not None and pusher.waiting_reason(op):
                continue  # rejected (until it changes) or backing off (the retry ledger brings it back)
            if (op.canonical_id, op.remote_id) in waiting:
                continue  # a delete still to come in this run
            self._out_of_step(a, op)

    def _note_unfinished_deletes(self, a: _Account, ops: Sequence[Operation], pusher: Pusher) -> None:
        for op in ops:
            if op.skip_reason and not pusher.waiting_reason(op):
                self._out_of_step(a, op)

    @staticmethod
    def _out_of_step(a: _Account, op: Operation) -> None:
        if op.canonical_id is not None and op.canonical_id > 0:
            a.out_of_step.add(op.canonical_id)
        elif op.remote_id is not None:
            a.out_of_step_remote.add(op.remote_id)

    # -- invalid canonical rows --------------------------------------------------------------------

    def _report_invalid(self, contacts: Sequence[tuple[int, str, str]], groups: Sequence[tuple[int, str, str]],
                        *, loaded: Collection[int] | None) -> None:
        """Canonical rows syncd cannot sync: reported once each in the change log (provider ``*``).

        A report whose row is valid again is closed by an ``applied`` row.
        Contacts are judged as windows load them (``loaded``: the ids read);
        groups once per run (``loaded`` None).
        """
        invalid = {("contact", cid): f"{f}: {reason}" for cid, f, reason in contacts}
        invalid |= {("group", gid): f"{f}: {reason}" for gid, f, reason in groups}
        fresh = [(key, error) for key, error in invalid.items() if self.open_invalid.get(key) != error]
        self._reported_invalid.extend(row for row in [*contacts, *groups] if row not in self._reported_invalid)
        if loaded is None:
            fixed = [key for key in self.open_invalid if key[0] == "group" and key not in invalid]
        else:
            fixed = [key for key in self.open_invalid if key[0] == "contact" and key[1] in loaded
                     and key not in invalid]
        self._log_invalid(fresh, fixed)

    def _close_removed_invalid(self) -> None:
        """Reports of contact rows deleted since: closed (the rows are gone, nothing is left to fix)."""
        reported = {cid for entity, cid in self.open_invalid if entity == "contact"}
        if reported:
            present = self.store.contact_phones(reported).keys()
            self._log_invalid([], [("contact", cid) for cid in sorted(reported - present)])

    def _log_invalid(self, fresh: Sequence[tuple[tuple[str, int], str]], fixed: Sequence[tuple[str, int]]) -> None:
        for (entity, cid), error in fresh:
            log.warning("canonical.invalid", entity=entity, canonical_id=cid, error=error)
            self.open_invalid[(entity, cid)] = error
        for key in fixed:
            self.open_invalid.pop(key, None)
        entries = [log_entry(_invalid_op(key, "canonical record cannot be synced"), "*", "rejected", error=error)
                   for key, error in fresh]
        entries += [log_entry(_invalid_op(key, "canonical record fixed or removed; synced again"), "*", "applied")
                    for key in fixed]
        if entries:
            with self.store.session() as s, s.begin():
                self.store.log(s, self.run_id, entries)


class _Deferred:
    """Deletes held back until every window is planned (the guard counts them over the whole run)."""

    def __init__(self) -> None:
        self.ops: list[Operation] = []
        self.window = Window({}, {}, [], {})
        self.records: list[tuple[int | None, str | None]] = []

    def take(self, ops: Sequence[Operation], window: Window) -> list[Operation]:
        """The operations to apply now; deletes are kept, with what applying them later needs."""
        now = []
        for op in ops:
            if op.action is not Action.DELETE or op.held or op.skip_reason:
                now.append(op)
                continue
            self.ops.append(op)
            self.records.append((op.canonical_id, op.remote_id))
            if op.canonical_id is not None:
                if op.canonical_id in window.contacts:
                    self.window.contacts[op.canonical_id] = window.contacts[op.canonical_id]
                if op.canonical_id in window.links:
                    self.window.links[op.canonical_id] = window.links[op.canonical_id]
            if op.remote_id is not None and op.remote_id in window.mirror:
                self.window.mirror[op.remote_id] = window.mirror[op.remote_id]
        return now


async def _all(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the providers' work concurrently and wait for all of it, then raise the first error.

    A plain gather raises at the first unexpected error and leaves the other
    providers' requests running on clients the run is about to close (sockets
    leaked on every crashed run of a long-lived daemon).
    """
    for result in await asyncio.gather(*coros, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


def _left_selection(ops: list[Operation], outside: Collection[int], provider: str) -> list[Operation]:
    """Deletes at the provider of canonical records it does not take (any more) say so."""
    if not outside:
        return ops
    return [replace(op, reason=f"left the selection of {provider}")
            if op.direction is Direction.OUTBOUND and op.action is Action.DELETE and op.canonical_id in outside
            else op for op in ops]


def _add_records(seeds: Seeds, ops: Iterable[Operation]) -> None:
    """The records of ``ops`` (canonical and remote ids) added to ``seeds``."""
    seeds.add(contacts=[op.canonical_id for op in ops if op.canonical_id is not None and op.canonical_id > 0],
              remote=[op.remote_id for op in ops if op.remote_id is not None])


def _run_status(reports: list[ProviderReport]) -> str:
    failed = [r for r in reports if r.status == "failed" or r.counts.get("failed")]
    if not failed:
        return "ok"
    return "failed" if len(failed) == len(reports) else "partial"


def _without_invalid(invalid: Sequence[tuple[int, str, str]], links: Mapping[int, BaseRecord],
                     remote: Mapping[str, Any]) -> tuple[dict[int, BaseRecord], dict[str, Any]]:
    """Hide linked records whose canonical row is invalid (a phone typed wrong by SQL).

    Such a row is missing from the book; reconciled as is, its absence would
    read as a local deletion and delete the record at every provider. It is
    reported and left alone on both sides until the row is fixed.
    """
    held = {links[cid].remote_id for cid, _, _ in invalid if cid in links}
    if not held:
        return dict(links), dict(remote)
    return ({cid: link for cid, link in links.items() if link.remote_id not in held},
            {rid: r for rid, r in remote.items() if rid not in held})


def _without_groups(contacts: Mapping[int, Contact], hidden: set[int]) -> dict[int, Contact]:
    if not hidden:
        return dict(contacts)
    return {cid: replace(c, groups=c.groups - hidden) if c.groups & hidden else c for cid, c in contacts.items()}


def _invalid_op(key: tuple[str, int], reason: str) -> Operation:
    return Operation(Action.UPDATE, Entity(key[0]), Direction.OUTBOUND, reason, canonical_id=key[1])
