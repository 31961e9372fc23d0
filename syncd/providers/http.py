"""The HTTP layer every provider client shares.

Every client is an :class:`HttpAccount`: one configured account behind one
:class:`HttpSession`, which wraps an ``httpx.AsyncClient`` (connection pooling,
keep-alive, explicit timeouts, TLS verification on) and adds what the providers
need around it:

* a token bucket holding ``requests_per_second`` and a semaphore holding
  ``max_concurrency`` requests in flight;
* retries with exponential backoff and full jitter for timeouts, connection
  errors, 5xx and 429 (waiting what ``Retry-After`` or the client's
  ``retry_after`` hook says), within a bounded total budget;
* no automatic retry of a non-idempotent request whose outcome is unknown:
  that becomes :class:`~syncd.errors.UnknownOutcome`, and the client that sent
  it knows what a second try must look like (SendHub links the contact its
  re-sent create finds "already in your contacts");
* no retry either of a server whose TLS certificate fails verification:
  that is :class:`~syncd.errors.TlsError` at once;
* the one place httpx exceptions and HTTP statuses become
  :mod:`syncd.errors`. Messages carry the path without its query string, so a
  key sent as a query parameter never reaches a log or an error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, quote_plus

import httpx
import orjson
import structlog

from syncd.errors import (
    AuthError,
    ErrorContext,
    NotFound,
    ProtocolError,
    ProviderError,
    QuotaExhausted,
    RateLimited,
    Rejected,
    TlsError,
    TransientError,
    UnknownOutcome,
    excerpt,
)
from syncd.providers.base import RequestStats

__all__ = ["ErrorMapper", "HttpAccount", "HttpSession", "RequestStats", "RetryPolicy", "TokenBucket", "default_error", "parse_json",
           "redact_credentials", "secret_spellings"]

if TYPE_CHECKING:
    from syncd.config import ProviderSettings

log = structlog.get_logger("syncd.http")


class _QueryRedactingFilter(logging.Filter):
    """Strip the query from the URL httpx logs at INFO for every request.

    Query strings carry credentials (SendHub's ``api_key``, smsend's login
    ``password``); httpx's own "HTTP Request: ..." line would otherwise put them
    in any log that captures INFO from the ``httpx`` logger.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(a.copy_with(query=None) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def _install_httpx_log_filter() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _QueryRedactingFilter) for f in logger.filters):
        logger.addFilter(_QueryRedactingFilter())


_install_httpx_log_filter()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard one request is tried.

    ``attempts`` counts the first try. Waits grow as ``base_delay * 2**n`` up to
    ``max_delay`` with full jitter; a provider's own wait (Retry-After) is
    honoured up to ``max_delay`` too. No retry starts once ``budget`` seconds
    have passed since the first try, so a run is never held hostage by one record.
    """

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 30.0
    budget: float = 120.0

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; ``acquire`` waits for one."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst if burst is not None else max(1.0, rate)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


def _retry_after_header(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def default_error(response: httpx.Response, *, provider: str, operation: str, record: str) -> ProviderError | None:
    """Map a non-2xx response to the error tree; None for success."""
    status = response.status_code
    if 200 <= status < 300:
        return None
    kw: dict[str, Any] = dict(provider=provider, operation=operation, record=record, status=status)
    reason = excerpt(redact_credentials(response.text)) or response.reason_phrase or "no reason given"
    if status in (401, 403):
        return AuthError(reason or "credentials refused", **kw)
    if status == 404:
        return NotFound(reason, **kw)
    if status == 420:
        return QuotaExhausted(reason, **kw)
    if status == 429:
        return RateLimited(reason, retry_after=_retry_after_header(response), **kw)
    if status in (400, 409, 422):
        return Rejected(reason, **kw)
    if status >= 500:
        return TransientError(reason, **kw)
    return ProtocolError(f"unexpected status: {reason}", **kw)


class ErrorMapper(Protocol):
    """A provider's reading of a response: None for success, else the error to raise (or retry)."""

    def __call__(
        self, response: httpx.Response, *, provider: str, operation: str, record: str
    ) -> ProviderError | None: ...


@dataclass(frozen=True, slots=True)
class _Request:
    """One request as :meth:`HttpSession.request` was asked for it, sent again as is on a retry."""

    method: str
    path: str
    operation: str
    record: str
    idempotent: bool
    params: Mapping[str, Any] | None
    json_body: Any
    headers: Mapping[str, str] | None
    auth: tuple[str, str] | None


class HttpSession:
    """One provider account's HTTP connection pool, limits and retry policy."""

    def __init__(
        self,
        *,
        provider: str,
        base_url: str,
        timeout: float = 30.0,
        requests_per_second: float = 5.0,
        max_concurrency: int = 4,
        verify: bool = True,
        retry: RetryPolicy | None = None,
        error_mapper: ErrorMapper = default_error,
        transport: httpx.AsyncBaseTransport | None = None,
        seed: int | None = None,
    ) -> None:
        self.provider = provider
        self.retry = retry or RetryPolicy()
        self.stats = RequestStats()
        self._map_error = error_mapper
        self._bucket = TokenBucket(requests_per_second)
        self._slots = asyncio.Semaphore(max(1, max_concurrency))
        self._rng = random.Random(seed)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max(1, max_concurrency), max_keepalive_connections=max(1, max_concurrency)),
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        record: str = "",
        idempotent: bool = True,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request with limits and retries; answer a 2xx response or raise."""
        call = _Request(method, path, operation, record, idempotent, params, json_body, headers, auth)
        started = time.monotonic()
        attempt = 0
        while True:
            answer = await self._attempt(call)
            if isinstance(answer, httpx.Response):
                return answer
            if not self._should_retry(answer, attempt, started):
                raise answer
            await self._pause_before_retry(call, answer, attempt)
            attempt += 1

    async def _attempt(self, call: _Request) -> httpx.Response | ProviderError:
        """One try of ``call``: its 2xx response, or the error it came to."""
        operation, record = call.operation, call.record
        try:
            response = await self._send_once(call)
            error = self._map_error(response, provider=self.provider, operation=operation, record=record)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            return self._connect_error(exc, operation, record)
        except httpx.TransportError as exc:
            return self._lost_response(exc, call.idempotent, operation, record)
        except httpx.RequestError as exc:
            # The answer arrived but cannot be read (e.g. a body declared gzip that is not):
            # sending the same request again would get the same answer.
            unreadable = ProtocolError(f"unreadable response to {call.method} {call.path.split('?', 1)[0]}: {exc}",
                                       provider=self.provider, operation=operation, record=record)
            unreadable.__cause__ = exc
            return unreadable
        return response if error is None else error

    async def _pause_before_retry(self, call: _Request, error: ProviderError, attempt: int) -> None:
        wait = self._wait_for(error, attempt)
        self.stats.retries += 1
        log.info("http.retry", provider=self.provider, operation=call.operation, path=call.path, attempt=attempt + 1,
                 wait=round(wait, 3), error=type(error).__name__, status=error.status)
        await asyncio.sleep(wait)

    async def _send_once(self, call: _Request) -> httpx.Response:
        await self._bucket.acquire()
        async with self._slots:
            self.stats.requests += 1
            key = f"{call.method} {call.path.split('?', 1)[0]}"
            self.stats.by_endpoint[key] = self.stats.by_endpoint.get(key, 0) + 1
            try:
                return await self._client.request(call.method, call.path, params=call.params, json=call.json_body,
                                                  headers=call.headers, auth=call.auth)
            except httpx.HTTPError as exc:
                _strip_query(exc)  # it becomes the __cause__ of a syncd error: tracebacks show it
                raise

    def _connect_error(self, exc: httpx.TransportError, operation: str, record: str) -> ProviderError:
        """Nothing reached the server: worth another try, unless its certificate was refused (that never heals).

        Other TLS failures (a connection cut mid-handshake, a plain-HTTP port)
        stay transient, but say TLS.
        """
        kw: ErrorContext = {"provider": self.provider, "operation": operation, "record": record}
        tls = _tls_failure(exc)
        host = self._client.base_url.host
        error: ProviderError
        if isinstance(tls, ssl.SSLCertVerificationError):
            error = TlsError(f"TLS certificate verification failed for {host}: {tls.verify_message or tls}", **kw)
        elif tls is not None:
            error = TransientError(f"cannot connect: TLS handshake with {host} failed: {tls.reason or tls}", **kw)
        else:
            error = TransientError(f"cannot connect: {type(exc).__name__}", **kw)
        error.__cause__ = exc
        return error

    def _lost_response(self, exc: httpx.TransportError, idempotent: bool, operation: str, record: str) -> ProviderError:
        kw: ErrorContext = {"provider": self.provider, "operation": operation, "record": record}
        what = "timed out" if isinstance(exc, httpx.TimeoutException) else f"connection lost ({type(exc).__name__})"
        error: ProviderError
        if idempotent:
            error = TransientError(what, **kw)
        else:
            error = UnknownOutcome(f"{what} after the request was sent; it may or may not have been applied", **kw)
        error.__cause__ = exc
        return error

    def _should_retry(self, error: ProviderError, attempt: int, started: float) -> bool:
        if not isinstance(error, TransientError):
            return False
        if attempt + 1 >= self.retry.attempts:
            return False
        return time.monotonic() - started < self.retry.budget

    def _wait_for(self, error: ProviderError, attempt: int) -> float:
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return min(error.retry_after, self.retry.max_delay)
        return self.retry.backoff(attempt, self._rng)


class HttpAccount:
    """What every provider client has in common: one configured account behind one :class:`HttpSession`.

    The session takes the account's URL, timeout, limits and TLS setting, and
    reads responses with the provider's own ``error_mapper``. A client adds its
    API on top; this part answers the protocol's ``name``, ``stats`` and ``aclose``.
    """

    def __init__(self, settings: ProviderSettings, *, error_mapper: ErrorMapper,
                 retry: RetryPolicy | None = None, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = settings.name
        self._http = HttpSession(
            provider=settings.name, base_url=settings.base_url, timeout=settings.timeout_seconds,
            requests_per_second=settings.requests_per_second, max_concurrency=settings.max_concurrency,
            verify=settings.tls_verify, retry=retry, error_mapper=error_mapper, transport=transport,
        )  # fmt: skip

    @property
    def stats(self) -> RequestStats:
        """Request counters of the account's HTTP session (run report, metrics, benchmarks)."""
        return self._http.stats

    async def aclose(self) -> None:
        await self._http.aclose()


#: ``name=value`` of the query parameters that carry credentials, as a body may echo them
#: (SendHub's ``meta.next`` repeats ``api_key``). Blanked before a body is quoted, so that
#: not even the start of a key survives an excerpt cut through it.
_CREDENTIAL_PARAM = re.compile(r"((?:api_key|password|access_token|session_key)=)[^&\s\"'<>]*", re.IGNORECASE)


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind an httpx connection error (httpx -> httpcore -> ssl), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__ or next(
            (arg for arg in current.args if isinstance(arg, BaseException)), None)
    return None


def redact_credentials(text: str) -> str:
    """``text`` with the values of credential query parameters replaced by ``***``."""
    return _CREDENTIAL_PARAM.sub(r"\1***", text)


def secret_spellings(secret: str) -> list[str]:
    """``secret`` as written and URL-encoded (an error page may quote the request URL), longest first."""
    return sorted({secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}, key=len, reverse=True)


def _strip_query(exc: httpx.HTTPError) -> None:
    """Take the request's query string (SendHub's api_key, smsend's login password) out of ``exc``'s message."""
    try:
        url = exc.request.url
    except RuntimeError:  # no request attached
        return
    if url.query:
        full, bare = str(url), str(url.copy_with(query=None))
        exc.args = tuple(redact_credentials(a.replace(full, bare)) if isinstance(a, str) else a for a in exc.args)




def parse_json(response: httpx.Response, *, provider: str, operation: str, record: str = "") -> Any:
    """The response body as JSON, or a ProtocolError naming the endpoint.

    Malformed covers invalid syntax, invalid UTF-8 (lone surrogates included,
    escaped or not) and nesting too deep to decode (RecursionError: ten
    thousand ``[`` are a few kilobytes).
    """
    try:
        # orjson refuses what json.loads would let through and no database stores: invalid UTF-8 and
        # lone surrogates, escaped or not; and it refuses nesting deeper than 1024.
        return orjson.loads(response.content)
    except (orjson.JSONDecodeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
        start = excerpt(redact_credentials(response.text[:1000]), 80)
        why = f"a string holds a lone UTF-16 surrogate, which is not text ({exc})" if "surrogate" in str(exc) else exc
        raise ProtocolError(
            f"malformed JSON from {response.request.method} {response.request.url.path}: {why}; body starts {start!r}",
            provider=provider, operation=operation, record=record, status=response.status_code,
        ) from exc
