"""Opt-outs both ways (issue 14): smsend's SMS blacklist (STOP replies, the web interface) reaches the book,
over real HTTP against both simulators, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import World

NUMBER, OTHER = "+16502530001", "+16502530002"


def opted_out(world: World) -> dict[str, bool]:
    return {r.phone: bool(r.opted_out) for r in world.sql("SELECT phone, opted_out FROM contacts")}


def queries(world: World, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The blacklist queries the smsend simulator is asked, as it parses them (recorded as they come)."""
    seen: list[Any] = []
    state = world.smsend.state
    listing = state.blacklist_page

    def recording(query: Any) -> Any:
        seen.append(query)
        return listing(query)

    monkeypatch.setattr(state, "blacklist_page", recording)
    return seen


def test_a_stop_reply_at_smsend_opts_the_contact_out_for_good(world: World):
    world.sql("INSERT INTO contacts (phone, name) VALUES (:a, 'Ann'), (:b, 'Bob')", a=NUMBER, b=OTHER)
    world.sync()
    world.smsend.state.play_stop(NUMBER)

    report = world.sync()
    assert report.status == "ok"
    assert opted_out(world) == {NUMBER: True, OTHER: False}
    [logged] = world.sql("SELECT provider, direction, reason FROM change_log WHERE action = 'update' "
                         "AND direction = 'inbound' AND canonical_id = (SELECT id FROM contacts WHERE phone = :p)",
                         p=NUMBER)
    assert (logged.provider, logged.direction) == ("smsend", "inbound") and "STOPSMS" in logged.reason
    # Sticky: a later run leaves it, and so does a plain-SQL attempt to clear it while smsend still lists it.
    world.sql("UPDATE contacts SET opted_out = false WHERE phone = :p", p=NUMBER)
    world.sync()
    assert opted_out(world)[NUMBER]
    assert world.sync().pending_changes == 0


def test_the_web_interface_and_a_number_not_yet_in_the_book(world: World):
    world.smsend.state.blacklist_from_web(OTHER)
    world.sync()  # nobody holds the number yet: remembered
    assert opted_out(world) == {}
    world.sql("INSERT INTO contacts (phone, name) VALUES (:p, 'Late')", p=OTHER)
    world.sync()
    assert opted_out(world) == {OTHER: True}, "a number blacklisted before it is in the book starts opted out"
    [(origin,)] = world.sql("SELECT origin FROM opt_outs WHERE phone = :p", p=OTHER)
    assert origin == "WEB"
    sh = world.sendhub.state.find(OTHER)
    assert sh is not None  # still synced everywhere, opted out where the provider can hold it
    assert OTHER in world.smsend.state.snapshot()["blacklist"]


def test_an_incremental_read_asks_only_for_entries_since_the_last(world: World, monkeypatch: pytest.MonkeyPatch):
    day, now = 86_400.0, time.time()
    world.smsend.state.play_stop("+16502530003", at=now - 2 * day)
    world.smsend.state.play_stop(NUMBER, at=now - day)
    asked = queries(world, monkeypatch)
    first = world.sync()
    assert asked[0].since is None, "the first read is a full one"
    assert first.providers[0].counts["opt_outs_listed"] == 2
    world.smsend.state.play_stop(OTHER)
    asked.clear()
    second = world.sync()
    since = asked[0].since
    # From the newest entry it holds, less a small overlap: that one is read again, the older one is not.
    assert since is not None and now - day - 3600 < since <= now - day, since
    assert [p.counts.get("opt_outs_listed") for p in second.providers if p.name == "smsend"] == [2]


class _BadEntry:
    def as_json(self, zone: Any) -> dict[str, Any]:
        return {"number": NUMBER, "how": "STOPSMS"}  # not the shape providers.md 1.2.5 states


def test_a_malformed_blacklist_fails_only_the_opt_out_intake(world: World, monkeypatch: pytest.MonkeyPatch):
    world.sql("INSERT INTO contacts (phone, name) VALUES (:a, 'Ann')", a=NUMBER)
    world.sync()
    monkeypatch.setattr(world.smsend.state, "blacklist_page", lambda query: ([_BadEntry()], 1))
    world.sql("UPDATE contacts SET name = 'Ann Edited' WHERE phone = :p", p=NUMBER)

    report = world.sync()
    smsend = next(p for p in report.providers if p.name == "smsend")
    assert report.status == "ok" and smsend.status == "ok"
    [warning] = smsend.warnings
    assert "opt-outs not read" in warning and "/blacklist/sms" in warning and "smsend" in warning
    assert [c["name"] for c in world.smsend.state.snapshot()["contacts"]] == ["Ann Edited"]  # the rest went on
    assert opted_out(world) == {NUMBER: False}, "never read as 'nobody opted out', nor as anything else"


def test_a_no_op_run_reads_one_blacklist_page(world: World):
    world.sql("INSERT INTO contacts (phone, name) VALUES (:a, 'Ann')", a=NUMBER)
    world.sync()
    world.smsend.reset_counts()
    world.sync()
    counts = world.smsend.request_counts()
    assert counts == {"GET /API/v1.0/REST/groups": 1, "GET /API/v1.0/REST/blacklist/sms": 1}, counts


def test_export_says_where_each_opt_out_came_from_and_import_reads_it_back(world: World, tmp_path):
    world.sql("INSERT INTO contacts (phone, name) VALUES (:a, 'Ann'), (:b, 'Bob')", a=NUMBER, b=OTHER)
    world.sync()
    world.smsend.state.play_stop(NUMBER)
    world.sync()
    path = str(tmp_path / "book.csv")
    assert world.cli("export", path).exit_code == 0
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    assert lines == ["phone,name,surname,email,groups,opted_out,opted_out_origin",
                     f"{NUMBER},Ann,,,,true,smsend:STOPSMS", f"{OTHER},Bob,,,,false,"]
    imported = world.cli("import", path)
    assert imported.exit_code == 0, imported.output
    assert world.sql("SELECT count(*) FROM contacts WHERE extra <> '{}'") == [(0,)], "origin is not an extra key"
