"""Leases on provider accounts: one replica syncs an account at a time (design §7).

Each account has one row in ``sync_leases`` (provider, owner, host, pid,
acquired_at, expires_at, generation). The rules:

* **Claim** is one short transaction that locks the row (``BEGIN IMMEDIATE``
  on SQLite, ``SELECT … FOR UPDATE`` on PostgreSQL), decides, and writes with
  a compare-and-set on the generation. A lease can be claimed when it is free
  (no owner), expired, already ours, or held by a process known to be gone:
  same host and its pid no longer alive, or same host and pid as this process
  but an owner token this process never issued (a previous incarnation with a
  recycled pid, typically pid 1 in a container). Everything else is **busy**.
* Every claim increments the **fencing generation**. Renewal, settlement
  checks and release all compare it, so a replica whose lease was taken over
  can no longer renew, settle or release.
* **Renewal** runs in a background thread every third of the TTL while a run
  goes on; a lease not renewed expires by itself, and another replica takes the
  account over at its next tick: within one interval plus the TTL of the death
  of the holder (at once when the holder was on the same host).
* The **fence** (:meth:`Hold.fence_for`) is checked right before each
  settlement transaction. It raises :class:`~syncd.errors.LeaseLost` when the
  row no longer names this owner and generation, or when the lease has
  expired, even if nobody took it yet. When less than :attr:`LeaseManager.margin`
  is left it renews first, so a passing fence guarantees at least that margin
  during which no other replica can take the account: the settlement that
  follows (milliseconds) fits in it.

Expiry compares timestamps written by the replicas' own clocks: replicas must
keep their clocks in step (NTP) to well within the margin. No session-level
advisory locks are used (they strand behind connection poolers).
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from syncd.db.clock import utcnow
from syncd.db.models import SyncLeaseRow, table_of
from syncd.errors import LeaseLost, SyncdError

__all__ = ["Busy", "Hold", "Lease", "LeaseManager", "LeaseRow", "lease_ttl", "pid_alive"]

log = structlog.get_logger("syncd.db.leases")

_LEASES = table_of(SyncLeaseRow)

#: Owner tokens issued by managers in this process: a lease naming this
#: process's host and pid with a token not in here belongs to a dead earlier
#: process that happened to get the same pid.
_LIVE_OWNERS: set[str] = set()


def lease_ttl(interval_seconds: float) -> float:
    """The lease TTL syncd uses for a schedule interval: twice the interval, from 5 s to 60 s.

    Renewal every third of it tolerates two missed renewals; the 60 s ceiling
    bounds how long a dead replica on another host blocks an account, the 5 s
    floor keeps a slow database transaction from losing the lease.
    """
    return min(60.0, max(5.0, 2.0 * interval_seconds))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    if pid <= 0:
        return True  # not a real pid: never guess it is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in (b"Z", b"X")


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease this process holds: the generation it claimed, and until when."""

    provider: str
    generation: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """An account's ``sync_leases`` row as read: who holds the lease (``owner`` None: nobody), until when."""

    provider: str
    owner: str | None
    host: str | None
    pid: int | None
    expires_at: datetime
    generation: int


@dataclass(frozen=True, slots=True)
class Busy:
    """A lease another live owner holds."""

    provider: str
    owner: str | None
    expires_at: datetime

    def describe(self) -> str:
        until = self.expires_at.astimezone(UTC).strftime("%H:%M:%S UTC")
        return f"{self.provider} is being synced by {self.owner} (lease until {until})"


class LeaseManager:
    """Claims, renews, checks and releases leases in ``engine`` as one owner."""

    def __init__(self, engine: Engine, *, ttl: float, clock: Callable[[], datetime] = utcnow,
                 host: str | None = None, pid: int | None = None,
                 alive: Callable[[int], bool] = pid_alive) -> None:
        self.engine = engine
        self.ttl = float(ttl)
        self.margin = self.ttl / 5
        self.clock = clock
        self.host = host or socket.gethostname()
        self.pid = os.getpid() if pid is None else pid
        self.owner = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self._alive = alive
        _LIVE_OWNERS.add(self.owner)

    # -- one lease --------------------------------------------------------------

    def claim(self, provider: str) -> Lease | Busy:
        """Take ``provider``'s lease if it is claimable (see the module docstring), else say who holds it."""
        now = self.clock()
        with self._transaction() as conn:
            row = _ensured_row(conn, provider, now)
            why = self._claimable(row, now)
            if why is None:
                return Busy(provider, row.owner, row.expires_at)
            lease = Lease(provider, row.generation + 1, now + timedelta(seconds=self.ttl))
            conn.execute(update(_LEASES).where(_LEASES.c.provider == provider,
                                               _LEASES.c.generation == row.generation)
                         .values(owner=self.owner, host=self.host, pid=self.pid, acquired_at=now,
                                 expires_at=lease.expires_at, generation=lease.generation))
        if row.owner is not None and row.owner != self.owner:
            log.info("lease.taken_over", provider=provider, previous_owner=row.owner, reason=why,
                     generation=lease.generation)
        log.debug("lease.claimed", provider=provider, owner=self.owner, generation=lease.generation)
        return lease

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` by the TTL from now; LeaseLost when it was taken or has expired."""
        now = self.clock()
        with self._transaction() as conn:
            self._verify(lease, _read_row(conn, lease.provider, lock=True), now)
            expires_at = now + timedelta(seconds=self.ttl)
            conn.execute(update(_LEASES).where(_LEASES.c.provider == lease.provider,
                                               _LEASES.c.generation == lease.generation)
                         .values(expires_at=expires_at))
        return Lease(lease.provider, lease.generation, expires_at)

    def check(self, lease: Lease) -> Lease:
        """The fence: LeaseLost unless ``lease`` is still ours with at least :attr:`margin` to run."""
        now = self.clock()
        with self.engine.connect() as conn:
            row = self._verify(lease, _read_row(conn, lease.provider), now)
        if (row.expires_at - now).total_seconds() < self.margin:
            return self.renew(lease)
        return Lease(lease.provider, lease.generation, row.expires_at)

    def release(self, lease: Lease) -> bool:
        """Give ``lease`` up (free at once for anyone); False when it was no longer ours."""
        with self._transaction() as conn:
            result = conn.execute(update(_LEASES).where(_LEASES.c.provider == lease.provider,
                                                        _LEASES.c.owner == self.owner,
                                                        _LEASES.c.generation == lease.generation)
                                  .values(owner=None, host=None, pid=None, expires_at=self.clock()))
        return bool(result.rowcount)

    def holder(self, provider: str) -> LeaseRow | None:
        """The lease row of ``provider`` as it is now (None if never claimed); for status and tests."""
        with self.engine.connect() as conn:
            return _read_row(conn, provider)

    # -- several leases for one run ----------------------------------------------

    @contextmanager
    def hold(self, providers: Iterable[str]) -> Iterator[Hold]:
        """Claim every claimable lease of ``providers``, renew them in the background, release at the end."""
        held = Hold(self)
        try:
            for provider in providers:
                held.add(self.claim(provider))
            held.start_renewal()
            yield held
        finally:
            held.close()

    # -- rules ----------------------------------------------------------------------

    def _claimable(self, row: LeaseRow, now: datetime) -> str | None:
        """Why the lease in ``row`` may be taken now, or None when it may not."""
        if row.owner is None:
            return "free"
        if row.owner == self.owner:
            return "ours"
        if row.expires_at <= now:
            return "expired"
        if row.host == self.host and row.pid is not None:
            if row.pid == self.pid:
                return None if row.owner in _LIVE_OWNERS else "owner was an earlier process with this pid"
            if not self._alive(row.pid):
                return "owner process is gone"
        return None

    def _verify(self, lease: Lease, row: LeaseRow | None, now: datetime) -> LeaseRow:
        """``row``, when it shows ``lease`` still ours and unexpired; else LeaseLost saying why not."""
        if row is None or row.owner != self.owner or row.generation != lease.generation:
            holder = "nobody" if row is None or row.owner is None else row.owner
            raise LeaseLost(f"{lease.provider}: lease lost (now held by {holder}, "
                            f"generation {row.generation if row is not None else '?'}, ours was {lease.generation})")
        if row.expires_at <= now:
            raise LeaseLost(f"{lease.provider}: lease expired at {row.expires_at.isoformat()} before it was renewed")
        return row

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        # IMMEDIATE: SQLite takes the write lock before the read, so read-decide-write is atomic.
        with self.engine.connect().execution_options(sqlite_begin="IMMEDIATE") as conn, conn.begin():
            yield conn


class Hold:
    """The leases one run holds: claimed ones, busy ones, and their fences."""

    def __init__(self, manager: LeaseManager) -> None:
        self.manager = manager
        self.busy: list[Busy] = []
        self._leases: dict[str, Lease] = {}
        self._lost: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def claimed(self) -> list[str]:
        """Providers this run holds (in claim order)."""
        return list(self._leases)

    @property
    def lost(self) -> dict[str, str]:
        """Providers whose lease was lost during the run, with the reason."""
        with self._lock:
            return dict(self._lost)

    def add(self, outcome: Lease | Busy) -> None:
        if isinstance(outcome, Busy):
            self.busy.append(outcome)
        else:
            self._leases[outcome.provider] = outcome

    def fence_for(self, provider: str) -> Callable[[], None]:
        """A callable raising LeaseLost once ``provider``'s lease is no longer this run's."""
        return lambda: self._fence(provider)

    def _fence(self, provider: str) -> None:
        with self._lock:
            if provider in self._lost:
                raise LeaseLost(self._lost[provider])
            lease = self._leases[provider]
        try:
            fresh = self.manager.check(lease)
        except LeaseLost as exc:
            self._mark_lost(provider, str(exc))
            raise
        self._update(fresh)

    def _update(self, lease: Lease) -> None:
        with self._lock:
            if lease.provider not in self._lost:
                self._leases[lease.provider] = lease

    def _mark_lost(self, provider: str, reason: str) -> None:
        with self._lock:
            first = provider not in self._lost
            self._lost[provider] = reason
        if first:
            log.error("lease.lost", provider=provider, error=reason)

    # -- renewal ----------------------------------------------------------------------

    def start_renewal(self) -> None:
        if self._leases and self._thread is None:
            self._thread = threading.Thread(target=self._renew_loop, name="syncd-lease-renewal", daemon=True)
            self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.manager.ttl / 3):
            self.renew_all()

    def renew_all(self) -> None:
        """Renew every lease still held; a lost one is marked and no longer renewed."""
        with self._lock:
            current = [lease for p, lease in self._leases.items() if p not in self._lost]
        for lease in current:
            try:
                self._update(self.manager.renew(lease))
            except LeaseLost as exc:
                self._mark_lost(lease.provider, str(exc))
            except SQLAlchemyError as exc:  # the database is away: the fence stops us if this lasts
                log.warning("lease.renew_failed", provider=lease.provider, error=str(exc).splitlines()[0])

    def close(self) -> None:
        """Stop renewing and release every lease still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            current = [lease for p, lease in self._leases.items() if p not in self._lost]
        for lease in current:
            try:
                self.manager.release(lease)
            except SQLAlchemyError as exc:  # it expires by itself
                log.warning("lease.release_failed", provider=lease.provider, error=str(exc).splitlines()[0])


# -- statements ----------------------------------------------------------------------------


def _ensured_row(conn: Connection, provider: str, now: datetime) -> LeaseRow:
    """``provider``'s lease row, locked; created free first if it does not exist (concurrent callers: one wins)."""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}.get(conn.dialect.name)
    if dialect is None:
        raise SyncdError(f"leases support SQLite and PostgreSQL, not {conn.dialect.name}")
    conn.execute(dialect.insert(_LEASES).values(provider=provider, generation=0, expires_at=now)
                 .on_conflict_do_nothing(index_elements=["provider"]))
    row = _read_row(conn, provider, lock=True)
    assert row is not None, "written just above, in this transaction"
    return row


def _read_row(conn: Connection, provider: str, *, lock: bool = False) -> LeaseRow | None:
    """``provider``'s lease row (None when it has none), locked until the transaction ends when ``lock``."""
    query = select(_LEASES.c.provider, _LEASES.c.owner, _LEASES.c.host, _LEASES.c.pid, _LEASES.c.expires_at,
                   _LEASES.c.generation).where(_LEASES.c.provider == provider)
    # FOR UPDATE is dropped by SQLAlchemy on SQLite, where BEGIN IMMEDIATE already serialises writers.
    row = conn.execute(query.with_for_update() if lock else query).first()
    return None if row is None else LeaseRow(*row)
