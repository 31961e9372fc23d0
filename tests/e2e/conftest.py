"""End-to-end fixtures: both simulators over real HTTP, a migrated database, and `run_once`.

``world`` gives a :class:`World`: the two simulator servers, the Config that
points at them, the engine, and ``sync()`` / ``plan()`` / ``cli()`` helpers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, text

from syncd.cli import cli
from syncd.cli.app import AppContext
from syncd.config import Config, DatabaseSettings, ProviderSettings, Secret, SyncSettings
from syncd.db.engine import make_engine
from syncd.db.migrate import upgrade
from syncd.providers.http import RetryPolicy
from syncd.simulators import Faults, SimulatorServer, start_simulator
from syncd.sync.run import RunReport, run_once

FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.01, max_delay=2.0, budget=20.0)
_SECRET_FIELDS = frozenset({"password", "access_token", "session_key", "api_key"})


def provider_settings(server: SimulatorServer, name: str, **overrides: Any) -> ProviderSettings:
    creds = {k: Secret(v) if k in _SECRET_FIELDS else v for k, v in server.credentials.items()}
    if server.kind == "smsend":  # log in with the access token
        creds.pop("username", None)
        creds.pop("password", None)
    values = dict(name=name, type=server.kind, base_url=server.base_url, requests_per_second=1000,
                  max_concurrency=4, timeout_seconds=5, batch_size=100)
    return ProviderSettings(**(values | creds | overrides))


@dataclass
class World:
    engine: Engine
    config: Config
    smsend: SimulatorServer
    sendhub: SimulatorServer
    reports: list[RunReport] = field(default_factory=list)

    def sync(self, **kw: Any) -> RunReport:
        options = {p.name: {"retry": FAST_RETRY} for p in self.config.providers}
        report = asyncio.run(run_once(self.config, self.engine, client_options=options, **kw))
        self.reports.append(report)
        return report

    def plan(self, **kw: Any) -> RunReport:
        return self.sync(dry_run=True, **kw)

    def sql(self, statement: str, **params: Any) -> list[Any]:
        with self.engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []

    def cli(self, *args: str) -> Result:
        """``syncd ARGS`` through the real command line, on this world's configuration and database."""
        app = AppContext(None, _config=self.config, _engine=self.engine)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("syncd.cli.AppContext", lambda _path: app)
            return CliRunner().invoke(cli, list(args))

    def reconfigure(self, **sync_settings: Any) -> None:
        self.config = replace(self.config, sync=replace(self.config.sync, **sync_settings))

    def provider(self, name: str, **overrides: Any) -> None:
        self.config = replace(self.config, providers=tuple(
            replace(p, **overrides) if p.name == name else p for p in self.config.providers))


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    upgrade(db_url)
    engine = make_engine(db_url)
    with start_simulator("smsend", faults=Faults()) as smsend, start_simulator("sendhub", faults=Faults()) as sendhub:
        config = Config(database=DatabaseSettings(db_url), sync=SyncSettings(default_region="US"),
                        providers=(provider_settings(smsend, "smsend"), provider_settings(sendhub, "sendhub")))
        yield World(engine, config, smsend, sendhub)
    engine.dispose()
