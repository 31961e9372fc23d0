"""The SendHub simulator against SEED-002 and providers.md PART 2 / PART 3 (items 11-18), over real HTTP."""

from __future__ import annotations

import base64
import re

import httpx
import pytest

from syncd.simulators.sendhub import BAD_NUMBER, DUPLICATE_NUMBER, REQUIRED, build
from syncd.simulators.server import SimulatorServer, start_simulator
from tests.simulators.conftest import FakeClock

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}")
#: SEED-002's keys, plus SH-NEW's writable ``keyword`` and ``screened`` (a PUT resets them when left out).
CONTACT_KEYS = {"blocked", "date_created", "date_modified", "groups", "id", "name", "number", "resource_uri",
                "keyword", "screened"}
JSON = {"Content-Type": "application/json"}


def seed_url(sim: SimulatorServer, path: str) -> str:
    """A URL written like the seed's: credentials in the query string after the trailing slash."""
    creds = sim.credentials
    return f"{sim.base_url}{path}?username={creds['username']}&api_key={creds['api_key']}"


def assert_contact_shape(body: dict, *, name: str, number: str) -> None:
    assert CONTACT_KEYS <= set(body)
    assert re.fullmatch(r"\d+", body["id"])
    assert body["resource_uri"] == f"/api/v1/contacts/{body['id']}/"
    assert body["blocked"] is False
    assert TIMESTAMP.fullmatch(body["date_created"]) and TIMESTAMP.fullmatch(body["date_modified"])
    assert (body["name"], body["number"]) == (name, number)


# -- the seed's examples, sent as written ---------------------------------------------------


def test_seed_add_contact_curl(sendhub: SimulatorServer, http: httpx.Client) -> None:
    """curl -H "Content-Type: application/json" -X POST --data '{...}' '.../v1/contacts/?username=..&api_key=..'"""
    body = '{"name" : "John Doe", "number": "+16501234567"}'
    response = http.post(seed_url(sendhub, "/contacts/"), content=body, headers=JSON)
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert set(data) == CONTACT_KEYS
    assert_contact_shape(data, name="John Doe", number="+16501234567")
    assert data["groups"] == []
    assert data["id"] in sendhub.state.contacts


def test_seed_add_contact_with_groups_and_additional_data(sendhub: SimulatorServer, http: httpx.Client) -> None:
    sendhub.state.add_group("Eleven", group_id="11")
    sendhub.state.add_group("Twelve", group_id="12")
    body = """{
   "name": "John Doe",
   "number": "+16501234567",
   "groups": [11,12],
   "address": "1 Infinite Loop",
   "city": "Cupertino",
   "zip": "95014"
}"""
    response = http.post(seed_url(sendhub, "/contacts/"), content=body, headers=JSON)
    assert response.status_code == 201
    data = response.json()
    assert set(data) == CONTACT_KEYS | {"address", "city", "zip"}
    assert data["groups"] == ["/api/v1/groups/11/", "/api/v1/groups/12/"]
    assert (data["address"], data["city"], data["zip"]) == ("1 Infinite Loop", "Cupertino", "95014")
    assert list(data) == sorted(data), "keys come sorted, as in the seed"


def test_seed_list_contacts(sendhub: SimulatorServer, http: httpx.Client) -> None:
    sendhub.state.add_contact("John Doe", "+15555555555")
    response = http.get(seed_url(sendhub, "/contacts/"))
    assert response.status_code == 200
    data = response.json()
    assert data["meta"] == {"limit": 20, "next": None, "offset": 0, "previous": None, "total_count": 1}
    assert len(data["objects"]) == 1
    assert_contact_shape(data["objects"][0], name="John Doe", number="+15555555555")


def test_seed_get_one_contact(sendhub: SimulatorServer, http: httpx.Client) -> None:
    contact = sendhub.state.add_contact("John Doe", "+16501234567", contact_id="22413")
    response = http.get(seed_url(sendhub, f"/contacts/{contact.id}/"))
    assert response.status_code == 200
    data = response.json()
    assert set(data) == CONTACT_KEYS
    assert data["id"] == "22413" and data["resource_uri"] == "/api/v1/contacts/22413/"


def test_seed_edit_contact(sendhub: SimulatorServer, clock: FakeClock, http: httpx.Client) -> None:
    sendhub.state.add_contact("John Doe", "+16501234567", contact_id="22413")
    created = sendhub.state.contacts["22413"].date_created
    clock.advance(60)
    body = """{
   "id": "22413",
   "name": "Jesse Doe",
   "number": "+16501234567"
}"""
    response = http.put(seed_url(sendhub, "/contacts/22413/"), content=body, headers=JSON)
    assert response.status_code == 202
    data = response.json()
    assert set(data) == CONTACT_KEYS
    assert data["name"] == "Jesse Doe" and data["date_created"] == created
    assert data["date_modified"] > data["date_created"]


def test_seed_delete_contact_curl(sendhub: SimulatorServer, http: httpx.Client) -> None:
    contact = sendhub.state.add_contact("John Doe", "+16501234567")
    response = http.delete(seed_url(sendhub, f"/contacts/{contact.id}/"), headers=JSON)
    assert response.status_code == 204
    assert response.content == b""
    assert contact.id not in sendhub.state.contacts


# -- auth ----------------------------------------------------------------------------------------


def test_missing_credentials_is_401_with_empty_body(sendhub: SimulatorServer, http: httpx.Client) -> None:
    response = http.get(f"{sendhub.base_url}/contacts/")
    assert (response.status_code, response.content) == (401, b"")


def test_wrong_api_key_is_401(sendhub: SimulatorServer, http: httpx.Client) -> None:
    params = {"username": sendhub.credentials["username"], "api_key": "nope"}
    assert http.get(f"{sendhub.base_url}/contacts/", params=params).status_code == 401


def test_basic_auth_is_accepted(sendhub: SimulatorServer, http: httpx.Client) -> None:
    creds = sendhub.credentials
    auth = (creds["username"], creds["api_key"])
    assert http.get(f"{sendhub.base_url}/contacts/", auth=auth).status_code == 200
    assert http.get(f"{sendhub.base_url}/contacts/", auth=(creds["username"], "bad")).status_code == 401
    garbage = {"Authorization": "Basic " + base64.b64encode(b"no-colon").decode()}
    assert http.get(f"{sendhub.base_url}/contacts/", headers=garbage).status_code == 401


# -- contacts: validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("6501234567", "+16501234567"), ("+16501234567", "+16501234567"), (6501234567, "+16501234567")],
)
def test_accepted_number_spellings_are_stored_as_plus_one(client: httpx.Client, sent: object, stored: str) -> None:
    response = client.post("/contacts/", json={"name": "A", "number": sent})
    assert response.status_code == 201
    assert response.json()["number"] == stored


@pytest.mark.parametrize(
    "number",
    ["650123456", "65012345678", "16501234567", "+442071234567", "(650) 123-4567", "650-123-4567",
     "+10501234567", "1234567890", "+1650123456a", True, [6501234567]],
)  # fmt: skip
def test_numbers_that_are_not_10_digit_north_american_are_400(client: httpx.Client, number: object) -> None:
    response = client.post("/contacts/", json={"name": "A", "number": number})
    assert response.status_code == 400
    assert response.json() == {"number": [BAD_NUMBER]}


def test_name_and_number_are_required(client: httpx.Client) -> None:
    response = client.post("/contacts/", json={"city": "Boston"})
    assert response.status_code == 400
    assert response.json() == {"name": [REQUIRED], "number": [REQUIRED]}
    assert client.post("/contacts/", json={"name": "  ", "number": "6501234567"}).json() == {"name": [REQUIRED]}


def test_name_longer_than_128_is_400(client: httpx.Client) -> None:
    assert client.post("/contacts/", json={"name": "x" * 128, "number": "6501234567"}).status_code == 201
    response = client.post("/contacts/", json={"name": "x" * 129, "number": "6501234568"})
    assert response.status_code == 400 and list(response.json()) == ["name"]


def test_duplicate_number_is_400_whatever_its_spelling(client: httpx.Client) -> None:
    assert client.post("/contacts/", json={"name": "A", "number": "+16501234567"}).status_code == 201
    response = client.post("/contacts/", json={"name": "B", "number": "6501234567"})
    assert response.status_code == 400
    assert response.json() == {"number": [DUPLICATE_NUMBER]}


def test_unknown_group_is_400(client: httpx.Client) -> None:
    response = client.post("/contacts/", json={"name": "A", "number": "6501234567", "groups": [999]})
    assert response.status_code == 400 and list(response.json()) == ["groups"]


def test_groups_may_be_given_as_strings_or_resource_uris(sendhub: SimulatorServer, client: httpx.Client) -> None:
    group = sendhub.state.add_group("Staff")
    for n, ref in enumerate([group.id, f"/api/v1/groups/{group.id}/", f"/v1/groups/{group.id}"]):
        response = client.post("/contacts/", json={"name": "A", "number": f"650123456{n}", "groups": [ref]})
        assert response.json()["groups"] == [f"/api/v1/groups/{group.id}/"]


def test_read_only_fields_in_a_body_are_ignored(client: httpx.Client) -> None:
    body = {"name": "A", "number": "6501234567", "blocked": True, "id": "1", "resource_uri": "x", "note": None}
    data = client.post("/contacts/", json=body).json()
    assert data["blocked"] is False and data["id"] != "1" and "note" not in data


def test_body_that_is_not_json_is_400_with_error_and_message(client: httpx.Client) -> None:
    response = client.post("/contacts/", content=b"{not json", headers=JSON)
    assert response.status_code == 400
    assert {"error", "message"} <= set(response.json())


def test_non_json_content_type_is_400(client: httpx.Client) -> None:
    response = client.post("/contacts/", data={"name": "A", "number": "6501234567"})
    assert response.status_code == 400
    assert {"error", "message"} <= set(response.json())


def test_unknown_contact_is_404_with_the_documented_body(client: httpx.Client) -> None:
    for response in (client.get("/contacts/123/"), client.put("/contacts/123/", json={}), client.delete("/contacts/x")):
        assert response.status_code == 404
        assert response.json() == {"error": "Requested contact not found", "status": 404}


def test_paths_work_without_the_trailing_slash(sendhub: SimulatorServer, client: httpx.Client) -> None:
    created = client.post("/contacts", json={"name": "A", "number": "6501234567"})
    contact_id = created.json()["id"]
    assert client.get(f"/contacts/{contact_id}").status_code == 200
    assert client.get("/contacts").json()["meta"]["total_count"] == 1
    assert client.delete(f"/contacts/{contact_id}").status_code == 204


def test_unsupported_method_is_405_with_allow(client: httpx.Client) -> None:
    response = client.patch("/contacts/", json={"objects": []})
    assert response.status_code == 405
    assert "GET" in response.headers["allow"] and "POST" in response.headers["allow"]


def test_unknown_path_is_404(client: httpx.Client) -> None:
    response = client.get("/inbox/")
    assert response.status_code == 404 and {"error", "message"} <= set(response.json())


# -- contacts: edit --------------------------------------------------------------------------------


def test_put_replaces_fields_and_groups(sendhub: SimulatorServer, client: httpx.Client) -> None:
    group = sendhub.state.add_group("Staff")
    contact = sendhub.state.add_contact("A", "6501234567", groups=[group.id], city="Boston", zip="02101")
    body = {"id": contact.id, "name": "A B", "number": "6501234567", "email": "a@example.com"}
    data = client.put(f"/contacts/{contact.id}/", json=body).json()
    assert data["groups"] == [] and "city" not in data and "zip" not in data
    assert data["email"] == "a@example.com"
    assert sendhub.state.groups[group.id].members == {}


def test_put_requires_id_name_and_number(sendhub: SimulatorServer, client: httpx.Client) -> None:
    contact = sendhub.state.add_contact("A", "6501234567")
    response = client.put(f"/contacts/{contact.id}/", json={})
    assert response.status_code == 400
    assert response.json() == {"id": [REQUIRED], "name": [REQUIRED], "number": [REQUIRED]}


def test_put_with_another_id_in_the_body_is_400(sendhub: SimulatorServer, client: httpx.Client) -> None:
    contact = sendhub.state.add_contact("A", "6501234567")
    response = client.put(f"/contacts/{contact.id}/", json={"id": "1", "name": "A", "number": "6501234567"})
    assert response.status_code == 400 and list(response.json()) == ["id"]


def test_put_to_a_number_of_another_contact_is_400(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.state.add_contact("A", "6501234567")
    other = sendhub.state.add_contact("B", "6501234568")
    body = {"id": other.id, "name": "B", "number": "+16501234567"}
    response = client.put(f"/contacts/{other.id}/", json=body)
    assert response.status_code == 400 and response.json() == {"number": [DUPLICATE_NUMBER]}


def test_put_status_is_configurable(sendhub: SimulatorServer, client: httpx.Client) -> None:
    contact = sendhub.state.add_contact("A", "6501234567")
    sendhub.state.put_status = 200
    response = client.put(f"/contacts/{contact.id}/", json={"id": int(contact.id), "name": "A", "number": "6501234567"})
    assert response.status_code == 200


def test_membership_change_refreshes_date_modified(
    sendhub: SimulatorServer, client: httpx.Client, clock: FakeClock
) -> None:
    group = sendhub.state.add_group("Staff")
    contact = sendhub.state.add_contact("A", "6501234567")
    before = client.get(f"/contacts/{contact.id}/").json()["date_modified"]
    clock.advance(5)
    assert client.post(f"/groups/{group.id}/contacts/", json={"add": [contact.id]}).status_code == 202
    after = client.get(f"/contacts/{contact.id}/").json()
    assert after["date_modified"] > before
    assert after["groups"] == [f"/api/v1/groups/{group.id}/"]


def test_blocked_contact_shows_blocked(sendhub: SimulatorServer, client: httpx.Client) -> None:
    contact = sendhub.state.add_contact("A", "6501234567")
    sendhub.state.block("+16501234567")
    assert client.get(f"/contacts/{contact.id}/").json()["blocked"] is True
    assert client.get("/contacts/").json()["objects"][0]["blocked"] is True


# -- lists ---------------------------------------------------------------------------------------------


def walk(client: httpx.Client, path: str, limit: int) -> tuple[list[str], list[dict]]:
    """Page the way the client should: offset += limit while meta.next is not null."""
    ids, metas, offset = [], [], 0
    while True:
        data = client.get(path, params={"limit": limit, "offset": offset}).json()
        metas.append(data["meta"])
        ids += [o["id"] for o in data["objects"]]
        if data["meta"]["next"] is None:
            return ids, metas
        offset += limit


@pytest.mark.parametrize(("total", "pages"), [(0, 1), (1, 1), (40, 2), (45, 3)])
def test_contact_paging_over_empty_single_exact_and_ragged_totals(
    total: int, pages: int, transport: httpx.HTTPTransport
) -> None:
    with start_simulator("sendhub", contacts=total, groups=2, seed=3) as sim:
        client = httpx.Client(base_url=sim.base_url, params=sim.credentials, transport=transport)
        ids, metas = walk(client, "/contacts/", 20)
        assert ids == list(sim.state.contacts)
        assert len(metas) == pages and all(m["total_count"] == total for m in metas)
        assert metas[0]["previous"] is None
        assert [len(ids[i : i + 20]) for i in range(0, total, 20)] == [min(20, total - i) for i in range(0, total, 20)]


def test_meta_next_and_previous_are_tastypie_relative_urls(sendhub: SimulatorServer, client: httpx.Client) -> None:
    for n in range(5):
        sendhub.state.add_contact("A", f"650123456{n}")
    meta = client.get("/contacts/", params={"limit": 2, "offset": 2}).json()["meta"]
    creds = sendhub.credentials
    prefix = f"/api/v1/contacts/?username={creds['username']}&api_key={creds['api_key']}&limit=2&offset="
    assert meta == {"limit": 2, "next": prefix + "4", "offset": 2, "previous": prefix + "0", "total_count": 5}
    last = client.get("/contacts/", params={"limit": 2, "offset": 4}).json()
    assert last["meta"]["next"] is None and len(last["objects"]) == 1


def test_offset_past_the_end_is_an_empty_page(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.state.add_contact("A", "6501234567")
    data = client.get("/contacts/", params={"offset": 50}).json()
    assert data["objects"] == [] and data["meta"]["next"] is None and data["meta"]["total_count"] == 1


@pytest.mark.parametrize(("limit", "effective"), [("5000", 1000), ("0", 1000), ("1000", 1000), ("7", 7)])
def test_limit_is_clamped_to_1000(client: httpx.Client, limit: str, effective: int) -> None:
    assert client.get("/contacts/", params={"limit": limit}).json()["meta"]["limit"] == effective


@pytest.mark.parametrize("params", [{"limit": "-1"}, {"limit": "ten"}, {"offset": "-5"}, {"offset": "x"}])
def test_bad_limit_or_offset_is_400_text(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.get("/contacts/", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("Invalid ")


def test_number_filter_is_an_exact_e164_match(sendhub: SimulatorServer, client: httpx.Client) -> None:
    contact = sendhub.state.add_contact("A", "6501234567")
    sendhub.state.add_contact("B", "6501234568")
    data = client.get("/contacts/", params={"number": "+16501234567"}).json()
    assert [o["id"] for o in data["objects"]] == [contact.id] and data["meta"]["total_count"] == 1
    assert client.get("/contacts/", params={"number": "6501234567"}).json()["objects"] == []


def test_filtering_on_another_field_is_400_text_html(client: httpx.Client) -> None:
    response = client.get("/contacts/", params={"resource_uri": "x"})
    assert response.status_code == 400
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.text == "The 'resource_uri' field does not allow filtering."
    assert client.get("/contacts/", params={"name": "A"}).status_code == 400
    assert client.get("/contacts/", params={"whatever": "1"}).status_code == 200  # unknown: ignored


def test_list_stays_correct_after_deletes(sendhub: SimulatorServer, client: httpx.Client) -> None:
    contacts = [sendhub.state.add_contact("A", f"650123456{n}") for n in range(6)]
    client.delete(f"/contacts/{contacts[1].id}/")
    client.post("/contacts/", json={"name": "Z", "number": "7001234567"})
    ids = [o["id"] for o in client.get("/contacts/").json()["objects"]]
    assert ids == list(sendhub.state.contacts) and contacts[1].id not in ids and len(ids) == 6


# -- groups --------------------------------------------------------------------------------------------


def test_create_group_is_201_with_size_null(client: httpx.Client) -> None:
    response = client.post("/groups/", json={"name": "Regulars", "text_to_subscribe": True})
    assert response.status_code == 201
    data = response.json()
    assert data["size"] is None and data["slug"] == "regulars" and data["text_to_subscribe"] is True
    assert data["resource_uri"] == f"/api/v1/groups/{data['id']}/" and re.fullmatch(r"\d+", data["id"])
    assert TIMESTAMP.fullmatch(data["date_created"])
    assert client.get(f"/groups/{data['id']}/").json()["size"] == 0


def test_group_names_are_unique_ignoring_case_and_spaces(client: httpx.Client) -> None:
    assert client.post("/groups/", json={"name": "Best Customers"}).status_code == 201
    response = client.post("/groups/", json={"name": " best customers"})
    assert response.status_code == 400 and response.json() == {"name": ["Duplicate group name."]}


def test_group_name_rules(client: httpx.Client) -> None:
    assert client.post("/groups/", json={}).json() == {"name": [REQUIRED]}
    assert client.post("/groups/", json={"name": "g" * 128}).status_code == 201
    assert list(client.post("/groups/", json={"name": "h" * 129}).json()) == ["name"]


def test_default_slugs_are_made_unique(client: httpx.Client) -> None:
    names = ("Best Customers", "BestCustomers")
    slugs = [client.post("/groups/", json={"name": name}).json()["slug"] for name in names]
    assert slugs == ["bestcustomers", "bestcustomers1"]
    assert client.post("/groups/", json={"name": "Other", "slug": "bestcustomers"}).status_code == 400


def test_join_message_longer_than_70_is_400(client: httpx.Client) -> None:
    response = client.post("/groups/", json={"name": "A", "ttjResponse": "x" * 71})
    assert response.status_code == 400
    assert response.json()["error"] == "Join message can not be longer than 70 characters."
    assert "message" in response.json()


def test_edit_group_is_200_and_resets_left_out_fields(sendhub: SimulatorServer, client: httpx.Client) -> None:
    group = sendhub.state.add_group("Regulars", slug="regs", text_to_subscribe=True)
    response = client.put(f"/groups/{group.id}/", json={"id": group.id, "name": "Best Customers"})
    assert response.status_code == 200
    data = response.json()
    assert (data["name"], data["slug"], data["text_to_subscribe"]) == ("Best Customers", "bestcustomers", False)
    assert client.put(f"/groups/{group.id}/", json={"id": "1", "name": "X"}).status_code == 400
    assert client.put(f"/groups/{group.id}/", json={"name": "X"}).json() == {"id": [REQUIRED]}


def test_rename_group_to_another_groups_name_is_400(sendhub: SimulatorServer, client: httpx.Client) -> None:
    sendhub.state.add_group("Staff")
    group = sendhub.state.add_group("Board")
    response = client.put(f"/groups/{group.id}/", json={"id": group.id, "name": "STAFF"})
    assert response.json() == {"name": ["Duplicate group name."]}
    assert client.put(f"/groups/{group.id}/", json={"id": group.id, "name": "board"}).status_code == 200


def test_delete_group_keeps_its_contacts(sendhub: SimulatorServer, client: httpx.Client) -> None:
    group = sendhub.state.add_group("Staff")
    contact = sendhub.state.add_contact("A", "6501234567", groups=[group.id])
    response = client.delete(f"/groups/{group.id}/")
    assert (response.status_code, response.content) == (204, b"")
    assert client.get(f"/contacts/{contact.id}/").json()["groups"] == []
    assert client.get(f"/groups/{group.id}/").status_code == 404


def test_unknown_group_is_404_with_the_documented_body(client: httpx.Client) -> None:
    for response in (client.get("/groups/5/"), client.get("/groups/5/contacts/"), client.delete("/groups/5")):
        assert response.status_code == 404
        assert response.json() == {"error": "Requested group not found", "status": 404}


def test_group_paging(sendhub: SimulatorServer, client: httpx.Client) -> None:
    for n in range(5):
        sendhub.state.add_group(f"G{n}")
    ids, metas = walk(client, "/groups/", 2)
    assert ids == list(sendhub.state.groups) and len(metas) == 3
    assert client.get("/groups/", params={"name": "G1"}).status_code == 400


# -- group members ---------------------------------------------------------------------------------------


def test_group_contacts_list_in_contact_list_shape(sendhub: SimulatorServer, client: httpx.Client) -> None:
    group = sendhub.state.add_group("Staff")
    members = [sendhub.state.add_contact("A", f"650123456{n}", groups=[group.id]) for n in range(3)]
    sendhub.state.add_contact("Outsider", "7001234567")
    data = client.get(f"/groups/{group.id}/contacts/", params={"limit": 2}).json()
    assert [o["id"] for o in data["objects"]] == [m.id for m in members[:2]]
    assert data["meta"]["total_count"] == 3
    assert data["meta"]["next"].startswith(f"/api/v1/groups/{group.id}/contacts/?")
    assert set(data["objects"][0]) == CONTACT_KEYS
    only = client.get(f"/groups/{group.id}/contacts/", params={"number": "+17001234567"}).json()
    assert only["objects"] == []


def test_add_and_remove_members_reports_problems_inside_a_202(sendhub: SimulatorServer, client: httpx.Client) -> None:
    group = sendhub.state.add_group("Staff")
    inside = sendhub.state.add_contact("A", "6501234567", groups=[group.id])
    outside = sendhub.state.add_contact("B", "6501234568")
    body = {"add": [int(outside.id), inside.id, "99"], "remove": [inside.id, "77"]}
    response = client.post(f"/groups/{group.id}/contacts/", json=body)
    assert response.status_code == 202
    data = response.json()
    assert data["add"] == [outside.id] and data["remove"] == [inside.id]
    assert data["errors"]["add"][0] == f"{inside.id} is the id of a contact who is already in this group"
    assert data["errors"]["add"][1].startswith("99 ")
    assert data["errors"]["remove"] == ["77 is not an id of a contact in the group."]
    assert list(sendhub.state.groups[group.id].members) == [outside.id]


def test_member_change_without_errors_has_empty_errors(sendhub: SimulatorServer, client: httpx.Client) -> None:
    group = sendhub.state.add_group("Staff")
    contact = sendhub.state.add_contact("A", "6501234567")
    data = client.post(f"/groups/{group.id}/contacts", json={"add": [contact.id]}).json()
    assert data == {"add": [contact.id], "remove": [], "errors": {}}


def test_member_change_needs_add_or_remove(sendhub: SimulatorServer, client: httpx.Client) -> None:
    group = sendhub.state.add_group("Staff")
    response = client.post(f"/groups/{group.id}/contacts/", json={"id": group.id})
    assert response.status_code == 400 and {"error", "message"} <= set(response.json())


# -- seeding and inspection -------------------------------------------------------------------------


def test_seeding_is_realistic_and_deterministic() -> None:
    _, first, _ = build(contacts=200, groups=4, seed=11)
    _, again, _ = build(contacts=200, groups=4, seed=11)
    _, other, _ = build(contacts=200, groups=4, seed=12)
    snapshot = first.snapshot()
    assert snapshot == again.snapshot() and snapshot != other.snapshot()
    numbers = [c["number"] for c in snapshot["contacts"]]
    assert len(set(numbers)) == 200
    assert all(re.fullmatch(r"\+1[2-9]\d{2}[2-9]\d{6}", n) for n in numbers)
    assert len(snapshot["groups"]) == 4 and snapshot["memberships"]
    assert any("city" in c for c in snapshot["contacts"]) and any("email" in c for c in snapshot["contacts"])
    ids = [int(c["id"]) for c in snapshot["contacts"]]
    assert ids == sorted(ids) and ids[1] - ids[0] != 1 or ids[2] - ids[1] != 1


def test_state_helpers_change_data_at_the_provider(
    sendhub: SimulatorServer, client: httpx.Client, clock: FakeClock
) -> None:
    contact = sendhub.state.add_contact("A", "6501234567", city="Boston")
    clock.advance(1)
    sendhub.state.edit_contact(contact.id, name="B", city=None, email="b@example.com")
    data = client.get(f"/contacts/{contact.id}/").json()
    assert data["name"] == "B" and "city" not in data and data["email"] == "b@example.com"
    assert data["date_modified"] > data["date_created"]
    with pytest.raises(ValueError):
        sendhub.state.add_contact("C", "+16501234567")
    snapshot = sendhub.state.snapshot()
    assert snapshot["contacts"][0]["name"] == "B" and snapshot["groups"] == [] and snapshot["memberships"] == []


# -- replace semantics of SendHub-owned attributes (issue 10) ----------------------------------------


def test_group_put_is_a_replace_that_keeps_only_what_it_is_sent(sendhub: SimulatorServer, client: httpx.Client) -> None:
    group = sendhub.state.add_group("Clients", slug="joincustomers", text_to_subscribe=True, join_message="Hi!")
    kept = {"slug": "joincustomers", "text_to_subscribe": True, "ttjResponse": "Hi!"}
    renamed = client.put(f"/groups/{group.id}/", json={"id": group.id, "name": "Customers", **kept}).json()
    assert (renamed["name"], renamed["slug"], renamed["text_to_subscribe"], renamed["ttjResponse"]) == (
        "Customers", "joincustomers", True, "Hi!")

    bare = client.put(f"/groups/{group.id}/", json={"id": group.id, "name": "Customers"}).json()
    assert (bare["slug"], bare["text_to_subscribe"], bare["ttjResponse"]) == (
        "customers", False, "You are now subscribed.")


def test_contacts_carry_a_default_keyword_made_unique_and_screened_false(client: httpx.Client) -> None:
    first = client.post("/contacts/", json={"name": "Bob Parker", "number": "6502000001"}).json()
    second = client.post("/contacts/", json={"name": "bob smith", "number": "6502000002"}).json()
    odd = client.post("/contacts/", json={"name": "  Zoë-Ann  Lee", "number": "6502000003"}).json()
    assert (first["keyword"], second["keyword"], odd["keyword"]) == ("bob", "bob1", "zoann")
    assert first["screened"] is False and "deleted" not in first


def test_keyword_and_screened_are_writable_and_checked(sendhub: SimulatorServer, client: httpx.Client) -> None:
    body = {"name": "Ann", "number": "6502000001", "keyword": "ann-vip", "screened": True}
    created = client.post("/contacts/", json=body).json()
    assert (created["keyword"], created["screened"]) == ("ann-vip", True)
    assert sendhub.state.contacts[created["id"]].extra == {}, "attributes, not custom fields"
    taken = client.post("/contacts/", json={"name": "Other", "number": "6502000002", "keyword": "ann-vip"})
    assert taken.status_code == 400 and taken.json() == {"keyword": ["This keyword is already in use."]}
    bad = client.post("/contacts/", json={"name": "Other", "number": "6502000002", "screened": "yes"})
    assert bad.status_code == 400 and list(bad.json()) == ["screened"]


def test_contact_put_resets_keyword_and_screened_it_is_not_sent(sendhub: SimulatorServer, client: httpx.Client) -> None:
    contact = sendhub.state.add_contact("Ann Lee", "6502000001", keyword="annie", screened=True, city="Boston")
    base = {"id": contact.id, "name": "Ann B. Lee", "number": "6502000001", "city": "Boston"}
    kept = client.put(f"/contacts/{contact.id}/", json={**base, "keyword": "annie", "screened": True}).json()
    assert (kept["keyword"], kept["screened"], kept["city"]) == ("annie", True, "Boston")
    own = client.put(f"/contacts/{contact.id}/", json={**base, "keyword": "annie"}).json()
    assert own["keyword"] == "annie", "a contact's own keyword is not 'in use'"

    reset = client.put(f"/contacts/{contact.id}/", json=base).json()
    assert (reset["keyword"], reset["screened"]) == ("ann", False)


def test_blocked_in_a_put_body_is_ignored(sendhub: SimulatorServer, client: httpx.Client) -> None:
    contact = sendhub.state.add_contact("Ann", "6502000001", blocked=True)
    body = {"id": contact.id, "name": "Ann", "number": "6502000001", "blocked": False}
    assert client.put(f"/contacts/{contact.id}/", json=body).json()["blocked"] is True


# -- deleted records and 409 (issue 14) -----------------------------------------------------------------


def test_a_contact_marked_deleted_is_listed_as_deleted_and_absent_elsewhere(
    sendhub: SimulatorServer, client: httpx.Client
) -> None:
    group = sendhub.state.add_group("Staff")
    gone = sendhub.state.add_contact("Ann", "6502000001", groups=[group.id])
    sendhub.state.add_contact("Bob", "6502000002", groups=[group.id])
    sendhub.state.mark_deleted(gone.id)

    listed = client.get("/contacts/").json()
    assert [(c["id"], c.get("deleted")) for c in listed["objects"]][0] == (gone.id, True)
    assert listed["meta"]["total_count"] == 2
    assert client.get(f"/contacts/{gone.id}/").status_code == 404
    assert client.put(f"/contacts/{gone.id}/", json={"id": gone.id, "name": "A", "number": "6502000001"}
                      ).status_code == 404
    assert client.delete(f"/contacts/{gone.id}/").status_code == 404
    assert [c["name"] for c in client.get(f"/groups/{group.id}/contacts/").json()["objects"]] == ["Bob"]
    added = client.post(f"/groups/{group.id}/contacts/", json={"add": [gone.id]}).json()
    assert added["add"] == [] and "is not an id of one of your contacts" in added["errors"]["add"][0]
    assert client.post("/contacts/", json={"name": "Ann again", "number": "6502000001"}).status_code == 201
    assert client.get("/contacts/", params={"number": "+16502000001"}).json()["objects"][0]["name"] == "Ann again"


def test_a_group_marked_deleted_is_listed_as_deleted_and_absent_elsewhere(
    sendhub: SimulatorServer, client: httpx.Client, transport: httpx.HTTPTransport
) -> None:
    group = sendhub.state.add_group("Staff")
    member = sendhub.state.add_contact("Ann", "6502000001", groups=[group.id])
    admin = httpx.Client(base_url=f"{sendhub.root_url}/_admin", headers={"X-Admin-Token": sendhub.admin_token},
                         transport=transport)
    assert admin.post("/actions/mark_group_deleted", json={"group_id": group.id}).json() == {"result": group.id}
    assert admin.post("/actions/mark_group_deleted", json={"group_id": "1"}).status_code == 400

    [listed] = client.get("/groups/").json()["objects"]
    assert (listed["id"], listed["deleted"]) == (group.id, True)
    assert client.get(f"/groups/{group.id}/").status_code == 404
    assert client.get(f"/contacts/{member.id}/").json()["groups"] == []
    assert client.post("/groups/", json={"name": "Staff"}).status_code == 201, "the name is free again"
    response = client.post("/contacts/", json={"name": "B", "number": "6502000002", "groups": [group.id]})
    assert response.status_code == 400 and list(response.json()) == ["groups"]


def test_busy_answers_409_try_again_later_before_touching_anything(
    sendhub: SimulatorServer, client: httpx.Client
) -> None:
    sendhub.state.busy_next = 2
    for _ in range(2):
        response = client.post("/contacts/", json={"name": "Ann", "number": "6502000001"})
        assert response.status_code == 409
        assert response.json() == {"error": "Try again later", "message": "Try again later", "status": 409}
    assert sendhub.state.contacts == {}
    assert client.post("/contacts/", json={"name": "Ann", "number": "6502000001"}).status_code == 201
