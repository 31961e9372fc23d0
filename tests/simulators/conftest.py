"""Fixtures for the simulator tests: a SendHub simulator on 127.0.0.1 and an httpx client for it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from syncd.simulators.server import SimulatorServer, start_simulator


class FakeClock:
    """An injectable clock (epoch seconds) that moves only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sendhub(clock: FakeClock) -> Iterator[SimulatorServer]:
    """An empty SendHub simulator with a fake clock."""
    with start_simulator("sendhub", clock=clock) as sim:
        yield sim


@pytest.fixture(scope="session")
def transport() -> Iterator[httpx.HTTPTransport]:
    """One transport for every test: building an httpx client's TLS context costs tens of ms."""
    with httpx.HTTPTransport() as shared:
        yield shared


@pytest.fixture
def http(transport: httpx.HTTPTransport) -> httpx.Client:
    """A plain client (no base URL, no credentials); closing it leaves the shared transport open."""
    return httpx.Client(transport=transport, timeout=5)


@pytest.fixture
def client(sendhub: SimulatorServer, transport: httpx.HTTPTransport) -> httpx.Client:
    """A client on the SendHub base URL, sending the query credentials on every request."""
    return httpx.Client(base_url=sendhub.base_url, params=sendhub.credentials, timeout=5, transport=transport)
