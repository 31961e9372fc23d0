"""The fault layer both provider simulators share.

A simulator is a plain Starlette app; :class:`FaultMiddleware` wraps it and
adds, in this order for every request that is not an admin request:

1. **latency** (``asyncio.sleep``), fixed or drawn uniformly from a range;
2. **rejected credentials**: the provider's own auth failure (hook);
3. **quota exhausted**: SendHub's 420 (hook; providers without one skip it);
4. **throttling**: a fraction of requests get the provider's 429 (hook);
5. **server errors**: a fraction of requests get 500 or 503, before any state
   is touched;
6. the app itself, after which a write (POST/PUT/PATCH/DELETE) may be
   **dropped** (the state change is applied, then the connection is closed
   before any byte of the response is sent) or any response may be
   **malformed** (real status, truncated JSON body).

Failing list pages are the simulator's business: it asks
:meth:`Faults.page_fails` and answers 500 itself.

Every random choice comes from one ``random.Random(seed)``, so a run with the
same seed and the same request sequence sees the same faults.

The middleware also keeps per-endpoint request counts (``"GET /v1/contacts/{id}"``:
method, path without trailing slash, id segments replaced by ``{id}``) and a
bounded request log, and serves the **admin interface**. Every ``/_admin/...``
request needs the header ``X-Admin-Token: <token>`` (401 otherwise); admin
requests are neither faulted nor counted:

=======  =========================  ==============================================
method   path                       does
=======  =========================  ==============================================
GET      /_admin/faults             the current faults as JSON
PUT      /_admin/faults             change some faults (JSON object, partial); 200
                                    with the new faults, 400 on a bad key/value
GET      /_admin/state              the whole account (``state.snapshot()``)
GET      /_admin/requests           ``{"counts": {...}, "log": [[m, path, status]...]}``
DELETE   /_admin/requests           reset counts and log; 204
POST     /_admin/actions/{name}     run ``state.admin_actions[name](body)``, e.g.
                                    SendHub ``block`` ``{"number": "+1..."}``
=======  =========================  ==============================================

Provider hooks (:class:`FaultHooks`) supply the bodies of the fault responses,
because each provider words them its own way.

A client that vanishes mid-request (killed, timed out) is normal traffic for a
provider: its request is dropped without a word and counted apart, in
``recorder.vanished`` (the counts and the log keep to requests the simulator
answered or dropped itself), whereas any other exception of the app still
reaches uvicorn, which logs it.

For tests in the server's process, :class:`RequestGate` (``middleware.gate``)
holds requests from a chosen one on, so that a test can act (kill the client)
at an exact point of the client's work whatever the machine's speed, and
``middleware.in_flight`` counts the requests being handled, so that it can wait
until the simulator is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import random
import threading
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

__all__ = [
    "ADMIN_HEADER",
    "ADMIN_PREFIX",
    "WRITE_METHODS",
    "DefaultFaultHooks",
    "FaultDecision",
    "FaultHooks",
    "FaultMiddleware",
    "Faults",
    "HOLD_PHASES",
    "RequestGate",
    "RequestRecorder",
    "format_time_left",
    "literal_segments",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ADMIN_PREFIX = "/_admin/"
ADMIN_HEADER = "x-admin-token"
REQUEST_LOG_SIZE = 10_000  # bounded so a benchmark run does not grow memory


@dataclass
class Faults:
    """What goes wrong, settable at start and changed at runtime (tests mutate it).

    Rates are fractions in [0, 1]; ``*_next`` are counters consumed one per
    eligible request, checked before the matching rate.
    """

    latency: float | tuple[float, float] = 0.0
    """Seconds added before every response: fixed, or ``(low, high)`` uniform."""
    error_rate: float = 0.0
    """Fraction answered 500 or 503 (half each) before the state is touched."""
    throttle_rate: float = 0.0
    """Fraction answered 429 (the provider's body/headers, see :class:`FaultHooks`)."""
    throttle_wait: float = 1.0
    """Seconds the 429 tells the client to wait (SendHub rounds up to whole seconds)."""
    quota_exhausted: bool = False
    """SendHub: every request answered 420. Ignored by providers without a quota status."""
    failing_pages: set[int] = field(default_factory=set)
    """1-based list page numbers that always answer 500 (the simulator checks)."""
    drop_rate: float = 0.0
    """Fraction of writes applied, then answered by closing the connection."""
    drop_next: int = 0
    """The next N writes are dropped after being applied."""
    malformed_rate: float = 0.0
    """Fraction of responses sent with their real status and a truncated body."""
    malformed_next: int = 0
    """The next N responses are truncated."""
    reject_credentials: bool = False
    """Every request fails authentication as the provider does."""
    seed: int = 0
    """Seed of every random choice; setting it restarts the sequence."""

    def __post_init__(self) -> None:
        self.failing_pages = set(self.failing_pages)
        self._rng = random.Random(self.seed)

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name == "seed":
            super().__setattr__("_rng", random.Random(value))

    def page_fails(self, page: int) -> bool:
        """True when list page ``page`` (1-based) must answer 500."""
        return page in self.failing_pages

    def draw(self, method: str) -> FaultDecision:
        """Decide the faults of one request; consumes ``*_next`` counters and random draws."""
        decision = FaultDecision(latency=self._draw_latency())
        decision.respond = self._draw_response()
        if decision.respond is None:
            decision.drop = method in WRITE_METHODS and self._consume("drop_next", self.drop_rate)
            decision.malformed = not decision.drop and self._consume("malformed_next", self.malformed_rate)
        return decision

    def _draw_latency(self) -> float:
        if isinstance(self.latency, tuple | list):
            low, high = self.latency
            return self._rng.uniform(low, high)
        return float(self.latency)

    def _draw_response(self) -> str | None:
        if self.reject_credentials:
            return "unauthorized"
        if self.quota_exhausted:
            return "quota"
        if self._chance(self.throttle_rate):
            return "throttle"
        if self._chance(self.error_rate):
            return self._rng.choice(("error500", "error503"))
        return None

    def _consume(self, counter: str, rate: float) -> bool:
        remaining = getattr(self, counter)
        if remaining > 0:
            setattr(self, counter, remaining - 1)
            return True
        return self._chance(rate)

    def _chance(self, rate: float) -> bool:
        # No draw at rate 0, so switching one fault on does not shift the others' sequence.
        return rate > 0 and self._rng.random() < rate

    def to_dict(self) -> dict[str, Any]:
        """The faults as JSON-ready values (``latency`` range as a list)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(out["latency"], tuple | list):
            out["latency"] = list(out["latency"])
        out["failing_pages"] = sorted(out["failing_pages"])
        return out

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial change given as JSON values; ValueError names the bad key.

        Every key is checked before anything changes, so a bad request changes nothing.
        """
        parsed = {name: _parse_field(name, value) for name, value in changes.items()}
        for name, value in parsed.items():
            setattr(self, name, value)


_FIELD_NAMES = {f.name for f in fields(Faults)}
_RATE_FIELDS = {"error_rate", "throttle_rate", "drop_rate", "malformed_rate"}
_COUNT_FIELDS = {"drop_next", "malformed_next", "seed"}
_BOOL_FIELDS = {"quota_exhausted", "reject_credentials"}


def _parse_field(name: str, value: Any) -> Any:
    if name not in _FIELD_NAMES:
        raise ValueError(f"unknown fault {name!r}")
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false")
        return value
    if name in _COUNT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int) or (value < 0 and name != "seed"):
            raise ValueError(f"{name} must be a non-negative integer")
        return value
    if name == "failing_pages":
        if not isinstance(value, list) or not all(_is_int(v) and v >= 1 for v in value):
            raise ValueError("failing_pages must be a list of page numbers >= 1")
        return set(value)
    if name == "latency":
        return _parse_latency(value)
    number = _non_negative(name, value)
    if name in _RATE_FIELDS and number > 1:
        raise ValueError(f"{name} must be between 0 and 1")
    return number


def _parse_latency(value: Any) -> float | tuple[float, float]:
    if isinstance(value, list | tuple):
        if len(value) != 2:
            raise ValueError("latency must be a number or [low, high]")
        low, high = (_non_negative("latency", v) for v in value)
        if low > high:
            raise ValueError("latency range must be [low, high] with low <= high")
        return (low, high)
    return _non_negative("latency", value)


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number")
    return float(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class FaultDecision:
    """The faults drawn for one request."""

    latency: float = 0.0
    respond: str | None = None  # "unauthorized" | "quota" | "throttle" | "error500" | "error503"
    drop: bool = False
    malformed: bool = False


def format_time_left(seconds: float) -> str:
    """SendHub's ``timeLeft``: ``H:MM:SS``, rounded up to whole seconds (9:59:59 at most)."""
    total = min(math.ceil(max(seconds, 0.0)), 9 * 3600 + 59 * 60 + 59)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class FaultHooks(Protocol):
    """The provider-specific bodies of fault responses."""

    def throttled(self, wait_seconds: float) -> Response:
        """The 429 telling the client to wait ``wait_seconds``."""
        ...

    def quota_exhausted(self) -> Response | None:
        """The monthly-quota response (SendHub 420), or None if the provider has none."""
        ...

    def unauthorized(self, path: str) -> Response:
        """What the provider answers to bad credentials on ``path``."""
        ...

    def server_error(self, status: int) -> Response:
        """A 500 or 503."""
        ...


class DefaultFaultHooks:
    """Generic fault bodies; simulators subclass and override what their provider words differently."""

    def throttled(self, wait_seconds: float) -> Response:
        retry_after = str(max(1, math.ceil(wait_seconds)))
        body = {"error": "Too Many Requests", "message": "Too Many Requests"}
        return JSONResponse(body, status_code=429, headers={"Retry-After": retry_after})

    def quota_exhausted(self) -> Response | None:
        return None

    def unauthorized(self, path: str) -> Response:
        return Response(b"", status_code=401)

    def server_error(self, status: int) -> Response:
        text = "Internal Server Error" if status == 500 else "Service Unavailable"
        return JSONResponse({"error": text, "message": text, "status": status}, status_code=status)


def literal_segments(routes: Iterable[Any]) -> frozenset[str]:
    """The fixed path segments of a Starlette route table (everything not ``{param}``)."""
    found: set[str] = set()
    for route in routes:
        path = getattr(route, "path", "")
        found.update(s for s in path.split("/") if s and not s.startswith("{"))
        found.update(literal_segments(getattr(route, "routes", None) or ()))
    return frozenset(found)


class RequestRecorder:
    """Per-endpoint request counts and a bounded log of ``(method, path, status)``.

    The endpoint key is ``"METHOD /path"`` with the trailing slash removed and
    every segment that is not one of the app's literal segments replaced by
    ``{id}``, so ``/v1/contacts/22413/`` and ``/v1/contacts/9`` count together.
    ``status`` is None for a dropped connection. Requests whose client vanished
    before any answer are only counted, per endpoint, in ``vanished``.
    """

    def __init__(self, literals: frozenset[str]) -> None:
        self.literals = literals
        self.counts: Counter[str] = Counter()
        self.vanished: Counter[str] = Counter()
        self.log: deque[tuple[str, str, int | None]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._cache: dict[str, str] = {}

    def endpoint(self, method: str, path: str) -> str:
        normal = self._cache.get(path)
        if normal is None:
            parts = [p if p in self.literals else "{id}" for p in path.split("/") if p]
            normal = "/" + "/".join(parts)
            if len(self._cache) < 4096:  # ids make paths unbounded; cache only the first few
                self._cache[path] = normal
        return f"{method} {normal}"

    def record(self, method: str, path: str, status: int | None) -> None:
        self.counts[self.endpoint(method, path)] += 1
        self.log.append((method, path, status))

    def record_vanished(self, method: str, path: str) -> None:
        # Not in the log, where None means the simulator itself dropped the connection (a fault, the
        # write applied), nor in the counts: tests count answers there, and a client's own departure is none.
        self.vanished[self.endpoint(method, path)] += 1

    def reset(self) -> None:
        self.counts.clear()
        self.vanished.clear()
        self.log.clear()


HOLD_PHASES = ("before", "applied", "answered")


class RequestGate:
    """A test hook: hold a simulator's requests from a chosen one on, and say when it is reached.

    The gate counts the requests that reach the app (after latency and fault
    responses) and match ``endpoint``, a key as :class:`RequestRecorder` spells
    it (``"POST /v1/contacts"``), or every write when ``endpoint`` is None. The
    ``nth`` of them is the *mark*, stopped as ``phase`` says:

    * ``"before"``: held before the app sees it, so nothing of it is applied;
    * ``"applied"``: applied by the app, its answer held;
    * ``"answered"``: answered as usual.

    Every request that reaches the app after the mark (any method, matching or
    not) is held before the app, so the client gets no further at this
    simulator. :attr:`reached` is set once the mark is held (``"answered"``:
    once its answer is sent); it is a :class:`threading.Event` because the test
    waiting on it runs in another thread than the server.

    A held request waits until :meth:`release`, then goes on as if never held,
    or until its client disconnects: then it is dropped quietly and counted in
    ``recorder.vanished`` (a held answer is never sent; its change stays applied).
    """

    def __init__(self, nth: int, *, phase: str = "before", endpoint: str | None = None) -> None:
        if nth < 1:
            raise ValueError("nth must be at least 1")
        if phase not in HOLD_PHASES:
            raise ValueError(f"phase must be one of {', '.join(HOLD_PHASES)}")
        self.nth, self.phase, self.endpoint = nth, phase, endpoint
        self.reached = threading.Event()
        self.seen = 0  # matching requests that reached the app
        self.holding = 0  # requests held right now
        self.dropped = 0  # held requests whose client vanished
        self._lock = threading.Lock()  # release() runs in the test's thread, the holds in the server's
        self._released = False
        self._opened: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def admit(self, endpoint: str) -> tuple[str | None, bool]:
        """Where this request stops (None, ``"request"`` or ``"answer"``) and whether it is the mark.

        Called once per request that reaches the app, in arrival order.
        """
        if self._released:
            return None, False
        if self.seen >= self.nth:  # past the mark
            return "request", False
        if self.endpoint is None and endpoint.split(" ", 1)[0] not in WRITE_METHODS:
            return None, False
        if self.endpoint is not None and endpoint != self.endpoint:
            return None, False
        self.seen += 1
        if self.seen < self.nth:
            return None, False
        return {"before": "request", "applied": "answer", "answered": None}[self.phase], True

    async def hold(self, receive: Receive, *, mark: bool) -> bool:
        """Hold one request: True once released, False when its client disconnected first.

        ``receive`` must have delivered the whole request body already: what it
        gives next is the disconnect.
        """
        opened = self._opened_event()
        released = asyncio.ensure_future(opened.wait())
        vanished = asyncio.ensure_future(_disconnected(receive))
        self.holding += 1
        if mark:
            self.reached.set()
        try:
            await asyncio.wait((released, vanished), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.holding -= 1
            released.cancel()
            vanished.cancel()
        if vanished.done() and not vanished.cancelled():
            vanished.result()  # an error of the server's receive is not a disconnect
            self.dropped += 1
            return False
        return True

    def release(self) -> None:
        """Let every held request go on, and every later one pass (the gate is spent); thread-safe."""
        with self._lock:
            self._released = True
            opened = self._opened
        if opened is not None:
            loop, event = opened
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing is held any more
                loop.call_soon_threadsafe(event.set)

    def _opened_event(self) -> asyncio.Event:
        """The server loop's side of :meth:`release`, made on first use (set if released already)."""
        with self._lock:
            if self._opened is None:
                event = asyncio.Event()
                if self._released:
                    event.set()
                self._opened = (asyncio.get_running_loop(), event)
            return self._opened[1]


class _Peer:
    """A request's ``receive``, watched: ``gone`` once it has reported that the client disconnected."""

    __slots__ = ("_receive", "gone")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.gone = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone = True
        return message


class FaultMiddleware:
    """ASGI middleware: faults, counting and the admin interface around one simulator app.

    ``state`` must offer ``snapshot() -> dict`` and may offer ``admin_actions``,
    a mapping of name to ``callable(body: dict) -> JSON value``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        faults: Faults,
        hooks: FaultHooks,
        state: Any,
        admin_token: str,
        literals: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.faults = faults
        self.hooks = hooks
        self.state = state
        self.admin_token = admin_token
        if literals is None:
            literals = literal_segments(getattr(app, "routes", ()))
        self.recorder = RequestRecorder(literals)
        self.gate: RequestGate | None = None
        """The test hook holding requests (see :class:`RequestGate`); None: nothing is held."""
        self.in_flight = 0
        """Requests (admin ones excepted) being handled right now."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(ADMIN_PREFIX):
            await self._admin(scope, receive, send)
            return
        method: str = scope["method"]
        peer = _Peer(receive)
        self.in_flight += 1
        try:
            await self._faulted(scope, peer.receive, send)
        except ClientDisconnect:
            if not peer.gone:
                raise  # not raised by a disconnect: an application error, for uvicorn to report
            # The client went away before its request was read (killed, timed out during the latency):
            # a provider just drops such a request; nobody is left to answer.
            self.recorder.record_vanished(method, path)
        finally:
            self.in_flight -= 1

    async def _faulted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Latency, then a fault response or the app."""
        method, path = scope["method"], scope["path"]
        decision = self.faults.draw(method)
        if decision.latency > 0:
            await asyncio.sleep(decision.latency)
        if decision.respond is not None:
            response = self._fault_response(decision.respond, path)
            if response is not None:
                self.recorder.record(method, path, response.status_code)
                await response(scope, receive, send)
                return
        await self._run_app(scope, receive, send, decision)

    def _fault_response(self, kind: str, path: str) -> Response | None:
        if kind == "unauthorized":
            return self.hooks.unauthorized(path)
        if kind == "quota":
            return self.hooks.quota_exhausted()
        if kind == "throttle":
            return self.hooks.throttled(self.faults.throttle_wait)
        return self.hooks.server_error(503 if kind == "error503" else 500)

    async def _run_app(self, scope: Scope, receive: Receive, send: Send, decision: FaultDecision) -> None:
        """The app, with the gate's hold (if any) and the drop/malformed faults."""
        method, path = scope["method"], scope["path"]
        gate = self.gate
        stop, mark = gate.admit(self.recorder.endpoint(method, path)) if gate is not None else (None, False)
        if stop == "request" and gate is not None:
            held = await _held_request(gate, receive, mark=mark)
            if held is None:
                self.recorder.record_vanished(method, path)
                return
            receive = held
        if decision.drop or decision.malformed or stop == "answer":
            await self._run_captured(scope, receive, send, decision, gate if stop == "answer" else None)
        else:
            await self.app(scope, receive, self._recording(send, method, path))
        if mark and stop is None and gate is not None:  # the mark of an "answered" gate: its answer is out
            gate.reached.set()

    def _recording(self, send: Send, method: str, path: str) -> Send:
        async def recording_send(message: Message) -> None:
            # Counted before the response leaves, so a client holding the answer always finds it counted.
            if message["type"] == "http.response.start":
                self.recorder.record(method, path, message["status"])
            await send(message)

        return recording_send

    async def _run_captured(self, scope: Scope, receive: Receive, send: Send, decision: FaultDecision,
                            hold: RequestGate | None) -> None:
        """The app's whole answer kept, then held (``hold``), dropped, truncated or sent as it was."""
        method, path = scope["method"], scope["path"]
        start, body = await _capture(self.app, scope, receive)
        if hold is not None and not await hold.hold(receive, mark=True):
            self.recorder.record_vanished(method, path)  # applied, and its client never learns it
            return
        if decision.drop:
            self.recorder.record(method, path, None)
            await _drop_connection(send, body)
            return
        self.recorder.record(method, path, start["status"])
        if decision.malformed:
            await _send_truncated(send, start, body)
        else:
            await _send_whole(send, start, body)

    async def _admin(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._admin_response(scope, receive)
        await response(scope, receive, send)

    async def _admin_response(self, scope: Scope, receive: Receive) -> Response:
        if not self._admin_allowed(scope):
            return JSONResponse({"error": "missing or wrong X-Admin-Token"}, status_code=401)
        method, path = scope["method"], scope["path"].rstrip("/")
        try:
            if path == "/_admin/faults":
                return await self._admin_faults(method, receive)
            if path == "/_admin/state" and method == "GET":
                return JSONResponse(self.state.snapshot())
            if path == "/_admin/requests":
                return self._admin_requests(method)
            if path.startswith("/_admin/actions/") and method == "POST":
                return await self._admin_action(path.rsplit("/", 1)[1], receive)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"error": f"no admin endpoint {method} {path}"}, status_code=404)

    def _admin_allowed(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == ADMIN_HEADER.encode():
                return hmac.compare_digest(value, self.admin_token.encode())
        return False

    async def _admin_faults(self, method: str, receive: Receive) -> Response:
        if method == "PUT":
            self.faults.update(await _read_json_object(receive))
        elif method != "GET":
            return JSONResponse({"error": "use GET or PUT"}, status_code=405)
        return JSONResponse(self.faults.to_dict())

    def _admin_requests(self, method: str) -> Response:
        if method == "DELETE":
            self.recorder.reset()
            return Response(status_code=204)
        log = [list(entry) for entry in self.recorder.log]
        return JSONResponse({"counts": dict(self.recorder.counts), "log": log})

    async def _admin_action(self, name: str, receive: Receive) -> Response:
        actions = getattr(self.state, "admin_actions", None) or {}
        if name not in actions:
            return JSONResponse({"error": f"no admin action {name!r}"}, status_code=404)
        result = actions[name](await _read_json_object(receive))
        return JSONResponse({"result": result})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _read_json_object(receive: Receive) -> dict[str, Any]:
    raw = await _read_body(receive)
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


async def _read_body_unless_gone(receive: Receive) -> bytes | None:
    """The whole request body, or None when the client disconnects before it is all in."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    """Return once the client has disconnected (the request body must have been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _held_request(gate: RequestGate, receive: Receive, *, mark: bool) -> Receive | None:
    """Hold a request before the app; then a ``receive`` that replays its body, or None if the client left.

    The body is read first: only then does ``receive`` tell of a disconnect.
    """
    body = await _read_body_unless_gone(receive)
    if body is None or not await gate.hold(receive, mark=mark):
        return None
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _capture(app: ASGIApp, scope: Scope, receive: Receive) -> tuple[Message, bytes]:
    """Run the app to completion, keeping its response instead of sending it."""
    start: Message = {}
    chunks: list[bytes] = []

    async def keep(message: Message) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, keep)
    return start, b"".join(chunks)


async def _send_whole(send: Send, start: Message, body: bytes) -> None:
    """A captured response as the app gave it."""
    await send({"type": "http.response.start", "status": start["status"], "headers": start.get("headers", [])})
    await send({"type": "http.response.body", "body": body})


async def _send_truncated(send: Send, start: Message, body: bytes) -> None:
    """The real status and headers, with the body cut in half (invalid JSON for any object/array)."""
    cut = body[: len(body) // 2]
    headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers.append((b"content-length", str(len(cut)).encode()))
    await send({"type": "http.response.start", "status": start["status"], "headers": headers})
    await send({"type": "http.response.body", "body": cut})


async def _drop_connection(send: Send, body: bytes) -> None:
    """Close the connection without a response: the client sees a lost connection.

    uvicorn's ``send`` is a bound method of the request cycle, which holds the
    transport; aborting it is the faithful "connection reset". Under another
    server, fall back to headers promising more body than is ever sent.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        transport.abort()
        # Let the loop deliver connection_lost, so uvicorn sees a disconnect, not an app error.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body) + 1024).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})


class _IncompleteResponseFilter(logging.Filter):
    """Hide uvicorn's error line for a response left incomplete on purpose (the drop fallback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "without completing response" not in record.getMessage()


def install_log_filter() -> None:
    """Attach the filter to uvicorn's error logger once."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _IncompleteResponseFilter) for f in logger.filters):
        logger.addFilter(_IncompleteResponseFilter())
