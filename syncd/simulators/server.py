"""Serving a simulator over real HTTP: in a background thread for tests, or in the foreground.

Each simulator module (``syncd.simulators.sendhub``, ``syncd.simulators.smsend``) exposes::

    build(*, contacts: int, groups: int, seed: int, faults: Faults,
          clock: Callable[[], float] | None) -> tuple[app, state, credentials]

and may expose ``FAULT_HOOKS`` (a :class:`~syncd.simulators.faults.FaultHooks`;
:class:`~syncd.simulators.faults.DefaultFaultHooks` otherwise). This module wraps
the app in :class:`~syncd.simulators.faults.FaultMiddleware` and serves it with
uvicorn (httptools, or h11 when it is missing; asyncio loop, no lifespan, no access log).

In tests::

    with start_simulator("sendhub", contacts=50, groups=3) as sim:
        httpx.get(f"{sim.base_url}/contacts/", params=sim.credentials)
        sim.faults.error_rate = 0.5          # takes effect on the next request
        sim.state.block("+16501234567")      # change data "at the provider"
        sim.request_counts()                 # {"GET /v1/contacts": 1}
        gate = sim.hold(3, phase="applied", endpoint="POST /v1/contacts")
        gate.reached.wait(5)                 # the 3rd create is applied, its answer held
        gate.release()                       # (or the client dies: the request is dropped quietly)

From a shell: ``python -m syncd.simulators.server sendhub --port 8000 --contacts 100``.
"""

from __future__ import annotations

import argparse
import contextlib
import asyncio
import importlib
import importlib.util
import secrets
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import uvicorn

from syncd.simulators.faults import DefaultFaultHooks, FaultMiddleware, Faults, RequestGate, install_log_filter

__all__ = ["BASE_PATHS", "KINDS", "SimulatorServer", "main", "serve_forever", "start_simulator"]

KINDS = ("smsend", "sendhub")
BASE_PATHS = {"sendhub": "/v1", "smsend": "/API/v1.0/REST"}
# httptools (C parser) needs about half h11's CPU per request; h11 is the pure-Python fallback.
HTTP_IMPLEMENTATION = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
_TICK = 0.01  # seconds between uvicorn's exit checks: stop() returns in about this long
_SHUTDOWN_GRACE = 2.0  # seconds in-flight requests get to finish on stop()


class _QuickServer(uvicorn.Server):
    """uvicorn with a short exit-check tick and a shutdown that does not sleep 0.1 s for nothing.

    Signals are handled by :meth:`SimulatorServer.serve`, not here: uvicorn's own
    handling re-raises the signal after shutdown, which would kill the process.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            await asyncio.sleep(_TICK)
            # on_tick refreshes the Date header when counter % 10 == 0: every 0.1 s here.
            counter = (counter + 1) % 864_000

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SHUTDOWN_GRACE
        while self.server_state.tasks and loop.time() < deadline:
            await asyncio.sleep(0.005)
        for task in self.server_state.tasks:
            task.cancel()
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()
        for sock in sockets or []:
            sock.close()


def _load_module(kind: str) -> Any:
    if kind not in KINDS:
        raise ValueError(f"unknown simulator {kind!r}; expected one of {', '.join(KINDS)}")
    return importlib.import_module(f"syncd.simulators.{kind}")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and without it every response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class SimulatorServer:
    """One simulator bound to a socket, its app wrapped in the fault layer.

    Attributes:
        kind: ``"smsend"`` or ``"sendhub"``.
        host, port: where it listens (port chosen by the OS when 0 was asked).
        base_url: the provider base URL, e.g. ``http://127.0.0.1:PORT/v1``.
        state: the simulator's in-memory account; tests read and change it directly.
        faults: the live :class:`Faults`; changes apply to the next request.
        credentials: keys named like ``syncd.config.ProviderSettings`` fields.
        admin_token: the ``X-Admin-Token`` of the ``/_admin/...`` interface.
        middleware: the :class:`FaultMiddleware` (request log in ``middleware.recorder``).
    """

    def __init__(
        self,
        kind: str,
        *,
        contacts: int = 0,
        groups: int = 0,
        seed: int = 0,
        port: int = 0,
        host: str = "127.0.0.1",
        faults: Faults | None = None,
        clock: Callable[[], float] | None = None,
        admin_token: str | None = None,
    ) -> None:
        module = _load_module(kind)
        self.kind = kind
        self.faults = faults if faults is not None else Faults(seed=seed)
        app, self.state, self.credentials = module.build(
            contacts=contacts, groups=groups, seed=seed, faults=self.faults, clock=clock
        )
        self.admin_token = admin_token or secrets.token_urlsafe(16)
        hooks = getattr(module, "FAULT_HOOKS", None) or DefaultFaultHooks()
        self.middleware = FaultMiddleware(
            app, faults=self.faults, hooks=hooks, state=self.state, admin_token=self.admin_token
        )
        self._socket = _bind(host, port)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._server: _QuickServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT`` (the admin interface lives under it)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.root_url + BASE_PATHS[self.kind]

    def request_counts(self) -> dict[str, int]:
        """Requests seen per endpoint, ``{"GET /v1/contacts": 3, ...}`` (admin requests excluded)."""
        return dict(self.middleware.recorder.counts)

    @property
    def request_log(self) -> list[tuple[str, str, int | None]]:
        """``(method, path, status)`` of recent requests, oldest first; status None = dropped."""
        return list(self.middleware.recorder.log)

    def vanished_counts(self) -> dict[str, int]:
        """Requests per endpoint whose client vanished before any answer (not in the counts or the log)."""
        return dict(self.middleware.recorder.vanished)

    def reset_counts(self) -> None:
        self.middleware.recorder.reset()

    def hold(self, nth: int, *, phase: str = "before", endpoint: str | None = None) -> RequestGate:
        """Hold requests from the ``nth`` matching one on (see :class:`RequestGate`); a test hook.

        The new gate replaces the previous one, which is released first.
        """
        gate = RequestGate(nth, phase=phase, endpoint=endpoint)
        previous, self.middleware.gate = self.middleware.gate, gate
        if previous is not None:
            previous.release()
        return gate

    @property
    def in_flight(self) -> int:
        """Requests being handled right now (held ones included, admin ones excluded)."""
        return self.middleware.in_flight

    def _config(self) -> uvicorn.Config:
        install_log_filter()
        return uvicorn.Config(
            self.middleware,
            loop="asyncio",
            http=HTTP_IMPLEMENTATION,
            lifespan="off",
            log_level="warning",
            log_config=None,  # do not dictConfig the process's logging on every start
            access_log=False,
            timeout_keep_alive=30,
        )

    def start(self) -> SimulatorServer:
        """Serve in a daemon thread; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._server = _QuickServer(self._config())
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name=f"sim-{self.kind}", daemon=True
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.kind} simulator failed to start")
            threading.Event().wait(0.002)
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; idempotent. Held requests are released first."""
        if self.middleware.gate is not None:
            self.middleware.gate.release()  # else shutdown would wait out its grace, then cancel them
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None
        self._socket.close()

    def serve(self) -> None:
        """Serve in this (main) thread until SIGINT/SIGTERM, then return."""
        server = self._server = _QuickServer(self._config())

        def request_exit(signum: int, frame: object) -> None:
            server.should_exit = True

        previous = {sig: signal.signal(sig, request_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            server.run(sockets=[self._socket])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._socket.close()

    def __enter__(self) -> SimulatorServer:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def start_simulator(
    kind: str,
    *,
    contacts: int = 0,
    groups: int = 0,
    seed: int = 0,
    port: int = 0,
    host: str = "127.0.0.1",
    faults: Faults | None = None,
    clock: Callable[[], float] | None = None,
) -> SimulatorServer:
    """Build and start a simulator in a background thread (use it as a context manager to stop it)."""
    server = SimulatorServer(
        kind, contacts=contacts, groups=groups, seed=seed, port=port, host=host, faults=faults, clock=clock
    )
    return server.start()


def describe(server: SimulatorServer) -> str:
    """What ``serve_forever`` prints: one ``key: value`` per line, easy to read and to parse."""
    lines = [f"syncd {server.kind} simulator", f"base_url: {server.base_url}"]
    lines += [f"{key}: {value}" for key, value in server.credentials.items()]
    lines.append(f"admin_token: {server.admin_token}")
    lines.append(f"admin_url: {server.root_url}/_admin/  (header X-Admin-Token)")
    return "\n".join(lines)


def serve_forever(
    kind: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    contacts: int = 0,
    groups: int = 0,
    seed: int = 0,
    faults: Faults | None = None,
) -> None:
    """Serve one simulator in the foreground until SIGINT/SIGTERM.

    Prints its base URL, credentials and admin token first (see :func:`describe`).
    """
    server = SimulatorServer(
        kind, contacts=contacts, groups=groups, seed=seed, port=port, host=host, faults=faults
    )
    print(describe(server), flush=True)
    server.serve()


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m syncd.simulators.server", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--contacts", type=int, default=0)
    parser.add_argument("--groups", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every response")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--throttle-rate", type=float, default=0.0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    faults = Faults(
        latency=args.latency, error_rate=args.error_rate, throttle_rate=args.throttle_rate, seed=args.seed
    )
    serve_forever(
        args.kind,
        host=args.host,
        port=args.port,
        contacts=args.contacts,
        groups=args.groups,
        seed=args.seed,
        faults=faults,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
