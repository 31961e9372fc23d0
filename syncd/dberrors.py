"""Telling a database outage from a bug, and saying it in one line (issue 10).

When PostgreSQL is stopped or unreachable, or a SQLite file is locked or
unwritable, SQLAlchemy raises :class:`~sqlalchemy.exc.OperationalError` (or,
for a connection that died under it, :class:`~sqlalchemy.exc.InterfaceError`
or one flagged ``connection_invalidated``); a pool that waited too long for a
connection raises :class:`~sqlalchemy.exc.TimeoutError`. Those mean "the
database cannot be used right now": the caller retries later and says so in
one line. Every other error (a constraint, a missing column, a bug) is not an
outage and keeps its traceback.
"""

from __future__ import annotations

from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

__all__ = ["database_outage", "describe_database_error", "safe_database_url"]

_OUTAGE_TYPES = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)

#: Longest error text kept: the driver's first line says what happened; the rest is SQL and hints.
_MAX_TEXT = 300


def database_outage(exc: BaseException | None) -> SQLAlchemyError | None:
    """The database error meaning "the database is unusable now" behind ``exc``, or None.

    ``exc`` itself or an exception it was raised ``from`` (``__cause__``) counts;
    an exception merely raised while handling one (``__context__``) does not,
    so a bug in an error handler is never mistaken for an outage.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _OUTAGE_TYPES):
            return exc
        if isinstance(exc, DBAPIError) and exc.connection_invalidated:
            return exc
        exc = exc.__cause__
    return None


def describe_database_error(exc: BaseException, url: str | URL | None = None) -> str:
    """One line: the driver's exception class and the first line of its message.

    SQLAlchemy's wrapping (the SQL, its parameters, the "background" link) is
    left out: it can quote row values and only lengthens the line. The
    password of ``url``, if any, is replaced wherever it appears.
    """
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    text = f"{type(orig).__name__}: {lines[0] if lines else 'no message'}"
    password = _password(url)
    if password:
        for form in (password, quote(password, safe=""), quote_plus(password)):
            text = text.replace(form, "[redacted]")
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def safe_database_url(url: str | URL) -> str:
    """The URL as it may be logged: any password shown as ``***``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable database URL)"


def _password(url: str | URL | None) -> str | None:
    if url is None:
        return None
    try:
        password = make_url(url).password
    except ArgumentError:
        return None
    return str(password) if password else None
