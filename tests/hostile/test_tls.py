"""TLS (issue 7): certificate verification is on for every provider connection, and off only out loud.

A simulator served over HTTPS with a self-signed certificate (made with
``openssl``) stands in for a man in the middle: a client with default settings
refuses it with a :class:`~syncd.errors.TlsError` naming the host, at once and
without retrying; ``tls_verify = false`` connects, and the CLI warns about it
on every start.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from syncd.cli import cli
from syncd.config import ProviderSettings, Secret, load_config
from syncd.errors import AuthError, TlsError, TransientError
from syncd.providers import build_provider
from syncd.providers.http import RetryPolicy
from syncd.simulators import Faults, start_simulator
from syncd.simulators import sendhub as sendhub_simulator
from syncd.simulators import smsend as smsend_simulator
from syncd.simulators.server import BASE_PATHS

#: Patient enough that a retried TLS failure would show up as several requests.
RETRY = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.05, budget=5.0)
_SECRETS = frozenset({"password", "access_token", "session_key", "api_key"})


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed: no self-signed certificate to serve (and `cryptography` is absent)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a self-signed certificate: {made.stderr.strip()[-300:]}")
    return cert, key


@dataclass
class HttpsSimulator:
    kind: str
    base_url: str
    credentials: dict[str, str]
    state: Any


@contextlib.contextmanager
def _https(kind: str, certificate: tuple[Path, Path]) -> Iterator[HttpsSimulator]:
    """A simulator (3 groups, and 3 contacts at SendHub) served over HTTPS with the self-signed certificate."""
    module = sendhub_simulator if kind == "sendhub" else smsend_simulator
    app, state, credentials = module.build(contacts=3 if kind == "sendhub" else 0, groups=3, seed=5, faults=None,
                                           clock=None)
    with _TlsServer(app, *certificate) as port:
        yield HttpsSimulator(kind, f"https://127.0.0.1:{port}{BASE_PATHS[kind]}", credentials, state)


@pytest.fixture(scope="module", params=["sendhub", "smsend"])
def https_simulator(request: pytest.FixtureRequest, certificate: tuple[Path, Path]) -> Iterator[HttpsSimulator]:
    with _https(request.param, certificate) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def https_sendhub(certificate: tuple[Path, Path]) -> Iterator[HttpsSimulator]:
    with _https("sendhub", certificate) as simulator:
        yield simulator


class _TlsServer:
    """uvicorn with ``ssl_certfile``/``ssl_keyfile`` in a thread, on a port the OS picks."""

    def __init__(self, app: Any, cert: Path, key: Path) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        config = uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key), loop="asyncio", lifespan="off",
                                log_level="warning", log_config=None, access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the HTTPS simulator did not start"
            time.sleep(0.005)
        return self.socket.getsockname()[1]

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


def settings_for(sim: HttpsSimulator, **overrides: Any) -> ProviderSettings:
    credentials = {k: Secret(v) if k in _SECRETS else v for k, v in sim.credentials.items()}
    if sim.kind == "smsend":
        credentials.pop("username", None)
        credentials.pop("password", None)
    values: dict[str, Any] = dict(name=f"tls-{sim.kind}", type=sim.kind, base_url=sim.base_url,
                                  requests_per_second=1000, timeout_seconds=5)
    return ProviderSettings(**(values | credentials | overrides))


async def _list_groups(settings: ProviderSettings) -> tuple[list[Any], Any, BaseException | None]:
    provider = build_provider(settings, default_region="US", retry=RETRY)
    groups: list[Any] = []
    try:
        async for page in provider.groups():
            groups.extend(page)
    except Exception as exc:  # the property under test: what escapes
        return groups, provider.stats, exc
    finally:
        await provider.aclose()
    return groups, provider.stats, None


def test_default_settings_refuse_a_self_signed_server_at_once(https_simulator: HttpsSimulator) -> None:
    settings = settings_for(https_simulator)
    assert settings.tls_verify is True  # the default, not set here
    groups, stats, error = asyncio.run(_list_groups(settings))
    assert groups == []
    assert isinstance(error, TlsError), f"{type(error).__name__}: {error}"
    assert isinstance(error, AuthError) and not isinstance(error, TransientError)  # the account, this run
    message = str(error)
    assert "TLS certificate verification failed for 127.0.0.1" in message and "self-signed" in message
    assert message.startswith(f"tls-{https_simulator.kind}: list groups")
    assert (stats.requests, stats.retries) == (1, 0)  # a certificate does not heal with retries


def test_tls_verify_false_connects_to_the_same_server(https_simulator: HttpsSimulator) -> None:
    groups, stats, error = asyncio.run(_list_groups(settings_for(https_simulator, tls_verify=False)))
    assert error is None, error
    assert len(groups) == 3 and stats.retries == 0


def _write_config(tmp_path: Path, base_url: str, api_key: str, tls_line: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"""
[database]
url = "sqlite:///{tmp_path / 'syncd.db'}"
[sync]
default_region = "US"
[[providers]]
name = "hub"
type = "sendhub"
base_url = "{base_url}"
username = "someone"
api_key = "{api_key}"
{tls_line}
""", encoding="utf-8")
    return path


def test_tls_verify_is_on_unless_the_config_says_false(tmp_path: Path) -> None:
    on = load_config(_write_config(tmp_path, "https://hub.example/v1", "k", ""), environ={})
    assert on.providers[0].tls_verify is True and on.warnings == ()
    off = load_config(_write_config(tmp_path, "https://hub.example/v1", "k", "tls_verify = false"), environ={})
    assert off.providers[0].tls_verify is False
    assert [w for w in off.warnings if "TLS verification is off" in w and '"hub"' in w] == list(off.warnings)


def test_the_cli_warns_at_every_start_while_tls_verify_is_false(tmp_path: Path) -> None:
    runner = CliRunner()
    off = str(_write_config(tmp_path, "https://hub.example/v1", "k", "tls_verify = false"))
    for _ in range(2):  # every start, not once
        result = runner.invoke(cli, ["--config", off, "status"])
        assert result.exit_code == 0, result.output
        assert "warning:" in result.stderr and "TLS verification is off for provider \"hub\"" in result.stderr
    on = str(_write_config(tmp_path, "https://hub.example/v1", "k", "tls_verify = true"))
    result = runner.invoke(cli, ["--config", on, "status"])
    assert result.exit_code == 0 and "TLS" not in result.stderr


def test_a_sync_against_the_self_signed_server_fails_naming_tls(tmp_path: Path, https_sendhub: HttpsSimulator):
    config = str(_write_config(tmp_path, https_sendhub.base_url, https_sendhub.credentials["api_key"], ""))
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", config, "db", "upgrade"]).exit_code == 0
    result = runner.invoke(cli, ["--config", config, "sync"])
    assert result.exit_code == 1, result.output
    shown = result.output + result.stderr
    assert "TLS certificate verification failed for 127.0.0.1" in shown
    assert https_sendhub.credentials["api_key"] not in shown
    assert len(https_sendhub.state.snapshot()["contacts"]) == 3


def test_https_to_a_plain_http_port_is_a_transient_error_that_says_tls() -> None:
    """Not a certificate problem (maybe a proxy restarting): retried within the budget, named, never raw httpx."""
    with start_simulator("sendhub", faults=Faults()) as plain:
        https = HttpsSimulator("sendhub", plain.base_url.replace("http://", "https://"), plain.credentials, plain.state)
        groups, stats, error = asyncio.run(_list_groups(settings_for(https)))
    assert isinstance(error, TransientError) and not isinstance(error, TlsError), f"{type(error).__name__}: {error}"
    assert "TLS handshake with 127.0.0.1 failed" in str(error)
    assert stats.requests == RETRY.attempts and groups == []
