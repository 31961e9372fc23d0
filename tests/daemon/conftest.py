"""Fixtures for the daemon tests: simulators, config files, `syncd run` subprocesses, a fake $NOTIFY_SOCKET.

``DaemonProcess`` runs ``python -m syncd --config PATH run`` with JSON logs on
stderr (a file, read back as events) and, when given, a ``NotifyListener``'s
abstract socket as ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from syncd.db.engine import make_engine
from syncd.db.migrate import upgrade
from syncd.simulators import Faults, SimulatorServer, start_simulator

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


# -- simulators and configuration -------------------------------------------------------


@pytest.fixture
def smsend() -> Iterator[SimulatorServer]:
    with start_simulator("smsend", faults=Faults()) as sim:
        yield sim


@pytest.fixture
def sendhub() -> Iterator[SimulatorServer]:
    with start_simulator("sendhub", faults=Faults()) as sim:
        yield sim


def provider_toml(sim: SimulatorServer, name: str | None = None, **extra: Any) -> str:
    """A ``[[providers]]`` table for ``sim`` (smsend logs in with user_key + access_token)."""
    creds = sim.credentials
    keys = ("user_key", "access_token") if sim.kind == "smsend" else ("username", "api_key")
    values = {"name": name or sim.kind, "type": sim.kind, "base_url": sim.base_url,
              **{k: creds[k] for k in keys}, "requests_per_second": 1000, "timeout_seconds": 5, **extra}
    return "[[providers]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def write_config(path: Path, db_url: str, providers: list[str], *, interval: float = 1.0,
                 metrics: str | None = None, retention_days: int = 90, extra: str = "") -> Path:
    """A config file for the daemon: JSON logs at info, the given ``[[providers]]`` tables."""
    parts = [f"[database]\nurl = {json.dumps(db_url)}\n",
             f"[schedule]\ninterval_seconds = {interval}\n",
             f"[sync]\ndefault_region = \"US\"\nlog_retention_days = {retention_days}\n",
             "[logging]\nlevel = \"info\"\nformat = \"json\"\n"]
    if metrics:
        parts.append(f"[metrics]\nlisten = {json.dumps(metrics)}\n")
    path.write_text("\n".join(parts + providers) + extra)
    return path


def phone(i: int) -> str:
    """The i-th test number: valid North American numbers SendHub accepts."""
    return f"+1650253{i:04d}"


def seed_contacts(db_url: str, count: int) -> None:
    """Migrate the database and put ``count`` contacts in the canonical book."""
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO contacts (phone, name, surname) VALUES (:phone, :name, 'Test')"),
                         [{"phone": phone(i), "name": f"Person {i}"} for i in range(count)])
    finally:
        engine.dispose()


def sendhub_numbers(sim: SimulatorServer) -> Counter:
    return Counter(c["number"] for c in sim.state.snapshot()["contacts"])


def sql(db_url: str, statement: str, **params: Any) -> list[Any]:
    engine = make_engine(db_url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


# -- sd_notify ------------------------------------------------------------------------------


class NotifyListener:
    """A Unix datagram socket standing in for systemd's notification socket."""

    def __init__(self) -> None:
        self.address = f"@syncd-test-{uuid.uuid4().hex}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + self.address[1:])
        self._sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        return [line for _, message in list(self.messages) for line in message.splitlines()]

    def count(self, line: str) -> int:
        return sum(1 for seen in self.lines() if seen == line)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    yield listener
    listener.close()


# -- the daemon as a process --------------------------------------------------------------------


class DaemonProcess:
    """``syncd run`` in a subprocess; its JSON log lines are read back as events."""

    def __init__(self, config: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        environ = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "syncd", "--config", str(config), "run"],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log,
                                     env=environ | (env or {}))
        self.pid = self.proc.pid

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and (name is None or event.get("event") == name):
                found.append(event)
        return found

    def wait_for(self, name: str, timeout: float = 15, count: int = 1,
                 where: Callable[[dict[str, Any]], bool] = lambda e: True) -> list[dict[str, Any]]:
        def seen() -> list[dict[str, Any]] | None:
            if self.proc.poll() is not None:
                pytest.fail(f"syncd run exited ({self.proc.returncode}) before {name}:\n{self.log_path.read_text()}")
            events = [e for e in self.events(name) if where(e)]
            return events if len(events) >= count else None
        return wait_until(seen, timeout, f"{count} × {name} in {self.log_path.name}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    """Start ``syncd run`` processes (killed at the end if still running)."""
    started: list[DaemonProcess] = []

    def start(config: Path, *, notify: NotifyListener | None = None, watchdog_usec: int | None = None,
              name: str = "daemon") -> DaemonProcess:
        env = {}
        if notify is not None:
            env["NOTIFY_SOCKET"] = notify.address
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        daemon = DaemonProcess(config, tmp_path / f"{name}-{len(started)}.log", env)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()
