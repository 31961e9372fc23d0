"""Taking the database away from a running daemon, and giving it back (issue 10).

Every outage has ``url`` (what syncd is configured with), ``sql()`` (the
test's own access, which keeps working during the outage: the test changes
the canonical book meanwhile), ``down()``, ``up()`` and ``close()``.

``SqliteLock``
    The test takes SQLite's write lock (``BEGIN EXCLUSIVE`` on a connection of
    its own) and holds it: every syncd write waits out its busy timeout (made
    short through the URL's ``?timeout=``) and fails with "database is locked",
    as when another process holds the file. Works as root, unlike file modes.
    The test's own changes are in that transaction, committed by ``up()``.
``PrivateCluster``
    A PostgreSQL cluster of the test's own (``initdb``/``pg_ctl`` in a
    temporary directory, on a free port; run as the ``postgres`` user when the
    test runs as root, since PostgreSQL refuses root). ``down()`` is a fast
    shutdown, which terminates every connection, then a restart listening on
    its Unix socket only: syncd's TCP connections are refused while the test
    still reaches the book. ``up()`` restarts it listening on TCP again.
``PgProxy``
    Where no PostgreSQL binaries are installed: a TCP proxy between syncd and
    the shared server. ``down()`` stops listening (connections refused) and
    cuts every open connection; ``up()`` listens on the same port again.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


class Outage(Protocol):
    url: str

    def sql(self, statement: str, params: Params = None) -> list[Any]: ...
    def down(self) -> None: ...
    def up(self) -> None: ...
    def close(self) -> None: ...


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _SqlAlchemyAccess:
    """``sql()`` through a pool-less engine: every call a fresh connection, so a restart between calls is harmless."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url, poolclass=NullPool)

    def sql(self, statement: str, params: Params = None) -> list[Any]:
        with self._engine.begin() as conn:
            result = conn.execute(text(statement), params or {})  # type: ignore[arg-type]
            return [tuple(row) for row in result] if result.returns_rows else []

    def dispose(self) -> None:
        self._engine.dispose()


# -- SQLite ------------------------------------------------------------------------------


class SqliteLock:
    """SQLite made unusable for syncd by a write lock the test holds (see the module docstring)."""

    def __init__(self, path: Path, busy_timeout: float) -> None:
        self.path = path
        self.url = f"sqlite:///{path}?timeout={busy_timeout}"
        self._plain = _SqlAlchemyAccess(f"sqlite:///{path}")
        self._held: sqlite3.Connection | None = None

    def down(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA foreign_keys = ON")  # as syncd's own connections: deletes cascade alike
        conn.execute("BEGIN EXCLUSIVE")
        self._held = conn

    def up(self) -> None:
        if self._held is not None:
            self._held.execute("COMMIT")
            self._held.close()
            self._held = None

    def sql(self, statement: str, params: Params = None) -> list[Any]:
        if self._held is None:
            return self._plain.sql(statement, params)
        if isinstance(params, Sequence):
            self._held.executemany(statement, params)
            return []
        return self._held.execute(statement, dict(params or {})).fetchall()

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
        self._plain.dispose()


# -- PostgreSQL: a cluster of the test's own -----------------------------------------------------


def postgres_bindir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: the newest /usr/lib/postgresql/N/bin, else $PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0])
    for bindir in reversed(versions):
        if (bindir / "initdb").exists() and (bindir / "pg_ctl").exists():
            return bindir
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def unprivileged_prefix() -> tuple[list[str] | None, str]:
    """The command prefix that runs PostgreSQL's tools as a non-root user, or None and why not."""
    if os.geteuid() != 0:
        return [], "not root"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None, "running as root and there is no 'postgres' user to run initdb/postgres as"
    runuser = shutil.which("runuser")
    if runuser is None:
        return None, "running as root and runuser(1) is missing"
    return [runuser, "-u", "postgres", "--"], "as the postgres user"


class PrivateCluster:
    """A throwaway PostgreSQL cluster the test starts, stops and restarts (see the module docstring)."""

    def __init__(self, bindir: Path, prefix: list[str]) -> None:
        self.bindir, self.prefix = bindir, prefix
        # Not pytest's tmp_path: that is private to the test's user, and the server may run as postgres.
        self.base = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
        if prefix:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
        self.port = free_port()
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self._data, self._log = self.base / "data", self.base / "server.log"
        self._run(self.bindir / "initdb", "-D", str(self._data), "-A", "trust", "-U", "postgres", "-N",
                  "-E", "UTF8", "--locale=C")
        self._start(tcp=True)
        # The Unix socket in base: reachable during an "outage", when only TCP is closed.
        self._local = _SqlAlchemyAccess(f"postgresql+psycopg://postgres@/postgres?host={self.base}&port={self.port}")

    def sql(self, statement: str, params: Params = None) -> list[Any]:
        return self._local.sql(statement, params)

    def down(self) -> None:
        self._pg_ctl("-m", "fast", "stop")
        self._start(tcp=False)

    def up(self) -> None:
        self._pg_ctl("-m", "fast", "stop")
        self._start(tcp=True)

    def close(self) -> None:
        self._local.dispose()
        try:
            self._pg_ctl("-m", "immediate", "stop")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pass  # not running
        shutil.rmtree(self.base, ignore_errors=True)

    def _start(self, *, tcp: bool) -> None:
        listen = "127.0.0.1" if tcp else "''"
        # fsync off: a throwaway cluster, and the machine is shared.
        self._pg_ctl("-o", f"-p {self.port} -k {self.base} -c listen_addresses={listen} -c fsync=off "
                           "-c synchronous_commit=off -c full_page_writes=off", "start")

    def _pg_ctl(self, *args: str) -> None:
        self._run(self.bindir / "pg_ctl", "-D", str(self._data), "-l", str(self._log), "-w", "-t", "60", *args)

    def _run(self, *command: str | Path) -> None:
        try:
            subprocess.run([*self.prefix, *map(str, command)], check=True, capture_output=True, text=True,
                           cwd=self.base, timeout=90)
        except subprocess.CalledProcessError as exc:
            log = self._log.read_text()[-2000:] if self._log.exists() else ""
            raise RuntimeError(f"{Path(command[0]).name} failed ({exc.returncode}): {exc.stderr}\n{log}") from None


# -- PostgreSQL: a proxy in front of the shared server ----------------------------------------------


class PgProxy:
    """A TCP proxy to the server of ``target_url`` that the test can make refuse and cut connections."""

    def __init__(self, target_url: str) -> None:
        target = make_url(target_url)
        self._target = (target.host or "127.0.0.1", target.port or 5432)
        self._direct = _SqlAlchemyAccess(target_url)
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open = threading.Event()
        self.port = free_port()
        self.url = target.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)
        self.up()

    def sql(self, statement: str, params: Params = None) -> list[Any]:
        return self._direct.sql(statement, params)

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))  # SO_REUSEADDR: the same port again
        self._listener.settimeout(0.05)  # accept() wakes up to notice down()
        self._open.set()
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        self._open.clear()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            cut, self._sockets = self._sockets, set()
        for sock in cut:
            _hang_up(sock)

    def close(self) -> None:
        self.down()
        self._direct.dispose()

    def _accept(self, listener: socket.socket) -> None:
        while self._open.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self._target, timeout=10)
            except OSError:
                _hang_up(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets -= {source, sink}
            _hang_up(source)
            _hang_up(sink)


def _hang_up(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
