"""Prometheus metrics of the daemon (``[metrics] listen = "host:port"``; off when absent).

Exposed on ``http://LISTEN/metrics`` (any path answers) in the Prometheus text format:

=============================================  ====================================================
``syncd_runs_total{status}``                   runs by outcome: ``ok``, ``partial``, ``failed``;
                                               ``skipped`` when every account was leased by another
                                               replica; ``error`` when the run itself crashed;
                                               ``db_unavailable`` when the database could not be used
``syncd_database_up``                          1 when the last run could use the database (and at
                                               start, once the schema was checked), 0 when the last
                                               run failed because it could not
``syncd_run_duration_seconds``                 histogram of run durations (leases included)
``syncd_provider_runs_total{provider,status}`` per account and run: ``ok``, ``failed``, ``busy``
                                               (leased by another replica)
``syncd_operations_total{provider,entity,      change-log rows each run wrote, by their final status
action,status}``
``syncd_provider_requests_total{provider}``    HTTP requests sent to the account (retries included)
``syncd_provider_retries_total{provider}``     of which retries after a transient failure
``syncd_last_success_timestamp_seconds         end of the last run in which the account synced
{provider}``                                   without a failure (read back from ``sync_runs`` at
                                               start, so a restart does not forget it)
=============================================  ====================================================

Each daemon has its own registry: nothing leaks into prometheus_client's
global one, and tests can build several. The figures read from the database
(change-log counts of a run, last successes at start) come from
:mod:`syncd.db.reports`: this module holds no query.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics", "MetricsServer", "ProviderOutcome", "parse_listen"]

#: Run durations range from a second (nothing to do) to many minutes (a first push of 100k contacts).
RUN_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass(frozen=True, slots=True)
class ProviderOutcome:
    """What a run did with one account, as far as metrics care."""

    provider: str
    status: str  # ok | failed | busy
    requests: int = 0
    retries: int = 0


class Metrics:
    """The daemon's counters, gauges and histogram, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.runs = Counter("syncd_runs", "Sync runs by outcome.", ["status"], registry=r)
        self.run_duration = Histogram("syncd_run_duration_seconds", "Duration of sync runs.",
                                      buckets=RUN_BUCKETS, registry=r)
        self.provider_runs = Counter("syncd_provider_runs", "Runs per provider account by outcome.",
                                     ["provider", "status"], registry=r)
        self.operations = Counter("syncd_operations", "Change-log operations by final status.",
                                  ["provider", "entity", "action", "status"], registry=r)
        self.requests = Counter("syncd_provider_requests", "HTTP requests sent to a provider account.",
                                ["provider"], registry=r)
        self.retries = Counter("syncd_provider_retries", "HTTP requests retried after a transient failure.",
                               ["provider"], registry=r)
        self.database_up = Gauge("syncd_database_up",
                                 "1 when the last run could use the database, 0 when it failed for want of it.",
                                 registry=r)
        self.last_success = Gauge("syncd_last_success_timestamp_seconds",
                                  "When a provider account last synced without a failure (Unix time).",
                                  ["provider"], registry=r)

    def observe_run(self, status: str, duration: float, providers: Iterable[ProviderOutcome],
                    operations: Iterable[tuple[str, str, str, str, int]], finished: datetime) -> None:
        """Record one run: its outcome, each account's, and the change-log counts it wrote."""
        self.runs.labels(status).inc()
        self.run_duration.observe(duration)
        for p in providers:
            self.provider_runs.labels(p.provider, p.status).inc()
            self.requests.labels(p.provider).inc(p.requests)
            self.retries.labels(p.provider).inc(p.retries)
            if p.status == "ok":
                self.last_success.labels(p.provider).set(finished.timestamp())
        for provider, entity, action, status, count in operations:
            self.operations.labels(provider, entity, action, status).inc(count)

    def remember_success(self, provider: str, when: datetime) -> None:
        """Seed the last-success gauge (from the database, at start)."""
        self.last_success.labels(provider).set(when.timestamp())


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` / ``"[::1]:9464"`` -> (host, port)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsServer:
    """The HTTP endpoint serving ``metrics`` on ``listen`` (a daemon thread)."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        self.listen = listen
        host, port = parse_listen(listen)
        self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        self.host = host
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if isinstance(self._thread, threading.Thread):
            self._thread.join(timeout=5)
