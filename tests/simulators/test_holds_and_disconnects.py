"""Clients that vanish mid-request.

A vanished client must leave no ``Exception in ASGI application`` (or any
traceback) in the log, and the simulator must keep serving; an application
error must still be reported.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

import httpx
import pytest
from starlette.requests import ClientDisconnect

from syncd.simulators.faults import DefaultFaultHooks, FaultMiddleware, Faults
from syncd.simulators.server import BASE_PATHS, SimulatorServer

WAIT = 10.0  # seconds: a bound on waiting for an event that must come, not a guess at a speed


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until true; fail after WAIT seconds naming ``what``."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.002)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The captured records that report an error or carry a traceback (should be none)."""
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def raw_post(sim: SimulatorServer, path: str, body: bytes, *, declared: int | None = None) -> socket.socket:
    """Send a POST over a bare socket (``declared`` bytes of body announced) and leave it open."""
    query = urlencode(sim.credentials)
    head = (f"POST {BASE_PATHS[sim.kind]}{path}?{query} HTTP/1.1\r\n"
            f"Host: {sim.host}:{sim.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) if declared is None else declared}\r\n\r\n")
    sock = socket.create_connection((sim.host, sim.port), timeout=WAIT)
    sock.sendall(head.encode() + body)
    return sock


def contact(number: str) -> dict[str, str]:
    return {"name": "Held", "number": number}


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Capture every log record from DEBUG up; the test must end with no error and no traceback among them."""
    with caplog.at_level(logging.DEBUG):
        yield caplog
    assert no_tracebacks(caplog) == []


# -- vanished clients ------------------------------------------------------------------------------


def test_a_client_gone_before_its_body_is_read_is_dropped_without_a_traceback(
    sendhub: SimulatorServer, client: httpx.Client, quiet: pytest.LogCaptureFixture
) -> None:
    # Half a body, then gone: the app's body read meets the disconnect (as after a latency sleep).
    sock = raw_post(sendhub, "/contacts/", b'{"name": "Gone"', declared=200)
    wait_until(lambda: sendhub.in_flight == 1, "the request reached the simulator")
    sock.close()
    wait_until(lambda: sendhub.in_flight == 0, "the simulator let the request go")
    assert no_tracebacks(quiet) == [], "no 'Exception in ASGI application'"
    assert sendhub.vanished_counts() == {"POST /v1/contacts": 1}
    assert sendhub.request_log == [] and sendhub.request_counts() == {}, "answers only: the client gave up"
    assert sendhub.state.snapshot()["contacts"] == []
    assert client.post("/contacts/", json=contact("6501234567")).status_code == 201, "it keeps serving"


def test_an_app_raising_client_disconnect_without_a_disconnect_is_still_an_error() -> None:
    """Only a disconnect the client really made is quiet: the same exception from a bug propagates."""

    async def app(scope: dict, receive: Callable, send: Callable) -> None:
        raise ClientDisconnect()

    middleware = FaultMiddleware(app, faults=Faults(), hooks=DefaultFaultHooks(), state=None, admin_token="t",
                                 literals=frozenset({"v1"}))
    scope = {"type": "http", "method": "POST", "path": "/v1/x", "headers": []}

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        raise AssertionError("nothing is sent")

    with pytest.raises(ClientDisconnect):
        asyncio.run(middleware(scope, receive, send))
    assert middleware.in_flight == 0
