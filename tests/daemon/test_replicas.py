"""Several replicas on one database (design §7): one syncs an account at a time, and a dead one is replaced.

Run on one SQLite file and, with ``SYNCD_TEST_POSTGRES_URL``, on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from click.testing import CliRunner

from syncd.cli import cli
from syncd.config import Config, DatabaseSettings, SyncSettings
from syncd.db.engine import make_engine
from syncd.db.leases import LeaseManager, lease_ttl
from syncd.sync.run import run_once
from tests.daemon.conftest import (
    phone,
    provider_toml,
    seed_contacts,
    sendhub_numbers,
    sql,
    wait_until,
    write_config,
)
from tests.e2e.conftest import FAST_RETRY, provider_settings

INTERVAL = 1.0


def provider_spans(db_url: str) -> list[tuple[str, str, datetime, datetime]]:
    """(provider, owner, start, end) of every run's work on an account.

    A run's accounts are those in its summary or its change-log rows; a run
    killed before finishing ends at its last change-log row.
    """
    runs = {rid: (owner, started, finished, summary) for rid, owner, started, finished, summary
            in sql(db_url, "SELECT id, owner, started_at, finished_at, summary FROM sync_runs")}
    last_rows = {(rid, provider): at for rid, provider, at
                 in sql(db_url, "SELECT run_id, provider, max(at) FROM change_log GROUP BY run_id, provider")}
    spans = []
    for rid, (owner, started, finished, summary) in runs.items():
        providers = set(_json(summary).get("providers", {})) | {p for r, p in last_rows if r == rid}
        for provider in providers:
            end = finished or last_rows.get((rid, provider)) or started
            spans.append((provider, owner, _ts(started), _ts(end)))
    return spans


def _json(value: Any) -> dict:
    import json

    return json.loads(value) if isinstance(value, str) else (value or {})


def _ts(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def assert_never_overlapping(spans: list[tuple[str, str, datetime, datetime]]) -> None:
    for provider, owner, start, end in spans:
        for other_provider, other_owner, other_start, other_end in spans:
            if provider == other_provider and owner != other_owner:
                assert end < other_start or other_end < start, (
                    f"{owner} and {other_owner} both synced {provider} at once")


def test_two_replicas_never_sync_one_account_at_once_and_one_replaces_a_killed_holder(
        tmp_path, db_url, smsend, sendhub, start_daemon):
    total = 100
    seed_contacts(db_url, total)
    sendhub.faults.latency = 0.05  # at most ~40 creates/s with 2 at a time: the kill lands mid-push
    config = write_config(tmp_path / "config.toml", db_url, [
        provider_toml(smsend, batch_size=50), provider_toml(sendhub, batch_size=10, max_concurrency=2)],
        interval=INTERVAL)
    a, b = start_daemon(config, name="a"), start_daemon(config, name="b")
    wait_until(lambda: len(sendhub_numbers(sendhub)) >= 20, 30, "the SendHub push to be under way")

    holder_pid = sql(db_url, "SELECT pid FROM sync_leases WHERE provider = 'sendhub'")[0][0]
    holder, survivor = (a, b) if holder_pid == a.pid else (b, a)
    assert holder_pid == holder.pid
    holder.signal(signal.SIGKILL)
    holder.wait(5)
    killed = time.monotonic()
    wait_until(lambda: sql(db_url, "SELECT pid FROM sync_leases WHERE provider = 'sendhub'")[0][0] == survivor.pid,
               INTERVAL + lease_ttl(INTERVAL) + 3, "the survivor to take the SendHub lease over")
    assert time.monotonic() - killed <= INTERVAL + lease_ttl(INTERVAL) + 3

    wait_until(lambda: len(sendhub_numbers(sendhub)) == total, 60, "the survivor to finish the push")
    survivor.wait_for("run.finished", timeout=30,
                      where=lambda e: e["providers"].get("sendhub", {}).get("status") == "ok")
    survivor.signal(signal.SIGTERM)
    assert survivor.wait(10) == 0

    assert a.events("lease.busy") or b.events("lease.busy"), "the replicas did contend for the accounts"
    assert_never_overlapping(provider_spans(db_url))
    numbers = sendhub_numbers(sendhub)
    assert set(numbers) == {phone(i) for i in range(total)} and max(numbers.values()) == 1
    creates = Counter(status for method, path, status in sendhub.request_log
                      if method == "POST" and path.rstrip("/").endswith("/contacts"))
    assert creates == Counter({201: total}), "each contact created once: never by both replicas, never re-sent"
    smsend_numbers = Counter(c["phoneNumber"] for c in smsend.state.snapshot()["contacts"])
    assert len(smsend_numbers) == total and max(smsend_numbers.values()) == 1


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def test_a_run_whose_lease_expired_and_was_taken_settles_nothing_more(db_url, sendhub):
    seed_contacts(db_url, 40)
    engine = make_engine(db_url)
    config = Config(database=DatabaseSettings(db_url), sync=SyncSettings(default_region="US"),
                    providers=(provider_settings(sendhub, "sendhub", batch_size=10, max_concurrency=2),))
    options = {"sendhub": {"retry": FAST_RETRY}}
    clock = Clock()
    stale, other = (LeaseManager(engine, ttl=10, clock=clock, host=h) for h in ("replica-a", "replica-b"))
    with stale.hold(["sendhub"]) as held:
        def fence_for(provider: str):
            fence = held.fence_for(provider)

            def check() -> None:
                if len(sendhub_numbers(sendhub)) >= 20 and not other.holder(provider).owner == other.owner:
                    clock.now += timedelta(seconds=11)  # the lease expired under the run...
                    other.claim(provider)  # ...and another replica took it
                fence()
            return check

        report = asyncio.run(run_once(config, engine, only=["sendhub"], trigger="schedule",
                                      fence_for=fence_for, client_options=options))
    [sendhub_report] = report.providers
    assert sendhub_report.status == "failed" and "lease lost" in sendhub_report.error
    statuses = dict(sql(db_url, "SELECT status, count(*) FROM change_log WHERE provider = 'sendhub' "
                                "AND direction = 'outbound' GROUP BY status"))
    assert statuses == {"applied": 10, "pending": 10}, "the second batch was not settled, no third one sent"
    assert len(sendhub_numbers(sendhub)) == 20

    report = asyncio.run(run_once(config, engine, only=["sendhub"], client_options=options))
    assert report.status == "ok"
    numbers = sendhub_numbers(sendhub)
    assert len(numbers) == 40 and max(numbers.values()) == 1
    engine.dispose()


def test_syncd_sync_skips_an_account_a_replica_is_syncing(tmp_path, sqlite_url, smsend, sendhub):
    seed_contacts(sqlite_url, 3)
    config = write_config(tmp_path / "config.toml", sqlite_url, [provider_toml(smsend), provider_toml(sendhub)])
    engine = make_engine(sqlite_url)
    daemon = LeaseManager(engine, ttl=60)
    lease = daemon.claim("sendhub")
    result = CliRunner().invoke(cli, ["--config", str(config), "sync"])
    assert result.exit_code == 1
    assert f"sendhub is being synced by {daemon.owner}" in result.stderr
    assert len(sendhub_numbers(sendhub)) == 0 and len(smsend.state.snapshot()["contacts"]) == 3

    daemon.release(lease)
    result = CliRunner().invoke(cli, ["--config", str(config), "sync"])
    assert result.exit_code == 0, result.output
    assert len(sendhub_numbers(sendhub)) == 3
    engine.dispose()
