"""Leases (design §7): claimed atomically, renewed, expiring by themselves, fenced by a generation.

Each test runs on SQLite and, when ``SYNCD_TEST_POSTGRES_URL`` is set, on PostgreSQL.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from syncd.errors import LeaseLost
from syncd.db.leases import Busy, Lease, LeaseManager, lease_ttl, pid_alive


class Clock:
    """A settable UTC clock shared by several managers ("replicas")."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def replica(engine: Engine, clock: Clock, host: str, **kw) -> LeaseManager:
    return LeaseManager(engine, ttl=10, clock=clock, host=host, **kw)


def test_ttl_is_twice_the_interval_within_bounds():
    assert lease_ttl(1) == 5
    assert lease_ttl(10) == 20
    assert lease_ttl(300) == 60


def test_a_free_lease_is_claimed_and_another_replica_finds_it_busy(migrated_engine, clock):
    a, b = replica(migrated_engine, clock, "host-a"), replica(migrated_engine, clock, "host-b")
    lease = a.claim("sendhub")
    assert isinstance(lease, Lease) and lease.generation == 1
    busy = b.claim("sendhub")
    assert isinstance(busy, Busy) and busy.owner == a.owner
    assert "being synced by" in busy.describe()
    row = a.holder("sendhub")
    assert (row.owner, row.host, row.generation) == (a.owner, "host-a", 1)


def test_an_expired_lease_is_taken_over_with_a_new_generation(migrated_engine, clock):
    a, b = replica(migrated_engine, clock, "host-a"), replica(migrated_engine, clock, "host-b")
    first = a.claim("smsend")
    clock.advance(9.9)
    assert isinstance(b.claim("smsend"), Busy)
    clock.advance(0.2)
    second = b.claim("smsend")
    assert isinstance(second, Lease) and second.generation == first.generation + 1


def test_a_lease_whose_owner_process_is_gone_is_taken_at_once(migrated_engine, clock):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = LeaseManager(migrated_engine, ttl=60, clock=clock, pid=gone.pid)
    dead.claim("sendhub")
    here = LeaseManager(migrated_engine, ttl=60, clock=clock)
    lease = here.claim("sendhub")
    assert isinstance(lease, Lease), "same host, owner pid no longer alive: no wait for expiry"


def test_a_lease_of_an_earlier_process_with_our_pid_is_taken_at_once(migrated_engine, clock):
    earlier = LeaseManager(migrated_engine, ttl=60, clock=clock)
    earlier.claim("sendhub")
    # A token this process never issued, with our host and pid: a previous incarnation (pid 1 in a container).
    with migrated_engine.begin() as conn:
        conn.exec_driver_sql("UPDATE sync_leases SET owner = owner || '-previous-boot'")
    assert isinstance(LeaseManager(migrated_engine, ttl=60, clock=clock).claim("sendhub"), Lease)


def test_a_live_process_on_this_host_keeps_its_lease(migrated_engine, clock):
    one = LeaseManager(migrated_engine, ttl=60, clock=clock)
    two = LeaseManager(migrated_engine, ttl=60, clock=clock)
    one.claim("sendhub")
    assert isinstance(two.claim("sendhub"), Busy), "same pid, live token: another manager of this process"


def test_renewal_extends_and_release_frees(migrated_engine, clock):
    a, b = replica(migrated_engine, clock, "host-a"), replica(migrated_engine, clock, "host-b")
    lease = a.claim("sendhub")
    clock.advance(8)
    renewed = a.renew(lease)
    assert renewed.expires_at == clock.now + timedelta(seconds=10)
    clock.advance(8)
    assert isinstance(b.claim("sendhub"), Busy), "renewed: still held 16 s after the claim"
    assert a.release(renewed)
    assert isinstance(b.claim("sendhub"), Lease)
    assert not a.release(renewed), "no longer ours"


def test_a_replica_whose_lease_was_taken_cannot_renew_or_pass_the_fence(migrated_engine, clock):
    a, b = replica(migrated_engine, clock, "host-a"), replica(migrated_engine, clock, "host-b")
    lease = a.claim("sendhub")
    clock.advance(11)
    b.claim("sendhub")
    with pytest.raises(LeaseLost, match="now held by"):
        a.renew(lease)
    with pytest.raises(LeaseLost, match="generation 2, ours was 1"):
        a.check(lease)


def test_an_expired_lease_fails_the_fence_even_if_nobody_took_it(migrated_engine, clock):
    a = replica(migrated_engine, clock, "host-a")
    with a.hold(["sendhub"]) as held:
        fence = held.fence_for("sendhub")
        fence()
        clock.advance(10.5)  # renewal stalled (thread starved, database away): the lease expired under us
        with pytest.raises(LeaseLost, match="expired"):
            fence()
        with pytest.raises(LeaseLost):
            fence()  # stays lost: no later settlement slips through
        assert "sendhub" in held.lost


def test_the_fence_renews_a_lease_about_to_expire(migrated_engine, clock):
    a, b = replica(migrated_engine, clock, "host-a"), replica(migrated_engine, clock, "host-b")
    with a.hold(["sendhub"]) as held:
        clock.advance(9)  # 1 s left, under the 2 s margin
        held.fence_for("sendhub")()
        clock.advance(9)
        assert isinstance(b.claim("sendhub"), Busy)


def test_hold_claims_what_it_can_and_releases_at_the_end(migrated_engine, clock):
    a, b = replica(migrated_engine, clock, "host-a"), replica(migrated_engine, clock, "host-b")
    b.claim("smsend")
    with a.hold(["smsend", "sendhub"]) as held:
        assert held.claimed == ["sendhub"]
        assert [busy.provider for busy in held.busy] == ["smsend"]
    assert a.holder("sendhub").owner is None


def test_background_renewal_keeps_the_lease_past_its_ttl(migrated_engine):
    a = LeaseManager(migrated_engine, ttl=0.6)
    with a.hold(["sendhub"]) as held:
        threading.Event().wait(1.5)
        held.fence_for("sendhub")()
        assert a.holder("sendhub").generation == 1


def test_concurrent_claims_have_exactly_one_winner(migrated_engine, clock):
    managers = [replica(migrated_engine, clock, f"host-{i}") for i in range(6)]
    barrier = threading.Barrier(len(managers))
    outcomes: list[object] = []

    def claim(manager: LeaseManager) -> None:
        barrier.wait()
        outcomes.append(manager.claim("sendhub"))

    threads = [threading.Thread(target=claim, args=(m,)) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if isinstance(o, Lease)]
    assert len(winners) == 1 and len(outcomes) == len(managers)


def test_pid_alive_sees_this_process_and_not_a_reaped_one():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert pid_alive(1) and pid_alive(threading.get_native_id())
    assert not pid_alive(gone.pid)
