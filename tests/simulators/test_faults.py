"""The shared fault layer, the admin interface and the server helper, exercised through the SendHub simulator."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from syncd.simulators.faults import DefaultFaultHooks, FaultMiddleware, Faults, format_time_left
from syncd.simulators.sendhub import build
from syncd.simulators.server import SimulatorServer, start_simulator

# -- the Faults object ---------------------------------------------------------------------


def test_same_seed_draws_the_same_faults() -> None:
    def sequence(seed: int) -> list[tuple[str | None, bool, bool]]:
        faults = Faults(error_rate=0.3, throttle_rate=0.2, drop_rate=0.3, malformed_rate=0.3, seed=seed)
        return [(d.respond, d.drop, d.malformed) for d in (faults.draw("POST") for _ in range(200))]

    assert sequence(5) == sequence(5)
    assert sequence(5) != sequence(6)
    kinds = {respond for respond, _, _ in sequence(5)}
    assert {"throttle", "error500", "error503", None} <= kinds


def test_setting_the_seed_restarts_the_sequence() -> None:
    faults = Faults(error_rate=0.5, seed=1)
    first = [faults.draw("GET").respond for _ in range(20)]
    faults.seed = 1
    assert [faults.draw("GET").respond for _ in range(20)] == first


def test_drop_applies_to_writes_only_and_counts_down() -> None:
    faults = Faults(drop_next=1)
    assert not faults.draw("GET").drop and faults.drop_next == 1
    assert faults.draw("DELETE").drop and faults.drop_next == 0
    assert not faults.draw("POST").drop


def test_latency_range_is_drawn_within_bounds() -> None:
    faults = Faults(latency=(0.01, 0.02))
    assert all(0.01 <= faults.draw("GET").latency <= 0.02 for _ in range(50))


def test_update_checks_every_key_before_changing_anything() -> None:
    faults = Faults()
    faults.update({"error_rate": 0.5, "latency": [0.1, 0.2], "failing_pages": [2, 3], "quota_exhausted": True})
    assert (faults.error_rate, faults.latency, faults.failing_pages) == (0.5, (0.1, 0.2), {2, 3})
    for bad in ({"error_rate": 2}, {"nope": 1}, {"drop_next": -1}, {"latency": [3, 1]}, {"quota_exhausted": 1}):
        with pytest.raises(ValueError):
            faults.update({"throttle_rate": 0.9, **bad})
        assert faults.throttle_rate == 0.0
    assert json.loads(json.dumps(faults.to_dict()))["latency"] == [0.1, 0.2]


@pytest.mark.parametrize(("seconds", "text"), [(1, "0:00:01"), (0.2, "0:00:01"), (30, "0:00:30"), (3661, "1:01:01")])
def test_time_left_is_h_mm_ss_rounded_up(seconds: float, text: str) -> None:
    assert format_time_left(seconds) == text


# -- each fault over HTTP ------------------------------------------------------------------------


def test_latency_delays_every_response(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.faults.latency = 0.15
    started = time.perf_counter()
    assert client.get("/contacts/").status_code == 200
    assert time.perf_counter() - started >= 0.15


def test_error_rate_answers_5xx_without_touching_state(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.faults.error_rate = 1.0
    statuses = {client.post("/contacts/", json={"name": "A", "number": f"650123456{n}"}).status_code for n in range(10)}
    assert statuses <= {500, 503} and statuses
    assert sendhub.state.contacts == {}
    response = client.get("/contacts/")
    assert {"error", "message"} <= set(response.json())


def test_partial_error_rate_fails_some_requests(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.faults.update({"error_rate": 0.5, "seed": 3})
    statuses = [client.get("/contacts/").status_code for _ in range(30)]
    assert 0 < statuses.count(200) < 30


def test_throttle_answers_sendhubs_429_with_time_left(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.faults.throttle_rate = 1.0
    sendhub.faults.throttle_wait = 1
    response = client.get("/contacts/")
    assert response.status_code == 429
    assert response.json() == {
        "message": "You have sent too many requests.", "code": "429", "error": "Too Many Requests",
        "devMessage": "", "moreInfo": "", "timeLeft": "0:00:01",
    }  # fmt: skip


def test_quota_exhausted_answers_420(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.faults.quota_exhausted = True
    response = client.post("/contacts/", json={"name": "A", "number": "6501234567"})
    assert response.status_code == 420
    assert response.json() == {"error": "You have made too many requests and are being rate limited"}
    assert sendhub.state.contacts == {}


def test_failing_page_always_answers_500(sendhub: SimulatorServer, client: httpx.Client) -> None:
    for n in range(30):
        sendhub.state.add_contact("A", f"65012345{n:02d}")
    sendhub.faults.failing_pages = {2}
    assert client.get("/contacts/", params={"limit": 10}).status_code == 200
    assert [client.get("/contacts/", params={"limit": 10, "offset": 10}).status_code for _ in range(3)] == [500] * 3
    assert client.get("/contacts/", params={"limit": 10, "offset": 20}).status_code == 200


def test_dropped_write_is_applied_but_the_client_sees_a_lost_connection(
    sendhub: SimulatorServer, client: httpx.Client
) -> None:
    sendhub.faults.drop_next = 1
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.post("/contacts/", json={"name": "A", "number": "6501234567"})
    assert sendhub.state.find("+16501234567") is not None, "the write happened"
    again = client.post("/contacts/", json={"name": "A", "number": "6501234567"})
    assert again.status_code == 400, "the re-sent create meets the duplicate rule"
    assert sendhub.request_log[0] == ("POST", "/v1/contacts/", None)


def test_drop_rate_leaves_reads_alone(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.faults.drop_rate = 1.0
    assert client.get("/contacts/").status_code == 200


def test_malformed_body_keeps_the_status_and_truncates_json(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.faults.malformed_next = 1
    response = client.post("/contacts/", json={"name": "A", "number": "6501234567"})
    assert response.status_code == 201
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert client.get("/contacts/").json()["meta"]["total_count"] == 1


def test_rejected_credentials_answer_401(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.faults.reject_credentials = True
    response = client.get("/contacts/")
    assert (response.status_code, response.content) == (401, b"")


def test_faults_given_at_start_apply() -> None:
    with start_simulator("sendhub", faults=Faults(quota_exhausted=True)) as sim:
        assert httpx.get(f"{sim.base_url}/contacts/", params=sim.credentials).status_code == 420


# -- counting -------------------------------------------------------------------------------------------


def test_requests_are_counted_per_endpoint(sendhub: SimulatorServer, client: httpx.Client) -> None:
    contact_id = client.post("/contacts/", json={"name": "A", "number": "6501234567"}).json()["id"]
    client.get(f"/contacts/{contact_id}/")
    client.get(f"/contacts/{contact_id}")
    sendhub.faults.error_rate = 1.0
    client.get("/groups/")
    assert sendhub.request_counts() == {
        "POST /v1/contacts": 1, "GET /v1/contacts/{id}": 2, "GET /v1/groups": 1,
    }  # fmt: skip
    assert sendhub.request_log[-1][0:2] == ("GET", "/v1/groups/")
    sendhub.reset_counts()
    assert sendhub.request_counts() == {} and sendhub.request_log == []


# -- admin interface ------------------------------------------------------------------------------------


@pytest.fixture
def admin(sendhub: SimulatorServer, transport: httpx.HTTPTransport) -> httpx.Client:
    headers = {"X-Admin-Token": sendhub.admin_token}
    return httpx.Client(base_url=f"{sendhub.root_url}/_admin", headers=headers, transport=transport)


def test_admin_needs_the_token(sendhub: SimulatorServer, http: httpx.Client) -> None:
    assert http.get(f"{sendhub.root_url}/_admin/faults").status_code == 401
    assert http.get(f"{sendhub.root_url}/_admin/state", headers={"X-Admin-Token": "wrong"}).status_code == 401
    assert sendhub.request_counts() == {}, "admin requests are not counted"


def test_admin_reads_and_sets_faults(sendhub: SimulatorServer, admin: httpx.Client, client: httpx.Client) -> None:
    assert admin.get("/faults").json()["error_rate"] == 0.0
    response = admin.put("/faults", json={"quota_exhausted": True, "failing_pages": [3]})
    assert response.status_code == 200 and response.json()["failing_pages"] == [3]
    assert sendhub.faults.quota_exhausted and sendhub.faults.failing_pages == {3}
    assert client.get("/contacts/").status_code == 420
    assert admin.get("/faults").status_code == 200, "admin requests are not faulted"
    bad = admin.put("/faults", json={"error_rate": "lots"})
    assert bad.status_code == 400 and "error_rate" in bad.json()["error"]


def test_admin_reads_state_and_requests(sendhub: SimulatorServer, admin: httpx.Client, client: httpx.Client) -> None:
    client.post("/contacts/", json={"name": "A", "number": "6501234567"})
    state = admin.get("/state").json()
    assert [c["number"] for c in state["contacts"]] == ["+16501234567"]
    requests = admin.get("/requests").json()
    assert requests["counts"] == {"POST /v1/contacts": 1}
    assert requests["log"] == [["POST", "/v1/contacts/", 201]]
    assert admin.delete("/requests").status_code == 204
    assert admin.get("/requests").json() == {"counts": {}, "log": []}


def test_admin_action_blocks_a_contact(sendhub: SimulatorServer, admin: httpx.Client, client: httpx.Client) -> None:
    contact = sendhub.state.add_contact("A", "6501234567")
    assert admin.post("/actions/block", json={"number": "+16501234567"}).json() == {"result": contact.id}
    assert client.get(f"/contacts/{contact.id}/").json()["blocked"] is True
    assert admin.post("/actions/nope", json={}).status_code == 404


# -- the server helper ----------------------------------------------------------------------------------


def test_start_and_stop_are_quick_and_release_the_port() -> None:
    started = time.perf_counter()
    sim = start_simulator("sendhub")
    sim.stop()
    assert time.perf_counter() - started < 1.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.base_url}/contacts/", params=sim.credentials)


def test_base_url_and_credentials_keys() -> None:
    with start_simulator("sendhub") as sim:
        assert sim.base_url == f"http://127.0.0.1:{sim.port}/v1"
        assert set(sim.credentials) == {"username", "api_key"}


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError):
        start_simulator("twilio")


def test_serve_forever_prints_url_credentials_and_token_and_stops_on_sigterm() -> None:
    command = [sys.executable, "-m", "syncd.simulators.server", "sendhub", "--contacts", "3"]
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as process:
        assert process.stdout is not None
        info = dict(process.stdout.readline().rstrip("\n").partition(": ")[::2] for _ in range(6))
        try:
            params = {"username": info["username"], "api_key": info["api_key"]}
            assert httpx.get(f"{info['base_url']}/contacts/", params=params).json()["meta"]["total_count"] == 3
            assert info["admin_token"]
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0


def test_drop_works_under_h11_too(monkeypatch: pytest.MonkeyPatch, transport: httpx.HTTPTransport) -> None:
    monkeypatch.setattr("syncd.simulators.server.HTTP_IMPLEMENTATION", "h11")
    with start_simulator("sendhub", faults=Faults(drop_next=1)) as sim:
        client = httpx.Client(base_url=sim.base_url, params=sim.credentials, transport=transport)
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.post("/contacts/", json={"name": "A", "number": "6501234567"})
        assert sim.state.find("6501234567") is not None
        assert client.get("/contacts/").status_code == 200


def test_drop_without_a_transport_promises_more_body_than_it_sends() -> None:
    """Under a server whose ``send`` does not expose the transport, the drop is an unfinished body."""
    app, state, credentials = build()
    faults = Faults(drop_next=1)
    middleware = FaultMiddleware(app, faults=faults, hooks=DefaultFaultHooks(), state=state, admin_token="t")
    query = f"username={credentials['username']}&api_key={credentials['api_key']}".encode()
    scope = {
        "type": "http", "method": "POST", "path": "/v1/groups/", "raw_path": b"/v1/groups/", "query_string": query,
        "headers": [(b"content-type", b"application/json")], "http_version": "1.1", "scheme": "http",
        "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": "",
    }  # fmt: skip
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b'{"name": "Staff"}', "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    assert len(state.groups) == 1, "the write happened"
    declared = int(dict(sent[0]["headers"])[b"content-length"])
    assert declared > len(sent[1]["body"]) and sent[1]["more_body"] is True
