"""Clients that vanish mid-request, and the request gate tests use to stop a client at an exact point.

A vanished client must leave no ``Exception in ASGI application`` (or any
traceback) in the log, and the simulator must keep serving; an application
error must still be reported. The gate (:class:`~syncd.simulators.faults.RequestGate`)
must hold exactly the request it is aimed at, in the phase asked, until it is
released or its client vanishes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from urllib.parse import urlencode

import httpx
import pytest
from starlette.requests import ClientDisconnect

from syncd.simulators.faults import DefaultFaultHooks, FaultMiddleware, Faults, RequestGate
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
def pool() -> Iterator[ThreadPoolExecutor]:
    """Threads for requests that block while the gate holds them."""
    with ThreadPoolExecutor(max_workers=4) as executor:
        yield executor


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


# -- the gate ---------------------------------------------------------------------------------------


def test_gate_holds_the_nth_write_before_it_is_applied_until_released(
    sendhub: SimulatorServer, client: httpx.Client, pool: ThreadPoolExecutor, quiet: pytest.LogCaptureFixture
) -> None:
    gate = sendhub.hold(2, endpoint="POST /v1/contacts")
    assert client.post("/contacts/", json=contact("6501234567")).status_code == 201
    assert client.get("/contacts/").status_code == 200, "reads before the mark pass"
    held: Future[httpx.Response] = pool.submit(client.post, "/contacts/", json=contact("6501234568"))
    assert gate.reached.wait(WAIT)
    assert (gate.seen, gate.holding, len(sendhub.state.snapshot()["contacts"])) == (2, 1, 1)
    assert not held.done()
    gate.release()
    assert held.result(timeout=WAIT).status_code == 201
    assert len(sendhub.state.snapshot()["contacts"]) == 2, "released, it is applied as if never held"
    assert client.post("/contacts/", json=contact("6501234569")).status_code == 201, "a released gate is spent"


def test_gate_applied_holds_the_answer_and_every_later_request(
    sendhub: SimulatorServer, client: httpx.Client, pool: ThreadPoolExecutor, quiet: pytest.LogCaptureFixture
) -> None:
    gate = sendhub.hold(1, phase="applied")
    first = pool.submit(client.post, "/contacts/", json=contact("6501234567"))
    assert gate.reached.wait(WAIT)
    assert sendhub.state.find("+16501234567") is not None, "applied, the answer withheld"
    later = pool.submit(client.get, "/contacts/")
    wait_until(lambda: gate.holding == 2, "the read after the mark is held too")
    assert not first.done() and not later.done()
    gate.release()
    assert first.result(timeout=WAIT).status_code == 201 and later.result(timeout=WAIT).status_code == 200
    assert sendhub.request_log[-2:] == [("POST", "/v1/contacts/", 201), ("GET", "/v1/contacts/", 200)]


def test_gate_answered_answers_the_mark_then_holds_what_follows(
    sendhub: SimulatorServer, client: httpx.Client, pool: ThreadPoolExecutor, quiet: pytest.LogCaptureFixture
) -> None:
    gate = sendhub.hold(1, phase="answered", endpoint="POST /v1/contacts")
    assert client.get("/contacts/").status_code == 200, "not a match: passes"
    assert client.post("/contacts/", json=contact("6501234567")).status_code == 201
    assert gate.reached.is_set(), "set once the mark's answer is out"
    next_write = pool.submit(client.post, "/groups/", json={"name": "Staff"})
    wait_until(lambda: gate.holding == 1, "the next request is held")
    assert sendhub.state.snapshot()["groups"] == []
    gate.release()
    assert next_write.result(timeout=WAIT).status_code == 201


@pytest.mark.parametrize("phase", ["before", "applied"])
def test_a_held_request_whose_client_vanishes_is_dropped_quietly(
    sendhub: SimulatorServer, client: httpx.Client, quiet: pytest.LogCaptureFixture, phase: str
) -> None:
    gate = sendhub.hold(1, phase=phase)
    sock = raw_post(sendhub, "/contacts/", json.dumps(contact("6501234567")).encode())
    assert gate.reached.wait(WAIT)
    sock.close()
    wait_until(lambda: sendhub.in_flight == 0, "the held request was let go")
    assert (gate.holding, gate.dropped) == (0, 1)
    assert sendhub.vanished_counts() == {"POST /v1/contacts": 1} and sendhub.request_log == []
    applied = sendhub.state.find("+16501234567") is not None
    assert applied is (phase == "applied"), "held before: never applied; held after: applied, never answered"
    gate.release()
    assert client.get("/contacts/").status_code == 200, "it keeps serving"


def test_a_new_gate_releases_the_previous_one_and_stop_releases_the_last(
    sendhub: SimulatorServer, client: httpx.Client, pool: ThreadPoolExecutor
) -> None:
    first = sendhub.hold(1)
    held = pool.submit(client.post, "/contacts/", json=contact("6501234567"))
    assert first.reached.wait(WAIT)
    last = sendhub.hold(1)
    assert held.result(timeout=WAIT).status_code == 201
    held = pool.submit(client.post, "/contacts/", json=contact("6501234568"))
    assert last.reached.wait(WAIT)
    sendhub.stop()  # without the release, shutdown would cancel the held request: a lost connection
    assert held.result(timeout=WAIT).status_code == 201


def test_gate_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        RequestGate(0)
    with pytest.raises(ValueError):
        RequestGate(1, phase="later")
    gate = RequestGate(2, endpoint="PUT /v1/contacts/{id}")
    assert [gate.admit(e) for e in ("GET /v1/contacts", "PUT /v1/contacts/{id}", "POST /v1/contacts",
                                    "PUT /v1/contacts/{id}", "GET /v1/contacts")] == [
        (None, False), (None, False), (None, False), ("request", True), ("request", False)]
    gate.release()
    assert gate.admit("PUT /v1/contacts/{id}") == (None, False)
