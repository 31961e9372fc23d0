"""smsend field mapping and client-side validation: pure, no HTTP."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.config import ProviderSettings, Secret
from syncd.errors import AuthError, ConfigError, NotFound, RateLimited, Rejected
from syncd.model import Contact, ContactWrite
from syncd.providers.smsend import _make_error_mapper
from syncd.providers.smsend import CAPABILITIES, CONTACT_FIELDS, EXTRA_FIELDS, SmsendProvider, validate_contact


def _settings(**overrides) -> ProviderSettings:
    values = dict(name="smsend-test", type="smsend", base_url="http://127.0.0.1:9/API/v1.0/REST",
                  user_key="UK", access_token=Secret("AT"))
    values.update(overrides)
    return ProviderSettings(**values)


@pytest.fixture
def provider() -> SmsendProvider:
    return SmsendProvider(_settings())


def test_capabilities_declare_an_outbound_upsert_keyed_by_phone() -> None:
    assert CAPABILITIES.list_contacts is False
    assert CAPABILITIES.contact_id_is_phone is True
    assert CAPABILITIES.member_changes is False
    assert CAPABILITIES.opt_out_outbound is True
    assert CAPABILITIES.contact_fields == frozenset(CONTACT_FIELDS)
    assert {"custom1", "custom10", "zip", "birthdate"} <= CAPABILITIES.contact_fields


def test_project_keeps_smsend_fields_and_omits_empty_and_foreign_ones(provider: SmsendProvider) -> None:
    contact = Contact(id=1, phone="+393401234567", name="Anna", surname="", email="anna@example.com",
                      extra={"city": "Milano", "zip": 20121, "custom3": "x", "company": "ACME", "fax": ""})
    assert provider.project(contact) == {
        "phoneNumber": "+393401234567", "name": "Anna", "email": "anna@example.com",
        "city": "Milano", "zip": "20121", "custom3": "x",
    }


def test_project_ignores_groups_and_opt_out(provider: SmsendProvider) -> None:
    plain = Contact(id=1, phone="+393401234567", name="Anna")
    flagged = Contact(id=1, phone="+393401234567", name="Anna", groups=frozenset({3}), opted_out=True)
    assert provider.project(plain) == provider.project(flagged)


def test_to_canonical_keeps_extra_keys_smsend_cannot_hold(provider: SmsendProvider) -> None:
    current = Contact(id=1, phone="+393401234567", extra={"company": "ACME", "city": "Roma", "zip": "00100"})
    fields = {"phoneNumber": "+393401234567", "name": "Anna", "city": "Milano", "custom1": "vip"}
    assert provider.to_canonical(fields, current) == {
        "phone": "+393401234567", "name": "Anna", "surname": "", "email": "",
        "extra": {"company": "ACME", "city": "Milano", "custom1": "vip"},
    }


def test_to_canonical_without_current(provider: SmsendProvider) -> None:
    assert provider.to_canonical({"surname": "Rossi"}, None) == {"name": "", "surname": "Rossi", "email": "",
                                                                "extra": {}}


# One client for the property test: building one per example (TLS context and all) is what costs.
_SHARED = SmsendProvider(_settings())
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@given(name=_text, surname=_text, email=_text,
       smsend_extra=st.dictionaries(st.sampled_from(EXTRA_FIELDS), _text, max_size=5),
       foreign_extra=st.dictionaries(st.sampled_from(["company", "notes", "tier"]), _text, max_size=3))
def test_project_then_to_canonical_round_trips(name, surname, email, smsend_extra, foreign_extra) -> None:
    """Whatever smsend can hold comes back unchanged; what it cannot hold is kept from the current record."""
    provider = _SHARED
    contact = Contact(id=1, phone="+393401234567", name=name, surname=surname, email=email,
                      extra={**smsend_extra, **foreign_extra})
    back = provider.to_canonical(provider.project(contact), contact)
    assert (back["phone"], back["name"], back["surname"], back["email"]) == (contact.phone, name, surname, email)
    expected_extra = {**foreign_extra, **{k: v for k, v in smsend_extra.items() if v}}
    assert back["extra"] == expected_extra
    # and projecting the result again changes nothing: no ping-pong between runs
    again = Contact(id=1, phone=contact.phone, name=back["name"], surname=back["surname"], email=back["email"],
                    extra=back["extra"])
    assert provider.project(again) == provider.project(contact)


@pytest.mark.parametrize("date", ["010190", "19900101", "0101901230", "19900101123059", "1990-01-01 12:30",
                                  "1990-01-01 12:30.0"])
def test_the_six_documented_date_formats_are_valid(date: str) -> None:
    assert validate_contact({"phoneNumber": "+393401234567", "birthdate": date}) == []


@pytest.mark.parametrize("date", ["1990-01-01", "01/01/1990", "320190", "19901301", "1990-01-01T12:30",
                                  "1990-01-01 12:30:00", "1990-01-01 12:30.5", "abc", "01019"])
def test_other_dates_are_rejected(date: str) -> None:
    assert validate_contact({"phoneNumber": "+393401234567", "rememberdate": date})[0][0] == "rememberdate"


@pytest.mark.parametrize(("field", "limit"), [("name", 40), ("surname", 40), ("fax", 32), ("city", 32),
                                              ("province", 32), ("address", 256), ("zip", 16)])
def test_length_limits(field: str, limit: int) -> None:
    assert validate_contact({"phoneNumber": "+393401234567", field: "x" * limit}) == []
    problems = validate_contact({"phoneNumber": "+393401234567", field: "x" * (limit + 1)})
    assert [p[0] for p in problems] == [field]
    assert str(limit) in problems[0][1]


def test_gender_is_m_or_f() -> None:
    assert validate_contact({"phoneNumber": "+393401234567", "gender": "f"}) == []
    assert validate_contact({"phoneNumber": "+393401234567", "gender": "M"})[0][0] == "gender"


def test_email_or_phone_is_required_and_empty_values_are_the_default() -> None:
    assert validate_contact({"email": "a@example.com", "phoneNumber": ""}) == []
    assert validate_contact({"phoneNumber": "", "email": "", "gender": "", "birthdate": ""})[0][0] == "phoneNumber"
    assert validate_contact({"phoneNumber": "+393401234567", "email": "not-an-email"})[0][0] == "email"


def test_invalid_write_is_rejected_naming_contact_and_field(provider: SmsendProvider) -> None:
    write = ContactWrite(ref=7, phone="+393401234567", fields={"name": "x" * 41})
    with pytest.raises(Rejected) as caught:
        provider._item(0, write, "create contact")
    assert caught.value.field == "name"
    assert caught.value.record == "+393401234567"
    assert "smsend-test" in str(caught.value) and "field name" in str(caught.value)


def test_unparseable_number_is_rejected_naming_the_value(provider: SmsendProvider) -> None:
    with pytest.raises(Rejected) as caught:
        provider._item(0, ContactWrite(ref=7, phone="12ab", fields={}), "create contact")
    assert caught.value.field == "phoneNumber"
    assert "12ab" in str(caught.value)


def test_upsert_body_sends_every_field_so_cleared_ones_are_cleared(provider: SmsendProvider) -> None:
    write = ContactWrite(ref=1, phone="3401234567", fields={"name": "Anna", "company": "ACME"},
                         groups=frozenset({"g2", "g1"}))
    item = provider._item(0, write, "create contact")
    assert item.phone == "+393401234567"  # read in the default region
    assert set(item.body) == set(CONTACT_FIELDS)
    assert item.body["name"] == "Anna" and item.body["city"] == ""
    assert item.groups == ("g1", "g2")


def test_missing_credentials_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="smsend-test"):
        SmsendProvider(_settings(access_token=None))


def test_contacts_listing_is_unsupported(provider: SmsendProvider) -> None:
    from syncd.errors import Unsupported

    with pytest.raises(Unsupported, match="no contact listing"):
        provider.contacts()


def _answer(method: str, path: str, status: int, body: bytes, **headers: str):
    request = httpx.Request(method, "https://app.gateway.smsend.it/API/v1.0/REST" + path)
    response = httpx.Response(status, content=body, headers=headers, request=request)
    return _make_error_mapper(["s3cret-pass"])(response, provider="smsend-test", operation="op", record="rec")


def test_status_mapping_reads_smsend_conventions() -> None:
    assert _answer("POST", "/group", 201, b"") is None
    rejected = _answer("POST", "/contact", 400, b'{"error": "contacts[3].zip: longer than 16 characters", "code": 10}')
    assert isinstance(rejected, Rejected) and rejected.field == "zip"
    assert rejected.reason == "contacts[3].zip: longer than 16 characters"  # smsend's words, not the JSON
    assert isinstance(_answer("GET", "/login", 404, b"Credentials are incorrect"), AuthError)
    assert isinstance(_answer("GET", "/groups", 404, b"The User_key was not found"), AuthError)
    assert isinstance(_answer("GET", "/contact/abc", 404, b"The given contactid was not found"), NotFound)
    throttled = _answer("GET", "/groups", 429, b"slow down", **{"Retry-After": "3"})
    assert isinstance(throttled, RateLimited) and throttled.retry_after == 3


def test_a_secret_echoed_in_an_error_body_is_never_quoted() -> None:
    for status in (400, 401, 404, 500):
        error = _answer("GET", "/login", status, b"bad password s3cret-pass for simuser")
        assert "s3cret-pass" not in str(error) and "[redacted]" in str(error)
