"""No configured secret ever reaches a log, the database, the CLI or an error text (issue 7, design §5).

One scenario over real HTTP against the simulators: a full sync with debug
logging everywhere (structlog as JSON and as console lines, plus the stdlib
``httpx``/``httpcore`` loggers at DEBUG), a smsend account that logs in with a
password full of characters URL encoding changes, auth failures (credentials
refused, a wrong password, providers whose error bodies echo the credentials
and the request URL back), a transport error whose message carries the full
request URL, and a crash: an unexpected exception carrying that URL, rendered
as the daemon renders it. Then every log line, every row of every table, the
output of ``syncd status`` and ``syncd log`` (table and JSON) and every
exception text is searched for each secret, as written and URL-encoded.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote, quote_plus

import click
import httpx
import pytest
import structlog
from click.testing import CliRunner
from sqlalchemy import select

from syncd.cli.views import show_log, show_status
from syncd.config import ProviderSettings, Secret
from syncd.db.models import Base
from syncd.errors import AuthError, ProviderError
from syncd.logs import configure_logging
from syncd.providers import build_provider
from syncd.simulators import Faults, SimulatorServer, start_simulator
from syncd.sync.run import RunReport, run_once
from tests.e2e.conftest import FAST_RETRY, World
from tests.hostile.conftest import TRIED

CATEGORY = "secrets (spelling x place searched)"

#: A password that URL encoding turns into something else entirely.
LOGIN_PASSWORD = "p@ss w0rd/+&=?#%é"
WRONG_PASSWORD = "Wr0ng p@ss/+&=%ü"


def spellings(secret: str) -> set[str]:
    """The ways a secret can be written down: as is, and URL-encoded (query or path style)."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}


@dataclass
class Tap(httpx.AsyncBaseTransport):
    """Real HTTP, with faults a test chooses per request and the session keys a login hands out."""

    fault: Callable[[httpx.Request], httpx.Response | BaseException | None] = lambda request: None
    session_keys: list[str] = field(default_factory=list)
    inner: httpx.AsyncHTTPTransport = field(default_factory=httpx.AsyncHTTPTransport)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        injected = self.fault(request)
        if isinstance(injected, BaseException):
            raise injected
        if injected is not None:
            return injected
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        if request.url.path.endswith("/login") and response.status_code == 200:
            self.session_keys.extend(body.decode().split(";")[1:])
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class Capture:
    """Everything the scenario wrote that a person or a log collector could read."""

    structlog_stream: io.StringIO = field(default_factory=io.StringIO)
    stdlib_stream: io.StringIO = field(default_factory=io.StringIO)
    texts: dict[str, str] = field(default_factory=dict)

    def add(self, label: str, value: Any) -> None:
        self.texts[label] = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)

    def everything(self) -> dict[str, str]:
        return {"structlog": self.structlog_stream.getvalue(), "stdlib logging": self.stdlib_stream.getvalue(),
                **self.texts}


@pytest.fixture
def capture() -> Iterator[Capture]:
    """Debug logging into buffers; the previous logging set-up restored afterwards."""
    cap = Capture()
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield cap
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])
    structlog.reset_defaults()


def log_everything(cap: Capture, secrets: list[str], fmt: str = "json") -> None:
    configure_logging("debug", fmt, secrets, stream=cap.structlog_stream)
    handler = logging.StreamHandler(cap.stdlib_stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)


def sync(world: World, taps: dict[str, Tap], **kw: Any) -> RunReport:
    options = {p.name: {"retry": FAST_RETRY} | ({"transport": taps[p.name]} if p.name in taps else {})
               for p in world.config.providers}
    return asyncio.run(run_once(world.config, world.engine, client_options=options, **kw))


def cli_output(command: Callable[[], None]) -> str:
    result = CliRunner().invoke(click.command()(command))
    assert result.exit_code == 0, result.output
    return result.output


def every_table(world: World) -> dict[str, str]:
    with world.engine.connect() as conn:
        return {f"table {name}": "\n".join(json.dumps(list(row), default=str, ensure_ascii=False)
                                           for row in conn.execute(select(table)))
                for name, table in Base.metadata.tables.items()}


def formatted(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def echo_credentials(request: httpx.Request, status: int) -> httpx.Response:
    """A provider error page that quotes the request back: URL (query included) and headers."""
    headers = "; ".join(f"{k}: {v}" for k, v in request.headers.items())
    body = json.dumps({"error": f"invalid credentials for {request.url} ({headers})"})
    return httpx.Response(status, content=body.encode(), headers={"content-type": "application/json"})


@pytest.fixture
def login_smsend() -> Iterator[SimulatorServer]:
    """A second smsend account whose user logs in with username and password."""
    with start_simulator("smsend", faults=Faults()) as sim:
        sim.state.credentials["password"] = LOGIN_PASSWORD
        yield sim


def login_settings(sim: SimulatorServer, name: str, password: str) -> ProviderSettings:
    return ProviderSettings(name=name, type="smsend", base_url=sim.base_url, username=sim.credentials["username"],
                            password=Secret(password), requests_per_second=1000, max_concurrency=4,
                            timeout_seconds=5, batch_size=100)


def test_no_secret_in_logs_tables_cli_output_or_errors(world: World, login_smsend: SimulatorServer,
                                                      capture: Capture, monkeypatch: pytest.MonkeyPatch):
    world.config = replace(world.config, providers=(
        *world.config.providers, login_settings(login_smsend, "smsend-login", LOGIN_PASSWORD),
        login_settings(login_smsend, "smsend-wrong", WRONG_PASSWORD)))
    secrets = world.config.secrets()
    assert {world.sendhub.credentials["api_key"], world.smsend.credentials["access_token"], LOGIN_PASSWORD,
            WRONG_PASSWORD} <= set(secrets)
    log_everything(capture, secrets)
    taps = {name: Tap() for name in ("sendhub", "smsend", "smsend-login", "smsend-wrong")}

    # 1. A full sync with debug logging: contacts both ways, a login, a wrong password.
    world.sendhub.state.add_contact("Ann Lee", "+14155550123")
    world.sql("INSERT INTO contacts (phone, name) VALUES ('+16502530001', 'Bob')")
    report = sync(world, taps)
    by_name = {p.name: p for p in report.providers}
    assert by_name["sendhub"].status == by_name["smsend"].status == by_name["smsend-login"].status == "ok"
    assert by_name["smsend-wrong"].status == "failed" and "refused" in by_name["smsend-wrong"].error
    assert taps["smsend-login"].session_keys, "the login account never logged in"
    session_keys = list(taps["smsend-login"].session_keys)
    capture.add("run 1 report", [p.summary() for p in report.providers])

    # 2. Credentials refused, and providers that echo the credentials back in their error bodies.
    world.sendhub.faults.reject_credentials = True
    taps = {"smsend": Tap(fault=lambda r: echo_credentials(r, 401)),
            "smsend-login": Tap(fault=lambda r: echo_credentials(r, 404) if r.url.path.endswith("/login") else None)}
    login_smsend.state.expire_sessions()
    world.sql("INSERT INTO contacts (phone, name) VALUES ('+16502530002', 'Cy')")
    report = sync(world, taps)
    assert all(p.status == "failed" for p in report.providers), [p.summary() for p in report.providers]
    capture.add("run 2 report", [p.summary() for p in report.providers])
    world.sendhub.faults.reject_credentials = False
    taps = {"sendhub": Tap(fault=lambda r: echo_credentials(r, 401))}
    report = sync(world, taps)
    assert {p.name: p.status for p in report.providers}["sendhub"] == "failed"
    capture.add("run 3 report", [p.summary() for p in report.providers])

    # 3. A transport failure whose message carries the whole request URL (SendHub's has the key).
    taps = {"sendhub": Tap(fault=lambda r: httpx.RemoteProtocolError(f"server hung up on {r.url}", request=r))}
    report = sync(world, taps)
    capture.add("run 4 report", [p.summary() for p in report.providers])

    # The same failures raised straight from the clients, as a traceback would show them.
    sendhub = next(p for p in world.config.providers if p.name == "sendhub")
    hung_up = Tap(fault=lambda r: httpx.RemoteProtocolError(f"server hung up on {r.url}", request=r))
    capture.add("exception: transport", formatted(client_error(sendhub, hung_up)))
    for name, tap in (("sendhub", Tap(fault=lambda r: echo_credentials(r, 401))),
                      ("smsend", Tap(fault=lambda r: echo_credentials(r, 401))),
                      ("smsend-wrong", Tap()),
                      ("smsend-login", Tap(fault=lambda r: echo_credentials(r, 404)))):
        settings = next(p for p in world.config.providers if p.name == name)
        error = client_error(settings, tap)
        assert isinstance(error, AuthError), (name, error)
        capture.add(f"exception: auth {name}", formatted(error))

    # 4. A crash: an unexpected exception carrying the request URL (secrets in its query). The run
    # fails that provider and logs the traceback; the run's tables only name the exception type.
    def crash(request: httpx.Request) -> RuntimeError:
        return RuntimeError(f"unexpected state after {request.method} {request.url}")

    for name in ("sendhub", "smsend-login"):
        for fmt in ("json", "console"):
            log_everything(capture, secrets, fmt)
            report = sync(world, {name: Tap(fault=crash)})
            crashed = {p.name: p for p in report.providers}[name]
            assert crashed.status == "failed" and "RuntimeError" in crashed.error, crashed
            capture.add(f"report error: crash {name} {fmt}", crashed.error)

    # Then search everything a person or a collector could read.
    capture.add("syncd status", cli_output(lambda: show_status(world.engine, world.config)))
    capture.add("syncd log", cli_output(lambda: show_log(world.engine, provider=None, run_id=None, limit=1000,
                                                         as_json=False)))
    capture.add("syncd log --json", cli_output(lambda: show_log(world.engine, provider=None, run_id=None,
                                                                limit=1000, as_json=True)))
    capture.texts.update(every_table(world))
    texts = capture.everything()
    assert "pull.crashed" in texts["structlog"] and "unexpected state after" in texts["structlog"]  # rendered
    assert "HTTP Request" in texts["stdlib logging"] and "httpcore" in texts["stdlib logging"]  # DEBUG was on
    leaks = []
    for secret in [*secrets, *session_keys]:
        for spelling in spellings(secret):
            TRIED[CATEGORY].update(f"{spelling} in {label}" for label in texts)
            leaks += [f"{secret[:3]}… as {spelling[:3]}… in {label}" for label, value in texts.items() if spelling in value]
    assert not leaks


def client_error(settings: ProviderSettings, tap: Tap) -> ProviderError:
    """The error one listing raises through the real client with ``tap`` as its transport."""

    async def first_page() -> ProviderError:
        client = build_provider(settings, default_region="US", retry=FAST_RETRY, transport=tap)
        try:
            async for _ in client.groups():
                pass
        except ProviderError as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError(f"{settings.name}: no error raised")

    return asyncio.run(first_page())
