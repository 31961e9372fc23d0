"""Fixtures of the hostile-input suite: real provider responses, recorded once, replayed mutated.

``recording``
    A :class:`Recording` of real responses from both simulators over HTTP
    (listing pages, create answers, error bodies, a ``Location`` header),
    taken once per session. Tests mutate these and serve them to the real
    clients through ``httpx.MockTransport`` (:class:`Replay`).
``world``
    Re-exported from ``tests/e2e/conftest.py``: both simulators, a migrated
    database and ``run_once``.

The suite counts the distinct malformed inputs it served per category
(:data:`TRIED`) and prints them at the end of the session.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from syncd.config import ProviderSettings, Secret
from syncd.simulators import Faults, start_simulator
from tests.e2e.conftest import world  # noqa: F401  (the engine-level fixture, reused as is)

#: category -> hashes of the distinct malformed responses served to a client.
TRIED: dict[str, set[str]] = defaultdict(set)
#: listing -> {pages the consumer had received when the listing raised: how often}.
PAGES_BEFORE_ERROR: dict[str, Counter[int]] = defaultdict(Counter)

SENDHUB_BASE = "http://sendhub.invalid/v1"
SMSEND_BASE = "http://smsend.invalid/API/v1.0/REST"


@dataclass(frozen=True)
class Reply:
    """One HTTP response as a provider sent it: status, headers (raw bytes pairs), body."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""

    @classmethod
    def of(cls, response: httpx.Response) -> Reply:
        keep = [(k, v) for k, v in response.headers.raw if k.lower() not in (b"date", b"server", b"content-length")]
        return cls(response.status_code, tuple(keep), response.content)

    def json(self) -> Any:
        return json.loads(self.body)

    def with_body(self, body: bytes, *, status: int | None = None, headers: dict[bytes, bytes] | None = None) -> Reply:
        merged = dict(self.headers) | (headers or {})
        return Reply(self.status if status is None else status, tuple(merged.items()), body)

    def to_response(self) -> httpx.Response:
        return httpx.Response(self.status, headers=list(self.headers), content=self.body)


def note_tried(category: str, reply: Reply) -> None:
    """Count ``reply`` as one malformed input of ``category`` (distinct by content)."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(str(reply.status).encode())
    for key, value in reply.headers:
        digest.update(key + b":" + value + b"\n")
    digest.update(reply.body)
    TRIED[category].add(digest.hexdigest())


@dataclass
class Recording:
    """Real responses, keyed by what they answer; lists are pages in order."""

    sendhub_credentials: dict[str, str]
    sendhub_contact_pages: list[Reply]
    sendhub_group_pages: list[Reply]
    sendhub_created_contact: Reply
    sendhub_duplicate_number: Reply
    sendhub_found_contact: Reply
    sendhub_created_group: Reply
    sendhub_duplicate_group: Reply
    sendhub_updated_contact: Reply
    sendhub_deleted: Reply
    sendhub_members: Reply
    smsend_credentials: dict[str, str]
    smsend_group_pages: list[Reply]
    smsend_created_group: Reply
    smsend_upserted: Reply
    smsend_deleted_group: Reply
    smsend_login: Reply
    smsend_blacklist_pages: list[Reply]


#: Contacts and groups of the recorded SendHub listings, and its page size (a server capping ``limit``).
SENDHUB_CONTACTS, SENDHUB_GROUPS, PAGE = 5, 3, 2


def _record_sendhub() -> dict[str, Any]:
    with start_simulator("sendhub", contacts=SENDHUB_CONTACTS, groups=SENDHUB_GROUPS, seed=7, faults=Faults()) as sim, \
            httpx.Client(base_url=sim.base_url, params=sim.credentials) as http:
        def pages(path: str, count: int) -> list[Reply]:
            # Offsets past the end too: the empty last page is a real answer as well.
            return [Reply.of(http.get(path, params={"limit": PAGE, "offset": o})) for o in range(0, count + PAGE, PAGE)]

        contact_pages, group_pages = pages("/contacts/", SENDHUB_CONTACTS), pages("/groups/", SENDHUB_GROUPS)
        created = http.post("/contacts/", json={"name": "Ann Lee", "number": "+14155550123", "groups": []})
        duplicate = http.post("/contacts/", json={"name": "Ann Lee", "number": "+14155550123", "groups": []})
        found = http.get("/contacts/", params={"number": "+14155550123", "limit": 1000, "offset": 0})
        group = http.post("/groups/", json={"name": "Hostile"})
        duplicate_group = http.post("/groups/", json={"name": "Hostile"})
        contact_id, group_id = created.json()["id"], group.json()["id"]
        updated = http.put(f"/contacts/{contact_id}/", json={"id": int(contact_id), "name": "Ann Lee",
                                                           "number": "+14155550123", "groups": []})
        members = http.post(f"/groups/{group_id}/contacts/", json={"add": [int(contact_id)]})
        deleted = http.delete(f"/contacts/{contact_id}/")
        return dict(
            sendhub_credentials=dict(sim.credentials), sendhub_contact_pages=contact_pages,
            sendhub_group_pages=group_pages, sendhub_created_contact=Reply.of(created),
            sendhub_duplicate_number=Reply.of(duplicate), sendhub_found_contact=Reply.of(found),
            sendhub_created_group=Reply.of(group), sendhub_duplicate_group=Reply.of(duplicate_group),
            sendhub_updated_contact=Reply.of(updated), sendhub_members=Reply.of(members),
            sendhub_deleted=Reply.of(deleted),
        )


def _record_smsend() -> dict[str, Any]:
    with start_simulator("smsend", faults=Faults()) as sim:
        creds = sim.credentials
        headers = {"user_key": creds["user_key"], "Access_token": creds["access_token"]}
        with httpx.Client(base_url=sim.base_url, headers=headers) as http:
            created = [http.post("/group", json={"name": f"G{i}", "description": f"group {i}"}) for i in range(3)]
            pages = [Reply.of(http.get("/groups", params={"pageNumber": n, "pageSize": PAGE})) for n in (1, 2, 3)]
            upserted = http.post("/contact", json={"contacts": [{"phoneNumber": "+14155550123", "name": "Ann"}],
                                                   "updateExistingContact": True,
                                                   "keepExistingGroupsAndCampaigns": False})
            group_id = created[0].headers["location"].rsplit("/", 1)[-1]
            deleted = http.delete(f"/group/{group_id}", params={"deletecontacts": "false"})
            login = http.get("/login", params={"username": creds["username"], "password": creds["password"]},
                             headers={"user_key": "", "Access_token": ""})
            # Two STOP replies, a web entry and two numbers syncd blacklisted itself: every origin.
            sim.state.play_stop("+393400000000", at="2026-03-01 10:00:00")
            sim.state.play_stop("+393400000001", at="2026-03-01 10:01:00")
            sim.state.blacklist_from_web("+393400000002", at="2026-03-01 10:02:00")
            sim.state.wall_clock = lambda: 1_772_360_000.0  # 2026-03-01 10:13:20 UTC: a recording that never varies
            for phone in ("+393400000003", "+393400000004"):
                http.post("/blacklist/sms", params={"phoneNumber": phone})
            blacklist = [Reply.of(http.get("/blacklist/sms", params={"pageNumber": n, "pageSize": PAGE,
                                                                     "timezone": "UTC"})) for n in (1, 2, 3)]
        return dict(smsend_credentials=dict(creds), smsend_group_pages=pages, smsend_created_group=Reply.of(created[0]),
                    smsend_upserted=Reply.of(upserted), smsend_deleted_group=Reply.of(deleted),
                    smsend_login=Reply.of(login), smsend_blacklist_pages=blacklist)


@pytest.fixture(scope="session")
def recording() -> Recording:
    rec = Recording(**_record_sendhub(), **_record_smsend())
    # The recordings must be what the simulators really answer, or every property below is vacuous.
    assert [r.status for r in rec.sendhub_contact_pages] == [200] * 4
    assert rec.sendhub_duplicate_number.status == 400 and rec.sendhub_duplicate_group.status == 400
    assert rec.smsend_created_group.status == 201 and b"location" in dict(rec.smsend_created_group.headers)
    assert rec.smsend_login.status == 200 and b";" in rec.smsend_login.body
    assert [len(r.json()["blacklist"]) for r in rec.smsend_blacklist_pages] == [2, 2, 1]
    return rec


# -- replay ---------------------------------------------------------------------------


Route = tuple[str, str]  # (method, path regex after the base path)


@dataclass
class Replay:
    """An ``httpx.MockTransport`` handler answering from replies.

    ``routes`` maps ``(METHOD, path regex)`` to the replies of successive
    requests (the last one repeats). Every request is kept in ``requests``; a
    request no route matches fails the test.
    """

    base_path: str
    routes: dict[Route, list[Reply]]
    requests: list[httpx.Request] = field(default_factory=list)
    served: dict[Route, int] = field(default_factory=lambda: defaultdict(int))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix(self.base_path)
        for (method, pattern), replies in self.routes.items():
            if request.method == method and re.fullmatch(pattern, path):
                count = self.served[(method, pattern)]
                self.served[(method, pattern)] += 1
                return replies[min(count, len(replies) - 1)].to_response()
        raise AssertionError(f"unexpected request {request.method} {request.url}")

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def sendhub_settings(recording: Recording, **overrides: Any) -> ProviderSettings:
    creds = recording.sendhub_credentials
    values: dict[str, Any] = dict(name="hostile-sendhub", type="sendhub", base_url=SENDHUB_BASE,
                                  username=creds["username"], api_key=Secret(creds["api_key"]),
                                  requests_per_second=0, max_concurrency=4, timeout_seconds=5)
    return ProviderSettings(**(values | overrides))


def smsend_settings(recording: Recording, *, login: bool = False, **overrides: Any) -> ProviderSettings:
    creds = recording.smsend_credentials
    auth: dict[str, Any] = (dict(username=creds["username"], password=Secret(creds["password"])) if login else
                            dict(user_key=creds["user_key"], access_token=Secret(creds["access_token"])))
    values: dict[str, Any] = dict(name="hostile-smsend", type="smsend", base_url=SMSEND_BASE,
                                  requests_per_second=0, max_concurrency=4, timeout_seconds=5, **auth)
    return ProviderSettings(**(values | overrides))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TRIED:
        return
    terminalreporter.section("hostile inputs: distinct malformed responses served per category")
    for category in sorted(TRIED):
        terminalreporter.write_line(f"{category:32s} {len(TRIED[category]):6d}")
    terminalreporter.write_line(f"{'total':32s} {sum(len(s) for s in TRIED.values()):6d}")
    if PAGES_BEFORE_ERROR:
        terminalreporter.write_line("listings that raised, by pages already received (all raised to the consumer):")
        for listing in sorted(PAGES_BEFORE_ERROR):
            spread = ", ".join(f"{n} pages: {c}" for n, c in sorted(PAGES_BEFORE_ERROR[listing].items()))
            terminalreporter.write_line(f"  {listing:30s} {spread}")

