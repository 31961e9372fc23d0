"""`serve` in a thread with an injected stop flag: readiness, retention, cancellation, last-success seeding."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, func, insert, select

from syncd.config import Config, DatabaseSettings, ScheduleSettings, SyncSettings
from syncd.daemon import Daemon
from syncd.db.housekeeping import prune_change_log
from syncd.db.models import ChangeLogRow, SyncRunRow
from syncd.db.reports import last_successes
from syncd.errors import ConfigError
from syncd.notify import Notifier
from tests.daemon.conftest import seed_contacts, sql, wait_until
from tests.e2e.conftest import FAST_RETRY, provider_settings

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def add_log_row(engine: Engine, at: datetime, **values: Any) -> None:
    row = dict(provider="sendhub", entity="contact", action="create", direction="outbound", status="applied",
               at=at) | values
    with engine.begin() as conn:
        conn.execute(insert(ChangeLogRow), [row])


def log_ages(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted((NOW - at).days for at in conn.execute(select(ChangeLogRow.at)).scalars())


def test_prune_deletes_rows_older_than_retention_but_keeps_open_conflicts(migrated_engine):
    for days in (1, 29, 31, 45, 400):
        add_log_row(migrated_engine, NOW - timedelta(days=days))
    add_log_row(migrated_engine, NOW - timedelta(days=100), action="conflict", status="planned")
    add_log_row(migrated_engine, NOW - timedelta(days=100), action="conflict", status="planned", resolved_at=NOW)
    assert prune_change_log(migrated_engine, 30, now=NOW, batch=2) == 4
    assert log_ages(migrated_engine) == [1, 29, 100]


def test_last_successes_reads_the_latest_clean_run_per_provider(migrated_engine):
    runs = [(NOW - timedelta(hours=3), {"a": {"status": "ok"}, "b": {"status": "ok"}}),
            (NOW - timedelta(hours=2), {"a": {"status": "ok", "failed": 2}, "b": {"status": "failed"}}),
            (NOW - timedelta(hours=1), {"a": {"status": "ok"}})]
    with migrated_engine.begin() as conn:
        for finished, providers in runs:
            conn.execute(insert(SyncRunRow), [dict(started_at=finished, finished_at=finished, trigger="schedule",
                                                   status="ok", summary={"providers": providers})])
    assert last_successes(migrated_engine) == {"a": NOW - timedelta(hours=1), "b": NOW - timedelta(hours=3)}


@pytest.fixture
def migrated_sqlite(sqlite_url: str) -> Iterator[Engine]:
    from syncd.db.engine import make_engine
    from syncd.db.migrate import upgrade

    engine = make_engine(sqlite_url)
    upgrade(engine)
    yield engine
    engine.dispose()


class Served:
    """A Daemon serving in a thread; ``stop()`` sets the flag and joins."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.ready = threading.Event()
        daemon.on_ready = self.ready.set
        self.result: list[int] = []
        self.thread = threading.Thread(target=lambda: self.result.append(daemon.serve(handle_signals=False)))
        self.thread.start()
        wait_until(self.ready.is_set, 10, "on_ready")

    def stop(self, timeout: float = 10) -> float:
        started = time.monotonic()
        self.daemon.stop.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive() and self.result == [0]
        return time.monotonic() - started


@pytest.fixture
def serve_in_thread() -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(config: Config, engine: Engine, **kw: Any) -> Served:
        def loader() -> Config:
            raise ConfigError(["no file"])
        served = Served(Daemon(loader, config=config, engine=engine, notifier=Notifier(None), **kw))
        started.append(served)
        return served

    yield start
    for served in started:
        served.daemon.stop.set()
        served.thread.join(30)


def test_retention_prunes_at_the_first_run_and_then_at_most_once_a_day(migrated_engine, db_url, serve_in_thread):
    old = datetime.now(UTC) - timedelta(days=40)
    add_log_row(migrated_engine, old)
    config = Config(database=DatabaseSettings(db_url), schedule=ScheduleSettings(interval_seconds=0.2),
                    sync=SyncSettings(log_retention_days=30))
    with structlog.testing.capture_logs() as events:
        served = serve_in_thread(config, migrated_engine)
        wait_until(lambda: any(e["event"] == "retention.pruned" for e in events), 10, "the first prune")
        add_log_row(migrated_engine, old)
        wait_until(lambda: sum(e["event"] == "run.skipped" for e in events) >= 3, 10, "two more ticks")
        served.stop()
    assert [e["rows"] for e in events if e["event"] == "retention.pruned"] == [1]
    assert sql(db_url, "SELECT count(*) FROM change_log")[0][0] == 1, "pruned once, not at every tick"
    assert {e["reason"] for e in events if e["event"] == "run.skipped"} == {"no enabled account"}


def test_a_run_that_will_not_stop_is_cancelled_after_the_grace(sqlite_url, migrated_sqlite, sendhub,
                                                               serve_in_thread):
    seed_contacts(sqlite_url, 5)
    sendhub.faults.latency = 3.0  # every request hangs far longer than the grace
    config = Config(database=DatabaseSettings(sqlite_url), sync=SyncSettings(default_region="US"),
                    providers=(provider_settings(sendhub, "sendhub", timeout_seconds=30),))
    served = serve_in_thread(config, migrated_sqlite, stop_grace=0.3,
                             client_options={"sendhub": {"retry": FAST_RETRY}})
    wait_until(lambda: sql(sqlite_url, "SELECT count(*) FROM sync_runs WHERE status = 'running'")[0][0], 10,
               "the run to start")
    assert served.stop() < 3
    [(status, error)] = sql(sqlite_url, "SELECT status, error FROM sync_runs")
    assert status == "failed" and "next run resumes" in error
    assert sql(sqlite_url, "SELECT owner FROM sync_leases")[0][0] is None, "the lease was released"


def test_stop_flag_ends_an_idle_daemon_at_once(sqlite_url, migrated_sqlite, serve_in_thread):
    config = Config(database=DatabaseSettings(sqlite_url), schedule=ScheduleSettings(interval_seconds=60))
    with structlog.testing.capture_logs() as events:
        served = serve_in_thread(config, migrated_sqlite)
        wait_until(lambda: any(e["event"] == "run.skipped" for e in events), 5, "the first tick")
        assert served.stop() < 1
    with migrated_sqlite.connect() as conn:
        assert conn.execute(select(func.count()).select_from(SyncRunRow)).scalar() == 0
