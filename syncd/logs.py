"""Logging: structlog named events with fields, secrets redacted (design §4, §7).

Console lines on a terminal, JSON lines otherwise (journald-friendly); both go
to stderr. ``redact_secrets`` replaces every configured secret value wherever
it appears in an event, and the values of keys that name credentials.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import quote, quote_plus

import structlog

__all__ = ["configure_logging", "redact_secrets"]

_SECRET_KEYS = frozenset({"password", "api_key", "access_token", "session_key", "authorization", "secret"})
REDACTED = "[redacted]"


class redact_secrets:  # noqa: N801 - a structlog processor, named like one
    """A processor that hides ``secrets`` (their values) anywhere in an event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # URL-encoded too: an error quoting a request URL carries a password with '@' or ' ' encoded.
        self.secrets = sorted({form for s in secrets if s and len(s) >= 4
                               for form in (s, quote(s, safe=""), quote_plus(s))}, key=len, reverse=True)

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
        return {k: (REDACTED if k.lower() in _SECRET_KEYS else self._scrub(v)) for k, v in event.items()}

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self._scrub(v) for v in value)
        if isinstance(value, BaseException):
            return self._scrub(f"{type(value).__name__}: {value}")
        return value


def configure_logging(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = (), stream: Any = None) -> None:
    """Set up structlog (and the stdlib root logger) for the process."""
    stream = stream or sys.stderr
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    renderer: Any = structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=stream, force=True)
