"""One sync run: pull every provider, reconcile, apply inbound, push outbound, record.

``run_once`` is the single code path of ``syncd sync``, ``syncd plan`` (a dry
run: the same pull and plan, nothing written anywhere) and the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from sqlalchemy import Engine

from syncd.config import Config, ProviderSettings
from syncd.db.repo import Book, LogEntry, Store, utcnow
from syncd.dberrors import database_outage
from syncd.errors import LeaseLost, ProviderError, Unsupported
from syncd.model import Contact, RemoteContact, RemoteGroup, fingerprint
from syncd.providers import build_provider
from syncd.providers.base import Provider
from syncd.sync import project
from syncd.sync.executor import Pusher
from syncd.sync.inbound import InboundApplier
from syncd.sync.plan import Action, Direction, Entity, Operation, guard
from syncd.sync.reconcile import BaseRecord, Policy, reconcile

__all__ = ["ProviderReport", "RunReport", "run_once"]

log = structlog.get_logger("syncd.run")


@dataclass
class ProviderReport:
    """What one run did with one provider account."""

    name: str
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    complete: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    plan: list[Operation] = field(default_factory=list)
    requests: int = 0  # HTTP requests sent to the account (retries included), for metrics
    retries: int = 0

    def summary(self) -> dict[str, Any]:
        return {"status": self.status, "error": self.error, **self.counts}


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
        return sum(1 for p in self.providers for op in p.plan if op.is_change)


@dataclass
class _Account:
    settings: ProviderSettings
    client: Provider
    report: ProviderReport
    policy: Policy
    groups: dict[str, RemoteGroup] = field(default_factory=dict)
    contacts: dict[str, RemoteContact] = field(default_factory=dict)
    links: dict[str, dict[int, BaseRecord]] = field(default_factory=dict)
    ledger: dict[tuple[str, int | None, str | None], Any] = field(default_factory=dict)  # see Store.retry_ledger
    rejected_groups: dict[int, str | None] = field(default_factory=dict)  # group id -> fingerprint refused


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_once(config: Config, engine: Engine, *, only: Sequence[str] = (), trigger: str = "manual",
                   dry_run: bool = False, allow_mass_delete: bool = False,
                   client_options: dict[str, dict[str, Any]] | None = None,
                   stopping: Callable[[], bool] = lambda: False,
                   fence_for: Callable[[str], Callable[[], None]] | None = None,
                   progress: Callable[[str], None] | None = None) -> RunReport:
    """Run one full sync (or, with ``dry_run``, plan it) and report per provider."""
    store = Store(engine, dry_run=dry_run)
    chosen = [p for p in config.providers if p.enabled and (not only or p.name in only)]
    run_id = store.start_run(trigger, owner_id())
    structlog.contextvars.bind_contextvars(run_id=run_id)
    accounts = [_account(config, p, (client_options or {}).get(p.name, {})) for p in chosen]
    try:
        store.settle_interrupted(a.settings.name for a in accounts)
        await _all(_pull(store, run_id, a, progress) for a in accounts)
        book = store.load_book(config.sync.default_region)
        _report_invalid(store, run_id, book)
        ready = [a for a in accounts if a.report.complete]
        for a in ready:
            a.links = {e: store.load_links(a.settings.name, e) for e in ("group", "contact")}
            a.ledger = store.retry_ledger(a.settings.name)
            a.rejected_groups = {k[1]: row.fingerprint for k, row in a.ledger.items()
                                 if k[0] == "group" and k[1] is not None and row.status == "rejected"}
        touched: dict[int, dict[str, str]] = {}
        fences = {a.settings.name: fence_for(a.settings.name) if fence_for else (lambda: None) for a in ready}
        for entity in (Entity.GROUP, Entity.CONTACT):
            for a in ready:
                if _still_leased(a, fences[a.settings.name]):
                    _inbound(store, run_id, book, a, entity, touched, config, allow_mass_delete)
        writable = [a for a in ready if a.settings.mode != "pull" and a.report.status != "failed"]
        await _all(_outbound(store, run_id, book, a, config, allow_mass_delete, stopping, fences[a.settings.name])
                   for a in writable)
    except BaseException as exc:
        _abandon_run(store, run_id, exc)
        raise
    finally:
        await asyncio.gather(*(a.client.aclose() for a in accounts), return_exceptions=True)
        for a in accounts:
            stats = getattr(a.client, "stats", None)
            a.report.requests, a.report.retries = getattr(stats, "requests", 0), getattr(stats, "retries", 0)
        structlog.contextvars.unbind_contextvars("run_id")
    reports = [a.report for a in accounts]
    status = _run_status(reports)
    store.finish_run(run_id, status, {"providers": {r.name: r.summary() for r in reports}})
    return RunReport(run_id, status, reports, book.invalid + book.invalid_groups)


def _abandon_run(store: Store, run_id: int, exc: BaseException) -> None:
    """Close the run's row as failed when the run dies, so it never stays `running`."""
    try:
        why = ("stopped before the run finished" if isinstance(exc, asyncio.CancelledError)
               else f"the run died ({type(exc).__name__}; the log has the details)")
        store.finish_run(run_id, "failed", {}, error=f"{why}; the next run resumes its work")
    except Exception as failed:  # the caller reports the run's error (mostly this same outage): no second traceback
        log.warning("run.finish_failed", run_id=run_id, error=(str(failed).splitlines() or [repr(failed)])[0])


async def _all(coros: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run the providers' work concurrently and wait for all of it, then raise the first error.

    A plain gather raises at the first unexpected error and leaves the other
    providers' requests running on clients the run is about to close (sockets
    leaked on every crashed run of a long-lived daemon).
    """
    for result in await asyncio.gather(*coros, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


def _account(config: Config, settings: ProviderSettings, options: dict[str, Any]) -> _Account:
    client = build_provider(settings, default_region=config.sync.default_region, **options)
    policy = Policy(settings.name, conflict=config.conflict_for(settings), mode=settings.mode)
    return _Account(settings, client, ProviderReport(settings.name), policy)


def _run_status(reports: list[ProviderReport]) -> str:
    failed = [r for r in reports if r.status == "failed" or r.counts.get("failed")]
    if not failed:
        return "ok"
    return "failed" if len(failed) == len(reports) else "partial"


# -- pull ------------------------------------------------------------------------


async def _pull(store: Store, run_id: int, a: _Account, progress: Callable[[str], None] | None = None) -> None:
    name = a.settings.name
    try:
        known = store.mirror_fingerprints(name, contacts=False)
        async for page in a.client.groups():
            store.write_mirror(name, groups=page, known=known)
            a.groups.update((g.remote_id, g) for g in page)
        if a.client.capabilities.list_contacts:
            known = store.mirror_fingerprints(name, contacts=True)
            async for page in a.client.contacts():
                store.write_mirror(name, contacts=page, known=known)
                a.contacts.update((c.remote_id, c) for c in page)
                if progress:
                    progress(f"{name}: pulled {len(a.contacts)} contacts")
        else:
            a.contacts = store.load_mirror_contacts(name)  # what syncd last wrote (outbound-only contacts)
    except (ProviderError, Unsupported) as exc:
        _pull_failed(store, run_id, a, str(exc))
        return
    except Exception as exc:  # a bug, or a database error that is no outage: this provider fails, the others go on
        if database_outage(exc) is not None:
            raise  # the database itself is gone: no provider can go on; the caller reports it once
        log.exception("pull.crashed", provider=name)
        # Only the type reaches the tables: an unexpected message may quote anything, secrets included.
        _pull_failed(store, run_id, a, f"internal error while pulling ({type(exc).__name__}); the log has the details")
        return
    store.prune_mirror(name, contacts=False, keep=a.groups)
    if a.client.capabilities.list_contacts:
        store.prune_mirror(name, contacts=True, keep=a.contacts)
    a.report.complete = True
    a.report.counts["pulled"] = len(a.groups) + (len(a.contacts) if a.client.capabilities.list_contacts else 0)
    store.record_pull(name, run_id, True, None)
    log.info("pull.done", provider=name, groups=len(a.groups), contacts=len(a.contacts))


def _pull_failed(store: Store, run_id: int, a: _Account, error: str) -> None:
    a.report.status, a.report.error = "failed", error
    log.error("pull.failed", provider=a.settings.name, error=error)
    try:
        store.record_pull(a.settings.name, run_id, False, error)
    except Exception:  # the database itself may be what failed
        log.exception("pull.record_failed", provider=a.settings.name)


# -- reconcile ---------------------------------------------------------------------


def _plan(book: Book, a: _Account, entity: Entity, config: Config, allow: bool) -> list[Operation]:
    c = a.client
    group_links, groups = _without_invalid(book.invalid_groups, a.links["group"], a.groups)
    if entity is Entity.GROUP:
        links, local, remote = group_links, project.local_groups(c, book.groups), project.remote_groups(c, groups)
    else:
        local = project.local_contacts(c, _without_groups(book.contacts, _unplaceable(book, a, group_links)))
        links, contacts = _without_invalid(book.invalid, a.links["contact"], a.contacts)
        remote = project.remote_contacts(c, contacts, group_links)
    ops = reconcile(entity, links, local, remote, a.policy)
    canonical = len(book.groups) if entity is Entity.GROUP else len(book.contacts)
    return guard(ops, entity=entity, linked=len(a.links[entity.value]), canonical=canonical,
                 max_fraction=config.sync.max_delete_fraction, allow=allow, provider=a.settings.name)


def _without_invalid(invalid: list[tuple[int, str, str]], links: dict[int, BaseRecord], remote: dict[str, Any]
                     ) -> tuple[dict[int, BaseRecord], dict[str, Any]]:
    """Hide linked records whose canonical row is invalid (a phone typed wrong by SQL).

    Such a row is missing from the book; reconciled as is, its absence would
    read as a local deletion and delete the record at every provider. It is
    reported and left alone on both sides until the row is fixed.
    """
    held = {links[cid].remote_id for cid, _, _ in invalid if cid in links}
    if not held:
        return links, remote
    return ({cid: link for cid, link in links.items() if link.remote_id not in held},
            {rid: r for rid, r in remote.items() if rid not in held})


def _unplaceable(book: Book, a: _Account, group_links: dict[int, BaseRecord]) -> set[int]:
    """Canonical groups the provider refused to create and that have not changed since.

    Memberships in them cannot reach the provider; left in the projection they
    would plan the same contact update every run.
    """
    return {gid for gid, fp in a.rejected_groups.items() if gid in book.groups and gid not in group_links
            and fp == fingerprint(project.group_fields(a.client, book.groups[gid].name, book.groups[gid].description))}


def _without_groups(contacts: dict[int, Contact], hidden: set[int]) -> dict[int, Contact]:
    if not hidden:
        return contacts
    return {cid: replace(c, groups=c.groups - hidden) if c.groups & hidden else c for cid, c in contacts.items()}


def _inbound(store: Store, run_id: int, book: Book, a: _Account, entity: Entity,
             touched: dict[int, dict[str, str]], config: Config, allow: bool) -> None:
    ops = [op for op in _plan(book, a, entity, config, allow)
           if op.direction is Direction.INBOUND or op.action is Action.UNLINK]
    a.report.plan.extend(op for op in ops if op.action is not Action.UNLINK)
    InboundApplier(store, run_id, book, a.links, a.client, touched, a.report.counts).apply(ops)


async def _outbound(store: Store, run_id: int, book: Book, a: _Account, config: Config, allow: bool,
                    stopping: Callable[[], bool], fence: Callable[[], None]) -> None:
    ops = [op for entity in (Entity.GROUP, Entity.CONTACT) for op in _plan(book, a, entity, config, allow)
           if op.direction is Direction.OUTBOUND and op.action is not Action.UNLINK]
    pusher = Pusher(a.client, store, run_id, a.links, a.contacts, a.report.counts, utcnow(),
                    batch_size=a.settings.batch_size, ledger=a.ledger,
                    fence=fence, stopping=stopping, mirror_groups=a.groups)
    waiting = {id(op): pusher.waiting_reason(op) for op in ops}
    a.report.plan.extend(replace(op, skip_reason=waiting[id(op)]) if waiting[id(op)] else op for op in ops)
    if store.dry_run:
        return
    ops = [op for op in ops if not waiting[id(op)]]
    try:
        await pusher.push(ops)
    except LeaseLost as exc:  # another replica owns the account now: settle nothing more
        a.report.status, a.report.error = "failed", str(exc)
        return
    if pusher.stopped_by is not None:
        a.report.status, a.report.error = "failed", str(pusher.stopped_by)


def _still_leased(a: _Account, fence: Callable[[], None]) -> bool:
    """Check the account's lease before writing inbound changes; a lost one fails the account."""
    if a.report.status == "failed":
        return False
    try:
        fence()
    except LeaseLost as exc:
        a.report.status, a.report.error = "failed", str(exc)
        log.error("run.lease_lost", provider=a.settings.name, error=str(exc))
        return False
    return True


def _report_invalid(store: Store, run_id: int, book: Book) -> None:
    """Canonical rows syncd cannot sync: reported once each in the change log (provider ``*``).

    A report whose row is valid again (or gone) is closed by an ``applied`` row.
    """
    open_reports = store.invalid_open()
    invalid = {(entity, cid): f"{f}: {reason}" for entity, rows in ((Entity.CONTACT, book.invalid),
                                                                    (Entity.GROUP, book.invalid_groups))
               for cid, f, reason in rows}
    fresh = [(key, error) for key, error in invalid.items() if open_reports.get((key[0].value, key[1])) != error]
    fixed = [(Entity(entity), cid) for entity, cid in open_reports if (Entity(entity), cid) not in invalid]
    for (entity, cid), error in fresh:
        log.warning("canonical.invalid", entity=entity.value, canonical_id=cid, error=error)
    entries = [LogEntry(_invalid_op(key, "canonical record cannot be synced"), "*", "rejected", error=error)
               for key, error in fresh]
    entries += [LogEntry(_invalid_op(key, "canonical record fixed or removed; synced again"), "*", "applied")
                for key in fixed]
    if entries:
        with store.session() as s, s.begin():
            store.log(s, run_id, entries)


def _invalid_op(key: tuple[Entity, int], reason: str) -> Operation:
    return Operation(Action.UPDATE, key[0], Direction.OUTBOUND, reason, canonical_id=key[1])
