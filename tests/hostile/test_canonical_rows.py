"""Canonical rows written by hand with plain SQL (issue 7).

Users edit ``contacts``, ``groups`` and ``group_members`` directly (design §3).
Whatever they write, a run must not crash: each row syncd cannot sync is
reported once (a change-log row of provider ``*``, status ``rejected``, naming
the field and the value, listed by ``syncd status``) and left alone on both
sides; every other row is synced to both providers, without duplicates, and
the next run has nothing to do. Over real HTTP against both simulators, on
SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from syncd.cli.views import show_status
from syncd.db.engine import make_engine
from syncd.db.migrate import upgrade
from syncd.db.repo import Store
from tests.e2e.conftest import World
from tests.hostile.conftest import TRIED

CATEGORY = "canonical rows (SQL)"


@dataclass(frozen=True)
class Row:
    """A contact as a user might INSERT it, and what syncd should make of it."""

    phone: str
    name: str = "Someone"
    surname: str = ""
    extra: str = "{}"  # JSON text as typed (SQLite keeps any text; PostgreSQL casts to jsonb)
    problem: str | None = None  # the field syncd must report, None when the row is valid
    e164: str | None = None  # the number it stands for, when valid
    sendhub: bool = True  # SendHub accepts it (10-digit North American number, name 1-128 chars)
    smsend: bool = True  # smsend accepts it (name and surname up to 40 chars)


LONG_NAME = "Ω" * 10_000

VALID = [
    Row("(650) 253-0001", "National", "Format", e164="+16502530001"),
    Row("650 253 0002", "Spaced", e164="+16502530002"),
    Row("650-253-0003", "Dashed", e164="+16502530003"),
    Row("+1 (650) 253-0004", "Plus", "Parens", e164="+16502530004"),
    Row("650.253.0005", "😀 Smiley", "👩‍👩‍👧 family", e164="+16502530005"),
    Row("6502530006", "مرحبا", "بالعالم", e164="+16502530006"),
    Row("6502530007", "\u200fשלום", "עולם", e164="+16502530007"),
    Row("6502530008", "Robert'); DROP TABLE contacts;--", 'O\'Brien "Bob" \\', e164="+16502530008"),
    Row("6502530009", "'; DROP TABLE contacts; --", "", e164="+16502530009"),
    Row("6502530010", "Notes", extra=json.dumps({"city": "תל אביב", "note": "'; DELETE FROM groups; --"}),
        e164="+16502530010"),
    Row("6502530011", "", "", e164="+16502530011", sendhub=False),  # SendHub: name is required
    Row("6502530012", LONG_NAME, "", e164="+16502530012", sendhub=False, smsend=False),
    Row("+39 06 6982 1234", "Roma", e164="+390669821234", sendhub=False),  # not North American
]

INVALID_ANYWHERE = [
    Row("12ab", problem="phone"),
    Row("", problem="phone"),
    Row("+1", problem="phone"),
    Row("+16502530001", "Same number as the first row", problem="phone"),
    Row("6502530020", extra="[1, 2]", problem="extra"),
    Row("6502530021", extra='"x"', problem="extra"),
    Row("6502530022", extra="3", problem="extra"),
    Row("6502530023", extra="null", problem="extra"),
]
#: PostgreSQL refuses these itself (varchar(32), jsonb): only SQLite lets them reach syncd.
INVALID_SQLITE_ONLY = [Row("1" * 40, problem="phone"), Row("6502530024", extra="{bad", problem="extra")]


def insert(world: World, row: Row) -> int:
    cast = "CAST(:extra AS jsonb)" if world.engine.dialect.name == "postgresql" else ":extra"
    [(cid,)] = world.sql(f"INSERT INTO contacts (phone, name, surname, extra) VALUES (:phone, :name, :surname, {cast})"
                         " RETURNING id", phone=row.phone, name=row.name, surname=row.surname, extra=row.extra)
    TRIED[CATEGORY].add(repr(row))
    return cid


def status_output(world: World) -> str:
    result = CliRunner().invoke(click.command()(lambda: show_status(world.engine, world.config)))
    assert result.exit_code == 0, result.output
    return result.output


def reports(world: World) -> dict[int, tuple[str, str]]:
    """Invalid-row reports: canonical id -> (status, error), the latest per row."""
    rows = world.sql("SELECT canonical_id, status, error FROM change_log WHERE provider = '*' ORDER BY id")
    return {cid: (status, error) for cid, status, error in rows}


def sendhub_contacts(world: World) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in world.sendhub.state.snapshot()["contacts"]:
        out.setdefault(c["number"], []).append(c)
    return out


def smsend_contacts(world: World) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for c in world.smsend.state.snapshot()["contacts"]:
        out.setdefault(c["phoneNumber"], []).append(c)
    return out


def change_count(world: World) -> int:
    return world.sql("SELECT count(*) FROM change_log")[0][0]


def assert_quiet(world: World) -> None:
    """Another run plans nothing and writes no change-log row."""
    before = change_count(world)
    report = world.sync()
    assert report.pending_changes == 0, [(p.name, op.action, op.reason, op.canonical_id)
                                         for p in report.providers for op in p.plan if op.is_change]
    assert change_count(world) == before, world.sql("SELECT * FROM change_log WHERE id > :n", n=before)


def test_contact_rows_written_by_hand(world: World):
    bad = INVALID_ANYWHERE + (INVALID_SQLITE_ONLY if world.engine.dialect.name == "sqlite" else [])
    ids = {insert(world, row): row for row in VALID + bad}

    report = world.sync()
    assert report.status == "ok", [p.summary() for p in report.providers]

    # Each bad row: one report naming the field and the value, and nothing else done with it.
    found = reports(world)
    assert set(found) == {cid for cid, row in ids.items() if row.problem}
    for cid, (status, error) in found.items():
        row = ids[cid]
        assert status == "rejected" and error.startswith(f"{row.problem}: ")
        value = row.phone if row.problem == "phone" else row.extra
        assert (value in error) if value else ("empty" in error), error
    assert {cid for cid, _, _ in report.invalid} == set(found)

    # Every valid row at each provider that accepts it, exactly once, with its text unchanged.
    sh, sm = sendhub_contacts(world), smsend_contacts(world)
    assert set(sh) == {r.e164 for r in VALID if r.sendhub}
    assert set(sm) == {r.e164 for r in VALID if r.smsend}
    assert all(len(v) == 1 for v in [*sh.values(), *sm.values()])
    for row in VALID:
        if row.sendhub:
            assert sh[row.e164][0]["name"] == f"{row.name} {row.surname}".strip()
        if row.smsend:
            assert (sm[row.e164][0]["name"], sm[row.e164][0]["surname"]) == (row.name, row.surname)

    # What a provider refused is rejected there, with its reason; the other provider still has it.
    refused = world.sql("SELECT provider, canonical_id, error FROM change_log WHERE status = 'rejected' "
                        "AND provider != '*'")
    long_id = next(cid for cid, r in ids.items() if r.name == LONG_NAME)
    assert {(p, ids[cid].e164) for p, cid, _ in refused} == (
        {("sendhub", r.e164) for r in VALID if not r.sendhub} | {("smsend", r.e164) for r in VALID if not r.smsend})
    assert all("name" in e and ("128" in e or "40" in e) for _, cid, e in refused if cid == long_id)

    # The book: no row added or lost; valid numbers rewritten in E.164, except the first
    # row's, which the reported duplicate holds verbatim (the unique constraint).
    book = dict(world.sql("SELECT id, phone FROM contacts"))
    assert set(book) == set(ids)
    assert {cid: book[cid] for cid, r in ids.items() if r.e164} == {
        cid: (r.phone if r.phone == "(650) 253-0001" else r.e164) for cid, r in ids.items() if r.e164}

    shown = status_output(world)
    for cid, row in ids.items():
        if row.problem:
            assert re.search(rf"^\d+\s+\*\s+contact\s+update\s+{cid}\s+rejected\s+0\s+{row.problem}: ", shown, re.M), shown
    assert "rejected" in shown and "sendhub" in shown

    # Reported once: the next runs neither report again nor plan anything (no ping-pong of text).
    assert_quiet(world)
    names = {r.phone: (r.name, r.surname) for r in world.sql("SELECT phone, name, surname FROM contacts")}
    assert all(names[r.e164 if r.phone != "(650) 253-0001" else r.phone] == (r.name, r.surname) for r in VALID)


def test_synced_contact_broken_by_hand_is_held_not_deleted(world: World):
    ids = [insert(world, Row(f"+1650253{i:04d}", f"Person {i}")) for i in range(8)]
    world.sync()
    world.sql("UPDATE contacts SET phone = 'call me maybe' WHERE id = :i", i=ids[0])
    world.sql("UPDATE contacts SET extra = '[\"not\", \"an\", \"object\"]' WHERE id = :i", i=ids[1])
    TRIED[CATEGORY].update(["UPDATE phone 'call me maybe'", "UPDATE extra list"])

    assert world.plan().pending_changes == 0  # an invalid row is not a deleted one
    report = world.sync()
    assert report.pending_changes == 0
    assert len(sendhub_contacts(world)) == len(smsend_contacts(world)) == 8
    assert {cid: status for cid, (status, _) in reports(world).items()} == {ids[0]: "rejected", ids[1]: "rejected"}
    assert_quiet(world)

    world.sql("UPDATE contacts SET phone = '+16502530000' WHERE id = :i", i=ids[0])
    world.sql("UPDATE contacts SET extra = '{}' WHERE id = :i", i=ids[1])
    world.sync()
    assert {cid: status for cid, (status, _) in reports(world).items()} == {ids[0]: "applied", ids[1]: "applied"}
    assert "No failed, rejected or held records." in status_output(world)
    assert len(sendhub_contacts(world)) == len(smsend_contacts(world)) == 8
    assert_quiet(world)


def test_one_number_written_twice_in_either_order(world: World):
    first = [insert(world, Row("+16502530001", "E164 first")), insert(world, Row("(650) 253-0002", "National first"))]
    dups = [insert(world, Row("650.253.0001", "dup a")), insert(world, Row("+16502530002", "dup b"))]
    world.sync()
    assert set(reports(world)) == set(dups)
    for listing in (sendhub_contacts(world), smsend_contacts(world)):
        assert {number: len(v) for number, v in listing.items()} == {"+16502530001": 1, "+16502530002": 1}
    assert world.sql("SELECT phone FROM contacts WHERE id = :i", i=first[1])[0][0] == "(650) 253-0002"  # dup holds it

    world.sql("DELETE FROM contacts WHERE id IN (:a, :b)", a=dups[0], b=dups[1])
    report = world.sync()
    assert report.pending_changes == 0
    assert world.sql("SELECT phone FROM contacts WHERE id = :i", i=first[1])[0][0] == "+16502530002"
    assert all(status == "applied" for status, _ in reports(world).values())
    assert_quiet(world)


def test_group_rows_written_by_hand(world: World):
    names = ["🎉 Party", "x'); DROP TABLE groups;--", "ספר", "", "VIP", "vip ", "G" * 200]
    groups = {}
    for name in names:
        [(gid,)] = world.sql("INSERT INTO groups (name) VALUES (:n) RETURNING id", n=name)
        groups[name] = gid
        TRIED[CATEGORY].add(f"group {name!r}")
    contacts = [insert(world, Row(f"+1650253{i:04d}", f"Member {i}")) for i in range(3)]
    world.sql("INSERT INTO group_members (group_id, contact_id) SELECT g.id, c.id FROM groups g, contacts c")
    members_before = world.sql("SELECT count(*) FROM group_members")[0][0]

    world.sync()
    # 'vip ' is the same group as 'VIP' to every provider: reported, not created.
    [(gid, status, error)] = world.sql("SELECT canonical_id, status, error FROM change_log WHERE provider = '*'")
    assert (gid, status) == (groups["vip "], "rejected") and "'vip '" in error and "name" in error
    assert re.search(rf"^\d+\s+\*\s+group\s+update\s+{gid}\s+rejected\s+0\s+name: ", status_output(world), re.M)
    # '' is refused by both providers, the 200-character name by SendHub (128 at most).
    refused = set(world.sql("SELECT provider, canonical_id FROM change_log WHERE status = 'rejected' "
                            "AND entity = 'group' AND provider != '*'"))
    assert refused == {("sendhub", groups[""]), ("smsend", groups[""]), ("sendhub", groups["G" * 200])}
    sh_groups = {g["name"] for g in world.sendhub.state.snapshot()["groups"]}
    sm_groups = {g["name"] for g in world.smsend.state.snapshot()["groups"]}
    assert sh_groups == {"🎉 Party", "x'); DROP TABLE groups;--", "ספר", "VIP"}
    assert sm_groups == sh_groups | {"G" * 200}
    for c in world.smsend.state.snapshot()["contacts"]:
        assert len(c["groupIds"]) == len(sm_groups)
    for c in world.sendhub.state.snapshot()["contacts"]:
        assert len(c["groups"]) == len(sh_groups)

    # Memberships in groups a provider cannot hold stay in the book, and nothing churns.
    assert_quiet(world)
    assert world.sql("SELECT count(*) FROM group_members")[0][0] == members_before
    assert len(contacts) == len(sendhub_contacts(world)) == len(smsend_contacts(world))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_values_only_sqlite_lets_through(world: World):
    """SQLite keeps any bytes and any type a client sends; PostgreSQL refuses these itself."""
    bad = {
        "name": "CAST(x'4a6f73e9' AS TEXT)",  # 'José' typed in a Latin-1 terminal
        "phone": "CAST(x'2b3136353032353330303938ff' AS TEXT)",
        "extra": "CAST(x'7b2263697479223a22e9227d' AS TEXT)",
        "opted_out": "'false'",  # would read as true: a sticky opt-out nobody asked for
        "updated_at": "'yesterday'",
    }
    ids = {}
    for i, (column, value) in enumerate(bad.items()):
        [(ids[column],)] = world.sql(f"INSERT INTO contacts (phone, name) VALUES ('+1650253009{i}', 'Bad {column}') "
                                     "RETURNING id")
        world.sql(f"UPDATE contacts SET {column} = {value} WHERE id = :i", i=ids[column])
        TRIED[CATEGORY].add(f"{column} = {value}")
    [(good,)] = world.sql("INSERT INTO contacts (phone, name) VALUES ('+16502530080', 'Fine') RETURNING id")
    world.sql("INSERT INTO groups (name) VALUES (CAST(x'4a6f73e9' AS TEXT)), ('Good')")
    world.sql("INSERT INTO group_members (group_id, contact_id) SELECT id, :c FROM groups", c=good)

    report = world.sync()
    assert report.status == "ok", [p.summary() for p in report.providers]
    found = {(entity, cid): error for entity, cid, error in world.sql(
        "SELECT entity, canonical_id, error FROM change_log WHERE provider = '*'")}
    assert {key[1] for key in found if key[0] == "contact"} == set(ids.values())
    for column, cid in ids.items():
        assert found[("contact", cid)].startswith(f"{column}: {column} "), found
    [group_problem] = [e for (entity, _), e in found.items() if entity == "group"]
    assert "name is not UTF-8 text" in group_problem and "Jos\\xe9" in group_problem
    assert set(sendhub_contacts(world)) == set(smsend_contacts(world)) == {"+16502530080"}
    assert [g["name"] for g in world.sendhub.state.snapshot()["groups"]] == ["Good"]
    assert world.smsend.state.snapshot()["blacklist"] == []
    assert_quiet(world)


# -- load_book alone, on many more shapes (SQLite: it stores whatever text is typed) --------------


PHONE_SHAPES = st.one_of(
    st.text(max_size=40),
    st.text(alphabet="0123456789 +-().", max_size=24),
    st.sampled_from(["+16502530001", "(650) 253-0001", "650.253.0001", "+1 650 253 0001", "6502530002",
                     "+390669821234", "0039 06 6982 1234", "+1", "+", "00", "1" * 40]),
)
EXTRA_SHAPES = st.one_of(
    st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(), st.text(max_size=8)), max_size=3)
    .map(json.dumps),
    st.one_of(st.lists(st.integers(), max_size=3), st.text(max_size=8), st.integers(), st.none()).map(json.dumps),
    st.text(max_size=12),
)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


TEXT_SHAPES = st.one_of(st.text(max_size=30), st.binary(max_size=8))  # bytes: a BLOB, maybe not UTF-8
FLAG_SHAPES = st.sampled_from([0, 1, True, False, 2, -1, "false", "true", "0", "", 0.5])
TIME_SHAPES = st.one_of(st.sampled_from(["2024-01-01 10:00:00", "2024-01-01T10:00:00+02:00",
                                         "2024-01-01 10:00:00.123456", "yesterday", "", "2024-13-45"]),
                        st.integers(-(2**63), 2**63 - 1), st.text(max_size=12))


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(PHONE_SHAPES, TEXT_SHAPES, EXTRA_SHAPES, FLAG_SHAPES, TIME_SHAPES), max_size=8))
def test_load_book_sorts_every_row_into_synced_or_reported(sqlite_engine: Engine, rows):
    with sqlite_engine.begin() as conn:
        conn.execute(text("DELETE FROM contacts"))
        phones = set()
        for row in rows:
            if row[0] in phones:
                continue  # the unique constraint refuses it before syncd sees it
            conn.execute(text("INSERT INTO contacts (phone, name, extra, opted_out, updated_at) "
                              "VALUES (:p, :n, :e, :o, :u)"), dict(zip("pneou", row, strict=True)))
            phones.add(row[0])
            TRIED[CATEGORY].add(repr(row))
        ids = [cid for (cid,) in conn.execute(text("SELECT id FROM contacts"))]

    book = Store(sqlite_engine).load_book("US")

    reported = [cid for cid, _, _ in book.invalid]
    assert sorted([*book.contacts, *reported]) == sorted(ids)  # each row exactly once
    assert len({c.phone for c in book.contacts.values()}) == len(book.contacts)  # no number twice
    assert all(c.phone.startswith("+") and isinstance(c.extra, dict) for c in book.contacts.values())
    assert all(field in ("phone", "name", "extra", "opted_out", "updated_at") and reason
               for _, field, reason in book.invalid)
    Store(sqlite_engine).load_book("US")  # the phones it rewrote read back the same way
