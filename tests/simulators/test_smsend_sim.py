"""The smsend simulator over real HTTP on 127.0.0.1 (issue 3, smsend half).

Requests marked "as the seed's curl" reproduce SEED-000's curl examples: the same
method, path, header names in the same letter case, and the body text as written.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import phonenumbers
import pytest

from syncd.simulators.server import SimulatorServer, start_simulator
from syncd.simulators.smsend import MAX_BATCH, SESSION_IDLE_SECONDS, SmsendState

ID_RE = re.compile(r"[A-Za-z0-9]{20}")
CONTENT_TYPE = ("Content-Type", "application/json")
# SEED-000's group body, byte for byte (curl -d'...' keeps the newlines and the space after the comma).
SEED_GROUP_BODY = '\n{{\n    "name": "{name}", \n    "description": "{description}"\n}}\n'


class FakeClock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Api:
    """A logged-in view of one simulator: its URL, auth headers and state."""

    def __init__(self, sim: SimulatorServer, http: httpx.Client, auth: str) -> None:
        self.sim = sim
        self.http = http
        self.base = sim.base_url
        self.state: SmsendState = sim.state
        self.user_key = sim.credentials["user_key"]
        if auth == "session":
            response = http.get(f"{self.base}/login", params=self.login_params())
            user_key, session_key = response.text.split(";")
            self.auth_headers = [("user_key", user_key), ("Session_key", session_key)]
        else:
            self.auth_headers = [("user_key", self.user_key), ("Access_token", sim.credentials["access_token"])]

    def login_params(self) -> dict[str, str]:
        return {"username": self.sim.credentials["username"], "password": self.sim.credentials["password"]}

    def request(self, method: str, path: str, *, body: Any = None, params: Any = None, raw: str | None = None,
                headers: list[tuple[str, str]] | None = None) -> httpx.Response:
        """A request with the seed's headers (Content-Type, user_key, Session_key/Access_token)."""
        content = raw if raw is not None else (json.dumps(body) if body is not None else None)
        sent = [CONTENT_TYPE, *(self.auth_headers if headers is None else headers)]
        return self.http.request(method, self.base + path, content=content, params=params, headers=sent)

    def create_group(self, name: str = "Clienti", description: str = "d") -> str:
        response = self.request("POST", "/group", body={"name": name, "description": description})
        assert response.status_code == 201, response.text
        return response.headers["Location"].removeprefix("/group/")

    def create_contact(self, **fields: Any) -> str:
        response = self.request("POST", "/contact", body=fields)
        assert response.status_code == 201, response.text
        return response.headers["Location"].removeprefix("/contact/")

    def upsert(self, contacts: list[dict[str, Any]], **flags: Any) -> httpx.Response:
        return self.request("POST", "/contact", body={"contacts": contacts, **flags})

    def contact(self, contact_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/contact/{contact_id}")
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[SimulatorServer]:
    with start_simulator("smsend", seed=7, clock=clock) as server:
        yield server


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    # One client for the module: creating one builds an SSL context (tens of milliseconds).
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture(params=["session", "token"])
def api(request: pytest.FixtureRequest, sim: SimulatorServer, http: httpx.Client) -> Api:
    """Logged in with a session key, then (second run) with the access token."""
    return Api(sim, http, request.param)


@pytest.fixture
def session_api(sim: SimulatorServer, http: httpx.Client) -> Api:
    return Api(sim, http, "session")


def assert_error(response: httpx.Response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "code"} and isinstance(body["code"], int)
    assert fragment in body["error"]


def assert_empty(response: httpx.Response, status: int, location: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.content == b""
    assert response.headers.get("Location") == location


# --- authentication -----------------------------------------------------------


def test_login_answers_user_key_and_session_key_as_plain_text(sim: SimulatorServer, http: httpx.Client) -> None:
    creds = sim.credentials
    response = http.get(f"{sim.base_url}/login?username={creds['username']}&password={creds['password']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    user_key, session_key = response.text.split(";")
    assert user_key == creds["user_key"] and session_key and not response.text.endswith("\n")


def test_token_answers_user_key_and_access_token_by_query_and_basic_auth(
    sim: SimulatorServer, http: httpx.Client
) -> None:
    creds = sim.credentials
    expected = f"{creds['user_key']};{creds['access_token']}"
    by_query = http.get(f"{sim.base_url}/token", params={"username": creds["username"], "password": creds["password"]})
    basic = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    by_basic = http.get(f"{sim.base_url}/token", headers={"Authorization": f"Basic {basic}"})
    for response in (by_query, by_basic):
        assert response.status_code == 200 and response.text == expected
        assert response.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("endpoint", ["login", "token"])
def test_bad_credentials_are_404_and_missing_ones_400(
    sim: SimulatorServer, http: httpx.Client, endpoint: str
) -> None:
    url = f"{sim.base_url}/{endpoint}"
    assert_error(http.get(url, params={"username": sim.credentials["username"], "password": "nope"}), 404)
    assert_error(http.get(url, params={"username": "nobody", "password": sim.credentials["password"]}), 404)
    assert_error(http.get(url), 400)


def test_token_with_wrong_basic_auth_is_404(sim: SimulatorServer, http: httpx.Client) -> None:
    response = http.get(f"{sim.base_url}/token", auth=(sim.credentials["username"], "wrong"))
    assert_error(response, 404)


@pytest.mark.parametrize(
    "names",
    [("User-Key", "Session-Key"), ("User-Key", "Session_key"), ("user_key", "Session-Key")],
)
def test_hyphenated_header_names_are_rejected_with_401(session_api: Api, names: tuple[str, str]) -> None:
    (_, user_key), (_, session_key) = session_api.auth_headers
    headers = [(names[0], user_key), (names[1], session_key)]
    assert_error(session_api.request("GET", "/groups", headers=headers), 401)


def test_hyphenated_access_token_is_rejected_with_401(session_api: Api, sim: SimulatorServer) -> None:
    headers = [("user_key", session_api.user_key), ("Access-Token", sim.credentials["access_token"])]
    assert_error(session_api.request("GET", "/groups", headers=headers), 401)


def test_header_names_match_in_any_letter_case(session_api: Api, sim: SimulatorServer) -> None:
    (_, user_key), (_, session_key) = session_api.auth_headers
    for headers in (
        [("USER_KEY", user_key), ("session_KEY", session_key)],
        [("User_Key", user_key), ("ACCESS_TOKEN", sim.credentials["access_token"])],
    ):
        assert session_api.request("GET", "/groups", headers=headers).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("user_key", "WRONG")],
        [("Session_key", "x")],
        [("user_key", "{user_key}")],
        [("user_key", "{user_key}"), ("Session_key", "not-a-session")],
        [("user_key", "{user_key}"), ("Access_token", "not-the-token")],
        [("user_key", "WRONG"), ("Access_token", "{token}")],
    ],
)
def test_missing_or_invalid_keys_are_401(
    session_api: Api, sim: SimulatorServer, headers: list[tuple[str, str]]
) -> None:
    filled = [
        (name, value.format(user_key=session_api.user_key, token=sim.credentials["access_token"]))
        for name, value in headers
    ]
    assert_error(session_api.request("GET", "/groups", headers=filled), 401)


def test_session_key_expires_after_five_idle_minutes(session_api: Api, clock: FakeClock) -> None:
    clock.advance(SESSION_IDLE_SECONDS - 1)
    assert session_api.request("GET", "/groups").status_code == 200  # a call renews the idle timer
    clock.advance(SESSION_IDLE_SECONDS - 1)
    assert session_api.request("GET", "/groups").status_code == 200
    clock.advance(SESSION_IDLE_SECONDS)
    assert_error(session_api.request("GET", "/groups"), 401)
    clock.advance(-SESSION_IDLE_SECONDS)  # an expired key stays dead
    assert_error(session_api.request("GET", "/groups"), 401)


def test_access_token_does_not_expire(sim: SimulatorServer, http: httpx.Client, clock: FakeClock) -> None:
    api = Api(sim, http, "token")
    clock.advance(365 * 24 * 3600)
    assert api.request("GET", "/groups").status_code == 200


def test_expire_sessions_ends_every_session_but_a_new_login_works(session_api: Api, sim: SimulatorServer,
                                                                  http: httpx.Client) -> None:
    sim.state.expire_sessions()
    assert_error(session_api.request("GET", "/groups"), 401)
    assert Api(sim, http, "session").request("GET", "/groups").status_code == 200


def test_underscore_headers_reach_the_app_through_uvicorn(session_api: Api) -> None:
    # The premise of the header rule: the HTTP stack must not drop or rewrite underscore names.
    (_, user_key), (_, session_key) = session_api.auth_headers
    raw = [(b"user_key", user_key.encode()), (b"Session_key", session_key.encode())]
    response = session_api.http.request("GET", session_api.base + "/groups", headers=raw)
    assert response.status_code == 200


# --- groups, as SEED-000's curl examples ----------------------------------------


def test_create_group_as_the_seed_curl(api: Api) -> None:
    raw = SEED_GROUP_BODY.format(name="Clienti VIP", description="I migliori")
    response = api.request("POST", "/group", raw=raw)
    location = response.headers.get("Location", "")
    assert_empty(response, 201, location)
    group_id = location.removeprefix("/group/")
    assert location.startswith("/group/") and ID_RE.fullmatch(group_id)
    group = api.state.groups[group_id]
    assert (group.name, group.description) == ("Clienti VIP", "I migliori")


def test_modify_group_as_the_seed_curl(api: Api) -> None:
    group_id = api.create_group("Old", "old")
    raw = SEED_GROUP_BODY.format(name="New", description="new")
    assert_empty(api.request("PUT", f"/group/{group_id}", raw=raw), 200, f"/group/{group_id}")
    group = api.state.groups[group_id]
    assert (group.name, group.description) == ("New", "new")


def test_delete_group_as_the_seed_curl_keeps_its_contacts(api: Api) -> None:
    group_id = api.create_group()
    contact_id = api.create_contact(phoneNumber="+393331234567", groupIds=[group_id])
    assert_empty(api.request("DELETE", f"/group/{group_id}"), 200, None)
    assert group_id not in api.state.groups
    assert api.contact(contact_id)["groupIds"] == []


def test_list_groups_as_the_seed_curl(api: Api) -> None:
    ids = [api.create_group(f"G{i}", f"desc {i}") for i in range(7)]
    response = api.request("GET", "/groups")
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["groups", "pageNumber", "pageSize", "Total"]
    assert (body["pageNumber"], body["pageSize"], body["Total"]) == (1, 5, 7)
    assert body["groups"][0] == {"id_group": ids[0], "group_name": "G0", "group_description": "desc 0"}
    assert [g["id_group"] for g in body["groups"]] == ids[:5]


def test_add_contact_to_group_as_the_seed_curl_is_idempotent(api: Api) -> None:
    group_id = api.create_group()
    contact_id = api.create_contact(phoneNumber="+393331234567")
    for _ in range(2):
        response = api.request("POST", f"/group/{group_id}/contact/{contact_id}")
        assert_empty(response, 200, f"/contact/{contact_id}")
    assert api.contact(contact_id)["groupIds"] == [group_id]
    assert api.state.snapshot()["memberships"] == [(group_id, contact_id)]


def test_remove_contact_from_group_as_the_seed_curl_is_idempotent(api: Api) -> None:
    group_id = api.create_group()
    contact_id = api.create_contact(phoneNumber="+393331234567", groupIds=[group_id])
    for _ in range(2):
        response = api.request("DELETE", f"/group/{group_id}/contact/{contact_id}")
        assert_empty(response, 200, f"/contact/{contact_id}")
    assert api.contact(contact_id)["groupIds"] == []


# --- group errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"description": "d"}, "name"),
        ({"name": "n"}, "description"),
        ({"name": "", "description": "d"}, "name"),
        ({"name": "   ", "description": "d"}, "name"),
        ({"name": 5, "description": "d"}, "name"),
        ({"name": "n", "description": "d", "extra": 1}, "extra"),
        ([], "object"),
    ],
)
@pytest.mark.parametrize("method", ["POST", "PUT"])
def test_invalid_group_bodies_are_400(session_api: Api, body: Any, fragment: str, method: str) -> None:
    path = "/group" if method == "POST" else f"/group/{session_api.create_group()}"
    assert_error(session_api.request(method, path, body=body), 400, fragment)
    assert len(session_api.state.groups) == (0 if method == "POST" else 1)


def test_group_body_that_is_not_json_is_400(session_api: Api) -> None:
    assert_error(session_api.request("POST", "/group", raw="{name: x"), 400)


def test_duplicate_group_names_are_allowed(session_api: Api) -> None:
    first, second = session_api.create_group("Same"), session_api.create_group("Same")
    assert first != second and len(session_api.state.groups) == 2


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/group/NoSuchGroup0000000000"),
        ("DELETE", "/group/NoSuchGroup0000000000"),
        ("POST", "/group/NoSuchGroup0000000000/contact/{cid}"),
        ("DELETE", "/group/NoSuchGroup0000000000/contact/{cid}"),
        ("POST", "/group/{gid}/contact/NoSuchContact00000000"),
        ("DELETE", "/group/{gid}/contact/NoSuchContact00000000"),
    ],
)
def test_unknown_group_or_contact_id_is_400_not_404(session_api: Api, method: str, path: str) -> None:
    gid = session_api.create_group()
    cid = session_api.create_contact(phoneNumber="+393331234567")
    body = {"name": "n", "description": "d"} if method == "PUT" else None
    assert_error(session_api.request(method, path.format(gid=gid, cid=cid), body=body), 400, "invalid")


def test_locked_address_book_refuses_the_four_documented_calls(session_api: Api) -> None:
    gid = session_api.create_group()
    cid = session_api.create_contact(phoneNumber="+393331234567", groupIds=[gid])
    session_api.state.locked = True
    calls = [
        ("PUT", f"/group/{gid}", {"name": "n", "description": "d"}),
        ("DELETE", f"/group/{gid}", None),
        ("POST", f"/group/{gid}/contact/{cid}", None),
        ("DELETE", f"/group/{gid}/contact/{cid}", None),
    ]
    before = session_api.state.snapshot()
    for method, path, body in calls:
        assert_error(session_api.request(method, path, body=body), 400, "locked")
    assert session_api.state.snapshot() == before
    # Other calls are not affected.
    assert session_api.request("GET", "/groups").status_code == 200
    session_api.create_group("still possible")
    session_api.state.locked = False
    assert session_api.request("DELETE", f"/group/{gid}").status_code == 200


def test_lock_through_the_admin_interface(session_api: Api, sim: SimulatorServer) -> None:
    url = f"{sim.root_url}/_admin/actions/lock"
    response = session_api.http.post(url, json={"locked": True}, headers={"X-Admin-Token": sim.admin_token})
    assert response.status_code == 200 and sim.state.locked
    gid = session_api.create_group()
    assert_error(session_api.request("DELETE", f"/group/{gid}"), 400, "locked")


def test_delete_group_with_deletecontacts_true_deletes_its_contacts(session_api: Api) -> None:
    doomed, other = session_api.create_group("doomed"), session_api.create_group("other")
    inside = session_api.create_contact(phoneNumber="+393331111111", groupIds=[doomed, other])
    outside = session_api.create_contact(phoneNumber="+393332222222", groupIds=[other])
    response = session_api.request("DELETE", f"/group/{doomed}", params={"deletecontacts": "true"})
    assert_empty(response, 200, None)
    assert inside not in session_api.state.contacts
    assert session_api.state.contacts_by_phone("+393331111111") == []
    assert_error(session_api.request("GET", f"/contact/{inside}"), 404)
    assert session_api.contact(outside)["groupIds"] == [other]
    assert session_api.state.snapshot()["memberships"] == [(other, outside)]


def test_delete_group_with_deletecontacts_false_keeps_contacts(session_api: Api) -> None:
    gid = session_api.create_group()
    cid = session_api.create_contact(phoneNumber="+393331111111", groupIds=[gid])
    assert session_api.request("DELETE", f"/group/{gid}", params={"deletecontacts": "false"}).status_code == 200
    assert session_api.contact(cid)["groupIds"] == []


def test_deletecontacts_other_than_true_or_false_is_400(session_api: Api) -> None:
    gid = session_api.create_group()
    assert_error(session_api.request("DELETE", f"/group/{gid}", params={"deletecontacts": "yes"}), 400)
    assert gid in session_api.state.groups


# --- pagination ---------------------------------------------------------------


def walk_pages(api: Api, page_size: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Every group id, page by page until an empty page; and every page body."""
    ids: list[str] = []
    pages = []
    for page in range(1, 100):
        body = api.request("GET", "/groups", params={"pageNumber": page, "pageSize": page_size}).json()
        pages.append(body)
        if not body["groups"]:
            return ids, pages
        ids += [g["id_group"] for g in body["groups"]]
    raise AssertionError("paging never ended")


@pytest.mark.parametrize(("total", "page_size", "sizes"), [
    (0, 5, [0]),
    (1, 5, [1, 0]),
    (10, 5, [5, 5, 0]),
    (7, 5, [5, 2, 0]),
    (7, 3, [3, 3, 1, 0]),
    (7, 100, [7, 0]),
])
def test_pages_cover_every_group_once_in_creation_order(
    session_api: Api, total: int, page_size: int, sizes: list[int]
) -> None:
    created = [session_api.create_group(f"G{i}") for i in range(total)]
    ids, pages = walk_pages(session_api, page_size)
    assert ids == created
    assert [len(p["groups"]) for p in pages] == sizes
    assert all(p["Total"] == total and p["pageSize"] == page_size for p in pages)
    assert [p["pageNumber"] for p in pages] == list(range(1, len(sizes) + 1))


def test_page_far_past_the_end_is_empty_200(session_api: Api) -> None:
    session_api.create_group()
    response = session_api.request("GET", "/groups", params={"pageNumber": 1000})
    assert response.status_code == 200
    assert response.json() == {"groups": [], "pageNumber": 1000, "pageSize": 5, "Total": 1}


@pytest.mark.parametrize("params", [{"pageNumber": "0"}, {"pageSize": "0"}, {"pageNumber": "x"}, {"pageSize": "-1"}])
def test_invalid_page_parameters_are_400(session_api: Api, params: dict[str, str]) -> None:
    assert_error(session_api.request("GET", "/groups", params=params), 400)


# --- single contact -------------------------------------------------------------

FULL_CONTACT = {
    "email": "mario.rossi@example.com",
    "phoneNumber": "+393471234567",
    "name": "Mario",
    "surname": "Rossi",
    "gender": "m",
    "fax": "0212345678",
    "address": "Via Roma 1",
    "city": "Milano",
    "province": "MI",
    "birthdate": "19800131",
    "promotiondate": "2024-01-31 10:00",
    "rememberdate": "310124",
    "zip": "20121",
    **{f"custom{i}": f"value {i}" for i in range(1, 11)},
}


def test_create_contact_answers_201_location_and_get_echoes_it(api: Api) -> None:
    gid = api.create_group()
    response = api.request("POST", "/contact", body={**FULL_CONTACT, "groupIds": [gid]})
    location = response.headers.get("Location", "")
    assert_empty(response, 201, location)
    contact_id = location.removeprefix("/contact/")
    assert location.startswith("/contact/") and ID_RE.fullmatch(contact_id)
    assert api.contact(contact_id) == {"id": contact_id, **FULL_CONTACT, "groupIds": [gid]}


def test_get_contact_fills_absent_fields_with_empty_strings(session_api: Api) -> None:
    contact_id = session_api.create_contact(email="only@example.com")
    body = session_api.contact(contact_id)
    assert body["email"] == "only@example.com" and body["phoneNumber"] == "" and body["custom10"] == ""
    assert body["groupIds"] == []


def test_get_unknown_contact_is_404(session_api: Api) -> None:
    assert_error(session_api.request("GET", "/contact/NoSuchContact00000000"), 404, "The given contactid was not found")


@pytest.mark.parametrize(("sent", "stored"), [
    ("+393331234567", "+393331234567"),
    ("3331234567", "+393331234567"),
    ("00393331234567", "+393331234567"),
    ("+16501234567", "+16501234567"),
    ("0612345678", "+390612345678"),
])
def test_phone_numbers_are_stored_in_e164_and_national_ones_read_as_italian(
    session_api: Api, sent: str, stored: str
) -> None:
    contact_id = session_api.create_contact(phoneNumber=sent)
    assert session_api.contact(contact_id)["phoneNumber"] == stored
    assert [c.id for c in session_api.state.contacts_by_phone(stored)] == [contact_id]


@pytest.mark.parametrize("fmt_value", ["310124", "20240131", "3101241030", "20240131103000",
                                       "2024-01-31 10:30", "2024-01-31 10:30.0"])
def test_the_six_date_formats_are_accepted(session_api: Api, fmt_value: str) -> None:
    for field_name in ("birthdate", "promotiondate", "rememberdate"):
        session_api.create_contact(phoneNumber="+393331234567", **{field_name: fmt_value})


@pytest.mark.parametrize(("field_name", "limit"), [
    ("name", 40), ("surname", 40), ("fax", 32), ("city", 32), ("province", 32), ("address", 256), ("zip", 16),
])
def test_length_limits_accept_the_limit_and_refuse_one_more(session_api: Api, field_name: str, limit: int) -> None:
    session_api.create_contact(phoneNumber="+393331234567", **{field_name: "x" * limit})
    too_long = {"phoneNumber": "+393331234567", field_name: "x" * (limit + 1)}
    response = session_api.request("POST", "/contact", body=too_long)
    assert_error(response, 400, f"{field_name}: longer than {limit} characters")


INVALID_CONTACTS = [
    pytest.param({"name": "Mario"}, "at least one of email and phoneNumber", id="no-email-no-phone"),
    pytest.param({"email": "", "phoneNumber": ""}, "at least one of email and phoneNumber", id="both-empty"),
    pytest.param({"phoneNumber": "+39333"}, "phoneNumber", id="phone-too-short"),
    pytest.param({"phoneNumber": "+39 333 1234567"}, "phoneNumber", id="phone-with-spaces"),
    pytest.param({"phoneNumber": "call me"}, "phoneNumber", id="phone-letters"),
    pytest.param({"phoneNumber": "+1234567890123456"}, "phoneNumber", id="phone-16-digits"),
    pytest.param({"phoneNumber": "123456789012345"}, "phoneNumber", id="national-becomes-17-digits"),
    pytest.param({"phoneNumber": 3331234567}, "phoneNumber: must be a string", id="phone-number-type"),
    pytest.param({"email": "not-an-email"}, "email", id="bad-email"),
    pytest.param({"phoneNumber": "+393331234567", "gender": "x"}, "gender", id="gender"),
    pytest.param({"phoneNumber": "+393331234567", "gender": "M"}, "gender", id="gender-upper"),
    pytest.param({"phoneNumber": "+393331234567", "birthdate": "31/01/1980"}, "birthdate", id="date-slashes"),
    pytest.param({"phoneNumber": "+393331234567", "birthdate": "19801331"}, "birthdate", id="date-month-13"),
    pytest.param({"phoneNumber": "+393331234567", "promotiondate": "2024-01-31"}, "promotiondate", id="date-no-time"),
    pytest.param({"phoneNumber": "+393331234567", "rememberdate": "2024-01-31 10:30:00"}, "rememberdate",
                 id="date-seconds"),
    pytest.param({"phoneNumber": "+393331234567", "name": None}, "name: must be a string", id="null"),
    pytest.param({"phoneNumber": "+393331234567", "nickname": "x"}, "nickname: unknown field", id="unknown-field"),
    pytest.param({"phoneNumber": "+393331234567", "groupIds": ["NoSuchGroup0000000000"]}, "groupIds", id="group"),
    pytest.param({"phoneNumber": "+393331234567", "groupIds": "abc"}, "groupIds", id="groupIds-not-list"),
    pytest.param({"phoneNumber": "+393331234567", "groupIds": [1]}, "groupIds", id="groupIds-int"),
]


@pytest.mark.parametrize(("body", "fragment"), INVALID_CONTACTS)
def test_invalid_single_contact_is_400_and_saves_nothing(session_api: Api, body: dict[str, Any], fragment: str) -> None:
    assert_error(session_api.request("POST", "/contact", body=body), 400, fragment)
    assert session_api.state.contacts == {}


def test_single_create_of_an_existing_number_makes_a_duplicate(session_api: Api) -> None:
    first = session_api.create_contact(phoneNumber="+393331234567", name="A")
    second = session_api.create_contact(phoneNumber="3331234567", name="B")
    assert first != second
    assert [c.id for c in session_api.state.contacts_by_phone("+393331234567")] == [first, second]


def test_contact_body_that_is_not_json_is_400(session_api: Api) -> None:
    assert_error(session_api.request("POST", "/contact", raw="phoneNumber=1"), 400, "JSON")


# --- add multiple (the upsert) ----------------------------------------------------


def test_add_multiple_answers_200_and_a_bare_count(session_api: Api) -> None:
    gid = session_api.create_group()
    contacts = [{"phoneNumber": f"+3933312345{i:02d}", "name": f"N{i}", "groupIds": [gid]} for i in range(3)]
    response = session_api.upsert(contacts)
    assert response.status_code == 200 and response.text == "3" and response.json() == 3
    assert "Location" not in response.headers
    stored = [session_api.state.contacts_by_phone(c["phoneNumber"])[0] for c in contacts]
    assert [c.fields["name"] for c in stored] == ["N0", "N1", "N2"]
    assert all(list(c.groups) == [gid] for c in stored)


def test_add_multiple_is_all_or_nothing_and_names_the_bad_contact(session_api: Api) -> None:
    good = [{"phoneNumber": f"+3933312345{i:02d}"} for i in range(5)]
    bad = [*good[:3], {"phoneNumber": "+393339999999", "name": "x" * 41}, *good[3:]]
    response = session_api.upsert(bad)
    assert_error(response, 400, "contacts[3].name: longer than 40 characters")
    assert session_api.state.contacts == {}


def test_add_multiple_with_an_unknown_group_saves_nothing(session_api: Api) -> None:
    gid = session_api.create_group()
    contacts = [{"phoneNumber": "+393331111111", "groupIds": [gid]},
                {"phoneNumber": "+393332222222", "groupIds": [gid, "NoSuchGroup0000000000"]}]
    assert_error(session_api.upsert(contacts), 400, "contacts[1].groupIds")
    assert session_api.state.contacts == {}


def test_add_multiple_over_the_batch_limit_is_400(session_api: Api) -> None:
    contacts = [{"phoneNumber": f"+39333{i:07d}"} for i in range(MAX_BATCH + 1)]
    assert_error(session_api.upsert(contacts), 400, str(MAX_BATCH))
    assert session_api.state.contacts == {}
    response = session_api.upsert(contacts[:MAX_BATCH])
    assert response.status_code == 200 and response.json() == MAX_BATCH
    assert len(session_api.state.contacts) == MAX_BATCH


@pytest.mark.parametrize(("body", "fragment"), [
    ({"contacts": "x"}, "contacts"),
    ({"contacts": [{"phoneNumber": "+393331111111"}], "updateExistingContact": "true"}, "updateExistingContact"),
    ({"contacts": [], "keepExistingGroupsAndCampaigns": 1}, "keepExistingGroupsAndCampaigns"),
    ({"contacts": [], "campaign": 1}, "campaign"),
    ({"contacts": [5]}, "contacts[0]"),
])
def test_malformed_add_multiple_bodies_are_400(session_api: Api, body: dict[str, Any], fragment: str) -> None:
    assert_error(session_api.request("POST", "/contact", body=body), 400, fragment)


def test_update_existing_true_updates_in_place_and_sets_groups_exactly(session_api: Api) -> None:
    old_group, new_group = session_api.create_group("old"), session_api.create_group("new")
    cid = session_api.create_contact(phoneNumber="+393331234567", name="Mario", city="Roma", groupIds=[old_group])
    response = session_api.upsert([{"phoneNumber": "3331234567", "name": "Luigi", "groupIds": [new_group]}],
                                  updateExistingContact=True)
    assert response.json() == 1
    body = session_api.contact(cid)
    assert (body["name"], body["city"], body["groupIds"]) == ("Luigi", "Roma", [new_group])
    assert len(session_api.state.contacts) == 1
    assert session_api.state.snapshot()["memberships"] == [(new_group, cid)]


def test_update_existing_true_with_keep_adds_groups(session_api: Api) -> None:
    old_group, new_group = session_api.create_group("old"), session_api.create_group("new")
    cid = session_api.create_contact(phoneNumber="+393331234567", groupIds=[old_group])
    session_api.upsert([{"phoneNumber": "+393331234567", "groupIds": [new_group]}],
                       updateExistingContact=True, keepExistingGroupsAndCampaigns=True)
    assert session_api.contact(cid)["groupIds"] == [old_group, new_group]


def test_update_existing_false_drops_and_inserts_with_a_new_id(session_api: Api) -> None:
    old_group, new_group = session_api.create_group("old"), session_api.create_group("new")
    old_id = session_api.create_contact(phoneNumber="+393331234567", city="Roma", groupIds=[old_group])
    response = session_api.upsert([{"phoneNumber": "+393331234567", "name": "New", "groupIds": [new_group]}],
                                  updateExistingContact=False)
    assert response.json() == 1
    assert_error(session_api.request("GET", f"/contact/{old_id}"), 404)
    [replacement] = session_api.state.contacts_by_phone("+393331234567")
    assert replacement.id != old_id and ID_RE.fullmatch(replacement.id)
    body = session_api.contact(replacement.id)
    assert (body["name"], body["city"], body["groupIds"]) == ("New", "", [new_group])
    assert session_api.state.groups[old_group].members == {}


def test_update_existing_false_with_keep_carries_the_old_groups(session_api: Api) -> None:
    old_group, new_group = session_api.create_group("old"), session_api.create_group("new")
    session_api.create_contact(phoneNumber="+393331234567", groupIds=[old_group])
    session_api.upsert([{"phoneNumber": "+393331234567", "groupIds": [new_group]}],
                       keepExistingGroupsAndCampaigns=True)
    [replacement] = session_api.state.contacts_by_phone("+393331234567")
    assert list(replacement.groups) == [old_group, new_group]


def test_flags_default_to_false(session_api: Api) -> None:
    group = session_api.create_group()
    old_id = session_api.create_contact(phoneNumber="+393331234567", groupIds=[group])
    session_api.upsert([{"phoneNumber": "+393331234567"}])
    [replacement] = session_api.state.contacts_by_phone("+393331234567")
    assert replacement.id != old_id and list(replacement.groups) == []


def test_contacts_without_a_number_clash_on_email_case_insensitively(session_api: Api) -> None:
    cid = session_api.create_contact(email="Anna@Example.com", name="Anna")
    session_api.upsert([{"email": "anna@example.com", "name": "Anna B"}], updateExistingContact=True)
    assert session_api.contact(cid)["name"] == "Anna B" and len(session_api.state.contacts) == 1
    session_api.upsert([{"email": "other@example.com"}], updateExistingContact=True)
    assert len(session_api.state.contacts) == 2


def test_a_number_never_clashes_on_email(session_api: Api) -> None:
    session_api.create_contact(email="anna@example.com")
    session_api.upsert([{"email": "anna@example.com", "phoneNumber": "+393331234567"}], updateExistingContact=True)
    assert len(session_api.state.contacts) == 2


def test_entries_of_one_batch_clash_with_each_other(session_api: Api) -> None:
    response = session_api.upsert([{"phoneNumber": "+393331234567", "name": "first"},
                                   {"phoneNumber": "3331234567", "surname": "second"}],
                                  updateExistingContact=True)
    assert response.json() == 2
    [contact] = session_api.state.contacts_by_phone("+393331234567")
    assert (contact.fields["name"], contact.fields["surname"]) == ("first", "second")


def test_upsert_updates_every_duplicate_of_a_number(session_api: Api) -> None:
    first = session_api.create_contact(phoneNumber="+393331234567")
    second = session_api.create_contact(phoneNumber="+393331234567")
    session_api.upsert([{"phoneNumber": "+393331234567", "name": "Both"}], updateExistingContact=True)
    assert session_api.contact(first)["name"] == session_api.contact(second)["name"] == "Both"


# --- blacklist ----------------------------------------------------------------


def test_blacklist_a_contact_by_id(session_api: Api) -> None:
    cid = session_api.create_contact(phoneNumber="3331234567")
    response = session_api.request("POST", f"/contact/add_to_blacklist/{cid}")
    assert response.status_code == 200 and response.json() is True
    assert session_api.state.snapshot()["blacklist"] == ["+393331234567"]


def test_blacklist_an_unknown_contact_is_404(session_api: Api) -> None:
    response = session_api.request("POST", "/contact/add_to_blacklist/NoSuchContact00000000")
    assert_error(response, 404, "Contact not found")


def test_blacklist_a_contact_without_a_number_is_400(session_api: Api) -> None:
    cid = session_api.create_contact(email="a@example.com")
    assert_error(session_api.request("POST", f"/contact/add_to_blacklist/{cid}"), 400, "no phone number")


def test_blacklist_batch_counts_and_is_all_or_nothing(session_api: Api) -> None:
    ids = [session_api.create_contact(phoneNumber=f"+39333123456{i}") for i in range(3)]
    bad = session_api.request("POST", "/contact/add_to_blacklist_batch", body=[*ids, "NoSuchContact00000000"])
    assert_error(bad, 400, "NoSuchContact00000000")
    assert session_api.state.blacklist == {}
    response = session_api.request("POST", "/contact/add_to_blacklist_batch", body=ids)
    assert response.status_code == 200 and response.json() == 3
    assert len(session_api.state.blacklist) == 3


def test_blacklist_a_phone_number(session_api: Api) -> None:
    response = session_api.request("POST", "/contacts/add_to_blacklist", params={"phoneNumber": "+393331234567"})
    assert response.status_code == 200 and response.json() is True
    assert "+393331234567" in session_api.state.blacklist
    assert_error(session_api.request("POST", "/contacts/add_to_blacklist", params={"phoneNumber": "abc"}), 400)
    assert_error(session_api.request("POST", "/contacts/add_to_blacklist"), 400)


def test_deleting_a_contact_keeps_its_number_blacklisted(session_api: Api) -> None:
    gid = session_api.create_group()
    cid = session_api.create_contact(phoneNumber="+393331234567", groupIds=[gid])
    session_api.request("POST", f"/contact/add_to_blacklist/{cid}")
    session_api.request("DELETE", f"/group/{gid}", params={"deletecontacts": "true"})
    assert session_api.state.snapshot()["blacklist"] == ["+393331234567"]


def test_every_way_into_the_blacklist_fills_one_list_with_origin_api(session_api: Api) -> None:
    cid = session_api.create_contact(phoneNumber="+393331234560")
    session_api.request("POST", f"/contact/add_to_blacklist/{cid}")
    session_api.request("POST", "/contacts/add_to_blacklist", params={"phoneNumber": "+393331234561"})
    session_api.request("POST", "/blacklist/sms", params={"phoneNumber": "00393331234562"})
    listed = blacklist(session_api, pageSize=10)
    assert [(e["phoneNumber"], e["origin"]) for e in listed["blacklist"]] == [
        ("+393331234560", "API"), ("+393331234561", "API"), ("+393331234562", "API")]
    assert (listed["pageNumber"], listed["pageSize"], listed["Total"]) == (1, 10, 3)
    assert set(listed) == {"blacklist", "pageNumber", "pageSize", "Total"}


# --- the SMS blacklist API (providers.md 1.2.5) ------------------------------------


def blacklist(api: Api, **params: Any) -> dict[str, Any]:
    response = api.request("GET", "/blacklist/sms", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def numbers(listing: dict[str, Any]) -> list[str]:
    return [entry["phoneNumber"] for entry in listing["blacklist"]]


def stamp(text: str) -> float:
    """Epoch seconds of a UTC ``yyyy-MM-dd HH:mm:ss``."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


def test_blacklist_list_is_paged_oldest_first_with_default_page_size_five(session_api: Api) -> None:
    for i in range(7):
        session_api.state.play_stop(f"+39333000000{i}", at=stamp(f"2026-03-01 10:00:0{i}"))
    first, second = blacklist(session_api), blacklist(session_api, pageNumber=2)
    assert (first["pageNumber"], first["pageSize"], first["Total"]) == (1, 5, 7)
    assert numbers(first) + numbers(second) == [f"+39333000000{i}" for i in range(7)]
    assert blacklist(session_api, pageNumber=3)["blacklist"] == []
    assert numbers(blacklist(session_api, pageNumber=2, pageSize=3)) == ["+393330000003", "+393330000004",
                                                                         "+393330000005"]


def test_a_played_stop_and_a_web_entry_carry_their_origin_and_time(session_api: Api) -> None:
    session_api.state.play_stop("+393330000001", at="2026-03-01 10:00:00")
    session_api.state.blacklist_from_web("+393330000002", at="2026-03-01 11:30:00")
    listed = blacklist(session_api, timezone="UTC")["blacklist"]
    assert listed == [
        {"phoneNumber": "+393330000001", "origin": "STOPSMS", "insertDate": "2026-03-01 10:00:00"},
        {"phoneNumber": "+393330000002", "origin": "WEB", "insertDate": "2026-03-01 11:30:00"},
    ]
    session_api.request("POST", "/blacklist/sms", params={"phoneNumber": "+393330000001"})
    assert blacklist(session_api, timezone="UTC")["blacklist"][0]["origin"] == "STOPSMS", "the first opt-out stays"


def test_from_and_to_are_inclusive_and_read_in_the_timezone_given(session_api: Api) -> None:
    for i, hour in enumerate((9, 10, 11, 12)):
        session_api.state.play_stop(f"+39333000000{i}", at=f"2026-03-01 {hour:02d}:00:00")
    since = blacklist(session_api, **{"from": "2026-03-01 10:00:00", "timezone": "UTC"})
    assert numbers(since) == ["+393330000001", "+393330000002", "+393330000003"] and since["Total"] == 3
    window = blacklist(session_api, **{"from": "2026-03-01 10:00:01", "to": "2026-03-01 11:00:00", "timezone": "UTC"})
    assert numbers(window) == ["+393330000002"]
    rome = blacklist(session_api, **{"from": "2026-03-01 12:00:00"})  # no timezone: Europe/Rome (UTC+1 in March)
    assert numbers(rome) == ["+393330000002", "+393330000003"]
    assert rome["blacklist"][0]["insertDate"] == "2026-03-01 12:00:00", "insertDate is written in that zone too"
    new_york = blacklist(session_api, **{"to": "2026-03-01 05:00:00", "timezone": "America/New_York"})
    assert numbers(new_york) == ["+393330000000", "+393330000001"]


def test_number_and_origins_filter(session_api: Api) -> None:
    session_api.state.play_stop("+393331112222")
    session_api.state.blacklist_from_web("+393334445555")
    session_api.request("POST", "/blacklist/sms", params={"phoneNumber": "+447400987654"})
    assert numbers(blacklist(session_api, number="1112")) == ["+393331112222"]
    assert numbers(blacklist(session_api, number="+44")) == ["+447400987654"]
    assert numbers(blacklist(session_api, origins="WEB,STOPSMS")) == ["+393331112222", "+393334445555"]
    assert numbers(blacklist(session_api, origins="API")) == ["+447400987654"]
    assert blacklist(session_api, origins="API", number="3933")["Total"] == 0


def test_insert_times_come_from_the_wall_clock_and_never_go_back(session_api: Api) -> None:
    session_api.state.wall_clock = lambda: stamp("2026-03-01 10:00:00")
    session_api.request("POST", "/blacklist/sms", params={"phoneNumber": "+393330000001"})
    session_api.state.wall_clock = lambda: stamp("2026-03-01 09:00:00")  # the host's clock stepped back
    session_api.request("POST", "/blacklist/sms", params={"phoneNumber": "+393330000002"})
    dates = [e["insertDate"] for e in blacklist(session_api, timezone="UTC")["blacklist"]]
    assert dates == ["2026-03-01 10:00:00", "2026-03-01 10:00:00"]


@pytest.mark.parametrize("params", [
    {"from": "2026-03-01"}, {"from": "2026-03-01T10:00:00"}, {"to": "01-03-2026 10:00:00"},
    {"to": "2026-02-30 10:00:00"}, {"timezone": "Mars/Olympus"}, {"timezone": ""}, {"origins": "SMS"},
    {"origins": "API,"}, {"origins": "api"}, {"number": "39 333"}, {"number": "abc"}, {"pageNumber": "0"},
    {"pageNumber": "x"}, {"pageSize": "-1"}, {"pageSize": "1.5"},
])
def test_badly_formatted_list_parameters_are_400(session_api: Api, params: dict[str, str]) -> None:
    response = session_api.request("GET", "/blacklist/sms", params=params)
    assert_error(response, 400, "Some of the parameters specified were badly formatted")
    assert next(iter(params)) in response.json()["error"]


def test_add_a_number_takes_plus_or_00_and_refuses_the_rest(session_api: Api) -> None:
    for raw in ("+393330000001", "00393330000002"):
        response = session_api.request("POST", "/blacklist/sms", params={"phoneNumber": raw})
        assert response.status_code == 200 and response.json() is True
    for raw in ("3330000003", "+39 333 0000003", "abc", ""):
        assert_error(session_api.request("POST", "/blacklist/sms", params={"phoneNumber": raw}), 400,
                     "Invalid recipient")
    assert_error(session_api.request("POST", "/blacklist/sms"), 400, "Invalid recipient")
    assert sorted(session_api.state.blacklist) == ["+393330000001", "+393330000002"]


def test_add_several_numbers_is_all_or_nothing_and_answers_the_count(session_api: Api) -> None:
    good = ["+393330000001", "00393330000002", "+393330000001"]
    bad = session_api.request("POST", "/blacklist/smsbatch", body=[*good, "3330000003"])
    assert_error(bad, 400, "Some of the phone numbers specified were badly formatted")
    assert session_api.state.blacklist == {}
    assert_error(session_api.request("POST", "/blacklist/smsbatch", body={"numbers": good}), 400)
    assert_error(session_api.request("POST", "/blacklist/smsbatch", raw="[not json"), 400)
    response = session_api.request("POST", "/blacklist/smsbatch", body=good)
    assert response.status_code == 200 and response.json() == 2
    assert [e["origin"] for e in blacklist(session_api)["blacklist"]] == ["API", "API"]


def test_blacklist_hooks_through_the_admin_interface(session_api: Api, sim: SimulatorServer,
                                                     http: httpx.Client) -> None:
    admin = {"X-Admin-Token": sim.admin_token}
    played = http.post(f"{sim.root_url}/_admin/actions/stop_sms", headers=admin,
                       json={"phoneNumber": "+393330000001", "at": "2026-03-01 10:00:00"})
    assert played.json() == {"result": "+393330000001"}
    web = http.post(f"{sim.root_url}/_admin/actions/web_blacklist", headers=admin, json={"phoneNumber": "3330000002"})
    assert web.json() == {"result": "+393330000002"}
    bad = http.post(f"{sim.root_url}/_admin/actions/stop_sms", headers=admin, json={"phoneNumber": "+39", "at": 1})
    assert bad.status_code == 400
    assert [(e["origin"]) for e in blacklist(session_api)["blacklist"]] == ["STOPSMS", "WEB"]


# --- email campaigns: what keepExistingGroupsAndCampaigns keeps ------------------------


def test_register_to_a_campaign_creates_a_subscribed_contact(session_api: Api) -> None:
    campaign = session_api.state.create_campaign("Newsletter")
    response = session_api.request("POST", f"/list/{campaign.id}/contact", params={"SendOptIn": "false"},
                                   body={"email": "anna@example.com", "phoneNumber": "+393331234567"})
    assert_empty(response, 201, response.headers.get("Location"))
    cid = response.headers["Location"].removeprefix("/contact/")
    assert list(session_api.state.contacts[cid].campaigns) == [campaign.id]
    assert session_api.state.snapshot()["campaigns"] == [
        {"id": campaign.id, "name": "Newsletter", "active": True, "subscribers": [cid]}]


def test_register_needs_an_email_and_an_active_campaign(session_api: Api) -> None:
    campaign, paused = session_api.state.create_campaign("On"), session_api.state.create_campaign("Off", active=False)
    no_email = session_api.request("POST", f"/list/{campaign.id}/contact", body={"phoneNumber": "+393331234567"})
    assert_error(no_email, 400, "email")
    for campaign_id in (paused.id, "NoSuchCampaign000000"):
        response = session_api.request("POST", f"/list/{campaign_id}/contact", body={"email": "a@example.com"})
        assert_error(response, 400, "Campaign not active or not found")
    bad_flag = session_api.request("POST", f"/list/{campaign.id}/contact", params={"SendOptIn": "maybe"},
                                   body={"email": "a@example.com"})
    assert_error(bad_flag, 400, "SendOptIn")
    assert session_api.state.contacts == {}


def test_keep_false_drops_campaign_subscriptions_and_keep_true_keeps_them(session_api: Api) -> None:
    campaign = session_api.state.create_campaign("Newsletter")
    group, unseen = session_api.create_group("synced"), session_api.create_group("unseen")
    for n, keep in enumerate((True, False)):
        phone = f"+39333123456{n}"
        response = session_api.request("POST", f"/list/{campaign.id}/contact",
                                       body={"email": f"p{n}@example.com", "phoneNumber": phone, "groupIds": [unseen]})
        cid = response.headers["Location"].removeprefix("/contact/")
        session_api.upsert([{"phoneNumber": phone, "name": "P", "groupIds": [group]}], updateExistingContact=True,
                           keepExistingGroupsAndCampaigns=keep)
        contact = session_api.state.contacts[cid]
        if keep:
            assert (list(contact.campaigns), list(contact.groups)) == ([campaign.id], [unseen, group])
        else:
            assert (list(contact.campaigns), list(contact.groups)) == ([], [group])
    assert len(session_api.state.campaigns[campaign.id].subscribers) == 1


def test_a_drop_and_insert_upsert_carries_subscriptions_only_with_keep(session_api: Api) -> None:
    campaign = session_api.state.create_campaign("Newsletter")
    session_api.request("POST", f"/list/{campaign.id}/contact", body={"email": "a@example.com",
                                                                      "phoneNumber": "+393331234567"})
    session_api.upsert([{"phoneNumber": "+393331234567"}], keepExistingGroupsAndCampaigns=True)
    [replacement] = session_api.state.contacts_by_phone("+393331234567")
    assert list(replacement.campaigns) == [campaign.id]
    session_api.upsert([{"phoneNumber": "+393331234567"}])
    [replacement] = session_api.state.contacts_by_phone("+393331234567")
    assert replacement.campaigns == {} and session_api.state.campaigns[campaign.id].subscribers == {}


# --- undocumented endpoints -----------------------------------------------------


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/contact", 405),
    ("GET", "/contacts", 404),
    ("GET", "/contacts?pageNumber=1", 404),
    ("PUT", "/contact/{cid}", 405),
    ("DELETE", "/contact/{cid}", 405),
    ("PATCH", "/contact/{cid}", 405),
    ("GET", "/group/{gid}", 405),
    ("GET", "/group/{gid}/contacts", 404),
    ("GET", "/groups/", 404),
    ("POST", "/groups", 405),
])
def test_undocumented_endpoints_answer_404_or_405(session_api: Api, method: str, path: str, status: int) -> None:
    gid = session_api.create_group()
    cid = session_api.create_contact(phoneNumber="+393331234567")
    response = session_api.request(method, path.format(gid=gid, cid=cid))
    assert_error(response, status)
    assert cid in session_api.state.contacts


def test_405_lists_the_allowed_methods(session_api: Api) -> None:
    response = session_api.request("GET", f"/group/{session_api.create_group()}")
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"PUT", "DELETE"}


# --- smsend's wording of injected faults ---------------------------------------------


def test_throttling_answers_429_with_retry_after_seconds(session_api: Api, sim: SimulatorServer) -> None:
    sim.faults.throttle_rate, sim.faults.throttle_wait = 1.0, 2.5
    response = session_api.request("GET", "/groups")
    assert_error(response, 429)
    assert response.headers["Retry-After"] == "3"


def test_a_failing_page_answers_500_and_the_others_do_not(session_api: Api, sim: SimulatorServer) -> None:
    for i in range(12):
        session_api.create_group(f"G{i}")
    sim.faults.failing_pages = {2}
    statuses = [session_api.request("GET", "/groups", params={"pageNumber": p}).status_code for p in (1, 2, 3)]
    assert statuses == [200, 500, 200]
    assert_error(session_api.request("GET", "/groups", params={"pageNumber": 2}), 500)


def test_rejected_credentials_are_401_on_calls_and_404_on_login(session_api: Api, sim: SimulatorServer) -> None:
    sim.faults.reject_credentials = True
    assert_error(session_api.request("GET", "/groups"), 401)
    assert_error(session_api.http.get(f"{sim.base_url}/login", params=session_api.login_params()), 404)
    assert_error(session_api.http.get(f"{sim.base_url}/token", params=session_api.login_params()), 404)


def test_server_errors_carry_the_smsend_error_body(session_api: Api, sim: SimulatorServer) -> None:
    sim.faults.error_rate = 1.0
    assert session_api.request("GET", "/groups").json()["code"] > 0
    assert session_api.request("POST", "/group", body={"name": "x", "description": ""}).status_code in (500, 503)
    assert session_api.state.groups == {}


def test_dropped_write_is_applied(session_api: Api, sim: SimulatorServer) -> None:
    sim.faults.drop_next = 1
    with pytest.raises(httpx.TransportError):
        session_api.upsert([{"phoneNumber": "+393331234567"}])
    assert len(session_api.state.contacts_by_phone("+393331234567")) == 1


# --- seeding, ids, inspection ---------------------------------------------------------


def test_seeded_account_is_realistic_and_deterministic() -> None:
    with start_simulator("smsend", contacts=300, groups=4, seed=3) as a, \
            start_simulator("smsend", contacts=300, groups=4, seed=3) as b, \
            start_simulator("smsend", contacts=300, groups=4, seed=4) as c:
        snap_a, snap_b, snap_c = a.state.snapshot(), b.state.snapshot(), c.state.snapshot()
        assert snap_a == snap_b and a.credentials == b.credentials
        assert snap_a != snap_c and a.credentials != c.credentials
    assert len(snap_a["groups"]) == 4 and len(snap_a["contacts"]) == 300
    phones = [contact["phoneNumber"] for contact in snap_a["contacts"]]
    assert len(set(phones)) == 300
    parsed = [phonenumbers.parse(p) for p in phones]
    assert all(phonenumbers.is_valid_number(n) for n in parsed)
    italian_mobiles = [p for p in phones if p.startswith("+393")]
    assert len(italian_mobiles) > 200 and any(p.startswith("+1") for p in phones)
    assert all(ID_RE.fullmatch(g["id"]) for g in snap_a["groups"])
    assert all(ID_RE.fullmatch(contact["id"]) for contact in snap_a["contacts"])
    assert snap_a["memberships"] and all(contact["name"] for contact in snap_a["contacts"])


def test_ids_are_opaque_and_deterministic_under_the_seed(http: httpx.Client) -> None:
    runs = []
    for _ in range(2):
        with start_simulator("smsend", seed=11) as sim:
            api = Api(sim, http, "token")
            runs.append([api.create_group(f"G{i}") for i in range(5)])
    assert runs[0] == runs[1]
    assert all(ID_RE.fullmatch(i) and not i.isdigit() for i in runs[0])


def test_snapshot_and_request_counts(session_api: Api, sim: SimulatorServer) -> None:
    gid = session_api.create_group("G", "desc")
    cid = session_api.create_contact(phoneNumber="+393331234567", groupIds=[gid])
    session_api.request("POST", "/contacts/add_to_blacklist", params={"phoneNumber": "+393339999999"})
    snap = sim.state.snapshot()
    assert snap["groups"] == [{"id": gid, "name": "G", "description": "desc"}]
    assert [c["id"] for c in snap["contacts"]] == [cid]
    assert snap["memberships"] == [(gid, cid)] and snap["blacklist"] == ["+393339999999"]
    json.dumps(snap)  # plain data
    counts = sim.request_counts()
    assert counts["POST /API/v1.0/REST/group"] == 1 and counts["POST /API/v1.0/REST/contact"] == 1
    assert counts["GET /API/v1.0/REST/login"] == 1


def test_state_api_works_without_http() -> None:
    state = SmsendState(credentials={"username": "u", "password": "p", "user_key": "k", "access_token": "t"})
    group = state.create_group("G", "")
    assert state.upsert({"contacts": [{"phoneNumber": "+393331234567", "groupIds": [group.id]}]}) == 1
    [contact] = state.contacts_by_phone("+393331234567")
    assert list(state.groups_page(1, 5)[0]) == [group] and list(contact.groups) == [group.id]
    state.delete_group(group.id, delete_contacts=True)
    assert state.snapshot()["contacts"] == []
