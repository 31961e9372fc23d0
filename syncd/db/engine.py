"""Engines and sessions for syncd's database: SQLite (embedded default) or PostgreSQL.

SQLite is set up for several processes sharing one file (the daemon, a
``syncd sync`` and a ``syncd status`` at once): WAL journal, foreign keys on,
a 30 s busy timeout, and real transactions. The standard library driver would
otherwise open transactions late and implicitly; here every SQLAlchemy
transaction emits its own ``BEGIN``, so DDL is transactional and savepoints
work. A connection may ask for ``BEGIN IMMEDIATE`` (take the write lock at
once, waiting up to the busy timeout) with the execution option
``sqlite_begin="IMMEDIATE"``: use it for read-then-write transactions, which
could otherwise fail with "database is locked" when another writer went first.

PostgreSQL goes through psycopg 3; ``postgresql://`` and ``postgres://`` URLs
are read as ``postgresql+psycopg://``.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "is_sqlite", "make_engine", "normalise_url", "session_factory"]

#: How long a SQLite writer waits for another process's write lock. Sync runs
#: keep transactions short; 30 s covers a slow disk without hanging forever.
SQLITE_BUSY_TIMEOUT_MS = 30_000

_SQLITE_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})


def normalise_url(url: str | URL) -> URL:
    """The URL syncd connects with: PostgreSQL always through psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite(engine_or_url: Engine | Connection | str | URL) -> bool:
    """Whether this engine, connection or URL is SQLite."""
    if isinstance(engine_or_url, Engine | Connection):
        return engine_or_url.dialect.name == "sqlite"
    return make_url(engine_or_url).get_backend_name() == "sqlite"


def make_engine(url: str | URL, **kw: Any) -> Engine:
    """An engine for ``url``, configured for syncd; ``kw`` goes to ``create_engine``.

    A SQLite file's parent directory is created if missing; its busy timeout is
    ``?timeout=SECONDS`` from the URL, else :data:`SQLITE_BUSY_TIMEOUT_MS`.
    """
    parsed = normalise_url(url)
    kw.setdefault("pool_pre_ping", True)
    # JSON columns (mirror fields, bases, the change log) through orjson: several times faster both ways.
    kw.setdefault("json_serializer", _json_text)
    kw.setdefault("json_deserializer", orjson.loads)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, **kw)
    _ensure_sqlite_directory(parsed)
    given = parsed.query.get("timeout")  # pysqlite's own URL parameter: honoured, not overridden
    connect_args = {"check_same_thread": False,
                    "timeout": float(given) if isinstance(given, str) else SQLITE_BUSY_TIMEOUT_MS / 1000}
    kw["connect_args"] = {**connect_args, **kw.get("connect_args", {})}
    engine = create_engine(parsed, **kw)
    busy_ms = round(float(kw["connect_args"]["timeout"]) * 1000)
    _install_sqlite_hooks(engine, in_memory=_sqlite_file(parsed) is None, busy_timeout_ms=busy_ms)
    return engine


def _json_text(value: Any) -> str:
    """JSON text of a column value (``default=str`` for the odd non-JSON value, as before)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions bound to ``engine``; objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def _sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL names, or None for an in-memory database."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or url.query.get("mode") == "memory":
        return None
    return Path(database)


def _ensure_sqlite_directory(url: URL) -> None:
    path = _sqlite_file(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


def _enable_wal(cursor: Any, attempts: int = 50) -> None:
    """Switch to WAL. The switch takes an exclusive lock without waiting on the busy
    handler, so two processes opening a brand-new file at once can see "database is
    locked": retry briefly (once in WAL, the mode sticks to the file and this is a no-op)."""
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _install_sqlite_hooks(engine: Engine, *, in_memory: bool, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
            if not in_memory:
                # Readers never block the writer, nor the writer readers.
                _enable_wal(cursor)
                # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives
                # the process being killed (crash safety is about that); only a power cut or an OS
                # crash may take the last transactions back, never corrupt the file.
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # AUTOCOMMIT (engine- or connection-level) means no transaction at all.
        # SQLAlchemy has no public accessor for the effective level; this private
        # one is what its own begin logic consults.
        if connection._is_autocommit_isolation():
            return
        mode = str(connection.get_execution_options().get("sqlite_begin", "DEFERRED")).upper()
        if mode not in _SQLITE_BEGIN_MODES:
            raise ValueError(f"sqlite_begin must be one of {sorted(_SQLITE_BEGIN_MODES)}, not {mode!r}")
        connection.exec_driver_sql(f"BEGIN {mode}")
