"""What a run costs, counted (issue 11's regression guard): a run with nothing to do sends the
minimum of requests and neither re-reads nor re-validates a record that did not change.

Counts, never time: requests served by the simulators, contacts SendHub's client parses,
phone numbers parsed, canonical and mirror records loaded by the engine.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import phonenumbers
import pytest

from syncd.db.repo import Store
from syncd.providers.sendhub import PAGE_LIMIT, SendHubProvider
from tests.e2e.conftest import World

CONTACTS = 60


@dataclass
class Costs:
    """Work counted during one run."""

    calls: Counter[str] = field(default_factory=Counter)

    def reset(self) -> None:
        self.calls.clear()


@pytest.fixture
def costs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Costs]:
    counted = Costs()

    def counting(name: str, function, size=lambda result: 1):  # type: ignore[no-untyped-def]
        def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
            result = function(*args, **kwargs)
            counted.calls[name] += size(result)
            return result
        return wrapper

    monkeypatch.setattr(phonenumbers, "parse", counting("phone parses", phonenumbers.parse))
    monkeypatch.setattr(SendHubProvider, "parse_contact",
                        counting("SendHub contacts parsed", SendHubProvider.parse_contact))
    monkeypatch.setattr(Store, "load_contacts", counting("canonical contacts loaded", Store.load_contacts,
                                                         lambda r: len(r[0]) + len(r[1])))
    monkeypatch.setattr(Store, "load_mirror_contacts", counting("mirror contacts loaded", Store.load_mirror_contacts,
                                                                len))
    monkeypatch.setattr(Store, "load_links", counting("links loaded", Store.load_links, len))
    yield counted


def requests(world: World) -> dict[str, Counter[str]]:
    return {s.kind: Counter(s.request_counts()) for s in (world.sendhub, world.smsend)}


def reset_requests(world: World) -> None:
    for server in (world.sendhub, world.smsend):
        server.reset_counts()


def seeded(world: World) -> None:
    sh = world.sendhub.state
    group = sh.add_group("Customers")
    for i in range(CONTACTS):
        sh.add_contact(f"Person {i}", f"+1650253{i:04d}", groups=[group.id] if i % 3 == 0 else [])
    world.sql("INSERT INTO contacts (phone, name) VALUES ('+16502539000', 'Book Only')")
    first = world.sync()
    assert first.status == "ok" and first.providers[0].full


def test_a_run_with_nothing_to_do_costs_only_the_listing(world: World, costs: Costs):
    seeded(world)
    # The run after the import reads back, once, the one contact the import created at SendHub: its
    # listing is new to the mirror, which held what syncd sent. That is the only record it touches.
    costs.reset()
    assert world.sync().pending_changes == 0
    assert costs.calls["SendHub contacts parsed"] == 1 and costs.calls["phone parses"] == 0, costs.calls
    for run in ("a run with nothing to do", "another one"):
        reset_requests(world)
        costs.reset()
        report = world.sync()
        assert report.status == "ok" and report.pending_changes == 0, run
        served = requests(world)
        writes = {kind: sum(n for endpoint, n in counts.items() if not endpoint.startswith("GET"))
                  for kind, counts in served.items()}
        assert writes == {"sendhub": 0, "smsend": 0}, (run, served)
        assert served["sendhub"]["GET /v1/contacts"] == math.ceil((CONTACTS + 1) / PAGE_LIMIT), (run, served)
        # SendHub: its contacts page and its groups page; smsend: its groups page and its blacklist page
        assert sum(served["sendhub"].values()) == 2 and sum(served["smsend"].values()) == 2, (run, served)
        assert served["smsend"]["GET /API/v1.0/REST/blacklist/sms"] == 1, (run, served)
        # Nothing unchanged is parsed, validated, loaded or reconciled.
        assert costs.calls["SendHub contacts parsed"] == 0, (run, costs.calls)
        assert costs.calls["phone parses"] == 0, (run, costs.calls)
        assert costs.calls["canonical contacts loaded"] == 0, (run, costs.calls)
        assert costs.calls["mirror contacts loaded"] == 0, (run, costs.calls)
        assert costs.calls["links loaded"] <= 2, (run, costs.calls)  # the groups' links, one per account


def test_a_run_after_two_edits_costs_those_records(world: World, costs: Costs):
    seeded(world)
    world.sync()
    sh = world.sendhub.state
    sh.edit_contact(sh.find("+16502530007").id, name="Edited At SendHub")
    world.sql("UPDATE contacts SET name = 'Edited By SQL' WHERE phone = '+16502530011'")
    costs.reset()
    report = world.sync()
    assert report.status == "ok" and report.pending_changes == 4  # in at SendHub and out to smsend; out to both
    assert costs.calls["SendHub contacts parsed"] == 1, costs.calls
    assert costs.calls["phone parses"] <= 1, costs.calls  # the row edited by SQL, at most
    # Each edited record is loaded once per phase and account: never the whole book.
    assert costs.calls["canonical contacts loaded"] <= 8, costs.calls
    assert costs.calls["mirror contacts loaded"] <= 8, costs.calls
    assert [c["name"] for c in world.smsend.state.snapshot()["contacts"]
            if c["phoneNumber"] in ("+16502530007", "+16502530011")] == ["Edited At", "Edited By SQL"]
