"""Fixtures of the provider contract suite: each real client against its own simulator over real HTTP.

``kind``
    ``"sendhub"`` and ``"smsend"``, one test per provider.
``simulator``
    A factory ``simulator(contacts=0, groups=0, seed=0, **faults)`` starting the
    simulator of ``kind`` on 127.0.0.1 (stopped after the test).
``connect``
    A factory ``connect(server, **settings_overrides)`` building the client for
    that simulator through :func:`syncd.providers.build_provider`, with fast
    retries and no rate limit to speak of (closed after the test).
``env``
    ``(provider, server)`` on a fresh account; ``@pytest.mark.account(contacts=N,
    groups=M)`` seeds it.

Tests are ``async`` and run on asyncio through anyio's pytest plugin.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from syncd.config import ProviderSettings, Secret
from syncd.providers import build_provider
from syncd.providers.base import Provider
from syncd.providers.http import RetryPolicy
from syncd.simulators import Faults, SimulatorServer, start_simulator

KINDS = ("sendhub", "smsend")

#: Quick enough for tests, patient enough to outlast the injected 5xx and 429s.
FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.01, max_delay=5.0, budget=20.0)

_SECRET_FIELDS = frozenset({"password", "access_token", "session_key", "api_key"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "account(contacts=0, groups=0, seed=0): seed the simulator account of `env`")


def settings_for(server: SimulatorServer, **overrides: Any) -> ProviderSettings:
    """ProviderSettings for ``server``: its credentials (secrets wrapped), generous limits."""
    credentials = {key: Secret(value) if key in _SECRET_FIELDS else value for key, value in server.credentials.items()}
    values: dict[str, Any] = dict(
        name=f"{server.kind}-test",
        type=server.kind,
        base_url=server.base_url,
        requests_per_second=1000,
        max_concurrency=4,
        timeout_seconds=5,
    )
    return ProviderSettings(**(values | credentials | overrides))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    name = request.param
    if importlib.util.find_spec(f"syncd.providers.{name}") is None:
        pytest.skip(f"syncd/providers/{name}.py does not exist yet")
    return name


@pytest.fixture
def simulator(kind: str) -> Iterator[Callable[..., SimulatorServer]]:
    servers: list[SimulatorServer] = []

    def start(*, contacts: int = 0, groups: int = 0, seed: int = 0, **faults: Any) -> SimulatorServer:
        server = start_simulator(kind, contacts=contacts, groups=groups, seed=seed, faults=Faults(seed=seed, **faults))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Provider]]:
    providers: list[Provider] = []

    def build(server: SimulatorServer, *, retry: RetryPolicy = FAST_RETRY, **overrides: Any) -> Provider:
        provider = build_provider(settings_for(server, **overrides), default_region="US", retry=retry)
        providers.append(provider)
        return provider

    yield build
    for provider in providers:
        await provider.aclose()


@pytest.fixture
async def env(
    request: pytest.FixtureRequest, simulator: Callable[..., SimulatorServer], connect: Callable[..., Provider]
) -> tuple[Provider, SimulatorServer]:
    marker = request.node.get_closest_marker("account")
    server = simulator(**(marker.kwargs if marker else {}))
    return connect(server), server
