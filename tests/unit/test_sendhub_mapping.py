"""SendHub mapping and error translation, pure: no network."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.config import ProviderSettings, Secret
from syncd.errors import AuthError, NotFound, ProtocolError, QuotaExhausted, RateLimited, Rejected, TransientError
from syncd.model import Contact, ContactWrite
from syncd.phones import InvalidPhone, to_e164
from syncd.providers.sendhub import RESERVED, SendHubProvider, full_name, sendhub_error, split_name

ENDPOINT = "GET /v1/contacts/"


@pytest.fixture(scope="module")
def sendhub() -> SendHubProvider:
    settings = ProviderSettings(
        name="sh-unit", type="sendhub", base_url="http://127.0.0.1:9/v1", username="u", api_key=Secret("k3y")
    )
    return SendHubProvider(settings, default_region="US")


def contact(**kw) -> Contact:
    return Contact(id=1, phone=kw.pop("phone", "+16501234567"), **kw)


# -- project ---------------------------------------------------------------------


def test_project_joins_name_and_surname_into_sendhub_name(sendhub):
    assert sendhub.project(contact(name="John", surname="Doe")) == {"number": "+16501234567", "name": "John Doe"}


def test_project_carries_email_and_extra_as_text_custom_fields(sendhub):
    projected = sendhub.project(contact(name="A", email="a@x.io", extra={"city": "Cupertino", "vip": True, "n": 5}))
    assert projected == {"number": "+16501234567", "name": "A", "email": "a@x.io", "city": "Cupertino", "vip": "true", "n": "5"}


def test_project_leaves_out_empty_values_reserved_keys_groups_and_opt_out(sendhub):
    extra = {key: "x" for key in RESERVED} | {"email": "shadow", "empty": "", "none": None}
    projected = sendhub.project(contact(surname="", name="", extra=extra, opted_out=True, groups=frozenset({3})))
    assert projected == {"number": "+16501234567"}


# -- split_name / to_canonical -----------------------------------------------------


@pytest.mark.parametrize(
    ("new", "current", "expected"),
    [
        ("Anna Maria Rossi", None, ("Anna Maria", "Rossi")),  # last space splits
        ("Cher", None, ("Cher", "")),  # no space: all name
        ("", None, ("", "")),
        ("Mario De Rossi", contact(name="Mario", surname="De Rossi"), ("Mario", "De Rossi")),  # unchanged: kept
        ("Anna Maria De Rossi", contact(name="Anna", surname="De Rossi"), ("Anna Maria", "De Rossi")),  # surname kept
        ("Jean Paul Sartre", contact(name="Jean Paul", surname="Belmondo"), ("Jean Paul", "Sartre")),  # name kept
        ("Totally New", contact(name="Old", surname="Name"), ("Totally", "New")),
    ],
)
def test_split_name_keeps_what_still_fits_of_the_current_split(new, current, expected):
    assert split_name(new, current) == expected


def test_to_canonical_reads_email_and_custom_fields_as_extra(sendhub):
    fields = {"number": "+16501234567", "name": "John Doe", "email": "j@d.io", "city": "Rome"}
    assert sendhub.to_canonical(fields, None) == {"phone": "+16501234567", "name": "John", "surname": "Doe",
                                                  "email": "j@d.io", "extra": {"city": "Rome"}}


def test_to_canonical_keeps_extra_sendhub_cannot_hold_and_original_value_types(sendhub):
    current = contact(name="J", extra={"keyword": "kept", "vip": True, "empty": "", "gone": "x"})
    result = sendhub.to_canonical({"number": "+16501234567", "name": "J", "vip": "true"}, current)
    assert result["extra"] == {"keyword": "kept", "vip": True, "empty": ""}


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
stripped = names.map(str.strip)
extras = st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(names, st.booleans(), st.integers()), max_size=4)


@given(name=stripped, surname=stripped, email=stripped, extra=extras)
def test_projection_round_trips_to_the_same_canonical_values(sendhub, name, surname, email, extra):
    current = contact(name=name, surname=surname, email=email, extra=extra)
    back = sendhub.to_canonical(sendhub.project(current), current)
    assert (back["phone"], back["name"], back["surname"], back["email"]) == (current.phone, name, surname, email)
    assert back["extra"] == dict(extra)


@given(new=stripped, name=stripped, surname=stripped)
def test_a_sendhub_name_read_back_projects_to_itself_so_nothing_ping_pongs(sendhub, new, name, surname):
    for current in (None, contact(name=name, surname=surname)):
        result = sendhub.to_canonical({"name": new}, current)
        assert full_name(result["name"], result["surname"]) == new


# -- parse_contact / parse_group ----------------------------------------------------


def test_parse_contact_normalises_number_groups_blocked_and_date(sendhub):
    obj = {
        "id": "22413", "name": "John Doe", "number": "4155552671", "blocked": True,
        "groups": ["/api/v1/groups/11/", "/v1/groups/12", 13, "14"],
        "date_modified": "2012-05-31T19:36:43.932126", "resource_uri": "/api/v1/contacts/22413/",
        "city": "Cupertino", "zip": 95014, "note": "",
    }
    remote = sendhub.parse_contact(obj, endpoint=ENDPOINT)
    assert remote.remote_id == "22413"
    assert remote.phone == "+14155552671"
    assert remote.fields == {"number": "+14155552671", "name": "John Doe", "city": "Cupertino", "zip": "95014"}
    assert remote.groups == frozenset({"11", "12", "13", "14"})
    assert remote.opted_out is True
    assert remote.modified_at == datetime(2012, 5, 31, 19, 36, 43, 932126, tzinfo=UTC)


def test_parse_contact_keeps_an_unparseable_number_raw(sendhub):
    remote = sendhub.parse_contact({"id": 5, "name": "X", "number": "not a phone"}, endpoint=ENDPOINT)
    assert (remote.remote_id, remote.phone, remote.groups) == ("5", "not a phone", frozenset())


@pytest.mark.parametrize(
    ("obj", "what"),
    [
        ([], "not a JSON object"),
        ({"name": "x", "number": "+16501234567"}, "has no id"),
        ({"id": True, "number": "+16501234567"}, "has no id"),
        ({"id": "1", "name": "x"}, "has no number"),
        ({"id": "1", "number": ["+16501234567"]}, "has no number"),
        ({"id": "1", "number": "+16501234567", "groups": "11"}, "is not a list"),
        ({"id": "1", "number": "+16501234567", "groups": [{"id": 1}]}, "lists group"),
    ],
)
def test_parse_contact_rejects_bad_shapes_with_a_protocol_error_naming_the_endpoint(sendhub, obj, what):
    with pytest.raises(ProtocolError) as caught:
        sendhub.parse_contact(obj, endpoint=ENDPOINT)
    assert ENDPOINT in str(caught.value) and what in str(caught.value)
    assert "sh-unit" in str(caught.value)


def test_parse_contact_keeps_screened_and_keyword_for_the_next_put(sendhub):
    obj = {"id": "7", "name": "Ann", "number": "+16502530001", "screened": True, "keyword": "annie", "blocked": True}
    remote = sendhub.parse_contact(obj, endpoint=ENDPOINT)
    assert remote.kept == {"screened": True, "keyword": "annie"}
    assert "screened" not in remote.fields and "keyword" not in remote.fields
    odd = sendhub.parse_contact({**obj, "screened": "yes", "keyword": ""}, endpoint=ENDPOINT)
    assert odd.kept == {}, "only values SendHub would take back are kept"


def test_parse_group_keeps_its_text_to_join_settings(sendhub):
    obj = {"id": "12", "name": "Clients", "slug": "joincustomers", "text_to_subscribe": True, "ttjResponse": "Hi!",
           "size": 3}
    group = sendhub.parse_group(obj, endpoint="GET /v1/groups/")
    assert group.kept == {"slug": "joincustomers", "text_to_subscribe": True, "ttjResponse": "Hi!"}
    assert group == sendhub.parse_group({**obj, "slug": "other"}, endpoint="GET /v1/groups/"), "kept is not synced data"


def test_parse_group_reads_id_and_name_and_checks_them(sendhub):
    group = sendhub.parse_group({"id": "12", "name": "Regulars", "slug": "regulars"}, endpoint="GET /v1/groups/")
    assert (group.remote_id, group.name, group.description) == ("12", "Regulars", "")
    with pytest.raises(ProtocolError, match="group 12 has no name"):
        sendhub.parse_group({"id": 12}, endpoint="GET /v1/groups/")


# -- sendhub_error ------------------------------------------------------------------


def response(status: int, body=None, *, text: str | None = None, headers=None) -> httpx.Response:
    content = text.encode() if text is not None else json.dumps(body).encode()
    request = httpx.Request("POST", "http://sim/v1/contacts/?username=u&api_key=k3y")
    return httpx.Response(status, content=content, headers=headers, request=request)


def mapped(resp: httpx.Response):
    return sendhub_error(resp, provider="sh-unit", operation="create contact", record="+16501234567")


def test_success_statuses_map_to_no_error():
    assert mapped(response(201, {})) is None and mapped(response(202, {})) is None


def test_429_waits_the_time_left_in_its_body():
    body = {"message": "You have sent too many requests.", "code": "429", "error": "Too Many Requests", "timeLeft": "0:01:30"}
    error = mapped(response(429, body, headers={"Retry-After": "5"}))
    assert isinstance(error, RateLimited) and error.retry_after == 90.0
    assert "You have sent too many requests." in str(error)


def test_429_without_time_left_falls_back_to_retry_after():
    error = mapped(response(429, {"error": "Too Many Requests"}, headers={"Retry-After": "7"}))
    assert isinstance(error, RateLimited) and error.retry_after == 7.0


def test_420_is_quota_exhausted_with_sendhubs_words():
    error = mapped(response(420, {"error": "You have made too many requests and are being rate limited"}))
    assert isinstance(error, QuotaExhausted) and "being rate limited" in str(error)


def test_400_field_map_is_rejected_naming_the_field_and_reason():
    error = mapped(response(400, {"number": ["That number is already in your contacts."]}))
    assert isinstance(error, Rejected)
    assert error.field == "number" and error.reason == "That number is already in your contacts."
    assert str(error) == (
        "sh-unit: create contact +16501234567 rejected (field number) (HTTP 400): That number is already in your contacts."
    )


def test_400_generic_and_html_bodies_are_rejected_with_their_text():
    assert mapped(response(400, {"error": "Join message can not be longer than 70 characters.", "status": 400})).reason.startswith("Join")
    html = mapped(response(400, text="The 'resource_uri' field does not allow filtering."))
    assert isinstance(html, Rejected) and "does not allow filtering" in html.reason


def test_409_saying_try_again_is_transient_and_any_other_409_rejected():
    busy = mapped(response(409, {"error": "Try again later", "message": "Try again later", "status": 409}))
    assert type(busy) is TransientError and busy.status == 409 and "Try again later" in str(busy)
    assert type(mapped(response(409, {"message": "Please try again in a minute."}))) is TransientError
    conflict = mapped(response(409, {"error": "Contact was changed by someone else"}))
    assert type(conflict) is Rejected and conflict.status == 409


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (401, None, AuthError),
        (403, {"message": "forbidden"}, AuthError),
        (404, {"error": "Requested contact not found", "status": 404}, NotFound),
        (500, {"error": "Internal Server Error"}, TransientError),
        (503, None, TransientError),
        (418, {"message": "teapot"}, ProtocolError),
    ],
)
def test_other_statuses_map_onto_the_error_tree(status, body, kind):
    resp = response(status, text="") if body is None else response(status, body)
    error = mapped(resp)
    assert type(error) is kind and error.status == status and "k3y" not in str(error)


@given(national=st.from_regex(r"[2-9]\d{9}", fullmatch=True), region=st.sampled_from(["US", "IT", "CA"]))
def test_the_fast_path_for_sendhub_numbers_answers_what_phonenumbers_would(sendhub, national, region):
    number = "+1" + national
    try:
        expected = to_e164(number, region)
    except InvalidPhone:
        expected = number  # an unparseable number is kept raw
    assert sendhub.parse_contact({"id": 1, "number": number}, endpoint=ENDPOINT).phone == expected


# -- answers the simulator never gives (httpx.MockTransport) ---------------------------------


def mock_provider(handler) -> SendHubProvider:
    settings = ProviderSettings(
        name="sh-mock", type="sendhub", base_url="http://sendhub.test/v1", username="u", api_key=Secret("k3y"),
        requests_per_second=0, batch_size=3,
    )  # fmt: skip
    return SendHubProvider(settings, default_region="US", transport=httpx.MockTransport(handler))


def contact_json(i: int) -> dict:
    return {"id": str(1000 + i), "name": f"C {i}", "number": f"+1415200{i:04d}", "groups": []}


async def collect(pages) -> list:
    return [item async for page in pages for item in page]


@pytest.mark.anyio
async def test_a_listing_without_total_count_and_a_smaller_server_limit_is_paged_by_offset():
    seen_urls: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_urls.append(request.url)
        offset = int(request.url.params["offset"])
        objects = [contact_json(i) for i in range(offset, min(offset + 20, 45))]
        more = offset + 20 < 45
        meta = {"limit": 20, "offset": offset, "previous": None,
                "next": f"/v1/contacts?limit=20&offset={offset + 20}" if more else None}
        return httpx.Response(200, json={"meta": meta, "objects": objects})

    provider = mock_provider(handler)
    contacts = await collect(provider.contacts())
    await provider.aclose()
    assert [c.remote_id for c in contacts] == [str(1000 + i) for i in range(45)]
    assert [u.params["offset"] for u in seen_urls] == ["0", "20", "40"]
    assert {u.path for u in seen_urls} == {"/v1/contacts/"} and all(u.params["api_key"] == "k3y" for u in seen_urls)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"objects": []}, "has no meta object"),
        ({"meta": {}, "objects": {"1": {}}}, "objects is not a list"),
        ([], "is not a JSON object"),
        ({"meta": {"total_count": "3"}, "objects": []}, "total_count is not a number"),
    ],
)
async def test_a_listing_of_the_wrong_shape_is_a_protocol_error_naming_the_endpoint(body, problem):
    provider = mock_provider(lambda request: httpx.Response(200, json=body))
    with pytest.raises(ProtocolError, match=problem) as caught:
        await collect(provider.groups())
    await provider.aclose()
    assert "GET /v1/groups/" in str(caught.value) and "k3y" not in str(caught.value)


@pytest.mark.anyio
async def test_membership_complaints_sendhub_words_differently_reject_the_ids_concerned():
    def handler(request: httpx.Request) -> httpx.Response:
        ids = json.loads(request.content)["add"]
        answer = {"add": [i for i in ids if i == 1], "remove": [],
                  "errors": {"add": ["2 is blocked", "something odd happened"]}}
        return httpx.Response(202, json=answer)

    provider = mock_provider(handler)
    outcome = await provider.change_members("7", add=["1", "2", "3"], remove=[])
    await provider.aclose()
    assert outcome.added == frozenset({"1"})
    assert str(outcome.errors["2"]).endswith("2 is blocked") and outcome.errors["2"].record == "2 in group 7"
    assert str(outcome.errors["3"]).endswith("something odd happened")


@pytest.mark.anyio
async def test_a_duplicate_number_is_never_linked_to_a_contact_with_another_number():
    stranger = contact_json(1)  # a server ignoring the number= filter answers everyone

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(400, json={"number": ["That number is already in your contacts."]})
        assert request.url.params["number"] == "+14152000002"
        return httpx.Response(200, json={"meta": {"next": None, "total_count": 1}, "objects": [stranger]})

    provider = mock_provider(handler)
    [outcome] = await provider.create_contacts([ContactWrite(1, "+14152000002", {"number": "+14152000002"})])
    assert isinstance(outcome.error, Rejected) and outcome.remote_id is None
    await provider.aclose()
