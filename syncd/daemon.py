"""The daemon, ``syncd run`` (design §4, §7): owns time and signals, and nothing else.

* APScheduler 3 fires one run at start and then every ``schedule.interval_seconds``
  (job ``max_instances=1``, ``coalesce=True``: a run longer than the interval
  delays the next tick instead of stacking runs).
* Each run claims the lease of every enabled account (:mod:`syncd.db.leases`),
  skips the accounts another live replica holds, runs
  :func:`~syncd.sync.run.run_once` on the rest with their fences, renews the
  leases while it goes on and releases them at the end
  (:func:`syncd.runner.run_leased`, which ``syncd sync`` shares).
* SIGTERM/SIGINT set the stop flag: the run takes no new operation, settles
  the requests in flight (or leaves them ``pending`` for the next run), and the
  process exits 0. A run that has not stopped after ``stop_grace`` seconds is
  cancelled (its ``sync_runs`` row marked failed); a still-busy worker after
  that is abandoned, so the exit is bounded.
* SIGHUP reloads the configuration; a bad one is logged with every problem
  and the running configuration is kept.
* systemd (``Type=notify``): ``READY=1`` once the configuration is valid and
  the schema current; ``STATUS=`` with the last result per account;
  ``WATCHDOG=1`` from a scheduler job of its own (so it stops if the
  scheduler stops, but never because a provider is down); ``STOPPING=1``.
* A database outage (PostgreSQL stopped or unreachable, a SQLite file
  locked or unwritable) fails the run, never the daemon: one
  ``database.unavailable`` error per failed run (the first of an outage with
  its traceback), ``STATUS=database unreachable since …``, and the watchdog
  goes on (it does not depend on the database). The first run that reaches the
  database again logs ``database.recovered``, closes the ``sync_runs`` row the
  outage left ``running`` and, like any run, settles what was left ``pending``.
* Optional Prometheus endpoint (:mod:`syncd.metrics`), and change-log
  retention: rows older than ``sync.log_retention_days`` are pruned at the
  first run and then at most once a day (open ``manual`` conflicts are kept).
  The statements are :mod:`syncd.db`'s (``housekeeping``, ``reports``): the
  daemon decides when, never how.

:func:`serve` is the core, kopf-style: the caller may pass its own ``stop``
event and ``on_ready`` callback (tests run it in a thread). ``syncd run``
builds a :class:`Daemon` in :func:`syncd.cli.commands.run_daemon`: the daemon
knows nothing of the command line.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from syncd.config import Config, format_config_error
from syncd.db.clock import utcnow
from syncd.db.engine import make_engine
from syncd.db.housekeeping import fail_running_runs, prune_change_log
from syncd.db.leases import Busy, LeaseManager, lease_ttl
from syncd.db.migrate import check_schema
from syncd.db.reports import OperationCount, last_successes, operation_counts
from syncd.dberrors import database_outage, describe_database_error, safe_database_url
from syncd.errors import ConfigError, SchemaError
from syncd.logs import configure_logging
from syncd.metrics import Metrics, MetricsServer, ProviderOutcome
from syncd.notify import Notifier, watchdog_interval
from syncd.runner import RunCoroutine, enabled_accounts, run_leased
from syncd.sync.run import ProviderReport, RunReport, owner_id

__all__ = ["Daemon", "Outage", "open_engine", "serve"]

log = structlog.get_logger("syncd.daemon")

ConfigLoader = Callable[[], Config]

#: Seconds the current run gets, after SIGTERM, to settle its requests in flight.
#: The unit's TimeoutStopSec leaves room for this plus CANCEL_GRACE.
STOP_GRACE = 20.0
#: Seconds a cancelled run gets to close its connections before it is abandoned.
CANCEL_GRACE = 5.0
#: How often the main thread looks at signals and reload requests.
_POLL = 0.2
RETENTION_EVERY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Outage:
    """The database outage the daemon is in: since when, how many runs it failed, the latest error."""

    since: datetime
    failed_runs: int
    error: str

    def status(self, interval: float) -> str:
        """The ``STATUS=`` text: what systemctl status shows while the outage lasts."""
        runs = f"{self.failed_runs} run{'s' * (self.failed_runs != 1)} failed"
        return (f"database unreachable since {self.since:%H:%M:%S} UTC ({runs}, retrying every {interval:g} s): "
                f"{self.error}")


class Daemon:
    """One ``syncd run`` process: scheduler, signals, leases, notifications, metrics, retention."""

    def __init__(self, config_loader: ConfigLoader, *, config: Config | None = None, engine: Engine | None = None,
                 stop: threading.Event | None = None, on_ready: Callable[[], None] | None = None,
                 notifier: Notifier | None = None, client_options: dict[str, dict[str, Any]] | None = None,
                 stop_grace: float = STOP_GRACE, ttl: float | None = None) -> None:
        self._load = config_loader
        self.config = config if config is not None else config_loader()
        self.engine = engine if engine is not None else open_engine(self.config)
        self.stop = stop if stop is not None else threading.Event()
        self.on_ready = on_ready
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.client_options = client_options
        self.stop_grace = stop_grace
        self._fixed_ttl = ttl
        self.leases = self._lease_manager(self.config, self.engine)
        self.metrics = Metrics()
        self.metrics_server: MetricsServer | None = None
        self.abandoned = False
        self._lock = threading.Lock()  # guards config/engine/leases swaps on reload
        self._idle = threading.Event()
        self._idle.set()
        self._signal: int | None = None
        self._reload_requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._last_prune: datetime | None = None
        self._provider_status: dict[str, str] = {}
        self._scheduler: BackgroundScheduler | None = None
        self.outage: Outage | None = None
        self._unfinished_run = False  # a failed run may have left its sync_runs row `running`

    # -- lifecycle ------------------------------------------------------------------

    def serve(self, *, handle_signals: bool = True) -> int:
        """Run until the stop flag is set (SIGTERM/SIGINT when ``handle_signals``); return the exit code 0."""
        check_schema(self.engine, allow_create_sqlite=True)
        self.metrics.database_up.set(1)
        self._start_metrics(self.config)
        self._seed_last_success()
        previous = self._install_signals() if handle_signals else {}
        self._scheduler = self._build_scheduler()
        self._scheduler.start()
        try:
            self._announce_ready()
            self._main_loop()
        finally:
            self._shutdown()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return 0

    def request_reload(self) -> None:
        """Reload the configuration at the next poll of the main loop (what SIGHUP does)."""
        self._reload_requested = True

    def _announce_ready(self) -> None:
        self.notifier.ready()
        self.notifier.status("ready; first run starting")
        log.info("daemon.ready", interval_seconds=self.config.schedule.interval_seconds,
                 lease_ttl=self.leases.ttl, owner=self.leases.owner,
                 providers=[p.name for p in self.config.providers if p.enabled])
        if self.on_ready is not None:
            self.on_ready()

    def _main_loop(self) -> None:
        while not self.stop.is_set():
            if self._signal is not None:
                log.info("daemon.signal", signal=signal.Signals(self._signal).name)
                self.stop.set()
                break
            if self._reload_requested:
                self._reload_requested = False
                self.reload()
            self.stop.wait(_POLL)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        # Handlers only set plain attributes: taking a lock inside a handler can deadlock.
        def on_stop(signum: int, frame: object) -> None:
            self._signal = signum

        def on_hup(signum: int, frame: object) -> None:
            self._reload_requested = True

        handlers = {signal.SIGTERM: on_stop, signal.SIGINT: on_stop, signal.SIGHUP: on_hup}
        return {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}

    def _shutdown(self) -> None:
        self.stop.set()
        self.notifier.stopping()
        self.notifier.status("stopping; settling the current run")
        log.info("daemon.stopping")
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if not self._idle.wait(self.stop_grace):
            log.warning("run.cancelling", grace_seconds=self.stop_grace)
            self._cancel_run()
            if not self._idle.wait(CANCEL_GRACE):
                self.abandoned = True
                log.error("run.abandoned", reason="the run did not stop in time; the next run resumes its work")
        if self.metrics_server is not None:
            self.metrics_server.close()
        log.info("daemon.stopped")

    # -- scheduling ---------------------------------------------------------------

    def _build_scheduler(self) -> BackgroundScheduler:
        # Separate executors: the watchdog job must fire while a long run occupies the sync worker.
        scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1), "watchdog": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )
        # APScheduler's own WARNING lines are plain text; the listener below says it as an event.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
        scheduler.add_listener(self._on_busy_tick, EVENT_JOB_MAX_INSTANCES)
        scheduler.add_job(self._tick, "interval", seconds=self.config.schedule.interval_seconds, id="sync",
                          next_run_time=utcnow())
        beat = watchdog_interval()
        if beat is not None and self.notifier.enabled:
            scheduler.add_job(self.notifier.watchdog, "interval", seconds=beat, id="watchdog",
                              executor="watchdog", next_run_time=utcnow())
        return scheduler

    def _on_busy_tick(self, event: JobEvent) -> None:
        if event.job_id == "sync":
            log.info("run.tick_skipped", reason="the previous run is still going")

    def _tick(self) -> None:
        """The scheduled job: one run, then retention if due. Never raises."""
        self._idle.clear()
        try:
            if self.stop.is_set():
                return
            with self._lock:
                config, engine, leases = self.config, self.engine, self.leases
            self._run(config, engine, leases)
            if self.outage is None:  # pruning would only fail again, and postpone itself by a day
                self._prune_if_due(config, engine)
        finally:
            self._idle.set()

    def _run(self, config: Config, engine: Engine, leases: LeaseManager) -> None:
        started = time.monotonic()
        try:
            self._close_unfinished_run(engine)
            outcome = run_leased(config, engine, leases, enabled_accounts(config), on_busy=_log_busy,
                                 start=self._run_async, trigger="schedule", stopping=self.stop.is_set,
                                 client_options=self.client_options)
        except asyncio.CancelledError:
            self._mark_cancelled(engine)
            return
        except Exception as exc:  # neither a crashed run nor a lost database may end the daemon: retry next tick
            self._unfinished_run = True
            self._run_failed(exc, config)
            return
        self._database_back()
        self._after_run(outcome.report, outcome.busy, time.monotonic() - started, engine)

    def _run_failed(self, exc: Exception, config: Config) -> None:
        """Report a run that raised: a database outage as one line, anything else as a crash with its traceback."""
        outage = database_outage(exc)
        if outage is not None:
            self._database_unavailable(exc, outage, config)
            return
        log.exception("run.crashed", error=str(exc))
        self.metrics.runs.labels("error").inc()
        self.notifier.status(f"last run crashed: {type(exc).__name__} (details in the journal)")

    def _run_async(self, coro: RunCoroutine) -> RunReport:
        """Run ``coro`` to its end on a fresh event loop, keeping a handle on it for :meth:`_cancel_run`."""
        async def main() -> RunReport:
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
            try:
                return await coro
            finally:
                self._loop = self._task = None

        return asyncio.run(main())

    def _cancel_run(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop closed meanwhile: the run is over
                pass

    def _mark_cancelled(self, engine: Engine) -> None:
        reason = "stopped before the run finished; the next run resumes its work"
        log.warning("run.cancelled", reason=reason)
        try:
            fail_running_runs(engine, owner_id(), reason)
        except SQLAlchemyError as exc:
            log.warning("run.cancel_record_failed", error=str(exc).splitlines()[0])

    # -- database outages -------------------------------------------------------------

    def _database_unavailable(self, exc: Exception, outage: SQLAlchemyError, config: Config) -> None:
        """One error line for a run the database failed, the outage's STATUS=, and the metrics."""
        previous = self.outage
        self.outage = Outage(since=previous.since if previous else utcnow(),
                             failed_runs=(previous.failed_runs if previous else 0) + 1,
                             error=describe_database_error(outage, config.database.url))
        # Only the first failure of an outage carries the traceback: it shows where the run was when
        # the database went; every later one would repeat "cannot connect" at the first access.
        log.error("database.unavailable", error=self.outage.error, database=safe_database_url(config.database.url),
                  since=self.outage.since.isoformat(), failed_runs=self.outage.failed_runs,
                  message="the database cannot be used: this run stopped at its first failed access; the next "
                          "run retries and settles whatever this one left pending",
                  exc_info=exc if previous is None else None)
        self.metrics.runs.labels("db_unavailable").inc()
        self.metrics.database_up.set(0)
        self.notifier.status(self.outage.status(config.schedule.interval_seconds))

    def _database_back(self) -> None:
        """A run reached the database: end the outage, if there was one."""
        self.metrics.database_up.set(1)
        if self.outage is None:
            return
        outage, self.outage = self.outage, None
        log.info("database.recovered", failed_runs=outage.failed_runs,
                 down_seconds=round((utcnow() - outage.since).total_seconds(), 1))

    def _close_unfinished_run(self, engine: Engine) -> None:
        """After a failed run: close this process's sync_runs rows still marked ``running``.

        A run that died with the database could not record its end, and its row
        would say ``running`` for ever (runs only close the rows of dead
        processes). Runs never overlap in one daemon, so before a run starts any
        ``running`` row of this process is such a leftover. A database error
        here is this tick's outage, like any other.
        """
        if not self._unfinished_run:
            return
        closed = fail_running_runs(engine, owner_id(), "interrupted: the run failed before it could record its "
                                                       "end (see the log); the next run resumed its work")
        self._unfinished_run = False
        if closed:
            log.info("run.closed_unfinished", runs=closed)

    # -- after a run ------------------------------------------------------------------

    def _after_run(self, report: RunReport | None, busy: list[Busy], duration: float, engine: Engine) -> None:
        for b in busy:
            self._provider_status[b.provider] = "synced by another replica"
        outcomes = [ProviderOutcome(b.provider, "busy") for b in busy]
        if report is None:
            self.metrics.observe_run("skipped", duration, outcomes, [], utcnow())
            reason = "every enabled account is being synced by another replica" if busy else "no enabled account"
            log.info("run.skipped", reason=reason, providers=[b.provider for b in busy])
            self.notifier.status(self._status_line(None))
            return
        for p in report.providers:
            ok = p.status == "ok" and not p.counts.get("failed")
            outcomes.append(ProviderOutcome(p.name, "ok" if ok else "failed", p.requests, p.retries))
            self._provider_status[p.name] = _provider_text(p)
        self.metrics.observe_run(report.status, duration, outcomes, self._operation_counts(engine, report.run_id),
                                 utcnow())
        log.info("run.finished", run_id=report.run_id, status=report.status, duration=round(duration, 3),
                 stopped_early=self.stop.is_set(), providers={p.name: p.summary() for p in report.providers})
        self.notifier.status(self._status_line(report))

    def _operation_counts(self, engine: Engine, run_id: int) -> list[OperationCount]:
        try:
            return operation_counts(engine, run_id)
        except SQLAlchemyError as exc:  # the database went just after the run, which is recorded: only metrics lose
            log.warning("metrics.operations_failed", run_id=run_id, error=describe_database_error(exc))
            return []

    def _status_line(self, report: RunReport | None) -> str:
        head = (f"last run #{report.run_id} {report.status}" if report is not None else "last run skipped")
        head += f" at {utcnow():%H:%M:%S} UTC"
        parts = [f"{name}: {text}" for name, text in sorted(self._provider_status.items())]
        return "; ".join([head, *parts])

    def _seed_last_success(self) -> None:
        try:
            for provider, when in last_successes(self.engine).items():
                self.metrics.remember_success(provider, when)
        except SQLAlchemyError as exc:
            log.warning("metrics.seed_failed", error=str(exc).splitlines()[0])

    # -- retention -----------------------------------------------------------------------

    def _prune_if_due(self, config: Config, engine: Engine) -> None:
        now = utcnow()
        if self._last_prune is not None and now - self._last_prune < RETENTION_EVERY:
            return
        self._last_prune = now
        try:
            pruned = prune_change_log(engine, config.sync.log_retention_days, now=now)
        except SQLAlchemyError as exc:
            log.warning("retention.failed", error=str(exc).splitlines()[0])
            return
        log.info("retention.pruned", rows=pruned, older_than_days=config.sync.log_retention_days)

    # -- configuration --------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the configuration again; on any problem log it and keep the running one. True when swapped."""
        self.notifier.reloading()
        try:
            return self._reload()
        finally:
            self.notifier.ready()

    def _reload(self) -> bool:
        old, engine = self.config, None
        try:
            new = self._load()
            engine = self.engine if new.database.url == old.database.url else open_engine(new)
            self._swap_metrics(old, new)
        except (ConfigError, SchemaError, SQLAlchemyError, OSError) as err:
            if engine is not None and engine is not self.engine:
                engine.dispose()
            problems = err.problems if isinstance(err, ConfigError) else [str(err).splitlines()[0]]
            log.error("config.reload_failed", problems=problems, kept="the running configuration",
                      message=format_config_error(ConfigError(problems)))
            return False
        with self._lock:
            old_engine, self.config, self.engine = self.engine, new, engine
            self.leases = self._lease_manager(new, engine)
        if old_engine is not engine:
            old_engine.dispose()
        configure_logging(new.logging.level, new.logging.format, new.secrets())
        for warning in new.warnings:
            log.warning("config.warning", message=warning)
        if new.schedule.interval_seconds != old.schedule.interval_seconds and self._scheduler is not None:
            self._scheduler.reschedule_job("sync", trigger="interval", seconds=new.schedule.interval_seconds)
        log.info("config.reloaded", path=str(new.path), interval_seconds=new.schedule.interval_seconds,
                 providers=[p.name for p in new.providers if p.enabled])
        return True

    def _lease_manager(self, config: Config, engine: Engine) -> LeaseManager:
        ttl = self._fixed_ttl or lease_ttl(config.schedule.interval_seconds)
        return LeaseManager(engine, ttl=ttl)

    def _start_metrics(self, config: Config) -> None:
        if config.metrics.listen is None:
            return
        try:
            self.metrics_server = MetricsServer(self.metrics, config.metrics.listen)
        except OSError as exc:
            raise ConfigError([f"metrics.listen: cannot listen on {config.metrics.listen}: {exc.strerror or exc}"]) from None
        log.info("metrics.listening", host=self.metrics_server.host, port=self.metrics_server.port)

    def _swap_metrics(self, old: Config, new: Config) -> None:
        if new.metrics.listen == old.metrics.listen:
            return
        previous = self.metrics_server
        if new.metrics.listen is None:
            self.metrics_server = None
        else:  # may raise OSError: the reload then fails with the old server still running
            self.metrics_server = MetricsServer(self.metrics, new.metrics.listen)
            log.info("metrics.listening", host=self.metrics_server.host, port=self.metrics_server.port)
        if previous is not None:
            previous.close()


# -- helpers --------------------------------------------------------------------------------


def open_engine(config: Config) -> Engine:
    """The configured database, refused (SchemaError) when its schema is behind."""
    engine = make_engine(config.database.url)
    try:
        check_schema(engine, allow_create_sqlite=True)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _log_busy(busy: Busy) -> None:
    log.info("lease.busy", provider=busy.provider, holder=busy.owner, until=busy.expires_at.isoformat())


_CHANGE_KEYS = ("created_in", "updated_in", "deleted_in", "created_out", "updated_out", "deleted_out")


def _provider_text(p: ProviderReport) -> str:
    """One account's part of ``STATUS=``: how its last run went."""
    if p.status != "ok":
        return f"failed: {p.error}" if p.error else "failed"
    changes = sum(p.counts.get(k, 0) for k in _CHANGE_KEYS)
    failed, rejected = p.counts.get("failed", 0), p.counts.get("rejected", 0)
    text = f"ok, {changes} change(s)"
    if failed or rejected:
        text = f"{'partial' if failed else 'ok'}, {changes} change(s), {failed} failed, {rejected} rejected"
    return text


# -- entry points -----------------------------------------------------------------------------


def serve(config_loader: ConfigLoader, *, stop: threading.Event | None = None,
          on_ready: Callable[[], None] | None = None, handle_signals: bool = True, **options: Any) -> int:
    """Run the daemon until ``stop`` is set (or SIGTERM/SIGINT); 0 on a clean stop.

    ``config_loader`` is called at start (unless ``config=`` is given) and on
    every reload. ``options`` go to :class:`Daemon` (``config``, ``engine``,
    ``notifier``, ``client_options``, ``stop_grace``, ``ttl``).
    """
    return Daemon(config_loader, stop=stop, on_ready=on_ready, **options).serve(handle_signals=handle_signals)
