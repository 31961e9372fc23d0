"""The errors syncd raises, as one tree::

    SyncdError
    ├── ConfigError            bad configuration file (every problem listed; exit 2)
    ├── SchemaError            database schema missing or behind (run `syncd db upgrade`)
    ├── LeaseLost              this replica no longer holds the provider's lease
    └── ProviderError          anything a provider account did or said
        ├── AuthError          credentials refused (401/404 on login); permanent for the run
        │   └── TlsError       the provider's TLS certificate failed verification
        ├── QuotaExhausted     SendHub 420: stop writing to the account for this run
        ├── Rejected           the provider refused a record (field, reason); permanent until it changes
        ├── NotFound           the record does not exist at the provider
        ├── Unsupported        the provider's documented API cannot do this
        ├── ProtocolError      a response syncd cannot read (malformed body, missing header…)
        ├── UnknownOutcome     a non-idempotent write whose response was lost (the client settles it)
        └── TransientError     timeouts, connection errors, 5xx: worth retrying later
            └── RateLimited    429; ``retry_after`` seconds when the provider said

Provider clients translate httpx exceptions and HTTP statuses into this tree at
one boundary (``syncd.providers.http``); nothing outside ``syncd.providers``
catches an httpx exception. Messages name the provider account, the operation,
the record and the provider's own reason, truncated, and never a secret.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict, Unpack

__all__ = [
    "AuthError",
    "ConfigError",
    "ErrorContext",
    "LeaseLost",
    "NotFound",
    "ProtocolError",
    "ProviderError",
    "QuotaExhausted",
    "RateLimited",
    "Rejected",
    "SchemaError",
    "SyncdError",
    "TlsError",
    "TransientError",
    "UnknownOutcome",
    "Unsupported",
]

#: Provider bodies quoted in messages are cut here: enough to read the reason,
#: little enough that a stray echo of a request cannot flood a log line.
BODY_EXCERPT_MAX = 300


def excerpt(text: str, limit: int = BODY_EXCERPT_MAX) -> str:
    """``text`` on one line, cut to ``limit`` characters.

    A lone UTF-16 surrogate (a provider's JSON can hold ``"\\ud800"``) is shown
    escaped: the message goes to the change log, and no database stores one.
    """
    flat = " ".join(text.split())
    if not flat.isascii():
        flat = flat.encode("utf-8", "backslashreplace").decode("utf-8")
    return flat if len(flat) <= limit else flat[:limit] + "…"


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """The configuration is invalid; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class SchemaError(SyncdError):
    """The database schema is missing or behind the code."""


class LeaseLost(SyncdError):
    """Another replica took this provider's lease; stop settling anything."""


class ErrorContext(TypedDict, total=False):
    """The keyword details every :class:`ProviderError` takes (see there), for subclasses and callers to pass on."""

    provider: str
    operation: str
    record: str
    status: int | None


class ProviderError(SyncdError):
    """A provider account failed an operation.

    ``provider`` is the configured account name, ``operation`` what syncd was
    doing (``create contact``), ``record`` which record (``+393401234567``),
    ``reason`` the provider's own words (already truncated), ``status`` the HTTP
    status when there was one.
    """

    retryable = False

    def __init__(
        self,
        reason: str,
        *,
        provider: str = "",
        operation: str = "",
        record: str = "",
        status: int | None = None,
    ) -> None:
        self.reason = excerpt(reason)
        self.provider = provider
        self.operation = operation
        self.record = record
        self.status = status
        super().__init__(self._render())

    def _render(self) -> str:
        where = f"{self.provider}: " if self.provider else ""
        what = self.operation or "request"
        if self.record:
            what += f" {self.record}"
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{where}{what} failed{status}: {self.reason}"

    def __reduce__(self) -> tuple[Callable[..., ProviderError], tuple[type[ProviderError], str, dict[str, Any]]]:
        # Exception pickles only its args: the keyword details would be lost.
        return (_rebuild, (type(self), self.reason, self.__dict__.copy()))


def _rebuild(cls: type[ProviderError], reason: str, state: dict[str, Any]) -> ProviderError:
    err = cls.__new__(cls)
    Exception.__init__(err, reason)
    err.__dict__.update(state)
    return err


class AuthError(ProviderError):
    """Credentials were refused."""


class TlsError(AuthError):
    """The provider's TLS certificate failed verification: the server is not who it should be.

    An AuthError because it concerns the whole account for the whole run, and
    retrying cannot help: the certificate, the trust store or ``tls_verify`` must change.
    """


class QuotaExhausted(ProviderError):
    """The account's plan quota is spent (SendHub 420)."""


class Rejected(ProviderError):
    """The provider refused this record; ``field`` names the offending field if known."""

    def __init__(self, reason: str, *, field: str = "", **context: Unpack[ErrorContext]) -> None:
        self.field = field
        super().__init__(reason, **context)

    def _render(self) -> str:
        text = super()._render()
        return text.replace(" failed", f" rejected{f' (field {self.field})' if self.field else ''}", 1)


class NotFound(ProviderError):
    """The record does not exist at the provider."""


class Unsupported(ProviderError):
    """The provider's documented API offers no way to do this."""


class ProtocolError(ProviderError):
    """The provider answered something syncd cannot read."""


class UnknownOutcome(ProviderError):
    """A non-idempotent write was sent but its response was lost."""

    retryable = True


class TransientError(ProviderError):
    """A failure worth retrying later."""

    retryable = True


class RateLimited(TransientError):
    """Throttled; ``retry_after`` is the provider's wait in seconds, if it said."""

    def __init__(self, reason: str, *, retry_after: float | None = None, **context: Unpack[ErrorContext]) -> None:
        self.retry_after = retry_after
        super().__init__(reason, **context)
